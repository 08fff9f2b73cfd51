"""
The RC and roll controllers: read a snapshot, decide, apply the plan fenced
by the farm's lock and the object's version, report status, append audit
events.  Decisions are stubbed here (the real ones have their own tests);
what is tested is the glue.
"""

import json
import time

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from p2twisted.errors import VersionConflict
from p2twisted.intent import nodeMarker
from p2twisted.orchestrate import audit
from p2twisted.orchestrate.controllers import (
    DECIDE_AGAIN, FARMS, LOOK_AGAIN, RCController, RollController, SnapshotReader, WatchedReader)
from p2twisted.orchestrate.farm import Farm, IController
from p2twisted.orchestrate.plan import Plan, Schedule, UpdateRecord, Wait
from p2twisted.orchestrate.rc import decide as rcDecide
from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.records.controllers import AuditEvent, ReplicationController, Roll
from p2twisted.store import keys
from p2twisted.store.memory import MemoryState, MemoryStore
from tests.test_orchestrate_plan import MANIFEST


def scheduleOn(*nodes):
    """
    @return: a stub C{decide} scheduling the RC's pod on C{nodes}.
    """
    def decide(rc, snapshot):
        return Plan([Schedule(n, rc.podId, rc.manifest, rc.labelsForPods()) for n in nodes],
                    reason="schedule on %s" % (", ".join(nodes),), shortfall=1,
                    snapshot=snapshot)
    return decide


class ControllerTestCase(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1800000000)
        self.state = MemoryState()
        self.store = MemoryStore(self.state, self.clock)
        self.session = self.successResultOf(self.store.session(15.0))
        self.reader = SnapshotReader(self.store)

    def putRC(self, rcId="web", replicas=2, manifest=MANIFEST):
        rc = ReplicationController(id=rcId, manifest=manifest, replicas_desired=replicas)
        return self.successResultOf(self.store.put(rc.key, rc.toBytes()))

    def rcController(self, decide, rcId="web"):
        lock = self.successResultOf(self.session.lock(keys.lock("rc", rcId), b"me"))
        controller = RCController(self.store, rcId, lock, self.clock, self.reader, decide=decide)
        controller.start()
        return controller

    def status(self, kind, objectId):
        entry = self.successResultOf(self.store.get(keys.status(kind, objectId)))
        return None if entry is None else json.loads(entry.value)

    def events(self):
        return self.successResultOf(audit.read(self.store))[0]


class RCControllerTests(ControllerTestCase):

    def test_interface(self):
        self.putRC()
        controller = self.rcController(scheduleOn())
        self.assertTrue(verifyObject(IController, controller))
        lock = self.successResultOf(self.session.lock(keys.lock("roll", "web"), b"me"))
        self.assertTrue(verifyObject(IController, RollController(
            self.store, "web", lock, self.clock, self.reader)))

    def test_appliesPlanReportsAndAudits(self):
        """
        A reconcile writes the plan (intent, pod labels, node marker), the
        RC's status, and an audit event naming the nodes.
        """
        self.putRC()
        controller = self.rcController(scheduleOn("n1"))
        self.assertEqual(self.successResultOf(controller.reconcile()), LOOK_AGAIN)
        snapshot = self.successResultOf(Snapshot.read(self.store))
        self.assertEqual(snapshot.intent("n1", "web").value, MANIFEST)
        self.assertEqual(snapshot.podsOf("web"), [("n1", "web")])
        self.assertIsNotNone(snapshot.marker("n1"))
        status = self.status("rc", "web")
        self.assertEqual({k: status[k] for k in ("desired", "current", "healthy", "shortfall",
                                                  "error")},
                         {"desired": 2, "current": 0, "healthy": 0, "shortfall": 1,
                          "error": None})
        self.assertEqual(status["reason"], "schedule on n1")
        (event,) = self.events()
        self.assertEqual((event.kind, event.id, event.action, event.details["nodes"]),
                         ("replication_controller", "web", "schedule", ["n1"]))
        self.assertEqual(event.when, self.clock.seconds())
        self.assertIn("p2-orchestrator@", event.who)

    def test_lostLockWritesNothing(self):
        """
        When the farm's lock is no longer the one it took (another farm
        holds it now), the plan fails its fence and nothing is written:
        no intent, no status, no audit.
        """
        self.putRC()
        controller = self.rcController(scheduleOn("n1"))
        self.successResultOf(self.session.close())
        other = self.successResultOf(MemoryStore(self.state, self.clock).session(15.0))
        self.successResultOf(other.lock(keys.lock("rc", "web"), b"other"))
        self.failureResultOf(controller.reconcile(), VersionConflict)
        snapshot = self.successResultOf(Snapshot.read(self.store))
        self.assertEqual((snapshot.intent("n1", "web"), self.status("rc", "web"), self.events()),
                         (None, None, []))

    def test_objectChangedMeanwhile(self):
        """
        A plan decided over an RC record that changed before it was applied
        fails (the fence checks the record's version) and writes nothing;
        the controller asks to decide again shortly (a race, not an outage:
        no growing backoff).
        """
        self.putRC()

        def decide(rc, snapshot):
            self.putRC(replicas=0)  # a person scales it down meanwhile
            return scheduleOn("n1")(rc, snapshot)
        controller = self.rcController(decide)
        self.assertEqual(self.successResultOf(controller.reconcile()), DECIDE_AGAIN)
        self.assertIsNone(self.successResultOf(self.store.get(keys.intent("n1", "web"))))
        self.assertIn("changed under this plan", self.status("rc", "web")["error"])

    def test_nodeTakenMeanwhile(self):
        """
        A plan creating an intent that appeared since its snapshot (a stale
        read) is decided again shortly too.
        """
        self.putRC()

        def decide(rc, snapshot):
            self.successResultOf(self.store.put(keys.intent("n1", "web"), MANIFEST))
            return scheduleOn("n1")(rc, snapshot)
        controller = self.rcController(decide)
        self.assertEqual(self.successResultOf(controller.reconcile()), DECIDE_AGAIN)

    def test_statusWrittenWhenChanged(self):
        """
        A reconcile with nothing new to say leaves the status entry as is.
        """
        self.putRC()
        controller = self.rcController(lambda rc, snapshot: Plan(reason="converged",
                                                                 snapshot=snapshot))
        self.successResultOf(controller.reconcile())
        first = self.successResultOf(self.store.get(keys.status("rc", "web")))
        self.successResultOf(controller.reconcile())
        again = self.successResultOf(self.store.get(keys.status("rc", "web")))
        self.assertEqual(first.version, again.version)
        self.assertEqual(self.events(), [])

    def test_corruptRecord(self):
        """
        An unreadable RC record changes nothing and says why in status.
        """
        self.successResultOf(self.store.put(keys.replicationController("web"),
                                            b'{"manifest": "id: web\\n"}'))
        decided = []
        controller = self.rcController(lambda rc, snapshot: decided.append(rc))
        self.successResultOf(controller.reconcile())
        self.assertEqual(decided, [])
        self.assertIn("replicas_desired", self.status("rc", "web")["error"])

    def test_vanishedOrStopped(self):
        """
        A controller whose record is gone, or which was stopped, decides
        nothing and writes nothing.
        """
        decided = []
        controller = self.rcController(lambda rc, snapshot: decided.append(rc))
        self.successResultOf(controller.reconcile())
        self.putRC()
        self.successResultOf(controller.stop())
        self.successResultOf(controller.reconcile())
        self.assertEqual((decided, self.status("rc", "web")), ([], None))


class RollControllerTests(ControllerTestCase):

    def setUp(self):
        ControllerTestCase.setUp(self)
        self.old = self.putRC("old", replicas=3)
        self.new = self.putRC("new", replicas=0, manifest=MANIFEST + b"# v2\n")
        roll = Roll(old_rc="old", new_rc="new", desired=3, min_healthy=2)
        self.successResultOf(self.store.put(roll.key, roll.toBytes()))
        lock = self.successResultOf(self.session.lock(keys.lock("roll", "new"), b"me"))
        self.steps = []
        self.controller = RollController(self.store, "new", lock, self.clock, self.reader,
                                         step=self.step)

    def step(self, roll, snapshot, now):
        return self.steps.pop(0)(roll, snapshot, now)

    def test_waitWithDeadline(self):
        """
        A step that waits until a time has the farm reconcile again then;
        the status shows both RCs' counts and why it waits.
        """
        self.steps.append(lambda roll, snapshot, now: Wait("roll_delay", at=now + 5))
        self.assertEqual(self.successResultOf(self.controller.reconcile()), 5.0)
        status = self.status("roll", "new")
        self.assertEqual((status["reason"], status["old"]["desired"], status["new"]["desired"],
                          status["state"]), ("roll_delay", 3, 0, "rolling"))
        self.assertEqual(self.events(), [])

    def test_stepMovesCountsAndAudits(self):
        """
        A step's record updates are applied in one fenced transaction and
        audited as a step.
        """
        def step(roll, snapshot, now):
            old, new = snapshot.rc("old"), snapshot.rc("new")
            return Plan([UpdateRecord(old.key, old.withReplicas(2).toBytes(),
                                      snapshot.version(old.key)),
                         UpdateRecord(new.key, new.withReplicas(1).toBytes(),
                                      snapshot.version(new.key))],
                        reason="old 3 -> 2, new 0 -> 1", snapshot=snapshot,
                        events=[AuditEvent("roll", "new", "step", {"add": 1})])
        self.steps.append(step)
        self.successResultOf(self.controller.reconcile())
        snapshot = self.successResultOf(Snapshot.read(self.store))
        self.assertEqual((snapshot.rc("old").replicas_desired, snapshot.rc("new").replicas_desired),
                         (2, 1))
        (event,) = self.events()
        self.assertEqual((event.kind, event.id, event.action, event.details),
                         ("roll", "new", "step", {"add": 1}))
        self.assertEqual(self.status("roll", "new")["reason"], "old 3 -> 2, new 0 -> 1")


class SnapshotReaderTests(unittest.TestCase):

    def test_coalesced(self):
        """
        Callers arriving while a read runs share the next read, which
        begins after they asked; one read is never shared with a caller
        that asked after it began.
        """
        reads = []

        def read(store):
            reads.append(defer.Deferred())
            return reads[-1]
        reader = SnapshotReader(None, read)
        first = reader.read()
        second, third = reader.read(), reader.read()
        self.assertEqual(len(reads), 1)
        reads[0].callback("s1")
        self.assertEqual(self.successResultOf(first), "s1")
        self.assertNoResult(second)
        self.assertEqual(len(reads), 2)
        reads[1].callback("s2")
        self.assertEqual((self.successResultOf(second), self.successResultOf(third)),
                         ("s2", "s2"))
        failing = reader.read()
        reads[2].errback(VersionConflict("x", "memory"))
        self.failureResultOf(failing, VersionConflict)
        self.assertEqual(reader.reads, 3)


class FarmIntegrationTests(ControllerTestCase):

    def farm(self, decide):
        """
        Start an rc farm whose RCControllers decide with C{decide}.
        """
        kind = FARMS["rc"]

        def factory(objectId, lock):
            return RCController(self.store, objectId, lock, self.clock, self.reader,
                                decide=decide)
        farm = Farm(self.store, kind.name, kind.tree, factory, self.clock)
        farm.startService()
        self.addCleanup(farm.stopService)
        return farm

    def test_farmRunsRCController(self):
        """
        The rc farm kind runs an RCController per RC, and each reconciles
        through one shared snapshot reader.
        """
        self.putRC("web")
        self.putRC("db")
        farm = self.farm(scheduleOn("n1"))
        self.assertEqual(sorted(farm.claims), ["db", "web"])
        self.assertEqual(self.status("rc", "web")["reason"], "schedule on n1")
        self.assertEqual(sorted(e.id for e in self.events()), ["db", "web"])

    def test_looksAgainAfterApplying(self):
        """
        After applying a plan the controller looks again a moment later,
        without news, and its status counts the pods it placed.
        """
        self.putRC("web", replicas=1)
        plans = [scheduleOn("n1")]

        def decide(rc, snapshot):
            if plans:
                return plans.pop()(rc, snapshot)
            return Plan(reason="converged", snapshot=snapshot)
        self.farm(decide)
        self.assertEqual(self.status("rc", "web")["current"], 0)
        self.clock.advance(LOOK_AGAIN)
        self.assertEqual((self.status("rc", "web")["current"], self.status("rc", "web")["reason"]),
                         (1, "converged"))


    def test_newsPacedBySimulatedTimeAlone(self):
        """
        On a simulated clock (a L{task.Clock}) the decisions cost no time:
        a farm whose C{newsInterval} is 0 answers news at once, whatever
        CPU its real decisions took -- pacing by real CPU on a simulated
        clock made such tests wait for the clock by an amount that depends
        on the machine.
        """
        self.putRC("web", replicas=1)
        decisions = []

        def decide(rc, snapshot):
            decisions.append(rc.id)
            began = time.process_time()
            while time.process_time() - began < 0.01:
                pass
            return Plan(reason="converged", snapshot=snapshot)
        farm = self.farm(decide)
        self.assertEqual(len(decisions), 1)
        farm.nudge()
        self.assertEqual(len(decisions), 2, "news waited for the clock")
        self.assertEqual(farm.claims["web"].controller.cost, 0.0)

    def test_costIsTheDecisionsThread(self):
        """
        With real CPU time (a real reactor's default, or as given), a
        decision costs the CPU of the thread that made it, not what the
        process's other threads (the ZooKeeper client's) spent meanwhile.
        """
        import threading
        from p2twisted.orchestrate.controllers import CPU
        self.putRC("web", replicas=1)

        def burn():
            began = time.process_time()
            while time.process_time() - began < 0.2:
                pass

        def decide(rc, snapshot):
            other = threading.Thread(target=burn)
            other.start()
            other.join()
            return Plan(reason="converged", snapshot=snapshot)
        lock = self.successResultOf(self.session.lock(keys.lock("rc", "web"), b"me"))
        controller = RCController(self.store, "web", lock, self.clock, self.reader,
                                  decide=decide, cpu=CPU)
        self.successResultOf(controller.reconcile())
        self.assertLess(controller.cost, 0.1)


class StatusHoldTests(ControllerTestCase):
    """
    A burst of health changes moves an RC's counts at every reconcile; its
    status is written at most once a second while only the counts change,
    the latest always, and any other change at once.
    """

    def setUp(self):
        ControllerTestCase.setUp(self)
        self.statusWrites = 0
        transaction = self.store.transaction

        def counted(ops):
            self.statusWrites += any(getattr(op, "key", None) == keys.status("rc", "web")
                                     for op in ops)
            return transaction(ops)
        self.store.transaction = counted
        for n in ("n1", "n2", "n3"):
            self.successResultOf(self.store.put(keys.machine(n), b"{}"))
        self.putRC(replicas=3)
        self.controller = self.rcController(rcDecide)
        self.successResultOf(self.controller.reconcile())  # schedules n1..n3
        self.passing = set()
        self.settle()
        self.successResultOf(self.controller.reconcile())
        self.assertEqual((self.status("rc", "web")["reason"],
                          self.status("rc", "web")["healthy"]), ("converged", 0))

    def settle(self):
        from p2twisted.orchestrate.harness import settleAgents
        self.successResultOf(settleAgents(self.store, lambda node, podId, sha: (
            "passing" if node in self.passing else "critical")))

    def healthy(self, *nodes):
        """Those nodes turn healthy; the controller reconciles 0.1 s later."""
        self.passing.update(nodes)
        self.settle()
        self.clock.advance(0.1)
        self.successResultOf(self.controller.reconcile())

    def writes(self):
        """@return: how many times the RC's status was written."""
        return self.statusWrites

    def test_countsAtMostOnceASecond(self):
        before = self.writes()
        self.healthy("n1")
        self.healthy("n2")
        self.assertEqual((self.writes(), self.status("rc", "web")["healthy"]), (before, 0))
        self.clock.advance(0.5)
        self.assertEqual(self.status("rc", "web")["healthy"], 0)
        self.clock.advance(0.5)
        self.assertEqual(self.status("rc", "web")["healthy"], 2, "the latest, a second after")
        self.assertEqual(self.writes(), before + 1)
        self.healthy("n3")
        self.passing.discard("n3")
        self.healthy()
        self.clock.advance(1)
        self.assertEqual(self.status("rc", "web")["healthy"], 2)
        self.assertEqual(self.writes(), before + 1, "back to what it shows: nothing to write")

    def test_otherChangesAtOnce(self):
        before = self.writes()
        self.healthy("n1")
        self.putRC(replicas=2)
        self.successResultOf(self.controller.reconcile())
        status = self.status("rc", "web")
        self.assertEqual((status["desired"], status["healthy"], self.writes()), (2, 1, before + 1))
        self.clock.advance(5)
        self.assertEqual(self.writes(), before + 1)

    def test_heldWrittenOnStop(self):
        self.healthy("n1", "n2")
        self.successResultOf(self.controller.stop())
        self.assertEqual(self.status("rc", "web")["healthy"], 2)

    def test_countsOnly(self):
        from p2twisted.orchestrate.controllers import countsOnly
        roll = {"state": "rolling", "reason": "waiting: at or below min_healthy 2 (v2: 3 "
                "desired, 1 current, 0 healthy)", "new": {"healthy": 0, "id": "v2"},
                "error": None, "disabled": False}
        self.assertTrue(countsOnly(roll, dict(roll, reason=roll["reason"].replace("0 h", "1 h"),
                                              new={"healthy": 1, "id": "v2"})))
        for other in [dict(roll, state="rolling_back"), dict(roll, error="conflict"),
                      dict(roll, disabled=True), dict(roll, new=None),
                      dict(roll, new={"healthy": 0, "id": "v3"}),
                      dict(roll, reason="schedule on n1"), dict(roll, extra=1)]:
            self.assertFalse(countsOnly(roll, other), other)
        self.assertFalse(countsOnly({"reason": "schedule on n1"}, {"reason": "schedule on n2"}))
        self.assertFalse(countsOnly({"reason": "web-1"}, {"reason": "web-2"}))


class RCAuditTests(ControllerTestCase):

    def test_scheduleRewriteUnschedule(self):
        """
        A plan placing, rewriting and removing pods is audited as one event
        per kind of change, naming the nodes.
        """
        from p2twisted.orchestrate.plan import Unschedule
        self.putRC()
        controller = self.rcController(scheduleOn("n1", "n2"))
        self.successResultOf(controller.reconcile())

        def decide(rc, snapshot):
            return Plan([Schedule("n2", "web", rc.manifest + b"# drift fixed\n",
                                  rc.labelsForPods()),
                         Schedule("n3", "web", rc.manifest, rc.labelsForPods()),
                         Unschedule("n1", "web")], reason="mixed", snapshot=snapshot)
        controller.decideRC = decide
        self.clock.advance(1)
        self.successResultOf(controller.reconcile())
        self.assertEqual([(e.action, e.details["nodes"]) for e in self.events()],
                         [("schedule", ["n1", "n2"]), ("schedule", ["n3"]), ("rewrite", ["n2"]),
                          ("unschedule", ["n1"])])

    def test_adoptionIsAuditedAsSuch(self):
        """
        Labelling a pod that already runs the RC's manifest (a pod scheduled
        by hand, or one whose labels were lost) is audited as C{adopt}: no
        pod was rewritten or restarted.
        """
        from p2twisted import intent
        from p2twisted.manifest import parseManifest
        self.putRC()
        self.successResultOf(intent.schedule(self.store, "n1", parseManifest(MANIFEST)))
        controller = self.rcController(scheduleOn("n1"))
        self.successResultOf(controller.reconcile())
        self.assertEqual([(e.action, e.details["nodes"]) for e in self.events()],
                         [("adopt", ["n1"])])

        def decide(rc, snapshot):
            labels = dict(rc.labelsForPods(), team="a")
            return Plan([Schedule("n1", "web", rc.manifest, labels)], reason="labels",
                        snapshot=snapshot)
        controller.decideRC = decide
        self.clock.advance(1)
        self.successResultOf(controller.reconcile())
        self.assertEqual([(e.action, e.details["nodes"]) for e in self.events()][1:],
                         [("relabel", ["n1"])], "its own pod, new pod labels")

    def test_partlyAppliedPlanAudited(self):
        """
        A plan of several transactions that fails part-way still audits what
        its earlier transactions did, and only that.
        """
        self.putRC()
        nodes = ["n%02d" % i for i in range(30)]
        decide = scheduleOn(*nodes)

        def racing(rc, snapshot):
            plan = decide(rc, snapshot)
            # Someone else schedules on n25 after this snapshot was read.
            self.successResultOf(self.store.put(keys.intent("n25", "web"), MANIFEST))
            return plan
        controller = self.rcController(racing)
        self.assertEqual(self.successResultOf(controller.reconcile()), DECIDE_AGAIN)
        [event] = self.events()
        self.assertEqual(event.action, "schedule")
        first = event.details["nodes"]
        self.assertEqual(first, nodes[:len(first)])
        self.assertNotIn("n25", first)
        for node in nodes:
            if node != "n25":
                written = self.successResultOf(self.store.get(keys.intent(node, "web")))
                self.assertEqual(node in first, written is not None, node)

    def test_auditInTheChangesTransaction(self):
        """
        A change and its audit record are written in one transaction: an
        orchestrator killed the moment its transaction committed (here the
        store's answer never comes) still leaves the record of what it did.
        """
        self.putRC()
        commit = self.store.transaction

        def committedThenKilled(ops):
            commit(ops)
            return defer.Deferred()
        self.store.transaction = committedThenKilled
        controller = self.rcController(scheduleOn("n1", "n2"))
        self.assertNoResult(controller.reconcile())
        [event] = self.events()
        self.assertEqual((event.action, event.details["nodes"]), ("schedule", ["n1", "n2"]))


class WatchedReaderTests(unittest.TestCase):
    """
    The orchestrator's snapshots come from watches of the cluster trees,
    not from listing them at every read; their news nudges the farms.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(MemoryState(), self.clock)
        self.news = []
        self.reader = WatchedReader(self.store, ["health", "replication_controllers"],
                                    self.news.append)

    def test_readsWhatTheWatchesDelivered(self):
        """
        A read answers with what the watches hold: it waits for their first
        delivery, then sees each change, and while nothing changes every
        read gets the same snapshot (decoded once).
        """
        early = self.reader.read()
        self.assertNoResult(early)
        self.reader.startService()
        self.addCleanup(self.reader.stopService)
        self.assertIsNone(self.successResultOf(early).rc("web"))
        rc = ReplicationController(id="web", manifest=MANIFEST, replicas_desired=2)
        self.successResultOf(self.store.put(rc.key, rc.toBytes()))
        snapshot = self.successResultOf(self.reader.read())
        self.assertEqual(snapshot.rc("web").replicas_desired, 2)
        self.assertIs(self.successResultOf(self.reader.read()), snapshot)

    def test_newsAfterTheFirstDelivery(self):
        """
        Each change to a watched tree is news, named by its tree, once the
        reader can show it; the first delivery is not news.
        """
        self.reader.startService()
        self.addCleanup(self.reader.stopService)
        self.assertEqual(self.news, [])
        seen = []
        self.reader.onChange = lambda tree: seen.append(
            (tree, self.successResultOf(self.reader.read()).health("web", "n1") is not None))
        self.successResultOf(self.store.put(keys.health("web", "n1"), json.dumps(
            {"status": "passing", "output": "", "time": 1, "sha": "x"}).encode()))
        self.assertEqual(seen, [("health", True)])


class IncrementalReaderTests(unittest.TestCase):
    """
    The reader builds each snapshot from the one before; over real watches
    delivering independently, what it answers is what a fresh read of the
    same trees answers.
    """

    def test_randomHistories(self):
        """
        Random writes and deletes, each tree's watch held back or not
        (LaggingStore), snapshots read between them: once every watch has
        delivered, the reader's snapshot answers as a fresh listing does,
        and earlier snapshots keep their answers.
        """
        import random
        from tests.test_snapshot import everyAnswer, randomWrite
        clock = task.Clock()
        store = MemoryStore(MemoryState(), clock)
        lagging = LaggingStore(store)
        reader = WatchedReader(lagging, clock=clock)
        reader.startService()
        self.addCleanup(reader.stopService)
        rnd = random.Random(7)
        held = []
        for step in range(150):
            if rnd.random() < 0.5:
                lagging.release()  # (a later delivery overtaking a held one is no watch's)
                lagging.held = {tree for tree in reader.trees if rnd.random() < 0.3}
            for _ in range(rnd.randint(0, 4)):
                key, value = randomWrite(rnd)
                if rnd.random() < 0.25:
                    self.successResultOf(store.delete(key))
                else:
                    self.successResultOf(store.put(key, value))
            if rnd.random() < 0.5:
                snapshot = self.successResultOf(reader.read())
                held.append((snapshot, everyAnswer(snapshot)))
            if rnd.random() < 0.5:
                lagging.release()
                snapshot = self.successResultOf(reader.read())
                self.assertEqual(everyAnswer(snapshot), everyAnswer(self.successResultOf(
                    Snapshot.read(store, reader.trees))), "step %d" % (step,))
            for earlier, found in held[-3:]:
                self.assertEqual(everyAnswer(earlier), found, "step %d" % (step,))


class LaggingStore(object):
    """
    A store whose watches of the trees in C{held} keep their news until
    L{release}: watches of different trees deliver independently.
    """

    def __init__(self, store):
        self.store = store
        self.held = set()
        self._pending = {}

    def __getattr__(self, name):
        return getattr(self.store, name)

    def watch(self, prefix, callback):
        def deliver(entries):
            if prefix in self.held:
                self._pending[prefix] = (callback, entries)
            else:
                callback(entries)
        return self.store.watch(prefix, deliver)

    def release(self):
        self.held.clear()
        pending, self._pending = self._pending, {}
        for callback, entries in pending.values():
            callback(entries)


class ReadsItsOwnWritesTests(ControllerTestCase):
    """
    A controller reading snapshots from watches decides over its own last
    writes, not a snapshot older than them.
    """

    def setUp(self):
        ControllerTestCase.setUp(self)
        # n1..n3 have agents, n4 and n5 none (down).
        for n in ("n1", "n2", "n3", "n4", "n5"):
            self.successResultOf(self.store.put(keys.intentNode(n), nodeMarker(n)))
        for n in ("n1", "n2", "n3"):
            self.successResultOf(self.store.put(keys.machine(n), b"{}"))
        self.lagging = LaggingStore(self.store)
        self.reader = WatchedReader(self.lagging, clock=self.clock)
        self.reader.startService()
        self.addCleanup(self.reader.stopService)
        self.putRC(replicas=3)
        self.controller = self.rcController(rcDecide)
        self.successResultOf(self.controller.reconcile())
        self.assertEqual(self.rcPods(), ["n1", "n2", "n3"])

    def rcPods(self):
        snapshot = self.successResultOf(Snapshot.read(self.store))
        return [n for n in snapshot.nodes() if snapshot.intent(n, "web") is not None]

    def scaleTo(self, count):
        entry = self.successResultOf(self.store.get(keys.replicationController("web")))
        rc4 = ReplicationController(id="web", manifest=MANIFEST, replicas_desired=count)
        self.successResultOf(self.store.cas(entry.key, rc4.toBytes(), entry.version))

    def test_noSecondReplicaWhileLabelsLag(self):
        """
        A replica placed on a down node, whose pod labels the next snapshot
        does not show yet, is not placed again on another node: the read
        waits until the watches show what the controller wrote.
        """
        self.lagging.held.add(keys.labelTree("pod"))
        self.scaleTo(4)
        self.successResultOf(self.controller.reconcile())
        self.assertEqual(self.rcPods(), ["n1", "n2", "n3", "n4"])
        again = self.controller.reconcile()
        self.lagging.release()
        self.successResultOf(again)
        self.assertEqual(self.rcPods(), ["n1", "n2", "n3", "n4"])

    def test_listsWhenWatchesStayBehind(self):
        """
        Watches that do not show the controller's writes within the
        reader's patience are not waited for longer: the trees are listed.
        """
        self.lagging.held.add(keys.labelTree("pod"))
        self.scaleTo(4)
        self.successResultOf(self.controller.reconcile())
        again = self.controller.reconcile()
        self.assertNoResult(again)
        self.clock.advance(self.reader.patience)
        self.successResultOf(again)
        self.assertEqual(self.rcPods(), ["n1", "n2", "n3", "n4"])
