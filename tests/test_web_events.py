# -*- test-case-name: tests.test_web_events -*-
"""
The dashboard's event stream (L{p2twisted.web.events}) over the memory
store, on a L{task.Clock}: a reset first, then a change per document that
changed, and a reconnecting page resuming from its last event id; and as
C{p2-api} serves it, over real HTTP.
"""

import json
import socket

import treq
from twisted.internet import defer, reactor, task
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from p2twisted.labels import encodeLabels
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore
from p2twisted.web.app import API
from p2twisted.web.events import COALESCE, KEEPALIVE, PATIENCE, EventStream
from tests.store_contract import waitFor


def parse(data):
    """
    @param data: bytes of a Server-Sent Events stream.
    @return: its events, C{[{"id", "event", "data"}]} (C{data} decoded from
        JSON), leaving out comments and C{retry:} lines.
    """
    found = []
    for block in data.decode("utf-8").split("\n\n"):
        fields = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                fields[name] = value
        if "data" in fields:
            fields["data"] = json.loads(fields["data"])
            found.append(fields)
    return found


class Request(DummyRequest):
    """
    A L{DummyRequest} a stream can be the producer of (L{DummyRequest}'s
    own C{registerProducer} loops on a pull producer).
    """

    producer = None

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None


def labelsOnly(snapshot):
    return {("node", node): snapshot.nodeLabels(node) for node in snapshot.nodes()}


class StreamTests(unittest.TestCase):

    def setUp(self):
        self.store = MemoryStore()
        self.clock = task.Clock()
        self.stream = EventStream(self.store, documents=labelsOnly, trees=(keys.LABELS,),
                                  clock=self.clock, remember=3)
        self.addCleanup(self.stream.stop)

    def label(self, node, **labels):
        self.successResultOf(self.store.put(keys.label("node", node), encodeLabels(labels)))
        self.clock.advance(COALESCE)

    def unlabel(self, node):
        self.successResultOf(self.store.delete(keys.label("node", node)))
        self.clock.advance(COALESCE)

    def connect(self, lastId=None, query=None):
        request = Request([b""])
        if lastId is not None:
            request.requestHeaders.setRawHeaders(b"last-event-id", [lastId.encode()])
        if query is not None:
            request.addArg(b"last", query.encode())
        self.stream.render(request)
        self.clock.advance(COALESCE)
        return request

    def events(self, request, start=0):
        return parse(b"".join(request.written[start:]))

    def test_resetThenChanges(self):
        """
        A page first gets every document in a C{reset}, then a C{change} per
        document that changed (C{null} when gone), each with the next id of
        this stream; a change that leaves a document as it was sends nothing.
        """
        self.label("n1", tier="web")
        request = self.connect()
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"),
                         [b"text/event-stream; charset=utf-8"])
        self.assertTrue(request.written[0].startswith(b"retry: "))
        (reset,) = self.events(request)
        self.assertEqual(reset["event"], "reset")
        self.assertEqual(reset["id"], "%s.0" % (self.stream.epoch,))
        self.assertEqual(reset["data"], {"documents": [
            {"kind": "node", "id": "n1", "value": {"tier": "web"}}]})

        self.label("n2", tier="db")
        self.label("n1", tier="api")
        self.label("n1", tier="api")
        self.unlabel("n2")
        self.assertEqual([(e["event"], e["id"], e["data"]) for e in self.events(request)[1:]], [
            ("change", "%s.1" % (self.stream.epoch,),
             {"kind": "node", "id": "n2", "value": {"tier": "db"}}),
            ("change", "%s.2" % (self.stream.epoch,),
             {"kind": "node", "id": "n1", "value": {"tier": "api"}}),
            ("change", "%s.3" % (self.stream.epoch,), {"kind": "node", "id": "n2", "value": None}),
        ])

    def test_coalesced(self):
        """
        Changes within L{COALESCE} seconds are looked at once: a document
        changed twice in a burst is sent once, as it ended.
        """
        request = self.connect()
        self.successResultOf(self.store.put(keys.label("node", "n1"), encodeLabels({"v": "1"})))
        self.successResultOf(self.store.put(keys.label("node", "n1"), encodeLabels({"v": "2"})))
        self.clock.advance(COALESCE)
        self.assertEqual([e["data"]["value"] for e in self.events(request)[1:]], [{"v": "2"}])

    def test_slowLooksWaitLonger(self):
        """
        After a look that took C{t} seconds, the next waits L{PATIENCE}
        times C{t}: a large fleet changing all the time cannot keep the
        server looking.
        """
        def slow(snapshot):
            self.clock.advance(1.0)
            return labelsOnly(snapshot)
        stream = EventStream(self.store, documents=slow, trees=(keys.LABELS,), clock=self.clock)
        self.addCleanup(stream.stop)
        request = Request([b""])
        stream.render(request)
        self.clock.advance(COALESCE)
        self.assertEqual(stream.cost, 1.0)
        self.successResultOf(self.store.put(keys.label("node", "n1"), encodeLabels({"v": "1"})))
        self.clock.advance(PATIENCE * 1.0 - 0.01)
        self.assertEqual(len(self.events(request)), 1)
        self.clock.advance(0.01)
        self.assertEqual([e["event"] for e in self.events(request)], ["reset", "change"])

    def test_waitsForTheFirstRead(self):
        """
        A page connecting before the watches delivered the trees gets its
        reset once they did.
        """
        stream = EventStream(self.store, documents=labelsOnly, trees=(keys.LABELS,),
                             clock=self.clock)
        self.addCleanup(stream.stop)
        self.label("n1", tier="web")
        request = Request([b""])
        stream.render(request)
        self.assertEqual(self.events(request), [])
        self.clock.advance(COALESCE)
        self.assertEqual([e["event"] for e in self.events(request)], ["reset"])

    def test_resume(self):
        """
        A page reconnecting with the last id it saw (C{Last-Event-ID}) gets
        the changes after it and nothing else -- no reset; one that saw
        everything gets nothing until the next change.
        """
        first = self.connect()
        self.label("n1", v="1")
        self.label("n1", v="2")
        seen = self.events(first)[-1]["id"]
        first.processingFailed(Failure(ConnectionLost()))
        written = len(first.written)
        self.label("n1", v="3")
        self.label("n2", v="1")

        again = self.connect(lastId=seen)
        self.assertEqual([(e["event"], e["data"]["id"], e["data"]["value"])
                          for e in self.events(again)],
                         [("change", "n1", {"v": "3"}), ("change", "n2", {"v": "1"})])
        self.assertEqual(len(first.written), written, "a page that went gets nothing more")

        latest = self.events(again)[-1]["id"]
        uptodate = self.connect(lastId=latest)
        self.assertEqual(self.events(uptodate), [])
        self.label("n2", v="2")
        self.assertEqual([e["data"]["value"] for e in self.events(uptodate)], [{"v": "2"}])

    def test_resumeFromQuery(self):
        """
        A new C{EventSource} (the page's after an HTTP error) says where it
        was in the query, C{?last=<id>}.
        """
        first = self.connect()
        self.label("n1", v="1")
        seen = self.events(first)[-1]["id"]
        self.label("n1", v="2")
        again = self.connect(query=seen)
        self.assertEqual([(e["event"], e["data"]["value"]) for e in self.events(again)],
                         [("change", {"v": "2"})])

    def test_resetWhenNotResumable(self):
        """
        An id of another stream (the server restarted), one older than the
        changes remembered, one ahead of this stream, or no id at all gets
        a reset with every document.
        """
        first = self.connect()
        for version in "1234":
            self.label("n1", v=version)
        tooOld = "%s.0" % (self.stream.epoch,)  # (changes 2-4 remembered)
        for lastId in ("0123abcd.1", tooOld, "%s.99" % (self.stream.epoch,), "garbage", ""):
            request = self.connect(lastId=lastId)
            self.assertEqual([(e["event"], e["data"]) for e in self.events(request)],
                             [("reset", {"documents": [
                                 {"kind": "node", "id": "n1", "value": {"v": "4"}}]})], lastId)
        self.assertEqual(len(self.events(first)), 5)

    def test_keepalive(self):
        """
        Every L{KEEPALIVE} seconds an open stream gets a comment, which a
        page ignores, so idle connections stay open and gone ones are
        noticed.
        """
        request = self.connect()
        before = len(request.written)
        self.clock.advance(KEEPALIVE)
        self.assertEqual(request.written[before:], [b": keepalive\n\n"])

    def test_stop(self):
        """
        L{EventStream.stop} ends every open stream (the Deferred L{render}
        gave klein fires) and stops watching; started again it is a new
        stream: a page from before gets a reset.
        """
        request = Request([b""])
        done = self.stream.render(request)
        self.clock.advance(COALESCE)
        seen = self.events(request)[-1]["id"]
        self.stream.stop()
        self.assertEqual(request.finished, 1)
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(self.store.state.watches, [])

        self.label("n1", v="1")
        again = self.connect(lastId=seen)
        self.assertEqual([(e["event"], e["data"]) for e in self.events(again)],
                         [("reset", {"documents": [
                             {"kind": "node", "id": "n1", "value": {"v": "1"}}]})])

    def test_idleStops(self):
        """
        When the last page has gone, the store stays watched for
        C{idle} seconds (a page that comes back resumes), then the watches
        stop; the next page starts them again.
        """
        first = self.connect()
        self.label("n1", v="1")
        seen = self.events(first)[-1]["id"]
        first.processingFailed(Failure(ConnectionLost()))
        self.clock.advance(self.stream.idle - 1)
        self.assertEqual(len(self.store.state.watches), 1)
        again = self.connect(lastId=seen)
        self.assertEqual(self.events(again), [], "resumed, nothing missed")
        again.processingFailed(Failure(ConnectionLost()))
        self.clock.advance(self.stream.idle)
        self.assertEqual(self.store.state.watches, [], "no page: nothing watched")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.label("n1", v="2")
        late = self.connect(lastId=seen)
        self.assertEqual([(e["event"], e["data"]) for e in self.events(late)],
                         [("reset", {"documents": [
                             {"kind": "node", "id": "n1", "value": {"v": "2"}}]})])

    def test_unreadableKeepsTheLast(self):
        """
        When the documents cannot be built (a bug), the error is logged and
        the pages keep what they have; the next good look sends the change.
        """
        request = self.connect()
        self.successResultOf(self.store.put(keys.label("node", "n1"), b"not json"))
        self.clock.advance(COALESCE)
        self.assertEqual(len(self.flushLoggedErrors()), 1)
        self.assertEqual(self.events(request)[1:], [])
        self.label("n1", v="1")
        self.assertEqual([e["data"]["value"] for e in self.events(request)[1:]], [{"v": "1"}])


class OverHTTPTests(unittest.TestCase):
    """
    The stream as C{p2-api} serves it: klein, real HTTP on loopback.
    """

    @defer.inlineCallbacks
    def test_servedAndStopped(self):
        """
        C{GET /api/v1/events} streams the reset, then changes as they
        happen; a page coming back with its last id gets only what is new;
        when the API stops, every stream ends cleanly (the page reconnects
        to whatever serves next).
        """
        store = MemoryStore()
        api = API(store)
        self.addCleanup(api.stop)
        port = reactor.listenTCP(0, Site(api.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = "http://127.0.0.1:%d/api/v1/events" % (port.getHost().port,)
        yield store.put(keys.label("node", "n1"), encodeLabels({"tier": "web"}))

        def follow(headers=None):
            chunks = []
            d = treq.get(url, headers=headers, unbuffered=True, persistent=False)
            d.addCallback(lambda response: (response, treq.collect(response, chunks.append)))
            return d, chunks

        d, first = follow()
        response, ended = yield d
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"text/event-stream; charset=utf-8"])
        yield waitFor(lambda: parse(b"".join(first)), timeout=30, what="the reset")
        yield store.put(keys.machine("n1"), b'{"node": "n1"}')
        yield waitFor(lambda: len(parse(b"".join(first))) == 2, timeout=30, what="the change")
        reset, change = parse(b"".join(first))
        self.assertEqual([e["id"] for e in reset["data"]["documents"]], ["n1"])
        self.assertEqual((change["event"], change["data"]["value"]["agent"]), ("change", "up"))

        d, again = follow({b"Last-Event-ID": [change["id"].encode()]})
        response, endedAgain = yield d
        yield store.put(keys.label("node", "n1"), encodeLabels({"tier": "db"}))
        yield waitFor(lambda: parse(b"".join(again)), timeout=30, what="the next change")
        (latest,) = parse(b"".join(again))
        self.assertEqual(latest["data"]["value"]["labels"], {"tier": "db"})

        api.stop()
        yield ended
        yield endedAgain

    @defer.inlineCallbacks
    def test_head(self):
        """
        C{HEAD /api/v1/events} is answered with the stream's headers only:
        no stream stays open for it, and the store is not watched.
        """
        api = API(MemoryStore())
        self.addCleanup(api.stop)
        port = reactor.listenTCP(0, Site(api.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        response = yield treq.head("http://127.0.0.1:%d/api/v1/events" % (port.getHost().port,),
                                   persistent=False)
        self.assertEqual((response.code, response.headers.getRawHeaders(b"content-type")),
                         (200, [b"text/event-stream; charset=utf-8"]))
        self.assertEqual((api._events._watches, api._events._clients, api._events._waiting),
                         (None, set(), []))

    @defer.inlineCallbacks
    def test_stalledPageDropped(self):
        """
        A client that stops reading does not make the server buffer the
        stream for it without end: once it is C{behind} bytes behind what
        its connection holds, its connection is dropped (a live page then
        reconnects and resumes from the last event it read).
        """
        from klein import Klein
        store = MemoryStore()
        padding = "x" * (256 * 1024)
        stream = EventStream(store, documents=lambda snapshot: {
            ("node", node): [snapshot.nodeLabels(node), padding] for node in snapshot.nodes()},
            trees=(keys.LABELS,), behind=64 * 1024)
        self.addCleanup(stream.stop)
        app = Klein()
        app.route("/events")(lambda request: stream.render(request))
        port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        stalled = socket.socket()
        self.addCleanup(stalled.close)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port.getHost().port))
        stalled.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        yield store.put(keys.label("node", "n1"), encodeLabels({"v": "0"}))
        yield waitFor(lambda: stream.position == 0 and stream._current, what="the reset")
        for n in range(1, 65):  # 16 MiB of changes the client never reads
            yield store.put(keys.label("node", "n1"), encodeLabels({"v": str(n)}))
            yield waitFor(lambda: stream.position == n, what="change %d" % (n,))

        stalled.setblocking(False)
        got = []

        def closed():
            try:
                data = stalled.recv(1024 * 1024)
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True
            got.append(len(data))
            return not data
        yield waitFor(closed, timeout=30, what="the stalled stream to be dropped")
        self.assertLess(sum(got), 16 * 1024 * 1024)
