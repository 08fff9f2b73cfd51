# -*- test-case-name: tests.test_agent_sync -*-
"""
The agent's store traffic per intent change: it acts on the intent its
watch delivered and on reality as it wrote it, and still decides as if it
had listed both, converging when reality is changed behind its back.
"""

import collections
import json
import os
import uuid

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from p2twisted import intent
from p2twisted.agent.config import AgentConfig
from p2twisted.agent.crashloop import preservingWrite
from p2twisted.agent.service import STATUS_INTERVAL, AgentService
from p2twisted.agent.testing import FakePods
from p2twisted.agent.worker import PodWorker
from p2twisted.errors import StoreUnavailable
from p2twisted.manifest import parseManifest
from p2twisted.records import PodStatus
from p2twisted.store import keys, openStore
from p2twisted.store.common import Delete
from p2twisted.store.memory import MemoryState, MemoryStore
from tests.servers import requireServer
from tests.store_contract import waitFor
from tests.test_agent_service import flushAgentStatus
from tests.test_agent_worker import V1, V2
from tests.zkserver import expireSession, missing, sharedServer

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

    #: Whether listings fail (the store out of reach).
    failing = False

    def list(self, prefix):
        self.ops[("list", prefix)] += 1
        if self.failing:
            return defer.fail(StoreUnavailable(prefix, "memory", "out of reach"))
        if not self.holding:
            return MemoryStore.list(self, prefix)
        d = defer.Deferred()
        self.held.append((prefix, d))
        return d.addCallback(lambda _: MemoryStore.list(self, prefix))

    def release(self):
        self.holding = False
        while self.held:
            self.held.pop(0)[1].callback(None)

    #: Whether deliveries of the watch of C{intent/n1} are held (as a
    #: backend's may arrive late: read before a change, handed over after a
    #: listing that saw it), and those held.
    holdingDeliveries = False

    def watch(self, prefix, callback):
        self.heldDeliveries = []

        def deliver(snapshot):
            if not (self.holdingDeliveries and prefix == keys.intentNode("n1")):
                return callback(snapshot)
            d = defer.Deferred()
            self.heldDeliveries.append(d)
            return d.addCallback(lambda _: callback(snapshot))
        return MemoryStore.watch(self, prefix, deliver)

    def releaseDeliveries(self):
        self.holdingDeliveries = False
        while self.heldDeliveries:
            self.heldDeliveries.pop(0).callback(None)


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

    def test_lateDeliveryOlderThanListing(self):
        """
        A delivery read before a change but handed over after a listing that
        saw it (the watch's read of the next change still to come) is older
        than what the agent acted on: a pod scheduled and unscheduled
        meanwhile is not deployed, nor an upgrade undone.
        """
        self.schedule(V1)
        agent = self.startAgent()
        self.agentStore.holdingDeliveries = True
        self.schedule(DB, V2)  # read by the watch, handed over late
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        V3 = V1.replace(b"app_1", b"app_3")
        self.schedule(V3)
        agent.resync()
        self.assertEqual([c[1] for c in self.deploys()],
                         [parseManifest(V1).sha(), parseManifest(V3).sha()])
        self.agentStore.releaseDeliveries()
        self.clock.advance(GRACE + 30)
        self.assertEqual([c[1] for c in self.deploys()],
                         [parseManifest(V1).sha(), parseManifest(V3).sha()])
        self.assertIsNone(self.get(keys.reality("n1", "db")))
        self.assertEqual(self.get(keys.reality("n1", "web")), V3)
        self.assertTrue(agent.converged())

    def test_deliveryAfterResyncNotListed(self):
        """
        A resync that found intent as the watch last delivered it leaves the
        agent acting on deliveries (no listing per change); one that found
        a change the watch had not delivered yet, once the watch caught up.
        """
        self.schedule(V1)
        agent = self.startAgent()
        agent.resync()
        lists = self.agentStore.count("list", keys.intentNode("n1"))
        self.schedule(DB)
        self.assertEqual(self.agentStore.count("list", keys.intentNode("n1")), lists)
        self.agentStore.holdingDeliveries = True
        self.schedule(V2)
        agent.resync()
        self.agentStore.releaseDeliveries()
        lists = self.agentStore.count("list", keys.intentNode("n1"))
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        self.assertEqual(self.agentStore.count("list", keys.intentNode("n1")), lists)
        self.assertTrue(agent.converged())

    def test_lateDeliveryAfterGraceRemovesNothing(self):
        """
        A removal is decided on intent listed once the grace has ended,
        never on a delivery, which may have been read long before it
        arrives: one still showing the marker, read before the marker went
        within the grace and handed over after it (the resync at its end
        failed; reality is listed again), removes nothing.
        """
        self.schedule(V1, DB)
        agent = self.startAgent()
        self.clock.advance(1)
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        self.clock.advance(GRACE - 1.5)
        self.agentStore.holdingDeliveries = True
        self.schedule(V2)  # read with the marker; handed over late
        self.successResultOf(self.store.transaction([
            Delete(keys.intent("n1", "web")), Delete(keys.intentNode("n1"))]))
        self.agentStore.failing = True
        self.clock.advance(2)  # the grace ends: the resync fails
        self.agentStore.failing = False
        self.agentStore.releaseDeliveries()
        self.clock.advance(GRACE * 10)
        self.assertEqual([c for c in self.pods.calls if c[0] == "remove"], [])
        self.assertEqual(self.get(keys.reality("n1", "db")), DB)
        self.assertIs(agent.markerPresent, False)

    def test_realityWriteOfUnknownOutcome(self):
        """
        A write of reality that failed with its outcome unknown (applied,
        its answer lost) leaves the agent reading reality again, not taking
        the pod for absent there: its upgrade is deployed once, over the
        version running.
        """
        create = self.agentStore.create

        def lost(key, value):
            self.agentStore.create = create
            d = create(key, value)
            return d.addCallback(lambda _: defer.fail(StoreUnavailable(key, "memory", "lost")))
        self.agentStore.create = lost
        self.schedule(V1)
        agent = self.startAgent()
        self.assertEqual(self.get(keys.reality("n1", "web")), V1)
        self.clock.advance(2.5)  # the worker's retry finds it there
        self.assertTrue(agent.converged())
        self.schedule(V2)
        self.clock.advance(2.5)
        self.assertEqual(self.deploys(), [("deploy", parseManifest(V1).sha(), None),
                                          ("deploy", parseManifest(V2).sha(),
                                           parseManifest(V1).sha())])
        self.assertEqual(self.get(keys.reality("n1", "web")), V2)

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

    def test_removalSeesOrphansFoundThen(self):
        """
        A removal falling due at a sync that listed reality (after a new
        session) is still decided by a resync, which looks for the pods on
        disk again: one there in neither intent nor reality is an orphan,
        and the removal waits for a confirmation.
        """
        self.schedule(V1, DB)
        agent = self.startAgent()
        self.pods.onDisk = {"web": V1, "db": DB, "x": V1.replace(b"id: web", b"id: x")}
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        agent._wake.cancel()  # the delivery comes first
        self.clock.advance(GRACE + 1)
        self.successResultOf(agent.presence.session.close())
        self.clock.advance(1)
        self.assertTrue(agent.canAct())
        self.schedule(V2)
        self.clock.advance(STATUS_INTERVAL)
        self.assertEqual([c for c in self.pods.calls if c[0] == "remove"], [])
        removals = json.loads(self.get(keys.status("agents", "n1")))["removals"]
        self.assertEqual((removals["state"], removals["orphans"]), ("held", ["x"]))

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

    def test_agentStatusWrittenAtStop(self):
        """
        A change of the agent's status still waiting for its write when the
        agent stops (a deploy just ended) is written before it goes: its
        status does not say it is deploying until it is started again.
        """
        self.pods.deploy = _slow(self.pods.deploy, self)
        self.schedule(V1)
        agent = self.startAgent()
        self.clock.advance(STATUS_INTERVAL)
        key = keys.status("agents", "n1")
        self.assertFalse(json.loads(self.get(key))["converged"])
        self.slow.callback(None)
        self.successResultOf(agent.stopService())
        status = json.loads(self.get(key))
        self.assertEqual(status["pods"]["web"]["state"], "idle")
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


class ZooKeeperSyncTests(unittest.TestCase):
    """
    The agent acting on deliveries and remembered reality on a real
    ZooKeeper, through the loss of its session.
    """

    def setUp(self):
        why = missing()
        if why:
            requireServer("ZooKeeper", why, install="apt-get install zookeeper")

    @defer.inlineCallbacks
    def test_sessionLossConverges(self):
        """
        After its session expired (its watch re-read in full, its presence
        registered again), the agent converges on what changed meanwhile:
        an upgrade, a new pod, and its reality deleted behind its back.
        """
        server = sharedServer()
        url = "zk://%s/t%s?session_timeout=4" % (server.hosts, uuid.uuid4().hex)
        store = yield openStore(url, reactor)
        self.addCleanup(store.close)
        agentStore = yield openStore(url, reactor)
        pods = FakePods()
        config = AgentConfig(node="n1", store=url, podRoot="/nonexistent",
                             stateDir=os.path.abspath(self.mktemp()), resyncInterval=3600.0,
                             sessionTTL=4.0, removalGrace=GRACE)
        agent = AgentService(config, pods, reactor, store=agentStore)
        yield intent.schedule(store, "n1", parseManifest(V1))
        agent.startService()
        self.addCleanup(lambda: agent.stopService() if agent.running else None)

        def reality(pod, raw):
            return store.get(keys.reality("n1", pod)).addCallback(
                lambda e: e is not None and e.value == raw)
        yield waitFor(lambda: reality("web", V1), what="web deployed")
        oldSession = agentStore._client.client_id
        yield expireSession(server.hosts, oldSession)
        yield store.delete(keys.reality("n1", "web"))
        yield intent.schedule(store, "n1", parseManifest(V2))
        yield intent.schedule(store, "n1", parseManifest(DB))
        yield waitFor(lambda: reality("web", V2), what="web upgraded")
        yield waitFor(lambda: reality("db", DB), what="db deployed")
        yield waitFor(agent.converged, what="the agent converged")
        self.assertNotEqual(agentStore._client.client_id, oldSession)
