"""
Rolling updates: P2's rollAlgorithm (its own test table, ported), and rolls
run against a simulated fleet to the end, checking after every round that
healthy pods never fall below the minimum and that the new RC takes the old
one's pods over in place (nothing unscheduled, one new schedule per node),
also when the orchestrator is killed mid-roll; plus P2's known deadlocks
(ineligible nodes, a known-bad version at minimum 0) and auto-rollback.
"""

import random

from twisted.trial import unittest

from p2twisted.errors import UsageError, VersionConflict
from p2twisted.orchestrate import roll as rollmodule
from p2twisted.orchestrate.plan import Done, Plan, Schedule, Unschedule, Wait
from p2twisted.orchestrate.roll import createRoll, rollAlgorithm, step
from p2twisted.store import keys
from p2twisted.store.common import Check

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
        self.assertIn("below min_healthy 2", result.reason)
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
        A roll whose new RC was deleted ends; a roll whose record is gone is
        done.
        """
        fleet = self.fleet()
        roll, _ = self.start(fleet, 2)
        fleet.run(fleet.store.delete(keys.replicationController("new")))
        plan = step(roll, fleet.snapshot(), fleet.now)
        self.assertIsInstance(plan, Plan)
        self.assertIn("gone", plan.reason)
        fleet.run(fleet.planner.apply(plan))
        self.assertIsInstance(step(roll, fleet.snapshot(), fleet.now), Done)


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
