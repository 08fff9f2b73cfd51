# -*- test-case-name: tests.test_store_etcd -*-
"""
Sessions of the HTTP backends, kept alive by a renewal request every
C{ttl / renewals} seconds (etcd's lease keep-alive; Consul's session renew
has the same shape).
"""

from twisted.internet import defer, task
from twisted.logger import Logger

from p2twisted.errors import StoreError
from p2twisted.store.common import SessionMixin

log = Logger()


class RenewedSession(SessionMixin):
    """
    A session lost when the server says it is gone, when no renewal
    succeeded for C{ttl} seconds (the server has surely expired it), or when
    closed.  Subclasses set C{backend} and C{lockClass} and provide
    L{renew} and L{destroy}; the store keeps its open sessions in
    C{store._sessions}.
    """

    #: Renewals per TTL.
    renewals = 3

    def __init__(self, store, id, ttl, reactor):
        self.store = store
        self.id = id
        self.ttl = ttl
        self.lost = False
        self._waiters = []
        self._reactor = reactor
        self._renewed = reactor.seconds()
        self._loop = task.LoopingCall(self._renewNow)
        self._loop.clock = reactor

    def renew(self, timeout):
        """
        @return: L{Deferred} firing with C{True} when renewed, C{False} when
            the server says the session is gone; failing with a
            L{StoreError} when the server could not be asked.
        """
        raise NotImplementedError()

    def destroy(self):
        """
        End the session on the server (its keys go with it).

        @return: L{Deferred}.
        """
        raise NotImplementedError()

    def start(self):
        self._loop.start(self.ttl / self.renewals, now=False).addErrback(
            lambda f: log.failure("renewing {backend} session {id}", f, backend=self.backend,
                                  id=self.id))

    @defer.inlineCallbacks
    def _renewNow(self):
        try:
            alive = yield self.renew(self.ttl / self.renewals)
        except StoreError as e:
            if self.lost:
                return
            if self._reactor.seconds() - self._renewed >= self.ttl:
                self._end("not renewed for its %gs TTL (%s)" % (self.ttl, e))
            else:
                log.warn("renewing {backend} session {id} failed ({error}); retrying",
                         backend=self.backend, id=self.id, error=e)
            return
        if alive:
            self._renewed = self._reactor.seconds()
        else:
            self._end("the server no longer knows it")

    def _end(self, why=None):
        if self.lost:
            return
        self.lost = True
        if self._loop.running:
            self._loop.stop()
        if why:
            log.warn("{backend} session {id} lost: {why}", backend=self.backend, id=self.id,
                     why=why)
        self.store._sessions.discard(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    @defer.inlineCallbacks
    def close(self):
        if self.lost:
            return
        self._end()
        try:
            yield self.destroy()
        except StoreError as e:
            log.warn("could not end {backend} session {id} ({error}); it expires in {ttl}s",
                     backend=self.backend, id=self.id, error=e, ttl=self.ttl)
