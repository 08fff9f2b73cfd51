"""
Writing intent keeps the node-marker failsafe.
"""

import json

from twisted.trial import unittest

from p2twisted import intent
from p2twisted.manifest import parseManifest
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore

MANIFEST = b"""\
id: web   # the pod
launchables:
  app:
    launchable_type: hoist
    location: file:///artifacts/app_1.tar.gz
"""


class ScheduleTests(unittest.TestCase):

    def setUp(self):
        self.store = MemoryStore()

    def test_firstPodCreatesMarker(self):
        """
        Scheduling the first pod on a node writes the node marker with it;
        the stored bytes are the manifest's original bytes, comments included.
        """
        manifest = parseManifest(MANIFEST)
        self.successResultOf(intent.schedule(self.store, "n1", manifest))
        marker, pods = self.successResultOf(intent.listIntent(self.store, "n1"))
        self.assertEqual(json.loads(marker.value)["node"], "n1")
        self.assertEqual(list(pods), ["web"])
        self.assertEqual(pods["web"].value, MANIFEST)

    def test_unscheduleKeepsMarker(self):
        """
        Unscheduling removes the pod and keeps the marker, so the agent sees
        an intentionally empty node rather than a missing one.
        """
        manifest = parseManifest(MANIFEST)
        self.successResultOf(intent.schedule(self.store, "n1", manifest))
        self.assertTrue(self.successResultOf(intent.unschedule(self.store, "n1", "web")))
        self.assertFalse(self.successResultOf(intent.unschedule(self.store, "n1", "web")))
        marker, pods = self.successResultOf(intent.listIntent(self.store, "n1"))
        self.assertIsNotNone(marker)
        self.assertEqual(pods, {})
        self.assertIsNotNone(self.successResultOf(self.store.get(keys.intentNode("n1"))))

    def test_rescheduleKeepsMarkerVersion(self):
        """
        Scheduling again on a node with a marker leaves the marker untouched.
        """
        manifest = parseManifest(MANIFEST)
        self.successResultOf(intent.schedule(self.store, "n1", manifest))
        before = self.successResultOf(self.store.get(keys.intentNode("n1")))
        self.successResultOf(intent.schedule(self.store, "n1", manifest))
        after = self.successResultOf(self.store.get(keys.intentNode("n1")))
        self.assertEqual(before, after)
