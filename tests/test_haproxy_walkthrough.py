"""
The README's "Behind HAProxy on one machine" walkthrough, run as written
(as L{tests.test_fleet_walkthrough} runs the one before it): its literal
block, taken from README.rst, run by C{bash -e} from the clone -- three real
agents, a real orchestrator, a real HAProxy -- with its directory
(C{/tmp/p2-lb}) and ports (the proxy's 8080, the web pods' 8090, the
helpers' 8091) substituted by the test's own, so that runs cannot collide.
Whatever it started is stopped at cleanup, pass or fail.
"""

import os
import shutil

from twisted.internet import defer
from twisted.trial import unittest

from tests.agentharness import freePort
from tests.haproxyserver import haproxyProgram, requireHAProxy
from tests.reachable import reachableDirectory
from tests.servers import requireServer
from tests.test_agent_e2e import requireRunit
from tests.test_agent_process_e2e import removePods
from tests.test_fleet_walkthrough import runScript, stop, walkthrough

SECTION = "Behind HAProxy on one machine"
DIRECTORY = "/tmp/p2-lb"
PORTS = ("8080", "8090", "8091")


class HAProxyWalkthroughTextTests(unittest.TestCase):

    def test_extracted(self):
        """
        The walkthrough is found in the README and holds what the issue
        asks for: a daemon set, an RC's pods in a pod cluster behind an
        HAProxy the reader starts, requests through it while a roll runs.
        """
        script = walkthrough(section=SECTION)
        for fragment in ("p2 start --node node$n", "p2 ds create", "--everywhere",
                         "p2 pc create --pod web --az az1 --name prod", "haproxy -W -D",
                         "bind 127.0.0.1:8080", "curl -sf -m 5 127.0.0.1:8080/version",
                         "p2 roll start --from web", "p2-orchestrator --config"):
            self.assertIn(fragment, script)
        for port in PORTS:
            self.assertIn(port, script)


class HAProxyWalkthroughTests(unittest.TestCase):
    """
    The walkthrough for real.
    """

    timeout = 300

    @defer.inlineCallbacks
    def test_walkthrough(self):
        """
        Every command of the walkthrough succeeds, in order: the helper
        answers on every node, and every request made through HAProxy while
        the roll ran was answered, by version 1 and then by version 2.
        """
        if os.getuid() != 0:
            raise unittest.SkipTest("the walkthrough's agents create the pods' users and run "
                                    "them under runit: it needs root")
        requireRunit()
        requireHAProxy()
        for tool in ("busybox", "curl"):
            if not shutil.which(tool):
                requireServer(tool, "%s not on PATH (the walkthrough needs it)" % (tool,))
        directory = reachableDirectory(self, "p2-lb-")
        for n in (1, 2, 3):
            self.addCleanup(removePods, os.path.join(directory, "node%d" % (n,)))
            self.addCleanup(stop, os.path.join(directory, "node%d" % (n,), "agent.pid"))
        self.addCleanup(stop, os.path.join(directory, "orchestrator.pid"))
        self.addCleanup(stop, os.path.join(directory, "haproxy.pid"))
        script = walkthrough(section=SECTION).replace(DIRECTORY, directory)
        ports = set()
        while len(ports) < len(PORTS):
            ports.add(str(freePort()))
        for port, free in zip(PORTS, sorted(ports)):
            script = script.replace(port, free)
        # haproxy where root finds it (/usr/sbin), for the reader's shell and the orchestrator.
        code, output = yield runScript(script, path=[os.path.dirname(haproxyProgram())])
        self.assertEqual(code, 0, output)
        for n in (1, 2, 3):
            self.assertIn("v1 on node%d" % (n,), output)
        with open(os.path.join(directory, "requests.log")) as f:
            answers = f.read().split()
        failed = [a for a in answers if a not in ("v1", "v2")]
        self.assertEqual(failed, [], "%d of %d requests failed" % (len(failed), len(answers)))
        self.assertEqual(sorted(set(answers)), ["v1", "v2"])
        self.assertEqual(answers[-1], "v2")
