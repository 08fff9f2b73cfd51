"""
Opening a store by URL.
"""

from twisted.internet import task
from twisted.trial import unittest

from p2twisted.errors import UsageError
from p2twisted.store import openStore
from p2twisted.store.memory import MemoryStore


class OpenStoreTests(unittest.TestCase):

    def test_memory(self):
        store = self.successResultOf(openStore("memory://", task.Clock()))
        self.assertIsInstance(store, MemoryStore)
        self.successResultOf(store.close())

    def test_unknownScheme(self):
        """
        An unknown scheme fails with a usage error showing the known forms.
        """
        e = self.failureResultOf(openStore("consol://x", task.Clock()), UsageError).value
        self.assertIn("consol://x", str(e))
        self.assertIn("local:///path/state.db", str(e))
