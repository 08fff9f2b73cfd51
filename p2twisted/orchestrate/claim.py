# -*- test-case-name: tests.test_orchestrate_farm -*-
"""
One object a L{p2twisted.orchestrate.farm.Farm} claimed: the coalescing and
pacing of its controller's reconciles.
"""

from twisted.internet import defer
from twisted.logger import Logger

from p2twisted.errors import StoreError

log = Logger()


class Claim(object):
    """
    One claimed object: its lock, its controller, the coalescing of
    reconcile requests, and the timer of the next reconcile without news
    (after a failure, with backoff; or when the controller asked for one).
    """

    def __init__(self, farm, objectId, lock, controller, version):
        self.farm = farm
        self.objectId = objectId
        self.lock = lock
        self.controller = controller
        self.version = version
        #: The version of its record the controllers' snapshots last showed
        #: (L{Farm.recordsShown}), or C{None}.
        self.shown = None
        self.running = False
        self.again = False
        #: Whether a poke that is not news came during the reconcile.
        self.urgent = False
        self.stopped = False
        self.failures = 0
        self._timer = None
        #: When the last reconcile began (farm clock), or C{None}.
        self.started = None

    def poke(self, news=False):
        """
        Reconcile now, or once more after the reconcile under way.

        @param news: whether this is news about the cluster (health, labels,
            a resync): then it waits until C{newsInterval} seconds after the
            last reconcile began (the farm's C{newsPace}: longer when its
            controllers' decisions are dear), so a fleet's stream of health
            changes costs one reconcile per interval, not one per change;
            after a failed reconcile, none before its retry.
        """
        if self.stopped:
            return
        if self.running:
            self.again = True
            self.urgent = self.urgent or not news
            return
        if news and self.failures and self._timer is not None and self._timer.active():
            return  # the retry after a failure: news does not cut its backoff short
        now = self.farm.clock.seconds()
        if news and self.started is not None:
            wait = self.started + self.farm.newsPace - now
            if wait > 0:
                self._soon(wait)
                return
        self._cancelTimer()
        self.running, self.again, self.urgent = True, False, False
        self.started = now
        d = defer.maybeDeferred(self.controller.reconcile)
        d.addCallbacks(self._succeeded, self._failed)
        d.addBoth(self._finished)

    def _succeeded(self, delay):
        self.failures = 0
        if isinstance(delay, (int, float)) and not isinstance(delay, bool):
            self._later(delay)

    def _failed(self, failure):
        delay = self.farm._delays(self.failures)
        self.failures += 1
        if failure.check(StoreError):
            log.warn("{kind} {object}: reconcile failed: {error}; again in {delay:.1f}s",
                     kind=self.farm.kind, object=self.objectId, error=failure.getErrorMessage(),
                     delay=delay, event="reconcile-failed")
        else:
            log.failure("{kind} {object}: reconcile failed; again in {delay:.1f}s", failure,
                        kind=self.farm.kind, object=self.objectId, delay=delay,
                        event="reconcile-failed")
        self._later(delay)

    def _later(self, delay):
        self._cancelTimer()
        if not self.stopped:
            self._timer = self.farm.clock.callLater(delay, self.poke)

    def _soon(self, delay):
        """
        Reconcile in C{delay} seconds, unless one is due sooner.
        """
        due = self.farm.clock.seconds() + delay
        if self._timer is not None and self._timer.active() and self._timer.getTime() <= due:
            return
        self._later(delay)

    def _cancelTimer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _finished(self, _):
        self.running = False
        if self.again:
            self.poke(news=not self.urgent)

    def stop(self):
        self.stopped = True
        self._cancelTimer()
        return defer.maybeDeferred(self.controller.stop).addErrback(lambda f: log.failure(
            "{kind} {object}: stopping its controller", f, kind=self.farm.kind,
            object=self.objectId))
