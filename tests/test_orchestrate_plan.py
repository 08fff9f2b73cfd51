"""
Plans become fenced store transactions: every transaction begins with the
fence, none is over 64 ops, a node's changes are never split, scheduling
writes intent, pod labels and a new node's marker together, and a write from
a process that lost its lock (or decided over a stale snapshot) fails and
writes nothing.
"""

import json
import os

import attr
from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from p2twisted.errors import KeyExists, VersionConflict
from p2twisted.labels import encodeLabels
from p2twisted.orchestrate import harness
from p2twisted.orchestrate.plan import (
    IPlanner, Plan, Planner, PlanTooLarge, Schedule, Unschedule, UpdateRecord, Wait,
    toTransactions)
from p2twisted.records.controllers import AuditEvent
from p2twisted.store import keys
from p2twisted.store.common import Check, Create, Put
from p2twisted.store.memory import MemoryStore

MANIFEST = b"""\
id: web
launchables:
  app:
    launchable_type: hoist
    location: file:///artifacts/app_1.tar.gz
"""

LABELS = {"pod_id": "web", "replication_controller_id": "rc"}


def schedule(node, labels=LABELS):
    return Schedule(node, "web", MANIFEST, labels)


class PlannerTests(unittest.TestCase):

    def setUp(self):
        self.planner = harness.RecordingPlanner()
        self.store = self.planner.store

    def snapshot(self):
        return self.successResultOf(self.planner.snapshot())

    def test_interfaces(self):
        self.assertTrue(verifyObject(IPlanner, self.planner))
        self.assertTrue(verifyObject(IPlanner, Planner(MemoryStore(clock=task.Clock()))))

    def test_scheduleNewNode(self):
        """
        Scheduling on a node without a marker writes the marker, the intent
        and the pod labels in one transaction that begins with the fence.
        """
        fence = [Check(keys.lock("rc", "rc"), None)]
        plan = Plan([schedule("n1")], snapshot=self.snapshot())
        transactions = toTransactions(plan, fence=fence)
        self.assertEqual(len(transactions), 1)
        self.assertEqual(transactions[0][0], fence[0])
        self.assertEqual([type(op) for op in transactions[0]], [Check, Create, Create, Create])
        self.successResultOf(self.planner.apply(plan, fence))
        after = self.snapshot()
        self.assertEqual(json.loads(after.marker("n1").value)["node"], "n1")
        self.assertEqual(after.intent("n1", "web").value, MANIFEST)
        self.assertEqual(after.podLabels("n1", "web"), LABELS)
        self.assertEqual(after.podsOf("rc"), [("n1", "web")])
        self.assertEqual(self.planner.plans, [plan])

    def test_markerKept(self):
        """
        A node that has a marker keeps it (checked, not rewritten); an intent
        already holding the manifest and labels already right are only
        checked, so a repeated plan changes no version.
        """
        self.successResultOf(self.planner.apply(Plan([schedule("n1")], snapshot=self.snapshot())))
        (ops,) = toTransactions(Plan([Schedule("n1", "api", MANIFEST, LABELS)],
                                     snapshot=self.snapshot()))
        self.assertEqual(ops[0], Check(keys.intentNode("n1"), self.snapshot().marker("n1").version))
        before = self.snapshot()
        plan = Plan([schedule("n1")], snapshot=before)
        (ops,) = toTransactions(plan)
        self.assertEqual([type(op) for op in ops], [Check, Check])
        self.successResultOf(self.planner.apply(plan))
        self.assertEqual(self.snapshot().entries, before.entries)

    def test_relabel(self):
        """
        Scheduling over an existing intent (a takeover) rewrites intent and
        labels by compare-and-set (which fails if the node was wiped since,
        so the marker needs no check).
        """
        self.successResultOf(self.planner.apply(Plan([schedule("n1")], snapshot=self.snapshot())))
        other = dict(LABELS, replication_controller_id="rc2")
        (ops,) = toTransactions(Plan([Schedule("n1", "web", MANIFEST + b"# v2\n", other)],
                                     snapshot=self.snapshot()))
        self.assertEqual([type(op) for op in ops], [Put, Put])
        self.assertTrue(all(op.version is not None for op in ops))

    def test_unschedule(self):
        """
        Unscheduling removes intent and pod labels, keeps the marker.
        """
        self.successResultOf(self.planner.apply(Plan([schedule("n1")], snapshot=self.snapshot())))
        self.successResultOf(self.planner.apply(Plan([Unschedule("n1", "web")],
                                                     snapshot=self.snapshot())))
        after = self.snapshot()
        self.assertIsNone(after.intent("n1", "web"))
        self.assertEqual(after.podLabels("n1", "web"), {})
        self.assertIsNotNone(after.marker("n1"))

    def test_staleSnapshot(self):
        """
        A plan decided over a snapshot that another writer has since changed
        fails (L{KeyExists} for what it meant to create) and writes nothing.
        """
        stale = self.snapshot()
        self.successResultOf(self.planner.apply(Plan([schedule("n1")], snapshot=stale)))
        after = self.snapshot()
        other = dict(LABELS, replication_controller_id="rc2")
        self.failureResultOf(
            self.planner.apply(Plan([Schedule("n1", "web", MANIFEST, other)], snapshot=stale)),
            KeyExists)
        self.assertEqual(self.snapshot().entries, after.entries)
        self.assertEqual(len(self.planner.failures), 1)

    def test_lostLock(self):
        """
        A process whose lock was lost and taken by another session cannot
        write: the fence's check of its lock's version fails.
        """
        clock = task.Clock()
        store = MemoryStore(clock=clock)
        planner = harness.RecordingPlanner(store)
        session = self.successResultOf(store.session(10))
        lock = self.successResultOf(session.lock(keys.lock("rc", "rc"), b"me"))
        fence = [Check(lock.key, lock.version)]
        snapshot = self.successResultOf(planner.snapshot())
        self.successResultOf(planner.apply(Plan([schedule("n1")], snapshot=snapshot), fence))
        self.successResultOf(session.close())
        other = self.successResultOf(self.successResultOf(store.session(10)).lock(lock.key, b"x"))
        self.assertNotEqual(other.version, lock.version)
        before = self.successResultOf(planner.snapshot())
        self.failureResultOf(planner.apply(Plan([schedule("n2")], snapshot=before), fence),
                             VersionConflict)
        self.assertIsNone(self.successResultOf(planner.snapshot()).marker("n2"))

    def test_batches(self):
        """
        A large plan is cut into transactions of at most 64 ops, each
        beginning with the fence; a node's ops stay together, and record
        updates share the first transaction.
        """
        fence = [Check(keys.lock("rc", "rc"), None), Check(keys.replicationController("rc"), None)]
        nodes = ["n%03d" % i for i in range(50)]
        changes = [schedule(n) for n in nodes]
        changes.append(UpdateRecord(keys.status("rc", "rc"), b"{}", None))
        changes.insert(5, Unschedule("n000", "web"))
        transactions = toTransactions(Plan(changes, snapshot=self.snapshot()), fence=fence)
        self.assertGreater(len(transactions), 1)
        for ops in transactions:
            self.assertLessEqual(len(ops), 64)
            self.assertEqual(ops[:2], fence)
        self.assertEqual(transactions[0][2], Create(keys.status("rc", "rc"), b"{}"))
        seen = {}
        for index, ops in enumerate(transactions):
            for op in ops[2:]:
                parts = keys.parse(op.key)
                node = parts[1] if parts[0] == keys.INTENT else (
                    parts[2] if parts[0] == keys.LABELS else None)
                if node is not None:
                    self.assertEqual(seen.setdefault(node, index), index)
        self.assertEqual(sorted(seen), nodes)

    def test_tooLarge(self):
        fence = [Check("locks/x/%d" % i, None) for i in range(62)]
        self.assertRaises(PlanTooLarge, toTransactions, Plan([schedule("n1")],
                                                             snapshot=self.snapshot()), None, fence)

    def test_recordUpdates(self):
        """
        Record updates are compare-and-set writes, creates or deletes, all in
        one transaction.
        """
        key = keys.replicationController("rc")
        entry = self.successResultOf(self.store.put(key, b"{}"))
        plan = Plan([UpdateRecord(key, b"{\"a\":1}", entry.version),
                     UpdateRecord(keys.roll("rc"), b"{}", None)])
        self.successResultOf(self.planner.apply(plan))
        self.assertEqual(self.successResultOf(self.store.get(key)).value, b"{\"a\":1}")
        self.failureResultOf(self.planner.apply(
            Plan([UpdateRecord(key, None, entry.version)])), VersionConflict)
        self.assertEqual(len(self.planner.transactions), 1)

    def test_waitAppliesNothing(self):
        self.assertEqual(self.successResultOf(self.planner.apply(Wait("health"))), [])
        self.assertEqual(self.planner.plans, [Wait("health")])
        self.assertFalse(Wait("x"))
        self.assertFalse(Plan())


class HeldStore(object):
    """
    A store whose transactions wait until the test ends them.
    """

    def __init__(self):
        self.pending = []

    def transaction(self, ops):
        from twisted.internet import defer
        d = defer.Deferred()
        self.pending.append((ops, d))
        return d


class PipelinedPlannerTests(unittest.TestCase):
    """
    L{Planner} applies a large plan's record updates alone first, then the
    other transactions several at once, so the store can pipeline them.
    """

    def plan(self, nodes, records=(), running=False):
        """
        @param running: whether the nodes run the pod already (the plan
            rewrites it, as a roll's takeover does), or get it anew.
        """
        from p2twisted.orchestrate.snapshot import Snapshot
        from p2twisted.store.common import Entry
        names = ["n%03d" % i for i in range(nodes)]
        entries = {}
        if running:
            for version, node in enumerate(names, 1):
                key = keys.intent(node, "web")
                entries[key] = Entry(key, b"id: web\n", version)
        return Plan(list(records) + [schedule(n) for n in names], snapshot=Snapshot(entries))

    def assertFirstAloneThenWindow(self, store, d):
        """
        Of a plan of 5 transactions applied with a window of 3, the first is
        in flight alone, then the next 3 at once, and all 5 results come back.
        """
        self.assertEqual(len(store.pending), 1)
        store.pending.pop(0)[1].callback("first")
        self.assertEqual(len(store.pending), 3)
        for i in range(4):
            store.pending.pop(0)[1].callback(i)
        self.assertEqual(self.successResultOf(d), ["first", 0, 1, 2, 3])

    def test_recordsAloneThenWindow(self):
        store = HeldStore()
        update = UpdateRecord(keys.replicationController("web"), b"{}", None)
        d = Planner(store, window=3).apply(self.plan(100, [update]))  # 5 transactions
        self.assertFirstAloneThenWindow(store, d)

    def test_noRecordsAllInTheWindow(self):
        """
        A plan that only rewrites pods (a roll's takeover) has its first
        transactions in flight at once: each begins with the fence, so a
        stale plan fails in each anyway, and one round trip is saved.
        """
        store = HeldStore()
        d = Planner(store, window=3).apply(self.plan(100, running=True))  # 4 of 28 nodes
        self.assertEqual(len(store.pending), 3)
        for i in range(4):
            store.pending.pop(0)[1].callback(i)
        self.assertEqual(self.successResultOf(d), [0, 1, 2, 3])

    def test_placingFirstAloneThenWindow(self):
        """
        A plan placing pods anew (an RC's first schedules) applies its first
        transaction alone, then the others several at once: the parents
        its creates share with them (C{audit/}, C{labels/pod/}, C{intent/})
        are made once, by it, instead of by every transaction in flight,
        all but one of which then failed and were planned again (on
        ZooKeeper, 1,000 pods went from ~70 multis and ~1,600 reads to 56
        and ~300).
        """
        store = HeldStore()
        d = Planner(store, window=3).apply(self.plan(100))  # 5 transactions
        self.assertFirstAloneThenWindow(store, d)

    def test_placingOneTransaction(self):
        """
        A plan of one transaction goes at once, placing or not.
        """
        store = HeldStore()
        d = Planner(store, window=3).apply(self.plan(5))
        self.assertEqual(len(store.pending), 1)
        store.pending.pop(0)[1].callback("only")
        self.assertEqual(self.successResultOf(d), ["only"])

    def test_failureStartsNoMore(self):
        """
        A transaction failing fails the apply with its error, and the
        transactions not yet started are not.
        """
        store = HeldStore()
        d = Planner(store, window=2).apply(self.plan(100))
        store.pending.pop(0)[1].callback("first")
        store.pending.pop(0)[1].errback(VersionConflict("intent/n020/web", "memory"))
        store.pending.pop(0)[1].callback("ok")
        self.assertEqual(len(store.pending), 0)
        self.failureResultOf(d, VersionConflict)


    def test_eventsAloneFirst(self):
        """
        A plan with events of its own (written with its first transaction)
        sends that transaction alone first, as it does record updates: sent
        together, a first transaction that failed left the others applied
        and the plan's events nowhere in the audit.
        """
        store = HeldStore()
        plan = attr.evolve(self.plan(100), events=[AuditEvent("ds", "web", "disown", {})])
        audited = []

        def audit(changes, first):
            audited.append(first)
            return []
        d = Planner(store, window=3).apply(plan, audit=audit)
        self.assertEqual(len(store.pending), 1)
        store.pending.pop(0)[1].errback(VersionConflict("intent/n000/web", "memory"))
        self.assertEqual(store.pending, [])
        self.assertEqual(self.failureResultOf(d, VersionConflict).value.applied, ())


class SettleAgentsTests(unittest.TestCase):

    def test_settle(self):
        """
        The fake agents make reality follow intent, report health as told,
        register their machine; a down node loses machine and health keys but
        keeps its reality.
        """
        planner = harness.RecordingPlanner()
        snapshot = self.successResultOf(planner.snapshot())
        self.successResultOf(planner.apply(Plan([schedule("n1"), schedule("n2")],
                                                snapshot=snapshot)))
        self.successResultOf(harness.settleAgents(
            planner.store, health=lambda node, pod, sha: "critical" if node == "n2" else "passing"))
        after = self.successResultOf(planner.snapshot())
        self.assertEqual(after.realitySha("n1", "web"), after.intentSha("n1", "web"))
        self.assertEqual(after.health("web", "n1").status, "passing")
        self.assertEqual(after.health("web", "n2").status, "critical")
        self.assertEqual(after.health("web", "n1").sha, after.intentSha("n1", "web"))
        self.assertTrue(after.agentUp("n1"))
        self.successResultOf(harness.settleAgents(planner.store, down=["n1"]))
        after = self.successResultOf(planner.snapshot())
        self.assertFalse(after.agentUp("n1"))
        self.assertIsNone(after.health("web", "n1"))
        self.assertIsNotNone(after.reality("n1", "web"))
        self.successResultOf(planner.apply(Plan([Unschedule("n2", "web")], snapshot=after)))
        self.successResultOf(harness.settleAgents(planner.store))
        after = self.successResultOf(planner.snapshot())
        self.assertIsNone(after.reality("n2", "web"))
        self.assertIsNone(after.health("web", "n2"))
        self.assertEqual(encodeLabels(LABELS), encodeLabels(dict(LABELS)))



class LocalStorePlanTests(unittest.TestCase):
    """
    The same fencing on a real backend: the local SQLite store, shared by
    two clients as two orchestrator processes share it.
    """

    @defer.inlineCallbacks
    def test_lostLockOnLocalStore(self):
        from twisted.internet import reactor

        from p2twisted.store.local import LocalStore
        url = "local://" + os.path.join(os.path.abspath(self.mktemp()), "state.db")
        first = yield LocalStore.open(url, reactor)
        self.addCleanup(first.close)
        second = yield LocalStore.open(url, reactor)
        self.addCleanup(second.close)
        planner = harness.RecordingPlanner(first)
        session = yield first.session(10)
        lock = yield session.lock(keys.lock("rc", "rc"), b"first")
        fence = [Check(lock.key, lock.version)]
        snapshot = yield planner.snapshot()
        yield planner.apply(Plan([schedule("n1")], snapshot=snapshot), fence)
        stale = yield planner.snapshot()
        yield session.close()
        other = yield second.session(10)
        yield other.lock(lock.key, b"second")
        yield self.assertFailure(planner.apply(Plan([schedule("n2")], snapshot=stale), fence),
                                 VersionConflict)
        after = yield harness.RecordingPlanner(second).snapshot()
        self.assertIsNone(after.marker("n2"))
        self.assertEqual(after.podsOf("rc"), [("n1", "web")])
        yield other.close()
