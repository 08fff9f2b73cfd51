"""
C{p2 audit}, run as a real C{p2} process against a C{local://} store.
"""

import json
import time

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.orchestrate import audit
from p2twisted.records.controllers import AuditEvent
from p2twisted.store import keys, openStore
from tests.cli import P2CommandMixin


class AuditCommandTests(P2CommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def appended(self):
        """
        Append two events: a schedule 2 hours ago and a roll step 10
        minutes ago (not "now": a C{p2} started on a loaded machine may take
        more than a second, and C{--since 1s} must still leave it out).
        """
        store = yield openStore(self.url, reactor)
        try:
            now = time.time()
            yield audit.append(store, [AuditEvent("rc", "web", "schedule",
                                                  {"nodes": ["n1", "n2"], "reason": "scale"})],
                               "farm@h:1", now - 7200)
            yield audit.append(store, [AuditEvent("roll", "web2", "step", {"new": 1})],
                               "farm@h:2", now - 600)
        finally:
            yield store.close()

    @defer.inlineCallbacks
    def test_list(self):
        """
        Events are listed in time order, one line each: when, what, which
        change, by whom; C{--since} leaves older ones out.
        """
        yield self.appended()
        out = yield self.succeed("audit")
        lines = out.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("rc web  schedule  nodes=n1,n2 reason=scale  (by farm@h:1)", lines[0])
        self.assertIn("roll web2  step  new=1  (by farm@h:2)", lines[1])
        out = yield self.succeed("audit", "--since", "1h")
        self.assertEqual([line.split("  ", 1)[1] for line in out.splitlines()],
                         ["roll web2  step  new=1  (by farm@h:2)"])

    @defer.inlineCallbacks
    def test_json(self):
        """
        C{--json} prints the events as a JSON list of their records.
        """
        yield self.appended()
        out = yield self.succeed("audit", "--json", "--since", "3h")
        events = json.loads(out)
        self.assertEqual([(e["kind"], e["id"], e["action"], e["who"]) for e in events],
                         [("rc", "web", "schedule", "farm@h:1"), ("roll", "web2", "step",
                                                                 "farm@h:2")])
        self.assertEqual(json.loads((yield self.succeed("audit", "--json", "--since", "1s"))),
                         [])

    @defer.inlineCallbacks
    def test_emptyAndBadSince(self):
        """
        An empty log says so; a bad C{--since} is a one-line usage error.
        """
        out = yield self.succeed("audit")
        self.assertEqual(out, "no audit events\n")
        line, code = yield self.p2Fails("audit", "--since", "last week")
        self.assertEqual(code, 2)
        self.assertIn("--since 'last week'", line)

    @defer.inlineCallbacks
    def test_corruptEntrySkipped(self):
        """
        An unreadable audit entry is named on standard error and the rest
        is listed.
        """
        yield self.appended()
        store = yield openStore(self.url, reactor)
        yield store.put(keys.audit("20261207T000000.000000Z", "bad"), b"{")
        yield store.close()
        out, err, code = yield self.p2("audit")
        self.assertEqual((code, len(out.splitlines())), (0, 2))
        self.assertIn("audit/20261207T000000.000000Z-bad", err)
