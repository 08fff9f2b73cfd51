"""
The in-memory store passes the store contract; its clock drives expiry.
"""

from twisted.internet import defer, task
from twisted.trial import unittest

from p2twisted.store.memory import MemoryState, MemoryStore
from tests.store_contract import StoreContractMixin


class MemoryContractTests(StoreContractMixin, unittest.TestCase):
    """
    The contract, against L{MemoryStore} clients sharing one L{MemoryState}.
    """

    def setUp(self):
        self.state = MemoryState()

    def makeStore(self):
        return MemoryStore(self.state)

    def crashedHolder(self, keys):
        """
        The holder is another in-process client that L{MemoryStore.crash}es.
        """
        holder = MemoryStore(self.state)

        @defer.inlineCallbacks
        def hold():
            session = yield holder.session(self.sessionTTL)
            for key in keys:
                if key.startswith("locks/"):
                    yield session.lock(key, b"held")
                else:
                    yield session.createEphemeral(key, b"held")

        def kill():
            holder.crash()
            return defer.succeed(None)
        return hold().addCallback(lambda _: kill)


class MemoryClockTests(unittest.SynchronousTestCase):
    """
    Session expiry follows the injected clock.
    """

    def test_expiryFollowsClock(self):
        """
        A crashed client's session ends C{ttl} seconds after its last
        heartbeat, on the injected clock, and not before.
        """
        clock = task.Clock()
        state = MemoryState()
        holder = MemoryStore(state, clock)
        other = MemoryStore(state, clock)
        session = self.successResultOf(holder.session(3.0))
        self.successResultOf(session.createEphemeral("machines/n1", b"x"))
        clock.advance(10)
        self.assertFalse(session.lost)
        lost = session.whenLost()
        holder.crash()
        clock.advance(2.0)
        self.assertNoResult(lost)
        clock.advance(1.5)
        self.successResultOf(lost)
        self.assertIsNone(self.successResultOf(other.get("machines/n1")))
