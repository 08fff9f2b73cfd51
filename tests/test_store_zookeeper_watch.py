"""
The ZooKeeper store's watches against a real ZooKeeper server, with its
persistent recursive watches (ZooKeeper 3.6+) and with the one-shot watches
it falls back to on older servers: dropped connections, many subtrees,
whole subtrees deleted, znodes created and deleted in quick succession.
"""

import uuid

from kazoo.client import KazooClient
from kazoo.exceptions import UnimplementedError
from kazoo.protocol.connection import _CONNECTION_DROP
from kazoo.protocol.states import KazooState
from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from p2twisted.errors import StoreUnavailable, VersionConflict
from p2twisted.store import openStore
from p2twisted.store.common import Create, Delete, Put
from p2twisted.store._zkpersistent import AddWatch
from p2twisted.store.zookeeper import HEADER
from tests.store_contract import Recorder, waitFor
from tests.servers import failOnStoreWarnings
from tests.test_store_zookeeper import ServerMixin
from tests.zkserver import sharedServer


class _Unknown(AddWatch):
    """
    A request of an opcode no ZooKeeper knows: the server answers it as a
    server before 3.6 answers C{AddWatch} (C{UNIMPLEMENTED}, then it closes
    the connection).
    """

    type = 9999


class WatchTestsMixin(ServerMixin):
    """
    Watch behaviour, for both kinds of watch (L{persistent}).
    """

    persistent = True

    def setUp(self):
        self.server = sharedServer()
        self.root = "/t%s" % (uuid.uuid4().hex,)
        self.expectWarnings = False
        failOnStoreWarnings(self, unless=lambda: self.expectWarnings)

    @defer.inlineCallbacks
    def store(self):
        store = yield openStore(self.storeURL(), reactor)
        store.persistentWatches = self.persistent
        self.addCleanup(store.close)
        return store

    def watch(self, store, prefix):
        rec = Recorder()
        rec.prefix = prefix
        w = store.watch(prefix, rec)
        self.addCleanup(w.cancel)
        return rec

    def rawPath(self, key):
        return "%s/%s" % (self.root, key)

    def requests(self, store):
        """
        @return: the list of the requests C{store}'s client sends from now
            on, kept until the test's end.
        """
        sent = []
        call = store._client._call

        def counting(request, asyncObject):
            sent.append(request)
            return call(request, asyncObject)
        store._client._call = counting
        self.addCleanup(setattr, store._client, "_call", call)
        return sent

    def dropConnection(self, store):
        """
        Drop the store client's connection (kazoo reconnects with the same
        session) and wait for the reconnection.
        """
        reconnected = self.reconnection(store)
        store._client._call(_CONNECTION_DROP, store._client.handler.async_result())
        return reconnected

    @defer.inlineCallbacks
    def reconnection(self, store):
        """
        Wait for the store client's next disconnection and reconnection.
        """
        states = []
        store._client.add_listener(lambda state: states.append(state) and False)
        yield waitFor(lambda: KazooState.SUSPENDED in states
                      and states[-1] == KazooState.CONNECTED, what="a reconnection")
        yield waitFor(lambda: store._connected, what="the store to see it")

    @defer.inlineCallbacks
    def test_mode(self):
        """
        The server has persistent watches, and they are used unless the
        one-shot ones are forced.
        """
        store = yield self.store()
        rec = self.watch(store, "m")
        yield store.put("m/a", b"1")
        yield rec.waitForValues({"m/a": b"1"})
        self.assertEqual(bool(store._persistent._watchers), self.persistent)
        self.assertTrue(store._persistent.supported)

    @defer.inlineCallbacks
    def test_afterReconnect(self):
        """
        After the connection drops and comes back within the session, the
        watch delivers what was written meanwhile and every change after.
        """
        self.expectWarnings = True
        store = yield self.store()
        other = yield self.store()
        rec = self.watch(store, "r")
        yield other.put("r/a", b"1")
        yield rec.waitForValues({"r/a": b"1"})
        for n in range(2):
            yield self.dropConnection(store)
            yield other.put("r/b", b"%d" % (n,))
            yield rec.waitForValues({"r/a": b"1", "r/b": b"%d" % (n,)})
            # Written once the re-read above is done: only the re-armed
            # watch can report it.
            yield other.put("r/c", b"%d" % (n,))
            yield rec.waitForValues({"r/a": b"1", "r/b": b"%d" % (n,), "r/c": b"%d" % (n,)})
            yield other.delete("r/c")
            yield rec.waitForValues({"r/a": b"1", "r/b": b"%d" % (n,)})

    @defer.inlineCallbacks
    def test_manySubtrees(self):
        """
        Many watches of one client, on separate, nested and identical
        subtrees, each see exactly their own subtree; cancelling one watch
        leaves the others of the same subtree working.
        """
        store = yield self.store()
        other = yield self.store()
        count = 30
        recs = [self.watch(store, "many/%d" % (i,)) for i in range(count)]
        outer = self.watch(store, "many")
        twin = store.watch("many/0", Recorder())
        yield defer.gatherResults([other.put("many/%d/k" % (i,), b"%d" % (i,))
                                   for i in range(count)])
        for i, rec in enumerate(recs):
            yield rec.waitForValues({"many/%d/k" % (i,): b"%d" % (i,)})
        yield outer.waitForValues({"many/%d/k" % (i,): b"%d" % (i,) for i in range(count)})
        twin.cancel()
        yield other.put("many/0/k", b"again")
        yield recs[0].waitForValues({"many/0/k": b"again"})

    @defer.inlineCallbacks
    def test_subtreeDeleted(self):
        """
        A subtree deleted from below (children first, as ZooKeeper must),
        then the watched top itself, vanishes from the watch; the top created
        again is watched again, and is an entry of the watch once it has a
        value, as in a listing.
        """
        store = yield self.store()
        rec = self.watch(store, "d")
        for key in ("d/x", "d/x/1", "d/x/2/deep", "d/y"):
            yield store.put(key, key.encode("ascii"))
        yield rec.waitForValues({k: k.encode("ascii") for k in ("d/x", "d/x/1", "d/x/2/deep", "d/y")})
        raw = yield self.raw()
        yield threads.deferToThread(raw.delete, self.rawPath("d/x"), recursive=True)
        yield rec.waitForValues({"d/y": b"d/y"})
        yield threads.deferToThread(raw.delete, self.rawPath("d"), recursive=True)
        yield rec.waitForValues({})
        yield threads.deferToThread(raw.create, self.rawPath("d/z/1"), HEADER + b"1",
                                    makepath=True)
        yield rec.waitForValues({"d/z/1": b"1"})
        yield threads.deferToThread(raw.set, self.rawPath("d"), HEADER + b"top")
        # The top is an entry now, in the watch as in a listing.
        yield rec.waitForValues({"d": b"top", "d/z/1": b"1"})
        self.assertEqual(rec.last, (yield store.list("d")))
        top = self.watch(store, "d/z/1")
        yield top.waitForValues({"d/z/1": b"1"})

    @defer.inlineCallbacks
    def test_createDeleteRace(self):
        """
        Znodes created and deleted again faster than the watch reads them
        end as they are on the server: gone, or there with the last value.
        """
        store = yield self.store()
        rec = self.watch(store, "c")
        yield store.put("c/base", b"0")
        yield rec.waitForValues({"c/base": b"0"})
        raw = yield self.raw()
        yield threads.deferToThread(raw.ensure_path, self.rawPath("c/kept"))

        def churn():
            results = []
            for i in range(100):
                results.append(raw.create_async(self.rawPath("c/gone"), HEADER + b"x"))
                results.append(raw.delete_async(self.rawPath("c/gone")))
                results.append(raw.create_async(self.rawPath("c/kept/%d" % (i % 3,)),
                                                HEADER + b"%d" % (i,)))
                results.append(raw.delete_async(self.rawPath("c/kept/%d" % (i % 3,))))
            results.append(raw.create_async(self.rawPath("c/kept/1"), HEADER + b"last"))
            for r in results:
                r.get(15)
        yield threads.deferToThread(churn)
        yield rec.waitForValues({"c/base": b"0", "c/kept/1": b"last"})


    @defer.inlineCallbacks
    def test_ownWritesRacingOthers(self):
        """
        Transactions of the watching client racing another client's writes
        of the same keys end in the watch as on the server: values and
        versions.
        """
        store = yield self.store()
        other = yield self.store()
        rec = self.watch(store, "w")
        yield store.put("w/k0", b"start")
        yield rec.waitForValues({"w/k0": b"start"})
        writes = []
        for i in range(40):
            key = "w/k%d" % (i % 4,)
            writes.append(store.transaction([Put(key, b"own%d" % (i,)),
                                             Put("w/own/%d" % (i % 3,), b"%d" % (i,))]))
            writes.append(other.put(key, b"other%d" % (i,)))
            if i % 5 == 0:
                writes.append(store.transaction([Delete(key)]))
        yield defer.DeferredList(writes, consumeErrors=True)
        final = yield store.list("w")
        yield waitFor(lambda: {k: (e.value, e.version) for k, e in (rec.last or {}).items()}
                      == {k: (e.value, e.version) for k, e in final.items()},
                      what="the watch to match the server")

    @defer.inlineCallbacks
    def settled(self, store, rec, other):
        """
        Wait until C{rec}'s watch shows what the server holds under the
        watched prefix C{rec.prefix}, values and versions, after a marker
        written last by C{other} arrived (every event before it is handled).
        """
        marker = "%s/marker" % (rec.prefix,)
        yield other.put(marker, uuid.uuid4().hex.encode("ascii"))
        final = yield store.list(rec.prefix)
        yield waitFor(lambda: {k: (e.value, e.version) for k, e in (rec.last or {}).items()}
                      == {k: (e.value, e.version) for k, e in final.items()},
                      what="the watch to match the server")

    def onTransaction(self, store, before=None, after=None):
        """
        Call C{before()} just before and C{after()} just after the store's
        client queues each C{multi} (on the reactor thread).
        """
        call = store._client._call

        def calling(request, asyncObject):
            if type(request).__name__ == "Transaction" and before is not None:
                before()
            result = call(request, asyncObject)
            if type(request).__name__ == "Transaction" and after is not None:
                after()
            return result
        store._client._call = calling
        self.addCleanup(setattr, store._client, "_call", call)

    @defer.inlineCallbacks
    def test_afterSessionExpiry(self):
        """
        When the watching client's session expires, the watch is set up
        again on the new session: changes made after the re-read reach it.
        """
        self.expectWarnings = True
        store = yield self.store()
        other = yield self.store()
        rec = self.watch(store, "e")
        yield other.put("e/a", b"1")
        yield rec.waitForValues({"e/a": b"1"})
        oldSession = store._client.client_id
        hosts = self.server.hosts

        def expire():
            twin = KazooClient(hosts=hosts, client_id=oldSession)
            twin.start(15)
            twin.stop()
            twin.close()
        yield threads.deferToThread(expire)
        yield other.put("e/b", b"2")
        yield waitFor(lambda: store._client.client_id not in (None, oldSession)
                      and store._connected, what="a new session")
        yield rec.waitForValues({"e/a": b"1", "e/b": b"2"})
        # Written once the re-read is done: only a watch of the new session
        # can report them.
        yield other.put("e/c", b"3")
        yield rec.waitForValues({"e/a": b"1", "e/b": b"2", "e/c": b"3"})
        yield other.delete("e/a")
        yield rec.waitForValues({"e/b": b"2", "e/c": b"3"})
        yield self.settled(store, rec, other)

    @defer.inlineCallbacks
    def test_ownTransactionFailsAfterOtherWrite(self):
        """
        When the watching client's transaction fails because another client
        changed the same key just before it, the watch shows the other
        client's value (no answer says what is there: it is read).
        """
        store = yield self.store()
        other = yield self.store()
        raw = yield self.raw()
        rec = self.watch(store, "f")
        written = yield store.put("f/a", b"0")
        yield store.put("f/b", b"0")
        yield rec.waitForValues({"f/a": b"0", "f/b": b"0"})
        self.onTransaction(store, before=lambda: raw.set(self.rawPath("f/a"), HEADER + b"other"))
        yield self.assertFailure(
            store.transaction([Put("f/a", b"own", written.version), Put("f/b", b"own")]),
            VersionConflict)
        yield rec.waitForValues({"f/a": b"other", "f/b": b"0"})
        yield self.settled(store, rec, other)

    @defer.inlineCallbacks
    def test_connectionLostBeforeAnswer(self):
        """
        When the connection drops after the watching client sent a
        transaction (whose events may have arrived) and before its answer,
        the watch still ends as the server: the transaction's keys are read.
        """
        self.expectWarnings = True
        store = yield self.store()
        other = yield self.store()
        raw = yield self.raw()
        rec = self.watch(store, "l")
        yield store.put("l/a", b"0")
        yield rec.waitForValues({"l/a": b"0"})
        dropped = []

        def drop():
            if not dropped:
                dropped.append(True)
                store._client._call(_CONNECTION_DROP, store._client.handler.async_result())
        self.onTransaction(store,
                           before=lambda: raw.set(self.rawPath("l/a"), HEADER + b"other"),
                           after=drop)
        reconnected = self.reconnection(store)
        yield store.transaction([Put("l/a", b"own"), Put("l/b", b"own")]).addErrback(
            lambda f: f.trap(StoreUnavailable))
        yield reconnected
        yield self.settled(store, rec, other)

    @defer.inlineCallbacks
    def test_reconnectDuringFirstRead(self):
        """
        A connection that drops while a watch makes its first read: the
        watch ends as the server, and reports changes after.
        """
        self.expectWarnings = True
        store = yield self.store()
        other = yield self.store()
        for i in range(20):
            yield other.put("i/%d/k" % (i,), b"%d" % (i,))
        rec = self.watch(store, "i")
        yield self.dropConnection(store)
        yield other.put("i/late", b"1")
        yield self.settled(store, rec, other)
        yield other.delete("i/late")
        yield self.settled(store, rec, other)

    @defer.inlineCallbacks
    def test_cancelWhileDisconnected(self):
        """
        A watch cancelled while the connection is down, and another of the
        same subtree started at once: the other works after the
        reconnection, and nothing fails.
        """
        self.expectWarnings = True
        store = yield self.store()
        other = yield self.store()
        first = Recorder()
        w = store.watch("q", first)
        yield other.put("q/a", b"1")
        yield first.waitForValues({"q/a": b"1"})
        reconnected = self.dropConnection(store)
        w.cancel()
        rec = self.watch(store, "q")
        yield reconnected
        yield rec.waitForValues({"q/a": b"1"})
        yield other.put("q/b", b"2")
        yield rec.waitForValues({"q/a": b"1", "q/b": b"2"})
        yield self.settled(store, rec, other)


class PersistentWatchTests(WatchTestsMixin, unittest.TestCase):
    """
    Persistent recursive watches.
    """

    @defer.inlineCallbacks
    def test_oneReadPerChange(self):
        """
        A change below a watched subtree costs the watch one read of the
        changed znode, nothing else.
        """
        store = yield self.store()
        other = yield self.store()
        rec = self.watch(store, "o")
        yield other.put("o/a", b"1")
        yield rec.waitForValues({"o/a": b"1"})
        sent = self.requests(store)
        yield other.put("o/a", b"2")
        yield rec.waitForValues({"o/a": b"2"})
        self.assertEqual([(type(r).__name__, r.path) for r in sent],
                         [("GetData", self.rawPath("o/a"))])

    @defer.inlineCallbacks
    def test_ownTransactionNotReadBack(self):
        """
        What the watching client's own transaction wrote reaches its watch,
        with the versions the transaction returned, without being read back.
        """
        store = yield self.store()
        rec = self.watch(store, "t")
        yield store.put("t/old", b"0")
        yield rec.waitForValues({"t/old": b"0"})
        sent = self.requests(store)
        written = yield store.transaction([Put("t/a", b"1"), Create("t/new/b", b"2"),
                                           Delete("t/old")])
        yield rec.waitForValues({"t/a": b"1", "t/new/b": b"2"})
        self.assertEqual({k: e.version for k, e in rec.last.items()},
                         {e.key: e.version for e in written[:2]})
        committed = max(i for i, r in enumerate(sent) if type(r).__name__ == "Transaction")
        # (Only the background pruning of t/old's parent reads "t".)
        self.assertEqual([(type(r).__name__, r.path) for r in sent[committed + 1:]
                          if r.path != self.rawPath("t")], [])
        fresh = yield store.list("t")
        self.assertEqual(rec.last, fresh)

    @defer.inlineCallbacks
    def test_cancelRemovesWatch(self):
        """
        Cancelling the last watch of a subtree removes the server's watch:
        changes there cost the client nothing more.
        """
        store = yield self.store()
        other = yield self.store()
        rec = Recorder()
        w = store.watch("x", rec)
        yield other.put("x/a", b"1")
        yield rec.waitForValues({"x/a": b"1"})
        w.cancel()
        self.assertEqual(store._persistent._watchers, {})
        sent = self.requests(store)
        events = []
        store._persistent._deliver = events.append
        yield store.get("x/a")  # after the RemoveWatches' answer
        yield other.put("x/a", b"2")
        yield other.put("x/b", b"3")
        yield store.get("x/a")  # after any event of those puts
        self.assertEqual(([type(r).__name__ for r in sent], events), (["GetData", "GetData"], []))

    @defer.inlineCallbacks
    def test_unimplemented(self):
        """
        A server that answers C{AddWatch} with C{UNIMPLEMENTED} (and closes
        the connection, as ZooKeeper before 3.6 does) gets one-shot watches
        instead, for this watch and every later one.
        """
        self.expectWarnings = True
        store = yield self.store()
        store._persistent.request = _Unknown
        yield store.put("u/a", b"1")
        rec = self.watch(store, "u")
        yield rec.waitForValues({"u/a": b"1"})
        yield waitFor(lambda: not store._persistent.supported, what="the fallback")
        yield waitFor(lambda: store._connected, what="the reconnection")
        yield store.put("u/b", b"2")
        yield rec.waitForValues({"u/a": b"1", "u/b": b"2"})
        later = self.watch(store, "u/b")
        yield later.waitForValues({"u/b": b"2"})
        yield store.put("u/b", b"3")
        yield later.waitForValues({"u/b": b"3"})
        yield rec.waitForValues({"u/a": b"1", "u/b": b"3"})
        self.assertEqual(store._persistent._watchers, {})
        yield self.assertFailure(store._persistent.arm("/x", lambda event: None),
                                 UnimplementedError)

    @defer.inlineCallbacks
    def test_oldConnectionEventAfterReconnect(self):
        """
        An event the old connection received just before it dropped may be
        handled after the reconnection's re-read has begun (the reconnection
        is reported one turn of the bridge sooner than an event): such a
        delete must not undo the re-read of a znode created again
        meanwhile.
        """
        self.expectWarnings = True
        store = yield self.store()
        other = yield self.store()
        rec = self.watch(store, "s")
        yield other.put("s/p", b"1")
        yield rec.waitForValues({"s/p": b"1"})
        registry = store._persistent
        deliver, arm = registry._deliver, registry.arm
        late = []
        # The delete is received but not yet handled; the re-creation's
        # event is lost with the connection.
        registry._deliver = lambda event: late.append(event) if event.path.endswith(
            "/s/p") else deliver(event)
        yield other.delete("s/p")
        yield other.put("s/p", b"2")
        yield waitFor(lambda: len(late) == 2, what="the events")
        registry._deliver = deliver

        def rearm(path, watcher):
            d = arm(path, watcher)
            registry.arm = arm
            deliver(late[0])
            return d
        registry.arm = rearm
        yield self.dropConnection(store)
        yield self.settled(store, rec, other)
        self.assertEqual(rec.values()["s/p"], b"2")


class OneShotWatchTests(WatchTestsMixin, unittest.TestCase):
    """
    The one-shot watches of servers before 3.6, forced.
    """

    persistent = False
