"""
The local (SQLite) store passes the store contract, and keeps its promises
across processes, restarts, damaged files and racing clients.
"""

import os
import sqlite3
import sys

from twisted.internet import defer, reactor, utils
from twisted.python.runtime import platform
from twisted.trial import unittest

from p2twisted.errors import SessionLost, StoreUnavailable, UsageError, VersionConflict
from p2twisted.store import openStore
from p2twisted.store import local
from p2twisted.store.common import Check, Put
from p2twisted.store.local import DEFAULT_POLL, LocalStore, parseURL
from tests.store_contract import CrossProcessLockMixin, Recorder, StoreContractMixin, waitFor

#: A child process that opens the store, writes C{xp/k0..k19}, deletes
#: C{xp/k0} and exits.
WRITER = """
import sys
from twisted.internet import defer, task
from p2twisted.store import openStore

@defer.inlineCallbacks
def main(reactor, url):
    store = yield openStore(url, reactor)
    for i in range(20):
        yield store.put("xp/k%d" % i, b"v%d" % i)
    yield store.delete("xp/k0")
    yield store.close()

task.react(main, sys.argv[1:])
"""

#: A child process that opens the store, writes, and lets the reactor stop
#: with the store still open (as Ctrl-C or SIGTERM does to p2).
LEFT_OPEN = """
import sys
from twisted.internet import reactor
from p2twisted.store import openStore

def opened(store):
    return store.put("left/open", b"1").addCallback(lambda _: reactor.stop())

openStore(sys.argv[1], reactor).addCallback(opened)
reactor.run()
"""


class SkewedReactor(object):
    """
    The real reactor, but with C{seconds()} C{skew} seconds ahead: a client
    that sees everyone else's sessions as expired.
    """

    def __init__(self, skew):
        self._skew = skew

    def seconds(self):
        return reactor.seconds() + self._skew

    def __getattr__(self, name):
        return getattr(reactor, name)


class LocalTestMixin(object):
    """
    A fresh database file per test; C{client()} opens more clients of it.
    """

    def setUp(self):
        self.path = os.path.join(os.path.abspath(self.mktemp()), "state.db")

    def storeURL(self):
        return "local://" + self.path

    def makeStore(self):
        return LocalStore.open(self.storeURL(), reactor)

    @defer.inlineCallbacks
    def openClient(self, url=None, clock=reactor):
        store = yield LocalStore.open(url or self.storeURL(), clock)
        self.addCleanup(store.close)
        return store


class LocalContractTests(LocalTestMixin, StoreContractMixin, CrossProcessLockMixin,
                         unittest.TestCase):
    """
    The contract, against several clients of one SQLite file (the
    session-expiry test kills a real holder process).
    """


class LocalStoreTests(LocalTestMixin, unittest.TestCase):
    """
    What the local backend promises beyond the contract.
    """

    @defer.inlineCallbacks
    def test_watchAcrossProcesses(self):
        """
        A watch sees the writes and deletes of another process.
        """
        store = yield self.openClient()
        rec = Recorder()
        w = store.watch("xp", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: rec.snapshots, what="initial snapshot")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ["-c", WRITER, self.storeURL()], env=env)
        self.assertEqual(code, 0, err.decode(errors="replace"))
        expected = {"xp/k%d" % i: b"v%d" % i for i in range(1, 20)}
        yield rec.waitForValues(expected)

    @defer.inlineCallbacks
    def test_reactorStopsWithStoreOpen(self):
        """
        A process whose reactor stops while its store is open exits
        cleanly: no traceback from the store's shutdown trigger.
        """
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ["-c", LEFT_OPEN, self.storeURL()], env=env)
        self.assertEqual((code, err.decode(errors="replace")), (0, ""))
        store = yield self.openClient()
        entry = yield store.get("left/open")
        self.assertEqual(entry.value, b"1")

    @defer.inlineCallbacks
    def test_survivesReopen(self):
        """
        Data written before C{close} is there after reopening, and versions
        keep growing (a re-created key never reuses an old version).
        """
        store = yield LocalStore.open(self.storeURL(), reactor)
        first = yield store.put("keep/a", b"1")
        yield store.delete("keep/a")
        yield store.put("keep/b", b"2")
        yield store.close()
        yield store.close()
        again = yield self.openClient()
        self.assertIsNone((yield again.get("keep/a")))
        self.assertEqual((yield again.get("keep/b")).value, b"2")
        recreated = yield again.put("keep/a", b"3")
        self.assertGreater(recreated.version, first.version)

    @defer.inlineCallbacks
    def test_closedStoreRefuses(self):
        """
        After C{close}, operations and new watches fail with
        L{StoreUnavailable}.
        """
        store = yield LocalStore.open(self.storeURL(), reactor)
        yield store.close()
        yield self.assertFailure(store.get("a"), StoreUnavailable)
        yield self.assertFailure(store.put("a", b"x"), StoreUnavailable)
        self.assertRaises(StoreUnavailable, store.watch, "a", lambda s: None)

    @defer.inlineCallbacks
    def test_relativePath(self):
        """
        C{local://some/state.db} is relative to the working directory, and
        missing directories are created.
        """
        relative = os.path.join(self.mktemp(), "deeper", "state.db")
        self.assertFalse(os.path.isabs(relative))
        store = yield self.openClient("local://" + relative)
        yield store.put("a", b"1")
        self.assertEqual(store.path, os.path.abspath(relative))
        self.assertTrue(os.path.exists(relative))

    @defer.inlineCallbacks
    def test_corruptFile(self):
        """
        A file that is not a database gives a one-line L{StoreUnavailable}
        naming the path and saying what to do.
        """
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "wb") as f:
            f.write(os.urandom(8192))
        e = yield self.assertFailure(openStore(self.storeURL(), reactor), StoreUnavailable)
        message = str(e)
        self.assertIn(self.path, message)
        self.assertIn("not a database", message)
        self.assertIn("move it aside", message)
        self.assertNotIn("\n", message)

    @defer.inlineCallbacks
    def test_unwritableLocation(self):
        """
        A path below a regular file gives a clear L{StoreUnavailable}.
        """
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w") as f:
            f.write("not a directory")
        path = os.path.join(blocker, "sub", "state.db")
        e = yield self.assertFailure(openStore("local://" + path, reactor), StoreUnavailable)
        message = str(e)
        self.assertIn("cannot open local store at %s" % (path,), message)
        self.assertIn("cannot create directory", message)
        self.assertNotIn("\n", message)

    @defer.inlineCallbacks
    def test_permissionDenied(self):
        """
        A directory this user may not write gives a L{StoreUnavailable}
        saying so (checked through a stand-in for C{os}, as tests may run as
        root).
        """
        directory = os.path.dirname(self.path)
        os.makedirs(directory)

        class DeniedOS(object):
            def __getattr__(self, name):
                return getattr(os, name)

            def access(self, target, mode):
                return target != directory
        self.patch(local, "os", DeniedOS())
        e = yield self.assertFailure(openStore(self.storeURL(), reactor), StoreUnavailable)
        self.assertIn("cannot open local store at %s: permission denied on %s"
                      % (self.path, directory), str(e))

    @defer.inlineCallbacks
    def test_concurrentCAS(self):
        """
        Of two clients racing a C{cas} from the same version, exactly one
        wins; the loser gets L{VersionConflict}.
        """
        a = yield self.openClient()
        b = yield self.openClient()
        for round in range(20):
            e = yield a.put("race/k", b"start")
            results = yield defer.DeferredList(
                [a.cas("race/k", b"a", e.version), b.cas("race/k", b"b", e.version)],
                consumeErrors=True)
            wins = [r for ok, r in results if ok]
            losses = [r for ok, r in results if not ok]
            self.assertEqual((len(wins), len(losses)), (1, 1))
            losses[0].trap(VersionConflict)
            self.assertEqual((yield b.get("race/k")).value, wins[0].value)

    @defer.inlineCallbacks
    def test_transactionVersionCheckAcrossClients(self):
        """
        A transaction guarded by a version another client has since changed
        writes nothing.
        """
        a = yield self.openClient()
        b = yield self.openClient()
        e = yield a.put("tx/guard", b"1")
        yield b.put("tx/guard", b"2")
        err = yield self.assertFailure(
            a.transaction([Put("tx/out", b"x"), Check("tx/guard", e.version)]), VersionConflict)
        self.assertEqual(err.index, 1)
        self.assertIsNone((yield b.get("tx/out")))

    @defer.inlineCallbacks
    def test_expiredOwnerIsAbsent(self):
        """
        Keys of a session that has expired (by the reader's clock) read as
        absent even before anyone has reaped them.
        """
        late = yield self.openClient(clock=SkewedReactor(100))
        store = yield self.openClient()
        session = yield store.session(5)
        yield session.createEphemeral("machines/n1", b"x")
        yield store.put("machines/persistent", b"p")
        self.assertIsNotNone((yield store.get("machines/n1")))
        self.assertIsNone((yield late.get("machines/n1")))
        self.assertEqual(sorted((yield late.list("machines"))), ["machines/persistent"])
        rec = Recorder()
        w = late.watch("machines", rec)
        self.addCleanup(w.cancel)
        yield rec.waitForValues({"machines/persistent": b"p"})

    @defer.inlineCallbacks
    def test_reapedSessionIsLost(self):
        """
        A session whose row was reaped (its process was stopped for longer
        than its TTL) is lost: C{whenLost} fires and C{createEphemeral}
        fails with L{SessionLost}.
        """
        late = yield self.openClient(clock=SkewedReactor(100))
        store = yield self.openClient()
        session = yield store.session(1.5)
        lost = session.whenLost()
        yield session.createEphemeral("machines/n2", b"x")
        yield late.put("unrelated", b"reaps as a side effect")
        self.assertIsNone((yield store.get("machines/n2")))
        yield lost.addTimeout(10, reactor)
        self.assertTrue(session.lost)
        yield self.assertFailure(session.createEphemeral("machines/n3", b"x"), SessionLost)

    @defer.inlineCallbacks
    def test_reapedSessionFailsCreate(self):
        """
        C{createEphemeral} on a session reaped by another client fails with
        L{SessionLost} at once, and the session then counts as lost.
        """
        late = yield self.openClient(clock=SkewedReactor(100))
        store = yield self.openClient()
        session = yield store.session(30)
        yield late.put("unrelated", b"reaps")
        yield self.assertFailure(session.createEphemeral("machines/n4", b"x"), SessionLost)
        self.assertTrue(session.lost)
        yield session.whenLost()

    @defer.inlineCallbacks
    def test_burstCoalesced(self):
        """
        A burst of 1,000 writes re-reads a watched subtree a handful of
        times, not once per write, and ends with the final state.
        """
        store = yield self.openClient()
        reads = []
        snapshot = store._db.snapshot

        def counting(prefix):
            reads.append(prefix)
            return snapshot(prefix)
        store._db.snapshot = counting
        rec = Recorder()
        w = store.watch("burst", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: rec.snapshots, what="initial snapshot")
        yield defer.gatherResults(
            [store.put("burst/k%d" % (i % 10), b"%d" % i) for i in range(1000)])
        yield rec.waitForValues({"burst/k%d" % i: b"%d" % (990 + i) for i in range(10)})
        self.assertLess(len(reads), 50)

    @defer.inlineCallbacks
    def test_foreignBurst(self):
        """
        A burst of 1,000 writes and deletes by another client reaches a
        watch as the final state, with far fewer re-reads than writes.
        """
        store = yield self.openClient()
        other = yield self.openClient()
        reads = []
        snapshot = store._db.snapshot
        store._db.snapshot = lambda prefix: reads.append(prefix) or snapshot(prefix)
        rec = Recorder()
        w = store.watch("fb", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: rec.snapshots, what="initial snapshot")
        expected, ds = {}, []
        for i in range(1000):
            key = "fb/k%d" % (i % 20)
            if i % 5 == 4:
                ds.append(other.delete(key))
                expected.pop(key, None)
            else:
                ds.append(other.put(key, b"%d" % i))
                expected[key] = b"%d" % i
        yield defer.gatherResults(ds)
        yield rec.waitForValues(expected)
        self.assertLess(len(reads), 500)

    @defer.inlineCallbacks
    def test_foreignWriteHeardAtOnce(self):
        """
        On Linux, another client's write reaches a watch as soon as it is
        committed (inotify sees the store's files written), not at the next
        poll: here the poll comes every 10 s, and the write is awaited for
        half of that.
        """
        if not platform.isLinux():
            raise unittest.SkipTest("inotify is Linux's")
        store = yield self.openClient(self.storeURL() + "?poll=10")
        other = yield self.openClient()
        rec = Recorder()
        w = store.watch("now", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: rec.snapshots, what="initial snapshot")
        yield other.put("now/k", b"1")
        yield rec.waitForValues({"now/k": b"1"}, timeout=5.0)

    @defer.inlineCallbacks
    def test_prunedChangeLog(self):
        """
        The change log is pruned; a client that fell behind the pruned part
        re-reads every watch and still delivers the final state.
        """
        self.patch(local, "KEEP_CHANGES", 5)
        behind = yield self.openClient()
        writer = yield self.openClient()
        for i in range(300):
            yield writer.put("pr/k%d" % (i % 7), b"%d" % i)
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertLessEqual(conn.execute("SELECT COUNT(*) FROM changes").fetchone()[0], 5 + 128)
        rec = Recorder()
        w = behind.watch("pr", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: rec.snapshots, what="initial snapshot")
        yield writer.put("pr/last", b"x")
        expected = {"pr/k%d" % (i % 7): b"%d" % i for i in range(300)}
        expected["pr/last"] = b"x"
        yield rec.waitForValues(expected)

    @defer.inlineCallbacks
    def test_pollingStopsWhenIdle(self):
        """
        The store polls only while it has watches or sessions.
        """
        store = yield self.openClient()
        self.assertIsNone(store._loop)
        w = store.watch("x", lambda s: None)
        self.assertIsNotNone(store._loop)
        session = yield store.session(5)
        w.cancel()
        self.assertIsNotNone(store._loop)
        yield session.close()
        self.assertIsNone(store._loop)

    def test_parseURL(self):
        """
        The URL names a file (relative to the working directory when it has
        no leading slash) and may set C{sync} and C{poll}.
        """
        self.assertEqual(parseURL("local:///var/lib/p2/state.db"),
                         ("/var/lib/p2/state.db", "FULL", DEFAULT_POLL))
        self.assertEqual(parseURL("local://state.db?sync=normal&poll=0.02"),
                         (os.path.abspath("state.db"), "NORMAL", 0.02))
        for bad in ["local://", "local:///x.db?sync=off", "local:///x.db?poll=0",
                    "local:///x.db?poll=soon", "local:///x.db?colour=blue"]:
            self.assertRaises(UsageError, parseURL, bad)

    @defer.inlineCallbacks
    def test_syncNormal(self):
        """
        A store opened with C{?sync=normal} works like any other client.
        """
        store = yield self.openClient(self.storeURL() + "?sync=normal&poll=0.01")
        yield store.put("n/a", b"1")
        self.assertEqual((yield store.get("n/a")).value, b"1")
