"""
The agent as a real process (C{twistd -n p2-agent}): killed with SIGKILL in
the middle of an install, restarted after SIGKILL, and running through a
ZooKeeper outage.
"""

import json
import os
import signal
import subprocess
import sys
import uuid

from twisted.internet import defer, protocol, reactor, task, threads
from twisted.trial import unittest

from p2twisted import intent
from p2twisted.manifest import parseManifest
from p2twisted.store import keys, openStore
from tests.agentharness import buildWebArtifact, freePort, waitForVersion, webManifest
from tests.reachable import reachableDirectory
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit
from tests.zkserver import ZooKeeperServer, missing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Output(protocol.ProcessProtocol):

    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.reason = reason
        self.ended.callback(None)


class AgentProcess(object):
    """
    A C{twistd -n p2-agent} subprocess.
    """

    def __init__(self, testCase, base, store, node="n1", config=None):
        self.testCase = testCase
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.argv = [sys.executable, twistd, "-n", "--pidfile=",
                     "p2-agent", "--store", store, "--node", node,
                     "--state-dir", os.path.join(base, "state"),
                     "--pod-root", os.path.join(base, "pods"), "--supervisor", "runit"]
        # Pods run as 'nobody', an existing account the agent must be allowed.
        config = "allowed_run_as: [nobody]\n" + (config or "")
        path = os.path.join(base, "agent.yaml")
        with open(path, "w") as f:
            f.write(config)
        self.argv += ["--config", path]
        self.proto = None

    def start(self):
        self.proto = _Output()
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
        env["PYTHONPATH"] = ROOT
        self.transport = reactor.spawnProcess(self.proto, self.argv[0], self.argv, env=env,
                                              path=ROOT)
        self.testCase.addCleanup(self.kill, signal.SIGTERM)
        self.testCase.addCleanup(self.report)
        return self

    def report(self):
        from twisted.python import log
        log.msg("agent output:\n" + self.proto.output.decode("utf-8", "replace"))

    def kill(self, sig=signal.SIGKILL):
        if self.proto is None or self.proto.ended.called:
            return defer.succeed(None)
        self.transport.signalProcess(sig)
        return self.proto.ended


def base(testCase):
    """
    A directory for an agent's state and pods, searchable by pod users; the
    pods an agent left under it are removed at cleanup, pass or fail.
    """
    path = reachableDirectory(testCase, "p2-agent-")
    testCase.addCleanup(removePods, path)
    return path


@defer.inlineCallbacks
def removePods(root):
    from p2twisted.agent.layout import StateLayout
    from p2twisted.agent.supervisors import makeSupervisor
    state = StateLayout(os.path.join(root, "state"))
    if not os.path.isdir(state.serviceDir):
        return
    supervisor = makeSupervisor("runit", state, reactor)
    for name in (yield supervisor.services()):
        yield supervisor.remove(name, 5.0)
    from p2twisted.agent.users import PodUsers
    PodUsers(state.stateDir, os.path.join(root, "pods")).removeUnused(set())


class AgentKilledMidInstallTests(unittest.TestCase):

    timeout = 180

    @defer.inlineCallbacks
    def test_killDuringExtraction(self):
        """
        An agent SIGKILLed while extracting an artifact leaves no
        half-extracted version as C{current}; restarted, it completes the
        install and the pod serves.
        """
        requireRunit()
        root = base(self)
        url = "local://%s/state.db" % (root,)
        store = yield openStore(url)
        self.addCleanup(store.close)
        artifacts = os.path.join(root, "artifacts")
        os.makedirs(artifacts)
        # Big enough (incompressible, many files) that extraction takes a while.
        files = {"data/blob%03d" % i: os.urandom(256 * 1024) for i in range(240)}
        artifactURL, sha = buildWebArtifact(artifacts, "big", "1", files=files)
        port = freePort()
        agent = AgentProcess(self, root, url).start()
        yield intent.schedule(store, "n1", parseManifest(webManifest("big", artifactURL, port, sha)))
        installs = os.path.join(root, "pods", "big", "web", "installs")

        def extracting():
            try:
                return any(n.startswith(".tmp-") for n in os.listdir(installs))
            except OSError:
                return False
        yield waitFor(extracting, timeout=60, interval=0.002, what="extraction to start")
        yield agent.kill(signal.SIGKILL)
        current = os.path.join(root, "pods", "big", "web", "current")
        self.assertFalse(os.path.lexists(current) and ".tmp-" in os.readlink(current))
        self.assertIsNone((yield store.get(keys.reality("n1", "big"))))

        AgentProcess(self, root, url).start()
        yield waitForVersion(port, "1", timeout=90)
        target = os.readlink(current)
        self.assertNotIn(".tmp-", target)
        self.assertEqual(len(os.listdir(os.path.join(installs, os.path.basename(target), "data"))),
                         240)
        self.assertEqual([n for n in os.listdir(installs) if n.startswith(".tmp-")], [])


class StoreOutageTests(unittest.TestCase):

    timeout = 180

    @defer.inlineCallbacks
    def test_zookeeperOutageKeepsPodsRunning(self):
        """
        With the agent on ZooKeeper, stopping the ZooKeeper server stops
        nothing: the pod keeps serving with the same pid.  When the server
        is back, the agent registers again and converges a new version.
        """
        requireRunit()
        why = missing()
        if why:
            from tests.servers import requireServer
            requireServer("ZooKeeper", why)
        server = ZooKeeperServer()
        yield threads.deferToThread(server.start)
        self.addCleanup(lambda: threads.deferToThread(server.destroy))
        root = base(self)
        url = "zk://%s/outage%s" % (server.hosts, uuid.uuid4().hex[:8])
        store = yield openStore(url)
        self.addCleanup(store.close)
        artifacts = os.path.join(root, "artifacts")
        os.makedirs(artifacts)
        port = freePort()
        url1, sha1 = buildWebArtifact(artifacts, "web", "1")
        agent = AgentProcess(self, root, url,
                             config="session_ttl: 2\nresync_interval: 1\n").start()
        yield intent.schedule(store, "n1", parseManifest(webManifest("web", url1, port, sha1)))
        yield waitForVersion(port, "1", timeout=60)
        pidPath = os.path.join(root, "state", "service", "web__web__bin__launch", "supervise", "pid")
        with open(pidPath) as f:
            pid = f.read()

        yield threads.deferToThread(server.stop)
        # The outage outlasts the agent's 2 s session: the pod must not notice.
        for _ in range(4):
            yield task.deferLater(reactor, 1.0, lambda: None)
            yield waitForVersion(port, "1")
        with open(pidPath) as f:
            self.assertEqual(f.read(), pid)

        yield threads.deferToThread(server.start)
        url2, sha2 = buildWebArtifact(artifacts, "web", "2")
        yield waitFor(lambda: intent.schedule(
            store, "n1", parseManifest(webManifest("web", url2, port, sha2))).addCallbacks(
                lambda _: True, lambda f: False), timeout=60, interval=0.5,
            what="the store to take writes again")
        yield waitForVersion(port, "2", timeout=90)
        machine = yield store.get(keys.machine("n1"))
        self.assertIsNotNone(machine)
        yield agent.kill(signal.SIGTERM)


class AgentRestartTests(unittest.TestCase):

    timeout = 180

    @defer.inlineCallbacks
    def test_killedAgentTakesOverAtOnce(self):
        """
        An agent SIGKILLed and restarted on the same machine takes over its
        C{machines/<node>} key from its dead predecessor instead of waiting
        for the old session to expire (here ten minutes), and converges.
        """
        requireRunit()
        root = base(self)
        url = "local://%s/state.db" % (root,)
        store = yield openStore(url)
        self.addCleanup(store.close)
        config = "session_ttl: 600\nresync_interval: 1\n"
        first = AgentProcess(self, root, url, config=config).start()

        def holder():
            d = store.get(keys.machine("n1"))
            return d.addCallback(lambda e: e and json.loads(e.value)["process"]["pid"])
        self.assertEqual((yield waitFor(holder, timeout=60, what="the first agent")),
                         first.transport.pid)
        yield first.kill(signal.SIGKILL)
        second = AgentProcess(self, root, url, config=config).start()
        yield waitFor(lambda: holder().addCallback(lambda pid: pid == second.transport.pid),
                      timeout=60, what="the restarted agent to hold machines/n1")
        self.assertIn(b"took it over", second.proto.output)

        artifacts = os.path.join(root, "artifacts")
        os.makedirs(artifacts)
        artifactURL, sha = buildWebArtifact(artifacts, "web", "1")
        port = freePort()
        yield intent.schedule(store, "n1", parseManifest(webManifest("web", artifactURL, port,
                                                                     sha)))
        yield waitForVersion(port, "1", timeout=60)

    @defer.inlineCallbacks
    def test_sigtermHandsOverAtOnce(self):
        """
        An agent stopped with SIGTERM frees C{machines/<node>} as it exits
        (its session, here of ten minutes, is closed), and a second agent
        waiting for the key takes it the moment it is deleted (it watches
        the key), not at its next retry.
        """
        requireRunit()
        root = base(self)
        url = "local://%s/state.db" % (root,)
        store = yield openStore(url)
        self.addCleanup(store.close)
        config = "session_ttl: 600\nresync_interval: 1\n"
        first = AgentProcess(self, root, url, config=config).start()

        def holder():
            d = store.get(keys.machine("n1"))
            return d.addCallback(lambda e: e and json.loads(e.value)["process"]["pid"])
        self.assertEqual((yield waitFor(holder, timeout=60, what="the first agent")),
                         first.transport.pid)
        second = AgentProcess(self, root, url, config=config).start()
        # Three failed tries: its next retry is some seconds away.
        yield waitFor(lambda: second.proto.output.count(b"still held by an earlier session") >= 3,
                      timeout=60, what="the second agent to wait for the key")
        yield first.kill(signal.SIGTERM)
        self.assertIn(b"Main loop terminated", first.proto.output)
        yield waitFor(lambda: holder().addCallback(lambda pid: pid == second.transport.pid),
                      timeout=60, what="the second agent to hold machines/n1")
        self.assertIn(b"was released; registering", second.proto.output)
        self.assertNotIn(b"took it over", second.proto.output)

    def test_liveHolderIsNotTakenOver(self):
        """
        Only the key of a dead agent of this machine, boot and pid namespace
        is taken over: never a live one (also one whose pid was reused by a
        process started later), another machine's, another boot's or
        another pid namespace's (a container sharing the machine id).
        """
        from p2twisted.agent.process import processIdentity
        from p2twisted.agent.service import deadPredecessor
        me = processIdentity()
        self.assertTrue(me["boot_id"] and me["pid_ns"] and me["pid_start"], me)
        facts = {"machine_id": "m1", "process": dict(me, pid=os.getpid() + 10 ** 6)}

        def holder(**changes):
            process = dict(me, pid=2 ** 22 + 1)
            process.update(changes.pop("process", {}))
            return json.dumps(dict({"machine_id": "m1", "process": process}, **changes))
        self.assertTrue(deadPredecessor(facts, holder()))
        self.assertFalse(deadPredecessor(facts, holder(process={"pid": os.getpid()})))
        self.assertTrue(deadPredecessor(facts, holder(process={
            "pid": os.getpid(), "pid_start": me["pid_start"] - 1})))  # pid reused since
        self.assertFalse(deadPredecessor(facts, holder(machine_id="m2")))
        self.assertFalse(deadPredecessor(facts, holder(process={"boot_id": "other"})))
        self.assertFalse(deadPredecessor(facts, holder(process={"pid_ns": 1})))
        self.assertFalse(deadPredecessor(facts, json.dumps({"machine_id": "m1",
                                                            "pid": 2 ** 22 + 1})))
        self.assertFalse(deadPredecessor(facts, "not json"))
        self.assertFalse(deadPredecessor({"process": me}, holder()))  # no machine id

    @defer.inlineCallbacks
    def test_zombieIsGone(self):
        """
        A predecessor that died but was not reaped yet (a zombie) is gone.
        """
        from p2twisted.agent.supervisors import processAlive
        child = subprocess.Popen(["true"])
        self.addCleanup(child.wait)

        def zombie():
            with open("/proc/%d/stat" % (child.pid,)) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        self.assertTrue(processAlive(os.getpid()))
        yield waitFor(zombie, timeout=30, what="the child to exit")
        self.assertFalse(processAlive(child.pid))
