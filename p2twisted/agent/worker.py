# -*- test-case-name: tests.test_agent_worker -*-
"""
One worker per pod: converges the pod's intent into reality.

The worker holds the latest (intent, reality) pair it was told about; new
news replaces old (latest wins) and resets the backoff.  Each attempt re-reads
reality from the store (a stale copy caused double installs in P2), compares
canonical SHAs and then:

    intent present, reality absent or different  ->  deploy (install the new
        version before halting the old one), then write reality
    intent absent, reality present               ->  remove, then delete reality
    SHAs equal                                   ->  nothing, unless some of the
        pod's services are not kept up here (the builtin supervisor's end with
        the agent; a runsv may be killed): those are started again from the
        installs, or the pod is deployed afresh if its installs are gone

A failed attempt is retried with exponential backoff (1 s doubling to 60 s,
plus up to 1 s of jitter: L{retryPolicy}); every attempt's outcome is written
to C{status/pods/<node>/<pod>}.
An intent that is not a valid manifest is not retried until it changes.
An intent the agent's auth policy refuses (L{p2twisted.auth.policy}) is
never installed, and nothing running is halted or removed for it: its
C{after_auth_fail} hooks run, its status says C{refused} with the signer and
the rule, and it is tried again only when the intent or the policy changes
(L{PodWorker.reconsider}).

States (an automat machine; L{PodWorker.tracer} sees every transition)::

    idle --news/resync--> working --succeeded--> idle
                          working --failedAttempt--> backoff --timer/kick--> working
                          working --news/resync/repeated--> working (rerun when done)
                          working --kick--> working (rerun at once if it fails)
    backoff --news--> working
    idle/backoff --stop--> stopped;  working --stop--> stopping --(attempt ends)--> stopped
"""

import random
import time

import attr
from automat import MethodicalMachine
from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.logger import Logger

from p2twisted.agent import crashloop
from p2twisted.auth.gate import AuthGate
from p2twisted.errors import ManifestError, P2Error, StoreError
from p2twisted.manifest import parseManifest
from p2twisted.metrics import AgentMetrics
from p2twisted.records import PodStatus
from p2twisted.store import keys
from p2twisted.tracing import TracedMachine

IDLE, WORKING, BACKOFF, STOPPING, STOPPED = "idle", "working", "backoff", "stopping", "stopped"

log = Logger()


def retryPolicy(initial=1.0, maximum=60.0, jitter=random.random):
    """
    The agent's one retry policy: Twisted's L{backoffPolicy} (which guards its
    exponent, so no number of failures overflows it), doubling from
    C{initial} to C{maximum} seconds plus C{jitter()} seconds (up to one).

    @return: a function C{attempt -> seconds}.
    """
    return backoffPolicy(initialDelay=initial, maxDelay=maximum, factor=2.0, jitter=jitter)


def checkNamesPod(manifest, key, podId):
    """
    A key names its pod: the manifest at C{intent/<node>/<pod_id>} (or
    C{reality/...}) must say C{id: <pod_id>}, or another pod could be taken
    over through it.

    @raise ManifestError: if C{manifest.id} is not C{podId}.
    """
    if manifest.id != podId:
        raise ManifestError(["id: %s is not the pod this key names (%s); a pod's manifest "
                             "goes under its own id" % (manifest.id, podId)], key)


#: Seconds a deploy runs before its pod's status says "deploying".
DEPLOYING_NOTE_DELAY = 0.25


class PodWorker(TracedMachine):
    """
    Converges one pod.

    @param pods: the L{IPodOperations} (L{p2twisted.agent.pods.PodOperations},
        or L{p2twisted.agent.testing.FakePods}).
    @param store: the L{IStore}.
    @param node: this node's name.
    @param podId: the pod.
    @param clock: an L{IReactorTime}.
    @param canAct: a callable; while it returns false the worker does
        nothing (store unreachable, session lost) and tries again later.
    @param auth: an L{IAuthPolicy} with a C{generation} (the agent's
        L{PolicyReloader}), or C{None} to deploy every manifest.
    @param refused: C{callable(manifest, decision)} returning a L{Deferred},
        run once per refusal (the C{after_auth_fail} hooks), or C{None}.
    """

    _machine = MethodicalMachine()
    _setTrace = _machine._setTrace

    def __init__(self, pods, store, node, podId, clock, canAct=lambda: True,
                 backoff=None, wallClock=time.time, auth=None, refused=None, metrics=None):
        self.pods = pods
        self.store = store
        self.node = node
        self.podId = podId
        self.clock = clock
        self.canAct = canAct
        self.backoff = backoff or retryPolicy()
        self.wallClock = wallClock
        self.metrics = metrics if metrics is not None else AgentMetrics()
        #: The machine's state: C{idle}, C{working}, C{backoff}, C{stopping}
        #: or C{stopped}.
        self.state = IDLE
        self.attempts = 0
        self.lastError = None
        self._intent = None
        self._news = False
        self._kicked = False
        self._timer = None
        self._idle = []
        self._badIntent = None
        self.auth = auth
        self._gate = None if auth is None else AuthGate(auth, refused)
        #: The policy's L{Decision} on the intent being deployed, if asked.
        self._decision = None
        self._seen = False
        self._lastStatus = None
        #: The state of the status record last written (or None once deleted):
        #: a write that fails (the store is down) leaves the record, and so
        #: what the metrics say, as it was.
        self._reported = None
        # Status writes are read-modify-writes (crashloop.preservingWrite):
        # one at a time, in order, so an earlier one retried after a
        # conflict cannot land after a later one.
        self._statusLock = defer.DeferredLock()
        #: C{(reality entry, read at)} from the latest L{update}, for the
        #: next attempt; and when this worker last wrote reality.
        self._realityHint = None
        self._realityWritten = None
        self._traceTransitions()

    # -- the public inputs ---------------------------------------------------

    def update(self, intentEntry, resync=False, reality=None, readAt=None):
        """
        Latest news of this pod's intent (an L{Entry} or C{None} when absent).
        The same intent again is no news, unless C{resync} asks to check
        reality anyway (watches are hints; a periodic resync is the truth).

        @param readAt: when given, the time (on C{clock}) at which the
            pod's reality was read, with intent, as C{reality} (an
            L{Entry} or C{None}): the next attempt uses it instead of
            reading it again, unless this worker wrote reality since (a
            reality written by another is caught by the version its own
            write checks, then by the next resync, as when read anew).
        """
        if self.state in (STOPPING, STOPPED):
            return
        same = self._seen and intentEntry == self._intent
        # (Only for the attempt this update starts: not kept for a later one.)
        self._realityHint = (None if readAt is None or (same and not resync)
                             else (reality, readAt))
        self._seen = True
        self._intent = intentEntry
        if not same:
            self.attempts = 0
            self._decision = None
            self._news_()
        elif resync:
            self._resync()
        else:
            self._repeated()

    def invalidIntent(self):
        """
        @return: why the pod's current intent cannot be acted on (its
            manifest does not parse), or C{None}.
        """
        if self._badIntent is not None and self._intent is not None \
                and self._intent.value == self._badIntent[0]:
            return self._badIntent[1]
        return None

    def reportedState(self):
        """
        @return: the state the pod's status record last said (running,
            deploying, failed, removing, invalid, refused), or C{None} when it has
            none (gone, or not written).
        """
        return self._reported

    def refusal(self):
        """
        @return: the L{Decision} refusing the pod's current intent, or
            C{None}.
        """
        if self._gate is None or self._intent is None:
            return None
        return self._gate.refusal(self.podId, self._intent.value)

    def reconsider(self):
        """
        The auth policy changed: try a refused intent again.
        """
        if self.state not in (STOPPING, STOPPED) and self.refusal() is not None:
            self.attempts = 0
            self._news_()

    def kick(self):
        """
        Try again now if waiting out a backoff (e.g. the store is back).
        """
        self._kick()

    def stop(self):
        """
        Stop: no further attempts.  An attempt in progress runs to its end.

        @return: L{Deferred} firing when no attempt is in progress.
        """
        return self._stop()

    def absent(self):
        """
        @return: whether the worker has converged its pod to nothing: told
            it has no intent, and idle (its reality and status are gone).
        """
        return self.state == IDLE and self._seen and self._intent is None

    def whenIdle(self):
        """
        @return: L{Deferred} firing once the worker is idle (converged) or
            stopped; fires now if it is.
        """
        if self.state in (IDLE, STOPPED):
            return defer.succeed(self.state)
        d = defer.Deferred()
        self._idle.append(d)
        return d

    # -- the machine ---------------------------------------------------------

    @_machine.state(initial=True)
    def _idle_(self):
        "Converged: nothing to do until news."

    @_machine.state()
    def _working(self):
        "An attempt is under way."

    @_machine.state()
    def _backoff(self):
        "The last attempt failed; a retry is scheduled."

    @_machine.state()
    def _stopping(self):
        "Stopped while an attempt was under way; waiting for its end."

    @_machine.state()
    def _stopped(self):
        "No further attempts."

    @_machine.input()
    def _news_(self):
        "The pod's intent changed."

    @_machine.input()
    def _resync(self):
        "The same intent, at a periodic resync: check reality anyway."

    @_machine.input()
    def _repeated(self):
        "The same intent again, from a watch."

    @_machine.input()
    def _kick(self):
        "Conditions changed (the store is back): retry now if waiting."

    @_machine.input()
    def _stop(self):
        "Stop."

    @_machine.input()
    def _succeeded(self):
        "The attempt converged the pod."

    @_machine.input()
    def _failedAttempt(self):
        "The attempt failed."

    @_machine.input()
    def _rerun(self):
        "The attempt ended, and news arrived meanwhile."

    @_machine.input()
    def _timer_(self):
        "The backoff is over."

    @_machine.output()
    def _work(self):
        self._news = self._kicked = False
        d = defer.maybeDeferred(self._attempt)
        d.addCallbacks(self._attemptSucceeded, self._attemptFailed)
        d.addErrback(lambda f: log.failure("pod worker bug", f, node=self.node, pod=self.podId))

    @_machine.output()
    def _markNews(self):
        self._news = True

    @_machine.output()
    def _markKicked(self):
        # Should this attempt fail (the store was gone), the next one runs at
        # once, not after the backoff: the kick is not lost.
        self._kicked = True

    @_machine.output()
    def _cancelTimer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    @_machine.output()
    def _scheduleRetry(self):
        self._timer = self.clock.callLater(self.backoff(self.attempts - 1), self._timer_)

    @_machine.output()
    def _notifyIdle(self):
        waiters, self._idle = self._idle, []
        for d in waiters:
            d.callback(self.state)

    @_machine.output()
    def _stoppedNow(self):
        return defer.succeed(None)

    @_machine.output()
    def _waitStopped(self):
        d = defer.Deferred()
        self._idle.append(d)
        return d

    _idle_.upon(_news_, enter=_working, outputs=[_work])
    _idle_.upon(_resync, enter=_working, outputs=[_work])
    _idle_.upon(_repeated, enter=_idle_, outputs=[])
    _idle_.upon(_kick, enter=_idle_, outputs=[])
    _idle_.upon(_stop, enter=_stopped, outputs=[_notifyIdle, _stoppedNow],
                collector=lambda values: values[-1])

    _working.upon(_news_, enter=_working, outputs=[_markNews])
    _working.upon(_resync, enter=_working, outputs=[_markNews])
    _working.upon(_repeated, enter=_working, outputs=[_markNews])
    _working.upon(_kick, enter=_working, outputs=[_markKicked])
    _working.upon(_stop, enter=_stopping, outputs=[_waitStopped],
                  collector=lambda values: values[-1])
    _working.upon(_succeeded, enter=_idle_, outputs=[_notifyIdle])
    _working.upon(_rerun, enter=_working, outputs=[_work])
    _working.upon(_failedAttempt, enter=_backoff, outputs=[_scheduleRetry])

    _backoff.upon(_news_, enter=_working, outputs=[_cancelTimer, _work])
    _backoff.upon(_resync, enter=_backoff, outputs=[])
    _backoff.upon(_repeated, enter=_backoff, outputs=[])
    _backoff.upon(_kick, enter=_working, outputs=[_cancelTimer, _work])
    _backoff.upon(_timer_, enter=_working, outputs=[_work])
    _backoff.upon(_stop, enter=_stopped, outputs=[_cancelTimer, _notifyIdle, _stoppedNow],
                  collector=lambda values: values[-1])

    _stopping.upon(_kick, enter=_stopping, outputs=[])
    _stopping.upon(_stop, enter=_stopping, outputs=[_waitStopped],
                   collector=lambda values: values[-1])
    _stopping.upon(_succeeded, enter=_stopped, outputs=[_notifyIdle])
    _stopping.upon(_rerun, enter=_stopped, outputs=[_notifyIdle])
    _stopping.upon(_failedAttempt, enter=_stopped, outputs=[_notifyIdle])

    _stopped.upon(_kick, enter=_stopped, outputs=[])
    _stopped.upon(_stop, enter=_stopped, outputs=[_stoppedNow],
                  collector=lambda values: values[-1])

    def _attemptSucceeded(self, _):
        self.attempts = 0
        self.lastError = None
        if self._news:
            self._rerun()
        else:
            self._succeeded()

    def _attemptFailed(self, failure):
        self.attempts += 1
        self.lastError = failure.getErrorMessage() if failure.check(P2Error) else (
            "%s: %s" % (failure.type.__name__, failure.getErrorMessage()))
        if not failure.check(P2Error):
            log.failure("pod {pod} attempt failed", failure, node=self.node, pod=self.podId)
        else:
            log.warn("pod {pod}: {error}", node=self.node, pod=self.podId, error=self.lastError)
        d = self._writeStatus("failed", error=self.lastError)
        d.addBoth(lambda _: self._rerun() if self._news or self._kicked else
                  self._failedAttempt())
        return d

    # -- one attempt ---------------------------------------------------------------

    @defer.inlineCallbacks
    def _attempt(self):
        if not self.canAct():
            raise P2Error("store unreachable or session lost; not acting until it is back")
        intentEntry = self._intent
        intent = None
        if intentEntry is not None:
            if self._badIntent is not None and self._badIntent[0] == intentEntry.value:
                # Known to be invalid: logged once, but the status says so
                # again (it may have said otherwise since, or not been
                # written).
                yield self._writeStatus("invalid", error=self._badIntent[1])
                return
            try:
                intent = parseManifest(intentEntry.value, source=intentEntry.key)
                checkNamesPod(intent, intentEntry.key, self.podId)
            except ManifestError as e:
                self._badIntent = (intentEntry.value, str(e))
                log.error("pod {pod}: invalid manifest in intent: {error}",
                          node=self.node, pod=self.podId, error=str(e))
                yield self._writeStatus("invalid", error=str(e))
                return
        realityKey = keys.reality(self.node, self.podId)
        hint, self._realityHint = self._realityHint, None
        if hint is not None and (self._realityWritten is None
                                 or self._realityWritten < hint[1]):
            realityEntry = hint[0]
        else:
            realityEntry = yield self.store.get(realityKey)
        reality = self._parseReality(realityEntry)
        if intent is not None:
            if reality is not None and reality.sha() == intent.sha():
                down = yield self.pods.unsupervised(intent)
                if not down:
                    yield self._writeStatus("running", sha=intent.sha())
                    return
                # In reality, yet not kept up here (the builtin supervisor's
                # pods end with the agent; a runsv may be killed, or stopped
                # by hand): start those services again from the installs.
                log.warn("pod {pod} is in reality but not supervised ({services}); "
                         "starting it again", node=self.node, pod=self.podId,
                         services=", ".join(down), event="restarting")
                try:
                    yield self.pods.relaunch(intent, down)
                    yield self._writeStatus("running", sha=intent.sha())
                    return
                except P2Error as e:  # its installs are gone: deploy it afresh
                    log.warn("pod {pod}: {error}; deploying it again", node=self.node,
                             pod=self.podId, error=str(e))
            # Every install is the policy's to allow -- even of what reality
            # names (anyone who can write the store can write reality); what
            # runs already is left alone, whatever it says.
            if (yield self._authorize(intentEntry, intent)):
                return
            # Informational, not waited for, and only for a deploy that takes
            # a while: a quick one goes straight to "running" (or "failed")
            # without a store write competing with its install and start.
            note = self.clock.callLater(DEPLOYING_NOTE_DELAY, self._writeStatus, "deploying",
                                        sha=intent.sha())
            started = self.clock.seconds()
            try:
                yield self.pods.deploy(intent, reality)
            except Exception:
                self.metrics.deployFailures.labels(self.podId).inc()
                raise
            finally:
                if note.active():
                    note.cancel()
            # Reality only after every entry point runs, and only if nobody
            # changed it meanwhile.
            try:
                if realityEntry is None:
                    # (Created, not put: another writer's reality since the
                    # read, maybe of a version this deploy took for absent,
                    # fails this attempt; the next reads it.)
                    yield self.store.create(realityKey, intent.raw)
                else:
                    yield self.store.cas(realityKey, intent.raw, realityEntry.version)
            finally:
                self._realityWritten = self.clock.seconds()
            if reality is not None:
                self.metrics.upgradeSeconds.labels(self.podId).observe(
                    self.clock.seconds() - started)
            log.info("pod {pod} running {sha}", node=self.node, pod=self.podId, sha=intent.sha(),
                     event="deployed")
            yield self._writeStatus("running", sha=intent.sha())
        elif realityEntry is not None:
            yield self._writeStatus("removing", sha=reality.sha() if reality else None)
            yield self.pods.remove(reality, self.podId)
            try:
                yield self.store.delete(realityKey, realityEntry.version)
            finally:
                self._realityWritten = self.clock.seconds()
            log.info("pod {pod} removed", node=self.node, pod=self.podId, event="removed")
            yield self._deleteStatus()
        else:
            yield self._deleteStatus()

    @defer.inlineCallbacks
    def _authorize(self, intentEntry, intent):
        """
        Ask the auth policy about C{intent}; on a refusal, run the refusal
        hooks (once per intent and policy) and write the status.

        @return: L{Deferred} firing with whether it was refused.
        """
        if self._gate is None:
            return False
        # Judged as the user it will run as: not as root, the agent runs
        # every pod as its own user, whatever run_as says.
        decision = self._decision = yield self._gate.check(
            self.podId, intentEntry.value, intent,
            attr.evolve(intent, runAs=self.pods.runsAs(intent)))
        if decision.allowed:
            return False
        yield self._writeStatus("refused", sha=intent.sha(), error=decision.describe(),
                                intentVersion=intentEntry.version)
        return True

    def _parseReality(self, entry):
        if entry is None:
            return None
        try:
            manifest = parseManifest(entry.value, source=entry.key)
            checkNamesPod(manifest, entry.key, self.podId)
            return manifest
        except ManifestError as e:
            log.warn("pod {pod}: reality is not a valid manifest ({error}); treating it as "
                     "unknown", node=self.node, pod=self.podId, error=str(e))
            return None

    def _deleteStatus(self):
        """
        Delete the pod's status record: the pod is gone from intent and from
        this machine.
        """
        self._lastStatus = None
        # Not dropped when it fails: the attempt fails, and its retry (the
        # pod still in neither intent nor reality) deletes it again.
        def deleted(result):
            self._reported = None
            return result
        return self._statusLock.run(
            self.store.delete, keys.status("pods", self.node, self.podId)).addCallback(deleted)

    def _writeStatus(self, state, sha=None, error=None, intentVersion=None):
        """
        @param intentVersion: with a refusal, the version of the intent
            entry refused (L{PodStatus.intent_version}).
        """
        written = (state, sha, error, intentVersion)
        if written == self._lastStatus and state != "failed":
            return defer.succeed(None)
        self._lastStatus = written
        decision = self._decision
        record = PodStatus(
            self.podId, self.node, state, sha, error, self.attempts,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wallClock())),
            auth=decision.toDict() if decision is not None and sha is not None else None,
            intent_version=intentVersion)
        key = keys.status("pods", self.node, self.podId)

        def failed(f):
            # Not written: the same status is written again next time.
            if self._lastStatus == written:
                self._lastStatus = None
            if f.check(StoreError):
                log.warn("cannot write status of {pod}: {error}", pod=self.podId,
                         node=self.node, error=f.getErrorMessage())
            else:
                log.failure("cannot write status of {pod}", f, pod=self.podId, node=self.node)
        def wrote(_):
            self._reported = state
        d = self._statusLock.run(crashloop.preservingWrite, self.store, key, record)
        return d.addCallbacks(wrote, failed)
