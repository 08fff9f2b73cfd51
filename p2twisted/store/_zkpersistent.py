# -*- test-case-name: tests.test_store_zookeeper_watch -*-
"""
ZooKeeper 3.6's persistent recursive watches over kazoo 2.11, which lacks
them (kazoo's main branch has C{add_watch}; this is the part of it we use).

A persistent recursive watch on a path (C{AddWatch}, opcode 106, mode
C{PERSISTENT_RECURSIVE}) reports every later change of that znode and of
every znode below it, as ordinary watch events (C{NodeCreated},
C{NodeDataChanged}, C{NodeDeleted}; never C{NodeChildrenChanged}), without
being re-armed, until it is removed (C{RemoveWatches}, opcode 18) or the
connection ends.  The watch belongs to the connection: kazoo 2.11's
reconnection re-registers only one-shot watches (C{SetWatches}, not 3.6's
C{SetWatches2}), so after a reconnect whoever armed one arms it again and
re-reads what it watches (L{p2twisted.store._zkwatch.SubtreeWatch} does).

L{PersistentWatches} is one client's registry of them: L{PersistentWatches.arm}
sends C{AddWatch}, and the client's connection (L{_Connection}) hands each
watch event, besides to kazoo's one-shot watchers, to the registry on the
reactor thread, which calls every watcher armed on the event's path or an
ancestor of it.  It also knows the client's own writes in flight
(L{PersistentWatches.hold}): a write's answer comes after the events of
every change it supersedes, so a watcher need not read back what its own
client wrote.  Everything but the event reading runs on the reactor thread.
"""

from collections import namedtuple

from kazoo.exceptions import NoWatcherError, UnimplementedError
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import Watch, int_struct, write_string
from kazoo.protocol.states import EVENT_TYPE_MAP, Callback, EventType, WatchedEvent
from twisted.internet import defer
from twisted.logger import Logger

from p2twisted.store._zkclient import UNAVAILABLE

log = Logger()

#: C{AddWatch}'s mode of a persistent recursive watch.
PERSISTENT_RECURSIVE = 1
#: C{RemoveWatches}' watcher type "any" (one-shot and persistent alike).
ANY_WATCHER = 3

#: The events a persistent recursive watch delivers.
_DELIVERED = frozenset((EventType.CREATED, EventType.CHANGED, EventType.DELETED))


class _PathRequest(object):
    """
    A request of a path and an int, whose reply has no body.
    """

    def serialize(self):
        b = bytearray()
        b.extend(write_string(self.path))
        b.extend(int_struct.pack(self[1]))
        return b

    @classmethod
    def deserialize(cls, bytes, offset):
        return True


class AddWatch(_PathRequest, namedtuple("AddWatch", "path mode")):
    """
    The C{AddWatch} request.  (No C{watcher} attribute: kazoo would register
    one as a one-shot data watcher.)
    """

    type = 106


class RemoveWatches(_PathRequest, namedtuple("RemoveWatches", "path watcher_type")):
    """
    The C{RemoveWatches} request.
    """

    type = 18


class _Connection(ConnectionHandler):
    """
    kazoo's connection handler, also handing each watch event to the
    client's L{PersistentWatches}.
    """

    def _read_watch_event(self, buffer, offset):
        ConnectionHandler._read_watch_event(self, buffer, offset)
        registry = getattr(self.client, "_p2persistent", None)
        if registry is None or self.client._stopped.is_set():
            return
        watch, _ = Watch.deserialize(buffer, offset)
        kind = EVENT_TYPE_MAP.get(watch.type)
        if kind in _DELIVERED:
            event = WatchedEvent(kind, self.client._state, watch.path)
            # The way kazoo hands one-shot watchers their events: here, to
            # the reactor thread (L{p2twisted.store._zkclient.Handler}).
            self.client.handler.dispatch_callback(
                Callback("watch", registry._event, (event,)))


class PersistentWatches(object):
    """
    The persistent recursive watches of one kazoo client (made with
    L{p2twisted.store._zkclient.connect}), by path, and the client's own
    writes in flight (L{hold}, L{release}).

    A watcher is an object with C{event(event)} (a change reported by the
    server) and C{written(states)} (this client's write answered: C{states}
    maps each path it changed to what it left there, or L{UNKNOWN}).  Both
    are called on the reactor thread, in the order the server sent them:
    events and completions alike take two turns of the client's
    L{p2twisted.store._zkclient.Bridge}.

    @ivar supported: C{False} once the server answered C{AddWatch} with
        C{UNIMPLEMENTED} (ZooKeeper before 3.6): callers fall back to one-shot
        watches.
    """

    #: The request arming a watch (tests replace it).
    request = AddWatch

    def __init__(self, bridge, client):
        self._bridge = bridge
        self._client = client
        self._watchers = {}  # path: {watcher: None}, in arming order
        self._held = {}  # path: writes in flight
        self.supported = True

    def arm(self, path, watcher):
        """
        Report every later change of C{path} or of a znode below it to
        C{watcher}, until L{disarm}.  Arming an armed watcher again re-sends
        C{AddWatch} (after a reconnect, the new connection has no watch until
        then).

        @return: L{Deferred} firing with C{None} once the server has the
            watch; failing with L{UnimplementedError} if it has no
            persistent watches, or with kazoo's connection errors.
        """
        if not self.supported:
            return defer.fail(UnimplementedError())
        if not isinstance(self._client._connection, _Connection):
            self._client._connection.__class__ = _Connection
            self._client._p2persistent = self
        self._watchers.setdefault(path, {})[watcher] = None
        result = self._client.handler.async_result()
        self._client._call(self.request(path, PERSISTENT_RECURSIVE), result)
        d = self._bridge.deferred(result)

        def failed(f):
            if f.check(UnimplementedError) and self.supported:
                self.supported = False
                log.info("ZooKeeper at {hosts} has no persistent watches (before 3.6): watching "
                         "with one-shot watches", hosts=self._client.hosts)
            return f
        return d.addCallbacks(lambda _: None, failed)

    def disarm(self, path, watcher):
        """
        Stop reporting to C{watcher} for C{path}; the server's watch is
        removed with the last watcher of the path, best effort.
        """
        watchers = self._watchers.get(path, {})
        watchers.pop(watcher, None)
        if watchers or path not in self._watchers:
            return
        del self._watchers[path]
        if not self.supported or self._client._stopped.is_set():
            return
        result = self._client.handler.async_result()
        self._client._call(RemoveWatches(path, ANY_WATCHER), result)
        self._bridge.deferred(result).addErrback(
            lambda f: f.trap(NoWatcherError, *UNAVAILABLE))

    def hold(self, paths):
        """
        This client is about to send a write of C{paths}: until its
        L{release}, their watchers need not read them on an event (the
        write's answer comes after the events of every change it supersedes).
        """
        held = self._held
        for path in paths:
            held[path] = held.get(path, 0) + 1

    def holding(self, path):
        """
        @return: whether a write of C{path} by this client is in flight.
        """
        return path in self._held

    def release(self, paths, known=None):
        """
        The write of C{paths} announced by L{hold} was answered: C{known}
        maps each path to what it left there (C{(data, stat)}, or L{GONE}),
        or is C{None} if that is unknown (the write failed, or may have).
        Each watcher of a path is told.
        """
        held = self._held
        for path in paths:
            if held.get(path, 0) > 1:
                held[path] -= 1
            else:
                held.pop(path, None)
        told = {}
        for path in set(paths):
            state = UNKNOWN if known is None else known.get(path, UNKNOWN)
            for watcher in self._covering(path):
                told.setdefault(watcher, {})[path] = state
        for watcher, states in told.items():
            watcher.written(states)

    def _covering(self, path):
        """
        @return: the watchers of C{path} and of its ancestors.
        """
        found = []
        while True:
            found.extend(self._watchers.get(path, ()))
            if path == "/" or not path:
                return found
            path = path.rpartition("/")[0] or "/"

    def _event(self, event):
        # Completions take a second turn of the bridge (Bridge.deferred):
        # so does an event, to keep the server's order.
        self._bridge.call(self._deliver, event)

    def _deliver(self, event):
        for watcher in self._covering(event.path):
            try:
                watcher.event(event)
            except Exception:
                log.failure("error handling a ZooKeeper watch event of {path}",
                            path=event.path)


class _Marker(object):
    def __init__(self, name):
        self._name = name

    def __repr__(self):
        return self._name


#: What L{PersistentWatches.release} says of a path its write removed, and
#: of one whose state after the write is not known.
GONE = _Marker("GONE")
UNKNOWN = _Marker("UNKNOWN")
