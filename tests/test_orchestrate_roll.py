"""
Rolling updates: P2's rollAlgorithm (its own test table, ported), and rolls
run against a simulated fleet to the end, checking after every round that
healthy pods never fall below the minimum and that the new RC takes the old
one's pods over in place (nothing unscheduled, one new schedule per node),
also when the orchestrator is killed mid-roll; plus P2's known deadlocks
(ineligible nodes, a known-bad version at minimum 0) and auto-rollback.
"""

import json
import os
import random

from twisted.trial import unittest

from p2twisted.errors import UsageError, VersionConflict
from p2twisted.orchestrate import roll as rollmodule
from p2twisted.orchestrate.plan import Done, Plan, Schedule, Unschedule, Wait
from p2twisted.orchestrate.roll import createRoll, rollAlgorithm, step
from p2twisted.labels import encodeLabels
from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.records.controllers import Roll
from p2twisted.store import keys
from p2twisted.store.common import Check, Entry

from tests.orchfleet import Fleet, checkPodInvariants, healthyCount


class RollAlgorithmTests(unittest.TestCase):
    """
    P2's own tests of C{rollAlgorithm}, ported from square/p2
    C{pkg/roll/update_test.go} (Apache License 2.0, Copyright Square, Inc.).
    """

    def uniform(self, old, new, want, need):
        remove, add = rollAlgorithm(old, new, want - new, new, want, need)
        self.assertEqual(remove, add, "expected nodes removed and nodes added to be equal")
        return add

    def test_wouldBlock(self):
        self.assertEqual(self.uniform(1, 1, 3, 4), 0, "should do nothing if below minimum")
        self.assertEqual(self.uniform(1, 1, 2, 4), 0, "should do nothing if at minimum")
        self.assertEqual(self.uniform(1, 4, 3, 4), 0, "should do nothing if done")
        self.assertEqual(self.uniform(2, 2, 6, 3), 1,
                         "should schedule difference if minimum must be maintained")
        self.assertEqual(self.uniform(1, 3, 6, 3), 3,
                         "should schedule remaining if minimum is satisfied by new")
        self.assertEqual(self.uniform(3, 0, 6, 0), 6, "should schedule remaining if no minimum")

    def test_doesNotExceed(self):
        self.assertEqual(rollAlgorithm(1, 1, 1, 2, 3, 1), (1, 1))

    def test_increases(self):
        table = [
            (0, 0, 3, 2, 0, 1, "should schedule difference if increasing capacity from zero"),
            (0, 1, 3, 2, 0, 1, "partway through increasing capacity from zero"),
            (0, 2, 3, 2, 0, 1, "increasing capacity from zero and new nodes satisfy minimum"),
            (0, 0, 3, 0, 0, 3, "should schedule all if increasing capacity with no minimum"),
            (3, 0, 4, 2, 1, 2, "should schedule difference if increasing with existing nodes"),
            (3, 0, 4, 3, 0, 1, "only the new node if increasing with no headroom"),
        ]
        for old, new, final, need, remove, add, message in table:
            self.assertEqual(rollAlgorithm(old, new, old, new, final, need), (remove, add),
                             message)

    def test_spare(self):
        """
        (Not in P2.)  Pods known unhealthy among those a move takes over add
        to the headroom: a roll away from a broken version, or back from
        one, is not stuck below its minimum.
        """
        self.assertEqual(rollAlgorithm(0, 1, 2, 1, 3, 2), (0, 0))
        self.assertEqual(rollAlgorithm(0, 1, 2, 1, 3, 2, spare=2), (1, 1))

    def simulate(self, rng, full, nonew, strictRemove):
        """
        P2's C{SimulateRollingUpgrade} fuzzer: nodes hold an old pod (-1), a
        new one (1) or none (0); run the algorithm until the target is
        reached, never going below the minimum or above the target.
        """
        nodes = [0] * (rng.randrange(20) + 1)
        shuffled = list(range(len(nodes)))
        rng.shuffle(shuffled)
        oldCount = len(nodes) if full else rng.randrange(len(nodes) + 1)
        for index in shuffled[:oldCount]:
            nodes[index] = -1
        newCount = 0 if nonew else rng.randrange(len(nodes) - oldCount + 1)
        for index in shuffled[len(nodes) - newCount:]:
            nodes[index] = 1
        minimum = rng.randrange(oldCount + newCount) if oldCount > 0 else 0
        target = rng.randrange(len(nodes) - minimum + 1) + minimum
        if newCount > minimum:
            target = rng.randrange(len(nodes) - newCount + 1) + newCount
        if full:
            target = len(nodes)
        while True:
            new = [i for i, n in enumerate(nodes) if n > 0]
            old = [i for i, n in enumerate(nodes) if n < 0]
            eligible = [i for i, n in enumerate(nodes) if n == 0 or (n < 0 and not strictRemove)]
            self.assertGreaterEqual(len(old) + len(new), minimum, nodes)
            self.assertLessEqual(len(new), target, nodes)
            if len(new) == target:
                self.assertEqual(rollAlgorithm(len(old), len(new), len(old), target, target,
                                               minimum), (0, 0))
                return
            oldDesired = len(old) if strictRemove else target - len(new)
            remove, add = rollAlgorithm(len(old), len(new), oldDesired, len(new), target, minimum)
            if not strictRemove:
                self.assertEqual(remove, add, "asymmetric update")
            self.assertNotEqual(add, 0, "noop update would never terminate: %r" % (nodes,))
            if strictRemove:
                for index in rng.sample(old, remove):
                    nodes[index] = 0
                    eligible.append(index)
            for index in rng.sample(eligible, add):
                nodes[index] = 1

    def test_simulateRollingUpgrade(self):
        rng = random.Random(11)
        for _ in range(2000):
            self.simulate(rng, False, False, False)

    def test_simulateRollingUpgradeStrictRemove(self):
        rng = random.Random(12)
        for _ in range(2000):
            self.simulate(rng, False, False, True)


NODES = {n: {"tier": "web"} for n in ("a", "b", "c", "d", "e")}


class RollFleetTests(unittest.TestCase):

    def fleet(self, nodes=NODES, oldReplicas=3, **kw):
        """
        A fleet whose RC C{old} runs version 1 on C{oldReplicas} nodes, all
        healthy, and an RC C{new} for version 2 with no replicas.
        """
        fleet = Fleet(self, nodes, **kw)
        fleet.warmup = True
        fleet.checks.append(checkPodInvariants)
        fleet.putRC("old", version=1, replicas=oldReplicas, selector="tier=web")
        fleet.converge()
        fleet.converge()
        self.assertEqual(healthyCount(fleet.snapshot()), oldReplicas)
        fleet.putRC("new", version=2, replicas=0, selector="tier=web")
        return fleet

    def start(self, fleet, minHealthy, **kw):
        roll, plan = createRoll(fleet.snapshot(), "old", "new", minHealthy, **kw)
        fleet.run(fleet.planner.apply(plan))
        before = len(fleet.planner.changes())
        fleet.checks.append(
            lambda f, s: self.assertGreaterEqual(healthyCount(s), minHealthy, "below minimum"))
        return roll, before

    def schedulesSince(self, fleet, kind, start=0):
        changes = [c for p in fleet.planner.plans[start:] for c in getattr(p, "changes", ())]
        return [c.node for c in changes if isinstance(c, kind)]

    def test_inPlace(self):
        """
        A roll of 3 at minimum 2 ends with the new version on the same three
        nodes: each node got one schedule of the new version, nothing was
        unscheduled, healthy pods never fell below 2; the old RC and the roll
        record are gone and the new RC wants 3.
        """
        fleet = self.fleet()
        start = len(fleet.planner.plans)
        self.start(fleet, 2)
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(sorted(self.schedulesSince(fleet, Schedule, start)), ["a", "b", "c"])
        self.assertEqual(self.schedulesSince(fleet, Unschedule, start), [])
        self.assertIsNone(snapshot.rc("old"))
        self.assertEqual(snapshot.rolls(), {})
        self.assertEqual(snapshot.rc("new").replicas_desired, 3)
        self.assertEqual([n for n, _ in snapshot.podsOf("new")], ["a", "b", "c"])
        self.assertEqual(healthyCount(snapshot), 3)
        events = [e.action for p in fleet.planner.plans for e in getattr(p, "events", ())]
        self.assertEqual(events[0], "start")
        self.assertIn("step", events)
        self.assertEqual(events[-1], "finish")

    def test_killedMidRoll(self):
        """
        An orchestrator killed at any point of a roll (its last plan never
        applied) is succeeded by one that finishes the roll with no extra
        schedule or unschedule: each node still gets one new schedule.
        """
        for killAt in range(1, 12):
            fleet = self.fleet()
            start = len(fleet.planner.plans)
            self.start(fleet, 2)
            for _ in range(killAt):
                fleet.round()
            # The killed process had decided over this snapshot; it never applies.
            snapshot = fleet.snapshot()
            for plan, fence in fleet.decideAll(snapshot) + fleet.stepRolls(snapshot):
                pass
            fleet.converge()
            self.assertEqual(sorted(self.schedulesSince(fleet, Schedule, start)),
                             ["a", "b", "c"], "killed after %d rounds" % (killAt,))
            self.assertEqual(self.schedulesSince(fleet, Unschedule, start), [])
            self.assertIsNone(fleet.snapshot().rc("old"))

    def test_lateWriteFromKilledProcessFails(self):
        """
        A plan a killed orchestrator decided is refused when it finally
        reaches the store after the roll moved on: its fence (the roll's
        version) no longer holds.
        """
        fleet = self.fleet()
        roll, _ = self.start(fleet, 2)
        fleet.round()
        snapshot = fleet.snapshot()
        stale = step(roll, snapshot, fleet.now)
        fence = [Check(roll.key, snapshot.version(roll.key))]
        fleet.run(fleet.planner.apply(stale, fence))
        self.failureResultOf(fleet.planner.apply(stale, fence), VersionConflict)

    def test_badVersionMinimumZero(self):
        """
        P2 #414: a roll to a known-bad version at minimum 0 terminates (the
        person asked for it) instead of hanging with the roll and old RC left.
        """
        fleet = self.fleet()
        fleet.markBad(2)
        fleet.checks = [checkPodInvariants]
        self.start(fleet, 0)
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.rolls(), {})
        self.assertIsNone(snapshot.rc("old"))
        self.assertEqual(len(snapshot.podsOf("new")), 3)

    def test_badVersionStops(self):
        """
        A roll to a version whose health fails stops with the old version
        still serving the minimum, and says why.
        """
        fleet = self.fleet()
        fleet.markBad(2)
        roll, _ = self.start(fleet, 2)
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(healthyCount(snapshot), 2)
        result = step(roll, snapshot, fleet.now)
        self.assertIsInstance(result, Wait)
        self.assertIn("min_healthy 2", result.reason)
        self.assertIsNotNone(snapshot.roll("new"))

    def test_autoRollback(self):
        """
        With auto_rollback, a roll whose new pods stay unhealthy for
        rollback_after seconds turns round: the old version runs on every
        node again, the old RC wants its 3, the new RC is left disabled with
        none, the roll record is gone, and healthy pods never fell below the
        minimum on the way.
        """
        fleet = self.fleet()
        fleet.markBad(2)
        start = len(fleet.planner.plans)
        self.start(fleet, 2, auto_rollback=True, rollback_after=10)
        fleet.converge()
        waiting = step(fleet.snapshot().roll("new"), fleet.snapshot(), fleet.now)
        self.assertIsInstance(waiting, Wait)
        self.assertIn("rolling back in", waiting.reason)
        fleet.play()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.rolls(), {})
        self.assertEqual(snapshot.rc("old").replicas_desired, 3)
        self.assertFalse(snapshot.rc("old").disabled)
        self.assertEqual((snapshot.rc("new").replicas_desired, snapshot.rc("new").disabled),
                         (0, True))
        self.assertEqual([n for n, _ in snapshot.podsOf("old")], ["a", "b", "c"])
        self.assertEqual(healthyCount(snapshot), 3)
        self.assertEqual(self.schedulesSince(fleet, Unschedule, start), [])
        events = [e for p in fleet.planner.plans for e in getattr(p, "events", ())]
        rollback = [e for e in events if e.action == "rollback"]
        self.assertEqual(len(rollback), 1)
        self.assertIn("unhealthy for", rollback[0].details["reason"])
        self.assertEqual(events[-1].action, "rolled_back")

    def test_autoRollbackNotWhenHealthy(self):
        """
        A healthy roll with auto_rollback finishes normally.
        """
        fleet = self.fleet()
        self.start(fleet, 2, auto_rollback=True, rollback_after=30)
        fleet.converge()
        self.assertIsNone(fleet.snapshot().rc("old"))

    def test_ineligibleNodes(self):
        """
        P2's ineligible-node deadlock (#906, #1073): the old RC's pods sit on
        nodes the new RC may not use.  The new RC places its pods on its own
        nodes; at the end the old RC's leftovers are drained (while the new
        pods keep the minimum) and the roll finishes.
        """
        nodes = {"a": {"tier": "web"}, "b": {"tier": "web"}, "c": {"tier": "web"},
                 "x": {"tier": "web2"}, "y": {"tier": "web2"}, "z": {"tier": "web2"}}
        fleet = self.fleet(nodes)
        fleet.putRC("new", version=2, replicas=0, selector="tier=web2")
        self.start(fleet, 2)
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.rolls(), {})
        self.assertIsNone(snapshot.rc("old"))
        self.assertEqual([n for n, _ in snapshot.podsOf("new")], ["x", "y", "z"])
        for node in ("a", "b", "c"):
            self.assertIsNone(snapshot.intent(node, "web"))

    def test_nodeTurnsIneligibleMidRoll(self):
        """
        P2 #948/#1078: a node that stops matching the selectors mid-roll
        deadlocked rolls and node transfers.  Here the new RC replaces the
        pod there once its replacement is healthy, and the roll ends with
        every new pod on an eligible node, never below the minimum.
        """
        fleet = self.fleet()
        self.start(fleet, 2)
        fleet.round()
        fleet.round()
        fleet.setLabels("a", {"tier": "gone"})
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.rolls(), {})
        self.assertIsNone(snapshot.rc("old"))
        self.assertEqual([n for n, _ in snapshot.podsOf("new")], ["b", "c", "d"])
        self.assertIsNone(snapshot.intent("a", "web"))

    def test_rollDelay(self):
        """
        roll_delay holds each batch after the first until it has been ready
        that long.
        """
        fleet = self.fleet()
        self.start(fleet, 2, roll_delay=5)
        steps = []
        fleet.checks.append(lambda f, s: steps.extend(
            f.now for p in f.planner.plans[-1:] for e in getattr(p, "events", ())
            if e.action == "step"))
        fleet.play()
        self.assertIsNone(fleet.snapshot().rc("old"))
        self.assertGreater(len(steps), 1)
        for earlier, later in zip(steps, steps[1:]):
            self.assertGreaterEqual(later - earlier, 5)

    def test_capacityIncrease(self):
        """
        A roll from 2 old replicas to 4 new ones adds capacity on free nodes
        and takes the old pods over.
        """
        fleet = self.fleet(oldReplicas=2)
        start = len(fleet.planner.plans)
        self.start(fleet, 2, desired=4)
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual([n for n, _ in snapshot.podsOf("new")], ["a", "b", "c", "d"])
        self.assertEqual(self.schedulesSince(fleet, Unschedule, start), [])
        self.assertIsNone(snapshot.rc("old"))

    def test_shrink(self):
        """
        A roll from 4 old replicas to 2 new ones ends with 2: the old RC's
        leftovers are drained at the end, healthy pods never under 2.
        """
        fleet = self.fleet(oldReplicas=4)
        self.start(fleet, 2, desired=2)
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(len(snapshot.podsOf("new")), 2)
        self.assertIsNone(snapshot.rc("old"))
        self.assertEqual(len([n for n in snapshot.nodes() if snapshot.intent(n, "web")]), 2)

    def test_canaryLeaveOld(self):
        """
        A canary (desired 1 of 3, leave_old) moves one node to the new
        version and leaves the old RC running the other two.
        """
        fleet = self.fleet()
        self.start(fleet, 2, desired=1, leave_old=True)
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.rolls(), {})
        self.assertEqual(len(snapshot.podsOf("new")), 1)
        self.assertEqual(snapshot.rc("old").replicas_desired, 2)
        self.assertEqual(len(snapshot.podsOf("old")), 2)

    def test_agentDownMidRoll(self):
        """
        A node whose agent dies mid-roll does not stop the roll: its pod is
        taken over last or replaced elsewhere.
        """
        fleet = self.fleet()
        self.start(fleet, 1)
        fleet.round()
        fleet.down.add("c")
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.rolls(), {})
        self.assertGreaterEqual(len([n for n, _ in snapshot.podsOf("new")
                                     if snapshot.agentUp(n)]), 3)

    def test_rcGone(self):
        """
        A roll whose old RC was deleted ends (a finished roll deletes it
        first); a roll whose record is gone is done.
        """
        fleet = self.fleet()
        roll, _ = self.start(fleet, 2)
        fleet.run(fleet.store.delete(keys.replicationController("old")))
        plan = step(roll, fleet.snapshot(), fleet.now)
        self.assertIsInstance(plan, Plan)
        self.assertIn("gone", plan.reason)
        fleet.run(fleet.planner.apply(plan))
        self.assertIsInstance(step(roll, fleet.snapshot(), fleet.now), Done)

    def test_newRCGoneWaits(self):
        """
        A roll whose new RC is missing (deleted by mistake, or a wiped RC
        tree) keeps its record and says why, as P2's roll farm did, instead
        of ending and leaving the old RC disabled with nobody to notice.
        """
        fleet = self.fleet()
        roll, _ = self.start(fleet, 2)
        fleet.round()
        fleet.run(fleet.store.delete(keys.replicationController("new")))
        outcome = step(roll, fleet.snapshot(), fleet.now)
        self.assertIsInstance(outcome, Wait)
        self.assertIn("RC new is gone", outcome.reason)
        self.assertIn("p2 roll abort new", outcome.reason)

    def test_bothRCsGoneWaits(self):
        """
        A roll whose two RCs are both missing (a wiped or half-restored RC
        tree looks like this) keeps its record and says why, instead of
        ending: once the RCs are back, it carries on where it was.
        """
        fleet = self.fleet()
        roll, _ = self.start(fleet, 2)
        fleet.round()
        before = fleet.snapshot()
        saved = {k: before.entries[k].value for k in (keys.replicationController("old"),
                                                      keys.replicationController("new"))}
        for key in saved:
            fleet.run(fleet.store.delete(key))
        outcome = step(roll, fleet.snapshot(), fleet.now)
        self.assertIsInstance(outcome, Wait)
        self.assertIn("abort", outcome.reason)
        self.assertEqual(list(fleet.snapshot().rolls()), ["new"])
        for key, value in saved.items():
            fleet.run(fleet.store.put(key, value))
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.rolls(), {})
        self.assertIsNone(snapshot.rc("old"))
        self.assertEqual(len(snapshot.podsOf("new")), 3)


class CreateRollTests(unittest.TestCase):

    def setUp(self):
        self.fleet = Fleet(self, NODES)
        self.fleet.putRC("old", version=1, replicas=3)
        self.fleet.putRC("new", version=2, replicas=0)

    def test_refusals(self):
        snapshot = self.fleet.snapshot()
        self.assertRaises(UsageError, createRoll, snapshot, "old", "nope", 1)
        self.assertRaises(UsageError, createRoll, snapshot, "old", "old", 1)
        e = self.assertRaises(UsageError, createRoll, snapshot, "old", "new", 4)
        self.assertIn("min_healthy", str(e))
        createRoll(snapshot, "old", "new", 2, desired=1, leave_old=True)
        roll, plan = createRoll(snapshot, "old", "new", 1)
        self.assertEqual((roll.desired, roll.old_desired), (3, 3))
        self.fleet.run(self.fleet.planner.apply(plan))
        self.fleet.putRC("other", version=3)
        e = self.assertRaises(UsageError, createRoll, self.fleet.snapshot(), "old", "other", 1)
        self.assertIn("already in roll new", str(e))

    def test_otherPod(self):
        from p2twisted.records.controllers import ReplicationController
        from tests.orchfleet import manifest
        other = ReplicationController("other", manifest(3).replace(b"id: web", b"id: db"), 1)
        self.fleet.run(self.fleet.store.put(other.key, other.toBytes()))
        e = self.assertRaises(UsageError, createRoll, self.fleet.snapshot(), "old", "other", 1)
        self.assertIn("pod", str(e))

    def test_concurrentCreation(self):
        """
        Two rolls over one RC created from the same snapshot: the second
        fails to commit (each rewrites both RCs by compare-and-set).
        """
        self.fleet.putRC("other", version=3)
        snapshot = self.fleet.snapshot()
        _, first = createRoll(snapshot, "old", "new", 1)
        _, second = createRoll(snapshot, "old", "other", 1)
        self.fleet.run(self.fleet.planner.apply(first))
        self.failureResultOf(self.fleet.planner.apply(second), VersionConflict)
        self.assertEqual(list(self.fleet.snapshot().rolls()), ["new"])

    def test_abort(self):
        snapshot = self.fleet.snapshot()
        _, plan = createRoll(snapshot, "old", "new", 1)
        self.fleet.run(self.fleet.planner.apply(plan))
        self.fleet.run(self.fleet.planner.apply(rollmodule.abortRoll(self.fleet.snapshot(), "new")))
        self.assertEqual(self.fleet.snapshot().rolls(), {})
        self.assertRaises(UsageError, rollmodule.abortRoll, self.fleet.snapshot(), "new")


class RollFuzzTests(unittest.TestCase):
    """
    Random rolls over random fleets, with orchestrators dying before they
    apply a fifth of their plans: healthy pods never fall below the minimum,
    and every roll ends where it should.  C{FUZZ_SEEDS=1000} runs more.
    """

    def scenario(self, rng):
        size = rng.randint(2, 8)
        nodes = {"n%d" % i: {"tier": "web"} for i in range(size)}
        oldReplicas = rng.randint(1, size)
        # Some nodes may be open to the new RC only.
        newOnly = rng.randint(0, 2)
        for i in range(newOnly):
            nodes["m%d" % i] = {"tier": "web", "new": "yes"}
        newSelector = rng.choice(["tier=web", "tier=web", "new=yes" if newOnly else "tier=web"])
        eligibleNew = [n for n, labels in nodes.items()
                       if newSelector == "tier=web" or labels.get("new") == "yes"]
        target = rng.randint(1, len(eligibleNew))
        leaveOld = rng.random() < 0.2
        top = min(oldReplicas, target) if not leaveOld else oldReplicas
        minHealthy = rng.randint(0, top)
        bad = rng.random() < 0.3
        autoRollback = rng.random() < 0.5
        return dict(nodes=nodes, oldReplicas=oldReplicas, newSelector=newSelector,
                    eligibleNew=eligibleNew, target=target, leaveOld=leaveOld,
                    minHealthy=minHealthy, bad=bad, autoRollback=autoRollback)

    def run_(self, seed):
        rng = random.Random(seed)
        s = self.scenario(rng)
        what = "seed %d: %r" % (seed, s)
        fleet = Fleet(self, s["nodes"])
        fleet.warmup = True
        fleet.putRC("old", version=1, replicas=s["oldReplicas"], selector="tier=web")
        fleet.converge()
        fleet.converge()
        fleet.putRC("new", version=2, replicas=0, selector=s["newSelector"])
        oldNodes = [n for n, _ in fleet.snapshot().podsOf("old")]
        # With old pods on every node the new RC may use and healthy pods at
        # the minimum already, nothing can move without going below it.
        stuck = 0 < s["minHealthy"] >= s["oldReplicas"] and not (
            set(s["eligibleNew"]) - set(oldNodes))
        if s["bad"]:
            fleet.markBad(2)
        _, plan = createRoll(fleet.snapshot(), "old", "new", s["minHealthy"], desired=s["target"],
                             leave_old=s["leaveOld"], auto_rollback=s["autoRollback"],
                             rollback_after=20)
        fleet.run(fleet.planner.apply(plan))
        fleet.checks.append(checkPodInvariants)
        fleet.checks.append(lambda f, snap: self.assertGreaterEqual(
            healthyCount(snap), s["minHealthy"], what))
        fleet.drop = lambda plan: rng.random() < 0.2
        fleet.play()
        snapshot = fleet.snapshot()
        pods = [n for n in snapshot.nodes() if snapshot.intent(n, "web")]
        if stuck:
            self.assertIn("new", snapshot.rolls(), what)
            self.assertEqual(healthyCount(snapshot), s["oldReplicas"], what)
        elif s["bad"] and s["autoRollback"]:
            self.assertEqual(snapshot.rolls(), {}, what)
            self.assertEqual(len(snapshot.podsOf("old")), s["oldReplicas"], what)
            self.assertEqual(snapshot.podsOf("new"), [], what)
            self.assertEqual(healthyCount(snapshot), s["oldReplicas"], what)
        elif s["bad"] and s["minHealthy"] > 0 and snapshot.rolls():
            # Stopped at the minimum (checked every round); or, when the old
            # pods left keep the minimum, finished like a good one.
            pass
        else:
            self.assertEqual(snapshot.rolls(), {}, what)
            new = [n for n, _ in snapshot.podsOf("new")]
            self.assertEqual(len(new), s["target"], what)
            self.assertTrue(set(new) <= set(s["eligibleNew"]), what)
            if s["leaveOld"]:
                self.assertIsNotNone(snapshot.rc("old"), what)
                self.assertEqual(len(pods), s["target"] + len(snapshot.podsOf("old")), what)
            else:
                self.assertIsNone(snapshot.rc("old"), what)
                self.assertEqual(len(pods), s["target"], what)

    def test_fuzz(self):
        for seed in range(int(os.environ.get("FUZZ_SEEDS", "60"))):
            self.run_(seed)


class AdoptionTests(unittest.TestCase):

    def test_enableAdoptsAndFinishTrims(self):
        """
        An RC enabled by a roll while it has more pods than it wants adopts
        them (enabling never unschedules); the roll ends with it at the
        target.
        """
        fleet = Fleet(self, NODES)
        fleet.putRC("old", version=1, replicas=2)
        fleet.converge()
        fleet.putRC("new", version=2, replicas=2, disabled=True)
        for node in ("c", "d", "e"):
            plan = Plan([Schedule(node, "web", fleet.snapshot().rc("new").manifest,
                                  fleet.snapshot().rc("new").labelsForPods())],
                        snapshot=fleet.snapshot())
            fleet.run(fleet.planner.apply(plan))
        fleet.putRC("new", version=2, replicas=1, disabled=True)
        _, plan = createRoll(fleet.snapshot(), "old", "new", 1, desired=2)
        fleet.run(fleet.planner.apply(plan))
        enable = step(fleet.snapshot().roll("new"), fleet.snapshot(), fleet.now)
        self.assertIn("enable new", enable.reason)
        fleet.run(fleet.planner.apply(enable))
        self.assertEqual(fleet.snapshot().rc("new").replicas_desired, 3)
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.rolls(), {})
        self.assertEqual(snapshot.rc("new").replicas_desired, 2)
        self.assertEqual(len(snapshot.podsOf("new")), 2)
        self.assertIsNone(snapshot.rc("old"))



OLD_SHA_VERSION, NEW_SHA_VERSION = 1, 2
P, C = "passing", "critical"


class P2CountAndStepTests(unittest.TestCase):
    """
    P2's tables of C{countHealthy} and C{shouldRollAfterDelay}, ported from
    square/p2 C{pkg/roll/update_test.go} (Apache License 2.0, Copyright
    Square, Inc.) onto snapshots: the old RC C{old} desires C{oldDesired}
    and labels C{oldNodes} (C{{node: real}}: whether reality runs its
    version, else the other one), the new RC likewise, and each node's
    health check says C{checks[node]}.  Like P2's fixture, C{node1} is
    labelled whether it holds a pod or not.
    """

    def fleet(self, oldDesired, newDesired, oldNodes, newNodes, checks, target=3, minimum=2):
        nodes = {"node1": {"key1": "val1"}}
        nodes.update((n, {}) for n in list(oldNodes) + list(newNodes))
        fleet = Fleet(self, nodes)
        old = fleet.putRC("old", version=OLD_SHA_VERSION, replicas=oldDesired, disabled=True)
        new = fleet.putRC("new", version=NEW_SHA_VERSION, replicas=newDesired)
        for rc, other, placed in ((old, new, oldNodes), (new, old, newNodes)):
            for node, real in placed.items():
                ran = rc if real else other
                fleet.run(fleet.store.put(keys.intent(node, "web"), rc.manifest))
                fleet.run(fleet.store.put(keys.label("pod", node + "/web"),
                                          encodeLabels(rc.labelsForPods())))
                fleet.run(fleet.store.put(keys.reality(node, "web"), ran.manifest))
                if node in checks:
                    fleet.run(fleet.store.put(keys.health("web", node), json.dumps(
                        {"status": checks[node], "sha": ran.sha}).encode()))
        roll = Roll(old_rc="old", new_rc="new", desired=target, min_healthy=minimum)
        fleet.run(fleet.store.put(roll.key, roll.toBytes()))
        return fleet, roll

    COUNTS = [
        # name, old nodes, checks, (desired, current, real, healthy, unhealthy, unknown)
        ("normal", {"node1": True, "node2": True, "node3": True}, "passing", (3, 3, 3, 3, 0, 0)),
        ("all unhealthy", {"node1": True, "node2": True, "node3": True}, "critical",
         (3, 3, 3, 0, 3, 0)),
        ("all explicit unknown", {"node1": True, "node2": True, "node3": True}, "unknown",
         (3, 3, 3, 0, 0, 3)),
        ("all implicit unknown", {"node1": True, "node2": True, "node3": True}, None,
         (3, 3, 3, 0, 0, 3)),
        ("non-real", {"node1": True, "node2": True, "node3": False},
         {"node1": "passing", "node2": "passing", "node3": "critical"}, (3, 3, 2, 2, 0, 0)),
        ("non-current", {}, {"node1": "critical"}, (3, 0, 0, 0, 0, 3)),
    ]

    def test_countHealthy(self):
        for name, oldNodes, checks, expected in self.COUNTS:
            if not isinstance(checks, dict):
                checks = {} if checks is None else {n: checks for n in oldNodes}
            fleet, roll = self.fleet(3, 0, oldNodes, {}, checks)
            snapshot = fleet.snapshot()
            got = rollmodule.count(snapshot.rc("old"), snapshot)
            self.assertEqual((got.desired, got.current, got.real, got.healthy, got.unhealthy,
                              got.unknown), expected, name)

    STEPS = [
        # name, oldDesired, newDesired, oldNodes, newNodes, checks, target, minimum,
        # (remove, add) here, and P2's when it differs
        ("initial", 3, 0, {"node1": True, "node2": True, "node3": True}, {},
         {"node1": P, "node2": P, "node3": P}, 3, 2, (1, 1), None),
        # P2 waits for health it cannot see; a surge onto the free node1 loses none.
        ("initial unknown", 3, 0, {}, {}, {}, 3, 2, (0, 1), (0, 0)),
        ("initial migration from zero", 0, 0, {}, {}, {}, 3, 2, (0, 1), None),
        # Health not reported yet (agents just started) is not known bad:
        # taking node2 over could lose a healthy pod.  Known critical pods
        # are spare: taking one over loses nothing (P2 waits).
        ("initial, two not reported", 3, 0, {"node1": True, "node2": True, "node3": True}, {},
         {"node1": P}, 3, 2, (0, 0), None),
        ("initial, two critical", 3, 0, {"node1": True, "node2": True, "node3": True}, {},
         {"node1": P, "node2": C, "node3": C}, 3, 2, (1, 1), (0, 0)),
        ("midway unhealthy", 2, 1, {"node1": True, "node2": True}, {"node3": True},
         {"node1": P, "node2": P, "node3": C}, 3, 2, (0, 0), None),
        ("midway unhealthy migration", 2, 1, {}, {"node3": True}, {"node3": C}, 3, 2,
         (0, 0), None),
        ("midway unhealthy migration from zero", 0, 1, {}, {"node3": True}, {"node3": C}, 3, 2,
         (0, 0), None),
        ("midway healthy", 2, 1, {"node1": True, "node2": True}, {"node3": True},
         {"node1": P, "node2": P, "node3": P}, 3, 2, (1, 1), None),
        ("midway unknown", 2, 1, {}, {"node3": True}, {"node3": P}, 3, 2, (0, 1), (0, 0)),
        ("midway desire less than healthy", 3, 2,
         {"node1": True, "node2": True, "node3": True, "node4": True, "node5": True}, {},
         {"node%d" % i: P for i in range(1, 6)}, 5, 3, (0, 0), None),
        ("midway desire less than healthy partial", 3, 2,
         {"node1": True, "node2": True, "node3": True, "node4": True}, {"node5": True},
         {"node%d" % i: P for i in range(1, 6)}, 5, 3, (1, 1), None),
        ("new satisfies but not all desired healthy", 1, 2, {"node1": True},
         {"node2": True, "node3": True}, {"node1": P, "node2": P, "node3": C}, 3, 1,
         (1, 1), None),
        ("midway healthy migration from zero", 0, 1, {}, {"node3": True}, {"node3": P}, 3, 2,
         (0, 1), None),
        ("midway healthy migration from zero when new satisfies", 0, 2, {},
         {"node2": True, "node3": True}, {"node2": P, "node3": P}, 3, 2, (0, 1), None),
    ]

    def test_shouldRoll(self):
        for (name, oldDesired, newDesired, oldNodes, newNodes, checks, target, minimum, expected,
             p2) in self.STEPS:
            fleet, roll = self.fleet(oldDesired, newDesired, oldNodes, newNodes, checks, target,
                                     minimum)
            snapshot = fleet.snapshot()
            result = step(roll, snapshot, fleet.now)
            if isinstance(result, Plan):
                self.assertIn("move", result.reason, name)
                after = Snapshot.fromEntries(dict(snapshot.entries, **{
                    c.key: Entry(c.key, c.value, 0) for c in result.changes}))
                got = (oldDesired - after.rc("old").replicas_desired,
                       after.rc("new").replicas_desired - newDesired)
            else:
                self.assertIsInstance(result, Wait, name)
                got = (0, 0)
            self.assertEqual(got, expected, name)
            if p2 is not None:
                self.assertEqual(rollAlgorithm(
                    min(oldDesired, len([n for n, real in oldNodes.items()
                                         if real and checks.get(n) == "passing"])),
                    len([n for n, real in newNodes.items() if real and checks.get(n) == "passing"]),
                    oldDesired, newDesired, target, minimum), p2, name)
