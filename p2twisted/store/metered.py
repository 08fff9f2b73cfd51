# -*- test-case-name: tests.test_metrics -*-
"""
L{MeteredStore}: an L{IStore} that passes every call to another one and
counts, in a process's L{StoreMetrics}, what users of a fleet watch for:

  - C{p2_store_errors_total{operation, error}}: calls that failed with a
    store error (L{StoreUnavailable} in an outage; L{VersionConflict} and
    L{KeyExists} where writers race);
  - C{p2_store_reconnects_total}: times a call succeeded after one failed
    with L{StoreUnavailable} (the store came back);
  - C{p2_watch_lag_seconds}: for this process's own writes under a prefix
    it watches, the time from issuing the write to the watch delivering it.
"""

from twisted.internet import defer
from zope.interface import implementer

from p2twisted.errors import StoreError, StoreUnavailable
from p2twisted.store.common import Create, Delete, Put, inSubtree
from p2twisted.store.interfaces import IStore, IWatch

#: Seconds after which a write no watch delivered is forgotten (another
#: writer overtook it, or it failed).
FORGET_AFTER = 60.0

_ABSENT = object()


@implementer(IStore)
class MeteredStore(object):
    """
    @param store: the L{IStore} that does the work.
    @param metrics: a L{StoreMetrics}.
    @param clock: an L{IReactorTime} for the watch lag.
    """

    def __init__(self, store, metrics, clock):
        self.wrapped = store
        self.metrics = metrics
        self.clock = clock
        self._unavailable = False
        self._prefixes = []
        #: C{{key: (issued, value or _ABSENT)}} of our writes under a
        #: watched prefix not yet delivered by a watch.
        self._pending = {}

    @property
    def backend(self):
        return self.wrapped.backend

    @property
    def url(self):
        return self.wrapped.url

    def __getattr__(self, name):
        # Whatever a backend offers beyond IStore (tests, benches).
        return getattr(self.wrapped, name)

    def _call(self, operation, f, *args):
        d = defer.maybeDeferred(f, *args)

        def succeeded(result):
            if self._unavailable:
                self._unavailable = False
                self.metrics.storeReconnects.inc()
            return result

        def failed(failure):
            if failure.check(StoreError):
                self.metrics.storeErrors.labels(operation, failure.type.__name__).inc()
                if failure.check(StoreUnavailable):
                    self._unavailable = True
            return failure
        return d.addCallbacks(succeeded, failed)

    def _wrote(self, key, value):
        if any(inSubtree(key, prefix) for prefix in self._prefixes):
            self._pending[key] = (self.clock.seconds(), value)

    def get(self, key):
        return self._call("get", self.wrapped.get, key)

    def list(self, prefix):
        return self._call("list", self.wrapped.list, prefix)

    def put(self, key, value):
        self._wrote(key, value)
        return self._call("put", self.wrapped.put, key, value)

    def create(self, key, value):
        self._wrote(key, value)
        return self._call("create", self.wrapped.create, key, value)

    def cas(self, key, value, version):
        self._wrote(key, value)
        return self._call("cas", self.wrapped.cas, key, value, version)

    def delete(self, key, version=None):
        self._wrote(key, _ABSENT)
        return self._call("delete", self.wrapped.delete, key, version)

    def transaction(self, ops):
        for op in ops:
            if isinstance(op, (Put, Create)):
                self._wrote(op.key, op.value)
            elif isinstance(op, Delete):
                self._wrote(op.key, _ABSENT)
        return self._call("transaction", self.wrapped.transaction, ops)

    def session(self, ttl):
        return self._call("session", self.wrapped.session, ttl)

    def close(self):
        return self.wrapped.close()

    def watch(self, prefix, callback):
        self._prefixes.append(prefix)

        def delivered(snapshot):
            self._delivered(prefix, snapshot)
            return callback(snapshot)
        return _Watch(self, prefix, self.wrapped.watch(prefix, delivered))

    def _delivered(self, prefix, snapshot):
        now = self.clock.seconds()
        for key, (issued, value) in list(self._pending.items()):
            if now - issued > FORGET_AFTER:
                del self._pending[key]
            elif inSubtree(key, prefix):
                entry = snapshot.get(key)
                shown = _ABSENT if entry is None else entry.value
                if shown == value:
                    del self._pending[key]
                    self.metrics.watchLag.observe(now - issued)


@implementer(IWatch)
class _Watch(object):
    """
    A watch of a L{MeteredStore}: cancelled, its prefix is no longer one
    whose writes are timed.
    """

    def __init__(self, store, prefix, watch):
        self.store = store
        self.prefix = prefix
        self.watch = watch

    def cancel(self):
        if self.prefix in self.store._prefixes:
            self.store._prefixes.remove(self.prefix)
        return self.watch.cancel()
