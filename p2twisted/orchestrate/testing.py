# -*- test-case-name: tests.test_orchestrate_farm -*-
"""
Public fakes for testing code built on L{p2twisted.orchestrate.farm}: a
controller that records what the farm asked of it.
"""

from twisted.internet import defer
from zope.interface import implementer

from p2twisted.orchestrate.farm import IController


@implementer(IController)
class FakeController(object):
    """
    An L{IController} that records its calls.

    @param manual: when true, each L{reconcile} returns a L{Deferred} kept in
        C{pending} for the test to fire; otherwise it succeeds at once.
    @ivar reconciles: how many times L{reconcile} was called.
    @ivar overlaps: how many times L{reconcile} was called while an earlier
        one had not finished (a farm must keep this 0).
    """

    def __init__(self, objectId, lock, manual=False):
        self.objectId = objectId
        self.lock = lock
        self.manual = manual
        self.started = False
        self.stopped = False
        self.reconciles = 0
        self.overlaps = 0
        #: Seconds of CPU its "decisions" take (as a test says).
        self.cost = 0.0
        self.pending = []

    @property
    def running(self):
        return self.started and not self.stopped

    def start(self):
        self.started = True

    def reconcile(self):
        self.reconciles += 1
        if any(not d.called for d in self.pending):
            self.overlaps += 1
        if not self.manual:
            return defer.succeed(None)
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def finish(self):
        """
        Fire the reconciles still pending (in C{manual} mode).
        """
        for d in list(self.pending):
            if not d.called:
                d.callback(None)

    def stop(self):
        self.stopped = True
        return defer.succeed(None)


class FakeControllerFactory(object):
    """
    A farm's C{controllerFactory} making L{FakeController}s and keeping them
    in C{made}.
    """

    def __init__(self, manual=False):
        self.manual = manual
        self.made = []

    def __call__(self, objectId, lock):
        controller = FakeController(objectId, lock, self.manual)
        self.made.append(controller)
        return controller

    def running(self):
        """
        @return: C{{objectId: FakeController}} of the controllers started and
            not stopped.
        """
        return {c.objectId: c for c in self.made if c.running}
