"""
A replication controller's decisions, run against a simulated fleet until
they converge: exactly C{replicas_desired} eligible nodes run the manifest,
one pod per node, labelled; placement spreads by fewest pods then name;
ineligible nodes go first when over the count, and only once a replacement
is healthy; drift is rewritten; disabled changes nothing; a node whose agent
is down keeps its pod while a replacement runs elsewhere.
"""

import os
import random

from twisted.trial import unittest

from p2twisted import intent
from p2twisted.errors import VersionConflict
from p2twisted.manifest import parseManifest
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

    def test_wipedLabelsChangeNothing(self):
        """
        Fail safe, never wide: a wiped node-label tree (no node matches the
        selector) unschedules nothing and reports the shortfall; after a
        wiped pod-label tree (the RC sees none of its pods) it adopts the
        pods running its manifest, schedules nothing new, restarts nothing.
        """
        fleet = self.fleet(nodes=("a", "b", "c"))
        rc = fleet.putRC("rc", replicas=2, selector="tier=web")
        fleet.converge()
        before = fleet.snapshot()
        for node in ("a", "b", "c"):
            fleet.run(fleet.store.delete(keys.label("node", node)))
        plan = rcmodule.decide(rc, fleet.snapshot())
        self.assertEqual((plan.changes, plan.shortfall), ((), 2))
        for node in ("a", "b", "c"):
            fleet.setLabels(node, {"tier": "web"})
        for node in ("a", "b"):
            fleet.run(fleet.store.delete(keys.label("pod", node + "/web")))
        plan = rcmodule.decide(rc, fleet.snapshot())
        self.assertEqual([c.node for c in plan.scheduled()], ["a", "b"])
        fleet.converge()
        after = fleet.snapshot()
        self.assertEqual([n for n, _ in after.podsOf("rc")], ["a", "b"])
        for node in ("a", "b"):
            self.assertEqual(before.intent(node, "web").version, after.intent(node, "web").version)

    def test_unreadableNodeLabelsKeepThePod(self):
        """
        A node whose label entry is unreadable (a bad write) is not known to
        have stopped matching: its pod stays, no replacement is scheduled,
        and no new pod goes there.
        """
        fleet = self.fleet(nodes=("a", "b", "c", "d"))
        fleet.putRC("rc", replicas=2, selector="tier=web")
        fleet.converge()
        self.assertEqual(nodesOf(fleet.snapshot(), "rc"), ["a", "b"])
        for node in ("b", "c"):
            fleet.run(fleet.store.put(keys.label("node", node), b"{not json"))
        fleet.converge()
        self.assertEqual(nodesOf(fleet.snapshot(), "rc"), ["a", "b"])
        self.assertEqual(fleet.planner.changes(Unschedule), [])
        fleet.putRC("rc", replicas=3, selector="tier=web")
        fleet.converge()
        self.assertEqual(nodesOf(fleet.snapshot(), "rc"), ["a", "b", "d"])

    def test_adoptsHandScheduledPods(self):
        """
        Pods a person scheduled by hand running the RC's manifest are adopted
        (labelled, not rewritten) before new nodes are used; pods of another
        version, or another RC's, are left alone.
        """
        fleet = self.fleet(nodes=("a", "b", "c", "d"))
        other = fleet.putRC("other", replicas=1, disabled=True)
        fleet.run(fleet.planner.apply(Plan(
            [Schedule("b", "web", other.manifest, other.labelsForPods())],
            snapshot=fleet.snapshot())))
        for node, version in (("c", 1), ("d", 1), ("a", 5)):
            fleet.run(intent.schedule(fleet.store, node, parseManifest(manifest(version))))
        before = fleet.snapshot()
        fleet.putRC("rc", replicas=2)
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.podsOf("other"), [("b", "web")])
        for node in ("c", "d"):
            self.assertEqual(before.intent(node, "web").version, snapshot.intent(node, "web").version)
        self.assertEqual([n for n, _ in snapshot.podsOf("rc")], ["c", "d"])
        self.assertEqual(snapshot.intent("a", "web").value, manifest(5))
        self.assertEqual(fleet.planner.changes(Unschedule), [])

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


class DecideFuzzTests(unittest.TestCase):
    """
    Random fleets and random changes (labels, scale, agents dying and
    returning, pods turning unhealthy): no plan takes healthy pods below the
    desired count, no plan unschedules on a node whose agent is down, and
    every fleet converges to the desired count on eligible nodes (or all the
    eligible nodes there are).
    C{FUZZ_SEEDS=1000} runs more.
    """

    def checkPlan(self, plan, snapshot, rc, what):
        going = {c.node for c in plan.unscheduled()}
        view = rcmodule.PodView(snapshot, rc.podId)
        healthy = {n for n, _ in snapshot.podsOf(rc.id) if view.healthy(n, rc)}
        self.assertGreaterEqual(len(healthy - going), min(rc.replicas_desired, len(healthy)),
                                what)
        self.assertFalse({n for n in going if not view.up(n)}, what)

    def run_(self, seed):
        rng = random.Random(seed)
        names = ["n%d" % i for i in range(rng.randint(3, 8))]
        fleet = Fleet(self, {n: {"tier": rng.choice(["web", "web", "db"])} for n in names})
        fleet.checks.append(checkPodInvariants)
        fleet.putRC("rc", replicas=rng.randint(0, len(names)), selector="tier=web")
        sick = set()
        fleet.health = lambda node, pod, sha: "critical" if node in sick else "passing"
        events = []
        original = fleet.planner.apply

        def checked(plan, fence=()):
            if isinstance(plan, Plan) and plan.changes and plan.snapshot is not None:
                self.checkPlan(plan, plan.snapshot, plan.snapshot.rc("rc"), (seed, events))
            return original(plan, fence)
        fleet.planner.apply = checked
        fleet.converge()
        for _ in range(4):
            event = rng.choice(["label", "label", "scale", "down", "up", "sick", "well"])
            node = rng.choice(names)
            events.append((event, node))
            if event == "label":
                fleet.setLabels(node, {"tier": rng.choice(["web", "db"])})
            elif event == "scale":
                fleet.putRC("rc", replicas=rng.randint(0, len(names)), selector="tier=web")
            elif event == "down":
                fleet.down.add(node)
            elif event == "up":
                fleet.down.discard(node)
            elif event == "sick":
                sick.add(node)
            else:
                sick.discard(node)
            fleet.converge()
        fleet.down.clear()
        sick.clear()
        fleet.converge()
        snapshot = fleet.snapshot()
        rc = snapshot.rc("rc")
        eligible = snapshot.eligible("tier=web")
        placed = [n for n, _ in snapshot.podsOf("rc")]
        what = (seed, events)
        # Short of eligible nodes, an ineligible node keeps its pod (no
        # replacement could be healthy), but never beyond the desired count.
        self.assertEqual(len(set(placed) & set(eligible)), min(rc.replicas_desired, len(eligible)),
                         what)
        self.assertLessEqual(len(placed), rc.replicas_desired, what)
        for node in placed:
            self.assertEqual(snapshot.intentSha(node, "web"), rc.sha, what)

    def test_fuzz(self):
        for seed in range(int(os.environ.get("FUZZ_SEEDS", "60"))):
            self.run_(seed)


class StrayTests(unittest.TestCase):

    def test_podIdChanged(self):
        """
        When an RC's manifest changes its pod id, its pods under the old id
        stay until the new ones are healthy, then go.
        """
        fleet = Fleet(self, {"a": {}, "b": {}})
        fleet.putRC("rc", replicas=2)
        fleet.converge()
        from p2twisted.records.controllers import ReplicationController
        other = ReplicationController("rc", manifest(2).replace(b"id: web", b"id: api"), 2)
        fleet.run(fleet.store.put(other.key, other.toBytes()))
        fleet.health = lambda node, pod, sha: "critical" if pod == "api" else "passing"
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.podsOf("rc"), [("a", "api"), ("a", "web"), ("b", "api"),
                                                 ("b", "web")])
        fleet.health = lambda node, pod, sha: "passing"
        fleet.converge()
        self.assertEqual(fleet.snapshot().podsOf("rc"), [("a", "api"), ("b", "api")])
        self.assertIsNone(fleet.snapshot().intent("a", "web"))

    def test_handLabelledPodIsNoStray(self):
        """
        A pod of another id that a person labelled with the RC's id (a
        label copied, or set for a query) is not the RC's to remove: only a
        pod whose labels are what the RC writes (its own C{pod_id} too)
        counts as a stray.
        """
        fleet = Fleet(self, {"a": {}, "b": {}})
        fleet.putRC("rc", replicas=2)
        db = manifest(3).replace(b"id: web", b"id: db")
        fleet.run(intent.schedule(fleet.store, "a", parseManifest(db)))
        fleet.run(fleet.store.put(keys.label("pod", "a/db"),
                                  b'{"replication_controller_id":"rc"}'))
        fleet.run(intent.schedule(fleet.store, "b", parseManifest(db)))
        fleet.run(fleet.store.put(keys.label("pod", "b/db"),
                                  b'{"pod_id":"web","replication_controller_id":"rc"}'))
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual([n for n, p in snapshot.podsOf("rc") if p == "web"], ["a", "b"])
        self.assertEqual(snapshot.intent("a", "db").value, db)
        self.assertEqual(snapshot.intent("b", "db").value, db)


class SignTableTests(unittest.TestCase):
    """
    Table: an RC whose pods' intent holds its manifest (the same SHA) in
    other bytes -- signed, unsigned, or reformatted.  Only an RC whose
    manifest is signed rewrites them, with its bytes and at once (no health
    gate: what runs is the same).
    """

    def test_table(self):
        from tests.test_manifest import sign, sshSign
        plain = manifest(1)
        reformatted = b"# a comment\n" + plain
        table = [
            # (what, RC's bytes, intent's bytes, rewritten)
            ("signed RC, unsigned intent: GPG-signed bytes written", sign(plain), plain, True),
            ("signed RC, unsigned intent: SSH-signed bytes written", sshSign(plain), plain,
             True),
            ("signed RC, intent signed otherwise: the RC's bytes", sshSign(plain), sign(plain),
             True),
            ("signed RC, same bytes: converged", sign(plain), sign(plain), False),
            ("unsigned RC, signed intent: left alone", plain, sign(plain), False),
            ("unsigned RC, reformatted intent: left alone", plain, reformatted, False),
            ("unsigned RC, same bytes: converged", plain, plain, False),
        ]
        from p2twisted.records.controllers import ReplicationController
        for what, rcBytes, intentBytes, rewritten in table:
            fleet = Fleet(self, {"a": {}, "b": {}})
            fleet.checks.append(checkPodInvariants)
            # The RC ran the intent's bytes; then its record got the RC's.
            first = ReplicationController("rc", intentBytes, 2)
            fleet.run(fleet.store.put(first.key, first.toBytes()))
            fleet.converge()
            rc = ReplicationController("rc", rcBytes, 2)
            fleet.run(fleet.store.put(rc.key, rc.toBytes()))
            # Failing pods: a replacement would wait for health; this does not.
            fleet.health = lambda node, pod, sha: "critical"
            fleet.settle()
            plan = rcmodule.decide(rc, fleet.snapshot())
            expected = ([Schedule(n, "web", rcBytes, rc.labelsForPods()) for n in ("a", "b")]
                        if rewritten else [])
            self.assertEqual(list(plan.changes), expected, what)
            self.assertEqual(plan.reason, "rewrite drifted a, b" if rewritten else "converged",
                             what)
            fleet.converge()
            snapshot = fleet.snapshot()
            for node in ("a", "b"):
                self.assertEqual(snapshot.intent(node, "web").value,
                                 rcBytes if rewritten else intentBytes, what)

