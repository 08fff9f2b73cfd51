# -*- test-case-name: tests.test_store_memory -*-
"""
An in-memory coordination store: public code, for unit tests of everything
built on L{IStore} (like treq's C{StubTreq}).

Several L{MemoryStore} clients may share one L{MemoryState}, as several
processes share one real store.  Time comes from an injected clock, so a test
drives session expiry with C{task.Clock.advance}; L{MemoryStore.crash}
simulates the client process dying (its sessions stop heartbeating).
"""

import itertools
import uuid

from twisted.internet import defer, task
from zope.interface import implementer

from p2twisted.errors import KeyExists, SessionLost, VersionConflict
from p2twisted.store.common import (
    Check, Create, Delete, Delivery, Entry, Put, SessionMixin, SingleOpsMixin, checkKey,
    checkOps, checkPrefix, checkValue, inSubtree)
from p2twisted.store.interfaces import ILock, ISession, IStore

BACKEND = "memory"


class MemoryState(object):
    """
    The shared data of one in-memory store: entries, a version counter, the
    watches of every client.
    """

    def __init__(self):
        self.entries = {}
        self.watches = []  # (prefix, Delivery)
        self._versions = itertools.count(1)

    def nextVersion(self):
        return next(self._versions)

    def snapshot(self, prefix):
        return {k: e for k, e in self.entries.items() if inSubtree(k, prefix)}

    def changed(self, keys):
        """
        Offer fresh snapshots to the watches covering any of C{keys}.
        """
        for prefix, delivery in list(self.watches):
            if any(inSubtree(k, prefix) for k in keys):
                delivery.offer(self.snapshot(prefix))

    def apply(self, ops, owner=None):
        """
        Check then apply C{ops} atomically.

        @return: per-op results.
        @raise VersionConflict, KeyExists: with C{index} set; nothing written.
        """
        for index, op in enumerate(ops):
            current = self.entries.get(op.key)
            if isinstance(op, Check):
                if (current.version if current else None) != op.version:
                    raise VersionConflict(op.key, BACKEND, index=index)
            elif isinstance(op, Create):
                if current is not None:
                    raise KeyExists(op.key, BACKEND, index=index)
            elif isinstance(op, (Put, Delete)) and op.version is not None:
                if current is None or current.version != op.version:
                    raise VersionConflict(op.key, BACKEND, index=index)
        results = []
        for op in ops:
            current = self.entries.get(op.key)
            if isinstance(op, (Put, Create)):
                keep = current.owner if (current is not None and isinstance(op, Put)) else owner
                entry = Entry(op.key, op.value, self.nextVersion(), keep)
                self.entries[op.key] = entry
                results.append(entry)
            elif isinstance(op, Delete):
                results.append(self.entries.pop(op.key, None) is not None)
            else:
                results.append(None)
        self.changed([op.key for op in ops if not isinstance(op, Check)])
        return results


@implementer(IStore)
class MemoryStore(SingleOpsMixin):
    """
    An in-memory L{IStore}.

    @param state: a L{MemoryState} to share with other clients, or C{None}
        for a fresh one.
    @param clock: an L{IReactorTime}, by default the global reactor.
    """

    backend = BACKEND

    def __init__(self, state=None, clock=None, url="memory://"):
        if clock is None:
            from twisted.internet import reactor as clock
        self.state = state if state is not None else MemoryState()
        self.clock = clock
        self.url = url
        self._sessions = []
        self._watches = []

    def _run(self, f, *args):
        return defer.maybeDeferred(f, *args)

    def get(self, key):
        def get():
            checkKey(key, BACKEND)
            return self.state.entries.get(key)
        return self._run(get)

    def list(self, prefix):
        def list_():
            checkPrefix(prefix, BACKEND)
            return self.state.snapshot(prefix)
        return self._run(list_)

    def _one(self, op, owner=None):
        def apply():
            checkOps([op], BACKEND)
            try:
                return self.state.apply([op], owner)[0]
            except (VersionConflict, KeyExists) as e:
                e.index = None
                raise
        return self._run(apply)

    def transaction(self, ops):
        def apply():
            return self.state.apply(checkOps(ops, BACKEND))
        return self._run(apply)

    def watch(self, prefix, callback):
        checkPrefix(prefix, BACKEND)

        def forget(delivery):
            self.state.watches[:] = [w for w in self.state.watches if w[1] is not delivery]

        delivery = Delivery(callback, forget)
        self.state.watches.append((prefix, delivery))
        self._watches.append(delivery)
        delivery.offer(self.state.snapshot(prefix))
        return delivery

    def session(self, ttl):
        s = MemorySession(self, ttl)
        self._sessions.append(s)
        return defer.succeed(s)

    def crash(self):
        """
        Simulate this client's process dying: its sessions stop heartbeating
        (and so expire C{ttl} seconds later) and its watches stop.
        """
        for s in self._sessions:
            s._stopHeartbeat()
        for w in self._watches:
            w.cancel()

    def close(self):
        for w in self._watches:
            w.cancel()
        return defer.gatherResults([s.close() for s in self._sessions]).addCallback(lambda _: None)


@implementer(ILock)
class MemoryLock(object):

    def __init__(self, session, entry):
        self._session = session
        self.key = entry.key
        self.version = entry.version

    def release(self):
        state = self._session.store.state
        entry = state.entries.get(self.key)
        if entry is not None and entry.owner == self._session.id:
            state.apply([Delete(self.key)])
        return defer.succeed(None)


@implementer(ISession)
class MemorySession(SessionMixin):
    """
    A session of a L{MemoryStore}: heartbeats every C{ttl / 3} seconds on the
    store's clock and expires C{ttl} seconds after the last heartbeat.
    """

    backend = BACKEND
    lockClass = MemoryLock

    def __init__(self, store, ttl):
        self.store = store
        self.ttl = ttl
        self.id = uuid.uuid4().hex
        self.lost = False
        self._waiters = []
        self._deadline = store.clock.seconds() + ttl
        self._heartbeat = task.LoopingCall(self._beat)
        self._heartbeat.clock = store.clock
        self._heartbeat.start(ttl / 3.0, now=False)
        self._reaper = store.clock.callLater(ttl, self._checkExpiry)

    def _beat(self):
        self._deadline = self.store.clock.seconds() + self.ttl

    def _stopHeartbeat(self):
        if self._heartbeat.running:
            self._heartbeat.stop()

    def _checkExpiry(self):
        now = self.store.clock.seconds()
        if now >= self._deadline:
            self._end()
        else:
            self._reaper = self.store.clock.callLater(self._deadline - now, self._checkExpiry)

    def _end(self):
        if self.lost:
            return
        self.lost = True
        self._stopHeartbeat()
        if self._reaper.active():
            self._reaper.cancel()
        state = self.store.state
        owned = [k for k, e in state.entries.items() if e.owner == self.id]
        if owned:
            state.apply([Delete(k) for k in owned])
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def createEphemeral(self, key, value):
        def create():
            if self.lost:
                raise SessionLost(key, BACKEND)
            checkKey(key, BACKEND)
            checkValue(key, value, BACKEND)
            try:
                return self.store.state.apply([Create(key, value)], owner=self.id)[0]
            except KeyExists as e:
                e.index = None
                raise
        return defer.maybeDeferred(create)

    def close(self):
        self._end()
        return defer.succeed(None)
