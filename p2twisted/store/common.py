# -*- test-case-name: tests.test_store_memory -*-
"""
What every store backend shares: entries, transaction ops, validation, and
the latest-wins delivery of watch snapshots.
"""

import re

import attr
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted.errors import (
    AlreadyLocked, InvalidKey, InvalidTransaction, KeyExists, SessionLost, StoreError, StoreUnavailable,
    ValueTooLarge)
from p2twisted.store.interfaces import IWatch

#: Largest value any backend accepts (Consul's limit, so all accept the same).
MAX_VALUE = 512 * 1024

#: Most ops in one transaction (Consul's limit).
MAX_OPS = 64

_SEGMENT = re.compile(r"[A-Za-z0-9._:-]+")
#: A whole valid key but for "." and ".." segments: the fast path of checkKey.
_KEY = re.compile(r"[A-Za-z0-9._:-]+(?:/[A-Za-z0-9._:-]+)*\Z")

log = Logger()


@attr.s(frozen=True, slots=True)
class Entry(object):
    """
    One stored entry.

    @ivar key: its key.
    @ivar value: its bytes.
    @ivar version: an integer that changes on every write.
    @ivar owner: the id of the session owning it (ephemeral), or C{None}.
    """

    key = attr.ib()
    value = attr.ib()
    version = attr.ib()
    owner = attr.ib(default=None)


@attr.s(frozen=True, slots=True)
class Check(object):
    """Transaction op: C{key} must have C{version}; C{version=None} means absent."""

    key = attr.ib()
    version = attr.ib()


@attr.s(frozen=True, slots=True)
class Put(object):
    """Transaction op: write C{value}; with C{version}, only if it matches."""

    key = attr.ib()
    value = attr.ib()
    version = attr.ib(default=None)


@attr.s(frozen=True, slots=True)
class Create(object):
    """Transaction op: write C{value} to an absent key."""

    key = attr.ib()
    value = attr.ib()


@attr.s(frozen=True, slots=True)
class Delete(object):
    """Transaction op: delete C{key}; with C{version}, only if it matches."""

    key = attr.ib()
    version = attr.ib(default=None)


def checkKey(key, backend=None):
    """
    @raise InvalidKey: unless C{key} is C{/}-separated non-empty segments of
        C{[A-Za-z0-9._:-]}.
    @return: C{key}
    """
    if isinstance(key, str) and _KEY.match(key) and (
            "." not in key or not {".", ".."}.intersection(key.split("/"))):
        return key  # the common case, in one regex: snapshots check thousands of keys
    if not isinstance(key, str):
        raise InvalidKey(repr(key), backend, "keys are text, got %s" % (type(key).__name__,))
    if not key:
        raise InvalidKey(key, backend, "invalid key: empty")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKey(key, backend, "invalid key: empty segment (leading, trailing or double '/')")
        if segment in (".", ".."):
            raise InvalidKey(key, backend, "invalid key: '.' and '..' are not segments")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidKey(
                key, backend,
                "invalid key: segment %r has characters outside [A-Za-z0-9._:-]" % (segment,))
    return key


def checkPrefix(prefix, backend=None):
    """
    Like L{checkKey} but the empty prefix (everything) is allowed.
    """
    if prefix == "":
        return prefix
    return checkKey(prefix, backend)


def checkValue(key, value, backend=None):
    """
    @raise ValueTooLarge: if C{value} is over L{MAX_VALUE} bytes.
    @raise InvalidKey: if C{value} is not bytes (the error names the key).
    @return: C{value}
    """
    if not isinstance(value, bytes):
        raise InvalidKey(key, backend, "values are bytes, got %s" % (type(value).__name__,))
    if len(value) > MAX_VALUE:
        raise ValueTooLarge(
            key, backend,
            "value of %d bytes is over the %d-byte limit" % (len(value), MAX_VALUE))
    return value


def idempotent(ops):
    """
    @return: whether writing C{ops} twice leaves the store as writing them
        once and is answered alike: only plain puts and deletes without a
        version (no check, create or versioned write, which a second try
        would find already done and refuse as a false conflict).
    """
    return all(isinstance(op, (Put, Delete)) and op.version is None for op in ops)


def checkOps(ops, backend=None):
    """
    Validate a transaction's ops (count, types, keys, values).

    @return: the ops as a list.
    """
    ops = list(ops)
    if len(ops) > MAX_OPS:
        raise InvalidTransaction(
            None, backend, "transaction of %d ops is over the limit of %d" % (len(ops), MAX_OPS))
    for op in ops:
        if not isinstance(op, (Check, Put, Create, Delete)):
            raise InvalidTransaction(None, backend, "unknown transaction op %r" % (op,))
        checkKey(op.key, backend)
        if isinstance(op, (Put, Create)):
            checkValue(op.key, op.value, backend)
    return ops


def checkedTransaction(ops, backend, apply):
    """
    The opening of a backend's C{transaction}: L{checkOps}, then
    C{apply(ops)} unless there are none.

    @return: L{Deferred} with C{apply}'s result (C{[]} for no ops), or
        failing with the L{StoreError} of invalid ops.
    """
    try:
        ops = checkOps(ops, backend)
    except StoreError:
        return defer.fail()
    if not ops:
        return defer.succeed([])
    return apply(ops)


def inSubtree(key, prefix):
    """
    @return: whether C{key} is C{prefix} or below it.
    """
    return prefix == "" or key == prefix or key.startswith(prefix + "/")


@implementer(IWatch)
class Delivery(object):
    """
    Latest-wins delivery of snapshots to one watch callback: calls never
    overlap, a snapshot offered while the callback runs replaces any earlier
    pending one, and the last offered snapshot is always delivered.

    Backends call L{offer} with each fresh snapshot; L{cancel} stops delivery.
    If a snapshot equal to the last delivered one is offered, it is dropped.
    """

    def __init__(self, callback, onCancel=None):
        self._callback = callback
        self._onCancel = onCancel
        self._pending = None
        self._hasPending = False
        self._busy = False
        self._last = None
        self._delivered = False
        self.cancelled = False

    def offer(self, snapshot):
        """
        Hand over a fresh snapshot C{{key: Entry}}.
        """
        if self.cancelled:
            return
        self._pending = snapshot
        self._hasPending = True
        if not self._busy:
            self._drain()

    def _drain(self):
        while self._hasPending and not self.cancelled:
            snapshot, self._pending, self._hasPending = self._pending, None, False
            if self._delivered and snapshot == self._last:
                continue
            self._last, self._delivered = snapshot, True
            self._busy = True
            d = defer.maybeDeferred(self._callback, dict(snapshot))
            d.addErrback(lambda f: log.failure("watch callback failed", f))
            if not d.called:
                d.addBoth(self._resume)
                return
            self._busy = False

    def _resume(self, _):
        self._busy = False
        self._drain()

    def cancel(self):
        if not self.cancelled:
            self.cancelled = True
            if self._onCancel is not None:
                self._onCancel(self)


class Sequencer(object):
    """
    Per-key ordering: an operation on some keys starts once every earlier
    operation on any of those keys has finished -- except that operations
    which only read a key (C{shared}: a transaction's checks) do not wait
    for one another there, only for the writes before them, and the next
    write waits for them all.  So transactions that share nothing but the
    keys they check (an orchestrator's fence) are pipelined.
    """

    def __init__(self):
        self._tails = {}
        self._readers = {}

    def run(self, keys, f, *args, shared=()):
        """
        Run C{f(*args)}, which returns a L{Deferred}, in its turn for C{keys}
        (written) and C{shared} (only read).

        @return: L{Deferred} with C{f}'s result.
        """
        tails, readers = self._tails, self._readers
        keys = set(keys)
        shared = set(shared) - keys
        waits = {}
        for k in keys | shared:
            if k in tails:
                waits[id(tails[k])] = tails[k]
        for k in keys:
            for r in readers.pop(k, ()):
                waits[id(r)] = r
        done = defer.Deferred()
        for k in keys:
            tails[k] = done
        for k in shared:
            readers.setdefault(k, []).append(done)

        def finish(result):
            for k in keys:
                if tails.get(k) is done:
                    del tails[k]
            for k in shared:
                found = readers.get(k)
                if found is not None and done in found:
                    found.remove(done)
                    if not found:
                        del readers[k]
            done.callback(None)
            return result

        if not waits:
            try:
                d = f(*args)
            except Exception:
                d = defer.fail()
            return d.addBoth(finish)
        result = defer.Deferred()
        remaining = [len(waits)]

        def ready(_):
            remaining[0] -= 1
            if remaining[0] == 0:
                defer.maybeDeferred(f, *args).addBoth(finish).chainDeferred(result)
        for w in waits.values():
            w.addCallback(ready)
        return result


class SingleOpsMixin(object):
    """
    C{put}, C{create}, C{cas} and C{delete} of a store whose C{_one(op)}
    applies one transaction op and fires with its result.
    """

    def put(self, key, value):
        return self._one(Put(key, value))

    def create(self, key, value):
        return self._one(Create(key, value))

    def cas(self, key, value, version):
        return self._one(Put(key, value, version))

    def delete(self, key, version=None):
        return self._one(Delete(key, version))


class CloseOnceMixin(object):
    """
    C{close} of a store whose C{_close()} ends it (a L{Deferred}): the first
    call starts it, every call fires once it is over.  C{_closing} is not
    C{None} from the first call on.
    """

    _closing = None

    def close(self):
        if self._closing is None:
            self._closing = self._close()
        d = defer.Deferred()
        self._closing.addBoth(lambda result: (d.callback(None), result)[1])
        return d


class WatchesMixin(object):
    """
    C{watch} of a store whose C{_newWatch(prefix, delivery)} makes a watch
    (with C{start()} and C{stop()}): it keeps the live ones in C{_watches}
    and, once C{_closing} is set, answers with a delivery already cancelled.
    """

    def watch(self, prefix, callback):
        checkPrefix(prefix, self.backend)
        watches = []
        delivery = Delivery(callback, lambda _: self._unwatch(watches[0]))
        w = self._newWatch(prefix, delivery)
        watches.append(w)
        if self._closing is not None:
            delivery.cancel()
            return delivery
        self._watches.add(w)
        w.start()
        return delivery

    def _unwatch(self, w):
        self._watches.discard(w)
        w.stop()


class SessionMixin(object):
    """
    C{lock} and C{whenLost} of a session with C{createEphemeral}, a C{lost}
    flag, a C{_waiters} list fired when it is lost, a C{backend} name and a
    C{lockClass(session, entry)}; C{_refuse} for C{createEphemeral}.
    """

    def lock(self, key, value=b""):
        def held(f):
            f.trap(KeyExists)
            raise AlreadyLocked(key, self.backend)
        return self.createEphemeral(key, value).addCallbacks(
            lambda entry: self.lockClass(self, entry), held)

    def _recognise(self, failure, key, value):
        """
        After a create of C{key} as this session's failed with its outcome
        unknown (a 5xx, a connection lost after sending: the HTTP stores do
        not send such a create again, as a retry would find the key and
        report a false C{KeyExists}), read the key back: if it holds
        C{value} under this session, the create was applied.

        @return: a L{Deferred} firing with our L{Entry}, or with C{failure}.
        """
        if not failure.check(StoreUnavailable) or self.lost:
            return failure

        def read(entry):
            if entry is not None and entry.owner == self.id and entry.value == value:
                return entry
            return failure
        return self.store.get(key).addCallbacks(read, lambda _: failure)

    def _refuse(self, key, value):
        """
        @return: a failed L{Deferred} when this session is lost
            (L{SessionLost}) or C{key} or C{value} is invalid, else C{None}.
        """
        if self.lost:
            return defer.fail(SessionLost(key, self.backend))
        try:
            checkKey(key, self.backend)
            checkValue(key, value, self.backend)
        except StoreError:
            return defer.fail()
        return None

    def whenLost(self):
        if self.lost:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        return d
