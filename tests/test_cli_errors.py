"""
Errors point at their cause (issue 10, item 2): what C{p2} checks before
writing, what C{p2 status} shows of a failing pod and of a node whose agent
is down, the verbs that remove things, and C{init} after other verbs.
Each runs the real C{p2} command against a C{local://} store of its own.
"""

import json
import os
import socket
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from p2twisted import listeners
from p2twisted.store import keys, openStore
from tests.reachable import reachableDirectory
from tests.cli import ROOT
from tests.test_cli_service import ServiceCommandMixin

EXAMPLE = os.path.join(ROOT, "conf", "examples", "hello.yaml")
HERE = socket.gethostname().split(".")[0]


class StoreMixin(object):

    @defer.inlineCallbacks
    def put(self, key, value):
        """
        Write C{key} into the test's store directly, as an agent would.
        """
        store = yield openStore(self.url, reactor)
        try:
            yield store.put(key, json.dumps(value).encode() if not isinstance(value, bytes)
                            else value)
        finally:
            yield store.close()

    def www(self):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def listen(self):
        """
        Listen on a free port of 127.0.0.1 in this test process (another
        program than any pod) until the test ends.

        @return: the port number.
        """
        if listeners.listeningInodes(1) is None:
            raise unittest.SkipTest("no /proc/net/tcp here")
        port = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port


class HostChecksTests(StoreMixin, ServiceCommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_staticDirectoryMustExist(self):
        """
        C{add} refuses a static service on a directory that does not exist
        here (exit 2, naming it), unless told it runs elsewhere.
        """
        missing = os.path.abspath(self.mktemp())
        line, code = yield self.p2Fails("add", "web", "-t", "static", "--directory", missing)
        self.assertEqual(code, 2)
        self.assertIn("--directory %s does not exist on this host" % (missing,), line)
        yield self.succeed("add", "web", "-t", "static", "--directory", missing,
                           "--no-host-check")

    @defer.inlineCallbacks
    def test_pythonModuleMustBeFound(self):
        """
        C{add} refuses a python service whose module is in neither C{--path}
        nor the standard library (without requirements to install it), and
        a C{--path} that does not exist.
        """
        line, code = yield self.p2Fails("add", "app", "-t", "python", "--module", "no_such_app")
        self.assertEqual(code, 2)
        self.assertIn("module no_such_app is not in --path", line)
        missing = os.path.abspath(self.mktemp())
        line, code = yield self.p2Fails("add", "app", "-t", "python", "--module", "app",
                                     "--path", missing)
        self.assertIn("--path %s does not exist" % (missing,), line)
        app = self.www()
        with open(os.path.join(app, "hello_app.py"), "w") as f:
            f.write("print('hello')\n")
        yield self.succeed("add", "app", "-t", "python", "--module", "hello_app", "--path", app)

    @defer.inlineCallbacks
    def test_configChecksDirectory(self):
        """
        C{config} refuses to point a service at a directory missing here.
        """
        yield self.succeed("add", "web", "-t", "static", "--directory", self.www())
        missing = os.path.abspath(self.mktemp())
        line, code = yield self.p2Fails("config", "web", "directory=" + missing)
        self.assertEqual(code, 2)
        self.assertIn("does not exist on this host", line)

    @defer.inlineCallbacks
    def test_portTakenHere(self):
        """
        Deploying to this host on a port another program listens on is
        refused, naming that program; deploying to another node is not
        checked.  C{config} refuses to move a service deployed here onto it.
        """
        taken = self.listen()
        yield self.succeed("add", "web", "-t", "static", "--directory", self.www(),
                           "--port", str(taken))
        line, code = yield self.p2Fails("deploy", "web")
        self.assertEqual(code, 2)
        self.assertIn("port %d on this host is taken by pid %d" % (taken, os.getpid()), line)
        self.assertIn("p2 config web port=N", line)
        yield self.succeed("deploy", "web", "--node", "elsewhere")
        yield self.succeed("add", "blog", "-t", "static", "--directory", self.www())
        yield self.succeed("deploy", "blog", "--node", HERE)
        line, code = yield self.p2Fails("config", "blog", "port=%d" % (taken,))
        self.assertIn("port %d on this host is taken" % (taken,), line)
        yield self.succeed("config", "blog", "port=%d" % (taken,), "--no-host-check")

    @defer.inlineCallbacks
    def test_misspelledSetting(self):
        """
        C{config NAME prot=8081} suggests C{port=} and exits 2, also when
        resetting (C{prot=}), which used to say "unchanged".
        """
        yield self.succeed("add", "web", "-t", "static", "--directory", self.www())
        for change in ("prot=8081", "prot="):
            line, code = yield self.p2Fails("config", "web", change)
            self.assertEqual(code, 2)
            self.assertIn("has no setting prot; did you mean port=?", line)


class StatusTests(StoreMixin, ServiceCommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_agentDown(self):
        """
        A node without an agent is marked down beside its pods, and the
        state shown is said to be possibly stale; an agent's presence key
        makes it up.
        """
        yield self.succeed("add", "job", "-t", "command", "--command", "true")
        yield self.succeed("deploy", "job", "--node", "n1")
        yield self.put(keys.status("agents", "n1"), {"last_sync": 1.0})
        out = yield self.succeed("status")
        self.assertIn("[agent DOWN (last seen", out)
        self.assertIn("the agent of n1 is down", out)
        yield self.put(keys.machine("n1"), {"node": "n1"})
        out = yield self.succeed("status")
        self.assertIn("[agent up]", out)
        self.assertNotIn("is down", out)
        state = json.loads((yield self.succeed("status", "--json")))[0]["nodes"][0]
        self.assertEqual(state["agent"]["up"], True)

    @defer.inlineCallbacks
    def test_failingPod(self):
        """
        A crash-looping pod on this host: its restarts, the crash loop, its
        error ending with 'p2 logs NAME', a critical health on one line, and
        the last lines of its log.
        """
        yield self.succeed("add", "web", "-t", "static", "--directory", self.www())
        yield self.succeed("deploy", "web", "--node", HERE, "--no-host-check")
        yield self.put(keys.status("pods", HERE, "web"), {
            "state": "running", "error": "bin/launch exited 1", "restarts": 7,
            "crash_loop": {"restarts": 7, "service": "web__app__bin__launch",
                           "text": "crash-looping (7 restarts in 60 s, last exit 1)"}})
        yield self.put(keys.health("web", HERE), {
            "status": "critical", "output": "GET http://127.0.0.1:8080/_status:\nrefused",
            "sha": None, "time": 1.0})
        log = os.path.join(self.stateDir, "service", "web__app__bin__launch")
        os.makedirs(log)
        with open(os.path.join(log, "current.log"), "w") as f:
            f.write("".join("line %d\n" % (i,) for i in range(20))
                    + "OSError: [Errno 98] Address already in use\n")
        out = yield self.succeed("status", "web")
        self.assertIn("crash-loop (7 restarts)", out)
        self.assertIn("last error: bin/launch exited 1; see 'p2 logs web'", out)
        self.assertIn("    last lines of web__app__bin__launch:\n", out)
        self.assertIn("      OSError: [Errno 98] Address already in use\n", out)
        self.assertNotIn("line 10\n", out)
        yield self.put(keys.status("pods", HERE, "web"), {"state": "running"})
        yield self.put(keys.reality(HERE, "web"), (yield self.intentBytes("web")))
        out = yield self.succeed("status", "web")
        self.assertNotIn("last lines", out)

    @defer.inlineCallbacks
    def intentBytes(self, podId):
        store = yield openStore(self.url, reactor)
        try:
            entry = yield store.get(keys.intent(HERE, podId))
        finally:
            yield store.close()
        return entry.value

    @defer.inlineCallbacks
    def test_criticalHealthOneLine(self):
        """
        A critical health is shown on one line ending with 'p2 logs NAME'.
        """
        yield self.succeed("add", "web", "-t", "static", "--directory", self.www())
        yield self.succeed("deploy", "web", "--node", "n1")
        raw = yield self.intentBytesOn("n1", "web")
        yield self.put(keys.reality("n1", "web"), raw)
        from p2twisted.manifest import parseManifest
        yield self.put(keys.health("web", "n1"), {
            "status": "critical", "output": "GET /_status: 404\n<html>\n<body>x</body>\n</html>",
            "sha": parseManifest(raw).sha(), "time": 1.0})
        out = yield self.succeed("status", "web")
        line = [l for l in out.splitlines() if "health check:" in l][0]
        self.assertTrue(line.endswith("; see 'p2 logs web'"), line)
        self.assertIn("GET /_status: 404 <html> <body>x</body> </html>", line)

    @defer.inlineCallbacks
    def intentBytesOn(self, node, podId):
        store = yield openStore(self.url, reactor)
        try:
            entry = yield store.get(keys.intent(node, podId))
        finally:
            yield store.close()
        return entry.value


class RemoveTests(StoreMixin, ServiceCommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_removeService(self):
        """
        C{remove} refuses while the service is deployed, naming the nodes
        and both ways out; with C{--undeploy} it undeploys and deletes it.
        """
        yield self.succeed("add", "job", "-t", "command", "--command", "true")
        yield self.succeed("deploy", "job", "--node", "n1")
        line, code = yield self.p2Fails("remove", "job")
        self.assertEqual(code, 1)
        self.assertIn("job is deployed to n1", line)
        self.assertIn("p2 remove job --undeploy", line)
        out = yield self.succeed("remove", "job", "--undeploy")
        self.assertIn("undeployed job from n1", out)
        self.assertIn("removed service job", out)
        line, code = yield self.p2Fails("config", "job")
        self.assertIn("there is no service job", line)
        dump = json.loads((yield self.succeed("dump", "--json")))
        self.assertNotIn("intent/n1/job", dump)

    @defer.inlineCallbacks
    def test_removeNode(self):
        """
        C{node remove} refuses while pods are scheduled there; with
        C{--drain} it unschedules them and, once the node runs nothing,
        deletes its marker and labels.
        """
        yield self.succeed("node", "add", "n1", "--label", "tier=web")
        yield self.succeed("schedule", EXAMPLE, "--node", "n1")
        line, code = yield self.p2Fails("node", "remove", "n1")
        self.assertIn("node n1 has pods scheduled: hello", line)
        self.assertIn("--drain", line)
        out = yield self.succeed("node", "remove", "n1", "--drain")
        self.assertIn("unscheduled hello from n1", out)
        self.assertIn("removed node n1", out)
        dump = json.loads((yield self.succeed("dump", "--json")))
        self.assertEqual([k for k in dump if "n1" in k], [])

    @defer.inlineCallbacks
    def test_drainWaitsForTheAgent(self):
        """
        A node still running pods keeps its marker (so its agent removes
        them) until C{--drain}'s timeout, which says so.
        """
        yield self.succeed("node", "add", "n1")
        yield self.put(keys.reality("n1", "hello"), b"id: hello\n")
        line, code = yield self.p2Fails("node", "remove", "n1", "--drain", "--timeout", "0.3")
        self.assertIn("node n1 still runs hello", line)
        self.assertIn("marker is kept", line)
        dump = json.loads((yield self.succeed("dump", "--json")))
        self.assertIn("intent/n1", dump)


class NamespaceTests(StoreMixin, ServiceCommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_writingVerbsMakeTheNamespace(self):
        """
        The first verb that writes makes the namespace marker, so C{init}
        afterwards says a p2 namespace is there (not "keys that are not a p2
        namespace").
        """
        yield self.succeed("schedule", EXAMPLE, "--node", "n1")
        dump = json.loads((yield self.succeed("dump", "--json")))
        self.assertIn(keys.NAMESPACE_MARKER, dump)
        line, code = yield self.p2Fails("init")
        self.assertIn("already holds a p2 namespace", line)

    @defer.inlineCallbacks
    def test_initAcceptsKeysP2Wrote(self):
        """
        Keys only in p2's trees without the marker (an agent wrote them
        before anyone ran init) are a namespace p2 made: C{init} marks it
        and keeps them; other keys still make it refuse.
        """
        yield self.put(keys.status("agents", "n1"), {"last_sync": 1.0})
        out = yield self.succeed("init")
        self.assertIn("initialised", out)
        dump = json.loads((yield self.succeed("dump", "--json")))
        self.assertIn(keys.status("agents", "n1"), dump)
        self.assertIn(keys.NAMESPACE_MARKER, dump)
        store = yield openStore(self.url, reactor)
        try:
            yield store.delete(keys.NAMESPACE_MARKER)
        finally:
            yield store.close()
        yield self.put("elsewhere/thing", b"x")
        line, code = yield self.p2Fails("init")
        self.assertIn("keys that are not a p2 namespace", line)


if sys.platform != "linux":
    HostChecksTests.skip = "reads /proc"


class StartTests(ServiceCommandMixin, unittest.TestCase):

    def p2With(self, url, *args):
        from twisted.internet import utils
        argv = ["-m", "p2twisted.cli", "--store", url] + list(args)
        d = utils.getProcessOutputAndValue(sys.executable, argv, env=self.env, path=ROOT)
        return d.addCallback(lambda r: (r[0].decode("utf-8"), r[1].decode("utf-8"), r[2]))

    @defer.inlineCallbacks
    def test_unreachableStore(self):
        """
        C{p2 start} against a store the agent cannot open waits for the
        agent to say so and exits 3 with its reason (it used to print
        "started the agent" and exit 0).
        """
        bad = "local:///proc/no-such-dir/state.db"
        self.addCleanup(self.p2With, bad, "stop-agent")
        out, err, code = yield self.p2With(bad, "start", "--supervisor", "builtin")
        self.assertEqual(code, 3, (out, err))
        self.assertIn("cannot open store %s" % (bad,), err)
        self.assertIn("/proc/no-such-dir", err)
        self.assertIn("p2 stop-agent", err)
        self.assertNotIn("started the agent", out)

    @defer.inlineCallbacks
    def test_alreadyRunningOnAnotherStore(self):
        """
        After a C{p2 start} on a mistyped store (its agent keeps trying), a
        C{p2 start} on the right one says that the agent running is on the
        other store, exit 1: it used to say "already running" and exit 0,
        and deploys then waited for an agent that never came.
        """
        bad = "local:///proc/no-such-dir/state.db"
        self.addCleanup(self.p2With, bad, "stop-agent")
        out, err, code = yield self.p2With(bad, "start", "--supervisor", "builtin",
                                           "--timeout", "5")
        self.assertEqual(code, 3, (out, err))
        line, code = yield self.p2Fails("start", "--supervisor", "builtin")
        self.assertEqual(code, 1)
        self.assertIn("already running on another store, %s, not %s" % (bad, self.url), line)
        self.assertIn("p2 stop-agent", line)

    @defer.inlineCallbacks
    def test_startWaitsForTheStore(self):
        """
        C{p2 start} returns once the agent has registered in the store.
        """
        self.addCleanup(self.p2, "stop-agent")
        out = yield self.succeed("start", "--supervisor", "builtin")
        self.assertIn("registered machines/", out)
        nodes = json.loads((yield self.succeed("nodes", "--json")))
        self.assertTrue(any(info["agent"] for info in nodes.values()), nodes)


    @defer.inlineCallbacks
    def test_stopWaitsForTheProcess(self):
        """
        C{p2 stop-agent} returns once the agent's process has ended, not
        when its pidfile is gone (twistd deletes it while shutting down).
        """
        from p2twisted.agent.supervisors import processAlive
        from p2twisted.cli.services_agent import runningPid
        yield self.succeed("start", "--supervisor", "builtin")
        pid = runningPid(os.path.join(self.env["P2_STATE_DIR"], "agent.pid"))
        self.addCleanup(lambda: processAlive(pid) and os.kill(pid, 9))
        out = yield self.succeed("stop-agent")
        self.assertIn("stopped the agent (pid %d)" % (pid,), out)
        self.assertFalse(processAlive(pid))

    @defer.inlineCallbacks
    def test_startAfterLogRotation(self):
        """
        C{p2 start} sees the agent register even when twistd rotates the
        log as it starts (an agent.log at its 1 MB rotation length): it
        used to look for the agent's log lines past the old log's end, find
        none, and give up with exit 3 after its timeout.
        """
        os.makedirs(self.stateDir)
        with open(os.path.join(self.stateDir, "agent.log"), "w") as f:
            f.write(("an older agent's line\n" * 50000)[:1000001])
        self.addCleanup(self.p2, "stop-agent")
        out = yield self.succeed("start", "--supervisor", "builtin", "--timeout", "15")
        self.assertIn("registered machines/", out)


class PortTakenEndToEndTests(ServiceCommandMixin, unittest.TestCase):
    """
    The scenario of issue 10: another program already listens on a
    service's port on this host; its pod cannot bind it.
    """

    timeout = 180

    @defer.inlineCallbacks
    def test_portTakenByAnotherProgram(self):
        """
        C{deploy --wait} (past the host check) says which program holds the
        port instead of printing its 404 page, shows the pod's "Address
        already in use" from its log, and ends with 'p2 logs NAME'; so does
        C{p2 status}.
        """
        from twisted.web import resource, server
        from tests.agentharness import AgentHarness
        base = reachableDirectory(self, "p2-agent-")  # the pod runs as nobody
        self.env["P2_STATE_DIR"] = os.path.join(base, "state")
        AgentHarness(self, self.url, node=HERE, base=base).start()
        other = reactor.listenTCP(0, server.Site(resource.NoResource()), interface="127.0.0.1")
        self.addCleanup(other.stopListening)
        taken = other.getHost().port
        www = reachableDirectory(self, "p2-www-")
        yield self.succeed("add", "web", "-t", "static", "--directory", www,
                           "--port", str(taken), "--run-as", "nobody")
        out, err, code = yield self.p2("deploy", "web", "--no-host-check", "--wait",
                                       "--timeout", "20")
        self.assertEqual(code, 1, (out, err))
        self.assertIn("port %d is held by pid %d" % (taken, os.getpid()), out)
        self.assertIn("not by a process of pod web", out)
        self.assertNotIn("<html>", out)
        self.assertIn("Address already in use", out)
        self.assertTrue(err.strip().endswith("see 'p2 logs web'"), err)
        status = yield self.succeed("status", "web")
        self.assertIn("held by pid %d" % (os.getpid(),), status)
        self.assertIn("Address already in use", status)


class DrainTests(unittest.TestCase):
    """
    C{p2 node remove --drain} keeps the node marker until the node's agent
    has nothing left to remove (it removes nothing without the marker),
    run in-process against a memory store an agent is simulated on.
    """

    def setUp(self):
        from twisted.internet import task
        from p2twisted.store.memory import MemoryState, MemoryStore
        self.clock = task.Clock()
        self.state = MemoryState()
        self.store = MemoryStore(self.state, self.clock)

    def drain(self):
        import argparse
        import io
        from p2twisted.cli import node
        from p2twisted.store.memory import MemoryStore
        options = argparse.Namespace(
            node="n1", drain=True, timeout=60.0, out=io.StringIO(), err=io.StringIO(),
            reactor=self.clock,
            openStore=lambda: defer.succeed(MemoryStore(self.state, self.clock)))
        self.result = []
        d = node.runRemove(options)
        d.addBoth(self.result.append)
        return options

    def agentStatus(self, pods, removals=None):
        """
        Write the agent's status record as its sync does (with its presence).
        """
        self.store.put(keys.machine("n1"), b'{"node": "n1"}')
        self.store.put(keys.status("agents", "n1"), json.dumps({
            "node": "n1", "pods": pods,
            "removals": removals or {"state": "free", "held": [], "orphans": [],
                                     "grace_until": {}}}).encode())

    def markerKept(self):
        return self.successResultOf(self.store.get(keys.intentNode("n1"))) is not None

    def test_deployInFlight(self):
        """
        A pod the agent was deploying when it was unscheduled (its status
        write, not waited for, has not landed; its reality comes at the end
        of the deploy) keeps the marker until the agent's record, written
        after the unschedule, no longer names it: the marker used to be
        deleted at once, and the pod then ran on with nobody to remove it.
        """
        self.store.put(keys.intentNode("n1"), b'{"node": "n1", "created": 1}')
        self.store.put(keys.intent("n1", "hello"), b"id: hello\n")
        self.agentStatus({"hello": {"state": "working"}})
        self.drain()
        self.clock.advance(1)
        self.assertEqual(self.result, [])
        self.assertTrue(self.markerKept())
        # The agent's sync after the unschedule: hello in its grace.
        self.agentStatus({"hello": {"state": "working"}},
                         {"state": "grace", "held": [], "orphans": [],
                          "grace_until": {"hello": 10.0}})
        self.clock.advance(1)
        self.assertTrue(self.markerKept())
        # The deploy ends (status, then reality); after the grace the pod is
        # removed: reality, then status deleted.
        self.store.put(keys.status("pods", "n1", "hello"), b'{"state": "running"}')
        self.store.put(keys.reality("n1", "hello"), b"id: hello\n")
        self.clock.advance(1)
        self.agentStatus({"hello": {"state": "working"}})
        self.clock.advance(1)
        self.assertTrue(self.markerKept())
        self.store.delete(keys.reality("n1", "hello"))
        self.store.delete(keys.status("pods", "n1", "hello"))
        self.clock.advance(1)
        self.assertEqual(self.result, [0])
        self.assertFalse(self.markerKept())

    def test_neverSeenByTheAgent(self):
        """
        A pod the agent's record (written after the unschedule) does not
        name was never handed to a worker: the marker goes then.
        """
        self.store.put(keys.intentNode("n1"), b'{"node": "n1", "created": 1}')
        self.store.put(keys.intent("n1", "hello"), b"id: hello\n")
        self.agentStatus({})
        self.drain()
        self.clock.advance(1)
        self.assertTrue(self.markerKept())
        self.agentStatus({})
        self.clock.advance(1)
        self.assertEqual(self.result, [0])
        self.assertFalse(self.markerKept())

    def test_heldRemovals(self):
        """
        Removals the agent holds (a new marker, orphans) end the drain at
        once with the confirmation to run, and the marker kept.
        """
        self.store.put(keys.intentNode("n1"), b'{"node": "n1", "created": 1}')
        self.store.put(keys.reality("n1", "hello"), b"id: hello\n")
        self.agentStatus({"hello": {"state": "idle"}},
                         {"state": "held", "hold": "new-marker", "held": ["hello"],
                          "orphans": [], "grace_until": {}, "confirm": "p2 node confirm n1"})
        self.drain()
        self.clock.advance(1)
        [failure] = self.result
        self.assertIn("p2 node confirm n1", failure.getErrorMessage())
        self.assertIn("holds its removals", failure.getErrorMessage())
        self.assertTrue(self.markerKept())

    def test_noMarker(self):
        """
        A node whose marker is gone while pods are still in its reality is
        not waited for (its agent removes nothing without the marker): the
        drain says how to let it remove them.
        """
        self.store.put(keys.label("node", "n1"), b'{"tier": "web"}')
        self.store.put(keys.reality("n1", "hello"), b"id: hello\n")
        self.drain()
        [failure] = self.result
        self.assertIn("has no marker", failure.getErrorMessage())
        self.assertIn("p2 node add n1", failure.getErrorMessage())


class UndeployWaitTests(unittest.TestCase):
    """
    C{p2 undeploy --wait} returns once the nodes' agents have removed the
    pod (after their removal grace): stopping the agent right after a plain
    undeploy, as the README's tutorial did, left the pods running.
    """

    def setUp(self):
        from twisted.internet import task
        from p2twisted import services
        from p2twisted.store.memory import MemoryState, MemoryStore
        self.clock = task.Clock()
        self.state = MemoryState()
        self.store = MemoryStore(self.state, self.clock)
        self.successResultOf(services.addService(
            self.store, "job", "command", {"command": "true"}))
        self.store.put(keys.intentNode("n1"), b'{"node": "n1", "created": 1}')
        self.store.put(keys.intent("n1", "job"), b"id: job\n")
        self.store.put(keys.reality("n1", "job"), b"id: job\n")
        self.store.put(keys.status("pods", "n1", "job"), b'{"state": "running"}')

    def undeploy(self):
        import argparse
        import io
        from p2twisted.cli import service
        from p2twisted.store.memory import MemoryStore
        self.options = argparse.Namespace(
            name="job", node=None, wait=True, timeout=60.0, out=io.StringIO(),
            err=io.StringIO(), reactor=self.clock,
            openStore=lambda: defer.succeed(MemoryStore(self.state, self.clock)))
        self.result = []
        service.runUndeploy(self.options).addBoth(self.result.append)

    def test_waitsForTheRemoval(self):
        """
        It waits while the pod's reality and then its status record are
        there, and says when it is removed.
        """
        self.undeploy()
        self.clock.advance(10)
        self.assertEqual(self.result, [])
        self.store.delete(keys.reality("n1", "job"))
        self.clock.advance(1)
        self.assertEqual(self.result, [])
        self.store.delete(keys.status("pods", "n1", "job"))
        self.clock.advance(1)
        self.assertEqual(self.result, [0])
        self.assertIn("n1: removed", self.options.out.getvalue())

    def test_graceShown(self):
        """
        While the agent waits out its removal grace, the wait says so once,
        with the seconds left, rather than nothing for 10 s.
        """
        self.clock.advance(100)
        self.store.put(keys.status("agents", "n1"), json.dumps({"removals": {
            "state": "grace", "hold": None, "held": [], "orphans": [],
            "grace_until": {"job": 110.0}}}).encode())
        self.undeploy()
        self.clock.advance(0.2)
        self.clock.advance(0.2)
        self.assertEqual(self.options.out.getvalue().count("removal grace"), 1)
        self.assertIn("n1: removal grace, removed in about 10s", self.options.out.getvalue())
        self.assertEqual(self.result, [])
        self.store.delete(keys.reality("n1", "job"))
        self.store.delete(keys.status("pods", "n1", "job"))
        self.clock.advance(1)
        self.assertEqual(self.result, [0])

    def test_held(self):
        """
        An agent holding its removals ends the wait at once, naming the
        confirmation.
        """
        self.store.put(keys.status("agents", "n1"), json.dumps({"removals": {
            "state": "held", "hold": "new-marker", "held": ["job"],
            "confirm": "p2 node confirm n1"}}).encode())
        self.undeploy()
        self.clock.advance(1)
        [failure] = self.result
        self.assertIn("p2 node confirm n1", failure.getErrorMessage())
