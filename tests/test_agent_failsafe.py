"""
The node-marker failsafe's decision (L{failsafe.decide}) and the agent's
memory of the last marker it accepted.
"""

import json
import os

from twisted.trial import unittest

from p2twisted.agent import failsafe

M1 = {"created": "2026-12-01T00:00:00Z", "version": 7}
M2 = {"created": "2026-12-01T00:00:00Z", "version": 42}  # same second, another creation


class DecideTests(unittest.TestCase):

    def decide(self, marker=M1, lastSeen=M1, absentSince=None, now=100.0, grace=10.0, **kw):
        return failsafe.decide(marker, lastSeen, absentSince or {}, now, grace, **kw)

    def test_noMarkerRemovesNothing(self):
        """
        Without the marker nothing is removed, however long intent has been
        gone, and nothing is accepted.
        """
        verdict = self.decide(marker=None, absentSince={"web": 0.0})
        self.assertEqual((verdict.remove, verdict.accept, verdict.wakeAt),
                         (frozenset(), False, None))

    def test_graceThenRemove(self):
        """
        A pod gone from intent waits out the grace, with a wake-up when it
        ends; at its end it may be removed.
        """
        verdict = self.decide(absentSince={"web": 95.0, "db": 80.0})
        self.assertEqual(verdict.remove, {"db"})
        self.assertEqual(verdict.waiting, {"web": 105.0})
        self.assertEqual(verdict.wakeAt, 105.0)
        self.assertEqual(self.decide(absentSince={"web": 95.0}, now=105.0).remove, {"web"})

    def test_zeroGrace(self):
        """
        A grace of 0 removes at once (the behaviour before the grace).
        """
        self.assertEqual(self.decide(absentSince={"web": 100.0}, grace=0).remove, {"web"})

    def test_firstMarkerAccepted(self):
        """
        An agent that never saw a marker accepts the present one, and its
        grace applies as usual.
        """
        verdict = self.decide(lastSeen=None, absentSince={"web": 0.0})
        self.assertTrue(verdict.accept)
        self.assertIsNone(verdict.hold)
        self.assertEqual(verdict.remove, {"web"})

    def test_newMarkerHolds(self):
        """
        A marker other than the last seen (same C{created}, another store
        version) holds every removal, however old, without a wake-up, and is
        not accepted.
        """
        verdict = self.decide(marker=M2, absentSince={"web": 0.0})
        self.assertEqual(verdict.hold, failsafe.NEW_MARKER)
        self.assertEqual((verdict.remove, verdict.held, verdict.accept, verdict.wakeAt),
                         (frozenset(), {"web"}, False, None))

    def test_confirmationReleases(self):
        """
        A confirmation of the present marker ends the hold: the marker is
        accepted, orphans adopted, removals past their grace allowed.
        """
        verdict = self.decide(marker=M2, absentSince={"web": 0.0, "old": 0.0},
                              orphans={"old"}, confirmed=M2)
        self.assertIsNone(verdict.hold)
        self.assertTrue(verdict.accept)
        self.assertEqual((verdict.remove, verdict.adopt), ({"web", "old"}, {"old"}))

    def test_confirmationOfAnotherMarker(self):
        """
        A confirmation of an earlier marker does not release a later one's
        hold.
        """
        verdict = self.decide(marker=M2, absentSince={"web": 0.0}, confirmed=M1)
        self.assertEqual(verdict.hold, failsafe.NEW_MARKER)
        self.assertEqual(verdict.remove, frozenset())

    def test_holdTimeout(self):
        """
        With a hold timeout, the hold ends that long after it began (and
        wakes the agent then); without one it never ends by itself.
        """
        held = self.decide(marker=M2, absentSince={"web": 0.0}, holdSince=50.0, holdTimeout=60.0)
        self.assertEqual((held.hold, held.wakeAt), (failsafe.NEW_MARKER, 110.0))
        starting = self.decide(marker=M2, holdTimeout=60.0)
        self.assertEqual(starting.wakeAt, 160.0)
        released = self.decide(marker=M2, absentSince={"web": 0.0}, now=110.0, holdSince=50.0,
                               holdTimeout=60.0)
        self.assertEqual((released.hold, released.remove, released.accept),
                         (None, {"web"}, True))
        forever = self.decide(marker=M2, absentSince={"web": 0.0}, now=1e9, holdSince=0.0)
        self.assertEqual(forever.remove, frozenset())

    def test_orphansHold(self):
        """
        Pods on disk in neither intent nor reality hold removals (the
        others' too) until confirmed, even under the accepted marker.
        """
        verdict = self.decide(absentSince={"web": 0.0, "stray": 0.0}, orphans={"stray"})
        self.assertEqual(verdict.hold, failsafe.ORPHANS)
        self.assertEqual((verdict.remove, verdict.adopt), (frozenset(), frozenset()))

    def test_describe(self):
        """
        The status record says whether removals are held, by what command
        they are confirmed, and when the hold times out (never, here).
        """
        held = failsafe.describe(self.decide(marker=M2, absentSince={"web": 0.0}), "n1", True,
                                 orphans={"stray"})
        self.assertEqual((held["state"], held["hold"], held["held"], held["orphans"],
                          held["confirm"]),
                         ("held", "new-marker", ["web"], ["stray"], "p2 node confirm n1"))
        self.assertIsNone(held["hold_until"])
        grace = failsafe.describe(self.decide(absentSince={"web": 95.0}), "n1", True)
        self.assertEqual((grace["state"], grace["grace_until"]), ("grace", {"web": 105.0}))
        self.assertNotIn("confirm", grace)
        self.assertEqual(failsafe.describe(self.decide(marker=None), "n1", False)["state"],
                         "no-marker")
        self.assertEqual(failsafe.describe(self.decide(), "n1", True)["state"], "free")


class MarkerMemoryTests(unittest.TestCase):

    def setUp(self):
        self.path = os.path.join(os.path.abspath(self.mktemp()), "node-marker.json")

    def test_roundTrip(self):
        """
        A remembered identity is read back by a new instance (a restarted
        agent); nothing remembered reads as C{None}.
        """
        self.assertIsNone(failsafe.MarkerMemory(self.path, "n1").load())
        failsafe.MarkerMemory(self.path, "n1").save(M1)
        self.assertEqual(failsafe.MarkerMemory(self.path, "n1").load(), M1)
        self.assertEqual(os.listdir(os.path.dirname(self.path)), ["node-marker.json"])

    def test_otherNode(self):
        """
        A file written for another node is not this node's memory.
        """
        failsafe.MarkerMemory(self.path, "n1").save(M1)
        self.assertIsNone(failsafe.MarkerMemory(self.path, "n2").load())

    def test_unreadableHolds(self):
        """
        A damaged file (not JSON, empty, or JSON that save never writes)
        reads as an identity no marker has, so the present marker starts a
        hold rather than being taken as the first.
        """
        os.makedirs(os.path.dirname(self.path))
        for damaged in ("{not json", "", "null", "[]", '{"node": "n1"}'):
            with open(self.path, "w") as f:
                f.write(damaged)
            remembered = failsafe.MarkerMemory(self.path, "n1").load()
            self.assertIsNotNone(remembered, damaged)
            self.assertEqual(failsafe.decide(M1, remembered, {}, 0.0, 10.0).hold,
                             failsafe.NEW_MARKER, damaged)
            json.dumps(remembered)
