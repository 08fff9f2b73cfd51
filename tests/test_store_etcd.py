"""
The etcd store passes the store contract against a real etcd (Debian's
C{etcd-server}, 3.4) and survives what etcd does: server restarts in the
middle of a watch, compaction of the revision a watch would resume from,
lease expiry.
"""

import base64
import json
import os
import shutil
import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.errors import (
    AlreadyLocked, InvalidTransaction, SessionLost, StoreUnavailable, UsageError)
from p2twisted.store import openStore
from p2twisted.store.common import MAX_VALUE, Put
from p2twisted.store.etcd import parseURL
from tests.etcdserver import EtcdServer, missing, sharedServer
from tests.httpservers import CommitThenFail, once, serve
from tests.servers import failOnStoreWarnings, requireServer
from tests.store_contract import CrossProcessLockMixin, Recorder, StoreContractMixin, waitFor


class ServerMixin(object):
    """
    A fresh root on the shared server per test.
    """

    #: Whether warnings of the store are a failure (no outage in the test).
    quiet = True

    def setUp(self):
        self.server = self.startServer()
        self.root = "/t%s" % (uuid.uuid4().hex,)
        failOnStoreWarnings(self, lambda: not self.quiet)

    def startServer(self):
        return sharedServer()

    def storeURL(self):
        return self.server.url(self.root)

    def makeStore(self):
        return openStore(self.storeURL(), reactor)

    @defer.inlineCallbacks
    def client(self):
        store = yield self.makeStore()
        self.addCleanup(store.close)
        return store


class EtcdContractTests(ServerMixin, StoreContractMixin, CrossProcessLockMixin,
                        unittest.TestCase):
    """
    The store contract, each test on its own root of the shared server.
    """

    sessionTTL = 2.0


class EtcdLayoutTests(ServerMixin, unittest.TestCase):
    """
    How keys map onto etcd keys, seen through the raw gateway.
    """

    def raw(self, key):
        answer = self.server.call("/v3/kv/range", {
            "key": base64.b64encode(key.encode()).decode()})
        return [base64.b64decode(kv.get("value", "")) for kv in answer.get("kvs", [])]

    @defer.inlineCallbacks
    def test_layout(self):
        """
        Key C{a/b} is the etcd key C{<root>/a/b} holding the value as is, and
        its version is the key's C{mod_revision}.
        """
        store = yield self.client()
        e = yield store.put("a/b", b"value")
        self.assertEqual(self.raw(self.root + "/a/b"), [b"value"])
        answer = self.server.call("/v3/kv/range", {
            "key": base64.b64encode((self.root + "/a/b").encode()).decode()})
        self.assertEqual(int(answer["kvs"][0]["mod_revision"]), e.version)

    @defer.inlineCallbacks
    def test_siblingsSharingSpelling(self):
        """
        Keys beside a prefix that sort inside its etcd range (C{x-1}, C{x.1})
        are neither listed nor watched under it.
        """
        store = yield self.client()
        for key in ["x", "x/a", "x-1", "x.1", "x0"]:
            yield store.put(key, b"v")
        self.assertEqual(sorted((yield store.list("x"))), ["x", "x/a"])
        rec = Recorder()
        w = store.watch("x", rec)
        self.addCleanup(w.cancel)
        yield rec.waitForValues({"x": b"v", "x/a": b"v"})
        yield store.put("x-2", b"v")
        yield store.put("x/b", b"v")
        yield rec.waitForValues({"x": b"v", "x/a": b"v", "x/b": b"v"})

    @defer.inlineCallbacks
    def test_writeOrderPerKey(self):
        """
        Writes of one client to one key apply in the order they were issued,
        even when issued without waiting (they travel on several
        connections): the last one issued is what stays.
        """
        store = yield self.client()
        for attempt in range(5):
            ds = [store.put("order/k", b"%d" % i) for i in range(100)]
            ds.append(store.delete("order/k"))
            ds += [store.put("order/k", b"final-%d" % attempt)]
            yield defer.gatherResults(ds)
            self.assertEqual((yield store.get("order/k")).value, b"final-%d" % attempt)

    @defer.inlineCallbacks
    def test_leaseRevokedElsewhere(self):
        """
        A session whose lease is revoked behind its back (C{etcdctl lease
        revoke}) notices at its next keep-alive: C{whenLost} fires, its keys
        are gone, and it refuses new ephemeral keys with L{SessionLost}.
        """
        self.quiet = False  # the loss is logged as a warning
        store = yield self.client()
        session = yield store.session(3.0)
        yield session.createEphemeral("machines/n1", b"up")
        self.server.call("/v3/lease/revoke", {"ID": str(session.lease)})
        yield session.whenLost().addTimeout(10, reactor)
        self.assertTrue(session.lost)
        self.assertIsNone((yield store.get("machines/n1")))
        yield self.assertFailure(session.createEphemeral("machines/n2", b"x"), SessionLost)

    @defer.inlineCallbacks
    def test_keepAliveNotQueuedBehindRequests(self):
        """
        A session's keep-alives do not wait behind the store's other
        requests: with every request slot taken (a burst of writes to a slow
        server), the lease is still renewed and its keys stay.
        """
        store = yield self.client()
        session = yield store.session(2.0)
        yield session.createEphemeral("machines/n1", b"up")
        slots = store._http._slots
        taken = yield defer.gatherResults([slots.acquire() for _ in range(slots.limit)])
        self.addCleanup(lambda: [slots.release() for _ in taken])
        renewed = session._renewed
        yield waitFor(lambda: session._renewed > renewed + session.ttl, what="two renewals")
        self.assertFalse(session.lost)
        answer = self.server.call("/v3/kv/range", {
            "key": base64.b64encode((self.root + "/machines/n1").encode()).decode()})
        self.assertEqual(len(answer.get("kvs", [])), 1)

    @defer.inlineCallbacks
    def test_transactionOverRequestLimit(self):
        """
        A transaction of values larger together than etcd takes in one
        request is refused with L{InvalidTransaction} saying to split it, and
        nothing is written.
        """
        store = yield self.client()
        e = yield self.assertFailure(store.transaction(
            [Put("big/%d" % i, b"x" * MAX_VALUE) for i in range(4)]), InvalidTransaction)
        self.assertIn("split the transaction", str(e))
        self.assertEqual((yield store.list("big")), {})

    @defer.inlineCallbacks
    def test_duplicateKeyInTransaction(self):
        """
        etcd refuses two writes to one key in a transaction: a clear
        L{InvalidTransaction} naming the reason, and nothing is written.
        """
        store = yield self.client()
        e = yield self.assertFailure(
            store.transaction([Put("d/a", b"1"), Put("d/a", b"2")]), InvalidTransaction)
        self.assertIn("two writes to one key", str(e))
        self.assertEqual((yield store.list("d")), {})

    @defer.inlineCallbacks
    def test_compactedWatchReads(self):
        """
        A watch whose resume revision was compacted away reads the subtree
        again and delivers its final state.
        """
        store = yield self.client()
        rec = Recorder()
        w = store.watch("c", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: rec.snapshots, what="initial snapshot")
        watch = next(iter(store._watches))
        yield store.put("c/a", b"1")
        yield rec.waitForValues({"c/a": b"1"})
        # Cut the stream; while it is down, write and compact past it.
        resumeFrom = watch.revision
        watch._running.cancel()
        yield store.put("c/b", b"2")
        yield store.delete("c/a")
        e = yield store.put("other", b"x")
        self.server.call("/v3/kv/compaction", {"revision": str(e.version), "physical": True})
        self.assertLess(resumeFrom, e.version)
        watch.start()
        yield rec.waitForValues({"c/b": b"2"})


class CommittedThenFailedTests(ServerMixin, unittest.TestCase):
    """
    etcd applies a write, then the gateway answers 503 ("request timed
    out"): the write must not be reported as a conflict with itself.
    """

    def proxy(self, pick):
        proxy = CommitThenFail(reactor, self.server.base, once(pick),
                               (503, b'{"error": "etcdserver: request timed out", "code": 14}'))
        url = "etcd://%s%s" % (serve(self, proxy, reactor)[len("http://"):], self.root)
        return proxy, url

    @defer.inlineCallbacks
    def test_lockApplied(self):
        """
        A lock taken, then answered with a 503, is ours: C{lock} succeeds
        (a retry would have said C{AlreadyLocked}, and the key would stay
        locked under our own lease for its life), and others are refused.
        """
        proxy, url = self.proxy(
            lambda method, path, body: path == "/v3/kv/txn" and b'"lease"' in body)
        store = yield openStore(url, reactor)
        self.addCleanup(store.close)
        session = yield store.session(30)
        lock = yield session.lock("locks/x", b"me")
        self.assertEqual(len(proxy.failed), 1)
        self.assertEqual((yield store.get("locks/x")).owner, session.id)
        other = yield (yield self.client()).session(30)
        yield self.assertFailure(other.lock("locks/x"), AlreadyLocked)
        yield lock.release()
        yield other.lock("locks/x")

    @defer.inlineCallbacks
    def test_lockOfAnotherNotTaken(self):
        """
        A lock attempt answered with a 503 while another session holds the
        lock is not mistaken for ours: it fails with L{StoreUnavailable}
        (outcome unknown), and the holder keeps the lock.
        """
        proxy, url = self.proxy(lambda method, path, body: path == "/v3/kv/txn" and b'"lease"' in body)
        holder = yield (yield self.client()).session(30)
        yield holder.lock("locks/x", b"holder")
        store = yield openStore(url, reactor)
        self.addCleanup(store.close)
        session = yield store.session(30)
        e = yield self.assertFailure(session.lock("locks/x", b"holder"), StoreUnavailable)
        self.assertIn("outcome unknown", str(e))
        self.assertEqual(len(proxy.failed), 1)
        self.assertEqual((yield store.get("locks/x")).owner, holder.id)

    @defer.inlineCallbacks
    def test_createOutcomeUnknown(self):
        """
        A create answered with a 503 is not sent again: it fails with
        L{StoreUnavailable} saying the outcome is unknown, not a false
        L{KeyExists}.
        """
        proxy, url = self.proxy(lambda method, path, body: path == "/v3/kv/txn")
        store = yield openStore(url, reactor)
        self.addCleanup(store.close)
        e = yield self.assertFailure(store.create("a", b"1"), StoreUnavailable)
        self.assertIn("outcome unknown", str(e))
        self.assertEqual((yield store.get("a")).value, b"1")

    @defer.inlineCallbacks
    def test_putRetried(self):
        """
        A plain put answered with a 503 is sent again and succeeds.
        """
        proxy, url = self.proxy(lambda method, path, body: path == "/v3/kv/txn")
        store = yield openStore(url, reactor)
        self.addCleanup(store.close)
        entry = yield store.put("a", b"1")
        self.assertEqual((len(proxy.failed), entry.value), (1, b"1"))
        self.assertEqual((yield store.get("a")).version, entry.version)


class EtcdRestartTests(ServerMixin, unittest.TestCase):
    """
    A server of its own, restarted (SIGKILL, same data) under a watch.
    """

    quiet = False

    def startServer(self):
        why = missing()
        if why:
            requireServer("etcd", why, install="apt-get install etcd-server")
        server = EtcdServer()
        server.start()
        self.addCleanup(server.destroy)
        return server

    @defer.inlineCallbacks
    def test_watchResumesAfterRestart(self):
        """
        A watch resumes after etcd is killed and started again, and delivers
        the final state of writes made on both sides of the restart.
        """
        store = yield self.client()
        rec = Recorder()
        w = store.watch("r", rec)
        self.addCleanup(w.cancel)
        yield store.put("r/before", b"1")
        yield rec.waitForValues({"r/before": b"1"})
        yield store.put("r/during", b"x")
        self.server.restart()
        other = yield self.client()
        yield other.put("r/after", b"2")
        yield other.delete("r/during")
        yield rec.waitForValues({"r/before": b"1", "r/after": b"2"})

    @defer.inlineCallbacks
    def test_watchAfterDataLoss(self):
        """
        When etcd comes back without its data (its revision went back), the
        watch reads the subtree again instead of waiting for a revision that
        never comes, and delivers what is there now.
        """
        store = yield self.client()
        rec = Recorder()
        w = store.watch("r", rec)
        self.addCleanup(w.cancel)
        for i in range(20):
            yield store.put("r/k%d" % (i,), b"old")
        yield waitFor(lambda: len(rec.values()) == 20, what="the old keys")
        self.server.stop()
        shutil.rmtree(os.path.join(self.server.directory, "data"))
        self.server.start()
        other = yield self.client()
        yield other.put("r/new", b"1")
        yield rec.waitForValues({"r/new": b"1"})

    @defer.inlineCallbacks
    def test_sessionLostWhileDown(self):
        """
        A session that cannot reach etcd for its TTL is lost: C{whenLost}
        fires.
        """
        store = yield self.client()
        session = yield store.session(2.0)
        self.server.stop()
        yield session.whenLost().addTimeout(20, reactor)
        self.assertTrue(session.lost)

    @defer.inlineCallbacks
    def test_unreachable(self):
        """
        Opening a store on a stopped server fails with L{StoreUnavailable}
        naming the endpoint.
        """
        self.server.stop()
        e = yield self.assertFailure(self.makeStore(), StoreUnavailable)
        self.assertIn("127.0.0.1:%d" % (self.server.port,), str(e))


class WatchStreamParseTests(unittest.TestCase):
    """
    The C{/v3/watch} stream as the gateway sends it (one JSON object per
    line) read in chunks cut anywhere: inside an object, between objects,
    several objects per chunk; a sibling key's event changes nothing.
    """

    def test_chunks(self):
        from p2twisted.store.common import Delivery
        from p2twisted.store.etcd import EtcdWatch, _Keys

        class Store(object):
            _keys = _Keys("/p2")

        def kv(key, value, revision):
            return {"key": base64.b64encode(b"/p2/" + key).decode(),
                    "value": base64.b64encode(value).decode(), "mod_revision": str(revision)}
        messages = [
            {"result": {"header": {"revision": "5"}, "created": True}},
            {"result": {"header": {"revision": "6"}, "events": [
                {"kv": kv(b"x/a", u"\u00e9\u20ac".encode("utf-8") * 3, 6)},
                {"kv": kv(b"x-1", b"sibling", 6)}]}},
            {"result": {"header": {"revision": "7"}, "events": [
                {"type": "DELETE", "kv": kv(b"x/a", b"", 7)}, {"kv": kv(b"x/b", b"2", 7)}]}}]
        data = b"".join(json.dumps(m).encode("utf-8") + b"\n" for m in messages)
        for size in [1, 2, 3, 7, 64, len(data)]:
            got = []
            watch = EtcdWatch(Store(), "x", Delivery(got.append))
            watch.revision = 5
            for i in range(0, len(data), size):
                watch._received(data[i:i + size])
            self.assertEqual([{k: e.value for k, e in snapshot.items()} for snapshot in got],
                             [{"x/a": u"\u00e9\u20ac".encode("utf-8") * 3}, {"x/b": b"2"}],
                             "chunks of %d bytes" % (size,))
            self.assertEqual((watch.revision, watch._buffer), (7, b""))


class ParseURLTests(unittest.TestCase):
    """
    C{etcd://} URLs.
    """

    def test_defaults(self):
        a = parseURL("etcd://127.0.0.1")
        self.assertEqual((a.base, a.root, a.tls), ("http://127.0.0.1:2379", "/p2", None))
        self.assertEqual(parseURL("etcd://e1/p2?tls=1").base, "https://e1:2379")

    def test_tls(self):
        a = parseURL("etcd://e1:2379/x/y?ca_file=/c.pem&cert_file=/me.pem&key_file=/me.key")
        self.assertEqual(a.base, "https://e1:2379")
        self.assertEqual(a.root, "/x/y")
        self.assertEqual((a.tls.ca, a.tls.cert, a.tls.key), ("/c.pem", "/me.pem", "/me.key"))

    def test_bad(self):
        for url in ["etcd://", "etcd://a:1,b:2/p2", "etcd://u:p@a/p2", "etcd://a/bad root",
                    "etcd://a/p2?nope=1", "etcd://a:x/p2"]:
            e = self.assertRaises(UsageError, parseURL, url)
            self.assertIn(url, str(e))
