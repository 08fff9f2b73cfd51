"""
Replication controller, roll and audit records: what is stored reads back,
and a record that is not what its key says is refused with the key named,
never read with defaults (an RC without C{replicas_desired} is not an RC of 0).
"""

import json

from twisted.trial import unittest

from p2twisted.errors import StoreError, UsageError
from p2twisted.records import CorruptRecord
from p2twisted.records.controllers import AuditEvent, ReplicationController, Roll
from p2twisted.store import keys
from p2twisted.store.common import Entry

MANIFEST = b"""\
id: web   # kept as written
launchables:
  app:
    launchable_type: hoist
    location: file:///artifacts/app_1.tar.gz
"""


def entry(key, data):
    value = data if isinstance(data, bytes) else json.dumps(data).encode()
    return Entry(key, value, 1)


def rcData(**overrides):
    data = {"id": "web-rc", "manifest": MANIFEST.decode(), "node_selector": "tier=web",
            "pod_labels": {"team": "a"}, "replicas_desired": 3, "disabled": False}
    data.update(overrides)
    return data


class ReplicationControllerTests(unittest.TestCase):

    key = keys.replicationController("web-rc")

    def test_roundTrip(self):
        """
        An RC read from its JSON writes the same record back; the manifest's
        bytes are kept as written (comments too), its pod id and SHA are the
        manifest's.
        """
        rc = ReplicationController.fromEntry(self.key, entry(self.key, rcData()))
        self.assertEqual(rc.manifest, MANIFEST)
        self.assertEqual((rc.podId, rc.replicas_desired, rc.node_selector), ("web", 3, "tier=web"))
        self.assertEqual(rc.labelsForPods(), {"team": "a", "pod_id": "web",
                                              "replication_controller_id": "web-rc"})
        self.assertEqual(ReplicationController.fromEntry(self.key, entry(self.key, rc.toBytes())),
                         rc)
        self.assertEqual(rc.key, self.key)

    def test_missingReplicasDesired(self):
        """
        An RC without C{replicas_desired} is corrupt, not an RC of zero
        replicas: the error names the key and the field.
        """
        data = rcData()
        del data["replicas_desired"]
        e = self.assertRaises(CorruptRecord, ReplicationController.fromEntry, self.key,
                              entry(self.key, data))
        self.assertIsInstance(e, StoreError)
        self.assertIn(self.key, str(e))
        self.assertIn("replicas_desired", str(e))

    def test_corrupt(self):
        """
        Every malformed RC is refused with its key and what is wrong.
        """
        cases = [
            (b"{not json", "not JSON"),
            (b"[1]", "not an object"),
            (rcData(replicas_desired=-1), "replicas_desired"),
            (rcData(replicas_desired="3"), "replicas_desired"),
            (rcData(replicas_desired=True), "replicas_desired"),
            (rcData(manifest="id: [nope"), ""),
            (rcData(manifest=None), "manifest"),
            (rcData(node_selector="tier in (web"), ""),
            (rcData(pod_labels={"pod_id": "x"}), "pod_id"),
            (rcData(pod_labels={"daemon_set_id": "x"}), "daemon_set_id"),
            (rcData(pod_labels={"a": 1}), "pod_labels"),
            (rcData(disabled="no"), "disabled"),
            (rcData(id="other"), "other"),
        ]
        for value, words in cases:
            e = self.assertRaises(CorruptRecord, ReplicationController.fromEntry, self.key,
                                  entry(self.key, value))
            self.assertIn(self.key, str(e))
            self.assertIn(words, str(e))

    def test_idFromKey(self):
        """
        An RC record without an C{id} field takes its key's.
        """
        data = rcData()
        del data["id"]
        self.assertEqual(ReplicationController.fromEntry(self.key, entry(self.key, data)).id,
                         "web-rc")

    def test_constructorValidates(self):
        """
        Building an RC by hand (as the CLI does) gives a one-line
        L{UsageError}.
        """
        self.assertRaises(UsageError, ReplicationController, "a/b", MANIFEST, 1)
        self.assertRaises(UsageError, ReplicationController, "rc", MANIFEST, -1)
        self.assertRaises(UsageError, ReplicationController, "rc", b"\xff", 1)
        rc = ReplicationController("rc", MANIFEST, 1)
        self.assertEqual(rc.withReplicas(4).replicas_desired, 4)
        self.assertTrue(rc.withDisabled(True).disabled)


class RollTests(unittest.TestCase):

    key = keys.roll("new")

    def test_roundTrip(self):
        roll = Roll(old_rc="old", new_rc="new", desired=3, min_healthy=2, roll_delay=1.5,
                    auto_rollback=True, old_desired=3)
        self.assertEqual(roll.id, "new")
        self.assertEqual(roll.rollback_after, 300)
        self.assertEqual(Roll.fromEntry(self.key, entry(self.key, roll.toBytes())), roll)

    def test_corrupt(self):
        good = {"old_rc": "old", "new_rc": "new", "desired": 3, "min_healthy": 1}
        cases = [
            (dict(good, new_rc="other"), "other"),
            ({k: v for k, v in good.items() if k != "min_healthy"}, "min_healthy"),
            ({k: v for k, v in good.items() if k != "desired"}, "desired"),
            (dict(good, old_rc="new"), "two different"),
            (dict(good, state="sideways"), "state"),
            (dict(good, roll_delay=-1), "roll_delay"),
        ]
        for value, words in cases:
            e = self.assertRaises(CorruptRecord, Roll.fromEntry, self.key, entry(self.key, value))
            self.assertIn(self.key, str(e))
            self.assertIn(words, str(e))


class AuditEventTests(unittest.TestCase):

    def test_roundTrip(self):
        """
        An event's key sorts by its time; its JSON shows the time as text.
        """
        event = AuditEvent("roll", "new", "step", {"add": 1}).stamped("orch@h1", 1765000000.25)
        key = event.key("abc")
        self.assertEqual(key, "audit/20251206T054640.250000Z-abc")
        self.assertEqual(json.loads(event.toBytes())["when"], "2025-12-06T05:46:40.250000Z")
        self.assertEqual(AuditEvent.fromEntry(key, entry(key, event.toBytes())), event)
        self.assertLess(key, AuditEvent("roll", "new", "x").stamped("o", 1765000001).key("abc"))

    def test_timeRoundsUp(self):
        """
        A time within half a microsecond of the next second is written as
        that second, not as the start of its own (a second early, sorting
        before the events it came after).
        """
        late = AuditEvent("roll", "new", "x").stamped("o", 1765000000.9999997)
        earlier = AuditEvent("roll", "new", "x").stamped("o", 1765000000.5)
        self.assertEqual(late.key("u"), "audit/20251206T054641.000000Z-u")
        self.assertLess(earlier.key("u"), late.key("u"))
        self.assertEqual(json.loads(late.toBytes())["when"], "2025-12-06T05:46:41.000000Z")

    def test_corrupt(self):
        key = "audit/x"
        self.assertRaises(CorruptRecord, AuditEvent.fromEntry, key,
                          entry(key, {"kind": "roll", "id": "a", "action": "b"}))
        self.assertRaises(CorruptRecord, AuditEvent.fromEntry, key,
                          entry(key, {"kind": "roll", "id": "a", "action": "b", "when": "soon"}))
        self.assertRaises(UsageError, AuditEvent("roll", "a", "b").key, "u")
