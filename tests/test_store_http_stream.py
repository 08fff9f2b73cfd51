"""
L{HTTPEndpoint.stream}, the long-lived answers of etcd's C{/v3/watch},
against a real HTTP server in this process: chunks arrive as they are sent,
cancelling closes the connection, a lost connection and an error status are
typed errors.
"""

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server

from p2twisted.errors import StoreError, StoreUnavailable
from tests.store_contract import waitFor
from tests import test_store_http


class Streaming(resource.Resource):
    """
    Keeps every request open; the test writes to it, ends or drops it.
    """

    isLeaf = True

    def __init__(self, code=200):
        resource.Resource.__init__(self)
        self.code = code
        self.requests = []
        self.gone = []

    def render(self, request):
        request.setResponseCode(self.code)
        if self.code != 200:
            return b'{"error": "nope"}'
        self.requests.append(request)
        request.notifyFinish().addErrback(lambda f: self.gone.append(request))
        request.write(b"")  # send the headers now
        return server.NOT_DONE_YET


class StreamTests(unittest.TestCase):

    serve = test_store_http.EndpointTests.serve
    endpoint = test_store_http.EndpointTests.endpoint

    @defer.inlineCallbacks
    def test_chunksThenEnd(self):
        """
        Each chunk reaches C{onData} while the answer goes on; the Deferred
        fires with C{None} when the server ends it.
        """
        res = Streaming()
        http = self.endpoint(self.serve(res))
        chunks = []
        d = http.stream("POST", "/v3/watch", {"create_request": {}}, chunks.append)
        yield waitFor(lambda: res.requests, what="the request")
        res.requests[0].write(b'{"a": 1}\n')
        yield waitFor(lambda: chunks == [b'{"a": 1}\n'], what="the first chunk")
        res.requests[0].write(b'{"b": 2}\n')
        yield waitFor(lambda: len(chunks) == 2, what="the second chunk")
        res.requests[0].finish()
        self.assertIsNone((yield d))

    @defer.inlineCallbacks
    def test_cancelCloses(self):
        """
        Cancelling the stream closes its connection: the server sees the
        client go away.
        """
        res = Streaming()
        http = self.endpoint(self.serve(res))
        d = http.stream("POST", "/v3/watch", b"{}", lambda data: None)
        yield waitFor(lambda: res.requests, what="the request")
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        yield waitFor(lambda: res.gone, what="the server to see the connection closed")

    @defer.inlineCallbacks
    def test_lost(self):
        """
        A connection lost in the middle fails with L{StoreUnavailable}
        naming the endpoint.
        """
        res = Streaming()
        base = self.serve(res)
        http = self.endpoint(base)
        d = http.stream("POST", "/v3/watch", b"{}", lambda data: None, key="w")
        yield waitFor(lambda: res.requests, what="the request")
        res.requests[0].channel.transport.abortConnection()
        e = yield self.assertFailure(d, StoreUnavailable)
        self.assertIn(base + "/v3/watch", str(e))
        self.assertIn("'w'", str(e))

    @defer.inlineCallbacks
    def test_errorStatus(self):
        """
        An answer other than 200 fails with L{StoreError} quoting it.
        """
        http = self.endpoint(self.serve(Streaming(code=400)))
        e = yield self.assertFailure(http.stream("POST", "/v3/watch", b"{}", lambda d: None),
                                     StoreError)
        self.assertIn("HTTP 400", str(e))
        self.assertIn("nope", str(e))

    @defer.inlineCallbacks
    def test_closeEnds(self):
        """
        Closing the endpoint ends its streams (store closed) and leaves no
        connection open.
        """
        res = Streaming()
        http = self.endpoint(self.serve(res))
        d = http.stream("POST", "/v3/watch", b"{}", lambda data: None)
        yield waitFor(lambda: res.requests, what="the request")
        yield http.close()
        e = yield self.assertFailure(d, StoreUnavailable)
        self.assertIn("closed", str(e))
