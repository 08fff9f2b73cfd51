# -*- test-case-name: tests.test_agent_sync -*-
"""
The agent's store traffic per intent change: it acts on the intent its
watch delivered and on reality as it wrote it, and still decides as if it
had listed both, converging when reality is changed behind its back.
"""

import collections
import json
import os

from twisted.internet import defer, task
from twisted.trial import unittest

from p2twisted import intent
from p2twisted.agent.config import AgentConfig
from p2twisted.agent.crashloop import preservingWrite
from p2twisted.agent.service import STATUS_INTERVAL, AgentService
from p2twisted.agent.testing import FakePods
from p2twisted.agent.worker import PodWorker
from p2twisted.manifest import parseManifest
from p2twisted.records import PodStatus
from p2twisted.store import keys
from p2twisted.store.memory import MemoryState, MemoryStore
from tests.test_agent_service import flushAgentStatus
from tests.test_agent_worker import V1, V2

DB = V1.replace(b"id: web", b"id: db")
GRACE = 10.0


class CountingStore(MemoryStore):
    """
    A memory store counting its calls (C{ops[(method, key or prefix)]}),
    whose listings can be held (C{held}: C{(prefix, Deferred)}) while
    C{holding}.
    """

    holding = False

    def __init__(self, *args, **kwargs):
        MemoryStore.__init__(self, *args, **kwargs)
        self.ops = collections.Counter()
        self.held = []

    def count(self, method, key):
        return self.ops[(method, key)]

    def list(self, prefix):
        self.ops[("list", prefix)] += 1
        if not self.holding:
            return MemoryStore.list(self, prefix)
        d = defer.Deferred()
        self.held.append((prefix, d))
        return d.addCallback(lambda _: MemoryStore.list(self, prefix))

    def release(self):
        self.holding = False
        while self.held:
            self.held.pop(0)[1].callback(None)


for _name in ("get", "put", "cas", "create", "delete"):
    def _counted(self, key, *args, _name=_name, **kwargs):
        self.ops[(_name, key)] += 1
        return getattr(MemoryStore, _name)(self, key, *args, **kwargs)
    setattr(CountingStore, _name, _counted)


class AgentSyncTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.state = MemoryState()
        self.store = MemoryStore(self.state, self.clock)
        self.agentStore = CountingStore(self.state, self.clock)
        self.pods = FakePods()
        self.stateDir = os.path.abspath(self.mktemp())

    def startAgent(self, pods=None, store=None, stateDir=None):
        config = AgentConfig(node="n1", store="memory://", podRoot="/nonexistent",
                             stateDir=stateDir or self.stateDir, resyncInterval=30.0,
                             sessionTTL=10.0, removalGrace=GRACE)
        agent = AgentService(config, pods or self.pods, self.clock,
                             store=store or self.agentStore)
        agent.startService()
        self.addCleanup(lambda: agent.stopService() if agent.running else None)
        return agent

    def get(self, key):
        entry = self.successResultOf(self.store.get(key))
        return entry.value if entry else None

    def schedule(self, *raws, store=None):
        for raw in raws:
            self.successResultOf(intent.schedule(store or self.store, "n1",
                                                 parseManifest(raw)))

    def deploys(self, pods=None):
        return [c for c in (pods or self.pods).calls if c[0] == "deploy"]

    def test_deliveredIntentNotListed(self):
        """
        An intent change costs the agent no listing of intent (the watch
        delivered it) and none of reality (it knows what it wrote): a second
        pod scheduled is deployed with no list at all.
        """
        self.schedule(V1)
        agent = self.startAgent()
        lists = dict(self.agentStore.ops)
        self.schedule(DB)
        self.assertEqual(len(self.deploys()), 2)
        self.assertTrue(agent.converged())
        self.assertEqual({k: v for k, v in self.agentStore.ops.items() if k[0] == "list"},
                         {k: v for k, v in lists.items() if k[0] == "list"})
        self.assertEqual(self.get(keys.reality("n1", "db")), DB)

    def test_deliveredAndListedDecideAlike(self):
        """
        An agent acting on what its watch delivers decides as one that lists
        intent and reality at every sync (its watch cancelled, a resync after
        each change): the same deploys and removals, the same removals
        status, through schedules, an upgrade, an unschedule within and past
        the grace, and a wipe and restore of the node's intent.
        """
        otherState = MemoryState()
        otherStore = MemoryStore(otherState, self.clock)
        otherPods = FakePods()
        watching = self.startAgent()
        listing = self.startAgent(pods=otherPods, store=MemoryStore(otherState, self.clock),
                                  stateDir=self.stateDir + "-listing")
        listing._watch.cancel()

        def both(change):
            change(self.store)
            change(otherStore)
            listing.resync()
            self.assertEqual(self.pods.calls, otherPods.calls)
            flushAgentStatus(self.clock)
            self.assertEqual(json.loads(self.get(keys.status("agents", "n1")))["removals"],
                             json.loads(self.successResultOf(otherStore.get(
                                 keys.status("agents", "n1"))).value)["removals"])

        both(lambda store: self.schedule(V1, store=store))
        both(lambda store: self.schedule(DB, store=store))
        both(lambda store: self.schedule(V2, store=store))
        both(lambda store: self.successResultOf(intent.unschedule(store, "n1", "db")))
        self.clock.advance(GRACE / 2)
        both(lambda store: None)
        self.clock.advance(GRACE)
        both(lambda store: None)
        both(lambda store: self.successResultOf(store.delete(keys.intent("n1", "web"))))
        both(lambda store: self.successResultOf(store.delete(keys.intentNode("n1"))))
        both(lambda store: self.schedule(V1, store=store))
        self.assertIn(("remove", parseManifest(DB).sha(), "db"), self.pods.calls)

    def test_staleDeliveryListsIntent(self):
        """
        A delivery that arrived while a resync was listing intent may be
        older than that listing: its sync lists intent afresh rather than
        deploy a pod unscheduled since.
        """
        self.schedule(V1)
        agent = self.startAgent()
        self.agentStore.holding = True
        agent.resync()
        self.schedule(DB)  # delivered while the resync's listing is under way
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        self.agentStore.release()
        self.assertEqual(len(self.deploys()), 1)
        self.assertIsNone(self.get(keys.reality("n1", "db")))
        self.assertTrue(agent.converged())

    def test_realityDeletedBehindItsBack(self):
        """
        Reality deleted by someone else while the pod runs is written again
        at the next resync (which reads it afresh).
        """
        self.schedule(V1)
        agent = self.startAgent()
        self.successResultOf(self.store.delete(keys.reality("n1", "web")))
        self.clock.advance(30)
        self.assertEqual(self.get(keys.reality("n1", "web")), V1)
        self.assertTrue(agent.converged())

    def test_realityWrittenBehindItsBack(self):
        """
        Reality rewritten by someone else (a new version) is not overwritten
        by what the agent remembers: its write fails on the version, it reads
        reality again and converges, and its next sync lists reality anew.
        """
        self.schedule(V1)
        agent = self.startAgent()
        self.successResultOf(self.store.put(keys.reality("n1", "web"), V1))
        lists = self.agentStore.count("list", keys.realityNode("n1"))
        self.clock.advance(1)  # (a sync's reality at the time of a worker's write is read again)
        self.schedule(V2)
        self.assertEqual(self.get(keys.reality("n1", "web")), V1)  # the cas failed
        self.assertFalse(agent.converged())
        self.clock.advance(2.5)  # the worker's retry reads reality
        self.assertEqual(self.get(keys.reality("n1", "web")), V2)
        self.assertTrue(agent.converged())
        self.schedule(DB)
        self.assertEqual(self.agentStore.count("list", keys.realityNode("n1")), lists + 1)

    def test_realityCreatedBehindItsBack(self):
        """
        Reality created by someone else for a pod the agent has not yet
        recorded is not overwritten either: its create fails, and it
        converges on what it reads.
        """
        self.pods.deploy = _slow(self.pods.deploy, self)
        self.schedule(V1)
        agent = self.startAgent()
        self.successResultOf(self.store.put(keys.reality("n1", "web"), V2))
        self.slow.callback(None)
        self.assertEqual(self.get(keys.reality("n1", "web")), V2)
        self.clock.advance(2.5)
        self.assertEqual(self.get(keys.reality("n1", "web")), V1)
        self.assertTrue(agent.converged())

    def test_removalDecidedOnListedReality(self):
        """
        A removal falling due at a sync that remembered reality (a delivery
        just after the grace ended, before the timer's resync) is decided on
        reality listed afresh: a pod whose reality someone deleted meanwhile
        is an orphan there, and its removal waits for a confirmation.
        """
        self.schedule(V1, DB)
        agent = self.startAgent()
        self.pods.onDisk = {"web": V1, "db": DB}
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        self.successResultOf(self.store.delete(keys.reality("n1", "db")))
        agent._wake.cancel()  # the delivery comes first
        self.clock.advance(GRACE + 1)
        self.schedule(V2)
        flushAgentStatus(self.clock)
        self.assertEqual([c for c in self.pods.calls if c[0] == "remove"], [])
        removals = json.loads(self.get(keys.status("agents", "n1")))["removals"]
        self.assertEqual((removals["state"], removals["orphans"]), ("held", ["db"]))

    def test_newSessionReadsReality(self):
        """
        After a new session (the agent was away), reality is listed again.
        """
        self.schedule(V1)
        agent = self.startAgent()
        lists = self.agentStore.count("list", keys.realityNode("n1"))
        self.successResultOf(agent.presence.session.close())
        self.clock.advance(1)
        self.assertTrue(agent.canAct())
        self.schedule(DB)
        self.assertEqual(self.agentStore.count("list", keys.realityNode("n1")), lists + 1)

    def test_agentStatusWrittenWhenChanged(self):
        """
        C{status/agents/<node>} is written at every resync (its
        C{last_sync}), before the resync's L{Deferred} fires; after an
        intent delivery, only when what it says changed, with the other
        changes of a burst of syncs and the deploys they started,
        L{STATUS_INTERVAL} after the first.
        """
        DB2 = V1.replace(b"id: web", b"id: db2")
        self.schedule(V1)
        agent = self.startAgent()
        flushAgentStatus(self.clock)
        key = keys.status("agents", "n1")
        written = self.agentStore.count("put", key)
        agent._intentChanged(self.successResultOf(self.store.list(keys.intentNode("n1"))))
        self.clock.advance(STATUS_INTERVAL)
        self.assertEqual(self.agentStore.count("put", key), written)
        self.successResultOf(agent.resync())
        self.assertEqual(self.agentStore.count("put", key), written + 1)
        self.pods.deploy = _slow(self.pods.deploy, self)
        self.schedule(DB)
        self.clock.advance(STATUS_INTERVAL / 2)
        self.schedule(V2, DB2)
        self.assertEqual(self.agentStore.count("put", key), written + 1)
        self.clock.advance(STATUS_INTERVAL / 2)
        self.assertEqual(self.agentStore.count("put", key), written + 2)
        status = json.loads(self.get(key))
        self.assertEqual(sorted(status["pods"]), ["db", "db2", "web"])
        self.assertEqual(status["pods"]["db"]["state"], "working")
        self.slow.callback(None)  # the deploy ends: the status says so
        self.assertEqual(self.agentStore.count("put", key), written + 2)
        self.clock.advance(STATUS_INTERVAL)
        self.assertEqual(self.agentStore.count("put", key), written + 3)
        status = json.loads(self.get(key))
        self.assertEqual(status["pods"]["db"]["state"], "idle")
        self.assertTrue(status["converged"])


def _slow(deploy, test):
    """
    @return: C{deploy}, its first call waiting for C{test.slow}.
    """
    test.slow = defer.Deferred()

    def slow(*args):
        if test.slow.called:
            return deploy(*args)
        return test.slow.addCallback(lambda _: deploy(*args))
    return slow


class StatusWriteTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.state = MemoryState()
        self.store = CountingStore(self.state, self.clock)
        self.key = keys.status("pods", "n1", "web")

    def test_secondStatusWriteReadsNothing(self):
        """
        A worker replaces the status record it wrote without reading it
        again; counts the crash-loop monitor merged in meanwhile are kept
        (its version told the worker to read it).
        """
        worker = PodWorker(FakePods(), self.store, "n1", "web", self.clock)
        worker.update(self.successResultOf(MemoryStore(self.state, self.clock).put(
            keys.intent("n1", "web"), V1)))
        reads = self.store.count("get", self.key)
        worker.update(self.successResultOf(MemoryStore(self.state, self.clock).put(
            keys.intent("n1", "web"), V2)))
        self.assertEqual(self.store.count("get", self.key), reads)
        counted = PodStatus("web", "n1", "running", restarts=3)
        self.successResultOf(preservingWrite(self.store, self.key, counted))
        worker.update(self.successResultOf(MemoryStore(self.state, self.clock).put(
            keys.intent("n1", "web"), V1)))
        record = PodStatus.fromEntry(self.key, self.successResultOf(self.store.get(self.key)))
        self.assertEqual((record.sha, record.restarts), (parseManifest(V1).sha(), 3))

    def test_newPodStatusCreatedUnread(self):
        """
        A pod new on this node (no reality) gets its status record created
        without a read; one an earlier agent left (restart counts and all)
        is read when the create finds it, and its counts kept.
        """
        worker = PodWorker(FakePods(), self.store, "n1", "web", self.clock)
        worker.update(self.successResultOf(MemoryStore(self.state, self.clock).put(
            keys.intent("n1", "web"), V1)))
        self.assertEqual(self.store.count("get", self.key), 0)
        self.assertEqual(self.store.count("create", self.key), 1)
        self.assertEqual(PodStatus.fromEntry(self.key, self.successResultOf(
            self.store.get(self.key))).state, "running")

        other = keys.status("pods", "n1", "db")
        self.successResultOf(self.store.put(other, PodStatus(
            "db", "n1", "failed", restarts=3).toBytes()))
        worker = PodWorker(FakePods(), self.store, "n1", "db", self.clock)
        worker.update(self.successResultOf(MemoryStore(self.state, self.clock).put(
            keys.intent("n1", "db"), DB)))
        record = PodStatus.fromEntry(other, self.successResultOf(self.store.get(other)))
        self.assertEqual((record.state, record.restarts), ("running", 3))
