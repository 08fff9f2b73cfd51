"""
The agent service: node-marker failsafe, watch plus periodic resync,
presence in C{machines/<node>}, orphan adoption and the status endpoint.
"""

import json
import os

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial import unittest

from p2twisted import intent
from p2twisted.agent.config import AgentConfig
from p2twisted.agent.service import AgentService
from p2twisted.agent.web import StatusResource
from p2twisted.cli.node import confirmNode
from p2twisted.errors import AgentError, StoreUnavailable
from p2twisted.cli.services_inspect import agentRemovals, clusterView, heldNotes
from p2twisted.manifest import parseManifest
from p2twisted.services import readPods
from p2twisted.store import keys
from p2twisted.store.common import Delete, Put
from p2twisted.store.memory import MemoryState, MemoryStore
from p2twisted.agent.testing import FakePods
from tests.test_agent_worker import V1, V2

DB = V1.replace(b"id: web", b"id: db")

#: The removal grace the agent is started with here.
GRACE = 10.0


def flushAgentStatus(clock):
    """
    Advance C{clock} to the agents' pending writes of their status, if any
    (L{p2twisted.agent.service.STATUS_INTERVAL} after a change at most).
    """
    for call in sorted(clock.getDelayedCalls(), key=lambda c: c.getTime()):
        if getattr(call.func, "__func__", None) is AgentService._writeAgentStatusNow:
            clock.advance(max(0.0, call.getTime() - clock.seconds()))


class AgentServiceTests(unittest.TestCase):

    def view(self):
        """
        @return: the L{Snapshot} C{p2 inspect} and C{p2 status} read
            (once the agent's status is written).
        """
        flushAgentStatus(self.clock)
        return self.successResultOf(readPods(self.store))

    def setUp(self):
        self.clock = task.Clock()
        self.state = MemoryState()
        self.store = MemoryStore(self.state, self.clock)
        self.pods = FakePods()
        self.stateDir = os.path.abspath(self.mktemp())

    def startAgent(self, node="n1", store=None, **settings):
        values = dict(node=node, store="memory://", podRoot="/nonexistent",
                      stateDir=self.stateDir, resyncInterval=30.0, sessionTTL=10.0,
                      removalGrace=GRACE)
        values.update(settings)
        agent = AgentService(AgentConfig(**values), self.pods, self.clock,
                             store=store or MemoryStore(self.state, self.clock))
        agent.startService()
        self.addCleanup(lambda: agent.stopService() if agent.running else None)
        return agent

    def put(self, key, value):
        return self.successResultOf(self.store.put(key, value))

    def get(self, key):
        entry = self.successResultOf(self.store.get(key))
        return entry.value if entry else None

    def schedule(self, node, value):
        self.put(keys.intentNode(node), b'{"node": "%s"}' % node.encode())
        self.put(keys.intent(node, "web"), value)

    def test_registersMachine(self):
        """
        The agent registers C{machines/<node>} as an ephemeral key with its
        facts.
        """
        agent = self.startAgent()
        entry = self.successResultOf(self.store.get(keys.machine("n1")))
        self.assertIsNotNone(entry.owner)
        self.assertEqual(json.loads(entry.value)["node"], "n1")
        self.assertTrue(agent.canAct())

    def test_deploysScheduledPod(self):
        """
        A pod scheduled for this node (with its marker) is deployed and
        recorded in reality; another node's intent is ignored.
        """
        agent = self.startAgent()
        self.schedule("n1", V1)
        self.schedule("n2", V2)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])
        self.assertEqual(self.get(keys.reality("n1", "web")), V1)
        self.assertIsNone(self.get(keys.reality("n2", "web")))
        self.assertTrue(agent.converged())

    def test_intentAndRealityReadTogether(self):
        """
        A resync asks for this node's intent and its reality at once (one
        round-trip to the store, not two); the first sync takes intent from
        the watch and lists only reality, then deploys.
        """
        store = HeldListStore(self.state, self.clock)
        self.schedule("n1", V1)
        agent = self.startAgent(store=store)
        self.assertEqual([prefix for prefix, _ in store.held], [keys.realityNode("n1")])
        store.held.pop(0)[1].callback(None)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])
        self.assertEqual(self.get(keys.reality("n1", "web")), V1)
        agent.resync()
        self.assertEqual(sorted(prefix for prefix, _ in store.held),
                         [keys.intentNode("n1"), keys.realityNode("n1")])
        while store.held:
            store.held.pop(0)[1].callback(None)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])

    def test_markerFailsafe(self):
        """
        Without the node marker the agent removes nothing, even with reality
        present and intent empty, and says so in its status.
        """
        self.put(keys.reality("n1", "web"), V1)
        agent = self.startAgent()
        self.clock.advance(120)
        self.assertEqual(self.pods.calls, [])
        self.assertEqual(self.get(keys.reality("n1", "web")), V1)
        self.assertIs(agent.markerPresent, False)
        status = json.loads(self.get(keys.status("agents", "n1")))
        self.assertIs(status["node_marker"], False)

    def test_markerPresentEmptyIntentRemoves(self):
        """
        With the marker and no pods in intent, reality is removed once the
        removal grace has passed: the node was drained on purpose.
        """
        self.put(keys.intentNode("n1"), b"{}")
        self.put(keys.reality("n1", "web"), V1)
        self.startAgent()
        self.clock.advance(GRACE)
        self.assertEqual([c[0] for c in self.pods.calls], ["remove"])
        self.assertIsNone(self.get(keys.reality("n1", "web")))

    def test_resyncCatchesMissedChange(self):
        """
        A change the watch missed is found by the periodic resync.
        """
        agent = self.startAgent()
        agent._watch.cancel()
        self.schedule("n1", V1)
        self.assertEqual(self.pods.calls, [])
        self.clock.advance(30)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])

    def test_sessionLossFreezesThenRecovers(self):
        """
        While the machine's session is lost (and no new one can be had) the
        agent installs and removes nothing; once it registers again with a
        new session, it converges.
        """
        agent = self.startAgent()
        pending = defer.Deferred()
        agentStore = agent.store
        realSession = agentStore.session
        agentStore.session = lambda ttl: pending
        self.successResultOf(agent.presence.session.close())
        self.assertFalse(agent.canAct())
        self.assertIsNone(self.get(keys.machine("n1")))
        self.schedule("n1", V1)
        self.clock.advance(10)
        self.assertEqual(self.pods.calls, [])
        realSession(10.0).chainDeferred(pending)
        self.assertTrue(agent.canAct())
        self.assertIsNotNone(self.get(keys.machine("n1")))
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])

    def test_orphansWaitForConfirmation(self):
        """
        A pod on disk in neither intent nor reality (what a wipe of intent
        and reality leaves) is listed as an orphan and left alone; once a
        person confirms, it is recorded in reality and removed.
        """
        self.pods.onDisk = {"web": V1}
        self.put(keys.intentNode("n1"), b"{}")
        self.startAgent()
        self.clock.advance(GRACE * 10)
        self.assertEqual(self.pods.calls, [])
        self.assertIsNone(self.get(keys.reality("n1", "web")))
        removals = self.removals()
        self.assertEqual((removals["state"], removals["hold"], removals["orphans"],
                          removals["confirm"]), ("held", "orphans", ["web"], "p2 node confirm n1"))
        self.successResultOf(confirmNode(self.store, "n1"))
        self.assertEqual(self.pods.calls, [("remove", parseManifest(V1).sha(), "web")])
        self.assertIsNone(self.get(keys.reality("n1", "web")))
        self.assertEqual(self.removals()["state"], "free")

    def test_confirmationKeptUntilOrphansAdopted(self):
        """
        A confirmation is consumed only once what it allows is done: when
        recording an orphan in reality fails, the confirmation stays, and
        the next resync removes the orphan without another one.
        """
        self.pods.onDisk = {"web": V1}
        self.put(keys.intentNode("n1"), b"{}")
        agent = self.startAgent(store=FailingCreates(self.state, self.clock))
        agent.store.failing.add(keys.reality("n1", "web"))
        self.successResultOf(confirmNode(self.store, "n1"))
        self.assertEqual(self.removed(), [])
        self.assertIsNotNone(self.get(keys.confirmation("n1")))
        self.clock.advance(30)
        self.assertEqual(self.removed(), ["web"])
        self.assertIsNone(self.get(keys.confirmation("n1")))
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    # -- the failsafe: grace, new marker, confirmation ---------------------------

    def removals(self, node="n1"):
        flushAgentStatus(self.clock)
        return json.loads(self.get(keys.status("agents", node)))["removals"]

    def schedulePods(self, *raws):
        for raw in raws:
            self.successResultOf(intent.schedule(self.store, "n1", parseManifest(raw)))

    def removed(self):
        return [c[2] for c in self.pods.calls if c[0] == "remove"]

    def test_unscheduleWaitsOutGrace(self):
        """
        An unscheduled pod is removed once the removal grace has passed with
        the marker still there, not before; the status says it is waiting.
        """
        self.startAgent()
        self.schedulePods(V1, DB)
        self.clock.advance(1)
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        self.clock.advance(GRACE - 1)
        self.assertEqual(self.removed(), [])
        removals = self.removals()
        self.assertEqual((removals["state"], removals["grace_until"]),
                         ("grace", {"db": 1.0 + GRACE}))
        notes = agentRemovals(self.view())
        self.assertEqual(heldNotes(notes),
                         ["removals on n1 wait out the failsafe's grace: db (until 00:00:11Z)\n"])
        self.clock.advance(1)
        self.assertEqual(self.removed(), ["db"])
        self.assertIsNone(self.get(keys.reality("n1", "db")))
        self.assertEqual(self.removals()["state"], "free")

    def test_intentBackDuringGraceStartsItAnew(self):
        """
        A pod whose intent comes back during its grace is not removed; gone
        again, it waits out a whole grace from then.
        """
        self.startAgent()
        self.schedulePods(V1, DB)
        self.clock.advance(1)
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        self.clock.advance(4)
        self.schedulePods(DB)
        self.clock.advance(3)
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        self.clock.advance(GRACE - 0.5)
        self.assertEqual(self.removed(), [])
        self.clock.advance(0.5)
        self.assertEqual(self.removed(), ["db"])

    def test_anyOrderOfDeletesRemovesNothing(self):
        """
        Deleting a node's intent in any order -- children first one key at a
        time (as a recursive delete does), in batches, the marker first, or
        all of it by C{p2 init --force} -- removes nothing when the marker is
        gone within the grace, however long the agent waits afterwards.
        """
        from p2twisted.cli.namespace import initNamespace
        web, db, marker = keys.intent("n1", "web"), keys.intent("n1", "db"), keys.intentNode("n1")
        orders = {
            "children first, key by key": [[web], [db], [marker]],
            "children first, in batches": [[web, db], [marker]],
            "a child, then the rest at once": [[web], [db, marker]],
            "marker first": [[marker], [web], [db]],
            "p2 init --force": None,
        }
        for name, batches in sorted(orders.items()):
            self.state = MemoryState()
            self.store = MemoryStore(self.state, self.clock)
            self.pods = FakePods()
            self.stateDir = os.path.abspath(self.mktemp())
            agent = self.startAgent()
            self.schedulePods(V1, DB)
            if batches is None:
                self.successResultOf(initNamespace(self.store, force=True))
            for batch in batches or []:
                self.successResultOf(self.store.transaction([Delete(k) for k in batch]))
                self.clock.advance(GRACE / 4)
            self.clock.advance(GRACE * 10)
            self.assertEqual(self.removed(), [], name)
            self.assertIs(agent.markerPresent, False, name)
            self.assertEqual(agent.statusRecord()["removals"]["state"], "no-marker", name)
            if batches is not None:
                self.assertEqual(self.get(keys.reality("n1", "web")), V1, name)
                self.assertEqual(self.get(keys.reality("n1", "db")), DB, name)
            self.successResultOf(agent.stopService())

    def test_noMarkerStatusSaysSo(self):
        """
        Without the marker, C{p2 inspect} calls a pod of the node that is
        not in sync neither removing nor converging but C{no-marker}, and
        says the agent acts on nothing until a marker is written.
        """
        self.startAgent()
        self.schedulePods(V1, DB)
        self.successResultOf(self.store.transaction([
            Delete(keys.intent("n1", "web")), Delete(keys.intentNode("n1"))]))
        rows = clusterView(self.view())
        self.assertEqual([(r["pod"], r["removal"], r["in_sync"]) for r in rows],
                         [("db", None, True), ("web", "no-marker", False)])
        self.assertEqual(heldNotes(agentRemovals(self.view())), [
            "intent/n1 holds no node marker: the agent of n1 installs and removes nothing "
            "until one is written ('p2 node add n1'; a new marker holds removals until "
            "'p2 node confirm n1')\n"])

    def test_noMarkerAgentGone(self):
        """
        A node removed (its marker deleted) whose agent then stopped is not
        said to act on nothing ever after: its last status stays in the
        store, but without the agent's presence C{p2 status} and C{p2
        inspect} do not tell to write a marker for it.
        """
        agent = self.startAgent()
        self.schedulePods(DB)
        self.successResultOf(self.store.transaction([
            Delete(keys.intent("n1", "db")), Delete(keys.intentNode("n1"))]))
        self.assertEqual(len(heldNotes(agentRemovals(self.view()), self.view().agentUp)), 1)
        self.successResultOf(agent.stopService())
        view = self.view()
        self.assertEqual(agentRemovals(view)["n1"]["state"], "no-marker")
        self.assertEqual(heldNotes(agentRemovals(view), view.agentUp), [])

    def wipeAndRestore(self):
        """
        Schedule web and db, wipe the node's intent at once, then schedule
        web again: a new marker.
        """
        self.schedulePods(V1, DB)
        self.clock.advance(1)
        self.successResultOf(self.store.transaction([
            Delete(keys.intent("n1", "web")), Delete(keys.intent("n1", "db")),
            Delete(keys.intentNode("n1"))]))
        self.clock.advance(1)
        self.schedulePods(V1)

    @defer.inlineCallbacks
    def test_newMarkerHoldsUntilConfirmed(self):
        """
        After a wipe, a pod scheduled again re-creates the marker: the agent
        keeps running what intent names, removes nothing else however long
        it waits, and says so (store status and /_status) with the command
        that confirms; once confirmed, the pod intent no longer names is
        removed and the confirmation is consumed.
        """
        agent = self.startAgent()
        self.wipeAndRestore()
        self.clock.advance(GRACE * 100)
        self.assertEqual(self.removed(), [])
        self.assertEqual(self.get(keys.reality("n1", "db")), DB)
        removals = self.removals()
        self.assertEqual((removals["state"], removals["hold"], removals["held"],
                          removals["confirm"]),
                         ("held", "new-marker", ["db"], "p2 node confirm n1"))
        notes = heldNotes(agentRemovals(self.view()))
        self.assertEqual(notes, ["removals on n1 are held (its node marker is not the one its "
                                 "agent last saw): db; confirm with 'p2 node confirm n1'\n"])
        response = yield StubTreq(StatusResource(agent).resource()).get("http://agent/_status")
        body = json.loads((yield response.content()))
        self.assertEqual(body["removals"]["confirm"], "p2 node confirm n1")
        self.schedulePods(V2)  # an upgrade still goes ahead
        self.assertEqual(self.get(keys.reality("n1", "web")), V2)
        self.successResultOf(confirmNode(self.store, "n1"))
        self.assertEqual(self.removed(), ["db"])
        self.assertIsNone(self.get(keys.reality("n1", "db")))
        self.assertIsNone(self.get(keys.confirmation("n1")))
        self.assertEqual(self.removals()["state"], "free")

    def test_holdSurvivesRestart(self):
        """
        The marker last seen is remembered in the state directory: an agent
        restarted after the wipe still holds the removals.
        """
        agent = self.startAgent()
        self.schedulePods(V1, DB)
        self.successResultOf(agent.stopService())
        self.successResultOf(self.store.transaction([
            Delete(keys.intent("n1", "web")), Delete(keys.intent("n1", "db")),
            Delete(keys.intentNode("n1"))]))
        self.schedulePods(V1)
        self.startAgent()
        self.clock.advance(GRACE * 100)
        self.assertEqual(self.removed(), [])
        self.assertEqual(self.removals()["state"], "held")

    def test_lateWatchSnapshotRemovesNothing(self):
        """
        A removal is decided on a read of the store made once the grace has
        ended, never on a watch's snapshot, which may have been read long
        before it arrives (ZooKeeper's is read znode by znode): a snapshot
        still showing the marker that arrives after the grace, while the
        agent's own read is slow, removes nothing when the marker went within
        the grace.
        """
        agent = self.startAgent(store=SlowReads(self.state, self.clock))
        self.schedulePods(V1, DB)
        self.clock.advance(1)
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        late = self.successResultOf(self.store.list(keys.intentNode("n1")))
        agent._watch.cancel()  # the watch's news of what follows comes late
        self.clock.advance(GRACE - 1.5)
        self.successResultOf(self.store.transaction([
            Delete(keys.intent("n1", "web")), Delete(keys.intentNode("n1"))]))
        release = agent.store.slowDown(keys.intentNode("n1"))
        self.clock.advance(1.5)  # the grace ends; the agent's own read is slow
        agent._intentChanged(late)
        release.callback(None)
        self.clock.advance(GRACE * 10)
        self.assertEqual(self.removed(), [])
        self.assertEqual(self.get(keys.reality("n1", "db")), DB)
        self.assertIs(agent.markerPresent, False)

    def test_slowResyncRemovesNothing(self):
        """
        A resync decides as of when it read intent, not when its other reads
        are done: one that read the marker before the grace ended removes
        nothing after it, when the marker went meanwhile.
        """
        agent = self.startAgent(store=SlowReads(self.state, self.clock))
        self.schedulePods(V1, DB)
        self.clock.advance(1)
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        agent._watch.cancel()  # the watch's news of what follows comes late
        self.clock.advance(GRACE - 1.5)
        realityRead = agent.store.slowDown(keys.realityNode("n1"))
        agent.resync()  # reads intent (the marker is there), then waits on reality
        self.successResultOf(self.store.transaction([
            Delete(keys.intent("n1", "web")), Delete(keys.intentNode("n1"))]))
        intentRead = agent.store.slowDown(keys.intentNode("n1"))
        self.clock.advance(1.5)  # the grace ends; the agent's next read is slow too
        realityRead.callback(None)
        intentRead.callback(None)
        self.clock.advance(GRACE * 10)
        self.assertEqual(self.removed(), [])
        self.assertEqual(self.get(keys.reality("n1", "db")), DB)
        self.assertIs(agent.markerPresent, False)

    def test_orphansKnownAtOnce(self):
        """
        Pods left on disk by a wipe of intent and reality are listed as
        orphans as soon as the agent hears of the restore, not at its next
        periodic resync.
        """
        self.startAgent()
        self.schedulePods(V1, DB)
        self.pods.onDisk = {"web": V1, "db": DB}
        self.successResultOf(self.store.transaction([
            Delete(keys.intent("n1", "web")), Delete(keys.intent("n1", "db")),
            Delete(keys.intentNode("n1")), Delete(keys.reality("n1", "web")),
            Delete(keys.reality("n1", "db"))]))
        self.schedulePods(V1)
        removals = self.removals()
        self.assertEqual((removals["state"], removals["orphans"]), ("held", ["db"]))
        rows = clusterView(self.view())
        self.assertEqual([r["removal"] for r in rows if r["pod"] == "db"], ["orphan"])

    def test_failedDeployUnscheduledIsRemoved(self):
        """
        A pod whose first deploy failed part way (its files on disk, never
        in reality), once unscheduled, is removed when its grace has passed:
        not forgotten on disk, to run on as an orphan that holds every
        removal of the node.
        """
        self.pods = FailingDeploys()
        self.startAgent()
        self.schedulePods(DB)
        self.clock.advance(1)
        self.successResultOf(intent.unschedule(self.store, "n1", "db"))
        self.clock.advance(GRACE)
        self.assertEqual(self.removed(), ["db"])
        self.clock.advance(30)
        self.assertEqual((self.removals()["state"], self.removals()["orphans"]), ("free", []))

    def test_earlierConfirmationReleasesNoLaterHold(self):
        """
        A confirmation left for an earlier marker (written while the agent
        was down) does not release the hold a later marker starts.
        """
        agent = self.startAgent()
        self.schedulePods(V1, DB)
        self.successResultOf(agent.stopService())
        self.successResultOf(confirmNode(self.store, "n1"))
        self.successResultOf(self.store.transaction([
            Delete(keys.intent("n1", "web")), Delete(keys.intent("n1", "db")),
            Delete(keys.intentNode("n1"))]))
        self.schedulePods(V1)
        self.startAgent()
        self.clock.advance(GRACE * 100)
        self.assertEqual(self.removed(), [])
        self.assertEqual(self.removals()["state"], "held")

    def test_holdTimeout(self):
        """
        With a hold timeout, held removals go ahead that long after the hold
        began, without a confirmation; the status says when.
        """
        self.startAgent(holdTimeout=600.0)
        self.wipeAndRestore()
        self.clock.advance(599)
        self.assertEqual(self.removed(), [])
        self.assertEqual(self.removals()["hold_until"], 602.0)
        self.assertEqual(heldNotes(agentRemovals(self.view())), [
            "removals on n1 are held (its node marker is not the one its agent last saw): db; "
            "confirm with 'p2 node confirm n1' (else they go ahead at 00:10:02Z, when the hold "
            "times out)\n"])
        self.clock.advance(1)
        self.assertEqual(self.removed(), ["db"])

    def test_holdTimeoutStartsAgainForAnotherMarker(self):
        """
        A marker re-created during a hold (seen without its absence between,
        as a coalescing watch may show it) is another new marker: its hold
        lasts the whole hold timeout from then.
        """
        self.startAgent(holdTimeout=600.0)
        self.wipeAndRestore()
        self.clock.advance(500)
        self.successResultOf(self.store.transaction([
            Delete(keys.intentNode("n1")),
            Put(keys.intentNode("n1"), intent.nodeMarker("n1", now=self.clock.seconds()))]))
        self.clock.advance(599)
        self.assertEqual(self.removed(), [])
        self.assertEqual(self.removals()["state"], "held")
        self.clock.advance(1)
        self.assertEqual(self.removed(), ["db"])

    @defer.inlineCallbacks
    def test_statusEndpoint(self):
        """
        C{GET /_status} answers 200 with the pods once converged, and 503
        while a pod is failing.
        """
        agent = self.startAgent()
        self.schedule("n1", V1)
        client = StubTreq(StatusResource(agent).resource())
        response = yield client.get("http://agent/_status")
        self.assertEqual(response.code, 200)
        body = json.loads((yield response.content()))
        self.assertEqual(body["pods"]["web"]["state"], "idle")
        self.assertEqual(body["node"], "n1")
        from p2twisted.errors import ArtifactError
        self.pods.fail = ArtifactError("digest mismatch")
        self.put(keys.intent("n1", "web"), V2)
        response = yield client.get("http://agent/_status")
        self.assertEqual(response.code, 503)
        body = json.loads((yield response.content()))
        self.assertIn("digest mismatch", body["pods"]["web"]["error"])

    @defer.inlineCallbacks
    def test_statusEndpointInvalidIntent(self):
        """
        An intent whose manifest does not parse is reported by C{/_status} as
        an error (503, the pod's state C{invalid} with the reason), not as
        converged; a valid intent again clears it.
        """
        agent = self.startAgent()
        self.schedule("n1", b"id: web\nlaunchables: [not, a, map]\n")
        client = StubTreq(StatusResource(agent).resource())
        response = yield client.get("http://agent/_status")
        body = json.loads((yield response.content()))
        self.assertEqual(response.code, 503)
        self.assertFalse(body["converged"])
        self.assertEqual(body["pods"]["web"]["state"], "invalid")
        self.assertIn("invalid manifest in intent", body["pods"]["web"]["error"])
        self.put(keys.intent("n1", "web"), V1)
        response = yield client.get("http://agent/_status")
        body = json.loads((yield response.content()))
        self.assertEqual((response.code, body["pods"]["web"]["state"]), (200, "idle"))

    def test_invalidIntentDeleted(self):
        """
        C{intent/n1/garb3} holding C{id: web} is invalid in C{garb3}'s
        status; deleting it deletes that status, and the agent's own status
        no longer lists garb3.
        """
        agent = self.startAgent()
        self.schedule("n1", V1)
        self.put(keys.intent("n1", "garb3"), V1)
        status = json.loads(self.get(keys.status("pods", "n1", "garb3")))
        self.assertEqual(status["state"], "invalid")
        self.successResultOf(self.store.delete(keys.intent("n1", "garb3")))
        self.clock.advance(GRACE + 1)  # under the failsafe's removal grace
        self.assertIsNone(self.get(keys.status("pods", "n1", "garb3")))
        self.clock.advance(30)
        self.assertEqual(sorted(agent.statusRecord()["pods"]), ["web"])
        self.assertEqual(sorted(json.loads(self.get(keys.status("agents", "n1")))["pods"]),
                         ["web"])
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])

    def test_removedPodForgotten(self):
        """
        A pod removed from the machine is no longer listed in the agent's
        status once the next sync finds it in neither intent nor reality.
        """
        agent = self.startAgent()
        self.schedule("n1", V1)
        self.successResultOf(self.store.delete(keys.intent("n1", "web")))
        self.clock.advance(GRACE + 1)
        self.assertIsNone(self.get(keys.reality("n1", "web")))
        self.clock.advance(30)
        self.assertEqual(agent.statusRecord()["pods"], {})
        self.assertTrue(agent.converged())


class FailingDeploys(FakePods):
    """
    Pods whose deploys fail part way, leaving their files on disk; a
    removal deletes them.
    """

    def deploy(self, manifest, old):
        self.calls.append(("deploy", manifest.sha(), old.sha() if old else None))
        self.onDisk[manifest.id] = manifest.raw
        return defer.fail(AgentError("an entry point of %s did not start" % (manifest.id,)))

    def remove(self, manifest, podId):
        self.onDisk.pop(podId, None)
        return FakePods.remove(self, manifest, podId)


class SlowReads(MemoryStore):
    """
    A store whose next C{list} of a prefix named by L{slowDown} answers only
    when the test fires the L{Deferred} that L{slowDown} returned, with what
    is there then (a read slowed down, as over a loaded network).
    """

    def slowDown(self, prefix):
        self._slow = getattr(self, "_slow", {})
        self._slow[prefix] = defer.Deferred()
        return self._slow[prefix]

    def list(self, prefix):
        release = getattr(self, "_slow", {}).pop(prefix, None)
        if release is None:
            return MemoryStore.list(self, prefix)
        return release.addCallback(lambda _: MemoryStore.list(self, prefix))


class FailingCreates(MemoryStore):
    """
    A store whose next C{create} of a key in C{failing} fails as in an
    outage.
    """

    def __init__(self, *args, **kwargs):
        MemoryStore.__init__(self, *args, **kwargs)
        self.failing = set()

    def create(self, key, value):
        if key in self.failing:
            self.failing.discard(key)
            return defer.fail(StoreUnavailable(key, self.backend, "down"))
        return MemoryStore.create(self, key, value)


class BrokenStore(MemoryStore):
    """
    A store whose writes to C{status/agents/} fail with a bug.
    """

    def put(self, key, value):
        if key.startswith("status/agents/"):
            return defer.fail(TypeError("a bug writing " + key))
        return MemoryStore.put(self, key, value)


class StatusErrorTests(unittest.TestCase):

    def test_statusWriteErrorLogged(self):
        """
        A failure writing the agent's status is logged with its traceback,
        not dropped.
        """
        clock = task.Clock()
        config = AgentConfig(node="n1", store="memory://", podRoot="/nonexistent",
                             stateDir=self.mktemp(), resyncInterval=30.0, sessionTTL=10.0)
        agent = AgentService(config, FakePods(), clock, store=BrokenStore(clock=clock))
        agent.startService()
        flushAgentStatus(clock)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.successResultOf(agent.stopService())  # tries once more, not written
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


class StoreOpenRetryTests(unittest.TestCase):

    def test_manyFailuresKeepRetrying(self):
        """
        The agent keeps retrying to open its store, with backoff capped at
        30 s, through 2,000 consecutive failures, then starts.
        """
        import p2twisted.agent.service as module
        clock = task.Clock()
        attempts = []
        store = MemoryStore(clock=clock)

        def openStore(url, reactor):
            attempts.append(url)
            if len(attempts) <= 2000:
                return defer.fail(StoreUnavailable(None, "memory", "down"))
            return defer.succeed(store)
        self.patch(module, "openStore", openStore)
        config = AgentConfig(node="n1", store="memory://", podRoot="/nonexistent",
                             stateDir=self.mktemp(), resyncInterval=30.0, sessionTTL=10.0)
        agent = AgentService(config, FakePods(), clock)
        agent.startService()
        self.addCleanup(agent.stopService)
        for _ in range(2000):
            clock.advance(31)
        self.assertEqual(len(attempts), 2001)
        self.assertIs(agent.store.wrapped, store)  # metered
        self.assertTrue(agent.canAct())


class HeldListStore(MemoryStore):
    """
    A store whose listings wait in C{held} (C{(prefix, Deferred)}) until
    the test fires them.
    """

    def __init__(self, *args, **kwargs):
        MemoryStore.__init__(self, *args, **kwargs)
        self.held = []

    def list(self, prefix):
        d = defer.Deferred()
        self.held.append((prefix, d))
        return d.addCallback(lambda _: MemoryStore.list(self, prefix))


class FlakyListStore(MemoryStore):
    """
    A store whose first C{failures} listings fail (a store blip just after
    it opened), and whose listings can be held (C{hold}: a L{Deferred}
    the next one waits for).
    """

    failures = 0
    hold = None

    def list(self, prefix):
        if self.failures:
            self.failures -= 1
            return defer.fail(StoreUnavailable(None, "memory", "blip"))
        if self.hold is not None:
            hold, self.hold = self.hold, None
            return hold.addCallback(lambda _: MemoryStore.list(self, prefix))
        return MemoryStore.list(self, prefix)


class StartupTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.state = MemoryState()
        self.store = MemoryStore(self.state, self.clock)
        # The agent remembers the marker in its state dir: the test's own,
        # never a path outside the test's temporary directory.
        self.stateDir = os.path.abspath(self.mktemp())
        self.config = AgentConfig(node="n1", store="memory://", podRoot="/nonexistent",
                                  stateDir=self.stateDir, resyncInterval=30.0, sessionTTL=10.0)

    def test_storeBlipAtStartup(self):
        """
        A store error in the agent's first listings does not leave it dead:
        it watches and converges (the pod on its disk in neither intent nor
        reality is an orphan, held until confirmed).
        """
        pods = FakePods(onDisk={"old": V1.replace(b"id: web", b"id: old")})
        agentStore = FlakyListStore(self.state, self.clock)
        agentStore.failures = 1
        agent = AgentService(self.config, pods, self.clock, store=agentStore)
        agent.startService()
        self.addCleanup(agent.stopService)
        self.clock.advance(31)
        self.successResultOf(self.store.put(keys.intentNode("n1"), b"{}"))
        self.successResultOf(self.store.put(keys.intent("n1", "web"), V1))
        self.clock.advance(31)
        self.assertEqual(sorted(c[0] for c in pods.calls), ["deploy"])
        self.assertEqual(agent.statusRecord()["removals"]["orphans"], ["old"])
        self.assertTrue(agent.converged())

    def test_stopDuringStartup(self):
        """
        An agent stopped while still starting starts nothing afterwards: no
        watch, no resync loop, no pod touched.
        """
        pods = FakePods(onDisk={"web": V1})
        agentStore = FlakyListStore(self.state, self.clock)
        agentStore.hold = hold = defer.Deferred()
        agent = AgentService(self.config, pods, self.clock, store=agentStore)
        agent.startService()
        self.successResultOf(self.store.put(keys.intentNode("n1"), b"{}"))
        stopped = agent.stopService()
        hold.callback(None)
        self.successResultOf(stopped)
        self.clock.advance(120)
        self.assertEqual(pods.calls, [])
        self.assertFalse(agent._resync is not None and agent._resync.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_staleListingRemovesNothing(self):
        """
        A resync whose listing of intent was taken just before a pod was
        scheduled (and answers after the watch handed that pod over) does
        not take the pod for unscheduled: it is deployed once, never
        removed.
        """
        pods = FakePods()
        agentStore = FlakyListStore(self.state, self.clock)
        self.successResultOf(self.store.put(keys.intentNode("n1"), b"{}"))
        agent = AgentService(self.config, pods, self.clock, store=agentStore)
        agent.startService()
        self.addCleanup(agent.stopService)
        # The next listing is taken now but answers only when released.
        late = []
        listing = MemoryStore.list

        def lateList(prefix):
            agentStore.list = lambda prefix: listing(agentStore, prefix)
            d = defer.Deferred()
            late.append((d, self.successResultOf(listing(agentStore, prefix))))
            return d
        agentStore.list = lateList
        self.clock.advance(30)
        self.assertEqual(len(late), 1)
        pods.gate = gate = defer.Deferred()
        self.successResultOf(self.store.put(keys.intent("n1", "web"), V1))
        d, stale = late[0]
        d.callback(stale)
        gate.callback(None)
        self.clock.advance(0)
        self.assertEqual([c[0] for c in pods.calls], ["deploy"])
        self.assertEqual(self.successResultOf(self.store.get(keys.reality("n1", "web"))).value, V1)
        self.assertTrue(agent.converged())
        # The marker it accepted is remembered in its own state dir.
        self.assertTrue(os.path.exists(os.path.join(self.stateDir, "node-marker.json")))

    def test_storeOpenedAfterStopClosed(self):
        """
        A store whose opening ends after the agent was stopped is closed, not
        left open (its connection and threads would outlive the agent).
        """
        import p2twisted.agent.service as module
        opening = defer.Deferred()
        self.patch(module, "openStore", lambda url, reactor: opening)
        agent = AgentService(self.config, FakePods(), self.clock)
        agent.startService()
        self.successResultOf(agent.stopService())
        closed = []
        store = MemoryStore(self.state, self.clock)
        store.close = lambda: closed.append(True) or defer.succeed(None)
        opening.callback(store)
        self.assertEqual(closed, [True])
        self.assertIsNone(agent.presence)

    def test_noNewPodWhileStopping(self):
        """
        A sync that ends while the agent is stopping (waiting for a deploy
        under way) hands nothing over: the pod scheduled meanwhile is not
        deployed by an agent on its way out.
        """
        pods = FakePods()
        agentStore = FlakyListStore(self.state, self.clock)
        self.successResultOf(self.store.put(keys.intentNode("n1"), b"{}"))
        pods.gate = gate = defer.Deferred()
        self.successResultOf(self.store.put(keys.intent("n1", "web"), V1))
        agent = AgentService(self.config, pods, self.clock, store=agentStore)
        agent.startService()
        self.assertEqual([c[0] for c in pods.calls], ["deploy"])
        agentStore.hold = hold = defer.Deferred()
        agent.resync()
        stopped = agent.stopService()
        self.successResultOf(self.store.put(keys.intent("n1", "other"),
                                            V1.replace(b"id: web", b"id: other")))
        hold.callback(None)
        gate.callback(None)
        self.successResultOf(stopped)
        self.assertEqual([c[0] for c in pods.calls], ["deploy"])
        self.assertEqual(sorted(agent.workers), ["web"])
