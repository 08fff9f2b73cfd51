"""
The store contract: one suite every backend passes.

A backend's test module mixes L{StoreContractMixin} into a trial C{TestCase}
and provides C{makeStore()} (a fresh client on a fresh, empty namespace;
further calls give more clients of the same namespace), C{storeURL()} (a URL
another process can open to reach the same namespace) or overrides
C{crashedHolder()}.
"""

import os
import sys
import time

from twisted.internet import defer, reactor, task
from zope.interface.verify import verifyObject

from p2twisted.errors import (
    AlreadyLocked, InvalidKey, InvalidTransaction, KeyExists, SessionLost, ValueTooLarge,
    VersionConflict)
from p2twisted.store.common import MAX_VALUE, Check, Create, Delete, Put
from p2twisted.store.interfaces import ILock, ISession, IStore, IWatch

#: How long a test waits for an expected event before failing.
WAIT = 20.0


def waitFor(predicate, timeout=WAIT, interval=0.01, clock=reactor, what="condition"):
    """
    Poll C{predicate()} (which may return a Deferred) until it is true.

    @return: L{Deferred} firing with the predicate's true value, or failing
        with C{AssertionError} after C{timeout} seconds.
    """
    deadline = clock.seconds() + timeout

    @defer.inlineCallbacks
    def poll():
        while True:
            value = yield defer.maybeDeferred(predicate)
            if value:
                return value
            if clock.seconds() > deadline:
                raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
            yield task.deferLater(clock, interval, lambda: None)
    return poll()


class Recorder(object):
    """
    A watch callback recording every snapshot it gets.
    """

    def __init__(self):
        self.snapshots = []

    def __call__(self, snapshot):
        self.snapshots.append(snapshot)

    @property
    def last(self):
        return self.snapshots[-1] if self.snapshots else None

    def values(self):
        return {k: e.value for k, e in (self.last or {}).items()}

    def waitForValues(self, expected, timeout=WAIT):
        return waitFor(lambda: self.values() == expected, timeout,
                       what="watch to deliver %r" % (expected,))


class StoreContractMixin(object):
    """
    The contract tests.  See the module docstring for what a backend provides.
    """

    #: Session TTL used by the session tests, in seconds.
    sessionTTL = 2.0

    def makeStore(self):
        raise NotImplementedError()

    def storeURL(self):
        raise NotImplementedError()

    @defer.inlineCallbacks
    def client(self):
        """
        @return: L{Deferred} firing with a store client closed at cleanup.
        """
        store = yield defer.maybeDeferred(self.makeStore)
        self.addCleanup(store.close)
        return store

    # -- interface ---------------------------------------------------------

    @defer.inlineCallbacks
    def test_interfaces(self):
        """
        The store, its sessions, locks and watches provide their interfaces.
        """
        store = yield self.client()
        verifyObject(IStore, store)
        session = yield store.session(self.sessionTTL)
        verifyObject(ISession, session)
        lock = yield session.lock("locks/test/a")
        verifyObject(ILock, lock)
        w = store.watch("x", lambda s: None)
        verifyObject(IWatch, w)
        w.cancel()
        yield session.close()

    # -- basic operations ----------------------------------------------------

    @defer.inlineCallbacks
    def test_putGet(self):
        """
        A put value reads back, and each write changes the version.
        """
        store = yield self.client()
        self.assertIsNone((yield store.get("a/b")))
        e1 = yield store.put("a/b", b"one")
        got = yield store.get("a/b")
        self.assertEqual((got.key, got.value, got.version), ("a/b", b"one", e1.version))
        e2 = yield store.put("a/b", b"two")
        self.assertNotEqual(e1.version, e2.version)
        self.assertEqual((yield store.get("a/b")).value, b"two")

    @defer.inlineCallbacks
    def test_binaryAndEmptyValues(self):
        """
        Values are bytes, including empty values and every byte value.
        """
        store = yield self.client()
        data = bytes(range(256)) * 4
        yield store.put("bin/all", data)
        yield store.put("bin/empty", b"")
        self.assertEqual((yield store.get("bin/all")).value, data)
        self.assertEqual((yield store.get("bin/empty")).value, b"")

    @defer.inlineCallbacks
    def test_create(self):
        """
        C{create} writes an absent key and refuses an existing one, naming it.
        """
        store = yield self.client()
        yield store.create("c/k", b"1")
        e = yield self.assertFailure(store.create("c/k", b"2"), KeyExists)
        self.assertIn("c/k", str(e))
        self.assertIn(store.backend, str(e))
        self.assertEqual((yield store.get("c/k")).value, b"1")

    @defer.inlineCallbacks
    def test_casConflict(self):
        """
        C{cas} with a stale version fails with L{VersionConflict} and leaves
        the newer value in place; with the current version it succeeds.
        """
        store = yield self.client()
        e1 = yield store.put("cas/k", b"1")
        e2 = yield store.cas("cas/k", b"2", e1.version)
        err = yield self.assertFailure(store.cas("cas/k", b"3", e1.version), VersionConflict)
        self.assertIn("cas/k", str(err))
        self.assertEqual((yield store.get("cas/k")).value, b"2")
        yield store.cas("cas/k", b"4", e2.version)
        self.assertEqual((yield store.get("cas/k")).value, b"4")
        yield self.assertFailure(store.cas("cas/absent", b"x", e1.version), VersionConflict)

    @defer.inlineCallbacks
    def test_casVersionZero(self):
        """
        A version of 0 is a version like any other: C{cas} with it, alone or
        in a transaction, never creates an absent key (Consul's C{?cas=0}
        and txn C{cas} with index 0 mean 'only if absent'; so does etcd's
        C{mod_revision == 0}), and no check or delete at version 0 passes on
        an absent key.
        """
        store = yield self.client()
        yield self.assertFailure(store.cas("cas0/k", b"x", 0), VersionConflict)
        e = yield self.assertFailure(
            store.transaction([Put("cas0/other", b""), Put("cas0/k", b"x", 0)]), VersionConflict)
        self.assertEqual(e.index, 1)
        # Nor does an absent key pass a check or a delete at version 0.
        for op in [Check("cas0/k", 0), Delete("cas0/k", 0)]:
            e = yield self.assertFailure(
                store.transaction([Put("cas0/other", b""), op]), VersionConflict)
            self.assertEqual(e.index, 1)
        yield self.assertFailure(store.delete("cas0/k", 0), VersionConflict)
        self.assertEqual((yield store.list("cas0")), {})

    @defer.inlineCallbacks
    def test_delete(self):
        """
        C{delete} removes one key; a conditional delete with a stale version
        fails and keeps the key.
        """
        store = yield self.client()
        e1 = yield store.put("d/k", b"1")
        yield store.put("d/k", b"2")
        yield self.assertFailure(store.delete("d/k", e1.version), VersionConflict)
        self.assertIsNotNone((yield store.get("d/k")))
        current = yield store.get("d/k")
        self.assertTrue((yield store.delete("d/k", current.version)))
        self.assertIsNone((yield store.get("d/k")))
        self.assertFalse((yield store.delete("d/k")))

    @defer.inlineCallbacks
    def test_deleteKeepsChildren(self):
        """
        Deleting a key that has keys below it removes only that key.
        """
        store = yield self.client()
        yield store.put("t/n1", b"marker")
        yield store.put("t/n1/pod", b"m")
        yield store.delete("t/n1")
        self.assertEqual(sorted((yield store.list("t"))), ["t/n1/pod"])

    @defer.inlineCallbacks
    def test_listSubtree(self):
        """
        C{list(prefix)} returns the prefix key and everything below it, and
        nothing that merely shares its spelling.
        """
        store = yield self.client()
        for key in ["intent/n1", "intent/n1/web", "intent/n1/db", "intent/n10/web",
                    "intent/n1x", "reality/n1/web"]:
            yield store.put(key, key.encode())
        listed = yield store.list("intent/n1")
        self.assertEqual(sorted(listed), ["intent/n1", "intent/n1/db", "intent/n1/web"])
        self.assertEqual(listed["intent/n1/web"].value, b"intent/n1/web")
        everything = yield store.list("")
        self.assertEqual(len(everything), 6)
        self.assertEqual((yield store.list("nothing/here")), {})

    @defer.inlineCallbacks
    def test_invalidKeys(self):
        """
        Malformed keys are refused with L{InvalidKey}, naming the key.
        """
        store = yield self.client()
        for bad in ["", "/a", "a/", "a//b", "a b", "a/ü", "a/b?c", "../x", "a\n", "a/b\n"]:
            e = yield self.assertFailure(store.put(bad, b"x"), InvalidKey)
            self.assertIn("invalid key", str(e))
            yield self.assertFailure(store.get(bad), InvalidKey)
        self.assertEqual((yield store.list("")), {})

    @defer.inlineCallbacks
    def test_valueTooLarge(self):
        """
        A value over 512 KiB is refused with L{ValueTooLarge} naming the key
        and the backend, and nothing is written; 512 KiB exactly is accepted.
        """
        store = yield self.client()
        e = yield self.assertFailure(store.put("big/k", b"x" * (MAX_VALUE + 1)), ValueTooLarge)
        self.assertIn("big/k", str(e))
        self.assertIn(store.backend, str(e))
        self.assertIsNone((yield store.get("big/k")))
        yield store.put("big/k", b"x" * MAX_VALUE)
        self.assertEqual(len((yield store.get("big/k")).value), MAX_VALUE)

    # -- transactions ----------------------------------------------------------

    @defer.inlineCallbacks
    def test_transaction(self):
        """
        A transaction applies every op and returns per-op results.
        """
        store = yield self.client()
        e = yield store.put("tx/a", b"1")
        yield store.put("tx/gone", b"x")
        results = yield store.transaction([
            Check("tx/a", e.version), Put("tx/b", b"2"), Create("tx/c", b"3"),
            Delete("tx/gone"), Check("tx/never", None)])
        self.assertIsNone(results[0])
        self.assertEqual((results[1].key, results[1].value), ("tx/b", b"2"))
        self.assertEqual(results[2].value, b"3")
        self.assertTrue(results[3])
        self.assertEqual(
            {k: v.value for k, v in (yield store.list("tx")).items()},
            {"tx/a": b"1", "tx/b": b"2", "tx/c": b"3"})

    @defer.inlineCallbacks
    def test_signedManifests(self):
        """
        Signed manifests (a GPG clear-signature with dash-escaping, trailing
        blanks and CRLF; an SSH signature block) come back byte for byte, by
        get, list, watch and transaction, and still verify.
        """
        from p2twisted.auth.gpg import GPGVerifier
        from p2twisted.auth.ssh import SSHVerifier
        from p2twisted.auth.verifiers import verifyManifest
        from p2twisted.manifest import parseManifest
        from p2twisted.store import keys
        from tests.signingkeys import GPGKeys, SSHKeys
        text = (b"id: web\r\nlaunchables:\r\n  web: {launchable_type: hoist, location: /a.tgz}  \r\n"
                b"config:\r\n  flags:\r\n  - -x\r\n  note: \"\\t\"\r\n  caf\xc3\xa9: cr\xc3\xa8me\r\n")
        gpgKeys, sshKeys = GPGKeys(self), SSHKeys(self)
        alice, bob = gpgKeys.newKey("Alice <alice@example.com>"), sshKeys.newKey("bob")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        signed = {"gpg": gpgKeys.clearSign(alice, text),
                  "ssh": sshKeys.sign(bob, text.replace(b"\r\n", b"\n"))}
        gpg = GPGVerifier(gpgKeys.exportKeyring(os.path.join(directory, "keyring"), [alice]))
        self.addCleanup(gpg.close)
        ssh = SSHVerifier(sshKeys.allowedSigners(os.path.join(directory, "allowed"), [bob]))
        store = yield self.client()
        seen = Recorder()
        watch = store.watch(keys.intentNode("n1"), seen)
        self.addCleanup(watch.cancel)
        yield store.put(keys.intent("n1", "gpg"), signed["gpg"])
        yield store.transaction([Put(keys.intent("n1", "ssh"), signed["ssh"])])
        listed = yield store.list(keys.intentNode("n1"))
        for system, data in signed.items():
            key = keys.intent("n1", system)
            self.assertEqual((yield store.get(key)).value, data)
            self.assertEqual(listed[key].value, data)
            signer = yield verifyManifest(parseManifest((yield store.get(key)).value),
                                          gpg=gpg, ssh=ssh)
            self.assertEqual(signer.system, system)
        yield seen.waitForValues({keys.intent("n1", s): d for s, d in signed.items()})

    @defer.inlineCallbacks
    def test_transactionAtomic(self):
        """
        When one op's check fails, nothing of the transaction is written, and
        the error names the failing op's key and position.
        """
        store = yield self.client()
        old = yield store.put("atom/a", b"1")
        yield store.put("atom/a", b"2")
        yield store.put("atom/exists", b"x")
        err = yield self.assertFailure(store.transaction([
            Put("atom/b", b"new"), Delete("atom/exists"), Check("atom/a", old.version)]),
            VersionConflict)
        self.assertEqual(err.index, 2)
        self.assertIn("atom/a", str(err))
        err = yield self.assertFailure(store.transaction([
            Put("atom/b", b"new"), Create("atom/exists", b"y")]), KeyExists)
        self.assertEqual(err.index, 1)
        values = {k: v.value for k, v in (yield store.list("atom")).items()}
        self.assertEqual(values, {"atom/a": b"2", "atom/exists": b"x"})

    @defer.inlineCallbacks
    def test_transactionLimits(self):
        """
        64 ops are accepted; 65 are refused with L{InvalidTransaction} and
        nothing is written; a bad key in any op is refused up front.
        """
        store = yield self.client()
        yield store.transaction([Put("lim/%d" % i, b"x") for i in range(64)])
        yield self.assertFailure(
            store.transaction([Put("over/%d" % i, b"x") for i in range(65)]), InvalidTransaction)
        yield self.assertFailure(
            store.transaction([Put("ok/1", b"x"), Put("bad key", b"x")]), InvalidKey)
        self.assertEqual(len((yield store.list("lim"))), 64)
        self.assertEqual((yield store.list("over")), {})
        self.assertEqual((yield store.list("ok")), {})

    @defer.inlineCallbacks
    def test_transactionOfVersionedDeletes(self):
        """
        64 version-checked deletes (an orchestrator unscheduling 32 pods and
        their labels) fit in one transaction like any 64 ops; one stale
        version among them fails it, naming that op, and deletes nothing.
        """
        store = yield self.client()
        entries = yield store.transaction([Put("vd/%d" % i, b"x") for i in range(64)])
        stale = yield store.put("vd/40", b"y")
        e = yield self.assertFailure(
            store.transaction([Delete(x.key, x.version) for x in entries]), VersionConflict)
        self.assertEqual(e.index, 40)
        self.assertEqual(len((yield store.list("vd"))), 64)
        entries[40] = stale
        yield store.transaction([Delete(x.key, x.version) for x in entries])
        self.assertEqual((yield store.list("vd")), {})

    # -- watches -----------------------------------------------------------------

    @defer.inlineCallbacks
    def test_watchSnapshotFirst(self):
        """
        A watch first delivers the current subtree, then fresh snapshots
        after puts and deletes, and nothing outside the subtree.
        """
        store = yield self.client()
        yield store.put("w/n1", b"marker")
        yield store.put("w/n1/a", b"1")
        yield store.put("w/n10/a", b"other")
        rec = Recorder()
        w = store.watch("w/n1", rec)
        self.addCleanup(w.cancel)
        yield rec.waitForValues({"w/n1": b"marker", "w/n1/a": b"1"})
        yield store.put("w/n1/b", b"2")
        yield rec.waitForValues({"w/n1": b"marker", "w/n1/a": b"1", "w/n1/b": b"2"})
        yield store.delete("w/n1/a")
        yield rec.waitForValues({"w/n1": b"marker", "w/n1/b": b"2"})
        yield store.put("w/n1/b/deep/er", b"3")
        yield rec.waitForValues({"w/n1": b"marker", "w/n1/b": b"2", "w/n1/b/deep/er": b"3"})

    @defer.inlineCallbacks
    def test_watchBurst(self):
        """
        After a burst of 1,000 writes (with deletes among them) the watch
        delivers exactly the final state.
        """
        store = yield self.client()
        rec = Recorder()
        w = store.watch("burst", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: rec.snapshots, what="initial snapshot")
        expected = {}
        ds = []
        for i in range(1000):
            key = "burst/k%d" % (i % 50)
            if i % 7 == 3 and key in expected:
                ds.append(store.delete(key))
                del expected[key]
            else:
                value = b"%d" % i
                ds.append(store.put(key, value))
                expected[key] = value
        yield defer.gatherResults(ds)
        yield rec.waitForValues(expected)

    @defer.inlineCallbacks
    def test_watchFromOtherClient(self):
        """
        Writes made by another client reach the watch.
        """
        store = yield self.client()
        other = yield self.client()
        rec = Recorder()
        w = store.watch("xc", rec)
        self.addCleanup(w.cancel)
        yield waitFor(lambda: rec.snapshots, what="initial snapshot")
        yield other.put("xc/a", b"from-other")
        yield rec.waitForValues({"xc/a": b"from-other"})

    @defer.inlineCallbacks
    def test_watchCancel(self):
        """
        A cancelled watch is not called again.
        """
        store = yield self.client()
        rec = Recorder()
        w = store.watch("wc", rec)
        yield waitFor(lambda: rec.snapshots, what="initial snapshot")
        w.cancel()
        count = len(rec.snapshots)
        yield store.put("wc/a", b"1")
        yield store.put("wc/b", b"1")
        sentinel = Recorder()
        w2 = store.watch("wc", sentinel)
        self.addCleanup(w2.cancel)
        yield sentinel.waitForValues({"wc/a": b"1", "wc/b": b"1"})
        self.assertEqual(len(rec.snapshots), count)

    # -- sessions and locks ------------------------------------------------------

    @defer.inlineCallbacks
    def test_ephemeralClose(self):
        """
        An ephemeral key is visible to other clients and vanishes when its
        session is closed; the session's C{whenLost} fires.
        """
        store = yield self.client()
        other = yield self.client()
        session = yield store.session(self.sessionTTL)
        e = yield session.createEphemeral("machines/n1", b"facts")
        self.assertEqual(e.value, b"facts")
        self.assertEqual((yield other.get("machines/n1")).value, b"facts")
        yield self.assertFailure(session.createEphemeral("machines/n1", b"again"), KeyExists)
        lost = session.whenLost()
        yield session.close()
        yield lost
        self.assertTrue(session.lost)
        yield waitFor(lambda: other.get("machines/n1").addCallback(lambda e: e is None),
                      what="ephemeral key to vanish")
        yield self.assertFailure(session.createEphemeral("machines/n2", b"x"), SessionLost)

    @defer.inlineCallbacks
    def test_ephemeralKeepsOwnerOnPut(self):
        """
        Updating an ephemeral key with C{put} keeps it ephemeral.
        """
        store = yield self.client()
        session = yield store.session(self.sessionTTL)
        yield session.createEphemeral("machines/n3", b"v1")
        yield store.put("machines/n3", b"v2")
        self.assertEqual((yield store.get("machines/n3")).value, b"v2")
        yield session.close()
        yield waitFor(lambda: store.get("machines/n3").addCallback(lambda e: e is None),
                      what="updated ephemeral key to vanish")

    @defer.inlineCallbacks
    def test_lockExclusive(self):
        """
        Of two clients, only one holds a lock; the other gets
        L{AlreadyLocked} naming the key, and takes it once it is released.
        """
        a = yield self.client()
        b = yield self.client()
        sa = yield a.session(self.sessionTTL)
        sb = yield b.session(self.sessionTTL)
        results = yield defer.DeferredList(
            [sa.lock("locks/rc/x", b"a"), sb.lock("locks/rc/x", b"b")], consumeErrors=True)
        wins = [r for ok, r in results if ok]
        losses = [r for ok, r in results if not ok]
        self.assertEqual(len(wins), 1)
        self.assertEqual(len(losses), 1)
        losses[0].trap(AlreadyLocked)
        self.assertIn("locks/rc/x", str(losses[0].value))
        held = wins[0]
        holder, waiter = (sa, sb) if (yield a.get("locks/rc/x")).value == b"a" else (sb, sa)
        yield self.assertFailure(waiter.lock("locks/rc/x"), AlreadyLocked)
        yield held.release()
        lock = yield waiter.lock("locks/rc/x", b"second")
        self.assertEqual((yield a.get("locks/rc/x")).value, b"second")
        # The lock's version guards writes made under it.
        yield a.transaction([Check(lock.key, lock.version), Put("rc/x/state", b"ok")])
        yield holder.close()
        yield waiter.close()

    @defer.inlineCallbacks
    def test_releaseOnlyOwnLock(self):
        """
        Releasing a lock that another session has since taken leaves it.
        """
        a = yield self.client()
        sa = yield a.session(self.sessionTTL)
        sb = yield a.session(self.sessionTTL)
        lock = yield sa.lock("locks/own/x")
        yield sa.close()
        yield waitFor(lambda: a.get("locks/own/x").addCallback(lambda e: e is None),
                      what="lock to be released")
        yield sb.lock("locks/own/x", b"b")
        yield lock.release()
        self.assertEqual((yield a.get("locks/own/x")).value, b"b")
        yield sb.close()

    @defer.inlineCallbacks
    def test_sessionExpiry(self):
        """
        When the process holding a session dies, its ephemeral keys vanish and
        its locks are released within TTL + 1 s, and another client can take
        the lock.
        """
        watcher = yield self.client()
        yield watcher.put("keep/me", b"persistent")
        kill = yield self.crashedHolder(["machines/dead", "locks/farm/x"])
        rec = Recorder()
        w = watcher.watch("machines", rec)
        self.addCleanup(w.cancel)
        yield rec.waitForValues({"machines/dead": b"held"})
        self.assertIsNotNone((yield watcher.get("locks/farm/x")))
        killedAt = time.time()
        yield kill()

        def gone():
            d = defer.gatherResults([watcher.get("machines/dead"), watcher.get("locks/farm/x")])
            return d.addCallback(lambda es: es == [None, None])
        yield waitFor(gone, timeout=self.sessionTTL + 10, interval=0.05,
                      what="the dead holder's keys to vanish")
        elapsed = time.time() - killedAt
        self.assertLessEqual(
            elapsed, self.sessionTTL + 1.0,
            "keys of a dead session took %.2fs to vanish (TTL %.1fs)" % (elapsed, self.sessionTTL))
        session = yield watcher.session(self.sessionTTL)
        yield session.lock("locks/farm/x")
        self.assertEqual((yield watcher.get("keep/me")).value, b"persistent")
        yield session.close()

    def crashedHolder(self, keys):
        """
        Start another process that opens a session with TTL L{sessionTTL},
        creates C{keys} as ephemeral keys (C{locks/...} ones as locks) with
        the value C{b"held"}, and then waits.

        @return: L{Deferred} firing with a function killing that process with
            SIGKILL (returning a Deferred).
        """
        from tests.holder import READY
        from tests.processes import startUntil
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        return startUntil(
            self, READY.encode("ascii"), sys.executable,
            [sys.executable, "-m", "tests.holder", self.storeURL(), str(self.sessionTTL)] + keys,
            env)


class CrossProcessLockMixin(object):
    """
    Lock exclusivity between processes, for the backends whose
    L{StoreContractMixin.crashedHolder} is a real process.
    """

    @defer.inlineCallbacks
    def test_lockExclusiveAcrossProcesses(self):
        """
        A lock and an ephemeral key held by another process cannot be taken
        here, nor by a third process, until the holder dies; then they can.
        """
        kill = yield self.crashedHolder(["locks/farm/x", "machines/n1"])
        store = yield self.client()
        session = yield store.session(self.sessionTTL)
        e = yield self.assertFailure(session.lock("locks/farm/x"), AlreadyLocked)
        self.assertIn("locks/farm/x", str(e))
        yield self.assertFailure(session.createEphemeral("machines/n1", b"me"), KeyExists)
        third = self.crashedHolder(["locks/farm/x"])
        e = yield self.assertFailure(third, AssertionError)
        self.assertIn("AlreadyLocked", str(e))
        yield kill()
        yield waitFor(lambda: session.lock("locks/farm/x", b"mine").addCallbacks(
            lambda lock: True, lambda f: f.trap(AlreadyLocked) and False),
            timeout=self.sessionTTL + 10, interval=0.1, what="the lock to be free")
        self.assertEqual((yield store.get("locks/farm/x")).value, b"mine")
        yield session.close()
