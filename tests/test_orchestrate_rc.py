"""
A replication controller's decisions, run against a simulated fleet until
they converge: exactly C{replicas_desired} eligible nodes run the manifest,
one pod per node, labelled; placement spreads by fewest pods then name;
ineligible nodes go first when over the count, and only once a replacement
is healthy; drift is rewritten; disabled changes nothing; a node whose agent
is down keeps its pod while a replacement runs elsewhere.
"""

from twisted.trial import unittest

from p2twisted.errors import UsageError, VersionConflict
from p2twisted.orchestrate import rc as rcmodule
from p2twisted.orchestrate.plan import Plan, Schedule, Unschedule
from p2twisted.store import keys
from p2twisted.store.common import Check

from tests.orchfleet import Fleet, checkPodInvariants, healthyCount, manifest


def nodesOf(snapshot, rcId):
    return [n for n, pod in snapshot.podsOf(rcId)]


class DecideTableTests(unittest.TestCase):
    """
    Table: a fleet, an RC, and where its pods end up.
    """

    TABLE = [
        # (what, nodes {name: labels}, rc kwargs, expected nodes, expected shortfall)
        ("scale up picks eligible nodes by name",
         {"a": {"tier": "web"}, "b": {"tier": "web"}, "c": {"tier": "web"}, "d": {}},
         dict(replicas=2, selector="tier=web"), ["a", "b"], 0),
        ("empty selector: every node in the universe, labeled or not",
         {"a": {}, "b": {"x": "1"}, "c": {}},
         dict(replicas=3, selector=""), ["a", "b", "c"], 0),
        ("!tier matches unlabeled nodes",
         {"a": {"tier": "web"}, "b": {}, "c": {}},
         dict(replicas=2, selector="!tier"), ["b", "c"], 0),
        ("too few eligible nodes: schedules what it can, reports the shortfall",
         {"a": {"tier": "web"}, "b": {"tier": "web"}, "c": {}},
         dict(replicas=4, selector="tier=web"), ["a", "b"], 2),
        ("zero replicas schedules nothing",
         {"a": {}}, dict(replicas=0), [], 0),
    ]

    def test_table(self):
        for what, nodes, kwargs, expected, shortfall in self.TABLE:
            fleet = Fleet(self, nodes)
            fleet.checks.append(checkPodInvariants)
            rc = fleet.putRC("rc", **kwargs)
            first = rcmodule.decide(rc, fleet.snapshot())
            self.assertEqual(first.shortfall, shortfall, what)
            if shortfall:
                self.assertIn("%d short of" % (shortfall,), first.reason)
            fleet.converge()
            snapshot = fleet.snapshot()
            self.assertEqual(nodesOf(snapshot, "rc"), expected, what)
            for node in expected:
                self.assertEqual(snapshot.podLabels(node, "web"),
                                 {"pod_id": "web", "replication_controller_id": "rc"}, what)
                self.assertEqual(snapshot.intentSha(node, "web"), rc.sha, what)


class DecideTests(unittest.TestCase):

    def fleet(self, nodes=("a", "b", "c", "d"), **kw):
        fleet = Fleet(self, {n: {"tier": "web"} for n in nodes}, **kw)
        fleet.checks.append(checkPodInvariants)
        return fleet

    def test_spread(self):
        """
        New pods go to the nodes with the fewest pods first, then by name;
        the pod labels carry the RC's pod_labels too.
        """
        fleet = self.fleet()
        for node in ("a", "b"):
            fleet.run(fleet.store.put(keys.intent(node, "other"), manifest(9).replace(
                b"id: web", b"id: other")))
        fleet.putRC("rc", replicas=3, pod_labels={"team": "x"})
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(nodesOf(snapshot, "rc"), ["a", "c", "d"])
        self.assertEqual(snapshot.podLabels("c", "web")["team"], "x")

    def test_scaleDownOrder(self):
        """
        Over the count, ineligible nodes go first, then unhealthy ones, then
        by name from the end.
        """
        fleet = self.fleet(nodes=("a", "b", "c", "d", "e"))
        fleet.putRC("rc", replicas=5, selector="tier=web")
        fleet.converge()
        fleet.setLabels("b", {})
        fleet.health = lambda node, pod, sha: "critical" if node == "d" else "passing"
        fleet.settle()
        fleet.putRC("rc", replicas=2, selector="tier=web")
        plan = rcmodule.decide(fleet.snapshot().rc("rc"), fleet.snapshot())
        self.assertEqual([c.node for c in plan.unscheduled()], ["b", "d", "e"])
        fleet.converge()
        self.assertEqual(nodesOf(fleet.snapshot(), "rc"), ["a", "c"])
        self.assertIsNotNone(fleet.snapshot().marker("b"), "unscheduling keeps the marker")

    def test_labelChangeMovesPodAfterReplacementHealthy(self):
        """
        A node that stops matching the selector keeps its pod until a
        replacement on an eligible node is healthy; healthy pods never fall
        below the desired count meanwhile.
        """
        fleet = self.fleet(nodes=("a", "b", "c"))
        fleet.putRC("rc", replicas=2, selector="tier=web")
        fleet.converge()
        self.assertEqual(nodesOf(fleet.snapshot(), "rc"), ["a", "b"])
        fleet.checks.append(lambda f, s: self.assertGreaterEqual(healthyCount(s), 2))
        fleet.health = lambda node, pod, sha: "critical" if node == "c" else "passing"
        fleet.setLabels("b", {"tier": "db"})
        fleet.converge()
        self.assertEqual(nodesOf(fleet.snapshot(), "rc"), ["a", "b", "c"],
                         "b keeps its pod while c's is unhealthy")
        fleet.health = lambda node, pod, sha: "passing"
        fleet.converge()
        self.assertEqual(nodesOf(fleet.snapshot(), "rc"), ["a", "c"])

    def test_drift(self):
        """
        Intent that drifted from the RC's manifest, or lost its labels, is
        rewritten; ineligible nodes' drift is left for their replacement.
        """
        fleet = self.fleet(nodes=("a", "b", "c"))
        rc = fleet.putRC("rc", replicas=3)
        fleet.converge()
        fleet.run(fleet.store.put(keys.intent("a", "web"), manifest(2)))
        fleet.run(fleet.store.put(keys.label("pod", "b/web"),
                                  b'{"pod_id":"web","replication_controller_id":"rc","x":"1"}'))
        plan = rcmodule.decide(rc, fleet.snapshot())
        self.assertEqual([c.node for c in plan.scheduled()], ["a"],
                         "extra labels alone are not drift")
        fleet.converge()
        self.assertEqual(fleet.snapshot().intentSha("a", "web"), rc.sha)

    def test_disabled(self):
        """
        A disabled RC changes nothing, not even drift or a scale down.
        """
        fleet = self.fleet()
        fleet.putRC("rc", replicas=2)
        fleet.converge()
        fleet.run(fleet.store.put(keys.intent("a", "web"), manifest(2)))
        rc = fleet.putRC("rc", replicas=0, disabled=True)
        plan = rcmodule.decide(rc, fleet.snapshot())
        self.assertEqual(plan.changes, ())
        self.assertIn("disabled", plan.reason)

    def test_agentDown(self):
        """
        A node whose agent is down keeps its pod (its intent is never
        removed while it is down); the RC places a replacement on a node
        whose agent is up, and trims back to the desired count once the
        node returns.
        """
        fleet = self.fleet(nodes=("a", "b", "c"))
        fleet.putRC("rc", replicas=2)
        fleet.converge()
        fleet.down.add("a")
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(nodesOf(snapshot, "rc"), ["a", "b", "c"])
        self.assertIsNotNone(snapshot.intent("a", "web"))
        self.assertEqual(fleet.planner.changes(Unschedule), [])
        fleet.down.clear()
        fleet.converge()
        self.assertEqual(len(nodesOf(fleet.snapshot(), "rc")), 2)

    def test_noAgentsAtAll(self):
        """
        With no agent up anywhere (none started yet, or all unreachable),
        every node counts as up: nothing is replaced en masse.
        """
        fleet = self.fleet(nodes=("a", "b", "c"), agents=False)
        fleet.putRC("rc", replicas=2)
        fleet.converge()
        self.assertEqual(nodesOf(fleet.snapshot(), "rc"), ["a", "b"])
        fleet.putRC("rc", replicas=1)
        fleet.converge()
        self.assertEqual(nodesOf(fleet.snapshot(), "rc"), ["a"])

    def test_othersPodUntouched(self):
        """
        A node already running the pod id for someone else (a person's
        p2 schedule, another enabled RC) is not a candidate: one pod per node.
        """
        fleet = self.fleet(nodes=("a", "b", "c"))
        fleet.run(fleet.store.put(keys.intent("a", "web"), manifest(7)))
        fleet.putRC("rc1", replicas=1)
        fleet.putRC("rc2", version=2, replicas=2)
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.intent("a", "web").value, manifest(7))
        self.assertEqual(sorted(nodesOf(snapshot, "rc1") + nodesOf(snapshot, "rc2")), ["b", "c"])
        plans = [rcmodule.decide(snapshot.rc(i), snapshot) for i in ("rc1", "rc2")]
        self.assertEqual(sum(p.shortfall for p in plans), 1)

    def test_fencing(self):
        """
        A plan decided over an RC record that has since changed fails at the
        fence and writes nothing.
        """
        fleet = self.fleet()
        rc = fleet.putRC("rc", replicas=2)
        snapshot = fleet.snapshot()
        plan = rcmodule.decide(rc, snapshot)
        fence = [Check(rc.key, snapshot.version(rc.key))]
        fleet.putRC("rc", replicas=0)
        fleet.test.failureResultOf(fleet.planner.apply(plan, fence), VersionConflict)
        self.assertEqual(fleet.snapshot().podsOf("rc"), [])

    def test_idempotent(self):
        """
        Deciding again over a converged fleet plans nothing.
        """
        fleet = self.fleet()
        rc = fleet.putRC("rc", replicas=3)
        fleet.converge()
        plan = rcmodule.decide(rc, fleet.snapshot())
        self.assertEqual(plan, Plan(reason="converged"))
        self.assertEqual(len(fleet.planner.changes(Schedule)), 3)


class ChangeTests(unittest.TestCase):
    """
    A person's changes to RCs: plans with audit events, refused with one
    line when they cannot be made.
    """

    def setUp(self):
        self.fleet = Fleet(self, {"a": {}, "b": {}})

    def apply(self, plan):
        self.fleet.run(self.fleet.planner.apply(plan))
        return [(e.kind, e.id, e.action) for e in plan.events]

    def test_lifecycle(self):
        from p2twisted.records.controllers import ReplicationController
        rc = ReplicationController("rc", manifest(1), 2)
        self.assertEqual(self.apply(rcmodule.createRC(self.fleet.snapshot(), rc)),
                         [("replication_controller", "rc", "create")])
        self.assertRaises(UsageError, rcmodule.createRC, self.fleet.snapshot(), rc)
        e = self.assertRaises(UsageError, rcmodule.deleteRC, self.fleet.snapshot(), "rc")
        self.assertIn("--force", str(e))
        self.assertEqual(self.apply(rcmodule.scaleRC(self.fleet.snapshot(), "rc", 0))[0][2],
                         "scale")
        self.assertEqual(self.fleet.snapshot().rc("rc").replicas_desired, 0)
        self.apply(rcmodule.setDisabled(self.fleet.snapshot(), "rc", True))
        self.assertTrue(self.fleet.snapshot().rc("rc").disabled)
        self.apply(rcmodule.setDisabled(self.fleet.snapshot(), "rc", False))
        self.apply(rcmodule.deleteRC(self.fleet.snapshot(), "rc"))
        self.assertIsNone(self.fleet.snapshot().rc("rc"))
        self.assertRaises(UsageError, rcmodule.scaleRC, self.fleet.snapshot(), "rc", 1)

    def test_forceDelete(self):
        self.fleet.putRC("rc", replicas=2)
        plan = rcmodule.deleteRC(self.fleet.snapshot(), "rc", force=True)
        self.assertTrue(plan.events[0].details["forced"])
        self.apply(plan)
        self.assertIsNone(self.fleet.snapshot().rc("rc"))

    def test_inRollRefused(self):
        from p2twisted.orchestrate.roll import createRoll
        self.fleet.putRC("old", replicas=2)
        self.fleet.putRC("new", version=2)
        self.apply(createRoll(self.fleet.snapshot(), "old", "new", 1)[1])
        for call in (lambda s: rcmodule.scaleRC(s, "old", 3),
                     lambda s: rcmodule.setDisabled(s, "new", True),
                     lambda s: rcmodule.deleteRC(s, "new", force=True)):
            e = self.assertRaises(UsageError, call, self.fleet.snapshot())
            self.assertIn("roll new", str(e))

    def test_staleChange(self):
        """
        A change decided over a record that changed since fails.
        """
        self.fleet.putRC("rc", replicas=2)
        plan = rcmodule.scaleRC(self.fleet.snapshot(), "rc", 3)
        self.fleet.putRC("rc", replicas=5)
        self.failureResultOf(self.fleet.planner.apply(plan), VersionConflict)
        self.assertEqual(self.fleet.snapshot().rc("rc").replicas_desired, 5)
