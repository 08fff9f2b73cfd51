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
with jitter); every attempt's outcome is written to C{status/pods/<node>/<pod>}.
An intent that is not a valid manifest is not retried until it changes.

States (an explicit machine; see L{PodWorker._enter})::

    idle --news--> working --ok--> idle
                   working --fail--> backoff --timer--> working
                   working --news--> working (re-run when done)
    backoff --news--> working          any --stop--> stopped
"""

import json
import random
import time

from twisted.internet import defer
from twisted.logger import Logger

from p2twisted.agent import crashloop
from p2twisted.errors import ManifestError, P2Error
from p2twisted.manifest import parseManifest
from p2twisted.store import keys

IDLE, WORKING, BACKOFF, STOPPED = "idle", "working", "backoff", "stopped"

log = Logger()


def backoffPolicy(initial=1.0, maximum=60.0, factor=2.0, jitter=0.1, random=random.random):
    """
    @return: a function C{attempt -> seconds}: C{initial * factor**attempt}
        capped at C{maximum}, plus up to C{jitter} of itself at random.
    """
    def delay(attempt):
        base = min(initial * (factor ** max(attempt, 0)), maximum)
        return base + base * jitter * random()
    return delay


class PodWorker(object):
    """
    Converges one pod.

    @param pods: the pod operations (L{p2twisted.agent.pods.PodOperations}
        or a fake): C{deploy(manifest, old)}, C{remove(manifest, podId)}, and
        optionally C{unsupervised(manifest)} and C{relaunch(manifest, names)}.
    @param store: the L{IStore}.
    @param node: this node's name.
    @param podId: the pod.
    @param clock: an L{IReactorTime}.
    @param canAct: a callable; while it returns false the worker does
        nothing (store unreachable, session lost) and tries again later.
    """

    def __init__(self, pods, store, node, podId, clock, canAct=lambda: True,
                 backoff=None, wallClock=time.time):
        self.pods = pods
        self.store = store
        self.node = node
        self.podId = podId
        self.clock = clock
        self.canAct = canAct
        self.backoff = backoff or backoffPolicy()
        self.wallClock = wallClock
        self.state = IDLE
        self.attempts = 0
        self.lastError = None
        self._intent = None
        self._news = False
        self._timer = None
        self._idle = []
        self._badIntent = None
        self._badIntentError = None
        self._seen = False
        self._lastStatus = None

    # -- inputs ------------------------------------------------------------

    def update(self, intentEntry, resync=False):
        """
        Latest news of this pod's intent (an L{Entry} or C{None} when absent).
        The same intent again is no news, unless C{resync} asks to check
        reality anyway (watches are hints; a periodic resync is the truth).
        """
        if self.state == STOPPED:
            return
        same = self._seen and intentEntry == self._intent
        if same and (self.state == BACKOFF or (self.state == IDLE and not resync)):
            return
        self._seen = True
        self._intent = intentEntry
        if not same:
            self.attempts = 0
        if self.state == WORKING:
            self._news = True
        elif self.state == BACKOFF:
            self._cancelTimer()
            self._work()
        else:
            self._work()

    def invalidIntent(self):
        """
        @return: why the pod's current intent cannot be acted on (its
            manifest does not parse), or C{None}.
        """
        if self._badIntent is not None and self._intent is not None \
                and self._intent.value == self._badIntent:
            return self._badIntentError
        return None

    def kick(self):
        """
        Try again now if waiting out a backoff (e.g. the store is back).
        """
        if self.state == BACKOFF:
            self._cancelTimer()
            self._work()

    def stop(self):
        """
        Stop: no further attempts.  An attempt in progress runs to its end.

        @return: L{Deferred} firing when no attempt is in progress.
        """
        self._cancelTimer()
        working = self.state == WORKING
        self.state = STOPPED
        if working:
            d = defer.Deferred()
            self._idle.append(d)
            return d
        return defer.succeed(None)

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

    def _cancelTimer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _work(self):
        self.state = WORKING
        self._news = False
        d = defer.maybeDeferred(self._attempt)
        d.addCallbacks(self._succeeded, self._failed)
        d.addErrback(lambda f: log.failure("pod worker bug", f, node=self.node, pod=self.podId))

    def _succeeded(self, _):
        self.attempts = 0
        self.lastError = None
        self._settle()

    def _failed(self, failure):
        self.attempts += 1
        self.lastError = failure.getErrorMessage() if failure.check(P2Error) else (
            "%s: %s" % (failure.type.__name__, failure.getErrorMessage()))
        if not failure.check(P2Error):
            log.failure("pod {pod} attempt failed", failure, node=self.node, pod=self.podId)
        else:
            log.warn("pod {pod}: {error}", node=self.node, pod=self.podId, error=self.lastError)
        d = self._writeStatus("failed", error=self.lastError)
        d.addBoth(lambda _: self._retryLater())

    def _retryLater(self):
        if self.state == STOPPED:
            return self._settle()
        if self._news:
            return self._work()
        self.state = BACKOFF
        self._timer = self.clock.callLater(self.backoff(self.attempts - 1), self._work)

    def _settle(self):
        if self.state == STOPPED:
            pass
        elif self._news:
            return self._work()
        else:
            self.state = IDLE
        waiters, self._idle = self._idle, []
        for d in waiters:
            d.callback(self.state)

    # -- one attempt ---------------------------------------------------------------

    @defer.inlineCallbacks
    def _attempt(self):
        if not self.canAct():
            raise P2Error("store unreachable or session lost; not acting until it is back")
        intentEntry = self._intent
        intent = None
        if intentEntry is not None:
            if self._badIntent == intentEntry.value:
                return
            try:
                intent = parseManifest(intentEntry.value, source=keys.intent(self.node, self.podId))
            except ManifestError as e:
                self._badIntent = intentEntry.value
                self._badIntentError = str(e)
                log.error("pod {pod}: invalid manifest in intent: {error}",
                          node=self.node, pod=self.podId, error=str(e))
                yield self._writeStatus("invalid", error=str(e))
                return
        realityKey = keys.reality(self.node, self.podId)
        realityEntry = yield self.store.get(realityKey)
        reality = self._parseReality(realityEntry)
        if intent is not None:
            if reality is not None and reality.sha() == intent.sha():
                down = yield self._unsupervised(intent)
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
            self._writeStatus("deploying", sha=intent.sha())  # informational: not waited for
            yield self.pods.deploy(intent, reality)
            # Reality only after every entry point runs, and only if nobody
            # changed it meanwhile.
            if realityEntry is None:
                yield self.store.put(realityKey, intent.raw)
            else:
                yield self.store.cas(realityKey, intent.raw, realityEntry.version)
            log.info("pod {pod} running {sha}", node=self.node, pod=self.podId, sha=intent.sha(),
                     event="deployed")
            yield self._writeStatus("running", sha=intent.sha())
        elif realityEntry is not None:
            yield self._writeStatus("removing", sha=reality.sha() if reality else None)
            yield self.pods.remove(reality, self.podId)
            yield self.store.delete(realityKey, realityEntry.version)
            log.info("pod {pod} removed", node=self.node, pod=self.podId, event="removed")
            yield self._writeStatus("removed")

    def _unsupervised(self, manifest):
        check = getattr(self.pods, "unsupervised", None)
        return defer.succeed([]) if check is None else check(manifest)

    def _parseReality(self, entry):
        if entry is None:
            return None
        try:
            return parseManifest(entry.value, source=entry.key)
        except ManifestError as e:
            log.warn("pod {pod}: reality is not a valid manifest ({error}); treating it as "
                     "unknown", node=self.node, pod=self.podId, error=str(e))
            return None

    def _writeStatus(self, state, sha=None, error=None):
        if (state, sha, error) == self._lastStatus and state != "failed":
            return defer.succeed(None)
        self._lastStatus = (state, sha, error)
        record = {
            "pod": self.podId, "node": self.node, "state": state, "sha": sha,
            "error": error, "attempts": self.attempts,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wallClock())),
        }
        key = keys.status("pods", self.node, self.podId)
        d = crashloop.preservingWrite(self.store, key, record)
        d.addErrback(lambda f: log.warn("cannot write status of {pod}: {error}",
                                        pod=self.podId, error=f.getErrorMessage()))
        return d
