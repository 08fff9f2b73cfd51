# -*- test-case-name: tests.test_store_zookeeper -*-
"""
How the ZooKeeper backend (L{p2twisted.store.zookeeper}) talks to kazoo:
store URLs, connecting and stopping clients, kazoo's exceptions as the
store's typed errors, and

  - L{Bridge}, which hands kazoo's completions and watch events, arriving on
    kazoo's own threads, to the reactor thread, batched;
  - L{Sequencer}, which keeps one client's operations on one key in issue
    order while operations on different keys are pipelined.
"""

import logging
import queue
import select
import socket
import threading
from urllib.parse import parse_qs, unquote, urlsplit

import attr
from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError, BadVersionError, ConnectionClosedError, ConnectionDropped, ConnectionLoss,
    KazooException, NoAuthError, NoChildrenForEphemeralsError, NodeExistsError, NoNodeError,
    NotEmptyError, OperationTimeoutError, SessionExpiredError)
from kazoo.handlers.threading import _STOP, KazooTimeoutError, SequentialThreadingHandler
from kazoo.protocol.states import KazooState
from kazoo.security import make_digest_acl
from kazoo.protocol.states import KeeperState
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.failure import Failure

from p2twisted.errors import InvalidKey, StoreError, StoreUnavailable, UsageError, VersionConflict
from p2twisted.store.common import checkKey

BACKEND = "zookeeper"

#: First byte of an entry's znode data; structural znodes have empty data.
HEADER = b"\x01"
DEFAULT_ROOT = "/p2"
DEFAULT_PORT = 2181
#: Seconds to wait for the first connection.
CONNECT_TIMEOUT = 10.0
#: Session timeout of the store's own client (it owns no ephemerals).
CLIENT_SESSION_TIMEOUT = 10.0
#: Largest multi request we send: ZooKeeper's jute.maxbuffer is 1 MiB, and
#: an oversized request makes the server drop the connection.
MAX_REQUEST = 1000 * 1000
#: Attempts at an operation that keeps racing concurrent structural changes.
ATTEMPTS = 8
#: How kazoo reconnects: quickly, forever.
RECONNECT = dict(max_tries=-1, delay=0.05, backoff=2, max_jitter=0.2, max_delay=1.0)

log = Logger()
_kazooLog = logging.getLogger("p2twisted.store.zookeeper.kazoo")
_kazooLog.addHandler(logging.NullHandler())

UNAVAILABLE = (ConnectionLoss, SessionExpiredError, ConnectionClosedError, ConnectionDropped,
               OperationTimeoutError, KazooTimeoutError)
#: What a write planned from a stale read fails with.
STRUCTURAL_RACE = (NoNodeError, NodeExistsError, BadVersionError, NotEmptyError)


@attr.s(frozen=True)
class Address(object):
    """
    A parsed C{zk://} URL.
    """

    hosts = attr.ib()
    root = attr.ib()
    auth = attr.ib(default=None)  # (user, password) or None
    connectTimeout = attr.ib(default=CONNECT_TIMEOUT)
    sessionTimeout = attr.ib(default=CLIENT_SESSION_TIMEOUT)

    def acl(self):
        """
        @return: the ACL for new znodes: only our digest user when the URL
            has credentials, else ZooKeeper's default (open).
        """
        if self.auth is None:
            return None
        return [make_digest_acl(self.auth[0], self.auth[1], all=True)]


def parseURL(url):
    """
    @return: the L{Address} of C{zk://[user:password@]host:port[,...]/root}.
    @raise UsageError: for a malformed URL.
    """
    parts = urlsplit(url)

    def bad(why):
        shown = url
        if parts.password:
            shown = url.replace(":%s@" % (parts.password,), ":***@", 1)
        return UsageError(
            "bad ZooKeeper store URL %r: %s (expected zk://[user:password@]host:port"
            "[,host:port...]/root)" % (shown, why))
    if parts.scheme not in ("zk", "zookeeper"):
        raise bad("the scheme is not zk://")
    netloc, auth = parts.netloc, None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, sep, password = userinfo.partition(":")
        if not (user and sep):
            raise bad("credentials must be user:password")
        auth = (unquote(user), unquote(password))
    hosts = []
    for hostport in netloc.split(","):
        host, sep, port = hostport.rpartition(":")
        if not sep:
            host, port = hostport, str(DEFAULT_PORT)
        if not host or not port.isdigit():
            raise bad("%r is not host:port" % (hostport,))
        hosts.append("%s:%s" % (host, port))
    root = parts.path.rstrip("/") or DEFAULT_ROOT
    try:
        checkKey(root[1:])
    except InvalidKey:
        raise bad("the root %r is not a valid path" % (root,))
    options = {}
    for name, values in parse_qs(parts.query).items():
        if name not in ("connect_timeout", "session_timeout"):
            raise bad("unknown option %r" % (name,))
        try:
            options[name] = float(values[-1])
        except ValueError:
            raise bad("%s must be a number of seconds" % (name,))
    return Address(",".join(hosts), root, auth,
                   options.get("connect_timeout", CONNECT_TIMEOUT),
                   options.get("session_timeout", CLIENT_SESSION_TIMEOUT))


def isEntry(data):
    return bool(data) and data[:1] == HEADER


def owner(stat):
    return "%x" % (stat.ephemeralOwner,) if stat.ephemeralOwner else None


def parent(path):
    return path.rpartition("/")[0]


def noNode(failure):
    failure.trap(NoNodeError)
    return None


def raced(key, index=None):
    return VersionConflict(key, BACKEND, "concurrent changes kept racing this write; retry it",
                           index=index)


def storeError(failure, key, hosts):
    """
    Translate kazoo's exceptions into the store's typed errors.
    """
    if failure.check(StoreError):
        return failure
    e = failure.value
    if isinstance(e, UNAVAILABLE):
        raise StoreUnavailable(key, BACKEND, "lost contact with ZooKeeper at %s (%s); retry once "
                               "it is reachable" % (hosts, type(e).__name__))
    if isinstance(e, (NoAuthError, AuthFailedError)):
        raise StoreError(key, BACKEND, "not authorized by ZooKeeper at %s; check the "
                         "user:password in the zk:// store URL" % (hosts,))
    if isinstance(e, NoChildrenForEphemeralsError):
        raise StoreError(key, BACKEND, "cannot write below an ephemeral key (a ZooKeeper "
                         "ephemeral node has no children)")
    if isinstance(e, KazooException):
        raise StoreError(key, BACKEND, "ZooKeeper failed: %s" % (type(e).__name__,))
    return failure


def inThread(reactor, f, *args):
    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)


def stopClient(reactor, client):
    """
    Stop and close a kazoo client (blocking, so in a thread).

    @return: L{Deferred} firing with C{None}.
    """
    def stop():
        client.stop()
        client.close()
    d = inThread(reactor, stop).addErrback(
        lambda f: log.failure("stopping a ZooKeeper client failed", f))
    if isinstance(client._call, BatchedWakes):
        d.addCallback(lambda _: client._call.stop())
    return d


def connect(reactor, bridge, address, timeout):
    """
    Start a kazoo client with session timeout C{timeout}.

    @return: L{Deferred} firing with the connected client, or failing with
        L{StoreUnavailable} after the address's connect timeout.
    """
    client = KazooClient(
        hosts=address.hosts, timeout=timeout, connection_retry=dict(RECONNECT),
        auth_data=[("digest", "%s:%s" % address.auth)] if address.auth else None,
        logger=_kazooLog, handler=Handler(bridge))
    client._call = BatchedWakes(reactor, client)
    d = defer.Deferred()

    def connected():
        if not d.called:
            timer.cancel()
            d.callback(client)

    def listener(state):
        if state == KazooState.CONNECTED:
            bridge.call(connected)
            return True

    def timedOut():
        client.remove_listener(listener)
        stopClient(reactor, client)
        d.errback(StoreUnavailable(
            None, BACKEND, "cannot reach ZooKeeper at %s within %gs; is it running? (check the "
            "hosts of the zk:// store URL)" % (address.hosts, address.connectTimeout)))

    def failed(f):
        if not d.called:
            timer.cancel()
            d.errback(f)

    client.add_listener(listener)
    timer = reactor.callLater(address.connectTimeout, timedOut)
    inThread(reactor, client.start_async).addErrback(failed)
    return d


class Bridge(object):
    """
    Runs functions on the reactor thread on behalf of kazoo's threads.  Calls
    arriving while the reactor is busy are batched into one wake-up.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._lock = threading.Lock()
        self._calls = []
        self._scheduled = False

    def call(self, f, *args):
        """
        Call C{f(*args)} on the reactor thread (from any thread).
        """
        with self._lock:
            self._calls.append((f, args))
            if self._scheduled:
                return
            self._scheduled = True
        self._reactor.callFromThread(self._run)

    def _run(self):
        with self._lock:
            calls, self._calls, self._scheduled = self._calls, [], False
        for f, args in calls:
            try:
                f(*args)
            except Exception:
                log.failure("error handling a ZooKeeper result")

    def deferred(self, asyncResult):
        """
        @return: a L{Deferred} firing, on the reactor thread, with the value
            or the exception of kazoo's C{asyncResult}.
        """
        d = defer.Deferred()
        asyncResult.rawlink(lambda result: self.call(_fire, d, result))
        return d


def _fire(d, result):
    if result.successful():
        d.callback(result.value)
    else:
        d.errback(Failure(result.exception))


class BatchedWakes(object):
    """
    A kazoo client's C{_call} (how each C{*_async} method queues its
    request) that wakes kazoo's connection thread once per reactor turn
    instead of once per request.

    kazoo queues a request and writes one byte to a socket pair the
    connection thread selects on, a system call per request; on a busy
    machine each of those hands the GIL to the connection thread and waits
    for it back (up to the 5 ms switch interval): thousands of requests
    issued by the reactor thread spent most of their time there.  Here the
    reactor thread's requests are queued at once and their bytes (the
    connection thread still takes one per request) written in one call at
    the end of the turn.  Calls from other threads go the usual way.
    """

    #: Seconds before writing again the bytes the socket had no room for,
    #: or that wait for kazoo to reconnect (it reads none meanwhile).
    retryDelay = 0.05

    def __init__(self, reactor, client):
        self._reactor = reactor
        self._client = client
        self._direct = client._call
        self._owed = []
        self._wakeCall = None

    def __call__(self, request, asyncObject):
        client = self._client
        if not threadable.isInIOThread() or client._state in (
                KeeperState.AUTH_FAILED, KeeperState.CLOSED, KeeperState.EXPIRED_SESSION):
            return self._direct(request, asyncObject)
        client._queue.append((request, asyncObject))
        self._owed.append(asyncObject)
        if self._wakeCall is None:
            self._wakeCall = self._reactor.callLater(0, self._wake)

    def _wake(self):
        """
        Write the bytes owed, never blocking the reactor: while kazoo is
        disconnected its connection thread reads none, and a full socket
        would block the reactor until the server is back.
        """
        self._wakeCall = None
        owed = self._owed
        if not owed:
            return
        sent = 0
        if self._client._state != KeeperState.CONNECTING:
            try:
                sent = self._client._connection._write_sock.send(
                    b"\0" * len(owed), socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            except Exception:  # closed meanwhile: as kazoo's own _call says
                self.stop()
                return
        del owed[:sent]
        if owed:
            self._wakeCall = self._reactor.callLater(self.retryDelay, self._wake)

    def stop(self):
        """
        The client is closed: fail the requests still owed a wake-up.
        """
        if self._wakeCall is not None:
            self._wakeCall.cancel()
            self._wakeCall = None
        owed, self._owed = self._owed, []
        for asyncObject in owed:
            if not asyncObject.ready():
                asyncObject.set_exception(ConnectionClosedError("Connection has been closed"))


class _ToReactor(queue.Queue):
    """
    kazoo's completion (and watch event) queue, whose callbacks are handed
    straight to the reactor thread (through the client's L{Bridge}) instead
    of to kazoo's worker threads, which only handed ours on: one thread hop
    per request (and per watch event) less.  They must not run in kazoo's connection thread itself:
    kazoo's own callbacks issue requests, and that thread would block
    waking itself once its wake-up socket is full.  Its worker still waits
    here for kazoo's stop.
    """

    def __init__(self, bridge):
        queue.Queue.__init__(self)
        self._bridge = bridge

    def put(self, item, block=True, timeout=None):
        if item is _STOP:
            return queue.Queue.put(self, item, block, timeout)
        self._bridge.call(item)


_POLL_IN = select.POLLIN | select.POLLPRI
_POLL_FAILED = select.POLLERR | select.POLLHUP | select.POLLNVAL


class Handler(SequentialThreadingHandler):
    """
    kazoo's threading handler, cheaper per request: completions and watch
    events go to the reactor thread directly (L{_ToReactor}), and its
    connection thread's C{select} (once per request sent or answer read)
    polls with one C{poll} call instead of creating, filling and closing an
    epoll selector (three system calls more) each time.
    """

    def __init__(self, bridge):
        # kazoo makes its queues with queue_impl, also anew when it stops:
        # replacing them after its stop() left a moment when an event or a
        # completion landed in a plain queue nobody reads.
        self.queue_impl = lambda: _ToReactor(bridge)
        SequentialThreadingHandler.__init__(self)

    def select(self, rlist, wlist, xlist, timeout=None):
        poller = select.poll()
        events = {}
        for objects, flag in ((rlist, _POLL_IN), (wlist, select.POLLOUT),
                              (xlist, select.POLLPRI)):
            for obj in objects:
                fd = obj if isinstance(obj, int) else obj.fileno()
                events[fd] = events.get(fd, 0) | flag
        for fd, flags in events.items():
            poller.register(fd, flags)
        ready = dict(poller.poll(None if timeout is None else timeout * 1000.0))

        def chosen(objects, flags):
            return [obj for obj in objects
                    if ready.get(obj if isinstance(obj, int) else obj.fileno(), 0) & flags]
        return (chosen(rlist, _POLL_IN | _POLL_FAILED), chosen(wlist, select.POLLOUT | _POLL_FAILED),
                chosen(xlist, select.POLLPRI))
