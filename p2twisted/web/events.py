# -*- test-case-name: tests.test_web_events -*-
"""
C{GET /api/v1/events}: what the dashboard shows, pushed as Server-Sent Events
from store watches -- the page never polls.

An L{EventStream} watches some trees of the store (one watch each), turns
every coalesced change into a fresh L{Snapshot}, the snapshot into
I{documents} (C{{(kind, id): JSON value}}, e.g. C{("node", "n1")}: the row
of the fleet grid) and sends the documents that changed::

    id: 3f9c01aa.42
    event: change
    data: {"kind": "node", "id": "n1", "value": {...}}

(C{"value": null}: the document is gone).  A new page first gets
C{event: reset} with every document.  The C{id} is a position
C{<stream>.<sequence>}: a reconnecting C{EventSource} sends back the last
one it saw (C{Last-Event-ID}) and, while this stream still remembers the
changes after it (the last L{REMEMBER}), gets exactly those -- nothing
missed, nothing twice, no reload; from another stream (the server
restarted) or too far back, a reset.
"""

import collections
import functools
import json
import uuid

from zope.interface import implementer

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from p2twisted.orchestrate.snapshot import Snapshot

log = Logger()

#: How many changes a stream remembers for reconnecting pages.
REMEMBER = 2000

#: Seconds a burst of watch callbacks is gathered into one look.
COALESCE = 0.05

#: A look waits at least this many times as long as the last one took, so a
#: large fleet changing all the time costs the server at most a fifth of its
#: time (the pages then see its changes in coarser steps).
PATIENCE = 4

#: Seconds between comments that keep idle connections (and proxies) open and
#: notice pages that went away.
KEEPALIVE = 15.0

#: Milliseconds a disconnected C{EventSource} waits before reconnecting.
RETRY = 1000

#: Seconds the store stays watched after the last page went (for a page
#: that reconnects to resume), before the watches stop.
IDLE = 60.0

#: Bytes a page that stopped reading may fall behind (beyond what the
#: connection buffers) before its connection is dropped.
BEHIND = 4 * 1024 * 1024


def _line(kind, docId, encoded):
    return '{"kind":%s,"id":%s,"value":%s}' % (json.dumps(kind), json.dumps(docId), encoded)


@implementer(IPushProducer)
class _Client(object):
    """
    One open stream: its request and the Deferred klein waits on.

    It is its request's producer, to learn when the connection's buffer is
    full (the page stopped reading): what is written after that is
    counted, and beyond C{behind} bytes the connection is dropped rather
    than buffered without end -- a live page reconnects and resumes from
    the last event it read.
    """

    def __init__(self, request, lastId, behind):
        self.request = request
        self.lastId = lastId
        self.done = defer.Deferred(lambda d: None)
        self.open = True
        self.behind = behind
        self.buffered = None  # bytes written while the buffer is full
        request.registerProducer(self, True)

    def pauseProducing(self):
        if self.buffered is None:
            self.buffered = 0

    def resumeProducing(self):
        self.buffered = None

    def stopProducing(self):
        self.open = False

    def write(self, data):
        if not self.open:
            return
        if self.buffered is not None:
            self.buffered += len(data)
            if self.buffered > self.behind:
                log.info("a page fell {behind} bytes behind the event stream: dropped",
                         behind=self.behind)
                self.open = False
                self.request.unregisterProducer()
                self.request.transport.abortConnection()
                return
        self.request.write(data)

    def end(self):
        if self.open:
            self.open = False
            self.request.unregisterProducer()
            self.request.finish()
            self.done.callback(None)


class EventStream(object):
    """
    The dashboard's documents of one store, as Server-Sent Events.

    @ivar epoch: this stream's name, the first part of its event ids.
    @ivar position: the sequence number of the last change sent.
    @ivar cost: how many seconds the last look at the store took.
    """

    def __init__(self, store, documents=None, trees=None, clock=None, coalesce=COALESCE,
                 keepalive=KEEPALIVE, remember=REMEMBER, retry=RETRY, behind=BEHIND,
                 idle=IDLE):
        """
        @param store: an open L{IStore}.
        @param documents: C{documents(snapshot) -> {(kind, id): value}}, the
            values JSON-able; by default the dashboard's
            (L{p2twisted.web.dashboard.documents}).
        @param trees: the store prefixes to watch, none below another; by
            default the dashboard's.
        @param clock: an L{IReactorTime} (the global reactor by default).
        @param idle: how many seconds to keep watching with no page
            connected (then L{stop}).
        @param behind: how many bytes a page that stopped reading may fall
            behind before its connection is dropped.
        """
        if documents is None or trees is None:
            from p2twisted.web import dashboard
            documents = documents or dashboard.documents
            trees = trees or dashboard.TREES
        if clock is None:
            from twisted.internet import reactor as clock
        self.store = store
        self.documents = documents
        self.trees = tuple(trees)
        self.clock = clock
        self.coalesce = coalesce
        self.keepalive = keepalive
        self.retry = retry
        self.behind = behind
        self.idle = idle
        self._idleCall = None
        self.epoch = uuid.uuid4().hex[:8]
        self.position = 0
        self.cost = 0.0
        self._changes = collections.deque(maxlen=remember)  # (position, bytes)
        self._current = None  # {(kind, id): encoded JSON}, once every tree was read
        self._listings = {}
        self._watches = None
        self._pending = None
        self._pinger = None
        self._clients = set()
        self._waiting = []

    # -- the store side ------------------------------------------------------

    def start(self):
        """
        Start watching the store (again after L{stop}); a no-op while
        watching.  L{render} starts it.
        """
        if self._watches is not None:
            return
        self._listings = {}
        self._watches = []  # (a watch may call back at once)
        for tree in self.trees:
            self._watches.append(self.store.watch(tree, functools.partial(self._changed, tree)))
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = self.clock
        self._pinger.start(self.keepalive, now=False)

    def stop(self):
        """
        Stop watching and end every open stream.  Started again, it is
        another stream (a new L{epoch}): what changed meanwhile was never
        seen, so a page coming back gets a reset.
        """
        for watch in self._watches or ():
            watch.cancel()
        self._watches = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.cancel()
        self._idleCall = None
        self._current = None
        self._changes.clear()
        self.epoch = uuid.uuid4().hex[:8]
        for client in list(self._clients) + self._waiting:
            client.end()
        self._clients.clear()
        self._waiting = []

    def _changed(self, tree, entries):
        if self._watches is None:
            return
        self._listings[tree] = entries
        if len(self._listings) == len(self.trees) and self._pending is None:
            self._pending = self.clock.callLater(max(self.coalesce, PATIENCE * self.cost),
                                                 self._look)

    def _look(self):
        self._pending = None
        entries = {}
        for listing in self._listings.values():
            entries.update(listing)
        started = self.clock.seconds()
        try:
            found = self.documents(Snapshot.fromEntries(entries))
            encoded = {key: json.dumps(value, sort_keys=True) for key, value in found.items()}
        except Exception:
            log.failure("the dashboard's documents could not be built; keeping the last ones")
            return
        finally:
            self.cost = self.clock.seconds() - started
        previous, self._current = self._current, encoded
        if previous is None:
            waiting, self._waiting = self._waiting, []
            for client in waiting:
                self._join(client)
            return
        for key in sorted(set(encoded) | set(previous)):
            if encoded.get(key) != previous.get(key):
                self._send(key, encoded.get(key))

    def _send(self, key, encoded):
        self.position += 1
        data = self._event("change", _line(key[0], key[1], encoded or "null"))
        self._changes.append((self.position, data))
        for client in list(self._clients):
            client.write(data)

    def _event(self, name, data):
        return ("id: %s.%d\nevent: %s\ndata: %s\n\n"
                % (self.epoch, self.position, name, data)).encode("utf-8")

    def _ping(self):
        for client in list(self._clients):
            client.write(b": keepalive\n\n")

    # -- the page side -------------------------------------------------------

    def render(self, request):
        """
        Answer C{request} with the stream (a klein handler returns this).

        @return: L{Deferred} firing with C{None} when this side ends the
            stream (L{stop}); cancelled (by klein) when the page goes away.
            For C{HEAD}, the headers only (C{b""}): no stream is opened.
        """
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        if request.method == b"HEAD":  # the headers only: no stream, nothing watched
            return b""
        self.start()
        if self._idleCall is not None:
            self._idleCall, idleCall = None, self._idleCall
            idleCall.cancel()
        # A new EventSource (the page's after an HTTP error) says where it
        # was in the query; a reconnecting one in the header.
        lastId = request.getHeader(b"last-event-id") or (request.args.get(b"last") or [None])[0]
        client = _Client(request, lastId, self.behind)
        request.notifyFinish().addBoth(lambda _: self._gone(client))
        client.write(b"retry: %d\n\n" % (self.retry,))
        if self._current is None:
            self._waiting.append(client)
        else:
            self._join(client)
        return client.done

    def _gone(self, client):
        client.open = False
        self._clients.discard(client)
        if client in self._waiting:
            self._waiting.remove(client)
        if (not self._clients and not self._waiting and self._watches is not None
                and self._idleCall is None):
            self._idleCall = self.clock.callLater(self.idle, self._stopIdle)

    def _stopIdle(self):
        self._idleCall = None
        log.debug("no page for {idle}s: the store is no longer watched", idle=self.idle)
        self.stop()

    def resumable(self, lastId):
        """
        @param lastId: a C{Last-Event-ID} (text), or C{None}.
        @return: the changes after C{lastId}, as one C{bytes}, when this
            stream still has all of them; else C{None} (the page needs a
            reset).
        """
        epoch, _, number = (lastId or "").partition(".")
        if epoch != self.epoch or not number.isdigit():
            return None
        after = int(number)
        oldest = self._changes[0][0] if self._changes else self.position + 1
        if not oldest - 1 <= after <= self.position:
            return None
        return b"".join(data for position, data in self._changes if position > after)

    def _join(self, client):
        if not client.open:
            return
        lastId = client.lastId.decode("ascii", "replace") if client.lastId else None
        missed = self.resumable(lastId)
        if missed is None:
            log.debug("a page (re)connects: reset", last=lastId)
            client.write(self.reset())
        else:
            log.debug("a page reconnects after {last}: resumed", last=lastId)
            client.write(missed)
        self._clients.add(client)

    def reset(self):
        """
        @return: the C{reset} event (every document), as C{bytes}.
        """
        lines = [_line(kind, docId, encoded)
                 for (kind, docId), encoded in sorted(self._current.items())]
        return self._event("reset", '{"documents":[%s]}' % (",".join(lines),))
