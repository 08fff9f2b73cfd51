"""
The daemon set farm at work (C{twistd p2-orchestrator}'s service, farm kind
C{ds}) on one store with simulated agents (L{harness.settleAgents}), driven
by the store's watches and a L{task.Clock}: a daemon set placed everywhere
and replaced never below C{min_health}, status and audit; the contention
failsafe disabling the second set loudly; a halted replacement staying
halted when another orchestrator takes the set over; an emptied tree
holding still.
"""

import json

from twisted.internet import defer
from zope.interface.verify import verifyObject

from p2twisted.errors import StoreUnavailable
from p2twisted.labels import encodeLabels

from p2twisted.manifest import parseManifest
from p2twisted.orchestrate import dsedit, edit, harness
from p2twisted.orchestrate.controllers import FARMS, SnapshotReader
from p2twisted.orchestrate.daemonset import ORPHAN_GRACE, Progress
from p2twisted.orchestrate.dscontroller import DSController
from p2twisted.orchestrate.farm import IController
from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.records.daemonset import DaemonSet
from p2twisted.store import keys
from tests.dsfleet import TREES
from tests.orchfleet import manifest
from tests.test_orchestrate_farm import capture
from tests.test_orchestrate_farms import TTL, FarmsTestCase


def sha(version):
    return parseManifest(manifest(version)).sha()


class DSFarmTests(FarmsTestCase):

    def putDS(self, dsId, version=1, **kw):
        ds = DaemonSet(dsId, "web", manifest(version), **kw)
        self.result(self.admin.put(ds.key, ds.toBytes()))
        return ds

    def snapshot(self):
        return self.result(Snapshot.read(self.admin, TREES))

    def versions(self, snapshot):
        names = {sha(v): v for v in (1, 2)}
        return {n: names.get(snapshot.intentSha(n, "web")) for n in ("n1", "n2", "n3")}

    def test_interface(self):
        session = self.result(self.admin.session(15.0))
        lock = self.result(session.lock(keys.lock("ds", "web"), b"me"))
        controller = FARMS["ds"].factory(self.admin, self.clock, SnapshotReader(self.admin))(
            "web", lock)
        self.assertIsInstance(controller, DSController)
        self.assertTrue(verifyObject(IController, controller))
        self.assertEqual((FARMS["ds"].tree, controller.statusKey),
                         (keys.DAEMON_SETS, keys.status("ds", "web")))

    def test_placeAndReplace(self):
        """
        A daemon set runs on every node; a new manifest replaces it node by
        node, never fewer than 2 of 3 healthy (min_health 60); its status
        and the audit log say what it did.
        """
        self.orchestrator()
        self.putDS("web", min_health=60)
        self.settle()
        self.assertEqual(self.running(self.snapshot(), 1), ["n1", "n2", "n3"])
        status = self.status("ds", "web")
        self.assertEqual({k: status[k] for k in ("desired", "current", "updated", "healthy",
                                                  "halted", "reason", "error")},
                         {"desired": 3, "current": 3, "updated": 3, "healthy": 3,
                          "halted": False, "reason": "converged: 3 node(s)", "error": None})
        self.putDS("web", version=2, min_health=60)

        def twoHealthy(snapshot):
            self.assertGreaterEqual(len(self.running(snapshot, 1) + self.running(snapshot, 2)),
                                    2)
        self.settle(check=twoHealthy)
        self.assertEqual(self.running(self.snapshot(), 2), ["n1", "n2", "n3"])
        self.assertEqual([(e.kind, e.action, e.details["nodes"]) for e in self.events()],
                         [("daemon_set", "schedule", ["n1", "n2", "n3"]),
                          ("daemon_set", "rewrite", ["n1"]), ("daemon_set", "rewrite", ["n2"]),
                          ("daemon_set", "rewrite", ["n3"])])

    def test_contentionDisablesTheSecondLoudly(self):
        """
        A second daemon set of the same pod over the same nodes is disabled:
        its record says so, its status and a critical log line name the
        first, the audit log has the event; the first keeps its pods.
        """
        critical = capture(self, "critical")
        self.orchestrator()
        self.putDS("web")
        self.settle()
        self.putDS("web-copy", version=2, node_selector="tier=web")
        self.settle()
        snapshot = self.snapshot()
        self.assertTrue(snapshot.daemonSet("web-copy").disabled)
        self.assertEqual(self.running(snapshot, 1), ["n1", "n2", "n3"])
        reason = self.status("ds", "web-copy")["reason"]
        self.assertIn("DISABLED: contends with daemon set web", reason)
        self.assertIn("contends with daemon set web", critical[0]["reason"])
        (event,) = [e for e in self.events() if e.action == "contention"]
        self.assertEqual((event.id, event.details["other"]), ("web-copy", "web"))

    def test_haltSurvivesTakeover(self):
        """
        A replacement halted by a node's timeout stays halted when the
        orchestrator running it dies and another takes the set over: the
        successor reads the start times back from the status, and replaces
        no other node.
        """
        first = self.orchestrator()
        self.putDS("web")
        self.settle()
        second = self.orchestrator()
        self.health = lambda node, pod, s: ("critical" if (node, s) == ("n1", sha(2))
                                            else "passing")
        self.putDS("web", version=2, parallel=2, rate=5, timeout=3)
        for _ in range(6):
            self.result(harness.settleAgents(self.admin, self.health))
            self.clock.advance(1)
        self.assertTrue(self.status("ds", "web")["halted"], self.status("ds", "web"))
        self.assertEqual(self.versions(self.snapshot()), {"n1": 2, "n2": 1, "n3": 1})
        self.assertEqual(sorted(first.farms["ds"].claims), ["web"])
        first.store.die()
        self.clock.advance(TTL)
        self.assertEqual(sorted(second.farms["ds"].claims), ["web"])
        self.settle()
        self.assertEqual(self.versions(self.snapshot()), {"n1": 2, "n2": 1, "n3": 1})
        status = self.status("ds", "web")
        self.assertTrue(status["halted"])
        self.assertIn("HALTED: the new pod on n1", status["reason"])

    def test_cascadeDeleteOfTheLastIsCalm(self):
        """
        C{p2 ds delete --cascade} of the last daemon set: its pods are
        unscheduled and the farm releases it with no FAILSAFE alarm.
        """
        critical = capture(self, "critical")
        farm = self.orchestrator().farms["ds"]
        self.putDS("web")
        self.settle()
        self.result(edit.change(self.admin, lambda s: dsedit.deleteDS(s, "web", True), 0,
                                TREES))
        self.clock.advance(120)
        self.settle()
        self.assertEqual((farm.claims, farm.failsafe, critical), ({}, False, []))
        self.assertEqual(self.running(self.snapshot(), 1), [])

    def test_unreadableStatusReadAgain(self):
        """
        A successor that cannot read the last status (a store error) does
        not take that for no progress: its reconcile fails (the farm
        retries) and the next one reads the halt back; no other node is
        replaced meanwhile.
        """
        self.putDS("web", version=2, parallel=3, timeout=3)
        halted = Progress({}, None, {}, (sha(2), "n1"))
        self.result(self.admin.put(keys.status("ds", "web"),
                                   json.dumps({"progress": halted.toJSON()}).encode()))
        self.result(self.admin.put(keys.intent("n1", "web"), manifest(2)))
        for node in ("n2", "n3"):
            self.result(self.admin.put(keys.intent(node, "web"), manifest(1)))
        for node in ("n1", "n2", "n3"):
            self.result(self.admin.put(keys.label("pod", node + "/web"), encodeLabels(
                {"pod_id": "web", "daemon_set_id": "web"})))
        self.result(harness.settleAgents(self.admin, lambda node, pod, s: (
            "critical" if node == "n1" else "passing")))
        failures = [StoreUnavailable(None, "memory")]
        admin = self.admin

        class Flaky(object):
            def __getattr__(self, name):
                return getattr(admin, name)

            def get(self, key):
                if failures:
                    return defer.fail(failures.pop())
                return admin.get(key)
        session = self.result(self.admin.session(15.0))
        lock = self.result(session.lock(keys.lock("ds", "web"), b"me"))
        reader = SnapshotReader(self.admin, lambda store: Snapshot.read(store, TREES))
        controller = DSController(Flaky(), "web", lock, self.clock, reader)
        self.failureResultOf(controller.reconcile(), StoreUnavailable)
        self.assertIsNone(controller.progress)
        self.result(controller.reconcile())
        self.assertEqual(controller.progress.halted, (sha(2), "n1"))
        self.assertEqual(self.versions(self.snapshot()), {"n1": 2, "n2": 1, "n3": 1})

    def test_orphansAuditedAsTheirs(self):
        """
        The pods of a daemon set whose record went out of band are removed
        after the grace by another set's controller; the audit log names
        the set they belonged to, not the one that cleaned up.
        """
        self.orchestrator()
        self.putDS("gone", node_selector="tier=web")
        self.settle()
        self.putDS("other", node_selector="tier=none")
        self.settle()
        self.result(self.admin.delete(keys.daemonSet("gone")))
        self.settle()
        self.clock.advance(ORPHAN_GRACE)
        self.settle()
        self.assertEqual(self.snapshot().podsOfDaemonSet("gone"), [])
        self.assertEqual([(e.id, e.action, e.details["nodes"]) for e in self.events()
                          if e.action == "unschedule"],
                         [("gone", "unschedule", ["n1", "n2", "n3"])])

    def test_emptiedTreeHolds(self):
        """
        Every daemon set record deleted (a wiped tree): the farm holds still
        (FAILSAFE), nothing is unscheduled, the pods keep their labels.
        """
        critical = capture(self, "critical")
        self.orchestrator()
        self.putDS("web")
        self.settle()
        self.result(self.admin.delete(keys.daemonSet("web")))
        self.clock.advance(120)
        self.settle()
        snapshot = self.snapshot()
        self.assertEqual(self.running(snapshot, 1), ["n1", "n2", "n3"])
        self.assertEqual([n for n, p in snapshot.podsOfDaemonSet("web")], ["n1", "n2", "n3"])
        self.assertIn("FAILSAFE", critical[0]["log_format"])
        self.assertNotIn("unschedule", [e.action for e in self.events()])
