# -*- test-case-name: tests.test_store_local -*-
"""
The embedded default store: one SQLite file in WAL mode, shared safely by the
CLI and every agent and farm process of one host.

    local:///var/lib/p2/state.db[?sync=normal][&poll=0.005]

The file holds::

    entries(key PRIMARY KEY, version, owner, value)   owner: session id or NULL
    sessions(id PRIMARY KEY, ttl, expires)           expires: wall-clock seconds
    meta(name PRIMARY KEY, value)                    'revision', 'pruned'
    changes(rev, key)                                the keys each revision wrote

Every write is one C{BEGIN IMMEDIATE} transaction that first reaps expired
sessions (and their keys), then takes the next global revision, stamps it as
the version of everything it writes and logs the written keys in C{changes}.
Versions are thus unique, also across delete and re-create.  Reads treat keys
of expired sessions as absent, so correctness never depends on a reaper.

SQLite calls run on one worker thread per store (a write may wait up to
L{BUSY_TIMEOUT} for another process's lock).  Watches hear of our own writes
at once.  Other processes' writes are noticed by a C{PRAGMA data_version} on
the reactor thread every C{poll} seconds (a few microseconds, never waits);
only when it moves does the worker read the unseen C{changes} rows, and only
watches covering those keys re-read their subtree.  On Linux, while there are
watches, that look is also taken at once when inotify says a file of the
store's (its C{-wal}) was written after a poll that found nothing new (then
again after 1, 2, 4 ... ms until the commit shows, L{LocalStore._chase}):
another process's commit is heard within a millisecond or so instead of
half a C{poll} on average, a burst of writes is still read a poll at a time,
and an idle store costs nothing more.
"""

import os
import sqlite3
import uuid
from urllib.parse import parse_qs

from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from p2twisted.errors import SessionLost, StoreUnavailable, UsageError
# BUSY_TIMEOUT and KEEP_CHANGES are re-exported: part of this module's API.
from p2twisted.store._sqlite import BACKEND, BUSY_TIMEOUT, KEEP_CHANGES, _Database, _OpenFailed
from p2twisted.store.common import (
    Delivery, SessionMixin, SingleOpsMixin, checkKey, checkOps, checkPrefix, checkValue,
    inSubtree)
from p2twisted.store.interfaces import ILock, ISession, IStore

__all__ = ["BACKEND", "BUSY_TIMEOUT", "DEFAULT_POLL", "KEEP_CHANGES", "REAP_INTERVAL",
           "LocalLock", "LocalSession", "LocalStore", "parseURL"]

#: Default seconds between two looks for other processes' writes.
DEFAULT_POLL = 0.005

#: Most seconds between two looks for expired sessions (while polling).
REAP_INTERVAL = 0.25

log = Logger()


def parseURL(url):
    """
    Split a C{local://} URL; a path without a leading C{/} is relative to
    the working directory.

    @return: C{(absolute path, "FULL" or "NORMAL", poll seconds)}
    @raise UsageError: for a malformed URL or an unknown parameter.
    """
    if not url.startswith("local://"):
        raise UsageError("not a local store URL: %r (expected local:///path/state.db)" % (url,))
    path, _, query = url[len("local://"):].partition("?")
    if not path:
        raise UsageError("local store URL %r names no file (expected local:///path/state.db)"
                         % (url,))
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - {"sync", "poll"})
    if unknown:
        raise UsageError("local store URL %r: unknown parameter %r (known: sync, poll)"
                         % (url, unknown[0]))
    sync = params.get("sync", ["full"])[-1].upper()
    if sync not in ("FULL", "NORMAL"):
        raise UsageError("local store URL %r: sync must be 'full' or 'normal'" % (url,))
    try:
        poll = float(params.get("poll", [DEFAULT_POLL])[-1])
    except ValueError:
        poll = -1.0
    if not 0 < poll <= 10:
        raise UsageError("local store URL %r: poll must be seconds in (0, 10]" % (url,))
    return os.path.abspath(path), sync, poll


def _cannotOpen(path, error):
    """
    @return: the one-line L{StoreUnavailable} for failing to open C{path}.
    """
    if isinstance(error, _OpenFailed):
        reason, advice = error.args
    else:
        reason = str(error).replace("\n", " ") or type(error).__name__
        if "not a database" in reason or "malformed" in reason:
            advice = ("the file is damaged or is not a p2 store: move it aside (a new store is"
                      " created in its place) or restore it from a backup")
        elif "readonly" in reason:
            advice = "make the file and its directory writable by this user"
        else:
            advice = "check that the file and its directory exist and are writable by this user"
    return StoreUnavailable(None, BACKEND, "cannot open local store at %s: %s; %s"
                            % (path, reason, advice))


def _openDatabase(db):
    """
    On the worker thread: create the directory of C{db}'s file if missing,
    check permissions, then L{_Database.open} it.

    @return: the keys reaped.
    """
    directory = os.path.dirname(db.path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise _OpenFailed("cannot create directory %s (%s)" % (directory, e.strerror),
                          "choose a path whose directory exists or can be created")
    for target, mode in ((directory, os.W_OK | os.X_OK), (db.path, os.R_OK | os.W_OK)):
        if os.path.exists(target) and not os.access(target, mode):
            raise _OpenFailed("permission denied on %s" % (target,),
                              "run as the user owning the store, or fix its permissions")
    return db.open()


class _Watch(object):
    """
    One watch: re-reads its subtree when told, with at most one read in
    flight (a request during a read marks it dirty: one more read after).
    """

    def __init__(self, store, prefix, callback):
        self.store = store
        self.prefix = prefix
        self.delivery = Delivery(callback, lambda _: store._forgetWatch(self))
        self._reading = self._dirty = False

    def covers(self, keys):
        return keys is None or any(inSubtree(k, self.prefix) for k in keys)

    def refresh(self):
        if self.delivery.cancelled:
            return
        if self._reading:
            self._dirty = True
            return
        self._reading = True
        d = self.store._call(self.store._db.snapshot, self.prefix)
        d.addCallbacks(self.delivery.offer, self._failed)
        d.addBoth(self._done)

    def _failed(self, f):
        log.failure("re-reading watched {prefix!r} failed; retrying", f, prefix=self.prefix)
        self.store._stale.add(self)

    def _done(self, _):
        self._reading = False
        if self._dirty:
            self._dirty = False
            self.refresh()


@implementer(IStore)
class LocalStore(SingleOpsMixin):
    """
    An L{IStore} on a SQLite file; open one with L{LocalStore.open}.

    @ivar url: the URL it was opened with.
    @ivar path: the absolute path of the file.
    """

    backend = BACKEND

    @classmethod
    def open(cls, url, reactor=None):
        """
        Open the store file named by C{url}, creating it if missing.

        @param reactor: provides threads and the wall clock (C{seconds()}).
        @return: L{Deferred} firing with a L{LocalStore}; fails with
            L{UsageError} for a malformed URL, L{StoreUnavailable} when the
            file cannot be opened.
        """
        if reactor is None:
            from twisted.internet import reactor
        try:
            path, sync, poll = parseURL(url)
        except UsageError:
            return defer.fail()
        return cls(url, path, sync, poll, reactor)._start()

    def __init__(self, url, path, sync, poll, reactor):
        self.url, self.path = url, path
        self._reactor, self._poll = reactor, poll
        self._notifier = None
        self._lastChange = 0.0
        self._chasing = None
        # KEEP_CHANGES as this module has it now (it may be patched).
        self._db = _Database(path, sync, reactor, KEEP_CHANGES)
        self._pool = ThreadPool(1, 1, name="p2-local-store")
        self._trigger = self._loop = self._closing = None
        self._watches, self._sessions, self._stale = [], [], set()
        self._polling = self._pollFailing = self._closed = False
        self._lastReap = 0.0

    def _start(self):
        self._pool.start()
        self._trigger = self._reactor.addSystemEventTrigger("during", "shutdown",
                                                            self._stopPool, atShutdown=True)

        def failed(f):
            self._stopPool()
            raise _cannotOpen(self.path, f.value)
        d = threads.deferToThreadPool(self._reactor, self._pool, _openDatabase, self._db)
        return d.addCallbacks(lambda reaped: self._changed(reaped) or self, failed)

    def _stopPool(self, atShutdown=False):
        if self._trigger is not None:
            if not atShutdown:  # a firing trigger cannot be removed
                self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
            self._pool.stop()

    def _call(self, f, *args, key=None):
        """
        Run C{f(*args)} on the worker thread.

        @return: L{Deferred} with its result; SQLite errors become
            L{StoreUnavailable} naming C{key}.
        """
        if self._closed:
            return defer.fail(StoreUnavailable(key, BACKEND, "the store was closed"))

        def translate(f):
            f.trap(sqlite3.Error)
            raise StoreUnavailable(key, BACKEND, "SQLite error on %s: %s; check the file and"
                                   " its disk" % (self.path, str(f.value).replace("\n", " ")))
        d = threads.deferToThreadPool(self._reactor, self._pool, f, *args)
        return d.addErrback(translate)

    def _write(self, fn, *args, key=None):
        """
        Run C{fn(txn, *args)} (a L{_Database} method) in a write transaction
        and tell our watches which keys it changed.

        @return: L{Deferred} with C{fn}'s result.
        """
        def written(result):
            self._changed(result[1])
            return result[0]
        return self._call(self._db.write, fn, *args, key=key).addCallback(written)

    def _changed(self, keys):
        """
        Re-read the watches covering C{keys} (C{None}: every watch).
        """
        if keys != []:
            for w in list(self._watches):
                if w.covers(keys):
                    w.refresh()

    # -- polling -----------------------------------------------------------

    def _updateLoop(self):
        """
        Poll while there are watches (for other processes' writes) or
        sessions (reaping for the host); otherwise not at all.
        """
        needed = not self._closed and bool(self._watches or self._sessions)
        if needed and self._loop is None:
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self._reactor
            self._loop.start(self._poll, now=False)
        elif not needed and self._loop is not None:
            self._loop.stop()
            self._loop = None
        notify = not self._closed and bool(self._watches)
        if notify and self._notifier is None:
            self._notifier = self._startNotifier()
        elif not notify and self._notifier:  # (False: none to be had here)
            self._notifier.loseConnection()
            self._notifier = None
            if self._chasing is not None:
                self._chasing.cancel()
                self._chasing = None

    def _startNotifier(self):
        """
        Look for others' writes as soon as inotify tells of a write to one
        of the store's files, when the platform and reactor allow it.

        @return: the L{inotify.INotify}, or C{False} (polling only).
        """
        if not IReactorFDSet.providedBy(self._reactor):
            return False
        try:
            from twisted.internet import inotify
            notifier = inotify.INotify(self._reactor)
        except Exception as e:  # not Linux, or out of inotify instances
            log.info("local store {path}: no inotify ({error}); polling every {poll}s only",
                     path=self.path, error=str(e), poll=self._poll)
            return False
        name = os.path.basename(self.path).encode()

        def written(ignored, path, mask):
            # The first write after a quiet poll is chased; the rest of a
            # burst is read at the poll, so that one look covers many.
            if path.basename().startswith(name) and self._chasing is None and \
                    self._reactor.seconds() - self._lastChange >= self._poll:
                self._chase(0.0)
        try:
            notifier.startReading()
            notifier.watch(FilePath(os.path.dirname(self.path).encode()),
                           mask=inotify.IN_MODIFY, callbacks=[written])
        except Exception as e:
            notifier.loseConnection()
            log.info("local store {path}: cannot watch its directory ({error}); polling "
                     "every {poll}s only", path=self.path, error=str(e), poll=self._poll)
            return False
        return notifier

    def _chase(self, delay):
        """
        Look now, and while nothing new is seen, again after 1, 2, 4 ...
        ms, until the poll takes over: a writer's commit becomes visible
        only after it wrote the C{-wal} (which inotify reports), once it
        flushed it and updated the WAL index (which it does not).
        """
        self._chasing = None
        before = self._lastChange
        self._tick()
        delay = max(delay * 2, 0.001)
        if self._lastChange == before and not self._closed and delay < self._poll:
            self._chasing = self._reactor.callLater(delay, self._chase, delay)

    def _tick(self):
        if self._polling or self._closed:
            return
        stale, self._stale = self._stale, set()
        for w in stale:
            w.refresh()
        changed = self._db.changedSince() or self._pollFailing
        now = self._reactor.seconds()
        if changed:
            self._lastChange = now
        reap = now - self._lastReap >= REAP_INTERVAL
        if reap:
            self._lastReap = now
        elif not changed:
            return
        self._polling = True
        d = self._call(self._db.poll, changed, reap)
        d.addCallbacks(self._polled, self._pollFailed)
        d.addBoth(lambda _: setattr(self, "_polling", False))

    def _polled(self, result):
        if self._pollFailing:
            self._pollFailing = False
            log.info("local store {path} readable again", path=self.path)
        for keys in result:
            self._changed(keys)

    def _pollFailed(self, f):
        if not self._pollFailing:
            self._pollFailing = True
            log.failure("polling local store {path} failed; still trying", f, path=self.path)

    # -- IStore ------------------------------------------------------------

    def get(self, key):
        return defer.maybeDeferred(
            lambda: self._call(self._db.get, checkKey(key, BACKEND), key=key))

    def list(self, prefix):
        return defer.maybeDeferred(
            lambda: self._call(self._db.snapshot, checkPrefix(prefix, BACKEND), key=prefix or None))

    def _one(self, op):
        def apply():
            checkOps([op], BACKEND)
            d = self._write(self._db.apply, [op], None, True, key=op.key)
            return d.addCallback(lambda results: results[0])
        return defer.maybeDeferred(apply)

    def transaction(self, ops):
        return defer.maybeDeferred(
            lambda: self._write(self._db.apply, checkOps(ops, BACKEND)))

    def watch(self, prefix, callback):
        """
        See L{IStore.watch}.

        @raise StoreUnavailable: if the store was closed.
        """
        checkPrefix(prefix, BACKEND)
        if self._closing is not None:
            raise StoreUnavailable(prefix or None, BACKEND, "the store was closed")
        w = _Watch(self, prefix, callback)
        self._watches.append(w)
        w.refresh()
        self._updateLoop()
        return w.delivery

    def _forgetWatch(self, w):
        if w in self._watches:
            self._watches.remove(w)
        self._stale.discard(w)
        self._updateLoop()

    def session(self, ttl):
        sid, ttl = uuid.uuid4().hex, float(ttl)

        def made(_):
            s = LocalSession(self, sid, ttl)
            self._sessions.append(s)
            self._updateLoop()
            return s
        return self._write(self._db.createSession, sid, ttl).addCallback(made)

    def _forgetSession(self, s):
        if s in self._sessions:
            self._sessions.remove(s)
        self._updateLoop()

    def close(self):
        """
        Stop watches, end this store's sessions (deleting their keys), stop
        the worker thread and close the file.  Idempotent.

        @return: L{Deferred} firing with C{None} when done.
        """
        if self._closing is None:
            self._closing = self._shutdown()
        d = defer.Deferred()
        self._closing.addBoth(lambda _: d.callback(None))
        return d

    @defer.inlineCallbacks
    def _shutdown(self):
        for w in list(self._watches):
            w.delivery.cancel()
        yield defer.DeferredList([s.close() for s in list(self._sessions)])
        self._closed = True
        self._updateLoop()
        try:
            yield threads.deferToThreadPool(self._reactor, self._pool, self._db.close)
        except Exception:
            log.failure("closing local store {path}", path=self.path)
        self._stopPool()


@implementer(ILock)
class LocalLock(object):
    """
    A lock held by a L{LocalSession}: an ephemeral key.
    """

    def __init__(self, session, entry):
        self._session = session
        self.key = entry.key
        self.version = entry.version

    def release(self):
        """
        Delete the lock's key if this session still owns it.

        @return: L{Deferred} firing with C{None}.
        """
        s = self._session
        d = s.store._write(s.store._db.release, s.id, self.key, key=self.key)
        return d.addCallback(lambda _: None)


@implementer(ISession)
class LocalSession(SessionMixin):
    """
    A session row that this process heartbeats every C{ttl / 3} seconds.  It
    is lost once its row is gone (reaped after expiry, e.g. while this
    process was stopped) or when it is closed.
    """

    backend = BACKEND
    lockClass = LocalLock

    def __init__(self, store, sid, ttl):
        self.store, self.id, self.ttl = store, sid, ttl
        self.lost = self._beating = False
        self._waiters = []
        self._heartbeat = task.LoopingCall(self._beat)
        self._heartbeat.clock = store._reactor
        self._heartbeat.start(ttl / 3.0, now=False)

    def _beat(self):
        if self._beating or self.lost:
            return
        self._beating = True

        def done(alive):
            if not alive:
                log.warn("local store session {id} expired; its keys are gone", id=self.id)
                self._end()

        def failed(f):
            log.failure("heartbeat of local store session {id} failed", f, id=self.id)
        d = self.store._write(self.store._db.heartbeat, self.id, self.ttl)
        d.addCallbacks(done, failed)
        d.addBoth(lambda _: setattr(self, "_beating", False))

    def _end(self):
        if self.lost:
            return
        self.lost = True
        if self._heartbeat.running:
            self._heartbeat.stop()
        self.store._forgetSession(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def createEphemeral(self, key, value):
        def create():
            if self.lost:
                raise SessionLost(key, BACKEND)
            checkValue(checkKey(key, BACKEND), value, BACKEND)
            return self.store._write(self.store._db.createEphemeral, self.id, key, value, key=key)

        def lost(f):
            if f.check(SessionLost):
                self._end()
            return f
        return defer.maybeDeferred(create).addErrback(lost)

    def close(self):
        """
        Delete this session's row and keys now.

        @return: L{Deferred} firing with C{None}, also if the store failed
            (the keys then vanish when the session expires).
        """
        if self.lost:
            return defer.succeed(None)
        if self._heartbeat.running:
            self._heartbeat.stop()

        def failed(f):
            log.failure("closing session {id}; its keys vanish when it expires", f, id=self.id)
        d = self.store._write(self.store._db.dropSession, self.id)
        return d.addErrback(failed).addBoth(lambda _: self._end())
