"""
The daemon set record: what is stored reads back with the manifest's bytes
as written; a record missing its manifest or pod id, or whose pod id is not
the manifest's, is refused naming the key; bad settings are one-line errors.
"""

from twisted.trial import unittest

from p2twisted import records
from p2twisted.errors import UsageError
from p2twisted.records import CorruptRecord
from p2twisted.records.daemonset import DaemonSet
from p2twisted.store import keys

from tests.test_records_controllers import MANIFEST, entry


def dsData(**overrides):
    data = {"id": "web-ds", "pod_id": "web", "manifest": MANIFEST.decode(),
            "node_selector": "tier=web", "min_health": 50, "timeout": 120, "rate": 2,
            "parallel": 10, "disabled": False}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


class DaemonSetTests(unittest.TestCase):

    key = keys.daemonSet("web-ds")

    def test_roundTrip(self):
        ds = DaemonSet.fromEntry(self.key, entry(self.key, dsData()))
        self.assertEqual(ds.manifest, MANIFEST)
        self.assertEqual((ds.pod_id, ds.node_selector, ds.min_health, ds.timeout, ds.rate,
                          ds.parallel), ("web", "tier=web", 50, 120, 2, 10))
        self.assertEqual(ds.labelsForPods(), {"pod_id": "web", "daemon_set_id": "web-ds"})
        self.assertEqual(DaemonSet.fromEntry(self.key, entry(self.key, ds.toBytes())), ds)
        self.assertIs(records.DaemonSet, DaemonSet)

    def test_defaults(self):
        ds = DaemonSet.fromEntry(self.key, entry(self.key, {"pod_id": "web",
                                                            "manifest": MANIFEST.decode()}))
        self.assertEqual((ds.id, ds.node_selector, ds.min_health, ds.timeout, ds.rate,
                          ds.parallel, ds.disabled), ("web-ds", "", 0, 300, 0, 50, False))

    def test_corrupt(self):
        for data, said in [
                (dsData(manifest=None), "required field(s) missing: manifest"),
                (dsData(pod_id=None), "required field(s) missing: pod_id"),
                (dsData(pod_id="db"), "pod_id 'db' is not the manifest's id 'web'"),
                (dsData(min_health=101), "min_health must be a whole percentage 0-100"),
                (dsData(parallel=0), "parallel must be a whole number >= 1"),
                (dsData(timeout=-1), "timeout must be a number of seconds >= 0"),
                (dsData(node_selector="a in"), "expected '(' after 'in'"),
                (dsData(id="other"), "its id 'other' is not the key's"),
                (b"[]", "a JSON list")]:
            e = self.assertRaises(CorruptRecord, DaemonSet.fromEntry, self.key,
                                  entry(self.key, data))
            self.assertIn(self.key, str(e))
            self.assertIn(said, str(e))

    def test_constructorValidates(self):
        e = self.assertRaises(UsageError, DaemonSet, "a/b", "web", MANIFEST)
        self.assertIn("daemon set id must be one key segment", str(e))
        self.assertRaises(UsageError, DaemonSet, "x", "web", MANIFEST, min_health=True)

    def test_nonFiniteSeconds(self):
        """
        NaN and infinity are refused: JSON has neither, so the record
        written would be unreadable (every later command and the farm
        failing on it).
        """
        for field in ("timeout", "rate"):
            for value in (float("nan"), float("inf")):
                e = self.assertRaises(UsageError, DaemonSet, "x", "web", MANIFEST,
                                      **{field: value})
                self.assertIn("%s must be a number of seconds >= 0" % (field,), str(e))

    def test_minHealthy(self):
        ds = DaemonSet("x", "web", MANIFEST, min_health=75)
        self.assertEqual([ds.minHealthy(n) for n in (0, 1, 3, 4)], [0, 1, 3, 3])
