# -*- test-case-name: tests.test_cli_tutorial -*-
"""
The pop-style tutorial, driven as a user would: real C{p2} subprocesses and
a real agent started with C{p2 start} (stopped, and its pods removed, at
cleanup, pass or fail).

C{p2 run NAME install} needs no network: the test builds a tiny wheel and
passes C{--no-index --find-links DIR} through to the install task, which
hands its arguments to C{pip install}.
"""

import base64
import hashlib
import json
import os
import shutil
import sys
import uuid
import zipfile

from twisted.internet import defer, protocol, reactor, utils
from twisted.trial import unittest

import p2twisted.cli.main
from tests import test_cli_service
from tests.agentharness import freePort, httpGet
from tests.cli import ROOT
from tests.reachable import reachableDirectory
from tests.store_contract import waitFor

#: The verb modules the tutorial uses, added to C{VERB_MODULES} when missing.
VERBS = ("service", "services_agent", "services_tasks", "services_inspect")

HELLO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "p2twisted", "templates", "files")


def p2Argv():
    missing = [v for v in VERBS if v not in p2twisted.cli.main.VERB_MODULES]
    if not missing:
        return ["-m", "p2twisted.cli"]
    return ["-c", "import p2twisted.cli.main as m; m.VERB_MODULES += %r; m.main()"
            % (tuple(missing),)]


def supervisorKind():
    return "runit" if shutil.which("runsv") else "builtin"


def buildWheel(directory, name="p2tiny", version="1.0"):
    """
    Write a minimal pure-Python wheel of C{name}==C{version} into
    C{directory} (by hand: no build backend, no network).
    """
    info = "%s-%s.dist-info" % (name, version)
    files = {
        "%s.py" % (name,): b"VERSION = %r\n" % (version.encode(),),
        info + "/METADATA": ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n"
                             % (name, version)).encode(),
        info + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: p2-tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in sorted(files.items()):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append("%s,sha256=%s,%d" % (path, digest.decode(), len(data)))
    record.append(info + "/RECORD,,")
    files[info + "/RECORD"] = ("\n".join(record) + "\n").encode()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "%s-%s-py3-none-any.whl" % (name, version))
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in sorted(files.items()):
            archive.writestr(member, data)
    os.chmod(directory, 0o755)
    os.chmod(path, 0o644)
    return path


def podPid(state, podId):
    """
    @return: the pid of pod C{podId}'s first supervised process, or C{None}.
    """
    from p2twisted.agent.supervisors.runit import readStatus
    service = os.path.join(state, "service")
    for name in sorted(os.listdir(service)) if os.path.isdir(service) else []:
        if not name.startswith(podId + "__"):
            continue
        status = readStatus(os.path.join(service, name))
        if status is not None and status.pid:
            return status.pid
        try:
            with open(os.path.join(service, name, "pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            pass
    return None


class Follower(protocol.ProcessProtocol):
    """
    Collects a process's output; C{ended} fires with its exit code.
    """

    def __init__(self):
        self.out = self.err = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


class TutorialMixin(test_cli_service.ServiceCommandMixin):
    timeout = 400
    #: The agent's supervisor: runit when installed, else builtin.
    supervisor = None

    def setUp(self):
        test_cli_service.ServiceCommandMixin.setUp(self)
        # The agent's pod root is in its state directory: the pods' users
        # must reach it, wherever the checkout lives.
        self.stateDir = reachableDirectory(self, "p2-state-")
        self.env["P2_STATE_DIR"] = self.stateDir

    def p2(self, *args, stateDir=None):
        """
        Run C{p2}; with C{stateDir}, as if on another host whose state
        directory it is.
        """
        env = self.env if stateDir is None else dict(self.env, P2_STATE_DIR=stateDir)
        argv = p2Argv() + ["--store", self.url] + list(args)
        d = utils.getProcessOutputAndValue(sys.executable, argv, env=env, path=ROOT)
        return d.addCallback(lambda r: (r[0].decode("utf-8"), r[1].decode("utf-8"), r[2]))

    @defer.inlineCallbacks
    def startAgent(self, node=None, stateDir=None):
        """
        C{p2 start [--node NODE]} (with C{stateDir}: another agent of its
        own), stopped with its pods removed at cleanup.
        """
        stateDir = stateDir or self.stateDir
        self.addCleanup(self.cleanUpAgent, stateDir)
        self.supervisor = self.supervisor or supervisorKind()
        args = ["start", "--supervisor", self.supervisor] + (["--node", node] if node else [])
        out, err, code = yield self.p2(*args, stateDir=stateDir)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("started the agent", out)

    @defer.inlineCallbacks
    def cleanUpAgent(self, stateDir):
        yield self.p2("stop-agent", "--timeout", "60", stateDir=stateDir)
        from p2twisted.agent.layout import StateLayout
        from p2twisted.agent.supervisors import makeSupervisor
        from p2twisted.agent.users import PodUsers
        layout = StateLayout(stateDir)
        if os.path.isdir(layout.serviceDir):
            supervisor = makeSupervisor(self.supervisor, layout, reactor)
            for name in (yield supervisor.services()):
                yield supervisor.remove(name, 5.0)
            yield supervisor.close()
        # The accounts the agent created for the pods it left installed.
        PodUsers(stateDir, os.path.join(stateDir, "pods")).removeUnused(set())

    @defer.inlineCallbacks
    def addHello(self, port):
        # The pod's user reads the app: a copy outside the checkout.
        app = reachableDirectory(self, "p2-hello-")
        shutil.copy(os.path.join(HELLO, "demo_hello.py"), app)
        os.chmod(os.path.join(app, "demo_hello.py"), 0o644)
        yield self.succeed("add", "hello", "--template", "python", "--port", str(port),
                           "--path", app, "--wsgi", "demo_hello:application")

    @defer.inlineCallbacks
    def checkRunning(self, port):
        result = yield httpGet("http://127.0.0.1:%d/" % (port,))
        self.assertEqual(result[0], 200)
        self.assertIn(b"hello from a p2 python service", result[1])
        status = yield self.succeed("status", "hello")
        self.assertIn("in sync", status)
        rows = json.loads((yield self.succeed("inspect", "--json")))
        self.assertEqual([r["pod"] for r in rows], ["hello"])
        self.assertEqual(rows[0]["intent"], rows[0]["reality"])
        self.assertTrue(rows[0]["in_sync"])
        self.assertEqual(rows[0]["state"], "running")
        self.assertEqual((rows[0]["health"]["status"], rows[0]["health"]["sha"]),
                         ("passing", rows[0]["intent"]))
        return rows[0]["intent"]


class TutorialTests(TutorialMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_startBeforeDeploy(self):
        """
        start, add, deploy --wait; logs, inspect; then the configuration
        signature: changed settings restart the pod, unchanged ones do not.
        """
        port, port2 = freePort(), freePort()
        yield self.startAgent()
        yield self.addHello(port)
        out = yield self.succeed("deploy", "hello", "--wait", "--timeout", "300")
        self.assertIn("hello is running on", out)
        sha = yield self.checkRunning(port)
        text = yield self.succeed("inspect")
        self.assertIn(sha[:12], text)
        logs = yield self.succeed("logs", "hello")
        self.assertIn("creating virtualenv", logs)
        pid = podPid(self.stateDir, "hello")
        self.assertIsNotNone(pid)

        out = yield self.succeed("config", "hello", "port=%d" % (port2,))
        self.assertIn("re-deployed hello", out)
        out = yield self.succeed("deploy", "hello", "--wait", "--timeout", "300")
        newSha = yield self.checkRunning(port2)
        self.assertNotEqual(newSha, sha)
        newPid = yield waitFor(lambda: podPid(self.stateDir, "hello"), timeout=30,
                               what="the pod's new pid")
        self.assertNotEqual(newPid, pid)

        out = yield self.succeed("config", "hello", "port=%d" % (port2,))
        self.assertIn("unchanged", out)
        out = yield self.succeed("deploy", "hello", "--wait", "--timeout", "300")
        self.assertIn(newSha[:12], out)
        self.assertEqual((yield self.checkRunning(port2)), newSha)
        self.assertEqual(podPid(self.stateDir, "hello"), newPid)

    @defer.inlineCallbacks
    def test_deployBeforeStart(self):
        """
        add, deploy (no agent yet), start: the agent converges; then
        C{p2 run hello install p2tiny==1.0} and C{p2 run hello packages}.
        """
        port = freePort()
        yield self.addHello(port)
        out = yield self.succeed("deploy", "hello")
        self.assertIn("deployed hello", out)
        yield self.startAgent()
        out = yield self.succeed("deploy", "hello", "--wait", "--timeout", "300")
        self.assertIn("hello is running on", out)
        yield self.checkRunning(port)

        line, code = yield self.p2Fails("run", "hello", "frobnicate")
        self.assertIn("its tasks: install, packages", line)
        wheels = reachableDirectory(self, "p2-wheels-")
        buildWheel(wheels)
        out = yield self.succeed("run", "hello", "install", "p2tiny==1.0", "--no-index",
                                 "--find-links", wheels)
        self.assertTrue(out.startswith("== "), out)
        self.assertIn("Successfully installed p2tiny-1.0", out)
        out = yield self.succeed("run", "hello", "packages")
        rows = [line.split() for line in out.splitlines()]
        tiny = [row for row in rows if row and row[0] == "p2tiny"]
        self.assertEqual(len(tiny), 1, out)
        self.assertEqual(tiny[0][1], "1.0")
        self.assertEqual(tiny[0][-2:], ["task", "install"])

    @defer.inlineCallbacks
    def test_runNoAgent(self):
        """
        For a node without a running agent, C{p2 run} and C{p2 logs} say so
        under its header and fail.
        """
        yield self.addHello(freePort())
        yield self.succeed("deploy", "hello", "--node", "elsewhere")
        for bad in ("nan", "inf", "0"):
            line, code = yield self.p2Fails("run", "--timeout", bad, "hello", "packages")
            self.assertEqual((line, code),
                             ("p2: --timeout must be a positive number of seconds", 2))
        for verb in (("run", "hello", "packages"), ("logs", "hello")):
            out, err, code = yield self.p2(*verb)
            self.assertEqual(code, 1)
            self.assertIn("== elsewhere ==\nno agent is running on node elsewhere", out)
            self.assertIn("on elsewhere", err)

    @defer.inlineCallbacks
    def test_logsNothing(self):
        line, code = yield self.p2Fails("logs", "hello")
        self.assertIn("there is no service hello", line)
        yield self.addHello(freePort())
        line, code = yield self.p2Fails("logs", "hello")
        self.assertIn("hello is not deployed anywhere", line)

    @defer.inlineCallbacks
    def test_inspectEmpty(self):
        out = yield self.succeed("inspect")
        self.assertIn("no pods", out)
        self.assertEqual(json.loads((yield self.succeed("inspect", "--json"))), [])


class BuiltinSupervisorTests(TutorialMixin, unittest.TestCase):
    supervisor = "builtin"

    @defer.inlineCallbacks
    def test_logsAndRun(self):
        """
        Under the builtin supervisor, C{p2 logs} reads its log file and
        C{p2 run} works the same.
        """
        port = freePort()
        yield self.startAgent()
        yield self.addHello(port)
        yield self.succeed("deploy", "hello", "--wait", "--timeout", "300")
        yield self.checkRunning(port)
        logs = yield self.succeed("logs", "hello")
        self.assertIn("serving demo_hello:application on port %d" % (port,), logs)
        # The agent's health checks (passing) do not flood the log.
        self.assertNotIn("/_status", logs)
        out = yield self.succeed("run", "hello", "packages")
        self.assertIn("PACKAGE", out)
        self.assertIn("pip", out)

        # p2 logs -f follows (through the agent) until SIGTERM, then exits
        # 130 without a word on stderr and leaves no request behind.
        follower = Follower()
        argv = [sys.executable] + p2Argv() + ["--store", self.url, "logs", "-f", "hello"]
        transport = reactor.spawnProcess(follower, sys.executable, argv, env=self.env,
                                         path=ROOT)
        yield waitFor(lambda: b"serving demo_hello" in follower.out, timeout=60,
                      what="p2 logs -f to print the log")
        yield httpGet("http://127.0.0.1:%d/followed" % (port,))
        yield waitFor(lambda: b"/followed" in follower.out, timeout=60,
                      what="p2 logs -f to print a new line")
        transport.signalProcess("TERM")
        code = yield follower.ended
        self.assertEqual((code, follower.err), (130, b""))
        dump = yield self.succeed("dump")
        self.assertNotIn("requests/", dump)

        # Its pods stay with the builtin supervisor: runit is refused, auto keeps it.
        yield self.succeed("stop-agent")
        line, code = yield self.p2Fails("start", "--supervisor", "runit")
        self.assertEqual(code, 1)
        self.assertTrue(line.startswith(
            "p2: the agent did not start: the pods in %s are supervised by builtin"
            % (os.path.join(self.stateDir, "service"),)), line)
        self.assertIn("start the agent with --supervisor builtin", line)
        yield self.succeed("start")
        yield waitFor(lambda: httpGet("http://127.0.0.1:%d/_status" % (port,)).addCallback(
            lambda r: r is not None and r[0] == 200), timeout=60,
            what="hello back under the builtin supervisor")


def sections(out):
    """
    @return: C{{header: text}} of output made of C{== header ==} sections.
    """
    found = {}
    header = None
    for line in out.splitlines(True):
        if line.startswith("== ") and line.rstrip().endswith(" =="):
            header = line.strip()[3:-3]
            found[header] = ""
        elif header is not None:
            found[header] += line
    return found


class MultiNodeTests(TutorialMixin, unittest.TestCase):
    """
    Two agents (two state directories, nodes alpha and beta) stand for two
    hosts: C{p2 run} and C{p2 logs} reach both through the store.
    """

    @defer.inlineCallbacks
    def test_runAndLogsOnEveryNode(self):
        app = reachableDirectory(self, "p2-app-")
        with open(os.path.join(app, "idle.py"), "w") as f:
            f.write("import os, signal\nprint('idle on', os.environ['POD_HOME'], flush=True)\n"
                    "signal.pause()\n")
        os.chmod(os.path.join(app, "idle.py"), 0o644)
        wheels = reachableDirectory(self, "p2-wheels-")
        buildWheel(wheels)
        betaState = reachableDirectory(self, "p2-state-")
        yield self.startAgent(node="alpha")
        yield self.startAgent(node="beta", stateDir=betaState)
        yield self.succeed("add", "idle", "--template", "python", "--module", "idle",
                           "--path", app)
        out = yield self.succeed("deploy", "idle", "--node", "alpha", "--node", "beta",
                                 "--wait", "--timeout", "300")
        self.assertIn("idle is running on alpha, beta", out)

        out = yield self.succeed("run", "idle", "install", "p2tiny==1.0", "--no-index",
                                 "--find-links", wheels)
        found = sections(out)
        self.assertEqual(sorted(found), ["alpha", "beta"], out)
        for node in ("alpha", "beta"):
            self.assertIn("Successfully installed p2tiny-1.0", found[node])
        found = sections((yield self.succeed("run", "idle", "packages")))
        for node in ("alpha", "beta"):
            rows = [line.split() for line in found[node].splitlines()]
            self.assertIn(["p2tiny", "1.0"], [row[:2] for row in rows], found[node])

        logs = sections((yield self.succeed("logs", "idle")))
        self.assertEqual(sorted(h.split(":")[0] for h in logs), ["alpha", "beta"], logs)
        homes = {h.split(":")[0]: text for h, text in logs.items()}
        self.assertIn("idle on " + os.path.join(self.stateDir, "pods", "idle"), homes["alpha"])
        self.assertIn("idle on " + os.path.join(betaState, "pods", "idle"), homes["beta"])

        # beta's host goes away: alpha still answers, beta is named, exit 1.
        out, err, code = yield self.p2("stop-agent", stateDir=betaState)
        self.assertIn("stopped the agent", out)
        out, err, code = yield self.p2("run", "idle", "packages")
        self.assertEqual(code, 1, out)
        found = sections(out)
        self.assertIn("p2tiny", found["alpha"])
        self.assertIn("no agent is running on node beta", found["beta"])
        self.assertEqual(err.strip(), "p2: task packages failed on beta")


class ServerTutorialMixin(TutorialMixin):
    """
    The short tutorial on a store server: C{tutorialStore()} gives the URL
    of a fresh namespace on it.
    """

    @defer.inlineCallbacks
    def test_shortTutorial(self):
        """
        add, deploy --wait, status, logs and undeploy --wait with the store
        on a server.
        """
        self.url = self.tutorialStore()
        www = reachableDirectory(self, "p2-www-")
        with open(os.path.join(www, "hello.txt"), "w") as f:
            f.write("hello\n")
        os.chmod(os.path.join(www, "hello.txt"), 0o644)
        port = freePort()
        yield self.startAgent()
        yield self.succeed("add", "web", "--template", "static", "--port", str(port),
                           "--directory", www)
        out = yield self.succeed("deploy", "web", "--wait", "--timeout", "120")
        self.assertIn("web is running on", out)
        self.assertEqual((yield httpGet("http://127.0.0.1:%d/hello.txt" % (port,))),
                         (200, b"hello\n"))
        status = yield self.succeed("status", "web")
        self.assertIn("in sync", status)
        # p2 logs goes through the store to the agent: here, the server.
        logs = yield waitFor(lambda: self.succeed("logs", "web").addCallback(
            lambda text: text if "GET /hello.txt" in text else None), timeout=30,
            what="the request in web's log")
        self.assertIn("serving %s on port %d" % (www, port), logs)
        self.assertNotIn("/_status", logs)
        # undeploy --wait returns once the agent removed the pod (after its
        # removal grace): nothing answers on its port any more.
        out = yield self.succeed("undeploy", "web", "--wait", "--timeout", "60")
        self.assertIn("removed", out)
        import socket
        with socket.socket() as s:
            self.assertNotEqual(s.connect_ex(("127.0.0.1", port)), 0)


class ZooKeeperTutorialTests(ServerTutorialMixin, unittest.TestCase):

    def tutorialStore(self):
        from tests.zkserver import sharedServer
        return "zk://%s/p2-%s" % (sharedServer().hosts, uuid.uuid4().hex[:12])


class EtcdTutorialTests(ServerTutorialMixin, unittest.TestCase):

    def tutorialStore(self):
        from tests.etcdserver import sharedServer
        return sharedServer().url("/p2-%s" % (uuid.uuid4().hex[:12],))
