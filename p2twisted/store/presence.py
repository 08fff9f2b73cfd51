# -*- test-case-name: tests.test_presence -*-
"""
Keeping an ephemeral key present for as long as this process runs, across
store outages and session expiry: the agent's C{machines/<node>}.

A session, once lost, stays lost (locks held under it must stop protecting
work); L{Presence} therefore opens a fresh session and creates the key again.
When the key still exists from an earlier session (an agent restarted faster
than its old session expired) it retries until that one is gone -- unless
C{takeOver} recognises the holder as a dead predecessor (same machine, its
process gone), whose key is then deleted and created afresh at once.
"""

import random

from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.logger import Logger

from p2twisted.errors import KeyExists, StoreError

log = Logger()


class Presence(service.Service):
    """
    Keeps C{key} present as an ephemeral key holding C{value()}.

    @param retryDelay: seconds before the first retry while the key cannot
        be had; doubling (Twisted's L{backoffPolicy}) up to C{maxDelay}.
    @param jitter: a callable adding seconds to each retry delay (default:
        up to C{retryDelay} at random).
    @ivar session: the current L{ISession}, or C{None} while there is none.
    """

    def __init__(self, store, key, value, ttl, clock, retryDelay=1.0, maxDelay=30.0,
                 onPresent=None, takeOver=None, jitter=None):
        self.store = store
        self.key = key
        self.value = value
        self.ttl = ttl
        self.clock = clock
        self.retryDelay = retryDelay
        self.maxDelay = maxDelay
        self.session = None
        self.onPresent = onPresent
        self.takeOver = takeOver
        if jitter is None:
            jitter = lambda: random.random() * retryDelay  # noqa: E731
        self._delays = backoffPolicy(retryDelay, maxDelay, 2.0, jitter=jitter)
        self._failures = 0
        self._held = False
        self._call = None
        self._watch = None
        self._establishing = False
        self._present = []

    def startService(self):
        service.Service.startService(self)
        self._establish()

    def stopService(self):
        service.Service.stopService(self)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._unwatch()
        session, self.session = self.session, None
        if session is not None and not session.lost:
            # Its ephemeral key goes now, not when the session expires: an
            # agent waiting for it takes over at once (it watches the key).
            return session.close().addErrback(
                lambda f: log.failure("closing the session holding {key}", f, key=self.key))

    @property
    def present(self):
        """Whether the key is held by a live session of ours."""
        return self._held and self.session is not None and not self.session.lost

    def whenPresent(self):
        """
        @return: L{Deferred} firing once the key is present.
        """
        if self.present:
            return defer.succeed(None)
        d = defer.Deferred()
        self._present.append(d)
        return d

    def update(self):
        """
        Write the current C{value()} to the key (keeping it ephemeral).

        @return: L{Deferred} firing when written (or at once when not present:
            the next creation writes the fresh value).
        """
        if not self.present:
            return defer.succeed(None)
        return self.store.put(self.key, self.value()).addErrback(
            lambda f: log.warn("cannot update {key}: {error}", key=self.key,
                               error=f.getErrorMessage()))

    def _establish(self):
        if self._establishing:
            return defer.succeed(None)
        self._establishing = True
        d = self._tryEstablish()

        def done(result):
            self._establishing = False
            return result
        d.addBoth(done)
        d.addErrback(lambda f: log.failure("registering {key}", f, key=self.key))
        return d

    def _waitForHolder(self):
        """
        Watch the key while an earlier session holds it, so as to try again
        the moment it is gone (the holder stopped and closed its session)
        rather than at the next retry.
        """
        if self._watch is None:
            self._watch = self.store.watch(self.key, self._holderChanged)

    def _holderChanged(self, snapshot):
        if self.key in snapshot or self._held or not self.running:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
            self._call = None
            log.info("{key} was released; registering", key=self.key)
            self._establish()

    def _unwatch(self):
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()

    @defer.inlineCallbacks
    def _tryEstablish(self):
        self._call = None
        if not self.running:
            return
        try:
            if self.session is None or self.session.lost:
                self.session = yield self.store.session(self.ttl)
            try:
                yield self.session.createEphemeral(self.key, self.value())
            except KeyExists:
                entry = yield self.store.get(self.key)
                if entry is not None and entry.owner == getattr(self.session, "id", None):
                    # Created by this very session (its reply was lost): held.
                    yield self.store.put(self.key, self.value())
                elif (yield self._takeOver(entry)):
                    yield self.session.createEphemeral(self.key, self.value())
                else:
                    raise
        except KeyExists:
            log.info("{key} still held by an earlier session; retrying", key=self.key)
            self._retry()
            self._waitForHolder()
            return
        except StoreError as e:
            log.warn("cannot register {key}: {error}; retrying", key=self.key, error=str(e))
            self._retry()
            return
        if not self.running:
            yield self.session.close()
            return
        self._failures = 0
        self._held = True
        self._unwatch()
        log.info("registered {key}", key=self.key, event="present")
        session = self.session
        session.whenLost().addCallback(lambda _: self._lost(session))
        waiters, self._present = self._present, []
        for d in waiters:
            d.callback(None)
        if self.onPresent is not None:
            self.onPresent()

    @defer.inlineCallbacks
    def _takeOver(self, entry):
        """
        Delete the key (C{entry}, as just read) if C{takeOver} says its
        holder is a dead predecessor.

        @return: L{Deferred} firing with whether it is gone.
        """
        if entry is None:
            return True  # gone meanwhile
        if self.takeOver is None:
            return False
        if not self.takeOver(entry.value):
            return False
        try:
            yield self.store.delete(self.key, entry.version)
        except StoreError:
            return False
        log.info("{key} was held by a predecessor that is gone; took it over", key=self.key,
                 event="takeover")
        return True

    def _lost(self, session):
        if not self.running or session is not self.session:
            return
        log.warn("session holding {key} was lost; registering again", key=self.key, event="lost")
        self.session = None
        self._held = False
        self._establish()

    def _retry(self):
        if self.running:
            self._call = self.clock.callLater(self._delays(self._failures), self._establish)
            self._failures += 1
