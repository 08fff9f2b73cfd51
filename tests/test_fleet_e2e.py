"""
The fleet end to end: three real agents on one machine (C{twistd p2-agent}
processes, each its own node name, labels, pod root, state dir and loopback
pod address), real runit and real HTTP pods, and real C{twistd
p2-orchestrator} processes, on the local store and on a real ZooKeeper; a
person's changes go through the real C{p2} command.  Each test starts its
own fleet (processes cannot outlive a trial test), so each plays a whole
story on it.  Every wait is on a condition, with a generous timeout; nothing
asserts on timing.
"""

import json
import signal
import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.store import keys, openStore
from p2twisted.store.common import Delete
from tests.cli import P2CommandMixin
from tests.fleetprocesses import Fleet, StoreHistory
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit
from tests.zkserver import sharedServer

NODES = ("n1", "n2", "n3")


class FleetBase(P2CommandMixin):
    """
    A test's fleet, its store history and the person's commands.
    """

    timeout = 600

    @defer.inlineCallbacks
    def fleet(self, orchestrators=1):
        """
        Three labelled nodes (C{tier=web}) with running agents, and
        C{orchestrators} orchestrator processes running both farms.

        @return: L{Deferred} firing with the L{Fleet}.
        """
        requireRunit()
        store = yield self.openStore()
        self.addCleanup(store.close)
        fleet = Fleet(self, self.url, store, NODES)
        for node in NODES:
            yield fleet.label(node, tier="web")
        fleet.startAgents()
        yield fleet.waitAgents()
        for _ in range(orchestrators):
            fleet.startOrchestrator()
        self.history = StoreHistory(fleet)
        return fleet

    @defer.inlineCallbacks
    def createRC(self, fleet, replicas, version="1"):
        yield self.succeed("rc", "create", "--manifest", fleet.manifestFile(version),
                           "--selector", "tier=web", "--replicas", str(replicas), "--id", "web")

    @defer.inlineCallbacks
    def rollId(self, fleet):
        snapshot = yield Snapshot.read(fleet.store)
        (rollId,) = snapshot.rolls()
        return rollId

    def assertNeverBelow(self, start, version, minimum):
        """
        In every state the store went through since state C{start}, at least
        C{minimum} pods of C{version} reported passing.
        """
        for state in self.history.states[start:]:
            self.assertGreaterEqual(len(self.history.passing(state, version)), minimum, state)



class FleetMixin(FleetBase):
    """
    The stories whose store matters (sessions, locks, watches): run on
    both stores.
    """

    @defer.inlineCallbacks
    def test_scaleMoveTwoOrchestratorsAndKilledRoll(self):
        """
        Two orchestrators share the work: the RC of 2 is claimed by one and
        each pod is scheduled once.  Scaling to 3 and back to 2 adds and
        removes one pod.  A node relabelled out of the selector loses its
        pod only once the replacement on the free node passes its health
        check.  A roll to version 2 whose orchestrator is SIGKILLed after its
        first step (and another one started) ends with both pods on
        version 2, each node's intent rewritten once in place -- no extra
        schedule, no unschedule -- and a passing pod all along.
        """
        fleet = yield self.fleet(orchestrators=2)
        yield self.createRC(fleet, 2)
        yield fleet.waitFleet({"n1": "1", "n2": "1", "n3": None})
        pids = {p.pid for p in fleet.orchestrators}
        self.assertIn((yield fleet.lockHolder("rc", "web")), pids)
        self.assertEqual(sorted((yield fleet.podChanges())),
                         [("schedule", "n1"), ("schedule", "n2")])

        yield self.succeed("rc", "scale", "web", "3")
        yield fleet.waitServing({"n1": "1", "n2": "1", "n3": "1"})
        yield self.succeed("rc", "scale", "web", "2")

        @defer.inlineCallbacks
        def two():
            serving = yield fleet.serving()
            return list(serving.values()).count("1") == 2 and serving
        serving = yield waitFor(two, timeout=120, what="two pods")
        yield fleet.waitHealthy(serving)
        (free,) = [n for n, v in serving.items() if v is None]
        moved, kept = sorted(n for n in NODES if n != free)
        changes = yield fleet.podChanges()
        self.assertEqual(sorted(changes), sorted([("schedule", "n1"), ("schedule", "n2"),
                                                  ("schedule", "n3"), ("unschedule", free)]))

        mark = len(self.history.states)
        yield fleet.label(moved, tier="db")
        yield fleet.waitFleet({moved: None, kept: "1", free: "1"})
        gone = [s for s in self.history.states[mark:] if moved not in s["intent"]]
        self.assertTrue(gone)
        self.assertIn(free, self.history.passing(gone[0], "1"),
                      "%s's pod went before its replacement on %s passed" % (moved, free))

        mark, audited = len(self.history.states), len((yield fleet.events()))
        yield self.succeed("roll", "start", "--from", "web", "--manifest",
                           fleet.manifestFile("2"), "--min-healthy", "1", "--delay", "3")
        rollId = yield self.rollId(fleet)

        @defer.inlineCallbacks
        def stepped():
            events = yield fleet.events("roll", since=audited)
            return any(e.action == "step" for e in events)
        yield waitFor(stepped, timeout=120, what="the roll's first step")
        holder = yield fleet.lockHolder("roll", rollId)
        (killed,) = [p for p in fleet.orchestrators if p.pid == holder]
        yield killed.kill(signal.SIGKILL)
        fleet.startOrchestrator()
        yield fleet.waitKey(keys.roll(rollId), present=False, timeout=180)
        yield fleet.waitServing({moved: None, kept: "2", free: "2"})
        for node in (kept, free):
            self.assertEqual(self.history.intentVersions(node, mark), ["1", "2"], node)
        self.assertEqual(self.history.intentVersions(moved, mark), [None])
        self.assertEqual(sorted((yield fleet.podChanges(since=audited))),
                         [("rewrite", kept), ("rewrite", free)])
        self.assertNeverBelow(mark, None, 1)

    @defer.inlineCallbacks
    def test_deadAgentAndFailsafes(self):
        """
        A node whose agent is SIGKILLed loses its health key (its session
        expires) but keeps its intent: nobody removes it; the RC places a
        replacement on the free node.  An RC record without
        C{replicas_desired} is refused with the field named in its status,
        and changes nothing.  Every RC record deleted (a wiped tree) makes
        the RC farm hold still and say FAILSAFE; the records back, it claims
        them again and carries on: no pod was scheduled or unscheduled
        meanwhile.  (On ZooKeeper its watch may see the records go one by
        one, releasing all but the last before the failsafe holds: releasing
        unschedules nothing.)
        """
        fleet = yield self.fleet()
        yield self.createRC(fleet, 2)
        yield fleet.waitFleet({"n1": "1", "n2": "1", "n3": None})
        yield fleet.agents["n1"].kill(signal.SIGKILL)
        yield fleet.waitKey(keys.health("web", "n1"), present=False)
        yield fleet.waitKey(keys.machine("n1"), present=False)
        # Its pod keeps running (runit outlives the agent): nothing killed it.
        yield fleet.waitServing({"n1": "1", "n2": "1", "n3": "1"})
        self.assertEqual(self.history.intentVersions("n1"), [None, "1"])
        self.assertEqual(sorted((yield fleet.podChanges())),
                         [("schedule", "n1"), ("schedule", "n2"), ("schedule", "n3")])

        audited = len((yield fleet.events()))
        record = json.loads((yield fleet.store.get(keys.replicationController("web"))).value)
        del record["replicas_desired"]
        yield fleet.store.put(keys.replicationController("broken"), json.dumps(record).encode())

        @defer.inlineCallbacks
        def refused():
            status = yield fleet.status("rc", "broken")
            return status and "replicas_desired" in (status.get("error") or "")
        yield waitFor(refused, timeout=120, what="the broken RC to be refused")

        entries = yield fleet.store.list(keys.tree(keys.REPLICATION_CONTROLLERS))
        yield fleet.store.transaction([Delete(k) for k in entries])
        yield waitFor(lambda: "FAILSAFE" in fleet.output(), timeout=120,
                      what="the RC farm's failsafe")
        for key, entry in entries.items():
            yield fleet.store.put(key, entry.value)
        yield waitFor(lambda: "failsafe over" in fleet.output(), timeout=120,
                      what="the failsafe to end")
        yield fleet.waitKey(keys.lock("rc", "web"))
        yield fleet.waitKey(keys.status("rc", "web"))
        self.assertEqual((yield fleet.podChanges(since=audited)), [])
        self.assertEqual(self.history.intentVersions("n1"), [None, "1"])
        self.assertEqual(sorted((yield fleet.serving()).values()), ["1", "1", "1"])


class LocalFleetTests(FleetMixin, unittest.TestCase):
    """
    The fleet on the embedded store (one SQLite file shared by every
    process).
    """

    def openStore(self):
        return openStore(self.url, reactor)


class BadRollTests(FleetBase, unittest.TestCase):
    """
    Rolls to a version that fails its health check, on the embedded store
    only: what they test (the roll's counting of health) does not depend on
    the store, and each costs a fleet.
    """

    openStore = LocalFleetTests.openStore

    @defer.inlineCallbacks
    def test_badRollStopsAndAborts(self):
        """
        A roll (minimum 2 healthy of 3) to a version whose C{/_status}
        fails takes one node over and stops there: the two other nodes
        serve the old version all along, and the roll's status says why it
        waits.  C{p2 roll abort} ends it where it stands: nothing is
        unscheduled.
        """
        fleet = yield self.fleet()
        yield self.createRC(fleet, 3)
        yield fleet.waitFleet({"n1": "1", "n2": "1", "n3": "1"})
        mark, audited = len(self.history.states), len((yield fleet.events()))
        yield self.succeed("roll", "start", "--from", "web", "--manifest",
                           fleet.manifestFile("bad", healthy=False), "--min-healthy", "2")
        rollId = yield self.rollId(fleet)

        @defer.inlineCallbacks
        def stuck():
            status = yield fleet.status("roll", rollId)
            serving = yield fleet.serving()
            return (status and "waiting" in (status.get("reason") or "")
                    and sorted(serving.values(), key=str) == ["1", "1", "bad"])
        yield waitFor(stuck, timeout=120, what="the roll to wait on the bad version")
        self.assertNeverBelow(mark, "1", 2)
        yield self.succeed("roll", "abort", rollId)
        yield fleet.waitKey(keys.roll(rollId), present=False)
        self.assertEqual(sorted((yield fleet.serving()).values(), key=str), ["1", "1", "bad"])
        self.assertNotIn("unschedule", [a for a, n in (yield fleet.podChanges(since=audited))])
        self.assertNeverBelow(mark, "1", 2)

    @defer.inlineCallbacks
    def test_badRollRollsBack(self):
        """
        With C{auto_rollback}, a roll to a version whose C{/_status} fails
        turns round once its new pod has been unhealthy for
        C{rollback_after} seconds and returns every node to the old version,
        never with fewer than the minimum serving it; the audit log says it
        rolled back.
        """
        fleet = yield self.fleet()
        yield self.createRC(fleet, 3)
        yield fleet.waitFleet({"n1": "1", "n2": "1", "n3": "1"})
        mark = len(self.history.states)
        yield self.succeed("rc", "create", "--manifest", fleet.manifestFile("bad", healthy=False),
                           "--selector", "tier=web", "--replicas", "0", "--disabled",
                           "--id", "web-bad")
        yield self.succeed("roll", "start", "--from", "web", "--to", "web-bad", "--min-healthy",
                           "2", "--auto-rollback", "--rollback-after", "4")
        yield fleet.waitKey(keys.roll("web-bad"), present=False, timeout=180)
        yield fleet.waitServing({"n1": "1", "n2": "1", "n3": "1"})
        self.assertNeverBelow(mark, "1", 2)
        self.assertIn("bad", [v for n in NODES for v in self.history.intentVersions(n, mark)])
        actions = [e.action for e in (yield fleet.events("roll"))]
        self.assertIn("rollback", actions)
        self.assertIn("rolled_back", actions)


class ZooKeeperFleetTests(FleetMixin, unittest.TestCase):
    """
    The fleet on a real ZooKeeper.
    """

    def openStore(self):
        self.url = "zk://%s/fleet%s" % (sharedServer().hosts, uuid.uuid4().hex[:8])
        return openStore(self.url, reactor)
