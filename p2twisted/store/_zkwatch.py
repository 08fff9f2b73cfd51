# -*- test-case-name: tests.test_store_zookeeper,tests.test_store_zookeeper_watch -*-
"""
Subtree reads and watches of the ZooKeeper backend
(L{p2twisted.store.zookeeper}):

  - L{Subtree} reads a subtree (data and children of every znode), optionally
    leaving one-shot data and child watches on every znode it reads, and
    re-reads only the znodes named dirty;
  - L{SubtreeWatch} turns ZooKeeper's watch events into the store's
    latest-wins subtree watch.

On ZooKeeper 3.6+ a watched subtree has one persistent recursive watch
(L{p2twisted.store._zkpersistent}; kazoo 2.11 lacks them): it is read once,
and each event then costs one read of the znode it names (none for a
delete), and none for a change the watching client made itself in a
transaction (its answer says what it wrote).  Older servers get one-shot
watches, re-armed by re-reading data and children of every znode changed.

Measured (bench/fleet.py, 1,000 pods over 1,000 simulated agents, ZooKeeper
requests from the RC's write until every pod passes): 47-55 per pod with
one-shot watches, 32-41 with these; the orchestrator's own reads while it
writes the 1,000 intents, ~3,700 (four re-reads of every multi it
committed) -> ~230.  What remains is mostly the agents' own listings (see
the bench's docstring).  Everything here runs on the reactor thread;
kazoo's results come back through a L{p2twisted.store._zkclient.Bridge}.
"""

from kazoo.exceptions import NoNodeError, UnimplementedError
from kazoo.protocol.states import EventType
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2twisted.store._zkpersistent import GONE as WRITTEN_GONE, UNKNOWN

log = Logger()

#: What to re-read of a dirty znode: its data, its children list, or all of
#: it and everything below; or (GONE) to forget it and everything below.
DATA, KIDS, FULL, GONE = 1, 2, 4, 8

_EVENT_FLAGS = {
    EventType.CHANGED: DATA,
    EventType.CHILD: KIDS,
    EventType.DELETED: DATA | KIDS,
    EventType.CREATED: FULL,
}


class Subtree(object):
    """
    The znodes of one subtree as last read: C{entries} maps each known znode
    path to its decoded entry (C{None} for a structural znode), C{children}
    maps it to the set of its children's names.

    @param path: the absolute path of the subtree's top znode.
    @param decode: C{decode(path, data, stat)} returning an L{Entry} or
        C{None}.
    @param watcher: a kazoo watch function left on every znode read, or
        C{None} to read without watching.
    @ivar persistent: the subtree is watched by a persistent recursive
        watch: C{read} reads any znode named dirty (not only those known),
        and a C{FULL} read of the top forgets everything first.
    """

    def __init__(self, bridge, client, path, decode, watcher=None):
        self.bridge = bridge
        self.client = client
        self.path = path
        self.decode = decode
        self.watcher = watcher
        self.persistent = False
        self.entries = {}
        self.children = {}
        self._outstanding = 0
        self._error = None
        self._finished = None

    def snapshot(self):
        """
        @return: C{{key: Entry}} of the entries read.
        """
        return {e.key: e for e in self.entries.values() if e is not None}

    def read(self, dirty):
        """
        Re-read the znodes in C{dirty} (C{{path: DATA|KIDS|FULL}}); new
        children are read in full.

        @return: L{Deferred} firing with C{None} once every read is done, or
            failing with the first error other than a vanished znode.
        """
        self._error = None
        self._finished = defer.Deferred()
        if self.persistent and dirty.get(self.path) == FULL:
            self.entries.clear()
            self.children.clear()
        for path, flags in dirty.items():
            if flags == GONE:
                self._drop(path)
            elif path == self.path or path in self.entries or self.persistent:
                self._read(path, flags)
        if self._outstanding == 0:
            return defer.succeed(None)
        return self._finished

    def _read(self, path, flags):
        if flags & (DATA | FULL):
            self._op(self.client.get_async(path, watch=self.watcher), self._gotData, path, flags)
        if flags & KIDS or (flags & FULL and self.watcher is not None):
            self._op(self.client.get_children_async(path, watch=self.watcher),
                     self._gotKids, path, flags)

    def _op(self, asyncResult, callback, path, flags):
        self._outstanding += 1
        asyncResult.rawlink(
            lambda result: self.bridge.call(self._complete, result, callback, path, flags))

    def _complete(self, result, callback, path, flags):
        try:
            if result.successful():
                callback(result.value, path, flags)
            elif isinstance(result.exception, NoNodeError):
                self._vanished(path)
            elif self._error is None:
                self._error = result.exception
        except Exception as e:
            if self._error is None:
                self._error = e
        finally:
            self._outstanding -= 1
            if self._outstanding == 0:
                d, self._finished = self._finished, None
                if d is not None:
                    if self._error is None:
                        d.callback(None)
                    else:
                        d.errback(Failure(self._error))

    def _gotData(self, result, path, flags):
        data, stat = result
        self.entries[path] = self.decode(path, data, stat)
        if flags & FULL and self.watcher is None:
            # Without a watch, no child watch is needed: the stat says
            # whether there are children to list (most znodes of a fleet's
            # trees are leaves), which halves a listing's requests.
            if stat.numChildren:
                self._op(self.client.get_children_async(path), self._gotKids, path, flags)
            else:
                self._gotKids([], path, flags)

    def _gotKids(self, names, path, flags):
        if path not in self.entries:
            # Its data read found nothing (or came later): the znode was
            # (re)created in between; read its data once more.
            self._read(path, DATA)
        old = set(self.children.get(path, ()))
        new = set(names)
        for name in old - new:
            self._drop(path + "/" + name)
        for name in (new if flags & FULL else new - old):
            self._read(path + "/" + name, FULL)
        self.children[path] = new

    def _gotStat(self, stat, path, flags):
        if stat is not None:
            self._read(path, FULL)

    def _vanished(self, path):
        self._drop(path)
        if path == self.path and self.watcher is not None:
            # Only an exists watch notices the top znode being created.
            self._op(self.client.exists_async(path, watch=self.watcher), self._gotStat, path, 0)

    def _drop(self, path):
        parent, _, name = path.rpartition("/")
        self.children.get(parent, set()).discard(name)
        stack = [path]
        while stack:
            p = stack.pop()
            self.entries.pop(p, None)
            stack.extend(p + "/" + n for n in self.children.pop(p, ()))


class SubtreeWatch(object):
    """
    A subtree watch, the store's latest-wins watch of one subtree: events
    mark znodes dirty, and dirty znodes are re-read one round at a time,
    each round ending with a fresh snapshot offered to C{delivery}.

    With a L{PersistentWatches} (ZooKeeper 3.6+), one persistent recursive
    watch on the top znode reports every change below it: the subtree is
    read once without watches, then a znode created or changed is re-read
    (its data only) and a deleted one forgotten, one request per event.
    Without one (or when the server answers C{AddWatch} with
    C{UNIMPLEMENTED}), the subtree is read leaving one-shot data and child
    watches on every znode, re-armed by every re-read.

    L{resync} re-reads everything (and re-arms the persistent watch): at
    the start and after a reconnect, when the server has forgotten the
    connection's watches.
    """

    retryDelays = (0.05, 0.1, 0.2, 0.5, 1.0)

    def __init__(self, reactor, bridge, client, path, decode, delivery, persistent=None):
        self._reactor = reactor
        self._bridge = bridge
        self._delivery = delivery
        self._persistent = persistent
        self._tree = Subtree(bridge, client, path, decode,
                             None if persistent is not None else self._kazooEvent)
        self._tree.persistent = persistent is not None
        self._dirty = {}
        self._fresh = False  # entries changed without a read: offer them
        self._busy = False
        self._arming = False  # an AddWatch awaits its answer
        self._failures = 0
        self._retry = None
        self.stopped = False

    def _kazooEvent(self, event):
        # On a kazoo thread.
        self._bridge.call(self._event, event)

    def _event(self, event):
        flags = _EVENT_FLAGS.get(event.type)
        if self.stopped or flags is None:
            # EventType.NONE: the connection changed; the store resyncs.
            return
        self._dirty[event.path] = self._dirty.get(event.path, 0) | flags
        self._kick()

    def event(self, event):
        """
        A change reported by the persistent watch.  The last event of a
        znode says what it is now (a later change brings another event):
        re-read it, or forget it.  A pending full read of the top stays one.

        Events handled before the answer to the C{AddWatch} of a full read
        are ignored: that read, sent after it, sees every change they
        report, and some may come from the connection before a reconnect
        (which is reported one turn of the bridge sooner), older than that
        read: a delete among them would undo it.
        """
        if self.stopped or self._arming or self._dirty.get(event.path) == FULL:
            return
        self._dirty[event.path] = GONE if event.type == EventType.DELETED else DATA
        self._kick()

    def written(self, states):
        """
        This client's own write was answered, after the events of every
        change before it: a znode it changed that waits to be re-read (held
        by L{_readable} meanwhile) is what the write left there (C{states}:
        C{{path: (data, stat), GONE or UNKNOWN}}).
        """
        if self.stopped or self._persistent is None:
            return
        for path, known in states.items():
            flags = self._dirty.get(path)
            if known is not UNKNOWN and flags is not None and flags != FULL:
                del self._dirty[path]
                if known is WRITTEN_GONE:
                    self._tree._drop(path)
                else:
                    self._tree.entries[path] = self._tree.decode(path, *known)
                self._fresh = True
        self._kick()

    def _readable(self, dirty):
        """
        @return: the dirty znodes to read now: those of no write of this
            client in flight (its answer will say what they are), which stay
            dirty.
        """
        if self._persistent is None or not self._persistent._held or FULL in dirty.values():
            self._dirty = {}
            return dirty
        held = self._persistent.holding
        self._dirty = {p: f for p, f in dirty.items() if held(p)}
        return {p: f for p, f in dirty.items() if p not in self._dirty}

    def resync(self):
        """
        Re-read the whole subtree now (also the first read).
        """
        if self.stopped:
            return
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._dirty[self._tree.path] = FULL
        self._kick()

    #: The first read (L{p2twisted.store.common.WatchesMixin} starts a watch).
    start = resync

    def stop(self):
        self.stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._persistent is not None:
            self._persistent.disarm(self._tree.path, self)
        self._tree.entries.clear()
        self._tree.children.clear()

    def _kick(self):
        if self._busy or self.stopped or self._retry is not None:
            return
        dirty = self._readable(self._dirty)
        if not dirty and not self._fresh:
            return
        self._busy = True
        self._fresh = False
        if self._persistent is not None and dirty.get(self._tree.path) == FULL:
            # Armed before the reads, in the same pipeline: the server
            # answers them in order, so nothing after the reads goes unseen.
            self._arming = True
            armed = self._persistent.arm(self._tree.path, self).addBoth(self._armed)
            d = defer.gatherResults([armed.addErrback(self._unsupported), self._tree.read(dirty)],
                                    consumeErrors=True)
            d.addErrback(lambda f: f.value.subFailure if f.check(defer.FirstError) else f)
        else:
            d = self._tree.read(dirty)
        d.addCallbacks(self._roundDone, self._roundFailed)

    def _armed(self, result):
        self._arming = False
        return result

    def _unsupported(self, failure):
        """
        The server has no persistent watches: watch with one-shot ones from
        now on, starting with a full read leaving them (after this round's
        read, which left none).
        """
        failure.trap(UnimplementedError)
        self._persistent.disarm(self._tree.path, self)
        self._persistent = None
        self._tree.watcher = self._kazooEvent
        self._tree.persistent = False
        self._dirty[self._tree.path] = FULL

    def _roundDone(self, _):
        self._busy = False
        self._failures = 0
        if not self.stopped:
            self._delivery.offer(self._tree.snapshot())
            self._kick()

    def _roundFailed(self, failure):
        self._busy = False
        if self.stopped:
            return
        delay = self.retryDelays[min(self._failures, len(self.retryDelays) - 1)]
        if self._failures == 0:
            log.warn("watch of {path} could not read ZooKeeper ({error}); retrying",
                     path=self._tree.path, error=failure.getErrorMessage())
        self._failures += 1
        self._dirty[self._tree.path] = FULL
        self._retry = self._reactor.callLater(delay, self._retried)

    def _retried(self):
        self._retry = None
        self._kick()
