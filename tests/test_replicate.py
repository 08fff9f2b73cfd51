"""
C{p2 replicate}: its pure checks and ordering over snapshots, and the real
command against real agents (C{twistd p2-agent} processes, runit, HTTP
pods): controller and agent refusals, the deploy lock, worst health first
with a bounded number in flight, and Ctrl-C.
"""

import json
import signal
import sys

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.cli.replicate import nodeList
from p2twisted.errors import UsageError
from p2twisted.labels import encodeLabels
from p2twisted.orchestrate import replication
from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.records import Health
from p2twisted.store import keys
from p2twisted.store.common import Entry
from tests import orchfleet
from tests.cli import ROOT, P2CommandMixin
from tests.fleetprocesses import Fleet, StoreHistory
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit
from tests.test_agent_process_e2e import _Output


def snapshot(agents=(), podLabels=None, health=None):
    """
    @param podLabels: C{{node: {label: value}}} of pod C{web}.
    @param health: C{{node: status}} of pod C{web}.
    """
    entries = {}
    for node in agents:
        key = keys.machine(node)
        entries[key] = Entry(key, json.dumps({"node": node}).encode(), 1)
    for node, labels in (podLabels or {}).items():
        key = keys.label("pod", "%s/web" % (node,))
        entries[key] = Entry(key, encodeLabels(labels), 1)
    for node, status in (health or {}).items():
        key = keys.health("web", node)
        entries[key] = Entry(key, Health("web", node, status, "", 1.0, "sha").toBytes(), 1)
    return Snapshot(entries)


class ChecksTests(unittest.TestCase):

    def test_refusals(self):
        """
        A node whose pod an RC or a daemon set owns is refused (unless
        controllers are ignored), and so is one without a live agent; each
        reason names its node.
        """
        found = snapshot(agents=("n1", "n2", "n3"),
                         podLabels={"n1": {"replication_controller_id": "rc1"},
                                    "n2": {"daemon_set_id": "ds1"}})
        nodes = ["n1", "n2", "n3", "n4"]
        self.assertEqual(replication.refusals(found, "web", nodes), [
            "n1: web there belongs to replication controller rc1 (--ignore-controllers to "
            "replicate anyway)",
            "n2: web there belongs to daemon set ds1 (--ignore-controllers to replicate anyway)",
            "n4: no live agent (machines/n4 is absent)"])
        self.assertEqual(replication.refusals(found, "web", nodes, ignoreControllers=True),
                         ["n4: no live agent (machines/n4 is absent)"])

    def test_worstHealthFirst(self):
        """
        Nodes go worst health first: no health or critical, then warning,
        then passing; by name among equals.
        """
        found = snapshot(health={"a": "passing", "b": "critical", "c": "warning",
                                 "e": "passing"})
        self.assertEqual(replication.order(found, "web", ["a", "b", "c", "d", "e"]),
                         ["b", "d", "c", "a", "e"])

    def test_nodeList(self):
        """
        --nodes is checked; --min-nodes defaults to 1 (0 for one node) and
        must leave a node to replace.
        """
        self.assertEqual(nodeList("n1, n2,n3"), (["n1", "n2", "n3"], 1))
        self.assertEqual(nodeList("n1"), (["n1"], 0))
        for text, minNodes, message in (
                ("", None, "--nodes: expected node names, comma-separated"),
                ("n1,n2,n1", None, "--nodes: n1 given twice"),
                ("n1,a b", None, "--nodes: 'a b' is no node name (letters, digits and . _ : -; "
                                 "not . or ..)"),
                ("n1,n2", 2, "--min-nodes 2 leaves none of the 2 node(s) to replace at once; "
                             "expected less than 2")):
            e = self.assertRaises(UsageError, nodeList, text, minNodes)
            self.assertEqual(str(e), message)


class ReplicationTests(unittest.TestCase):

    def test_timeoutStopsTheRest(self):
        """
        A node whose agent never runs the manifest within the timeout fails
        the replication, naming the node and what it waited for; the nodes
        not started by then get no intent.
        """
        from p2twisted.manifest import parseManifest
        from p2twisted.store.memory import MemoryStore
        from twisted.internet import task
        clock = task.Clock()
        store = MemoryStore(clock=clock)
        manifest = parseManifest(orchfleet.manifest(1))
        run = replication.Replication(store, manifest, ["n1", "n2"], 1, timeout=5, clock=clock)
        d = run.run()
        for _ in range(20):
            clock.advance(0.5)
        failure = self.failureResultOf(d)
        self.assertEqual(str(failure.value), "n1: gave up after 5s waiting for its reality to "
                                             "hold %s" % (manifest.sha()[:12],))
        self.assertEqual(run.summary(), "failed: n1; not started: n2")
        self.assertIsNotNone(self.successResultOf(store.get(keys.intent("n1", "web"))))
        self.assertIsNone(self.successResultOf(store.get(keys.intent("n2", "web"))))


    def lockedRun(self, nodes):
        """
        @return: C{(clock, store, session, lock, Replication)} of a run of
            pod C{web} to C{nodes}, one at a time, under the deploy lock.
        """
        from p2twisted.manifest import parseManifest
        from p2twisted.store.memory import MemoryStore
        from twisted.internet import task
        clock = task.Clock()
        store = MemoryStore(clock=clock)
        session = self.successResultOf(store.session(15))
        lock = self.successResultOf(replication.takeLock(store, session, "web", clock))
        run = replication.Replication(store, parseManifest(orchfleet.manifest(1)), nodes, 1,
                                      clock=clock, lock=lock)
        return clock, store, session, lock, run

    def test_lockBrokenStopsTheRest(self):
        """
        Another C{p2 replicate --override-lock} breaking the deploy lock
        stops this one: the node under way fails naming the lock (its new
        intent stays), the nodes not started get no intent.
        """
        clock, store, session, lock, run = self.lockedRun(["n1", "n2"])
        replication.guardLock(store, session, lock, run.lost)
        d = run.run()
        clock.advance(1)
        other = self.successResultOf(store.session(15))
        self.successResultOf(replication.takeLock(store, other, "web", clock, override=True))
        clock.advance(1)
        failure = self.failureResultOf(d)
        self.assertEqual(str(failure.value), "lost the deploy lock: locks/replication/web was "
                         "broken (p2 replicate --override-lock?); the nodes not started are "
                         "not touched")
        self.assertEqual(run.summary(), "intent written, reality pending: n1; not started: n2")
        self.assertIsNotNone(self.successResultOf(store.get(keys.intent("n1", "web"))))
        self.assertIsNone(self.successResultOf(store.get(keys.intent("n2", "web"))))

    def test_sessionLostStopsTheRest(self):
        """
        The store session holding the lock ending (the store was lost for
        longer than its TTL) stops the replication too.
        """
        clock, store, session, lock, run = self.lockedRun(["n1", "n2"])
        replication.guardLock(store, session, lock, run.lost)
        d = run.run()
        clock.advance(1)
        self.successResultOf(session.close())
        clock.advance(1)
        self.assertIn("lost the deploy lock: the store session holding it ended",
                      str(self.failureResultOf(d).value))
        self.assertIsNone(self.successResultOf(store.get(keys.intent("n2", "web"))))

    def test_refusedOrRewrittenFails(self):
        """
        A node whose agent refuses the manifest, or whose intent someone
        else rewrites meanwhile, would never run it: the replication fails
        at once naming the node and why (rather than wait forever, holding
        the lock), and the nodes not started get no intent.
        """
        from p2twisted.records import PodStatus
        clock, store, session, lock, run = self.lockedRun(["n1", "n2"])
        d = run.run()
        self.successResultOf(store.put(keys.status("pods", "n1", "web"), PodStatus(
            "web", "n1", "refused", run.sha, "no signature\nfound").toBytes()))
        clock.advance(1)
        self.assertEqual(str(self.failureResultOf(d).value),
                         "n1: its agent refused web: no signature found; what ran there "
                         "keeps running")
        self.assertEqual(run.summary(), "failed: n1; not started: n2")
        self.assertIsNone(self.successResultOf(store.get(keys.intent("n2", "web"))))

        clock, store, session, lock, run = self.lockedRun(["n1", "n2"])
        d = run.run()
        self.successResultOf(store.put(keys.intent("n1", "web"), orchfleet.manifest(2)))
        clock.advance(1)
        self.assertIn("n1: its intent of web changed while waiting (now ",
                      str(self.failureResultOf(d).value))
        self.assertIsNone(self.successResultOf(store.get(keys.intent("n2", "web"))))

    def test_refusalOfEarlierBytesIgnored(self):
        """
        The agent's refusal of the same SHA in other bytes written before
        (the manifest unsigned, replicated now signed) does not fail the
        node; a refusal of the intent as replicated does.
        """
        from p2twisted.records import PodStatus
        clock, store, session, lock, run = self.lockedRun(["n1"])
        d = run.run()
        clock.advance(1)
        entry = self.successResultOf(store.get(keys.intent("n1", "web")))
        stale = PodStatus("web", "n1", "refused", run.sha, "not signed",
                          intent_version=entry.version + 1000)
        self.successResultOf(store.put(keys.status("pods", "n1", "web"), stale.toBytes()))
        clock.advance(1)
        self.assertNoResult(d)
        fresh = PodStatus("web", "n1", "refused", run.sha, "not signed either",
                          intent_version=entry.version)
        self.successResultOf(store.put(keys.status("pods", "n1", "web"), fresh.toBytes()))
        clock.advance(1)
        self.assertEqual(str(self.failureResultOf(d).value),
                         "n1: its agent refused web: not signed either; what ran there "
                         "keeps running")

    def test_stoppedWhileWriting(self):
        """
        Stopped (Ctrl-C) while a node's intent is on its way to the store,
        the summary says so rather than calling that node untouched: the
        write may still land.
        """
        from p2twisted.manifest import parseManifest
        from p2twisted.store.memory import MemoryStore
        from twisted.internet import task

        class Held(MemoryStore):
            def transaction(self, ops):
                d = defer.Deferred()
                self.held.append(d)
                return d.addCallback(lambda _: MemoryStore.transaction(self, ops))
        clock = task.Clock()
        store = Held(clock=clock)
        store.held = []
        run = replication.Replication(store, parseManifest(orchfleet.manifest(1)),
                                      ["n1", "n2"], 1, clock=clock)
        run.run()
        run.stop()
        self.assertEqual(run.summary(), "intent being written: n1; not started: n2")
        self.assertIn("; in flight: n1 (writing intent); 1 to go", run.line())
        store.held.pop().callback(None)
        self.assertEqual(run.summary(), "intent written, reality pending: n1; not started: n2")

    def test_storeBlipWaitedOut(self):
        """
        The store unavailable for a while (a blip of ZooKeeper's connection)
        while nodes wait does not end the replication: it looks again, and
        goes on once the node runs the manifest and is healthy.
        """
        from p2twisted.errors import StoreUnavailable
        from p2twisted.records import Health
        clock, store, session, lock, run = self.lockedRun(["n1"])
        d = run.run()
        clock.advance(1)
        get = store.get
        store.get = lambda key: defer.fail(StoreUnavailable(key, "memory", "down"))
        clock.advance(1)
        clock.advance(1)
        self.assertNoResult(d)
        store.get = get
        self.successResultOf(store.put(keys.reality("n1", "web"), run.manifest.raw))
        clock.advance(1)
        store.get = lambda key: defer.fail(StoreUnavailable(key, "memory", "down"))
        clock.advance(1)
        self.assertNoResult(d)
        store.get = get
        self.successResultOf(store.put(keys.health("web", "n1"), Health(
            "web", "n1", "passing", "", 1.0, run.sha).toBytes()))
        clock.advance(1)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(run.summary(), "done: n1")

    def test_intentFencedOnTheLock(self):
        """
        An intent write is fenced on the deploy lock: once the lock is
        broken, not even a write already on its way lands.
        """
        clock, store, session, lock, run = self.lockedRun(["n1"])
        self.successResultOf(store.delete(lock.key))
        self.assertIn("lost the deploy lock: locks/replication/web is no longer ours",
                      str(self.failureResultOf(run.run()).value))
        self.assertIsNone(self.successResultOf(store.get(keys.intent("n1", "web"))))


class ReplicateFleetTests(P2CommandMixin, unittest.TestCase):
    """
    C{p2 replicate} on three real agents, on the embedded store.
    """

    timeout = 600

    def openStore(self):
        from p2twisted.store import openStore
        return openStore(self.url, reactor)

    @defer.inlineCallbacks
    def fleet(self):
        requireRunit()
        store = yield self.openStore()
        self.addCleanup(store.close)
        fleet = Fleet(self, self.url, store, ("n1", "n2", "n3"))
        fleet.startAgents()
        yield fleet.waitAgents()
        return fleet

    def start(self, *args):
        """
        Start C{p2 replicate ARGS}.

        @return: its process protocol (C{output}, C{ended}, C{reason}).
        """
        command = _Output()
        argv = [sys.executable, "-m", "p2twisted.cli", "--store", self.url, "replicate"] + list(
            args)
        transport = reactor.spawnProcess(command, sys.executable, argv, env=self.env, path=ROOT)

        def kill():
            if not command.ended.called:
                transport.signalProcess(signal.SIGKILL)
                return command.ended
        self.addCleanup(kill)
        command.transport = transport
        return command

    @defer.inlineCallbacks
    def test_refusalsAndLock(self):
        """
        A node whose pod a replication controller owns, or one without an
        agent, is refused with one line naming it, and nothing is written;
        another holder's deploy lock is refused naming its holder, and
        broken by --override-lock, after which the replication runs and
        releases the lock.
        """
        fleet = yield self.fleet()
        path = fleet.manifestFile("1")
        yield fleet.store.put(keys.label("pod", "n2/web"),
                              encodeLabels({"replication_controller_id": "rc1"}))
        err, _ = yield self.p2Fails("replicate", path, "--nodes", "n1,n2,n3,n9")
        self.assertIn("refusing to replicate web: n2: web there belongs to replication "
                      "controller rc1", err)
        self.assertIn("n9: no live agent", err)
        for node in ("n1", "n2", "n3"):
            self.assertIsNone((yield fleet.store.get(keys.intent(node, "web"))))

        session = yield fleet.store.session(30)
        self.addCleanup(session.close)
        yield session.lock(keys.lock("replication", "web"), json.dumps(
            {"pid": 4242, "host": "elsewhere", "since": "2026-12-07T06:00:00Z"}).encode())
        err, _ = yield self.p2Fails("replicate", path, "--nodes", "n1,n3")
        self.assertIn("the replication of web is locked by pid 4242 on elsewhere", err)
        self.assertIn("--override-lock", err)
        out = yield self.succeed("replicate", path, "--nodes", "n1,n3", "--override-lock")
        self.assertIn("replicated web", out)
        yield fleet.waitFleet({"n1": "1", "n2": None, "n3": "1"})
        self.assertIsNone((yield fleet.store.get(keys.lock("replication", "web"))))

    @defer.inlineCallbacks
    def test_orderInFlightAndInterrupt(self):
        """
        Worst health first, one node at a time with --min-nodes 2: the node
        whose pod is failing its check goes first, then the others by name,
        and no two nodes are ever replaced at once.  Interrupted (SIGINT)
        while a node waits for a version that never turns healthy, the
        command exits 130 at once, releasing its lock; that node keeps the
        new intent, the others keep theirs.
        """
        fleet = yield self.fleet()
        first = fleet.manifestFile("1")
        for node in ("n1", "n2"):
            yield self.succeed("schedule", first, "--node", node)
        yield self.succeed("schedule", fleet.manifestFile("bad", healthy=False), "--node", "n3")
        yield fleet.waitServing({"n1": "1", "n2": "1", "n3": "bad"})
        yield fleet.waitHealthy({"n1": "1", "n2": "1"})
        history = StoreHistory(fleet)
        start = len(history.states)

        out = yield self.succeed("replicate", fleet.manifestFile("2"), "--nodes", "n1,n2,n3",
                                 "--min-nodes", "2")
        self.assertIn("replicated web (sha", out)
        yield fleet.waitFleet({"n1": "2", "n2": "2", "n3": "2"})
        firstV2 = {}
        for index, state in enumerate(history.states[start:]):
            for node, version in state["intent"].items():
                if version == "2":
                    firstV2.setdefault(node, index)
            replacing = [n for n, v in state["intent"].items()
                         if v == "2" and n not in history.passing(state, "2")]
            self.assertLessEqual(len(replacing), 1, state)
        self.assertEqual(sorted(firstV2, key=firstV2.get), ["n3", "n1", "n2"])
        events = yield fleet.events("replication")
        self.assertEqual([(e.id, e.action, e.details["nodes"]) for e in events],
                         [("web", "schedule", [n]) for n in ("n3", "n1", "n2")])

        command = self.start(fleet.manifestFile("3", healthy=False), "--nodes", "n1,n2,n3",
                             "--min-nodes", "2")
        yield waitFor(lambda: b"(health" in command.output, timeout=120,
                      what="the first node to wait for its health")
        self.assertIsNotNone((yield fleet.store.get(keys.lock("replication", "web"))))
        command.transport.signalProcess(signal.SIGINT)
        yield command.ended
        self.assertEqual(command.reason.value.exitCode, 130, command.output)
        self.assertIn(b"interrupted; the lock is released.", command.output)
        self.assertIsNone((yield fleet.store.get(keys.lock("replication", "web"))))
        intents = {}
        for node in ("n1", "n2", "n3"):
            entry = yield fleet.store.get(keys.intent(node, "web"))
            intents[node] = [v for v, m in fleet.versions.items() if m == entry.value][0]
        self.assertEqual(intents, {"n1": "3", "n2": "2", "n3": "2"})


class ZooKeeperReplicateFleetTests(ReplicateFleetTests):
    """
    C{p2 replicate} on three real agents, on a real ZooKeeper (the deploy
    lock is an ephemeral znode of the command's session).
    """

    def openStore(self):
        import uuid

        from tests.zkserver import sharedServer
        self.url = "zk://%s/replicate%s" % (sharedServer().hosts, uuid.uuid4().hex[:8])
        return ReplicateFleetTests.openStore(self)
