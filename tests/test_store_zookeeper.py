"""
The ZooKeeper store passes the store contract against a real ZooKeeper
server (Debian's C{zookeeper} package), and survives what ZooKeeper does:
server restarts, session expiry, digest ACLs, unreachable servers.
"""

import os
import threading
import time
import uuid

from kazoo.client import KazooClient
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from p2twisted.errors import (
    InvalidTransaction, KeyExists, SessionLost, StoreError, StoreUnavailable, UsageError,
    VersionConflict)
from p2twisted.store import openStore
from p2twisted.store.common import MAX_VALUE, Check, Create, Delete, Put
from p2twisted.store.zookeeper import HEADER, ZooKeeperStore, parseURL
from tests.store_contract import CrossProcessLockMixin, Recorder, StoreContractMixin, waitFor
from tests.servers import MissingServer, failOnStoreWarnings, requireServer
from tests.zkserver import ZooKeeperServer, freePort, missing, sharedServer


class ServerMixin(object):
    """
    A fresh root on the shared server per test, and raw kazoo access to it.
    """

    def setUp(self):
        self.server = sharedServer()
        self.root = "/t%s" % (uuid.uuid4().hex,)
        failOnStoreWarnings(self)

    def storeURL(self):
        return "zk://%s%s" % (self.server.hosts, self.root)

    def makeStore(self):
        return openStore(self.storeURL(), reactor)

    def raw(self, **kwargs):
        """
        @return: L{Deferred} firing with a started raw kazoo client, stopped
            at cleanup.
        """
        client = KazooClient(hosts=self.server.hosts, **kwargs)

        def stop():
            return threads.deferToThread(lambda: (client.stop(), client.close()))
        self.addCleanup(stop)
        return threads.deferToThread(client.start, 15).addCallback(lambda _: client)


class ZooKeeperContractTests(ServerMixin, StoreContractMixin, CrossProcessLockMixin,
                             unittest.TestCase):
    """
    The store contract, each test on its own root of the shared server.
    """

    sessionTTL = 2.0


class ZooKeeperLayoutTests(ServerMixin, unittest.TestCase):
    """
    How keys map onto znodes, and what that means for versions.
    """

    @defer.inlineCallbacks
    def client(self, url=None):
        store = yield openStore(url or self.storeURL(), reactor)
        self.addCleanup(store.close)
        return store

    @defer.inlineCallbacks
    def test_lockRetakenBetweenReadAndMulti(self):
        """
        A write fenced by C{Check(lock.key, lock.version)} fails when the
        lock was re-created by another session between the store's read of
        the lock and its multi: a multi checks a znode's dataVersion, which
        a re-created lock repeats (0), so it checks the lock's fence znode
        too, which went with the first session.
        """
        store = yield self.client()
        other = yield self.client()
        a = yield store.session(5.0)
        lockA = yield a.lock("locks/rc/web", b"a")
        original = store._readAll
        retaken = []

        @defer.inlineCallbacks
        def readAll(paths, first=()):
            states = yield original(paths, first)
            if not retaken:
                yield a.close()  # its lock goes, as when the session expires
                b = yield other.session(5.0)
                retaken.append((yield b.lock("locks/rc/web", b"b")))
            return states
        store._readAll = readAll
        d = store.transaction([Check("locks/rc/web", lockA.version), Put("x", b"stale")])
        yield self.assertFailure(d, VersionConflict)
        self.assertIsNone((yield store.get("x")))

    @defer.inlineCallbacks
    def test_fencedParallelCreatesUnderNewParents(self):
        """
        Fenced transactions in flight at once (as a plan's window applies
        them), from two clients, each creating a key under the same missing
        parents: those that lose the race to create a parent read again and
        go through; every key is written once.
        """
        stores = [(yield self.client()), (yield self.client())]
        session = yield stores[0].session(5.0)
        lock = yield session.lock("locks/rc/web", b"me")
        fence = [Check(lock.key, lock.version)]
        results = yield defer.gatherResults([
            stores[i % 2].transaction(fence + [Create("new/a/parent/k%d" % (i,), b"%d" % (i,))])
            for i in range(12)])
        self.assertEqual([r[1].value for r in results], [b"%d" % (i,) for i in range(12)])
        self.assertEqual(sorted((yield stores[1].list("new"))),
                         sorted("new/a/parent/k%d" % (i,) for i in range(12)))

    @defer.inlineCallbacks
    def test_lockFence(self):
        """
        A lock's fence znode is invisible to reads and watches, a write
        fenced by the lock goes through, and releasing the lock removes it.
        """
        store = yield self.client()
        raw = yield self.raw()
        session = yield store.session(5.0)
        lock = yield session.lock("locks/rc/web", b"me")
        fence = "%s/locks/rc/web@%x" % (self.root, lock.version)
        self.assertIsNotNone(raw.exists(fence))
        self.assertEqual(sorted((yield store.list("locks"))), ["locks/rc/web"])
        yield store.transaction([Check(lock.key, lock.version), Put("x", b"1")])
        yield lock.release()
        self.assertIsNone(raw.exists(fence))
        self.assertEqual((yield store.list("locks")), {})
        yield self.assertFailure(store.transaction([Check(lock.key, lock.version),
                                                    Put("x", b"2")]), VersionConflict)

    @defer.inlineCallbacks
    def test_rootCreated(self):
        """
        The root znode, with its missing ancestors, is created at open; keys
        are znodes below it holding a one-byte header then the value.
        """
        self.root += "/deep/er"
        store = yield self.client()
        yield store.put("a/b", b"value")
        raw = yield self.raw()
        data, _ = raw.get(self.root + "/a/b")
        self.assertEqual(data, HEADER + b"value")
        self.assertEqual(raw.get(self.root + "/a")[0], b"")
        self.assertIsNone((yield store.get("a")))

    @defer.inlineCallbacks
    def test_structuralNodes(self):
        """
        A key with keys below it can be deleted (its znode turns
        structural), created again, and listed correctly; the last leaf's
        delete prunes the structural znodes it leaves empty.
        """
        store = yield self.client()
        yield store.put("intent/n1", b"marker")
        yield store.put("intent/n1/pod", b"m")
        self.assertTrue((yield store.delete("intent/n1")))
        self.assertFalse((yield store.delete("intent/n1")))
        self.assertEqual(sorted((yield store.list("intent"))), ["intent/n1/pod"])
        yield store.create("intent/n1", b"again")
        yield self.assertFailure(store.create("intent/n1", b"x"), KeyExists)
        self.assertEqual((yield store.get("intent/n1")).value, b"again")
        yield store.delete("intent/n1")
        yield store.delete("intent/n1/pod")
        raw = yield self.raw()
        yield waitFor(lambda: raw.exists(self.root + "/intent") is None,
                      what="empty structural znodes to be pruned")
        self.assertIsNotNone(raw.exists(self.root))
        self.assertEqual((yield store.list("")), {})

    @defer.inlineCallbacks
    def test_versionsNeverRepeat(self):
        """
        A key deleted and created again gets a version it never had, so a
        stale version fails even though ZooKeeper's own dataVersion restarted
        at 0; the same holds for a lock taken by another session.
        """
        store = yield self.client()
        first = yield store.put("v/k", b"1")
        yield store.delete("v/k")
        second = yield store.put("v/k", b"2")
        self.assertNotEqual(first.version, second.version)
        yield self.assertFailure(store.cas("v/k", b"3", first.version), VersionConflict)
        yield self.assertFailure(store.delete("v/k", first.version), VersionConflict)
        sa = yield store.session(2.0)
        sb = yield store.session(2.0)
        old = yield sa.lock("locks/v")
        yield sa.close()
        new = yield sb.lock("locks/v")
        self.assertNotEqual(old.version, new.version)
        err = yield self.assertFailure(
            store.transaction([Check(old.key, old.version), Put("v/x", b"1")]), VersionConflict)
        self.assertEqual(err.index, 0)
        yield store.transaction([Check(new.key, new.version), Put("v/x", b"1")])
        yield sb.close()

    @defer.inlineCallbacks
    def test_transactionNewSubtree(self):
        """
        A transaction can write a node marker and a pod below it where
        neither exists (the scheduler's first write), check absence of keys
        whose parents do not exist, and run several ops on one key in order.
        """
        store = yield self.client()
        results = yield store.transaction([
            Put("intent/n9", b"marker"), Create("intent/n9/web", b"w"),
            Check("nothing/at/all", None), Delete("not/here")])
        self.assertEqual([r.value for r in results[:2]], [b"marker", b"w"])
        self.assertEqual(results[2:], [None, False])
        self.assertEqual(results[0].version, results[1].version)
        self.assertEqual(results[0].version, (yield store.get("intent/n9")).version)
        results = yield store.transaction([
            Put("same/k", b"1"), Put("same/k", b"2"), Delete("same/k"), Create("same/k", b"3"),
            Delete("intent/n9")])
        self.assertEqual(results[2], True)
        self.assertEqual(
            {k: e.value for k, e in (yield store.list("")).items()},
            {"intent/n9/web": b"w", "same/k": b"3"})
        err = yield self.assertFailure(store.transaction([
            Put("x/y", b"1"), Check("intent/n9/web", None)]), VersionConflict)
        self.assertEqual(err.index, 1)
        self.assertIsNone((yield store.get("x/y")))

    @defer.inlineCallbacks
    def test_transactionOverKeysWrittenElsewhere(self):
        """
        A client creates the keys of a transaction it has never seen without
        reading them first; where another client wrote them meanwhile (an
        entry, or a structural znode above its keys) the transaction still
        means what it says: a create over an entry fails with nothing
        written, a create over a structural znode and a put over an entry
        write.
        """
        store = yield self.client()
        other = yield self.client()
        yield other.put("taken", b"theirs")
        yield other.put("above/below", b"b")
        yield other.put("overwritten", b"old")
        err = yield self.assertFailure(store.transaction([
            Create("fresh/k", b"1"), Create("taken", b"mine")]), KeyExists)
        self.assertEqual((err.key, err.index), ("taken", 1))
        self.assertIsNone((yield other.get("fresh/k")))
        self.assertEqual((yield other.get("taken")).value, b"theirs")
        results = yield store.transaction([
            Create("above", b"a"), Put("overwritten", b"new"), Create("fresh/k", b"1")])
        seen = yield defer.gatherResults([other.get(r.key) for r in results])
        self.assertEqual([e.version for e in seen], [r.version for r in results])
        self.assertEqual({k: e.value for k, e in (yield other.list("")).items()},
                         {"above": b"a", "above/below": b"b", "overwritten": b"new",
                          "fresh/k": b"1", "taken": b"theirs"})
        yield other.delete("fresh/k")
        yield other.delete("overwritten")
        yield store.transaction([Put("overwritten", b"again"), Create("fresh/k", b"2")])
        self.assertEqual((yield other.get("fresh/k")).value, b"2")

    @defer.inlineCallbacks
    def test_manyRequestsAtOnce(self):
        """
        Thousands of puts issued at once, each under parents that do not
        exist yet (kazoo's own completion callbacks then issue the requests
        making them), all complete: kazoo's connection thread never waits on
        its own wake-up socket (made small here, so that one fills up).
        """
        import socket as socketModule
        store = yield self.client()
        store._client._connection._write_sock.setsockopt(
            socketModule.SOL_SOCKET, socketModule.SO_SNDBUF, 1)
        count = 1000
        yield defer.gatherResults([store.put("many/p%d/k" % (i,), b"%d" % (i,))
                                   for i in range(count)])
        self.assertEqual(len((yield store.list("many"))), count)

    @defer.inlineCallbacks
    def test_pruneRaces(self):
        """
        Writers creating keys under parents that other clients' deletes keep
        pruning (puts, creates, locks, transactions) all succeed.
        """
        a, b, c = yield defer.gatherResults([self.client(), self.client(), self.client()])
        session = yield b.session(2.0)

        @defer.inlineCallbacks
        def churn(n, write, key):
            for i in range(n):
                yield write(key, b"%d" % i)
                yield a.delete(key)

        def lock(key, value):
            return session.lock(key, value).addCallback(lambda lock: lock.release())

        def txn(key, value):
            return c.transaction([Put(key, value), Check(key + "/below", None)])
        yield defer.gatherResults([
            churn(80, a.put, "pr/u/v/a"), churn(80, b.create, "pr/u/v/b"),
            churn(80, lock, "pr/u/w/l"), churn(80, txn, "pr/u/t")])
        yield session.close()
        self.assertEqual((yield a.list("pr")), {})

    @defer.inlineCallbacks
    def test_ordering(self):
        """
        Operations one client issues on one key apply in issue order, even
        when they take several round trips.
        """
        store = yield self.client()
        ds = []
        for i in range(30):
            ds.append(store.put("o/k", b"%d" % i))
            ds.append(store.delete("o/k"))
            ds.append(store.create("o/k", b"c%d" % i))
        yield defer.gatherResults(ds)
        self.assertEqual((yield store.get("o/k")).value, b"c29")

    @defer.inlineCallbacks
    def test_requestLimit(self):
        """
        A transaction ZooKeeper would refuse as over its 1 MB request limit
        is refused up front with L{InvalidTransaction}; single values of
        512 KiB are fine.
        """
        store = yield self.client()
        big = b"x" * MAX_VALUE
        yield self.assertFailure(
            store.transaction([Put("big/a", big), Put("big/b", big)]), InvalidTransaction)
        yield store.transaction([Put("big/a", big)])
        self.assertEqual((yield store.list("big")).keys(), {"big/a"})

    @defer.inlineCallbacks
    def test_closed(self):
        """
        C{close} is idempotent; afterwards operations fail with
        L{StoreUnavailable}.
        """
        store = yield openStore(self.storeURL(), reactor)
        yield defer.gatherResults([store.close(), store.close()])
        yield store.close()
        yield self.assertFailure(store.get("k"), StoreUnavailable)
        yield self.assertFailure(store.put("k", b"v"), StoreUnavailable)
        yield self.assertFailure(store.session(2.0), StoreUnavailable)

    def test_parseURL(self):
        """
        URLs carry hosts, an optional root (C{/p2}), optional credentials
        and timeouts; malformed ones are a L{UsageError}.
        """
        a = parseURL("zk://u:p%40ss@h1:2181,h2/p2/x?connect_timeout=1.5")
        self.assertEqual((a.hosts, a.root, a.auth, a.connectTimeout),
                         ("h1:2181,h2:2181", "/p2/x", ("u", "p@ss"), 1.5))
        self.assertEqual(parseURL("zk://h:1").root, "/p2")
        for bad in ["zk://h:x/p2", "zk://h/a b", "zk://u@h/p2", "zk://h/p2?nope=1", "zk:///p2"]:
            self.assertRaises(UsageError, parseURL, bad)
        err = self.assertRaises(UsageError, parseURL, "zk://u:s3cret@h:x/p2")
        self.assertNotIn("s3cret", str(err))


class ZooKeeperFailureTests(unittest.TestCase):
    """
    Unreachable and restarted servers, expired sessions, digest ACLs.
    """

    def setUp(self):
        why = missing()
        if why:
            requireServer("ZooKeeper", why, install="apt-get install zookeeper")

    @defer.inlineCallbacks
    def test_unreachable(self):
        """
        Opening a store where no server listens fails quickly with a
        one-line L{StoreUnavailable} naming the address.
        """
        port = freePort()
        started = time.monotonic()
        err = yield self.assertFailure(
            openStore("zk://127.0.0.1:%d/p2?connect_timeout=1" % (port,), reactor),
            StoreUnavailable)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("127.0.0.1:%d" % (port,), str(err))
        self.assertIn("is it running?", str(err))
        self.assertNotIn("\n", str(err))

    @defer.inlineCallbacks
    def test_restartDuringWatch(self):
        """
        When the server restarts under a watch, writes acknowledged before
        the stop are kept and the watch resumes, delivering the state written
        after the restart.  A session disconnected for longer than its TTL
        is lost for good, even though the server comes back.
        """
        server = ZooKeeperServer()
        yield threads.deferToThread(server.start)
        self.addCleanup(threads.deferToThread, server.destroy)
        url = "zk://%s/restart?session_timeout=4" % (server.hosts,)
        store = yield openStore(url, reactor)
        self.addCleanup(store.close)
        session = yield store.session(1.0)
        yield session.createEphemeral("machines/m", b"up")
        rec = Recorder()
        w = store.watch("r", rec)
        self.addCleanup(w.cancel)
        yield store.put("r/before", b"1")
        yield rec.waitForValues({"r/before": b"1"})
        yield threads.deferToThread(server.stop)
        yield session.whenLost().addTimeout(10, reactor)
        self.assertTrue(session.lost)
        yield threads.deferToThread(server.start)
        yield self.assertFailure(session.createEphemeral("machines/n", b"x"), SessionLost)

        def write():
            d = store.put("r/after", b"2")
            return d.addCallbacks(lambda _: True, lambda f: f.trap(StoreUnavailable) and False)
        yield waitFor(write, what="a write after the restart")
        yield rec.waitForValues({"r/before": b"1", "r/after": b"2"})
        other = yield openStore(url, reactor)
        self.addCleanup(other.close)
        self.assertEqual((yield other.get("r/before")).value, b"1")
        yield waitFor(lambda: other.get("machines/m").addCallback(lambda e: e is None),
                      what="the lost session's ephemeral key to vanish")

    @defer.inlineCallbacks
    def test_requestsWhileServerDown(self):
        """
        While the server is down, requests issued turn after turn (kazoo
        queues them for the reconnection, and its connection thread reads
        no wake-up byte meanwhile) never block the reactor, even once the
        wake-up socket (made small here) is full; they complete once the
        server is back.
        """
        import socket as socketModule
        server = ZooKeeperServer()
        yield threads.deferToThread(server.start)
        self.addCleanup(threads.deferToThread, server.destroy)
        store = yield openStore("zk://%s/down?session_timeout=30" % (server.hosts,), reactor)
        self.addCleanup(store.close)
        yield store.put("d/k", b"v")
        store._client._connection._write_sock.setsockopt(
            socketModule.SOL_SOCKET, socketModule.SO_SNDBUF, 1)
        yield threads.deferToThread(server.stop)
        yield waitFor(lambda: not store._connected, what="the disconnection")
        issued = threading.Event()

        def restartAnyway():
            # Only if the reactor is stuck: the restart unblocks it.
            if not issued.wait(30):
                server.start()
        restarter = threading.Thread(target=restartAnyway)
        restarter.start()
        self.addCleanup(threads.deferToThread, restarter.join)
        gets = []
        for i in range(200):  # one request per reactor turn
            gets.append(store.get("d/k" if i % 2 else "d/k%d" % (i,)))
            yield task.deferLater(reactor, 0, lambda: None)
        issued.set()
        self.assertIsNone(server.process, "the reactor was blocked until the server came back")
        yield threads.deferToThread(server.start)
        results = yield defer.DeferredList(gets, consumeErrors=True)
        # Each request completes: with its answer, or -- when the restarted
        # server expired the session because the reconnection came late (a
        # loaded machine; the test server caps sessions at 20 s) -- with
        # StoreUnavailable.  Either way the store then works again.
        for ok, result in results:
            if not ok:
                result.trap(StoreUnavailable)
        if all(ok for ok, _ in results):
            self.assertEqual([e and e.value for _, e in results[:2]], [None, b"v"])
        entry = None
        for attempt in range(300):
            try:
                entry = yield store.get("d/k")
                break
            except StoreUnavailable:
                yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(entry and entry.value, b"v")

    @defer.inlineCallbacks
    def test_watchAfterSessionExpiry(self):
        """
        When the store client's own session expires, it carries on with a
        new session and its watches resume.
        """
        server = sharedServer()
        url = "zk://%s/t%s" % (server.hosts, uuid.uuid4().hex)
        store = yield openStore(url, reactor)
        self.addCleanup(store.close)
        rec = Recorder()
        w = store.watch("e", rec)
        self.addCleanup(w.cancel)
        yield store.put("e/a", b"1")
        yield rec.waitForValues({"e/a": b"1"})
        oldSession = store._client.client_id

        def expire():
            # The recipe for expiring a session: close it from a second
            # client that borrowed its id and password.
            twin = KazooClient(hosts=server.hosts, client_id=oldSession)
            twin.start(15)
            twin.stop()
            twin.close()
        yield threads.deferToThread(expire)
        other = yield openStore(url, reactor)
        self.addCleanup(other.close)
        yield other.put("e/b", b"2")
        yield rec.waitForValues({"e/a": b"1", "e/b": b"2"})
        yield waitFor(lambda: store._client.client_id not in (None, oldSession),
                      what="a new session")

    @defer.inlineCallbacks
    def test_digestAuth(self):
        """
        With C{user:password@} in the URL, znodes are readable and writable
        only with those credentials.
        """
        server = sharedServer()
        root = "/t%s" % (uuid.uuid4().hex,)
        store = yield openStore("zk://alice:s3cret@%s%s" % (server.hosts, root), reactor)
        self.addCleanup(store.close)
        yield store.put("secret/k", b"v")
        yield store.transaction([Put("secret/j", b"w"), Check("secret/k", None)]).addErrback(
            lambda f: f.trap(VersionConflict))
        rec = Recorder()
        w = store.watch("secret", rec)
        self.addCleanup(w.cancel)
        yield rec.waitForValues({"secret/k": b"v"})
        session = yield store.session(2.0)
        yield session.lock("locks/a")
        yield session.close()
        self.assertEqual((yield store.get("secret/k")).value, b"v")

        stranger = yield openStore("zk://%s%s" % (server.hosts, root), reactor)
        self.addCleanup(stranger.close)
        err = yield self.assertFailure(stranger.get("secret/k"), StoreError)
        self.assertIn("not authorized", str(err))
        yield self.assertFailure(stranger.put("secret/k", b"x"), StoreError)
        yield self.assertFailure(stranger.put("new", b"x"), StoreError)
        wrong = yield openStore("zk://alice:guess@%s%s" % (server.hosts, root), reactor)
        self.addCleanup(wrong.close)
        yield self.assertFailure(wrong.get("secret/k"), StoreError)
        self.assertEqual((yield store.get("secret/k")).value, b"v")


class OpenTests(unittest.TestCase):
    """
    C{openStore} recognizes ZooKeeper URLs.
    """

    def test_badURL(self):
        """
        A malformed zk:// URL fails with L{UsageError} before connecting.
        """
        return self.assertFailure(ZooKeeperStore.open("zk://h:port/p2", reactor), UsageError)


class RequireServerTests(unittest.SynchronousTestCase):
    """
    A missing real server skips locally and fails in CI.
    """

    def test_skipLocally(self):
        """
        Without C{P2_REQUIRE_REAL_SERVERS}, L{requireServer} skips, saying
        what is missing and why.
        """
        self.patch(os, "environ", {})
        err = self.assertRaises(unittest.SkipTest, requireServer, "etcd", "no etcd binary")
        self.assertEqual(str(err), "etcd not available: no etcd binary")

    def test_failInCI(self):
        """
        With C{P2_REQUIRE_REAL_SERVERS=1}, L{requireServer} fails, saying
        that CI requires the server and how to install it.
        """
        self.patch(os, "environ", {"P2_REQUIRE_REAL_SERVERS": "1"})
        err = self.assertRaises(MissingServer, requireServer, "ZooKeeper", "no java",
                                install="apt-get install zookeeper")
        self.assertIn("CI requires it", str(err))
        self.assertIn("apt-get install zookeeper", str(err))


class PruneErrorTests(unittest.TestCase):

    def test_unexpectedErrorLogged(self):
        """
        Pruning empty structural znodes is best effort, but an unexpected
        error (a bug, not a race or an outage) is logged with its
        traceback, not dropped.
        """
        class Client(object):
            def add_listener(self, listener):
                pass

            def get_async(self, path):
                raise TypeError("a bug reading " + path)

        store = ZooKeeperStore(reactor, "zk://127.0.0.1:1/p2", parseURL("zk://127.0.0.1:1/p2"),
                               Client(), None)
        store._prune("/p2/a/b")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


class SequencerTests(unittest.SynchronousTestCase):
    """
    One client's operations on one key keep their issue order, except that
    transactions which only check a key (an orchestrator's fence) do not
    wait for one another.
    """

    def setUp(self):
        from p2twisted.store.common import Sequencer
        self.seq = Sequencer()
        self.started = []

    def op(self, name, keys, shared=()):
        held = defer.Deferred()

        def run():
            self.started.append(name)
            return held
        result = self.seq.run(keys, run, shared=shared)
        return held, result

    def test_checksDoNotWaitForChecks(self):
        a, _ = self.op("a", ["intent/n1/web"], shared=["locks/rc/web"])
        b, _ = self.op("b", ["intent/n2/web"], shared=["locks/rc/web"])
        self.assertEqual(self.started, ["a", "b"])

    def test_writeWaitsForChecksAndChecksForWrite(self):
        a, _ = self.op("a", ["intent/n1/web"], shared=["rc"])
        write, _ = self.op("write", ["rc"])
        after, _ = self.op("after", ["intent/n2/web"], shared=["rc"])
        self.assertEqual(self.started, ["a"])
        a.callback(None)
        self.assertEqual(self.started, ["a", "write"])
        write.callback(None)
        self.assertEqual(self.started, ["a", "write", "after"])

    def test_writesKeepOrder(self):
        a, _ = self.op("a", ["k"])
        b, result = self.op("b", ["k"])
        self.assertEqual(self.started, ["a"])
        a.callback(None)
        b.callback("done")
        self.assertEqual(self.successResultOf(result), "done")


class HandlerTests(unittest.SynchronousTestCase):
    """
    The kazoo handler the backend's clients use: C{select} answers as
    C{select.select} does, completion callbacks run at once, and kazoo's
    stop still ends its worker threads.
    """

    def test_select(self):
        import socket as socketModule

        from p2twisted.store._zkclient import Handler
        handler = Handler(None)
        a, b = socketModule.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertEqual(handler.select([a], [], [], 0), ([], [], []))
        self.assertEqual(handler.select([a.fileno()], [b], [], 0), ([], [b], []))
        b.send(b"\0")
        self.assertEqual(handler.select([a, b], [], [], 1.5), ([a], [], []))
        b.close()
        a.recv(1)
        self.assertEqual(handler.select([a], [], [], None)[0], [a])  # hung up: readable

    def test_completionsGoToTheReactor(self):
        """
        Completion callbacks are handed to the reactor thread at once,
        through the client's bridge (not to a worker thread, nor run in
        kazoo's connection thread); kazoo's stop still ends its workers, and
        a handler started again works the same.
        """
        from p2twisted.store._zkclient import Bridge, Handler

        class Reactor(object):
            calls = []

            def callFromThread(self, f, *args):
                self.calls.append((f, args))
        fake = Reactor()
        handler = Handler(Bridge(fake))
        called = []
        for value in (7, 8):
            handler.start()
            result = handler.async_result()
            result.rawlink(lambda r: called.append(r.value))
            result.set(value)
            self.assertEqual(called, [7] if value == 8 else [])
            f, args = fake.calls.pop()
            f(*args)
            handler.stop()
            self.assertFalse(handler.running)
            self.assertEqual(handler._workers, [])
        self.assertEqual(called, [7, 8])
