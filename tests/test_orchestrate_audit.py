"""
The audit log: events appended under C{audit/<time>-<uuid>}, read back in
time order, filtered by C{--since}.
"""

import calendar

from twisted.internet import task
from twisted.trial import unittest

from p2twisted.errors import UsageError
from p2twisted.orchestrate import audit
from p2twisted.records.controllers import AuditEvent
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore

NOW = calendar.timegm((2026, 12, 7, 4, 0, 0))


class AuditTests(unittest.TestCase):

    def setUp(self):
        self.store = MemoryStore(clock=task.Clock())

    def test_appendAndRead(self):
        """
        Appended events come back in time order with who and when; C{since}
        leaves older ones out.
        """
        self.successResultOf(audit.append(
            self.store, [AuditEvent("rc", "web", "schedule", {"nodes": ["n2"]})], "me", NOW))
        written = self.successResultOf(audit.append(
            self.store, [AuditEvent("rc", "web", "schedule", {"nodes": ["n1"]}),
                         AuditEvent("rc", "web", "unschedule", {"nodes": ["n3"]})],
            "farm", NOW - 60))
        self.assertEqual(len(written), 2)
        self.assertTrue(all(keys.parse(k)[0] == keys.AUDIT for k in written))
        events, corrupt = self.successResultOf(audit.read(self.store))
        self.assertEqual(corrupt, [])
        self.assertEqual([(e.when, e.who, e.action, e.details["nodes"]) for e in events],
                         [(NOW - 60, "farm", "schedule", ["n1"]),
                          (NOW - 60, "farm", "unschedule", ["n3"]),
                          (NOW, "me", "schedule", ["n2"])])
        recent, _ = self.successResultOf(audit.read(self.store, since=NOW - 30))
        self.assertEqual([e.who for e in recent], ["me"])

    def test_manyEvents(self):
        """
        More events than fit one transaction are all appended.
        """
        events = [AuditEvent("rc", "rc%d" % i, "schedule", {}) for i in range(130)]
        self.assertEqual(len(self.successResultOf(audit.append(self.store, events, "me", NOW))),
                         130)
        self.assertEqual(len(self.successResultOf(audit.read(self.store))[0]), 130)

    def test_corruptEntry(self):
        """
        An unreadable entry is reported (naming its key), not fatal.
        """
        self.successResultOf(self.store.put(keys.audit("20261207T000000.000000Z", "x"), b"nope"))
        events, corrupt = self.successResultOf(audit.read(self.store))
        self.assertEqual(events, [])
        self.assertIn("audit/20261207T000000.000000Z-x", str(corrupt[0]))

    def test_since(self):
        """
        C{--since} takes a duration back from now or a UTC time.
        """
        self.assertEqual(audit.parseSince("90s", NOW), NOW - 90)
        self.assertEqual(audit.parseSince("15m", NOW), NOW - 900)
        self.assertEqual(audit.parseSince("2h", NOW), NOW - 7200)
        self.assertEqual(audit.parseSince("1d", NOW), NOW - 86400)
        self.assertEqual(audit.parseSince("2026-12-07T03:00:00Z", NOW), NOW - 3600)
        self.assertEqual(audit.parseSince("2026-12-07", NOW), NOW - 4 * 3600)
        e = self.assertRaises(UsageError, audit.parseSince, "yesterday", NOW)
        self.assertIn("'yesterday'", str(e))
