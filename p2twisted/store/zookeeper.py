# -*- test-case-name: tests.test_store_zookeeper,tests.test_store_zookeeper_watch -*-
"""
The ZooKeeper backend: C{zk://[user:password@]host:port[,host:port...]/root}
(root C{/p2} by default; C{?connect_timeout=S&session_timeout=S} optional).

Layout.  The root znode is created at open; key C{a/b} is the znode
C{<root>/a/b}.  Our keyspace has keys that both hold a value and have keys
below them (C{intent/<node>} and C{intent/<node>/<pod>}), while ZooKeeper
needs parents to exist and cannot delete a znode with children.  So a znode
is either an I{entry}, whose data is C{\\x01} followed by the value, or
I{structural}, with empty data: a parent created on the way to an entry, or
an entry deleted while it had children.  Structural znodes are not entries
(C{get} gives C{None}, C{list} and watches skip them); a leaf delete prunes
the structural parents it leaves empty, best effort.

Versions.  C{Entry.version} is the znode's C{mzxid}, the id of the ZooKeeper
transaction that last wrote it: it changes on every write and, unlike the
znode's C{dataVersion}, never repeats when a key is deleted and created again
(a lock re-taken by another session gets a new version, so a
C{Check(lock.key, lock.version)} made under the old lock fails).  A
conditional write reads the znode, compares its C{mzxid}, then writes with
the C{dataVersion} it read; anything written in between fails that write.

Threads.  kazoo runs its own threads; this module only uses kazoo's
asynchronous API and gets the results back on the reactor thread through a
L{Bridge}, so operations on different keys are pipelined; operations of one
client on one key keep their issue order (L{Sequencer}).

Sessions.  Each L{ZooKeeperSession} is a ZooKeeper session of its own client
(with C{timeout=ttl}): its ephemeral znodes and locks live exactly as long as
it.  The store's own client has no ephemerals and survives session expiry
(kazoo reconnects with a new session); every watched subtree is re-read after
each reconnect.

Watches.  One persistent recursive watch per watched subtree (ZooKeeper 3.6+,
re-armed after each reconnect), or re-armed one-shot watches on older
servers: L{p2twisted.store._zkwatch}.
"""

from kazoo.exceptions import (
    BadVersionError, NodeExistsError, NoNodeError, NotEmptyError, RolledBackError,
    RuntimeInconsistency)
from kazoo.protocol.states import KazooState, ZnodeStat
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted.errors import (
    InvalidTransaction, KeyExists, SessionLost, StoreError, StoreUnavailable,
    VersionConflict)
from p2twisted.store._zkclient import (
    ATTEMPTS, BACKEND, HEADER, MAX_REQUEST, STRUCTURAL_RACE, UNAVAILABLE, Bridge,
    connect, isEntry, noNode, owner, parent, parseURL, raced, stopClient, storeError)
from p2twisted.store._zkpersistent import GONE, PersistentWatches
from p2twisted.store._zktxn import Plan, mayCreate
from p2twisted.store._zkwatch import FULL, Subtree, SubtreeWatch
from p2twisted.store.common import (
    Check, CloseOnceMixin, Create, Entry, Put, Sequencer, SessionMixin, WatchesMixin, checkKey,
    checkOps, checkPrefix, checkValue)
from p2twisted.store.interfaces import ILock, ISession, IStore

__all__ = ["BACKEND", "HEADER", "ZooKeeperStore", "ZooKeeperSession", "ZooKeeperLock", "parseURL"]

log = Logger()

#: The stat of a structural znode a transaction's multi creates.
_STRUCTURAL = ZnodeStat(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def _multiResult(made, plan, results):
    """
    @return: C{{path: (data, stat) or GONE}}, what a committed multi of
        structural creates C{made} and then C{plan} left on each path it
        changed; C{None} if it failed.  Every op of a multi has its zxid:
        set_data's stat gives it (a plan that creates sets too).
    """
    if any(isinstance(r, Exception) for r in results):
        return None
    zxid = next((r.mzxid for r in results if hasattr(r, "mzxid")), None)
    created = _STRUCTURAL._replace(czxid=zxid, mzxid=zxid, pzxid=zxid)
    known = {p: (b"", created) for p in made}
    for (method, args, _, _), result in zip(plan.zk, results[len(made):]):
        if method == "create":
            known[args[0]] = (args[1], created)
        elif method == "set_data":
            known[args[0]] = (args[1], result)
        elif method == "delete":
            known[args[0]] = GONE
    if zxid is None:
        known = {p: state for p, state in known.items() if state is GONE}
    return known


@implementer(IStore)
class ZooKeeperStore(CloseOnceMixin, WatchesMixin):
    """
    An L{IStore} on ZooKeeper.  Use L{open}.
    """

    backend = BACKEND
    #: Watch with ZooKeeper 3.6's persistent recursive watches when the
    #: server has them; C{False} forces the one-shot watches of older ones.
    persistentWatches = True

    def __init__(self, reactor, url, address, client, bridge):
        self.url = url
        self._reactor = reactor
        self._address = address
        self._hosts = address.hosts
        self._client = client
        self._bridge = bridge
        self._root = address.root
        self._acl = address.acl()
        self._seq = Sequencer()
        self._known = set()  # paths seen to exist: put tries set_data first
        self._watches = set()
        self._sessions = set()
        self._background = set()
        self._connected = True
        self._persistent = PersistentWatches(bridge, client)
        client.add_listener(lambda state: bridge.call(self._stateChanged, state))

    @classmethod
    @defer.inlineCallbacks
    def open(cls, url, reactor=None):
        """
        Connect to the store at C{url}, creating its root znode if needed.

        @return: L{Deferred} firing with a L{ZooKeeperStore}; fails with
            L{UsageError} for a bad URL, L{StoreUnavailable} if ZooKeeper
            cannot be reached in time.
        """
        if reactor is None:
            from twisted.internet import reactor
        address = parseURL(url)
        bridge = Bridge(reactor)
        client = yield connect(reactor, bridge, address, address.sessionTimeout)
        try:
            yield bridge.deferred(client.ensure_path_async(address.root, acl=address.acl())
                                  ).addErrback(storeError, None, address.hosts)
        except Exception:
            yield stopClient(reactor, client)
            raise
        return cls(reactor, url, address, client, bridge)

    def _stateChanged(self, state):
        if self._closing is not None:
            return
        if state == KazooState.CONNECTED:
            if not self._connected:
                self._connected = True
                log.info("reconnected to ZooKeeper at {hosts}; re-reading {count} watched "
                         "subtree(s)", hosts=self._hosts, count=len(self._watches))
                for w in list(self._watches):
                    w.resync()
        elif state == KazooState.SUSPENDED:
            self._connected = False
            log.warn("lost the connection to ZooKeeper at {hosts}; reconnecting", hosts=self._hosts)
        else:
            self._connected = False
            log.warn("the ZooKeeper session of the store client at {hosts} expired; reconnecting "
                     "with a new session", hosts=self._hosts)

    # -- helpers -------------------------------------------------------------

    def _path(self, key):
        return self._root + "/" + key if key else self._root

    def _decode(self, path, data, stat):
        if not isEntry(data) or len(path) <= len(self._root):
            return None
        return Entry(path[len(self._root) + 1:], data[1:], stat.mzxid, owner(stat))

    def _call(self, asyncResult):
        return self._bridge.deferred(asyncResult)

    def _run(self, keys, key, f, *args):
        """
        Run C{f(*args)} in its turn for C{keys}, with kazoo's errors typed.
        """
        return self._seq.run(keys, f, *args).addErrback(storeError, key, self._hosts)

    def _remember(self, path):
        if len(self._known) > 100000:
            self._known.clear()
        self._known.add(path)

    def _written(self, stat, key, path, data):
        self._remember(path)
        return Entry(key, data[1:], stat.mzxid, owner(stat))

    # -- reads ---------------------------------------------------------------

    def get(self, key):
        try:
            checkKey(key, BACKEND)
        except StoreError:
            return defer.fail()
        return self._run((key,), key, self._get, self._path(key))

    def _get(self, path):
        d = self._call(self._client.get_async(path))
        return d.addCallbacks(lambda r: self._decode(path, r[0], r[1]), noNode)

    def list(self, prefix):
        try:
            checkPrefix(prefix, BACKEND)
        except StoreError:
            return defer.fail()
        path = self._path(prefix)
        tree = Subtree(self._bridge, self._client, path, self._decode)
        d = tree.read({path: FULL}).addCallback(lambda _: tree.snapshot())
        return d.addErrback(storeError, prefix or None, self._hosts)

    # -- writes --------------------------------------------------------------

    def put(self, key, value):
        try:
            checkKey(key, BACKEND)
            checkValue(key, value, BACKEND)
        except StoreError:
            return defer.fail()
        return self._run((key,), key, self._put, key, HEADER + value, None, 0)

    def _put(self, key, data, create, attempt):
        """
        set_data, or create (with its parents) if the znode is absent.
        """
        path = self._path(key)
        if attempt >= ATTEMPTS:
            return defer.fail(raced(key))
        if create is None:
            create = path not in self._known
        if create:
            d = self._call(self._client.create_async(
                path, data, acl=self._acl, makepath=True, include_data=True))
            d.addCallback(lambda result: result[1])
            race = NodeExistsError
        else:
            d = self._call(self._client.set_async(path, data, -1))
            race = NoNodeError

        def retry(f):
            if create and f.check(NoNodeError):
                # A parent was pruned while kazoo made the path: again.
                return self._put(key, data, True, attempt + 1)
            f.trap(race)
            return self._put(key, data, not create, attempt + 1)
        return d.addCallbacks(self._written, retry, callbackArgs=(key, path, data))

    def create(self, key, value):
        try:
            checkKey(key, BACKEND)
            checkValue(key, value, BACKEND)
        except StoreError:
            return defer.fail()
        return self._run((key,), key, self._create, key, HEADER + value, self._client, False)

    @defer.inlineCallbacks
    def _create(self, key, data, client, ephemeral):
        """
        Create an absent entry: a new znode, or data on a structural one.
        """
        path = self._path(key)
        for _ in range(ATTEMPTS):
            try:
                _, stat = yield self._call(client.create_async(
                    path, data, acl=self._acl, ephemeral=ephemeral, makepath=True,
                    include_data=True))
                return self._written(stat, key, path, data)
            except NoNodeError:
                continue  # a parent was pruned while kazoo made the path
            except NodeExistsError:
                pass
            try:
                old, stat = yield self._call(client.get_async(path))
            except NoNodeError:
                continue
            if isEntry(old):
                raise KeyExists(key, BACKEND)
            try:
                if not ephemeral:
                    stat = yield self._call(client.set_async(path, data, stat.version))
                    return self._written(stat, key, path, data)
                if stat.numChildren:
                    raise StoreError(key, BACKEND, "cannot create an ephemeral key with keys below "
                                     "it (a ZooKeeper ephemeral node has no children)")
                # A structural leaf not pruned yet: remove it, then create.
                yield self._call(client.delete_async(path, stat.version))
            except STRUCTURAL_RACE:
                pass
        raise raced(key)

    def cas(self, key, value, version):
        try:
            checkKey(key, BACKEND)
            checkValue(key, value, BACKEND)
        except StoreError:
            return defer.fail()
        return self._run((key,), key, self._cas, key, HEADER + value, version)

    @defer.inlineCallbacks
    def _cas(self, key, data, version):
        path = self._path(key)
        try:
            old, stat = yield self._call(self._client.get_async(path))
        except NoNodeError:
            raise VersionConflict(key, BACKEND)
        if not isEntry(old) or stat.mzxid != version:
            raise VersionConflict(key, BACKEND)
        try:
            stat = yield self._call(self._client.set_async(path, data, stat.version))
        except (NoNodeError, BadVersionError):
            raise VersionConflict(key, BACKEND)
        return self._written(stat, key, path, data)

    def delete(self, key, version=None):
        try:
            checkKey(key, BACKEND)
        except StoreError:
            return defer.fail()
        return self._run((key,), key, self._delete, key, version)

    @defer.inlineCallbacks
    def _delete(self, key, version):
        path = self._path(key)
        for _ in range(ATTEMPTS):
            try:
                old, stat = yield self._call(self._client.get_async(path))
            except NoNodeError:
                old = stat = None
            if not isEntry(old):
                if version is None:
                    return False
                raise VersionConflict(key, BACKEND)
            if version is not None and stat.mzxid != version:
                raise VersionConflict(key, BACKEND)
            try:
                if stat.numChildren:
                    # Keys below it stay: it becomes structural.
                    yield self._call(self._client.set_async(path, b"", stat.version))
                else:
                    yield self._call(self._client.delete_async(path, stat.version))
                    self._known.discard(path)
                    self._prune(parent(path))
                return True
            except NotEmptyError:
                pass  # a key appeared below it: make it structural instead
            except (NoNodeError, BadVersionError):
                if version is not None:
                    raise VersionConflict(key, BACKEND)
        raise raced(key)

    def _prune(self, path):
        """
        Remove C{path} and its ancestors while they are empty structural
        znodes, in the background, best effort.
        """
        if len(path) <= len(self._root) or self._closing is not None:
            return
        d = self._pruneUp(path)
        self._background.add(d)
        d.addBoth(lambda _: self._background.discard(d))

    @defer.inlineCallbacks
    def _pruneUp(self, path):
        try:
            while len(path) > len(self._root):
                data, stat = yield self._call(self._client.get_async(path))
                if data or stat.numChildren:
                    return
                yield self._call(self._client.delete_async(path, stat.version))
                self._known.discard(path)
                path = parent(path)
        except STRUCTURAL_RACE + UNAVAILABLE:
            return  # someone wrote there, or we are disconnected: leave it
        except Exception:
            log.failure("pruning {path} in ZooKeeper", path=path)

    # -- transactions ----------------------------------------------------------

    def transaction(self, ops):
        try:
            ops = checkOps(ops, BACKEND)
            size = sum(len(op.key) + len(getattr(op, "value", b"")) + 64 for op in ops)
            if size + 2 * len(self._root) * len(ops) > MAX_REQUEST:
                raise InvalidTransaction(
                    None, BACKEND, "transaction of about %d bytes is over ZooKeeper's 1 MB request "
                    "limit; split it" % (size,))
        except StoreError:
            return defer.fail()
        if not ops:
            return defer.succeed([])
        paths = [self._path(op.key) for op in ops]
        written = {op.key for op in ops if not isinstance(op, Check)}
        return self._seq.run(written, self._transaction, ops, paths,
                             shared={op.key for op in ops} - written).addErrback(
            storeError, None, self._hosts)

    def _fencePath(self, key, version):
        """
        @return: the path of the fence znode of the lock C{key} taken at
            C{version} (see L{ZooKeeperSession.lock}).
        """
        return "%s@%x" % (self._path(key), version)

    def _readAll(self, paths, first=()):
        """
        Read C{paths}, those in C{first} before the others (one client's
        requests are answered in order).
        """
        first = list(first)
        paths = first + sorted(set(paths) - set(first))
        ds = [self._call(self._client.get_async(p)).addErrback(noNode) for p in paths]
        d = defer.gatherResults(ds, consumeErrors=True).addCallback(lambda r: dict(zip(paths, r)))
        return d.addErrback(lambda f: f.value.subFailure if f.check(defer.FirstError) else f)

    def _guessable(self, ops, paths):
        """
        @return: the paths of C{ops} a transaction may plan as absent
            without reading them: every op on the path creates or
            unconditionally writes it, and this client has not seen it
            exist.  If one exists after all, its create fails the multi,
            which is then planned again from a read.
        """
        guess, read = set(), set()
        for op, path in zip(ops, paths):
            if (isinstance(op, Create) or isinstance(op, Put) and op.version is None) \
                    and path not in self._known:
                guess.add(path)
            else:
                read.add(path)
        return guess - read

    @defer.inlineCallbacks
    def _transaction(self, ops, paths):
        trustKnown = True
        # The first attempt reads only what it must: keys with a version to
        # check or to delete, keys this client has seen exist, the parents
        # it does not know.  Keys it creates are created blind (a multi's
        # create fails if the znode exists: then everything is read).
        guessing = True
        # A lock's fence znode is read before the lock: if its session ends
        # in between, the lock read already conflicts.
        fences = {i: self._fencePath(op.key, op.version) for i, op in enumerate(ops)
                  if isinstance(op, Check) and op.version is not None}
        opPaths = set(paths)
        for _ in range(ATTEMPTS):
            guess = self._guessable(ops, paths) if guessing else set()
            # Parents of znodes the multi may create must exist: those not
            # known to are read with the rest, and a missing one whose own
            # parent exists is created (structural) by the multi itself, in
            # the same round-trip; deeper gaps are made beforehand.  A
            # parent created blind by an earlier op is not read; nor, on
            # the first attempt, one whose own parent is known: the multi
            # creates it.
            creating = {parent(p) for op, p in zip(ops, paths) if mayCreate(op)} - {self._root}
            unknown = {p for p in creating if not (trustKnown and p in self._known)} - guess
            blindMade = {p for p in unknown if guessing and p not in opPaths
                         and (parent(p) == self._root or parent(p) in self._known)}
            unknown -= blindMade
            grand = {parent(p) for p in unknown} - {self._root}
            grand = {p for p in grand if not (trustKnown and p in self._known)}
            states = yield self._readAll((set(paths) - guess) | unknown | grand,
                                         first=sorted(set(fences.values())))
            for p, state in states.items():
                if state is not None and p not in fences.values():
                    self._remember(p)
            states.update((p, None) for p in guess)
            # fails now on a conflict with what we read
            Plan(ops, paths, states, self._acl, fences=fences)
            missing = {p for p in unknown if states[p] is None}
            made = sorted(p for p in missing
                          if parent(p) == self._root or (parent(p) not in grand and trustKnown)
                          or states.get(parent(p)) is not None)
            deep = missing - set(made)
            made = sorted(set(made) | blindMade)
            if deep:  # made beforehand, all of them (a chain may share ancestors)
                deep, made = missing, sorted(blindMade)
                try:
                    yield defer.gatherResults(
                        [self._call(self._client.ensure_path_async(p, acl=self._acl))
                         for p in deep], consumeErrors=True)
                except defer.FirstError as e:
                    if not e.subFailure.check(NoNodeError):
                        e.subFailure.raiseException()
                    trustKnown = guessing = False  # an ancestor was pruned meanwhile
                    continue
                for p in deep:
                    while len(p) > len(self._root):
                        self._remember(p)
                        p = parent(p)
                again = {p for p in paths if states[p] is None and p in deep}
                if again:
                    states.update((yield self._readAll(again)))
            for p in made:
                if p in states:  # an op's own key: structural first, as if made beforehand
                    states[p] = (b"", _STRUCTURAL)
            plan = Plan(ops, paths, states, self._acl, fences=fences)
            if plan.needsProbe:
                plan = Plan(ops, paths, states, self._acl, probe=True, fences=fences)
            txn = self._client.transaction()
            for p in made:
                txn.create(p, b"", self._acl)
            for method, args, _, _ in plan.zk:
                getattr(txn, method)(*args)
            changed = made + [args[0] for method, args, _, _ in plan.zk if method != "check"]
            self._persistent.hold(changed)
            try:
                results = yield self._call(txn.commit_async())
            except BaseException:
                self._persistent.release(changed)
                raise
            self._persistent.release(changed, _multiResult(made, plan, results))
            failed = [n for n, r in enumerate(results) if isinstance(r, Exception)
                      and not isinstance(r, (RolledBackError, RuntimeInconsistency))]
            if not failed:
                for p in made:
                    self._remember(p)
                return self._committed(ops, paths, plan, results[len(made):])
            if failed[0] < len(made):
                # a parent appeared or went meanwhile: read again
                trustKnown = guessing = False
                continue
            _, _, index, conflict = plan.zk[failed[0] - len(made)]
            if conflict:
                raise VersionConflict(ops[index].key, BACKEND, index=index)
            if not isinstance(results[failed[0]], STRUCTURAL_RACE):
                raise results[failed[0]]
            if not guessing:
                trustKnown = False  # a stale plan: read again and re-plan
            guessing = False  # a guess was wrong: read it
        raise raced(None)

    def _committed(self, ops, paths, plan, results):
        zxid = next((r.mzxid for r in results if hasattr(r, "mzxid")), None)
        out = []
        for op, path, planned in zip(ops, paths, plan.results):
            if isinstance(planned, tuple):
                stat = results[planned[1]] if planned[0] == "set" else None
                self._remember(path)
                out.append(Entry(op.key, op.value, stat.mzxid if stat else zxid,
                                 owner(stat) if stat else None))
            else:
                out.append(planned)
        for path in plan.prune:
            self._prune(path)
        return out

    # -- watches, sessions, close ------------------------------------------------

    def _newWatch(self, prefix, delivery):
        return SubtreeWatch(self._reactor, self._bridge, self._client, self._path(prefix),
                            self._decode, delivery,
                            self._persistent if self.persistentWatches else None)

    def session(self, ttl):
        if self._closing is not None:
            return defer.fail(StoreUnavailable(None, BACKEND, "the store is closed"))

        def connected(client):
            if self._closing is not None:
                stopClient(self._reactor, client)
                raise StoreUnavailable(None, BACKEND, "the store is closed")
            s = ZooKeeperSession(self, client, ttl)
            self._sessions.add(s)
            return s
        return connect(self._reactor, self._bridge, self._address, ttl).addCallback(connected)

    @defer.inlineCallbacks
    def _close(self):
        for w in list(self._watches):
            w._delivery.cancel()
        yield defer.DeferredList([s.close() for s in list(self._sessions)], consumeErrors=True)
        yield defer.DeferredList(list(self._background), consumeErrors=True)
        yield stopClient(self._reactor, self._client)


@implementer(ILock)
class ZooKeeperLock(object):
    """
    A lock: an ephemeral znode of its session.
    """

    def __init__(self, session, entry):
        self._session = session
        self.key = entry.key
        self.version = entry.version

    def release(self):
        s = self._session
        if s.lost:
            return defer.succeed(None)
        d = s.store._seq.run((self.key,), self._release, s.store, s._client)
        return d.addErrback(s._failed, self.key)

    @defer.inlineCallbacks
    def _release(self, store, client):
        path = store._path(self.key)
        try:
            data, stat = yield store._call(client.get_async(path))
            if isEntry(data) and owner(stat) == self._session.id:
                try:
                    yield store._call(client.delete_async(store._fencePath(self.key,
                                                                           self.version)))
                except NoNodeError:
                    pass
                yield store._call(client.delete_async(path, stat.version))
                store._known.discard(path)
                store._prune(parent(path))
        except STRUCTURAL_RACE:
            pass  # gone already, or no longer ours


@implementer(ISession)
class ZooKeeperSession(SessionMixin):
    """
    A ZooKeeper session of its own kazoo client, with timeout C{ttl}.  It is
    lost when ZooKeeper expires it, when it has been disconnected for longer
    than C{ttl} (the server has surely expired it), or when closed; a lost
    session never comes back.
    """

    backend = BACKEND
    lockClass = ZooKeeperLock

    def __init__(self, store, client, ttl):
        self.store = store
        self.ttl = ttl
        self.id = "%x" % (client.client_id[0],)
        self.lost = False
        self._client = client
        self._waiters = []
        self._timer = None
        self._stopped = None
        client.add_listener(lambda state: store._bridge.call(self._stateChanged, state))

    def _stateChanged(self, state):
        if self.lost:
            return
        if state == KazooState.CONNECTED:
            self._cancelTimer()
        elif state == KazooState.SUSPENDED:
            if self._timer is None:
                self._timer = self.store._reactor.callLater(
                    self.ttl, self._end, "disconnected for longer than its %gs TTL" % (self.ttl,))
        else:
            self._end("expired by ZooKeeper")

    def _cancelTimer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _end(self, why):
        if not self.lost:
            self.lost = True
            self._cancelTimer()
            if why:
                log.warn("ZooKeeper session {id} lost: {why}", id=self.id, why=why)
            self.store._sessions.discard(self)
            self._stopped = stopClient(self.store._reactor, self._client)
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)
        d = defer.Deferred()
        self._stopped.addBoth(lambda result: (d.callback(None), result)[1])
        return d

    def _failed(self, failure, key):
        if self.lost and failure.check(*UNAVAILABLE):
            raise SessionLost(key, BACKEND)
        return storeError(failure, key, self.store._hosts)

    def createEphemeral(self, key, value):
        refused = self._refuse(key, value)
        if refused is not None:
            return refused
        d = self.store._seq.run(
            (key,), self.store._create, key, HEADER + value, self._client, True)
        return d.addErrback(self._failed, key)

    def lock(self, key, value=b""):
        """
        Take the lock C{key}, and beside it its fence: an empty ephemeral
        znode named by the lock's version, invisible to reads and watches.
        A multi can only check a znode's dataVersion, which a lock re-created
        by another session repeats (0); a transaction checking this lock
        checks its fence too, which goes with this session and is never made
        again.
        """
        def fenced(lock):
            d = self.store._call(self._client.create_async(
                self.store._fencePath(key, lock.version), b"", acl=self.store._acl,
                ephemeral=True))
            d.addErrback(lambda f: lock.release().addBoth(lambda _: f))
            return d.addCallbacks(lambda _: lock, self._failed, errbackArgs=(key,))
        return SessionMixin.lock(self, key, value).addCallback(fenced)

    def close(self):
        return self._end(None)
