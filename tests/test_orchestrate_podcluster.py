"""
Pod clusters as pure functions: the record, membership over a snapshot
(selector over pod labels, address from the agent's pod_address and the
manifest's status port or the cluster's port annotation, health) and the
failsafe's table.
"""

import json

from twisted.trial import unittest

from p2twisted.errors import UsageError
from p2twisted.labels import encodeLabels
from p2twisted.orchestrate.podcluster import (
    Member, baseline, drops, guard, membership, remember)
from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.records import CorruptRecord
from p2twisted.records.podcluster import PodCluster
from p2twisted.store import keys
from p2twisted.store.common import Entry

WEB = (b"id: web\nlaunchables:\n  app:\n    launchable_type: hoist\n"
       b"    location: file:///a_1.tar.gz\nstatus:\n  port: 8080\n  http: true\n")
NOPORT = (b"id: web\nlaunchables:\n  app:\n    launchable_type: hoist\n"
          b"    location: file:///a_1.tar.gz\n")


def health(status):
    return json.dumps({"status": status, "output": "", "sha": None, "time": 1.0}).encode()


def snapshot(pods, machines=None, extra=None):
    """
    @param pods: C{{node: (labels, health status or None, manifest)}}.
    @param machines: C{{node: pod_address}} of present agents.
    """
    entries = {}
    for node, (labels, status, manifest) in pods.items():
        entries[keys.intent(node, "web")] = manifest
        entries[keys.label("pod", node + "/web")] = encodeLabels(labels)
        if status is not None:
            entries[keys.health("web", node)] = health(status)
    for node, address in (machines or {}).items():
        entries[keys.machine(node)] = json.dumps({"node": node, "pod_address": address}).encode()
    entries.update(extra or {})
    return Snapshot.fromEntries({k: Entry(k, v, 1) for k, v in entries.items()})


PROD = {"pod_id": "web", "availability_zone": "az1", "cluster_name": "prod"}


class RecordTests(unittest.TestCase):

    def test_defaultSelector(self):
        """
        A pod cluster's selector defaults to its three labels; it round-trips
        through its stored bytes.
        """
        pc = PodCluster("c1", "web", "az1", "prod", annotations={"port": 80})
        self.assertEqual(pc.pod_selector, "pod_id=web,availability_zone=az1,cluster_name=prod")
        self.assertEqual(PodCluster.fromEntry(pc.key, Entry(pc.key, pc.toBytes(), 1)), pc)
        self.assertEqual(pc.nameKey, "pod_cluster_names/web/az1/prod")

    def test_bad(self):
        """
        Bad input is a one-line error; a stored value that is no pod cluster
        is a CorruptRecord naming its key.
        """
        for args, kw in [(("c 1", "web", "az", "c"), {}), (("c", "web", "a/z", "c"), {}),
                         (("c", "web", "az", "c"), {"pod_selector": "a in"}),
                         (("c", "web", "az", "c"), {"annotations": [1]})]:
            self.assertRaises((UsageError, Exception), PodCluster, *args, **kw)
        key = keys.podCluster("c1")
        for value in (b"[]", b'{"pod_id": "web"}', b'{"pod_id": "web", "availability_zone": '
                      b'"a", "cluster_name": "c", "pod_selector": "x in", "annotations": {}}'):
            e = self.assertRaises(CorruptRecord, PodCluster.fromEntry, key, Entry(key, value, 1))
            self.assertIn(key, str(e))


    def test_syncerStatus(self):
        """
        A syncer's status round-trips; one without a state or with addresses
        that are no list of texts is corrupt, naming its key.
        """
        from p2twisted.records.podcluster import SyncerStatus
        key = keys.status("pod_clusters", "c1", "haproxy")
        status = SyncerStatus("held", synced=["a:1"], held=[], members=0, healthy=0)
        self.assertEqual(SyncerStatus.fromEntry(key, Entry(key, status.toBytes(), 1)), status)
        for value in (b"{}", b'{"state": "synced", "synced": "a:1"}', b"[]"):
            e = self.assertRaises(CorruptRecord, SyncerStatus.fromEntry, key, Entry(key, value, 1))
            self.assertIn(key, str(e))


class MembershipTests(unittest.TestCase):

    def test_table(self):
        """
        Members are the pods whose labels match the selector; the host is the
        agent's pod_address (else the node name), the port the cluster's port
        annotation (else the manifest's status port; without either, no
        address); healthy means passing health.
        """
        other = dict(PROD, cluster_name="canary")
        pods = {"n1": (PROD, "passing", WEB), "n2": (PROD, "critical", WEB),
                "n3": (PROD, None, WEB), "n4": (other, "passing", WEB),
                "n5": (PROD, "passing", NOPORT)}
        snap = snapshot(pods, machines={"n1": "10.0.0.1", "n2": "10.0.0.2"})
        cases = [
            (PodCluster("c", "web", "az1", "prod"),
             [Member("n1", "web", "10.0.0.1:8080", True),
              Member("n2", "web", "10.0.0.2:8080", False),
              Member("n3", "web", "n3:8080", False),
              Member("n5", "web", None, True)], ["10.0.0.1:8080"]),
            (PodCluster("c", "web", "az1", "prod", annotations={"port": 9000}),
             [Member("n1", "web", "10.0.0.1:9000", True),
              Member("n2", "web", "10.0.0.2:9000", False),
              Member("n3", "web", "n3:9000", False),
              Member("n5", "web", "n5:9000", True)], ["10.0.0.1:9000", "n5:9000"]),
            (PodCluster("c", "web", "az1", "canary"),
             [Member("n4", "web", "n4:8080", True)], ["n4:8080"]),
            (PodCluster("c", "web", "az1", "prod", pod_selector="cluster_name in (prod,canary)"),
             [Member(n, "web", a, h) for n, a, h in [
                 ("n1", "10.0.0.1:8080", True), ("n2", "10.0.0.2:8080", False),
                 ("n3", "n3:8080", False), ("n4", "n4:8080", True), ("n5", None, True)]],
             ["10.0.0.1:8080", "n4:8080"]),
            (PodCluster("c", "web", "az2", "prod"), [], []),
        ]
        for cluster, members, healthy in cases:
            found = membership(cluster, snap)
            self.assertEqual(list(found.members), members, cluster.pod_selector)
            self.assertEqual(found.addresses(), healthy)

    def test_healthOfAnotherVersion(self):
        """
        A pod passing for another manifest than its intent's (a roll just
        rewrote it: its agent will halt it) is no healthy member; passing
        for its intent's, it is.
        """
        from p2twisted.manifest import parseManifest
        sha = parseManifest(WEB).sha()
        cluster = PodCluster("c", "web", "az1", "prod")
        for healthSha, healthy in (("0" * 64, False), (sha, True), (None, True)):
            snap = snapshot({"n1": (PROD, None, WEB)}, extra={keys.health("web", "n1"): json.dumps(
                {"status": "passing", "output": "", "sha": healthSha, "time": 1.0}).encode()})
            self.assertEqual([m.healthy for m in membership(cluster, snap).members], [healthy])

    def test_agentPublishesPodAddress(self):
        """The agent's facts carry the pod address membership reads."""
        from p2twisted.agent.pods import machineFacts
        self.assertEqual(machineFacts("n1", {}, "builtin", "10.1.2.3")["pod_address"],
                         "10.1.2.3")

    def test_labelsWithoutIntent(self):
        """A pod whose labels outlived its intent is no member."""
        snap = snapshot({}, extra={keys.label("pod", "n9/web"): encodeLabels(PROD)})
        self.assertEqual(list(membership(PodCluster("c", "web", "az1", "prod"), snap).members),
                         [])

    def test_snapshotQueries(self):
        """The snapshot reads pod cluster records; a corrupt one is skipped by the listing."""
        pc = PodCluster("c1", "web", "az1", "prod")
        snap = snapshot({}, extra={pc.key: pc.toBytes(), keys.podCluster("bad"): b"junk"})
        self.assertEqual(snap.podClusters(), {"c1": pc})
        self.assertEqual(snap.podCluster("c1"), pc)
        self.assertIsNone(snap.podCluster("c2"))
        self.assertRaises(CorruptRecord, snap.podCluster, "bad")


class FailsafeTests(unittest.TestCase):

    def test_drops(self):
        """To empty from some, or losing more than half, is a sudden drop."""
        cases = [([], [], False), ([], ["a"], False), (["a"], [], True),
                 (["a", "b"], ["a"], False), (["a", "b", "c"], ["a"], True),
                 (["a", "b", "c"], ["a", "b"], False), (["a", "b", "c", "d"], ["a", "b"], False),
                 (["a", "b", "c", "d"], ["a"], True), (["a", "b"], ["c", "d", "e"], False),
                 (["a", "b", "c"], ["d"], True)]
        for before, after, expected in cases:
            self.assertEqual(drops(before, after), expected, (before, after))

    def test_guard(self):
        """
        A sudden drop is held, and synced only when a second read at least
        the confirmation delay later sees the same addresses; a read that
        differs starts the wait again; no drop syncs at once.
        """
        three = ["a:1", "b:1", "c:1"]
        cases = [
            # synced, current, held, now -> sync, held, at
            (None, [], None, 100, (True, None, None)),
            (three, three, None, 100, (True, None, None)),
            (three, ["a:1", "b:1"], None, 100, (True, None, None)),
            (three, [], None, 100, (False, ([], 100), 105)),
            (three, [], ([], 100), 103, (False, ([], 100), 105)),
            (three, [], ([], 100), 105, (True, None, None)),
            (three, ["a:1"], ([], 100), 106, (False, (["a:1"], 106), 111)),
            (three, three, ([], 100), 106, (True, None, None)),
            (["a:1"], [], None, 100, (False, ([], 100), 105)),
        ]
        for synced, current, held, now, expected in cases:
            verdict = guard(synced, current, held, now, 5)
            self.assertEqual((verdict.sync, verdict.held, verdict.at), expected,
                             (synced, current, held, now))
        self.assertIn("FAILSAFE", guard(three, [], None, 0, 5).reason)

    def test_baseline(self):
        """
        The baseline is the largest membership synced within the window (so
        a wipe in steps is one drop), else the last synced.
        """
        history = [(90, ["a", "b", "c"]), (97, ["a", "b"]), (99, ["a"])]
        cases = [([], 100, None), (history, 100, ["a", "b"]), (history, 95, ["a", "b", "c"]),
                 (history, 200, ["a"])]
        for found, now, expected in cases:
            self.assertEqual(baseline(found, now, 5), expected, (found, now))
        self.assertEqual(remember(history, 101, ["x"], 5),
                         [(97, ["a", "b"]), (99, ["a"]), (101, ["x"])])
