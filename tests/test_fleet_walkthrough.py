"""
The README's "Three nodes on one machine" walkthrough, run as written: its
literal block is taken from README.rst and run by C{bash -e} from the clone,
with two substitutions so that runs cannot collide -- its directory
(C{/tmp/p2-fleet}) becomes one of the test's, and its port (8090) a free
one.  Whatever it started is stopped at cleanup, pass or fail.
"""

import argparse
import os
import re
import shutil
import signal
import sys

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.cli.services_agent import agentArguments
from tests.agentharness import freePort
from tests.cli import ROOT
from tests.reachable import reachableDirectory
from tests.servers import requireServer
from tests.test_agent_e2e import requireRunit
from tests.test_agent_process_e2e import _Output, removePods

SECTION = "Three nodes on one machine"
DIRECTORY = "/tmp/p2-fleet"
PORT = "8090"


def walkthrough(readme=os.path.join(ROOT, "README.rst"), section=SECTION):
    """
    @return: the shell commands of the README section C{section}: its
        first literal block, dedented.
    """
    with open(readme) as f:
        text = f.read()
    start = text.index(section + "\n" + "-" * len(section) + "\n")
    body = text[start:]
    block = re.search(r"::\n\n((?:    .*\n|\n)+)", body).group(1)
    return "".join(line[4:] + "\n" if line.strip() else "\n"
                   for line in block.rstrip().split("\n"))


class WalkthroughTextTests(unittest.TestCase):

    def test_extracted(self):
        """
        The walkthrough is found in the README and holds what the issue
        asks for: three agents, an RC of 2, a label change, a roll followed
        live, an abort.
        """
        script = walkthrough()
        self.assertEqual(script.count("p2 start --node node$n"), 1)
        for fragment in ("--replicas 2", "p2 label apply node node1 tier=db",
                         "p2 roll status hello-v2 --follow", "p2 roll abort hello-v3",
                         "p2-orchestrator"):
            self.assertIn(fragment, script)

    def test_startPassesPodAddress(self):
        """
        C{p2 start --pod-address} and C{--metrics-listen} hand the address
        and endpoint to the agent.
        """
        options = argparse.Namespace(config=None, store="local:///tmp/x.db", node="node1",
                                     supervisor=None, status_port=None,
                                     pod_address="127.0.0.11",
                                     metrics_listen="tcp:7476:interface=0.0.0.0")
        argv = agentArguments(options, "/tmp/state")
        self.assertEqual(argv[argv.index("--pod-address") + 1], "127.0.0.11")
        self.assertEqual(argv[argv.index("--metrics-listen") + 1], "tcp:7476:interface=0.0.0.0")


class WalkthroughTests(unittest.TestCase):
    """
    The walkthrough for real: three agents, an orchestrator, runit pods.
    """

    timeout = 900

    @defer.inlineCallbacks
    def test_walkthrough(self):
        """
        Every command of the walkthrough succeeds, in order; the roll's
        progress is printed and the abort leaves one node on v3.
        """
        if os.getuid() != 0:
            raise unittest.SkipTest("the walkthrough's agents create the pods' user (hello) "
                                    "and run them under runit: it needs root")
        requireRunit()
        for tool in ("busybox", "curl"):
            if not shutil.which(tool):
                requireServer(tool, "%s not on PATH (the walkthrough needs it)" % (tool,))
        directory = reachableDirectory(self, "p2-fleet-")
        port = str(freePort())
        for n in (1, 2, 3):
            self.addCleanup(removePods, os.path.join(directory, "node%d" % (n,)))
            self.addCleanup(stop, os.path.join(directory, "node%d" % (n,), "agent.pid"))
        self.addCleanup(stop, os.path.join(directory, "orchestrator.pid"))
        script = walkthrough().replace(DIRECTORY, directory).replace(PORT, port)
        code, output = yield runScript(script)
        self.assertEqual(code, 0, output)
        self.assertIn("node1=- node2=v1 node3=v1", output)
        self.assertIn("node1=- node2=v2 node3=v2", output)
        self.assertIn("aborted roll hello-v3", output)
        self.assertIn("node1=- node2=- node3=-", output)


@defer.inlineCallbacks
def runScript(script, path=()):
    """
    Run C{script} with C{bash -e} from the clone, with this Python's
    programs first on C{PATH} (and the directories C{path} last) and no
    C{P2_} variables of the caller's.

    @return: L{Deferred} firing with its exit code and output (also logged).
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("P2_") and k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]
                                  + list(path))
    proto = _Output()
    reactor.spawnProcess(proto, "/bin/bash", ["bash", "-e", "-c", script], env=env, path=ROOT)
    yield proto.ended
    output = proto.output.decode("utf-8", "replace")
    from twisted.python import log
    log.msg("walkthrough output:\n" + output)
    return proto.reason.value.exitCode, output


def stop(pidfile):
    """
    Stop (SIGTERM, then SIGKILL) the process in C{pidfile}, if any: the
    walkthrough stops its processes itself unless it failed half-way.
    """
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return None

    def gone():
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        return False
    from tests.store_contract import waitFor
    d = waitFor(gone, timeout=30, interval=0.2, what="pid %d to exit" % (pid,))

    def kill(failure):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return d.addErrback(kill)
