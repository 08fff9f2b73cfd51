"""
A daemon set's decisions over snapshots, run against a simulated fleet
(L{tests.dsfleet.DSFleet}: the agents played by L{harness.settleAgents},
plans applied by a L{RecordingPlanner}) until they converge: the pod on
every matching node and only there, new nodes at C{rate} and at most
C{parallel} starting at once, a new manifest replaced node by node never
below C{min_health}, halted by a node's timeout; and the failsafes: a
selector matching nothing unschedules nothing, a contending daemon set
disables itself naming the other, no orphan cleanup on an empty listing.
"""

from twisted.trial import unittest

from p2twisted.orchestrate import daemonset, rc as rcmodule
from p2twisted.orchestrate.daemonset import ORPHAN_GRACE, Progress, decide
from p2twisted.orchestrate.plan import Plan, Schedule, Unschedule, Wait
from p2twisted.errors import VersionConflict
from p2twisted.labels import encodeLabels
from p2twisted.records.controllers import ReplicationController
from p2twisted.store import keys

from tests.dsfleet import DSFleet
from tests.orchfleet import healthyCount, manifest


def placed(snapshot, dsId="ds"):
    return [n for n, pod in snapshot.podsOfDaemonSet(dsId)]


def versions(fleet, snapshot, nodes):
    """@return: C{{node: version}} of the intent on C{nodes}."""
    shas = {fleet.sha(v): v for v in (1, 2, 3)}
    return {n: shas.get(snapshot.intentSha(n, "web")) for n in nodes}


class PlacementTableTests(unittest.TestCase):
    """
    Table: a fleet, a daemon set's selector, and the nodes it ends on.
    """

    TABLE = [
        ("every node matching, by name", {"a": {"tier": "web"}, "b": {"tier": "web"}, "c": {}},
         "tier=web", ["a", "b"]),
        ("empty selector: every node, labelled or not", {"a": {}, "b": {"x": "1"}, "c": {}},
         "", ["a", "b", "c"]),
        ("!tier matches unlabelled nodes", {"a": {"tier": "web"}, "b": {}, "c": {}},
         "!tier", ["b", "c"]),
        ("set selector", {"a": {"az": "1"}, "b": {"az": "2"}, "c": {"az": "3"}},
         "az in (1,3)", ["a", "c"]),
    ]

    def test_table(self):
        for what, nodes, selector, expected in self.TABLE:
            fleet = DSFleet(self, nodes)
            ds = fleet.putDS("ds", node_selector=selector)
            fleet.play()
            snapshot = fleet.snapshot()
            self.assertEqual(placed(snapshot), expected, what)
            for node in expected:
                self.assertEqual(snapshot.podLabels(node, "web"),
                                 {"pod_id": "web", "daemon_set_id": "ds"}, what)
                self.assertEqual(snapshot.intentSha(node, "web"), ds.sha, what)
            self.assertEqual(fleet.last("ds").reason, "converged: %d node(s)" % (len(expected),))


class RemovalRateTableTests(unittest.TestCase):
    """
    Table: a set on C{count} nodes with C{parallel}, the nodes that stop
    matching, and how many lose the pod in each decision that removes
    any: never more than C{parallel} (a mistyped selector that still
    matches a node takes the pod from the others a few at a time).
    """

    TABLE = [
        ("5 leave, parallel 2: two per decision", 6, 2, 5, [2, 2, 1]),
        ("3 leave, parallel 1: one per decision", 4, 1, 3, [1, 1, 1]),
        ("2 leave, parallel 50: both at once", 3, 50, 2, [2]),
        ("4 leave, parallel 4: all at once", 5, 4, 4, [4]),
    ]

    def test_table(self):
        for what, count, parallel, leave, expected in self.TABLE:
            nodes = {"n%d" % (i,): {"tier": "web"} for i in range(1, count + 1)}
            fleet = DSFleet(self, nodes)
            fleet.putDS("ds", node_selector="tier=web", parallel=parallel)
            fleet.play()
            before = len(fleet.outcomes["ds"])
            gone = sorted(nodes)[:leave]
            for node in gone:
                fleet.setLabels(node, {"tier": "db"})
            fleet.play()
            removals = [len(o.unscheduled()) for o in fleet.outcomes["ds"][before:]
                        if isinstance(o, Plan) and o.unscheduled()]
            self.assertEqual(removals, expected, what)
            self.assertEqual(placed(fleet.snapshot()), sorted(nodes)[leave:], what)

    def test_saysHowManyWait(self):
        """The decision that removes C{parallel} nodes says how many more wait."""
        fleet = DSFleet(self, {"n%d" % (i,): {"tier": "web"} for i in range(1, 5)})
        fleet.putDS("ds", node_selector="tier=web", parallel=1)
        fleet.play()
        for node in ("n1", "n2", "n3"):
            fleet.setLabels(node, {})
        snapshot = fleet.snapshot()
        ds = snapshot.daemonSet("ds")
        progress = daemonset.advance(fleet.progress["ds"], ds, snapshot,
                                     Wait("seen"), fleet.now)
        outcome = decide(ds, snapshot, fleet.now + daemonset.LEAVE_GRACE, progress)
        self.assertEqual(outcome.unscheduled(), [Unschedule("n1", "web")])
        self.assertIn("unschedule n1; 2 more to unschedule (parallel 1)", outcome.reason)


class DecideTests(unittest.TestCase):

    def fleet(self, count=4, **kw):
        return DSFleet(self, {"n%d" % (i,): {"tier": "web"} for i in range(1, count + 1)}, **kw)

    def keepHealthy(self, fleet, count):
        """
        Have new pods warm up (critical at the agents' first look) and check
        that every state the fleet goes through after has C{count} passing.
        """
        fleet.warmup = True
        fleet.settle()  # (the warmup's first look: critical)
        fleet.settle()
        fleet.checks.append(lambda f, s: self.assertGreaterEqual(healthyCount(s), count))

    def test_rate(self):
        """
        With C{rate}, one node starts at a time, C{rate} seconds apart: the
        decision waits until then.
        """
        fleet = self.fleet(3)
        fleet.putDS("ds", rate=30)
        starts = []
        for _ in range(3):
            fleet.converge()
            starts.append((fleet.now, placed(fleet.snapshot())))
            wait = fleet.last("ds")
            if isinstance(wait, Wait) and wait.at is not None:
                self.assertGreater(wait.at, fleet.now)
                fleet.now = wait.at
        self.assertEqual([s[1] for s in starts], [["n1"], ["n1", "n2"], ["n1", "n2", "n3"]])
        self.assertGreaterEqual(starts[1][0] - starts[0][0], 30)
        self.assertGreaterEqual(starts[2][0] - starts[1][0], 30)

    def test_rateAfterLostProgress(self):
        """
        A controller that applied a start but died before its status kept
        the progress: its successor, finding a node starting that the
        progress does not know, takes it for just started and waits
        C{rate} before the next start.
        """
        fleet = self.fleet(3)
        fleet.warmup = True
        fleet.putDS("ds", rate=60)
        snapshot = fleet.snapshot()
        fleet.run(fleet.planner.apply(decide(snapshot.daemonSet("ds"), snapshot, fleet.now)))
        fleet.settle()
        fleet.now += 5
        snapshot = fleet.snapshot()
        ds = snapshot.daemonSet("ds")
        outcome = decide(ds, snapshot, fleet.now, Progress())
        self.assertIsInstance(outcome, Wait)
        self.assertEqual(outcome.at, fleet.now + 60)
        progress = daemonset.advance(Progress(), ds, snapshot, outcome, fleet.now)
        self.assertEqual(progress.last, fleet.now)
        self.assertIsInstance(decide(ds, snapshot, fleet.now + 59, progress), Wait)

    def test_parallel(self):
        """
        At most C{parallel} nodes whose new pod is not yet healthy at once.
        """
        fleet = self.fleet(5)
        fleet.warmup = True
        fleet.putDS("ds", parallel=2)

        def check(fleet, snapshot):
            found = daemonset.Survey(snapshot.daemonSet("ds"), snapshot)
            self.assertLessEqual(len(found.inflight), 2)
        fleet.checks.append(check)
        snapshot = fleet.snapshot()
        first = decide(snapshot.daemonSet("ds"), snapshot, fleet.now)
        self.assertEqual([c.node for c in first.scheduled()], ["n1", "n2"])
        fleet.play()
        self.assertEqual(placed(fleet.snapshot()), ["n1", "n2", "n3", "n4", "n5"])

    def test_labelChangeAddsAndRemoves(self):
        """
        A node that starts matching gets the pod; one that stops matching
        loses it (its node marker stays).
        """
        fleet = self.fleet(3)
        fleet.putDS("ds", node_selector="tier=web")
        fleet.play()
        fleet.setLabels("n4", {"tier": "web"})
        fleet.setLabels("n2", {"tier": "db"})
        fleet.play()
        snapshot = fleet.snapshot()
        self.assertEqual(placed(snapshot), ["n1", "n3", "n4"])
        self.assertIsNone(snapshot.intent("n2", "web"))
        self.assertIsNotNone(snapshot.marker("n2"))

    def test_replaceNodeByNodeKeepsMinHealth(self):
        """
        A new manifest replaces the pod under C{min_health}: 75% of 4 must
        stay healthy, so one node at a time (however large C{parallel}), and
        every state the fleet goes through has 3 pods passing.
        """
        fleet = self.fleet(4)
        fleet.putDS("ds", min_health=75)
        fleet.play()
        self.keepHealthy(fleet, 3)
        fleet.putDS("ds", version=2, min_health=75)
        snapshot = fleet.snapshot()
        self.assertEqual(len(decide(snapshot.daemonSet("ds"), snapshot, fleet.now).scheduled()),
                         1)
        fleet.play()
        snapshot = fleet.snapshot()
        self.assertEqual(set(versions(fleet, snapshot, placed(snapshot)).values()), {2})
        replaced = [c.node for p in fleet.planner.plans if isinstance(p, Plan)
                    for c in p.scheduled() if c.manifest == manifest(2)]
        self.assertEqual(replaced, ["n1", "n2", "n3", "n4"])

    def test_minHealthCountsDownNodes(self):
        """
        A node whose agent is down still counts in the set min_health is a
        percentage of (its pod is not known healthy): with 2 of 4 agents
        down, min_health 50 takes neither healthy pod down.
        """
        fleet = self.fleet(4)
        fleet.putDS("ds", min_health=50)
        fleet.play()
        fleet.down.update(("n3", "n4"))
        fleet.settle()
        fleet.putDS("ds", version=2, min_health=50)
        fleet.play()
        snapshot = fleet.snapshot()
        self.assertEqual(versions(fleet, snapshot, ["n1", "n2", "n3", "n4"]),
                         {"n1": 1, "n2": 1, "n3": 1, "n4": 1})
        self.assertEqual("waiting: 2 node(s) on the old version, 0 to add; 2 healthy of 4, "
                         "min_health 50%", fleet.last("ds").reason)

    def test_silentPodsAreNotFailing(self):
        """
        Pods that report no health at all (the agents restarted, their
        checks not run yet) are not known to be down: they are replaced
        only while enough of the set is known healthy, not for free as
        failing ones are -- with min_health 0, at once.
        """
        fleet = self.fleet(4)
        fleet.putDS("ds", min_health=50)
        fleet.play()
        for key in fleet.run(fleet.store.list(keys.HEALTH)):
            fleet.run(fleet.store.delete(key))
        fleet.putDS("ds", version=2, min_health=50)
        snapshot = fleet.snapshot()
        outcome = decide(snapshot.daemonSet("ds"), snapshot, fleet.now)
        self.assertIsInstance(outcome, Wait)
        self.assertEqual("waiting: 4 node(s) on the old version, 0 to add; 0 healthy of 4, "
                         "min_health 50%", outcome.reason)
        fleet.putDS("ds", version=2)
        snapshot = fleet.snapshot()
        self.assertEqual(len(decide(snapshot.daemonSet("ds"), snapshot, fleet.now).scheduled()),
                         4)

    def test_unhealthyReplacedFirst(self):
        """
        Pods that are not healthy anyway are replaced first, costing no
        health: at min_health 100 they are the only ones replaced.
        """
        fleet = self.fleet(3)
        fleet.putDS("ds", min_health=100)
        fleet.play()
        fleet.health = lambda node, pod, sha: ("critical" if node == "n3" and sha == fleet.sha(1)
                                               else "passing")
        fleet.settle()
        fleet.putDS("ds", version=2, min_health=100)
        fleet.play()
        snapshot = fleet.snapshot()
        self.assertEqual(versions(fleet, snapshot, ["n1", "n2", "n3"]),
                         {"n1": 1, "n2": 1, "n3": 2})
        self.assertEqual("waiting: 2 node(s) on the old version, 0 to add; 3 healthy of 3, "
                         "min_health 100%", fleet.last("ds").reason)

    def test_timeoutHaltsReplacement(self):
        """
        A new pod not healthy C{timeout} seconds after it started halts the
        replacement: the other nodes keep the old version, also long
        after.  Its pod turning healthy lets the replacement go on.
        """
        fleet = self.fleet(3)
        fleet.putDS("ds", parallel=1, timeout=60)
        fleet.play()
        fleet.markBad(2)
        start = fleet.now
        fleet.putDS("ds", version=2, parallel=1, timeout=60)
        fleet.converge()
        wait = fleet.last("ds")
        self.assertIsInstance(wait, Wait)
        self.assertEqual(wait.at, start + 60)
        fleet.play()
        snapshot = fleet.snapshot()
        self.assertEqual(versions(fleet, snapshot, ["n1", "n2", "n3"]),
                         {"n1": 2, "n2": 1, "n3": 1})
        self.assertTrue(fleet.last("ds").reason.startswith(
            "HALTED: the new pod on n1 is not healthy 60s after it started"),
            fleet.last("ds").reason)
        fleet.now += 3600
        fleet.converge()
        self.assertEqual(versions(fleet, fleet.snapshot(), ["n2", "n3"]), {"n2": 1, "n3": 1})
        fleet.bad.clear()
        fleet.play()
        self.assertEqual(set(versions(fleet, fleet.snapshot(), ["n1", "n2", "n3"]).values()),
                         {2})

    def test_noHaltWithoutReplacement(self):
        """
        New pods past their timeout while nothing is being replaced halt
        nothing (new nodes still get the pod): the reason names them and
        does not say HALTED, nor converged.
        """
        fleet = self.fleet(3)
        fleet.markBad(1)
        fleet.putDS("ds", timeout=60)
        fleet.play()
        reason = fleet.last("ds").reason
        self.assertEqual(reason, "not healthy 60s after starting: n1, n2, n3")
        snapshot = fleet.snapshot()
        status = daemonset.status(snapshot.daemonSet("ds"), snapshot, fleet.last("ds"),
                                  fleet.progress["ds"])
        self.assertFalse(status["halted"])

    def test_notConvergedWhileStarting(self):
        """
        Every node has the pod's intent but its new pods are not healthy
        yet: the reason says they are starting, not converged.
        """
        fleet = self.fleet(2)
        fleet.warmup = True
        fleet.putDS("ds")
        snapshot = fleet.snapshot()
        fleet.run(fleet.planner.apply(decide(snapshot.daemonSet("ds"), snapshot, fleet.now)))
        fleet.settle()
        snapshot = fleet.snapshot()
        self.assertEqual(decide(snapshot.daemonSet("ds"), snapshot, fleet.now).reason,
                         "placed on 2 node(s); starting: n1, n2")
        fleet.play()
        self.assertEqual(fleet.last("ds").reason, "converged: 2 node(s)")

    def test_haltOutlivesTheNode(self):
        """
        The halt stays when the node whose pod timed out leaves the set (a
        node by node label wipe): the others keep the old version.
        Disabling and enabling the set goes on without that node.
        """
        fleet = self.fleet(3)
        fleet.putDS("ds", parallel=1, timeout=60, node_selector="tier=web")
        fleet.play()
        fleet.markBad(2)
        fleet.putDS("ds", version=2, parallel=1, timeout=60, node_selector="tier=web")
        fleet.play()
        fleet.setLabels("n1", {})
        fleet.play()
        snapshot = fleet.snapshot()
        self.assertEqual(placed(snapshot), ["n2", "n3"])
        self.assertEqual(versions(fleet, snapshot, ["n2", "n3"]), {"n2": 1, "n3": 1})
        self.assertTrue(fleet.last("ds").reason.startswith("HALTED: the new pod on n1"))
        fleet.bad.clear()
        fleet.putDS("ds", version=2, parallel=1, timeout=60, node_selector="tier=web",
                    disabled=True)
        fleet.play()
        fleet.putDS("ds", version=2, parallel=1, timeout=60, node_selector="tier=web")
        fleet.play()
        self.assertEqual(versions(fleet, fleet.snapshot(), ["n2", "n3"]), {"n2": 2, "n3": 2})

    def test_newManifestAfterHalt(self):
        """
        A halted replacement goes on with the next manifest: the node whose
        pod timed out is replaced first.
        """
        fleet = self.fleet(3)
        fleet.putDS("ds", parallel=1, timeout=60)
        fleet.play()
        fleet.markBad(2)
        fleet.putDS("ds", version=2, parallel=1, timeout=60)
        fleet.play()
        fleet.putDS("ds", version=3, parallel=1, timeout=60)
        snapshot = fleet.snapshot()
        plan = decide(snapshot.daemonSet("ds"), snapshot, fleet.now,
                      fleet.progress["ds"])
        self.assertEqual([c.node for c in plan.scheduled()], ["n1"])
        fleet.play()
        self.assertEqual(set(versions(fleet, fleet.snapshot(), ["n1", "n2", "n3"]).values()),
                         {3})

    def test_zeroMatchHolds(self):
        """
        Failsafe: a selector that matches no node at all (the node labels
        wiped, say) unschedules nothing, and says so.
        """
        fleet = self.fleet(3)
        fleet.putDS("ds", node_selector="tier=web")
        fleet.play()
        for node in ("n1", "n2", "n3"):
            fleet.setLabels(node, {})
        fleet.play()
        self.assertEqual(placed(fleet.snapshot()), ["n1", "n2", "n3"])
        self.assertEqual(fleet.last("ds").reason, "HOLDING: selector 'tier=web' matches no "
                         "node; unscheduling nothing (3 pod(s) kept)")
        fleet.setLabels("n1", {"tier": "web"})
        fleet.play()
        self.assertEqual(placed(fleet.snapshot()), ["n1"])

    def test_partialWipeSeenFirst(self):
        """
        A wipe of every node's labels seen half-way (on ZooKeeper the
        watches deliver a transaction's writes one by one) removes nothing:
        a node that stops matching loses its pod only once it has been seen
        not matching for LEAVE_GRACE seconds; by then the whole wipe shows,
        and the set holds.
        """
        fleet = self.fleet(3)
        fleet.putDS("ds", node_selector="tier=web")
        fleet.play()
        fleet.setLabels("n1", {})
        snapshot = fleet.snapshot()
        progress = fleet.progress["ds"]
        outcome = decide(snapshot.daemonSet("ds"), snapshot, fleet.now, progress)
        self.assertIsInstance(outcome, Wait)
        self.assertEqual(outcome.at, fleet.now + daemonset.LEAVE_GRACE)
        self.assertIn("leaving: n1", outcome.reason)
        for node in ("n2", "n3"):
            fleet.setLabels(node, {})
        fleet.play()
        self.assertEqual(placed(fleet.snapshot()), ["n1", "n2", "n3"])
        self.assertTrue(fleet.last("ds").reason.startswith("HOLDING"))

    def test_contention(self):
        """
        A second enabled daemon set of the same pod id over overlapping
        nodes disables itself, naming the other in its reason and audit
        event; it never touches the first one's pods.
        """
        fleet = self.fleet(3)
        fleet.putDS("first", node_selector="tier=web")
        fleet.play()
        fleet.putDS("second", node_selector="tier in (web,db)")
        fleet.play()
        snapshot = fleet.snapshot()
        self.assertTrue(snapshot.daemonSet("second").disabled)
        self.assertFalse(snapshot.daemonSet("first").disabled)
        self.assertEqual(placed(snapshot, "first"), ["n1", "n2", "n3"])
        self.assertEqual(placed(snapshot, "second"), [])
        disabling = fleet.outcomes["second"][0]
        self.assertTrue(disabling.reason.startswith("DISABLED: contends with daemon set first"))
        self.assertEqual([(e.action, e.details["other"]) for e in disabling.events],
                         [("contention", "first")])

    def test_contentionRules(self):
        """
        Everything selectors and identical selectors contend whatever the
        nodes; disjoint ones do not; other pod ids and disabled sets never.
        Of two new ones the later id gives way.
        """
        fleet = self.fleet(2)
        fleet.setLabels("n2", {"tier": "db"})
        for other, ds, contends in [
                (dict(node_selector=""), dict(node_selector="tier=nothing"), True),
                (dict(node_selector="x=1"), dict(node_selector="x=1"), True),
                (dict(node_selector="tier=web"), dict(node_selector="tier=db"), False),
                (dict(node_selector="tier=web"), dict(node_selector="tier"), True),
                (dict(node_selector="", disabled=True), dict(node_selector=""), False)]:
            a = fleet.putDS("a", **other)
            b = fleet.putDS("b", **ds)
            snapshot = fleet.snapshot()
            self.assertEqual(daemonset.contender(b, snapshot) is not None, contends, (other, ds))
            outcome = decide(b, snapshot, fleet.now)
            self.assertEqual(isinstance(outcome, Plan) and outcome.reason.startswith("DISABLED"),
                             contends, (other, ds))
            if contends:
                self.assertFalse(isinstance(decide(a, snapshot, fleet.now), Plan)
                                 and decide(a, snapshot, fleet.now).reason.startswith("DISABLED"))

    def test_contentionNeverDisablesBoth(self):
        """
        Two contending sets deciding over snapshots of different moments
        (their pod counts moved in between) may each find itself the one
        to give way; the second disabling to be written fails (the other
        changed since its snapshot), so one stays enabled.
        """
        fleet = self.fleet(3)
        fleet.putDS("a")
        fleet.putDS("b")
        owners = {"n1": "a", "n2": "b", "n3": "b"}

        def label():
            for node, owner in owners.items():
                fleet.run(fleet.store.put(keys.label("pod", node + "/web"), encodeLabels(
                    {"pod_id": "web", "daemon_set_id": owner})))
            return fleet.snapshot()
        before = label()
        owners["n3"] = "a"
        after = label()
        first = decide(before.daemonSet("a"), before, fleet.now)
        second = decide(after.daemonSet("b"), after, fleet.now)
        self.assertTrue(first.reason.startswith("DISABLED: contends with daemon set b"))
        self.assertTrue(second.reason.startswith("DISABLED: contends with daemon set a"))
        fleet.run(fleet.planner.apply(first))
        self.failureResultOf(fleet.planner.apply(second), VersionConflict)
        snapshot = fleet.snapshot()
        self.assertEqual((snapshot.daemonSet("a").disabled, snapshot.daemonSet("b").disabled),
                         (True, False))

    def test_otherControllersPodsUntouched(self):
        """
        A node whose pod an RC's labels claim is left to the RC; one running
        the manifest under no controller is adopted (labelled, no restart).
        """
        fleet = self.fleet(3)
        rc = ReplicationController("rc", manifest(7), 1)
        fleet.run(fleet.store.put(keys.intent("n1", "web"), rc.manifest))
        fleet.run(fleet.store.put(keys.label("pod", "n1/web"), encodeLabels(rc.labelsForPods())))
        fleet.run(fleet.store.put(keys.intent("n2", "web"), manifest(1)))
        fleet.putDS("ds")
        fleet.play()
        snapshot = fleet.snapshot()
        self.assertEqual(placed(snapshot), ["n2", "n3"])
        self.assertEqual(snapshot.intent("n1", "web").value, rc.manifest)
        self.assertIn("1 node(s) run the pod under another controller (n1: replication "
                      "controller rc)", fleet.last("ds").reason)
        self.assertIn("adopt n2", fleet.outcomes["ds"][0].reason)

    def test_takeOverUnderMinHealth(self):
        """
        Pods of the pod id running another manifest under no controller
        (a set deleted without --cascade, then created again with a new
        manifest) are replaced as the set's own old pods are: under
        min_health, not all at once as new nodes.
        """
        fleet = self.fleet(4)
        for node in ("n1", "n2", "n3", "n4"):
            fleet.run(fleet.store.put(keys.intent(node, "web"), manifest(1)))
        self.keepHealthy(fleet, 2)
        fleet.putDS("ds", version=2, min_health=50)
        snapshot = fleet.snapshot()
        plan = decide(snapshot.daemonSet("ds"), snapshot, fleet.now)
        self.assertEqual([c.node for c in plan.scheduled()], ["n1", "n2"])
        self.assertEqual(plan.reason, "replace n1, n2")
        fleet.play()
        self.assertEqual(versions(fleet, fleet.snapshot(), ["n1", "n2", "n3", "n4"]),
                         {"n1": 2, "n2": 2, "n3": 2, "n4": 2})

    def test_rcLeavesDaemonSetPods(self):
        """
        An RC of the daemon set's very manifest does not adopt the set's
        pods (it would take them from the set): it places its own elsewhere.
        """
        fleet = DSFleet(self, {"n1": {"tier": "web"}, "n2": {"tier": "web"}, "n3": {}})
        fleet.putDS("ds", node_selector="tier=web")
        fleet.play()
        rc = fleet.putRC("rc", version=1, replicas=1)
        snapshot = fleet.snapshot()
        plan = rcmodule.decide(rc, snapshot)
        self.assertEqual([c.node for c in plan.scheduled()], ["n3"])

    def test_downAgent(self):
        """
        A node whose agent is down gets its intent (for when it is back)
        but takes no start: a fleet with a dead node still converges.
        """
        fleet = DSFleet(self, {"n1": {}, "n2": {}, "n3": {}}, down=("n3",))
        fleet.putDS("ds", parallel=1, timeout=60)
        fleet.play()
        snapshot = fleet.snapshot()
        self.assertEqual(placed(snapshot), ["n1", "n2", "n3"])
        self.assertEqual(fleet.last("ds").reason, "converged: 2 node(s)")
        fleet.putDS("ds", version=2, parallel=1, timeout=60)
        fleet.play()
        self.assertEqual(versions(fleet, fleet.snapshot(), ["n1", "n2", "n3"]),
                         {"n1": 2, "n2": 2, "n3": 1})

    def test_disabled(self):
        """A disabled daemon set changes nothing."""
        fleet = self.fleet(2)
        fleet.putDS("ds", disabled=True)
        fleet.play()
        self.assertEqual(placed(fleet.snapshot()), [])
        self.assertEqual(fleet.last("ds"), Wait("disabled: no change"))


class OrphanTests(unittest.TestCase):

    def fleetWithOrphans(self):
        fleet = DSFleet(self, {"n1": {}, "n2": {}})
        fleet.putDS("gone")
        fleet.play()
        fleet.run(fleet.store.delete(keys.daemonSet("gone")))
        return fleet

    def test_emptyListingNeverCleansUp(self):
        """
        Failsafe (P2's gap): with no daemon set record listed, no pod is an
        orphan -- an empty listing says nothing about which sets are gone.
        """
        fleet = self.fleetWithOrphans()
        snapshot = fleet.snapshot()
        self.assertEqual(snapshot.daemonSetOwners(), ["gone"])
        self.assertEqual(daemonset.orphanOwners(snapshot), [])

    def test_orphansRemovedAfterGrace(self):
        """
        Pods of a daemon set whose record is gone (while others are
        listed) are unscheduled by the lowest enabled set's controller once
        they have been orphans for ORPHAN_GRACE seconds.
        """
        fleet = self.fleetWithOrphans()
        fleet.setLabels("n1", {"tier": "x"})
        fleet.setLabels("n2", {"tier": "x"})
        fleet.putDS("other", node_selector="tier=none")
        fleet.converge()
        self.assertEqual(placed(fleet.snapshot(), "gone"), ["n1", "n2"])
        fleet.now += ORPHAN_GRACE
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(placed(snapshot, "gone"), [])
        self.assertIsNone(snapshot.intent("n1", "web"))
        self.assertEqual(fleet.progress["other"].orphans, {})


    def test_emptyOwnerIsNoOrphan(self):
        """
        A pod whose daemon_set_id was set to nothing by hand (C{p2 label
        apply pod n1/web daemon_set_id=}: disowned) names no daemon set: it
        is no orphan, and stays.
        """
        fleet = DSFleet(self, {"n1": {}, "n2": {"tier": "x"}})
        fleet.run(fleet.store.put(keys.intent("n1", "web"), manifest(1)))
        fleet.run(fleet.store.put(keys.label("pod", "n1/web"), encodeLabels(
            {"pod_id": "web", "daemon_set_id": ""})))
        fleet.putDS("other", node_selector="tier=x")
        fleet.converge()
        fleet.now += ORPHAN_GRACE
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(daemonset.orphanOwners(snapshot), [])
        self.assertIsNotNone(snapshot.intent("n1", "web"))


class ProgressTests(unittest.TestCase):

    def test_roundTrip(self):
        progress = Progress({"n1": ("abc", 12.5)}, 12.5, {"gone": 3.0}, ("abc", "n1"))
        self.assertEqual(Progress.fromJSON(progress.toJSON()), progress)

    def test_unreadable(self):
        """Unreadable progress is none: the timers start again."""
        for data in ({"started": {"n1": 5}}, {"started": []}, {"last": "x"}, {"halted": 3}):
            self.assertEqual(Progress.fromJSON(data), Progress())

    def test_advanceStampsStarts(self):
        fleet = DSFleet(self, {"n1": {}, "n2": {}})
        fleet.putDS("ds")
        snapshot = fleet.snapshot()
        ds = snapshot.daemonSet("ds")
        plan = decide(ds, snapshot, 50.0)
        progress = daemonset.advance(Progress(), ds, snapshot, plan, 50.0)
        self.assertEqual(progress, Progress({"n1": (ds.sha, 50.0), "n2": (ds.sha, 50.0)}, 50.0))
        self.assertEqual(sorted(type(c).__name__ for c in plan.changes),
                         ["Schedule", "Schedule"])
        self.assertFalse([c for c in plan.changes if isinstance(c, (Unschedule,))])
        self.assertTrue(all(isinstance(c, Schedule) for c in plan.changes))


class SignTableTests(unittest.TestCase):
    """
    Table: a daemon set whose pods' intent holds its manifest (the same SHA)
    in other bytes.  Only a set whose manifest is signed rewrites them, with
    its bytes, on every node at once: no min_health nor parallel budget
    (what runs is the same), even with every pod failing.
    """

    def test_table(self):
        from p2twisted.records.daemonset import DaemonSet
        from tests.test_manifest import sign, sshSign
        plain = manifest(1)
        nodes = ["n1", "n2", "n3", "n4"]
        table = [
            # (what, set's bytes, intent's bytes, rewritten)
            ("signed set, unsigned intent: GPG-signed bytes written", sign(plain), plain, True),
            ("signed set, unsigned intent: SSH-signed bytes written", sshSign(plain), plain,
             True),
            ("signed set, intent signed otherwise: the set's bytes", sshSign(plain),
             sign(plain), True),
            ("signed set, same bytes: converged", sign(plain), sign(plain), False),
            ("unsigned set, signed intent: left alone", plain, sign(plain), False),
            ("unsigned set, reformatted intent: left alone", plain, b"# a comment\n" + plain,
             False),
        ]
        for what, dsBytes, intentBytes, rewritten in table:
            fleet = DSFleet(self, {n: {} for n in nodes})
            # The set ran the intent's bytes; then its record got the set's.
            for data in (intentBytes, dsBytes):
                ds = DaemonSet("ds", "web", data, min_health=75, parallel=1)
                fleet.run(fleet.store.put(ds.key, ds.toBytes()))
                if data is intentBytes:
                    fleet.play()
            fleet.health = lambda node, pod, sha: "critical"
            fleet.settle()
            snapshot = fleet.snapshot()
            plan = decide(ds, snapshot, fleet.now)
            if rewritten:
                self.assertEqual(list(plan.changes), [
                    Schedule(n, "web", dsBytes, ds.labelsForPods()) for n in nodes], what)
                self.assertEqual(plan.reason, "write the signed manifest on n1, n2, n3, n4",
                                 what)
            else:
                self.assertIsInstance(plan, Wait, what)
            fleet.play()
            snapshot = fleet.snapshot()
            for node in nodes:
                self.assertEqual(snapshot.intent(node, "web").value,
                                 dsBytes if rewritten else intentBytes, what)
