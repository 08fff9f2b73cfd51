"""
The pod-cluster farm at work on one in-memory store with a L{task.Clock}:
the real orchestrator, farm and controller, with the public L{MemorySyncer}
as the syncer.  Membership follows labels and health; a sudden drop is held
until a second read confirms it; a failed sync is retried until it succeeds
or a newer membership replaces it; the sweeper deletes clusters whose
record is gone, never on an empty listing.
"""

import json

import attr
from twisted.internet import task
from twisted.logger import formatEvent
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from p2twisted.labels import encodeLabels
from p2twisted.orchestrate.controllers import FARMS
from p2twisted.orchestrate.pcfarm import Prepared, Sweeper, statusKey
from p2twisted.orchestrate.syncers import IPodClusterSyncer, MemorySyncer, loadSyncers
from p2twisted.orchestrate.tap import Orchestrator, orchestratorConfig
from p2twisted.records.podcluster import PodCluster
from p2twisted.store import keys
from p2twisted.store.memory import MemoryState, MemoryStore
from tests.test_orchestrate_farm import capture
from tests.test_orchestrate_podcluster import PROD, WEB

CONFIRM = 5.0


class PodClusterFarmTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1800000000)
        self.state = MemoryState()
        self.admin = MemoryStore(self.state, self.clock)
        self.syncer = MemorySyncer()
        for n in (1, 2, 3, 4):
            node = "n%d" % (n,)
            self.result(self.admin.put(keys.machine(node), json.dumps(
                {"node": node, "pod_address": "10.0.0.%d" % (n,)}).encode()))
        for node in ("n1", "n2", "n3"):
            self.pod(node)

    def result(self, d):
        return self.successResultOf(d)

    def pod(self, node, labels=PROD, status="passing"):
        self.result(self.admin.put(keys.intent(node, "web"), WEB))
        self.result(self.admin.put(keys.label("pod", node + "/web"), encodeLabels(labels)))
        self.setHealth(node, status)

    def setHealth(self, node, status):
        self.result(self.admin.put(keys.health("web", node), json.dumps(
            {"status": status, "output": "", "sha": None, "time": 1.0}).encode()))

    def orchestrator(self, syncer=None):
        syncer = syncer or self.syncer
        store = MemoryStore(self.state, self.clock)
        config = orchestratorConfig(None, {"store": "memory://", "farms": "pc"}, environ={})

        def prepare(store, clock, config):
            return Prepared({"syncers": [syncer], "confirmDelay": CONFIRM},
                            [Sweeper(store, [syncer], clock, 30.0, CONFIRM)])
        kinds = {"pc": attr.evolve(FARMS["pc"], prepare=prepare)}
        orchestrator = Orchestrator(config, self.clock, kinds=kinds, store=store)
        orchestrator.startService()
        self.addCleanup(lambda: orchestrator.running and orchestrator.stopService())
        return orchestrator

    def create(self, pcId="c1", **kw):
        pc = PodCluster(pcId, "web", "az1", kw.pop("cluster_name", "prod"), **kw)
        self.result(self.admin.put(pc.key, pc.toBytes()))
        return pc

    def status(self, pcId="c1", syncer="memory"):
        entry = self.result(self.admin.get(statusKey(pcId, syncer)))
        return None if entry is None else json.loads(entry.value)

    def settle(self, seconds=3):
        for _ in range(int(seconds * 10)):
            self.clock.advance(0.1)

    def synced(self, pcId="c1"):
        return sorted(m.address for m in self.syncer.clusters.get(pcId, ()) if m.healthy)

    def test_fakeIsASyncer(self):
        """The public fake and the built-in syncers provide the interface."""
        self.assertTrue(verifyObject(IPodClusterSyncer, MemorySyncer()))
        for syncer in loadSyncers({"json": {"directory": "d"}, "haproxy": {"directory": "h"}},
                                  None):
            self.assertTrue(verifyObject(IPodClusterSyncer, syncer))

    def test_followsMembership(self):
        """
        The farm syncs a new cluster's healthy members; a pod turning
        unhealthy, a pod joining by its labels and one leaving follow, each
        synced at once (no sudden drop), and the status says synced.
        """
        self.orchestrator()
        self.create()
        self.settle()
        self.assertEqual(self.synced(), ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"])
        status = self.status()
        self.assertEqual((status["state"], status["members"], status["healthy"], status["error"]),
                         ("synced", 3, 3, None))
        self.setHealth("n2", "critical")
        self.settle()
        self.assertEqual(self.synced(), ["10.0.0.1:8080", "10.0.0.3:8080"])
        self.pod("n4")
        self.settle()
        self.assertEqual(self.synced(), ["10.0.0.1:8080", "10.0.0.3:8080", "10.0.0.4:8080"])
        self.result(self.admin.delete(keys.label("pod", "n1/web")))
        self.settle()
        self.assertEqual(self.synced(), ["10.0.0.3:8080", "10.0.0.4:8080"])
        self.assertEqual(self.status()["state"], "synced")

    def test_emptyReadHeld(self):
        """
        Every member vanishing at once (the pod labels wiped) is held: the
        syncer keeps the last membership, the status says why; when the
        labels come back within the confirmation delay nothing was ever
        synced empty.  Wiped again and still wiped at a second read after
        the delay, the drop is synced.
        """
        critical = capture(self, "critical")
        self.orchestrator()
        self.create()
        self.settle()
        calls = len(self.syncer.calls)
        self.wipeLabels()
        self.settle(CONFIRM - 1)
        self.assertEqual(len(self.syncer.calls), calls)
        self.assertEqual(self.synced(), ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"])
        status = self.status()
        self.assertEqual((status["state"], status["held"]), ("held", []))
        self.assertIn("FAILSAFE", status["reason"])
        self.assertEqual(len(critical), 1)
        for node in ("n1", "n2", "n3"):
            self.pod(node)
        self.settle(CONFIRM + 1)
        self.assertEqual(len(self.syncer.calls), calls)
        self.assertEqual(self.status()["state"], "synced")
        self.wipeLabels()
        self.settle(CONFIRM + 1)
        self.assertEqual(self.syncer.calls[-1], ("sync", "c1", []))
        self.assertEqual(self.synced(), [])
        self.assertIn("confirmed", self.status()["reason"])
        self.settle(CONFIRM + 1)
        self.assertEqual(self.status()["state"], "synced")

    def wipeLabels(self, nodes=("n1", "n2", "n3")):
        """Delete the pods' labels in one transaction (an empty read)."""
        from p2twisted.store.common import Delete
        self.result(self.admin.transaction([Delete(keys.label("pod", node + "/web"))
                                            for node in nodes]))

    def test_wipeInStepsHeld(self):
        """
        A wipe that the watches deliver key by key is one drop: each step is
        compared with the largest membership synced within the confirmation
        delay, so the syncer never follows it below half before a second
        read confirms it.
        """
        self.orchestrator()
        self.create()
        self.settle()
        for node in ("n1", "n2", "n3"):
            self.result(self.admin.delete(keys.label("pod", node + "/web")))
            self.settle(0.5)
            self.assertGreaterEqual(len(self.synced()), 2)
        self.assertEqual(self.status()["state"], "held")

    def test_halfDropHeld(self):
        """
        Losing more than half the healthy members at once is held too, until
        confirmed.
        """
        self.orchestrator()
        self.create()
        self.settle()
        self.setHealth("n1", "critical")
        self.setHealth("n2", "critical")
        self.settle(1.5)
        self.assertEqual(self.status()["state"], "held")
        self.assertGreaterEqual(len(self.synced()), 2)
        self.settle(CONFIRM + 1)
        self.assertEqual(self.synced(), ["10.0.0.3:8080"])

    def test_restartedFarmHoldsToo(self):
        """
        A restarted farm starts its failsafe from the addresses its status
        says were synced: an empty first read is held, not synced.
        """
        orchestrator = self.orchestrator()
        self.create()
        self.settle()
        self.restartWithoutMembers(orchestrator)

    def restartWithoutMembers(self, orchestrator, before=lambda: None):
        """
        Stop C{orchestrator}, call C{before}, delete every member's health
        and start another: its first read, empty, is held, not synced.
        """
        self.result(orchestrator.stopService())
        before()
        for node in ("n1", "n2", "n3"):
            self.result(self.admin.delete(keys.health("web", node)))
        fresh = MemorySyncer()
        self.orchestrator(fresh)
        self.settle(1)
        self.assertEqual(fresh.calls, [])
        self.assertEqual(self.status()["state"], "held")

    def test_restartedAfterCorruptRecordHoldsToo(self):
        """
        A record unreadable for a while (its status says error) does not make
        the farm forget what it synced: restarted, with the record readable
        again and every member gone, it holds the empty read.
        """
        orchestrator = self.orchestrator()
        pc = self.create()
        self.settle()
        self.result(self.admin.put(pc.key, b"{not json"))
        self.settle()
        status = self.status()
        self.assertEqual((status["state"], status["synced"]), ("error", [
            "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]))
        self.restartWithoutMembers(
            orchestrator, lambda: self.result(self.admin.put(pc.key, pc.toBytes())))

    def test_retriedUntilSuccess(self):
        """
        A failing sync is retried with backoff; its status says failed with
        the error until a retry succeeds.
        """
        self.syncer.failures = 2
        self.orchestrator()
        self.create()
        self.settle(0.5)
        status = self.status()
        self.assertEqual((status["state"], status["attempts"]), ("failed", 1))
        self.assertIn("told to fail", status["error"])
        self.assertTrue(status["reason"].startswith("attempt 1 failed; retrying in "),
                        status["reason"])
        self.settle(5)
        self.assertEqual(self.status()["state"], "synced")
        self.assertEqual([c[0] for c in self.syncer.calls], ["sync"] * 3)
        self.assertEqual(len(self.synced()), 3)

    def test_newerMembershipReplacesRetry(self):
        """
        A failed sync's retry carries the membership of its time: a change
        meanwhile is what gets synced, the failed one never is.
        """
        self.syncer.failures = 1
        self.orchestrator()
        self.create()
        self.settle(0.1)
        self.setHealth("n3", "critical")
        self.settle(5)
        self.assertEqual(self.syncer.calls, [
            ("sync", "c1", ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]),
            ("sync", "c1", ["10.0.0.1:8080", "10.0.0.2:8080"])])

    def test_sweeper(self):
        """
        The sweeper deletes from the syncer what it holds of clusters whose
        record is gone -- at start and on a deletion -- but nothing when
        the tree lists empty.
        """
        self.syncer.clusters["stale"] = []
        self.orchestrator()
        self.create("c1")
        self.create("c2", cluster_name="canary")
        self.settle()
        self.assertIn(("delete", "stale"), self.syncer.calls)
        self.assertEqual(sorted(self.syncer.clusters), ["c1", "c2"])
        self.result(self.admin.delete(keys.podCluster("c2")))
        self.settle()
        self.assertEqual(sorted(self.syncer.clusters), ["c1"])
        critical = capture(self, "critical")
        self.result(self.admin.delete(keys.podCluster("c1")))
        self.settle(40)
        self.assertEqual(sorted(self.syncer.clusters), ["c1"])
        self.assertTrue(critical)

    def test_sweeperHoldsWipeInSteps(self):
        """
        A wipe of pod_clusters delivered key by key (ZooKeeper deletes a
        tree so) is one drop for the sweeper: it deletes from the syncer no
        more than half the clusters before a second read confirms the
        rest's deletion; then it does.
        """
        critical = capture(self, "critical")
        self.orchestrator()
        for n in (1, 2, 3, 4):
            self.create("c%d" % (n,), cluster_name="n%d" % (n,))
        self.settle()
        self.assertEqual(sorted(self.syncer.clusters), ["c1", "c2", "c3", "c4"])
        for n in (1, 2, 3):
            self.result(self.admin.delete(keys.podCluster("c%d" % (n,))))
            self.settle(0.5)
        self.assertEqual(sorted(self.syncer.clusters), ["c3", "c4"])
        self.assertTrue(critical)
        self.settle(CONFIRM + 1)
        self.assertEqual(sorted(self.syncer.clusters), ["c4"])

    def test_recreatedBetweenReads(self):
        """
        A cluster deleted (its status with it, and swept from the syncer)
        and created again between two reads of its controller -- a watch
        that delivered only the new version -- is synced again and its
        status written again, though its record and members are as before.
        """
        from p2twisted.orchestrate.controllers import SnapshotReader
        from p2twisted.orchestrate.pcedit import TREES, deletePC
        from p2twisted.orchestrate.pcfarm import PodClusterController
        from p2twisted.orchestrate.snapshot import Snapshot
        from p2twisted.store.common import Delete

        class Lock(object):
            key = keys.lock("pc", "c1")
        self.result(self.admin.put(Lock.key, b"me"))
        Lock.version = self.result(self.admin.get(Lock.key)).version

        self.create()
        reader = SnapshotReader(self.admin, lambda store: Snapshot.read(store, TREES))
        controller = PodClusterController(self.admin, "c1", Lock, self.clock, reader,
                                          [self.syncer], confirmDelay=CONFIRM)
        self.result(controller.reconcile())
        self.assertEqual(self.status()["state"], "synced")
        plan = deletePC(self.result(Snapshot.read(self.admin, TREES)), "c1")
        self.result(self.admin.transaction([Delete(c.key) for c in plan.changes]))
        self.result(self.syncer.delete("c1"))
        self.create()
        self.result(controller.reconcile())
        self.assertEqual(self.synced(), ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"])
        self.assertEqual(self.status()["state"], "synced")

    def test_orchestratorWithoutSyncersClaimsNothing(self):
        """
        A second orchestrator started with no syncers configured (the
        default config runs the pc farm) claims no pod cluster: every
        cluster is synced by the one that has syncers, and the other says
        why it does not run the farm.
        """
        warnings = capture(self, "warn")
        store = MemoryStore(self.state, self.clock)
        config = orchestratorConfig(None, {"store": "memory://", "farms": "pc"}, environ={})
        bare = Orchestrator(config, self.clock, store=store)
        bare.startService()
        self.addCleanup(lambda: bare.running and bare.stopService())
        self.orchestrator()
        for n in (1, 2, 3, 4):
            self.create("c%d" % (n,), cluster_name="n%d" % (n,))
        self.settle()
        self.assertEqual(sorted(self.syncer.clusters), ["c1", "c2", "c3", "c4"])
        self.assertNotIn("pc", bare.farms)
        self.assertTrue(any("no syncers" in formatEvent(w) for w in warnings))
