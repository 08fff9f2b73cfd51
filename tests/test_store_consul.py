"""
The Consul store passes the store contract against the Consul test server
(L{tests.consulserver}; no real Consul can be installed here), including a
SIGKILLed holder process and lock exclusivity between processes, and copes
with what Consul does: index regressions, outages, invalidated sessions,
ACL tokens, large values, the 512 KiB transaction body.
"""

import uuid

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from p2twisted.errors import (
    AlreadyLocked, InvalidTransaction, KeyExists, SessionLost, StoreUnavailable, UsageError,
    VersionConflict)
from p2twisted.store import consul, openStore
from p2twisted.store.common import MAX_VALUE, Check, Create, Delete, Put
from p2twisted.store.consul import ConsulStore, parseURL
from tests.consulserver import ConsulServer
from tests.httpservers import CommitThenFail, once, serve
from tests.servers import failOnStoreWarnings
from tests.store_contract import CrossProcessLockMixin, Recorder, StoreContractMixin, waitFor
from tests.zkserver import freePort


class ServerMixin(object):
    """
    A Consul test server in this process per test, and a fresh prefix.
    """

    #: Whether warnings logged by the store fail the test.
    quiet = True

    def setUp(self):
        self.server = ConsulServer(reactor, sessionTTLMin=0.5)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.prefix = "t%s" % (uuid.uuid4().hex[:12],)
        failOnStoreWarnings(self, unless=lambda: not self.quiet)

    def storeURL(self, query=""):
        return "consul://%s/%s%s" % (self.server.address, self.prefix, query)

    def makeStore(self):
        return openStore(self.storeURL(), reactor)

    @defer.inlineCallbacks
    def open(self, url=None):
        store = yield openStore(url or self.storeURL(), reactor)
        self.addCleanup(store.close)
        return store


class ConsulContractTests(ServerMixin, StoreContractMixin, CrossProcessLockMixin,
                          unittest.TestCase):
    """
    The store contract, each test on its own test server.
    """

    sessionTTL = 2.0


class ConsulLayoutTests(ServerMixin, unittest.TestCase):
    """
    How keys, versions, sessions and transactions map onto Consul's API.
    """

    def kv(self):
        return self.server.state.kvs

    @defer.inlineCallbacks
    def test_layout(self):
        """
        Key C{a/b} is the Consul key C{<prefix>/a/b} holding the raw value;
        the version is its C{ModifyIndex}; keys outside the prefix are not
        ours.
        """
        store = yield self.open()
        e = yield store.put("a/b", b"value")
        raw = self.kv()[self.prefix + "/a/b"]
        self.assertEqual((raw["Value"], raw["ModifyIndex"]), (b"value", e.version))
        other = yield self.open("consul://%s/%sx" % (self.server.address, self.prefix))
        yield other.put("a/b", b"theirs")
        self.assertEqual(sorted((yield store.list(""))), ["a/b"])

    @defer.inlineCallbacks
    def test_ephemeralIsAcquired(self):
        """
        An ephemeral key is acquired by a Consul session with
        C{Behavior=delete}, no lock delay, and half our TTL.
        """
        store = yield self.open()
        session = yield store.session(30)
        entry = yield session.createEphemeral("machines/n1", b"facts")
        raw = self.kv()[self.prefix + "/machines/n1"]
        self.assertEqual((raw["Session"], entry.owner), (session.id, session.id))
        info = self.server.state.sessions[session.id]["info"]
        self.assertEqual((info["Behavior"], info["TTL"], info["LockDelay"]), ("delete", "15s", 0))

    @defer.inlineCallbacks
    def test_invalidatedSessionIsLost(self):
        """
        A session invalidated on the server (an operator, a lost node) is
        noticed at the next renewal: C{whenLost} fires, its keys are gone
        and C{createEphemeral} fails with L{SessionLost}.
        """
        self.quiet = False
        store = yield self.open()
        session = yield store.session(2)
        yield session.createEphemeral("machines/n1", b"x")
        lost = session.whenLost()
        self.server.state.destroy(session.id)
        yield lost.addTimeout(10, reactor)
        self.assertTrue(session.lost)
        self.assertIsNone((yield store.get("machines/n1")))
        yield self.assertFailure(session.createEphemeral("machines/n2", b"x"), SessionLost)

    @defer.inlineCallbacks
    def test_createOnInvalidSession(self):
        """
        C{createEphemeral} on a session Consul no longer knows fails with
        L{SessionLost} at once, and the session counts as lost.
        """
        store = yield self.open()
        session = yield store.session(30)
        self.server.state.destroy(session.id)
        yield self.assertFailure(session.createEphemeral("machines/n3", b"x"), SessionLost)
        self.assertTrue(session.lost)
        yield session.whenLost()

    @defer.inlineCallbacks
    def test_unreachableLosesSession(self):
        """
        A session whose renewals fail for its whole TTL is lost.
        """
        self.quiet = False
        store = yield self.open()
        session = yield store.session(1.0)
        lost = session.whenLost()
        yield self.server.stop()
        yield lost.addTimeout(15, reactor)
        self.assertTrue(session.lost)

    @defer.inlineCallbacks
    def test_shortTTLRaised(self):
        """
        When half the TTL is under Consul's C{session_ttl_min} (10 s by
        default, and the agent's sessions are 15 s), the session gets the
        minimum, and says so: its C{ttl} is twice that.
        """
        self.quiet = False
        self.server.state.sessionTTLMin = 10
        store = yield self.open()
        session = yield store.session(5)
        self.assertEqual(session.ttl, 20)
        self.assertEqual(self.server.state.sessions[session.id]["info"]["TTL"], "10s")

    def test_minimumTTL(self):
        self.assertEqual(consul.minimumTTL(
            "Session TTL '2.5s' must be between [10s=24h0m0s]"), 10)
        self.assertEqual(consul.minimumTTL(
            "rpc error making call: Invalid Session TTL '7500000000', must be between "
            "[10s=24h0m0s]"), 10)
        self.assertEqual(consul.minimumTTL("must be between [1m30s=24h0m0s]"), 90)
        self.assertEqual(consul.minimumTTL("must be between [500ms=24h0m0s]"), 0.5)
        self.assertIsNone(consul.minimumTTL("Invalid Behavior setting"))

    @defer.inlineCallbacks
    def test_transactionErrorsMapped(self):
        """
        Each kind of failing op gives its typed error with our op's index,
        also when our op is two Consul ops (a versioned delete).
        """
        store = yield self.open()
        a = yield store.put("x/a", b"1")
        yield store.put("x/a", b"2")
        cases = [
            ([Put("x/n", b""), Delete("x/a", a.version)], VersionConflict, 1),
            ([Delete("x/absent", a.version), Put("x/n", b"")], VersionConflict, 0),
            ([Put("x/n", b""), Put("x/n2", b""), Create("x/a", b"")], KeyExists, 2),
            ([Check("x/a", None)], VersionConflict, 0),
            ([Put("x/a", b"3", a.version)], VersionConflict, 0),
        ]
        for ops, error, index in cases:
            e = yield self.assertFailure(store.transaction(ops), error)
            self.assertEqual(e.index, index, ops)
        self.assertEqual(sorted((yield store.list("x"))), ["x/a"])

    @defer.inlineCallbacks
    def test_transactionBodyLimit(self):
        """
        A transaction whose body is over Consul's 512 KiB is refused with
        L{InvalidTransaction} before anything is sent.
        """
        store = yield self.open()
        before = len(self.server.api.requests)
        e = yield self.assertFailure(store.transaction(
            [Put("big/%d" % i, b"x" * 200000) for i in range(3)]), InvalidTransaction)
        self.assertIn("txn_max_req_len", str(e))
        self.assertEqual(len(self.server.api.requests), before)

    @defer.inlineCallbacks
    def test_largeValues(self):
        """
        Values too large for a transaction body go through the KV endpoint:
        put, create and cas work, with versions that guard later writes.
        """
        store = yield self.open()
        big = b"y" * MAX_VALUE
        e = yield store.create("big/k", big)
        self.assertEqual((yield store.get("big/k")), e)
        yield self.assertFailure(store.create("big/k", big), KeyExists)
        e2 = yield store.cas("big/k", big[:-1], e.version)
        yield self.assertFailure(store.cas("big/k", big, e.version), VersionConflict)
        self.assertEqual((yield store.get("big/k")).version, e2.version)
        e3 = yield store.put("big/k", big)
        yield store.delete("big/k", e3.version)
        # Version 0 (what a write overwritten before it was read back gets)
        # matches nothing; with ?cas=0 it would create the key.
        yield self.assertFailure(store.cas("big/k", big, 0), VersionConflict)
        self.assertIsNone((yield store.get("big/k")))

    @defer.inlineCallbacks
    def test_watchResetsOnIndexRegression(self):
        """
        When the server's index goes back (a snapshot restored while a
        blocking query waits), the watch starts again from index 0 and
        delivers the new state.
        """
        self.quiet = False
        store = yield self.open()
        for i in range(20):
            yield store.put("w/k%d" % i, b"old")
        rec = Recorder()
        w = store.watch("w", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: len(rec.values()) == 20, what="the first snapshot")
        # (A restore between two queries is seen when the next one's wait ends.)
        yield waitFor(lambda: self.server.state.waiters, what="a blocking query")
        self.server.restore()
        other = yield self.open()
        yield other.put("w/fresh", b"new")
        yield rec.waitForValues({"w/fresh": b"new"})

    @defer.inlineCallbacks
    def test_watchSurvivesOutage(self):
        """
        A watch keeps trying through an outage of the server and delivers
        the state written while it was down.
        """
        self.quiet = False
        port = freePort()
        self.server = ConsulServer(reactor, port=port)
        self.server.start()
        self.addCleanup(self.server.stop)
        store = yield self.open()
        rec = Recorder()
        w = store.watch("o", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: rec.snapshots, what="the first snapshot")
        state = self.server.state
        yield self.server.stop()
        yield task.deferLater(reactor, 0.5, lambda: None)
        state.write(lambda kvs, t, i: state.setEntry(kvs, i, self.prefix + "/o/k", b"while down"))
        self.server = ConsulServer(reactor, port=port)
        self.server.restore(state)
        self.server.start()
        self.addCleanup(self.server.stop)
        yield rec.waitForValues({"o/k": b"while down"})

    @defer.inlineCallbacks
    def test_watchPause(self):
        """
        A watch sends at most one query per 250 ms, however fast things
        change.
        """
        store = yield self.open()
        rec = Recorder()
        w = store.watch("p", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: rec.snapshots, what="the first snapshot")
        requests = self.server.api.requests
        start = len(requests)
        started = reactor.seconds()
        for i in range(40):
            yield store.put("p/k", b"%d" % i)
        yield rec.waitForValues({"p/k": b"39"})
        queries = [r for r in requests[start:] if r[0] == "GET"]
        self.assertLessEqual(len(queries), 2 + (reactor.seconds() - started) / 0.25)

    @defer.inlineCallbacks
    def test_token(self):
        """
        With ACLs on, the token from C{token_file} is sent; a store without
        it cannot open, with an error saying so.
        """
        yield self.server.stop()
        self.server = ConsulServer(reactor, token="s3cret")
        self.server.start()
        self.addCleanup(self.server.stop)
        e = yield self.assertFailure(openStore(self.storeURL(), reactor), StoreUnavailable)
        self.assertIn("refused the ACL token", str(e))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\n")
        store = yield self.open(self.storeURL("?token_file=" + path))
        yield store.put("a", b"1")
        self.assertEqual((yield store.get("a")).value, b"1")

    @defer.inlineCallbacks
    def test_unreachable(self):
        """
        Opening a store on a port nobody listens on fails with
        L{StoreUnavailable} naming the address.
        """
        url = "consul://127.0.0.1:%d/p2" % (freePort(),)
        e = yield self.assertFailure(openStore(url, reactor), StoreUnavailable)
        self.assertIn("http://127.0.0.1:", str(e))
        self.assertIn("connection refused", str(e))

    @defer.inlineCallbacks
    def test_datacenterAndConsistency(self):
        """
        C{dc} and C{consistency} reach the server as query parameters.
        """
        store = yield self.open(self.storeURL("?dc=dc1&consistency=stale"))
        yield store.put("a", b"1")
        yield store.get("a")
        yield self.assertFailure(
            openStore(self.storeURL("?dc=mars"), reactor), StoreUnavailable)

    @defer.inlineCallbacks
    def test_closedStoreRefuses(self):
        store = yield openStore(self.storeURL(), reactor)
        yield store.close()
        yield store.close()
        yield self.assertFailure(store.get("a"), StoreUnavailable)
        self.assertRaises(StoreUnavailable, store.watch, "a", lambda s: None)


class CommittedThenFailedTests(ServerMixin, unittest.TestCase):
    """
    The agent applies a write, then answers 500 ("leadership lost while
    committing log"): the write must not be reported as a conflict with
    itself.
    """

    kv = ConsulLayoutTests.kv

    def proxy(self, pick):
        proxy = CommitThenFail(reactor, "http://" + self.server.address, once(pick),
                               (500, b"leadership lost while committing log"))
        url = "consul://%s/%s" % (serve(self, proxy, reactor)[len("http://"):], self.prefix)
        return proxy, url

    @defer.inlineCallbacks
    def test_lockApplied(self):
        """
        A lock taken, then answered with a 500, is ours: C{lock} succeeds
        (a retry would have said C{AlreadyLocked}, and the key would stay
        locked by our own session for its life), and others are refused.
        """
        proxy, url = self.proxy(lambda method, path, body: b'"lock"' in body)
        store = yield self.open(url)
        session = yield store.session(30)
        lock = yield session.lock("locks/x", b"me")
        self.assertEqual(len(proxy.failed), 1)
        self.assertEqual(self.kv()[self.prefix + "/locks/x"]["Session"], session.id)
        other = yield (yield self.open()).session(30)
        yield self.assertFailure(other.lock("locks/x"), AlreadyLocked)
        yield lock.release()
        yield other.lock("locks/x")

    @defer.inlineCallbacks
    def test_lockOfAnotherNotTaken(self):
        """
        A lock attempt answered with a 500 while another session holds the
        lock is not mistaken for ours: it fails with L{StoreUnavailable}
        (outcome unknown), and the holder keeps the lock.
        """
        proxy, url = self.proxy(lambda method, path, body: b'"lock"' in body)
        holder = yield (yield self.open()).session(30)
        yield holder.lock("locks/x", b"holder")
        store = yield self.open(url)
        session = yield store.session(30)
        e = yield self.assertFailure(session.lock("locks/x", b"holder"), StoreUnavailable)
        self.assertIn("outcome unknown", str(e))
        self.assertEqual(len(proxy.failed), 1)
        self.assertEqual((yield store.get("locks/x")).owner, holder.id)

    @defer.inlineCallbacks
    def test_createOutcomeUnknown(self):
        """
        A create answered with a 500 is not sent again: it fails with
        L{StoreUnavailable} saying the outcome is unknown, not a false
        L{KeyExists}; a cas likewise.
        """
        proxy, url = self.proxy(lambda method, path, body: path == "/v1/txn")
        store = yield self.open(url)
        e = yield self.assertFailure(store.create("a", b"1"), StoreUnavailable)
        self.assertIn("outcome unknown", str(e))
        self.assertEqual((yield store.get("a")).value, b"1")

    @defer.inlineCallbacks
    def test_putRetried(self):
        """
        A plain put answered with a 500 is sent again (applying it twice is
        applying it once) and succeeds.
        """
        proxy, url = self.proxy(lambda method, path, body: path == "/v1/txn")
        store = yield self.open(url)
        entry = yield store.put("a", b"1")
        self.assertEqual((len(proxy.failed), entry.value), (1, b"1"))
        self.assertEqual(self.kv()[self.prefix + "/a"]["ModifyIndex"], entry.version)


class URLTests(unittest.TestCase):

    def test_parse(self):
        a = parseURL("consul://127.0.0.1:8500/p2")
        self.assertEqual((a.base, a.root, a.token, a.tls, a.dc, a.consistency),
                         ("http://127.0.0.1:8500", "p2", None, None, None, "default"))
        self.assertEqual(parseURL("consul://consul.example").base, "http://consul.example:8500")
        self.assertEqual(parseURL("consul://h:1/").root, "p2")
        self.assertEqual(parseURL("consul://h:1/a/b/").root, "a/b")
        tls = parseURL("consul://h:8501/p2?ca_file=/etc/ca.pem&dc=east&consistency=consistent")
        self.assertEqual((tls.base, tls.tls.ca, tls.dc, tls.consistency),
                         ("https://h:8501", "/etc/ca.pem", "east", "consistent"))
        self.assertEqual(parseURL("consul://h:1/p2?tls=1").base, "https://h:1")

    def test_bad(self):
        for bad in ["consul://h:port/p2", "consul://:1/p2", "consul://h:1/a b",
                    "consul://h:1/p2?colour=blue", "consul://h:1/p2?consistency=eventual",
                    "consul://h:1/p2?token_file=/nonexistent/token"]:
            e = self.assertRaises(UsageError, parseURL, bad)
            self.assertNotIn("\n", str(e))

    def test_registered(self):
        """
        C{openStore} opens C{consul://} URLs.
        """
        e = self.failureResultOf(openStore("consul://h:port/p2", task.Clock()), UsageError)
        self.assertIn("bad Consul store URL", str(e.value))

    def test_interfaceNames(self):
        self.assertEqual(ConsulStore.backend, "consul")
        self.assertEqual(consul.BACKEND, "consul")


class _Hanging(object):
    """
    A resource answering as C{api} does until C{hang} is set, then never.
    """

    isLeaf = True

    def __init__(self, api):
        self.api = api
        self.hang = False

    def render(self, request):
        from twisted.web import server
        if self.hang is True or (callable(self.hang) and self.hang(request)):
            return server.NOT_DONE_YET
        return self.api.render(request)

    def getChildWithDefault(self, name, request):
        return self


class SessionClockTests(unittest.TestCase):
    """
    Session liveness on a L{task.Clock}, through C{StubTreq}.
    """

    def setUp(self):
        from treq.testing import StubTreq

        from tests.consulserver import ConsulAPI
        from tests.consulstate import ConsulState
        self.clock = task.Clock()
        self.api = ConsulAPI(ConsulState(self.clock, 0.5))
        self.addCleanup(lambda: self.api.state.stop())
        self.resource = _Hanging(self.api)
        self.stub = StubTreq(self.resource)

    def open(self):
        d = ConsulStore.open("consul://consul.test:8500/p2", self.clock, self.stub)
        self.stub.flush()
        return self.successResultOf(d)

    def test_lostByTheServersDeadline(self):
        """
        When the agent stops answering, the session counts as lost at the
        latest when Consul may have invalidated it (C{ttl} after the last
        renewal was sent), even while a renewal is still being tried: a lock
        holder must not go on believing it holds a lock another may hold.
        """
        store = self.open()
        d = store.session(20)
        self.stub.flush()
        session = self.successResultOf(d)
        lost = session.whenLost()
        self.clock.advance(5)  # the first renewal is sent and answered
        self.stub.flush()
        renewed = self.clock.seconds()
        self.assertIn(session.id, self.api.state.sessions)
        self.resource.hang = True
        while self.clock.seconds() < renewed + 20:
            self.clock.advance(0.25)
            self.stub.flush()
        self.assertTrue(session.lost)
        self.successResultOf(lost)
        self.resource.hang = False
        d = store.close()
        self.stub.flush()
        self.clock.advance(1)
        self.successResultOf(d)

    def test_renewalsDoNotQueueBehindRequests(self):
        """
        A session's renewals are sent however many requests wait for the
        store's connections (a burst of writes to a slow agent): they are
        its heartbeat, and a renewal queued past the TTL loses the session.
        """
        store = self.open()
        d = store.session(20)
        self.stub.flush()
        session = self.successResultOf(d)
        self.resource.hang = lambda request: request.method == b"GET"
        reads = [store.get("slow/%d" % (i,)) for i in range(40)]
        while self.clock.seconds() < 30:
            self.clock.advance(0.25)
            self.stub.flush()
        self.assertFalse(session.lost)
        self.resource.hang = False
        d = store.close()
        self.stub.flush()
        self.clock.advance(1)
        self.successResultOf(d)
        for r in reads:
            self.failureResultOf(r, StoreUnavailable)
