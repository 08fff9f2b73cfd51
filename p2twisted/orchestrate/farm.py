# -*- test-case-name: tests.test_orchestrate_farm -*-
"""
The one generic farm: claims the objects of one tree (replication
controllers, rolls) through session locks and runs a controller per claimed
object.

Several farm processes share the work.  Each holds a store session; an
object is claimed by taking C{locks/<kind>/<id>} under it, and only the
claimer runs the object's controller.  The moment the session is lost every
controller stops (its locks are gone: another farm may hold them already),
and the farm opens a new session and claims again.  A killed farm's locks
vanish with its session, and the others, watching C{locks/<kind>}, take its
objects over within the session TTL.

Watches are hints, the periodic resync is the truth: the farm watches the
object tree and the lock tree, and every C{resyncInterval} seconds lists
both again and asks every controller to reconcile.

Failsafe: a farm that sees no objects where it saw some does nothing at all
(releases nothing, asks nobody to reconcile) and says so loudly, until
objects reappear -- unless its tree empties as the normal end of work
(rolls: C{holdWhenEmpty=False}), or a person deleted the last object (the
delete's transaction names it in C{status/deleted/<tree>}).
"""

import json
import os
import random
import socket
import time

from automat import MethodicalMachine
from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from p2twisted.errors import AlreadyLocked, SessionLost, StoreError
from p2twisted.orchestrate.claim import Claim
from p2twisted.records.base import CorruptRecord
from p2twisted.records.controllers import Deletion
from p2twisted.store import keys
from p2twisted.tracing import TracedMachine

log = Logger()


class IController(Interface):
    """
    The worker a farm runs for one claimed object.
    """

    objectId = Attribute("The id of the object it works on.")

    cost = Attribute("Seconds of CPU its last decision took (0 before one): news waits "
                     "PACE times the farm's total after a reconcile began, so a farm whose "
                     "decisions are dear answers a stream of news in coarser steps.")

    def start():
        """
        Begin work on the object (quick; nothing to wait for).  The farm asks
        for a first L{reconcile} right after.
        """

    def reconcile():
        """
        Converge the object once: read, decide, write (every write fenced by
        the farm's lock).  The farm never calls it again before the returned
        L{Deferred} fires; news arriving meanwhile is coalesced into one more
        call.

        @return: L{Deferred} firing when done: with C{None}, or with a number
            of seconds after which to reconcile again even without news (a
            wait with a deadline).  A failure is logged and the reconcile
            retried with backoff (and on news, and at the resync).
        """

    def stop():
        """
        Stop working on the object: the farm lost it (session lost, record
        deleted, farm stopping).  A reconcile under way may still finish, but
        its writes fail the lock check.

        @return: L{Deferred} firing when stopped.
        """


#: News waits at least this many times as long as the last decisions of a
#: farm's controllers took together (their C{cost}), after a reconcile
#: began: a farm answering a fleet's stream of news spends at most a fifth
#: of a core on it.
PACE = 4

#: What L{Farm._claimFailed} returns to have the claim tried again.
_AGAIN = object()


def defaultHolder(kind, clock):
    """
    @return: a function of a session giving the JSON a lock of C{kind}
        holds: who claimed it (host, pid, session) and since when (by
        C{clock}).
    """
    host = socket.gethostname()

    def holder(session):
        return json.dumps({"kind": kind, "host": host, "pid": os.getpid(), "session": session.id,
                           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                  time.gmtime(clock.seconds()))},
                          sort_keys=True).encode("utf-8")
    return holder


class Farm(TracedMachine, service.Service):
    """
    Claims the objects under C{tree} and runs C{controllerFactory(objectId,
    lock)} (an L{IController}) for each one claimed.

    States (an automat machine; L{tracer} sees every transition)::

        idle --start--> opening --opened--> serving --lost--> opening
        opening --openFailed--> waiting --retry (backoff timer)--> opening
        any --stop--> stopped --start--> opening

    @param kind: the lock and status kind, e.g. C{"rc"}: locks are
        C{locks/<kind>/<id>}.
    @param tree: the object tree, e.g. C{"replication_controllers"}; an
        object is a key one segment below it.
    @param ttl: seconds a session outlives this process.
    @param resyncInterval: seconds between full resyncs.
    @param retryDelay: seconds before retrying to open a session (or a failed
        reconcile), doubling (Twisted's L{backoffPolicy}) up to C{maxDelay},
        plus C{jitter()}.
    @param holder: a function of the session giving the bytes a lock holds.
    @param newsInterval: the least seconds between the starts of two
        reconciles of one object prompted by news about the cluster
        (L{nudge}), and at least L{PACE} times what the last decisions of
        all the farm's controllers cost together (L{newsPace}); a change to
        the object's own record, a retry or a controller's own deadline do
        not wait.
    @param holdWhenEmpty: whether the failsafe holds: C{False} for a tree
        whose emptying is the normal end of work (rolls), whose controllers
        are then released.
    @ivar claims: C{{objectId: L{Claim}}} of the objects claimed.
    @ivar failsafe: whether the farm is holding still because the tree
        turned empty.
    """

    _machine = MethodicalMachine()
    _setTrace = _machine._setTrace

    def __init__(self, store, kind, tree, controllerFactory, clock, ttl=15.0, resyncInterval=30.0,
                 retryDelay=1.0, maxDelay=30.0, holder=None, jitter=None, holdWhenEmpty=True,
                 newsInterval=0.0):
        self.store = store
        self.newsInterval = newsInterval
        #: Seconds news waits after a reconcile began, as of the last news.
        self.newsPace = newsInterval
        self.holdWhenEmpty = holdWhenEmpty
        self.kind = kind
        self.tree = tree
        self.controllerFactory = controllerFactory
        self.clock = clock
        self.ttl = ttl
        self.resyncInterval = resyncInterval
        self.holder = holder if holder is not None else defaultHolder(kind, clock)
        if jitter is None:
            jitter = lambda: random.random() * retryDelay  # noqa: E731
        self._delays = backoffPolicy(retryDelay, maxDelay, 2.0, jitter=jitter)
        self._failures = 0
        self._attempt = 0
        self._retryCall = None
        self.session = None
        self.claims = {}
        self._claiming = set()
        self._objects = {}
        self._locked = set()
        #: How many lock-tree snapshots were seen (a claim refused before
        #: the latest one may be out of date).
        self._lockNews = 0
        self._sawSome = False
        self.failsafe = False
        #: Whether the failsafe was announced (loudly).
        self._alarmed = False
        self._watches = []
        self._resync = None
        self.state = "idle"
        self._traceTransitions()

    def startService(self):
        service.Service.startService(self)
        self._start()

    def stopService(self):
        """
        Stop every controller and close the session (its locks go now, so
        another farm takes over at once).

        @return: L{Deferred} firing once done.
        """
        service.Service.stopService(self)
        waits = [d for d in self._stop() if isinstance(d, defer.Deferred)]
        return defer.gatherResults(waits).addCallback(lambda _: None)

    def nudge(self):
        """
        News about the cluster (health, labels...): ask every controller to
        reconcile.
        """
        if self.state == "serving" and not self.failsafe:
            self._pace()
            for claim in list(self.claims.values()):
                claim.poke(news=True)

    def _pace(self):
        """
        Set L{newsPace}: C{newsInterval}, or L{PACE} times the CPU the last
        decisions of all the farm's controllers took, if longer -- news
        wakes every controller, so a farm of many (hundreds of RCs) answers
        it in coarser steps than a farm of few, and spends at most a fifth
        of a core on it either way.
        """
        cost = sum(claim.controller.cost for claim in self.claims.values())
        self.newsPace = max(self.newsInterval, PACE * cost)

    def recordsShown(self, records):
        """
        The controllers' snapshots now show C{records} (C{{key: Entry}} of
        the farm's tree): a claimed object whose record they show changed
        reconciles now, over a snapshot that has its new record (the farm's
        own watch of the tree may have poked it before the snapshots showed
        the change: it decided over the old record); the others take it as
        news (another object's record may matter to them: a roll's RCs).
        """
        if self.state != "serving" or self.failsafe:
            return
        shown = self._ids(records, self.tree)
        self._pace()
        for objectId, claim in sorted(self.claims.items()):
            version = shown.get(objectId)
            if version is not None and version != claim.shown:
                claim.shown = version
                claim.poke()
            else:
                claim.poke(news=True)

    def lockKey(self, objectId):
        return keys.lock(self.kind, objectId)

    # -- the machine -----------------------------------------------------------

    @_machine.state(initial=True)
    def _idle(self):
        "Not started."

    @_machine.state()
    def _opening(self):
        "Opening a session."

    @_machine.state()
    def _waiting(self):
        "Opening a session failed; a retry is scheduled."

    @_machine.state()
    def _serving(self):
        "Holding a session: watching, claiming, running controllers."

    @_machine.state()
    def _stopped(self):
        "Stopped: no controller runs, the session is closed."

    @_machine.input()
    def _start(self):
        "The service starts."

    @_machine.input()
    def _stop(self):
        "The service stops."

    @_machine.input()
    def _opened(self):
        "A session was opened (it is C{self.session})."

    @_machine.input()
    def _openFailed(self):
        "The store could not open a session."

    @_machine.input()
    def _retry(self):
        "The retry delay is over."

    @_machine.input()
    def _lost(self):
        "The session was lost."

    @_machine.output()
    def _open(self):
        self._attempt += 1
        self._tryOpen(self._attempt)

    @_machine.output()
    def _forgetAttempt(self):
        self._attempt += 1

    @_machine.output()
    def _scheduleRetry(self):
        delay = self._delays(self._failures)
        self._failures += 1
        self._retryCall = self.clock.callLater(delay, self._retry)

    @_machine.output()
    def _cancelRetry(self):
        if self._retryCall is not None and self._retryCall.active():
            self._retryCall.cancel()
        self._retryCall = None

    @_machine.output()
    def _serve(self):
        self._failures = 0
        session = self.session
        log.info("{kind} farm: session {session} open; claiming {tree}", kind=self.kind,
                 session=session.id, tree=self.tree, event="session")
        self._locked, self._objects = set(), {}
        self._watches = [self.store.watch(keys.lockTree(self.kind), self._locksChanged),
                         self.store.watch(self.tree, self._treeChanged)]
        self._resync = task.LoopingCall(self.resync)
        self._resync.clock = self.clock
        self._resync.start(self.resyncInterval, now=False)
        session.whenLost().addCallback(lambda _: self._sessionLost(session))

    @_machine.output()
    def _drop(self):
        log.warn("{kind} farm: session {session} lost; stopped {count} controller(s), claiming "
                 "again", kind=self.kind, session=self.session.id, count=len(self.claims),
                 event="session-lost")
        self._quiet()
        self.session = None

    @_machine.output()
    def _teardown(self):
        stopped = self._quiet()
        session, self.session = self.session, None

        def close(_):
            if session.lost:
                return None
            return session.close().addErrback(lambda f: log.failure(
                "{kind} farm: closing its session; its locks go when it expires", f,
                kind=self.kind))
        log.info("{kind} farm stopping: releasing {count} object(s)", kind=self.kind,
                 count=len(stopped), event="stopping")
        return defer.gatherResults(stopped).addCallback(close)

    _idle.upon(_start, enter=_opening, outputs=[_open])
    _idle.upon(_stop, enter=_stopped, outputs=[])
    _opening.upon(_opened, enter=_serving, outputs=[_serve])
    _opening.upon(_openFailed, enter=_waiting, outputs=[_scheduleRetry])
    _opening.upon(_stop, enter=_stopped, outputs=[_forgetAttempt])
    _waiting.upon(_retry, enter=_opening, outputs=[_open])
    _waiting.upon(_stop, enter=_stopped, outputs=[_cancelRetry])
    _serving.upon(_lost, enter=_opening, outputs=[_drop, _open])
    _serving.upon(_stop, enter=_stopped, outputs=[_teardown])
    _stopped.upon(_stop, enter=_stopped, outputs=[])
    _stopped.upon(_start, enter=_opening, outputs=[_open])

    @defer.inlineCallbacks
    def _tryOpen(self, attempt):
        try:
            session = yield self.store.session(self.ttl)
        except Exception as e:
            if attempt == self._attempt:
                if isinstance(e, StoreError):
                    log.warn("{kind} farm: cannot open a session: {error}; retrying",
                             kind=self.kind, error=str(e), event="session-failed")
                else:
                    log.failure("{kind} farm: opening a session; retrying", kind=self.kind)
                self._openFailed()
            return
        if attempt != self._attempt:  # stopped meanwhile
            yield session.close()
            return
        self.session = session
        self._opened()

    def _sessionLost(self, session):
        if session is self.session and self.state == "serving":
            self._lost()

    def _quiet(self):
        """
        Stop watching, resyncing and every controller.

        @return: the L{Deferred}s of the claims' release (controller stopped
            and lock released).
        """
        for watch in self._watches:
            watch.cancel()
        self._watches = []
        if self._resync is not None and self._resync.running:
            self._resync.stop()
        self._resync = None
        claims, self.claims = self.claims, {}
        self._claiming = set()
        return [claim.stop() for claim in claims.values()]

    # -- claiming --------------------------------------------------------------

    def _ids(self, snapshot, prefix):
        """
        @return: C{{id: version}} of the keys one segment below C{prefix}.
        """
        depth = len(keys.parse(prefix)) + 1
        ids = {}
        for key, entry in snapshot.items():
            parts = keys.parse(key)
            if len(parts) == depth:
                ids[parts[-1]] = entry.version
        return ids

    def _treeChanged(self, snapshot):
        self._objectsSeen(self._ids(snapshot, self.tree))

    def _locksChanged(self, snapshot):
        self._locksSeen(snapshot)
        for objectId in sorted(self._objects):
            self._claim(objectId)

    def _locksSeen(self, snapshot):
        locked = self._ids(snapshot, keys.lockTree(self.kind))
        self._locked = set(locked)
        self._lockNews += 1
        for objectId, claim in list(self.claims.items()):
            if locked.get(objectId) != claim.lock.version:
                self._checkStillHeld(claim)

    def _objectsSeen(self, objects, poke=True):
        if self.state != "serving":
            return
        if not objects and self._sawSome and self.holdWhenEmpty:
            if not self.failsafe:
                self.failsafe = True
                self._emptied(dict(self._objects))
            return
        if self.failsafe:
            if self._alarmed:
                log.warn("{kind} farm: {count} object(s) in {tree} again; failsafe over",
                         kind=self.kind, count=len(objects), tree=self.tree,
                         event="failsafe-over")
            self.failsafe = self._alarmed = False
        self._sawSome = self._sawSome or bool(objects)
        self._objects = objects
        for objectId in sorted(set(self.claims) - set(objects)):
            self._release(objectId, "its record vanished")
        for objectId, version in sorted(objects.items()):
            claim = self.claims.get(objectId)
            if claim is None:
                self._claim(objectId)
            elif claim.version != version:
                claim.version = version
                if poke:
                    claim.poke()

    @defer.inlineCallbacks
    def _emptied(self, held):
        """
        The tree turned empty where it held C{held} (C{{id: version}}); the
        farm holds still (L{failsafe}) while it asks why.  A person who
        deleted the last object left a L{Deletion} naming it, at that
        version, in the delete's own transaction: then the farm carries on
        (releasing it) and says so calmly.  Anything else -- a wiped tree,
        several objects gone at once, no answer -- keeps the failsafe, said
        loudly.
        """
        why = "no deletion names them"
        try:
            entry = yield self.store.get(keys.deleted(self.tree))
            if entry is not None and Deletion.fromEntry(entry.key, entry).names(held):
                why = None
        except (StoreError, CorruptRecord) as e:
            why = "cannot read the last deletion: %s" % (e,)
        if not self.failsafe:
            return  # objects came back meanwhile
        if why is None:
            log.info("{kind} farm: {tree} is empty: {ids} deleted by a person", kind=self.kind,
                     tree=self.tree, ids=", ".join(sorted(held)), event="deleted-last")
            self.failsafe = self._sawSome = False
            self._objectsSeen({})
            return
        self._alarmed = True
        log.critical(
            "{kind} farm FAILSAFE: {tree} is empty where it held {count} object(s) ({why}); "
            "changing nothing (no release, no reconcile) until objects reappear",
            kind=self.kind, tree=self.tree, count=len(held), why=why, event="failsafe")

    def _claim(self, objectId):
        if (self.state != "serving" or self.failsafe or objectId in self.claims
                or objectId in self._claiming or objectId in self._locked):
            return
        claiming, session = self._claiming, self.session
        claiming.add(objectId)
        log.debug("{kind} {object}: claiming", kind=self.kind, object=objectId, event="claiming")
        news = self._lockNews
        d = session.lock(self.lockKey(objectId), self.holder(session))
        d.addCallbacks(lambda lock: self._claimed(session, objectId, lock),
                       lambda f: self._claimFailed(objectId, f, news))
        d.addErrback(lambda f: log.failure("{kind} {object}: claiming", f, kind=self.kind,
                                           object=objectId))

        def done(result):
            claiming.discard(objectId)
            if result is _AGAIN:
                self._claim(objectId)
        d.addCallback(done)

    def _claimed(self, session, objectId, lock):
        if session is not self.session or self.state != "serving":
            if not session.lost:
                return lock.release()
            return None
        if objectId not in self._objects or self.failsafe:
            return lock.release()
        try:
            controller = self.controllerFactory(objectId, lock)
        except Exception:
            log.failure("{kind} {object}: cannot make its controller; releasing it",
                        kind=self.kind, object=objectId)
            return lock.release()
        claim = Claim(self, objectId, lock, controller, self._objects[objectId])
        self.claims[objectId] = claim
        log.info("{kind} {object}: claimed", kind=self.kind, object=objectId, event="claimed")
        controller.start()
        claim.poke()

    def _claimFailed(self, objectId, failure, news):
        if failure.check(AlreadyLocked):
            log.debug("{kind} {object}: held by another farm", kind=self.kind, object=objectId)
            if news == self._lockNews:
                self._locked.add(objectId)
            elif objectId not in self._locked:
                # The lock watch said it went away after this attempt began
                # (its holder died meanwhile): try again, not at the resync.
                return _AGAIN
        elif failure.check(SessionLost):
            pass  # whenLost says so
        elif failure.check(StoreError):
            log.warn("{kind} {object}: cannot claim: {error}; retrying at the next resync",
                     kind=self.kind, object=objectId, error=failure.getErrorMessage())
        else:
            return failure

    def _release(self, objectId, why):
        claim = self.claims.pop(objectId)
        log.info("{kind} {object}: released ({why})", kind=self.kind, object=objectId, why=why,
                 event="released")
        d = claim.stop()
        d.addCallback(lambda _: claim.lock.release())
        d.addErrback(lambda f: log.warn("{kind} {object}: releasing its lock: {error}",
                                        kind=self.kind, object=objectId,
                                        error=f.getErrorMessage()))
        return d

    @defer.inlineCallbacks
    def _checkStillHeld(self, claim):
        """
        The lock watch no longer shows C{claim}'s lock: if the store agrees
        (someone deleted it), stop the claim; the object is claimed again.
        """
        try:
            entry = yield self.store.get(claim.lock.key)
        except StoreError:
            return
        if self.claims.get(claim.objectId) is not claim:
            return
        if entry is None or entry.version != claim.lock.version:
            log.warn("{kind} {object}: its lock {key} was taken away; stopping its controller",
                     kind=self.kind, object=claim.objectId, key=claim.lock.key,
                     event="lock-lost")
            del self.claims[claim.objectId]
            yield claim.stop()
            if entry is None:
                self._locked.discard(claim.objectId)
                if claim.objectId in self._objects:
                    self._claim(claim.objectId)

    @defer.inlineCallbacks
    def resync(self):
        """
        List the object and lock trees again, claim and release as they say,
        and ask every controller to reconcile.  Failures are logged.

        @return: L{Deferred} firing when done.
        """
        session = self.session
        if self.state != "serving":
            return
        try:
            records, locks = yield defer.gatherResults(
                [self.store.list(self.tree), self.store.list(keys.lockTree(self.kind))],
                consumeErrors=True)
        except defer.FirstError as e:
            log.warn("{kind} farm: resync failed: {error}", kind=self.kind,
                     error=e.subFailure.getErrorMessage(), event="resync-failed")
            return
        if session is not self.session or self.state != "serving":
            return
        self._locksSeen(locks)
        self._objectsSeen(self._ids(records, self.tree), poke=False)
        self.nudge()
