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

from automat import MethodicalMachine
from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.logger import Logger

from p2twisted.errors import KeyExists, StoreError
from p2twisted.tracing import TracedMachine

log = Logger()


class Presence(TracedMachine, service.Service):
    """
    Keeps C{key} present as an ephemeral key holding C{value()}.

    States (an automat machine; L{tracer} sees every transition)::

        idle --start--> registering --registered--> present --lost--> registering
                        registering --heldElsewhere/failed--> waiting
        waiting --retry (timer) / released (the key was deleted)--> registering
        registering --released--> registering (noted: if the attempt then finds
                                  the key held, it is retried at once)
        any --stop--> stopped --start--> registering

    @param retryDelay: seconds before the first retry while the key cannot
        be had; doubling (Twisted's L{backoffPolicy}) up to C{maxDelay}.
    @param jitter: a callable adding seconds to each retry delay (default:
        up to C{retryDelay} at random).
    @ivar session: the current L{ISession}, or C{None} while there is none.
    @ivar state: the machine's state.
    """

    _machine = MethodicalMachine()
    _setTrace = _machine._setTrace

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
        self._releasedMeanwhile = False
        self._call = None
        self._watch = None
        self._present = []
        self.state = "idle"
        self._traceTransitions()

    def startService(self):
        service.Service.startService(self)
        self._start()

    def stopService(self):
        """
        Stop keeping the key, and close the session: its ephemeral key goes
        now, not when the session expires, so an agent waiting for it (it
        watches the key) takes over at once.

        @return: L{Deferred} firing once the session is closed.
        """
        service.Service.stopService(self)
        return self._stop()

    @property
    def present(self):
        """Whether the key is held by a live session of ours."""
        return self.state == "present" and self.session is not None and not self.session.lost

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

    # -- the machine -----------------------------------------------------------

    @_machine.state(initial=True)
    def _idle(self):
        "Not started."

    @_machine.state()
    def _registering(self):
        "Creating the key (opening a session first if needed)."

    @_machine.state()
    def _waiting(self):
        "The key could not be had; a retry is scheduled (and the key watched)."

    @_machine.state()
    def _present_(self):
        "The key is held by our session."

    @_machine.state()
    def _stopped(self):
        "Stopped: the session is closed."

    @_machine.input()
    def _start(self):
        "The service starts."

    @_machine.input()
    def _stop(self):
        "The service stops."

    @_machine.input()
    def _registered(self):
        "The key was created by our session."

    @_machine.input()
    def _heldElsewhere(self):
        "Another live session holds the key."

    @_machine.input()
    def _failed(self):
        "The store failed."

    @_machine.input()
    def _retry(self):
        "The retry delay is over."

    @_machine.input()
    def _released(self):
        "The key was deleted (its holder stopped)."

    @_machine.input()
    def _lost(self):
        "The session holding the key was lost."

    @_machine.output()
    def _register(self):
        self._releasedMeanwhile = False
        d = self._tryRegister()
        d.addErrback(lambda f: log.failure("registering {key}", f, key=self.key))

    @_machine.output()
    def _scheduleRetry(self):
        self._call = self.clock.callLater(self._delays(self._failures), self._retry)
        self._failures += 1

    @_machine.output()
    def _noteReleased(self):
        # The attempt under way may have read the key before it went.
        self._releasedMeanwhile = True

    @_machine.output()
    def _retryIfReleased(self):
        """
        Try again at once if the key was deleted while the attempt that found
        it held was under way (the watch told us then, not now).
        """
        if self._releasedMeanwhile:
            self._released()

    @_machine.output()
    def _cancelRetry(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    @_machine.output()
    def _watchHolder(self):
        """
        Watch the key while an earlier session holds it, so as to try again
        the moment it is gone (the holder stopped and closed its session)
        rather than at the next retry.
        """
        if self._watch is None:
            self._watch = self.store.watch(self.key, self._holderChanged)

    @_machine.output()
    def _unwatch(self):
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()

    @_machine.output()
    def _announce(self):
        self._failures = 0
        log.info("registered {key}", key=self.key, event="present")
        session = self.session
        session.whenLost().addCallback(lambda _: self._sessionLost(session))
        waiters, self._present = self._present, []
        for d in waiters:
            d.callback(None)
        if self.onPresent is not None:
            self.onPresent()

    @_machine.output()
    def _forgetSession(self):
        log.warn("session holding {key} was lost; registering again", key=self.key, event="lost")
        self.session = None

    @_machine.output()
    def _closeSession(self):
        session, self.session = self.session, None
        if session is None or session.lost:
            return defer.succeed(None)
        return session.close().addErrback(
            lambda f: log.failure("closing the session holding {key}", f, key=self.key))

    _idle.upon(_start, enter=_registering, outputs=[_register])
    _idle.upon(_stop, enter=_stopped, outputs=[_closeSession], collector=lambda v: v[-1])

    _registering.upon(_registered, enter=_present_, outputs=[_unwatch, _announce])
    _registering.upon(_heldElsewhere, enter=_waiting,
                      outputs=[_scheduleRetry, _watchHolder, _retryIfReleased])
    _registering.upon(_failed, enter=_waiting, outputs=[_scheduleRetry])
    _registering.upon(_released, enter=_registering, outputs=[_noteReleased])
    _registering.upon(_stop, enter=_stopped, outputs=[_unwatch, _closeSession],
                      collector=lambda v: v[-1])

    _waiting.upon(_retry, enter=_registering, outputs=[_register])
    _waiting.upon(_released, enter=_registering, outputs=[_cancelRetry, _register])
    _waiting.upon(_stop, enter=_stopped, outputs=[_cancelRetry, _unwatch, _closeSession],
                  collector=lambda v: v[-1])

    _present_.upon(_lost, enter=_registering, outputs=[_forgetSession, _register])
    _present_.upon(_released, enter=_present_, outputs=[])
    _present_.upon(_stop, enter=_stopped, outputs=[_closeSession], collector=lambda v: v[-1])

    # An attempt in flight when stopped ends here: a key it made goes with
    # its session.
    _stopped.upon(_registered, enter=_stopped, outputs=[_closeSession])
    _stopped.upon(_heldElsewhere, enter=_stopped, outputs=[_closeSession])
    _stopped.upon(_failed, enter=_stopped, outputs=[_closeSession])
    _stopped.upon(_released, enter=_stopped, outputs=[])
    _stopped.upon(_lost, enter=_stopped, outputs=[])
    _stopped.upon(_stop, enter=_stopped, outputs=[_closeSession], collector=lambda v: v[-1])
    _stopped.upon(_start, enter=_registering, outputs=[_register])

    def _holderChanged(self, snapshot):
        if self.key not in snapshot and self.state in ("waiting", "registering"):
            log.info("{key} was released; registering", key=self.key)
            self._released()

    def _sessionLost(self, session):
        if session is self.session:
            self._lost()

    @defer.inlineCallbacks
    def _tryRegister(self):
        """
        One attempt to create the key; feeds its outcome to the machine.
        """
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
            self._heldElsewhere()
            return
        except StoreError as e:
            log.warn("cannot register {key}: {error}; retrying", key=self.key, error=str(e))
            self._failed()
            return
        except Exception:
            log.failure("registering {key}; retrying", key=self.key)
            self._failed()
            return
        self._registered()

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
