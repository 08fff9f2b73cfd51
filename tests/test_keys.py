"""
The keyspace module builds and takes apart every store key.
"""

from twisted.trial import unittest

from p2twisted.errors import InvalidKey
from p2twisted.store import keys


class KeyTests(unittest.TestCase):

    def test_layout(self):
        """
        Keys follow DESIGN.md's table.
        """
        self.assertEqual(keys.intentNode("n1"), "intent/n1")
        self.assertEqual(keys.intent("n1", "web"), "intent/n1/web")
        self.assertEqual(keys.reality("n1", "web"), "reality/n1/web")
        self.assertEqual(keys.machine("n1"), "machines/n1")
        self.assertEqual(keys.hook("before_install", "audit"), "hooks/before_install/audit")
        self.assertEqual(keys.status("pods", "n1", "web"), "status/pods/n1/web")
        self.assertEqual(keys.lockTree("rc"), "locks/rc")

    def test_parseAndChild(self):
        self.assertEqual(keys.parse("intent/n1/web"), ("intent", "n1", "web"))
        self.assertEqual(keys.child("intent/n1", "intent/n1/web"), "web")
        self.assertEqual(keys.child("intent/n1", "intent/n1/web/x"), "web")
        self.assertIsNone(keys.child("intent/n1", "intent/n1"))

    def test_invalidSegment(self):
        """
        A pod id that is not one key segment is refused, so no key can name
        another pod's (or another node's) entry.
        """
        for podId in ("", "a/b", "we b", "..x/"):
            self.assertRaises(InvalidKey, keys.intent, "n1", podId)
        self.assertRaises(InvalidKey, keys.tree, "nonsense")

    def test_parseInvalid(self):
        """
        C{parse} refuses what is not a key with C{InvalidKey}, also what its
        cache cannot hash, and again when asked again.
        """
        for key in (["intent", "n1"], {"intent": "n1"}, b"intent/n1", None, "a//b", "a/../b"):
            for _ in range(2):
                self.assertRaises(InvalidKey, keys.parse, key)
