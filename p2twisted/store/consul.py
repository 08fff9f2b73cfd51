# -*- test-case-name: tests.test_store_consul -*-
"""
The Consul backend: C{consul://host:port/prefix} (prefix C{p2} by default),
over Consul's HTTP API through L{p2twisted.store._http}.

Options (query parameters): C{token_file=PATH} (an ACL token, sent as
C{X-Consul-Token}), C{tls=1} with C{ca_file=}, C{cert_file=}, C{key_file=}
(HTTPS; a CA file or client certificate implies it), C{dc=NAME} (datacenter)
and C{consistency=default|consistent|stale} (for reads).

Layout.  Key C{a/b} is the Consul key C{<prefix>/a/b}; C{Entry.version} is
its C{ModifyIndex}, the Raft index of its last write (it never repeats, also
across a delete and re-create).  Single writes and transactions go through
C{/v1/txn}, whose per-op errors give the failing op; C{Check} is
C{check-index} (or C{check-not-exists}), C{Create} is C{cas} with index 0,
a versioned C{Delete} C{check-index} then C{delete} -- or, where that would
take a transaction over Consul's 64 ops, one C{delete-cas}, which lets a
versioned delete of a key already gone pass instead of failing.
Consul applies a transaction's ops in order, so a check placed after a write
of the same key in one transaction sees that write.  A value too large for
a transaction body (Consul's C{txn_max_req_len}, 512 KiB, holds the value
in base64) is written with C{PUT /v1/kv/...?cas=}, then read back.

Watches are blocking queries (C{?recurse&index=N&wait=...}): at most one
query per 250 ms (P2's watch pause), the index reset when it goes backwards
(a restored or new cluster), jittered backoff after errors, and every answer
is the whole subtree, so the final state is always delivered.

Sessions are Consul sessions with C{Behavior=delete} and no lock delay,
with a Consul C{TTL} of half ours: Consul invalidates a session up to twice
its TTL after the last renewal, so ours expires at most C{ttl} seconds after
its holder stopped.  They are renewed every C{ttl/4} (half the Consul TTL).
Ephemeral keys and locks are keys the session has acquired.  Consul refuses
TTLs under its C{session_ttl_min} (10 s by default): a session asked for
less than twice that gets the minimum, with a warning (lower
C{session_ttl_min} to keep short TTLs).
"""

import base64
import json
import random

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted.errors import (
    InvalidTransaction, KeyExists, SessionLost, StoreError, StoreUnavailable, VersionConflict)
from p2twisted.store._consulapi import BACKEND, MAX_TXN_BODY, TxnPlan, minimumTTL, parseURL
from p2twisted.store._http import HTTPEndpoint, retryDelays
from p2twisted.store.common import (
    Create, Delete, Delivery, Entry, Put, Sequencer, SessionMixin, SingleOpsMixin, checkKey,
    checkOps, checkPrefix, checkedTransaction, idempotent, inSubtree)
from p2twisted.store.interfaces import ILock, ISession, IStore

__all__ = ["BACKEND", "ConsulStore", "ConsulSession", "ConsulLock", "parseURL"]

log = Logger()

#: Seconds a blocking query waits on the server.
WATCH_WAIT = 60.0
#: Least seconds between the starts of two queries of one watch.
WATCH_PAUSE = 0.25


@implementer(IStore)
class ConsulStore(SingleOpsMixin):
    """
    An L{IStore} on Consul's KV store.  Use L{open}.
    """

    backend = BACKEND

    def __init__(self, reactor, url, address, http):
        self.url = url
        self._reactor = reactor
        self._address = address
        self._root = address.root
        self._http = http
        self._watches = set()
        self._sessions = set()
        self._seq = Sequencer()  # one client's writes to one key keep their order
        self._closing = None

    @classmethod
    @defer.inlineCallbacks
    def open(cls, url, reactor=None, client=None):
        """
        Connect to the Consul agent at C{url} (one read checks that it
        answers and that the token is accepted).

        @param client: a treq C{HTTPClient} to use (tests).
        @return: L{Deferred} firing with a L{ConsulStore}; fails with
            L{UsageError} for a bad URL, L{StoreUnavailable} when the agent
            cannot be reached or refuses the token.
        """
        if reactor is None:
            from twisted.internet import reactor
        address = parseURL(url)
        headers = {"X-Consul-Token": address.token} if address.token else {}
        http = HTTPEndpoint(reactor, address.base, BACKEND, headers, address.tls, client)
        store = cls(reactor, url, address, http)
        try:
            response = yield http.request("GET", "/v1/kv/" + address.root, store._params(),
                                          expect=(200, 404, 403))
        except StoreUnavailable as e:
            yield http.close()
            raise http.notReached(e, "the Consul agent", "consul")
        except Exception:
            yield http.close()
            raise
        if response.code == 403:
            text = response.text()
            yield http.close()
            raise StoreUnavailable(None, BACKEND, "Consul at %s refused the ACL token (%s): "
                                   "check token_file" % (address.base, text))
        return store

    # -- helpers -------------------------------------------------------------

    def _ck(self, key):
        return self._root + "/" + key if key else self._root + "/"

    def _params(self, read=True, *extra):
        params = list(extra)
        if self._address.dc:
            params.append(("dc", self._address.dc))
        if read and self._address.consistency != "default":
            params.append((self._address.consistency, None))
        return params

    def _entry(self, kv):
        key = kv["Key"][len(self._root) + 1:]
        value = base64.b64decode(kv["Value"]) if kv.get("Value") else b""
        return Entry(key, value, kv["ModifyIndex"], kv.get("Session") or None)

    def _entries(self, response, prefix):
        if response.code == 404:
            return {}
        entries = (self._entry(kv) for kv in response.json() if kv["Key"].startswith(
            self._root + "/"))
        return {e.key: e for e in entries if e.key and inSubtree(e.key, prefix)}

    def _request(self, *args, **kwargs):
        if self._closing is not None:
            return defer.fail(StoreUnavailable(kwargs.get("key"), BACKEND, "the store was closed"))
        return self._http.request(*args, **kwargs)

    # -- reads ---------------------------------------------------------------

    def get(self, key):
        try:
            checkKey(key, BACKEND)
        except StoreError:
            return defer.fail()
        d = self._request("GET", "/v1/kv/" + self._ck(key), self._params(), key=key,
                          expect=(200, 404))
        return d.addCallback(lambda r: self._entries(r, key).get(key))

    def list(self, prefix):
        try:
            checkPrefix(prefix, BACKEND)
        except StoreError:
            return defer.fail()
        d = self._request("GET", "/v1/kv/" + self._ck(prefix),
                          self._params(True, ("recurse", None)), key=prefix or None,
                          expect=(200, 404))
        return d.addCallback(self._entries, prefix)

    # -- writes --------------------------------------------------------------

    def _one(self, op):
        try:
            checkOps([op], BACKEND)
        except StoreError:
            return defer.fail()
        if isinstance(op, Delete) and op.version is None:
            return self._seq.run((op.key,), self._delete, op.key)
        if isinstance(op, (Put, Create)) and len(op.value) * 4 // 3 > MAX_TXN_BODY - 4096:
            return self._seq.run((op.key,), self._bigPut, op)

        def single(f):
            f.value.index = None
            return f
        return self._txn([op]).addCallbacks(lambda results: results[0], single)

    def _delete(self, key):
        """
        Delete C{key}, telling whether it was there: a txn C{get} (which
        fails on an absent key) then C{delete}.
        """
        ck = self._ck(key)
        d = self._request("PUT", "/v1/txn", self._params(False), key=key, expect=(200, 409),
                          idempotent=True, body=[{"KV": {"Verb": "get", "Key": ck}},
                                {"KV": {"Verb": "delete", "Key": ck}}])
        return d.addCallback(lambda r: r.code == 200)

    @defer.inlineCallbacks
    def _bigPut(self, op):
        """
        Write a value too large for a txn body with the KV endpoint, marked
        with random flags so that the entry read back is known to be ours.
        """
        if isinstance(op, Put) and op.version == 0:
            raise VersionConflict(op.key, BACKEND)  # ?cas=0 would mean 'only if absent'
        nonce = random.getrandbits(63) | 1
        cas = 0 if isinstance(op, Create) else op.version
        params = self._params(False, ("flags", nonce))
        if cas is not None:
            params.append(("cas", cas))
        path = "/v1/kv/" + self._ck(op.key)
        response = yield self._request("PUT", path, params, body=op.value, key=op.key,
                                       idempotent=cas is None)
        if response.body.strip() != b"true":
            raise (KeyExists if isinstance(op, Create) else VersionConflict)(op.key, BACKEND)
        response = yield self._request("GET", path, self._params(), key=op.key, expect=(200, 404))
        kvs = response.json() if response.code == 200 else []
        if kvs and kvs[0].get("Flags") == nonce:
            return self._entry(kvs[0])
        # Overwritten since: version 0 matches nothing, as our write is gone.
        return Entry(op.key, op.value, 0, None)

    def transaction(self, ops):
        return checkedTransaction(ops, BACKEND, self._txn)

    def _txn(self, ops, session=None):
        """
        Apply C{ops} (as the ephemeral keys of C{session}, if given) in one
        C{/v1/txn}, in turn with this client's other writes to their keys.
        """
        return self._seq.run({op.key for op in ops}, self._sendTxn, ops, session)

    def _sendTxn(self, ops, session):
        plan = TxnPlan(self._ck, ops, session)
        body = json.dumps(plan.body).encode("utf-8")
        if len(body) > MAX_TXN_BODY:
            return defer.fail(InvalidTransaction(
                None, BACKEND, "transaction of %d bytes is over Consul's txn_max_req_len of %d "
                "bytes; split it" % (len(body), MAX_TXN_BODY)))
        d = self._request("PUT", "/v1/txn", self._params(False), body=body,
                          key=ops[0].key if len(ops) == 1 else None, expect=(200, 409),
                          idempotent=session is None and idempotent(ops))

        def done(response):
            answer = response.json()
            if response.code == 409:
                raise plan.error(answer.get("Errors") or [{}])
            return plan.entries(answer.get("Results"))
        return d.addCallback(done)

    # -- watches -------------------------------------------------------------

    def watch(self, prefix, callback):
        checkPrefix(prefix, BACKEND)
        if self._closing is not None:
            raise StoreUnavailable(prefix or None, BACKEND, "the store was closed")
        w = _Watch(self, prefix, callback)
        self._watches.add(w)
        w.start()
        return w.delivery

    # -- sessions --------------------------------------------------------------

    @defer.inlineCallbacks
    def session(self, ttl):
        """
        Open a Consul session with half of C{ttl} as its Consul TTL (Consul
        invalidates a session up to twice its TTL after the last renewal).
        When that is under the agent's C{session_ttl_min}, the minimum is
        used and a warning says how long a dead holder's keys now live.
        """
        sent = self._reactor.seconds()
        response = yield self._createSession(ttl / 2.0)
        least = minimumTTL(response.text()) if response.code != 200 else None
        if least is not None and least > ttl / 2.0:
            log.warn("Consul's session_ttl_min is {least}s: sessions asked for {ttl}s expire up "
                     "to {expiry}s after their holder stops", least=least, ttl=ttl,
                     expiry=2 * least)
            ttl = 2 * least
            sent = self._reactor.seconds()
            response = yield self._createSession(least)
        if response.code != 200:
            # Consul's Session.Apply refusals (a TTL out of bounds, say) are
            # RPC errors, which its HTTP API answers with a 500.
            cls = StoreError if response.code < 500 or least is not None else StoreUnavailable
            raise cls(None, BACKEND, "Consul refused a session with TTL %gs (half of %gs): "
                      "HTTP %d: %s" % (ttl / 2.0, ttl, response.code, response.text()))
        s = ConsulSession(self, response.json()["ID"], ttl, sent)
        self._sessions.add(s)
        s.start()
        return s

    def _createSession(self, consulTTL):
        # A 500 is handled here, not retried: it is how Consul refuses a TTL.
        return self._request(
            "PUT", "/v1/session/create", self._params(False), expect=(200, 400, 500),
            body={"Name": "p2twisted", "TTL": "%gs" % (consulTTL,), "Behavior": "delete",
                  "LockDelay": "0s"})

    @defer.inlineCallbacks
    def close(self):
        if self._closing is None:
            self._closing = defer.Deferred()
            for w in list(self._watches):
                w.delivery.cancel()
            try:
                yield defer.gatherResults([s.close() for s in list(self._sessions)],
                                          consumeErrors=True)
            finally:
                yield self._http.close()
                self._closing.callback(None)
        else:
            yield self._closing


class _Watch(object):
    """
    The blocking-query loop of one watch.
    """

    def __init__(self, store, prefix, callback):
        self.store = store
        self.prefix = prefix
        self.delivery = Delivery(callback, self._cancelled)
        self.index = 0
        self.failures = 0
        self.pending = None
        self.delays = retryDelays(0.25, 10.0)

    def start(self):
        self._query()

    def _query(self):
        if self.delivery.cancelled:
            return
        store = self.store
        reactor = store._reactor
        started = reactor.seconds()
        params = store._params(True, ("recurse", None))
        if self.index:
            params += [("index", self.index), ("wait", "%ds" % (WATCH_WAIT,))]
        d = self.pending = store._request(
            "GET", "/v1/kv/" + store._ck(self.prefix), params, key=self.prefix or None,
            expect=(200, 404), timeout=WATCH_WAIT * (1 + 1 / 16.0) + 10, blocking=True)

        def answered(response):
            self.failures = 0
            index = int(response.header("X-Consul-Index") or 0)
            if index < self.index:
                log.info("Consul index of {prefix!r} went back from {old} to {new}; re-reading",
                         prefix=self.prefix, old=self.index, new=index)
                index = 0
            self.index = max(index, 0)
            self.delivery.offer(store._entries(response, self.prefix))
            return max(0.0, WATCH_PAUSE - (reactor.seconds() - started))

        def failed(f):
            if self.delivery.cancelled or store._closing is not None:
                return None
            delay = self.delays(self.failures)
            self.failures += 1
            # The agent may come back as another cluster, whose index is
            # lower than ours: a blocking query would then wait in vain.
            self.index = 0
            log.warn("watch of {prefix!r} in Consul failed ({error}); retrying in {delay:.1f}s",
                     prefix=self.prefix, error=f.getErrorMessage(), delay=delay)
            return delay

        def again(delay):
            self.pending = None
            if delay is None or self.delivery.cancelled:
                return
            if delay == 0:
                self._query()
            else:
                self.pending = task.deferLater(reactor, delay, self._query)
                self.pending.addErrback(lambda f: f.trap(defer.CancelledError))
        d.addCallback(answered).addErrback(failed).addCallback(again)
        d.addErrback(lambda f: log.failure("Consul watch loop", f))

    def _cancelled(self, delivery):
        self.store._watches.discard(self)
        if self.pending is not None:
            self.pending.cancel()


@implementer(ILock)
class ConsulLock(object):

    def __init__(self, session, entry):
        self._session = session
        self.key = entry.key
        self.version = entry.version

    def release(self):
        """
        Delete the lock key if this session still holds it.
        """
        store, ck, sid = self._session.store, self._session.store._ck(self.key), self._session.id
        body = [{"KV": {"Verb": "check-session", "Key": ck, "Session": sid}},
                {"KV": {"Verb": "delete", "Key": ck}}]
        d = store._seq.run((self.key,), lambda: store._request(
            "PUT", "/v1/txn", store._params(False), key=self.key, expect=(200, 409), body=body,
            idempotent=True))
        return d.addCallback(lambda _: None)


@implementer(ISession)
class ConsulSession(SessionMixin):
    """
    A Consul session renewed every C{ttl/4} seconds, and lost C{ttl} seconds
    after the last renewal that succeeded was sent (Consul may invalidate it
    from then on), whatever renewal is still being tried.

    @param since: when the request creating it was sent.
    """

    backend = BACKEND
    lockClass = ConsulLock

    def __init__(self, store, id, ttl, since=None):
        self.store = store
        self.id = id
        self.ttl = ttl
        self.lost = False
        self._waiters = []
        reactor = store._reactor
        self._renewed = reactor.seconds() if since is None else since
        self._deadline = None
        self._loop = task.LoopingCall(self._renew)
        self._loop.clock = reactor

    def start(self):
        reactor = self.store._reactor
        self._deadline = reactor.callLater(
            max(0.0, self._renewed + self.ttl - reactor.seconds()), self._expired)
        self._loop.start(self.ttl / 4.0, now=False).addErrback(
            lambda f: log.failure("renewing Consul session {id}", f, id=self.id))

    def _expired(self):
        log.warn("Consul session {id} lost: not renewed for {ttl}s", id=self.id, ttl=self.ttl)
        self._end()

    @defer.inlineCallbacks
    def _renew(self):
        reactor = self.store._reactor
        sent = reactor.seconds()
        try:
            # A heartbeat: never queued behind the store's other requests.
            response = yield self.store._request(
                "PUT", "/v1/session/renew/" + self.id, self.store._params(False),
                expect=(200, 404), idempotent=True, timeout=self.ttl / 4.0, blocking=True)
        except StoreError as e:
            if not self.lost:
                log.warn("renewing Consul session {id} failed ({error}); retrying", id=self.id,
                         error=e)
            return
        if self.lost:
            return
        if response.code == 404:
            log.warn("Consul session {id} was invalidated", id=self.id)
            self._end()
        else:
            self._renewed = sent
            self._deadline.reset(max(0.0, sent + self.ttl - reactor.seconds()))

    def _end(self):
        if self.lost:
            return
        self.lost = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        if self._loop.running:
            self._loop.stop()
        self.store._sessions.discard(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def createEphemeral(self, key, value):
        refused = self._refuse(key, value)
        if refused is not None:
            return refused

        def failed(f):
            f.value.index = None
            if f.check(SessionLost):
                self._end()
            return f
        d = self.store._txn([Put(key, value)], self.id).addCallback(lambda results: results[0])
        return d.addErrback(self._recognise, key, value).addErrback(failed)

    @defer.inlineCallbacks
    def close(self):
        if self.lost:
            return
        self._end()
        try:
            # Bounded, and not queued behind other requests: an unreachable
            # or slow agent must not hold up closing.
            yield self.store._http.request("PUT", "/v1/session/destroy/" + self.id,
                                           self.store._params(False), idempotent=True,
                                           timeout=min(5.0, self.ttl), attempts=2,
                                           blocking=True)
        except StoreError as e:
            log.warn("could not destroy Consul session {id} ({error}); it expires in {ttl}s",
                     id=self.id, error=e, ttl=self.ttl)
