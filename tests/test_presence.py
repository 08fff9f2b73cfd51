"""
Presence keeps an ephemeral key alive across session losses.
"""

import os
import uuid

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from p2twisted.errors import StoreUnavailable
from p2twisted.store import openStore
from p2twisted.store.memory import MemoryState, MemoryStore
from p2twisted.store.presence import Presence
from tests.store_contract import waitFor
from tests.zkserver import sharedServer


class PresenceTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.state = MemoryState()
        self.reader = MemoryStore(self.state, self.clock)

    def value(self):
        entry = self.successResultOf(self.reader.get("machines/n1"))
        return entry.value if entry else None

    def test_recreatedAfterExpiry(self):
        """
        When the session expires the key vanishes, and Presence creates it
        again with a new session and the current value.
        """
        facts = [b"v1"]
        store = MemoryStore(self.state, self.clock)
        presence = Presence(store, "machines/n1", lambda: facts[0], 5.0, self.clock)
        presence.startService()
        self.addCleanup(presence.stopService)
        self.assertEqual(self.value(), b"v1")
        first = presence.session
        facts[0] = b"v2"
        first._stopHeartbeat()
        self.clock.advance(5.1)
        self.assertTrue(first.lost)
        self.assertIsNot(presence.session, first)
        self.assertEqual(self.value(), b"v2")

    def test_waitsForEarlierHolder(self):
        """
        A key still held by an earlier session (a restarted agent) is taken
        over once that session has expired, retrying with backoff meanwhile.
        """
        old = MemoryStore(self.state, self.clock)
        oldSession = self.successResultOf(old.session(5.0))
        self.successResultOf(oldSession.createEphemeral("machines/n1", b"old"))
        old.crash()
        store = MemoryStore(self.state, self.clock)
        presence = Presence(store, "machines/n1", lambda: b"new", 5.0, self.clock)
        presence.startService()
        self.addCleanup(presence.stopService)
        self.assertFalse(presence.present)
        self.assertEqual(self.value(), b"old")
        self.clock.pump([1] * 10)
        self.assertTrue(presence.present)
        self.assertEqual(self.value(), b"new")

    def test_takesOverDeadPredecessor(self):
        """
        A key whose holder C{takeOver} recognises as a dead predecessor is
        replaced at once, without waiting for the old session to expire.
        """
        old = MemoryStore(self.state, self.clock)
        oldSession = self.successResultOf(old.session(600.0))
        self.successResultOf(oldSession.createEphemeral("machines/n1", b"dead"))
        old.crash()
        seen = []
        store = MemoryStore(self.state, self.clock)
        presence = Presence(store, "machines/n1", lambda: b"new", 5.0, self.clock,
                            takeOver=lambda value: seen.append(value) or value == b"dead")
        presence.startService()
        self.addCleanup(presence.stopService)
        self.assertTrue(presence.present)
        self.assertEqual((seen, self.value()), ([b"dead"], b"new"))
        # The old session's expiry later does not take the new key with it.
        self.clock.advance(601)
        self.assertEqual(self.value(), b"new")
        self.assertTrue(presence.present)

    def test_liveHolderWaitedFor(self):
        """
        A holder C{takeOver} does not recognise is waited for, as without it.
        """
        old = MemoryStore(self.state, self.clock)
        oldSession = self.successResultOf(old.session(5.0))
        self.successResultOf(oldSession.createEphemeral("machines/n1", b"alive"))
        store = MemoryStore(self.state, self.clock)
        presence = Presence(store, "machines/n1", lambda: b"new", 5.0, self.clock,
                            takeOver=lambda value: False)
        presence.startService()
        self.addCleanup(presence.stopService)
        self.clock.pump([1] * 10)
        self.assertFalse(presence.present)
        self.assertEqual(self.value(), b"alive")
        self.successResultOf(oldSession.close())
        self.clock.pump([1] * 30)
        self.assertTrue(presence.present)
        self.assertEqual(self.value(), b"new")

    def test_ownKeyAfterLostReply(self):
        """
        A key this very session created, though the reply was lost (the
        call failed), is recognised as held at the next try instead of being
        waited for forever.
        """
        store = MemoryStore(self.state, self.clock)
        original = store.session

        def session(ttl):
            def lostReply(s):
                create = s.createEphemeral

                def once(key, value):
                    s.createEphemeral = create
                    return create(key, value).addCallback(
                        lambda _: defer.fail(StoreUnavailable(key, "memory", "reply lost")))
                s.createEphemeral = once
                return s
            return original(ttl).addCallback(lostReply)
        store.session = session
        presence = Presence(store, "machines/n1", lambda: b"v1", 600.0, self.clock,
                            jitter=lambda: 0)
        presence.startService()
        self.addCleanup(presence.stopService)
        self.assertFalse(presence.present)
        self.clock.advance(1)
        self.assertTrue(presence.present)
        self.assertEqual(self.value(), b"v1")
        entry = self.successResultOf(self.reader.get("machines/n1"))
        self.assertEqual(entry.owner, presence.session.id)

    def test_stopRemovesKey(self):
        """
        Stopping the service closes the session, so the key goes at once.
        """
        store = MemoryStore(self.state, self.clock)
        presence = Presence(store, "machines/n1", lambda: b"x", 5.0, self.clock)
        presence.startService()
        self.successResultOf(presence.stopService())
        self.assertIsNone(self.value())

    def test_releasedKeyTakenAtOnce(self):
        """
        A waiting Presence takes the key the moment its holder stops (and
        closes its session), not at its next retry.
        """
        holder = Presence(MemoryStore(self.state, self.clock), "machines/n1", lambda: b"old",
                          5.0, self.clock)
        holder.startService()
        waiter = Presence(MemoryStore(self.state, self.clock), "machines/n1", lambda: b"new",
                          5.0, self.clock, retryDelay=600.0, jitter=lambda: 0)
        waiter.startService()
        self.addCleanup(waiter.stopService)
        self.clock.advance(1)
        self.assertFalse(waiter.present)
        self.successResultOf(holder.stopService())
        self.clock.advance(0)
        self.assertTrue(waiter.present)
        self.assertEqual(self.value(), b"new")


    def test_releasedDuringAttempt(self):
        """
        A holder that stops while the waiter's retry is still looking at its
        key (having read it) is not missed: the waiter tries again at once
        rather than at its next retry.
        """
        holder = Presence(MemoryStore(self.state, self.clock), "machines/n1", lambda: b"old",
                          5.0, self.clock)
        holder.startService()
        store = MemoryStore(self.state, self.clock)
        waiter = Presence(store, "machines/n1", lambda: b"new", 5.0, self.clock,
                          retryDelay=600.0, jitter=lambda: 0)
        waiter.startService()
        self.addCleanup(waiter.stopService)
        self.assertEqual(waiter.state, "waiting")
        # The retry's read of the key answers late: with the holder's entry,
        # read before the holder stopped.
        reads = []
        get = store.get

        def slowGet(key):
            entry = self.successResultOf(get(key))
            reads.append((defer.Deferred(), entry))
            return reads[-1][0]
        store.get = slowGet
        self.clock.advance(600)
        self.assertEqual((waiter.state, len(reads)), ("registering", 1))
        self.successResultOf(holder.stopService())
        store.get = get
        read, entry = reads[0]
        read.callback(entry)
        self.clock.advance(0)
        self.assertTrue(waiter.present)
        self.assertEqual(self.value(), b"new")


class HandoverMixin(object):
    """
    With a real store: an agent stopping cleanly hands C{machines/<node>} to
    one waiting for it at once.
    """

    @defer.inlineCallbacks
    def test_cleanStopHandsOver(self):
        """
        The waiting Presence retries only every 10 minutes, yet holds the key
        within seconds of the holder's stop: the holder closed its session
        (deleting its ephemeral key) and the waiter watched the key.
        """
        first = yield self.openStore()
        second = yield self.openStore()
        self.addCleanup(second.close)
        holder = Presence(first, "machines/n1", lambda: b"old", 10.0, reactor)
        holder.startService()
        yield waitFor(lambda: holder.present, what="the first holder")
        waiter = Presence(second, "machines/n1", lambda: b"new", 10.0, reactor,
                          retryDelay=600.0, jitter=lambda: 0)
        waiter.startService()
        self.addCleanup(waiter.stopService)
        yield waitFor(lambda: waiter._call is not None, what="the waiter to wait")
        yield holder.stopService()
        yield first.close()
        yield waitFor(lambda: waiter.present, timeout=8.0, what="the waiter to take the key")
        entry = yield second.get("machines/n1")
        self.assertEqual(entry.value, b"new")


class LocalHandoverTests(HandoverMixin, unittest.TestCase):

    def openStore(self):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        self.url = getattr(self, "url", "local://" + os.path.join(path, "state.db"))
        return openStore(self.url, reactor)


class ZooKeeperHandoverTests(HandoverMixin, unittest.TestCase):

    def setUp(self):
        self.url = "zk://%s/t%s" % (sharedServer().hosts, uuid.uuid4().hex)

    def openStore(self):
        return openStore(self.url, reactor)


class TraceTests(unittest.TestCase):
    """
    Presence is an explicit state machine: its event traces.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.state = MemoryState()
        self.trace = []

    def presence(self, value=b"new", **kwargs):
        p = Presence(MemoryStore(self.state, self.clock), "machines/n1", lambda: value, 5.0,
                     self.clock, jitter=lambda: 0, **kwargs)
        p.tracer = lambda *transition: self.trace.append(transition)
        return p

    def test_registerLoseStop(self):
        p = self.presence()
        p.startService()
        self.successResultOf(p.session.close())
        self.successResultOf(p.stopService())
        self.assertEqual(self.trace, [
            ("idle", "start", "registering"),
            ("registering", "registered", "present"),
            ("present", "lost", "registering"),
            ("registering", "registered", "present"),
            ("present", "stop", "stopped"),
        ])

    def test_waitForHolder(self):
        """
        A key held elsewhere is retried with backoff and taken the moment
        it is released.
        """
        holder = Presence(MemoryStore(self.state, self.clock), "machines/n1", lambda: b"old",
                          5.0, self.clock)
        holder.startService()
        p = self.presence()
        p.startService()
        self.addCleanup(p.stopService)
        self.clock.advance(1)
        self.successResultOf(holder.stopService())
        self.clock.advance(0)
        self.assertEqual(self.trace, [
            ("idle", "start", "registering"),
            ("registering", "heldElsewhere", "waiting"),
            ("waiting", "retry", "registering"),
            ("registering", "heldElsewhere", "waiting"),
            ("waiting", "released", "registering"),
            ("registering", "registered", "present"),
        ])

    def test_storeDown(self):
        """
        A store failure is retried after the backoff.
        """
        p = self.presence()
        failures = [StoreUnavailable("machines/n1", "memory", "down")]
        real = p.store.session

        def session(ttl):
            if failures:
                return defer.fail(failures.pop())
            return real(ttl)
        p.store.session = session
        p.startService()
        self.addCleanup(p.stopService)
        self.clock.advance(1)
        self.assertTrue(p.present)
        self.assertEqual(self.trace, [
            ("idle", "start", "registering"),
            ("registering", "failed", "waiting"),
            ("waiting", "retry", "registering"),
            ("registering", "registered", "present"),
        ])
