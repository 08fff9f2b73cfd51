"""
Test HTTP servers whose connections a test can see and close, so that the
reactor is clean when the test ends.
"""

from treq.client import HTTPClient
from twisted.internet import defer
from twisted.protocols.policies import WrappingFactory
from twisted.web import resource, server
from twisted.web.client import Agent, HTTPConnectionPool


class TrackingFactory(WrappingFactory):
    """
    Tracks a server's connections, so a test can wait until they are all
    closed.
    """

    def __init__(self, wrapped):
        WrappingFactory.__init__(self, wrapped)
        self._emptied = []
        self.connections = 0

    def registerProtocol(self, p):
        WrappingFactory.registerProtocol(self, p)
        self.connections += 1

    def unregisterProtocol(self, p):
        WrappingFactory.unregisterProtocol(self, p)
        if not self.protocols:
            waiting, self._emptied = self._emptied, []
            for d in waiting:
                d.callback(None)

    def whenEmpty(self):
        """
        @return: L{Deferred} firing once no connection is open.
        """
        if not self.protocols:
            return defer.succeed(None)
        d = defer.Deferred()
        self._emptied.append(d)
        return d

    def closeAll(self):
        for p in list(self.protocols):
            p.transport.abortConnection()
        return self.whenEmpty()


class CommitThenFail(resource.Resource):
    """
    A proxy to the HTTP server at C{upstream} that forwards every request
    and passes its answer back, except that the requests C{pick(method,
    path, body)} chooses are applied upstream and then answered with
    C{answer} instead: a server that committed a write, then failed to say
    so (Consul's "leadership lost while committing log", etcd's 503
    "request timed out").

    @ivar failed: C{(method, path)} of each request answered with C{answer}.
    """

    isLeaf = True

    def __init__(self, reactor, upstream, pick, answer=(503, b"request timed out")):
        resource.Resource.__init__(self)
        self.upstream = upstream
        self.pick = pick
        self.answer = answer
        self.failed = []
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = HTTPClient(Agent(reactor, pool=self.pool))

    def render(self, request):
        method, path, body = request.method, request.path, request.content.read()
        headers = {k: v for k, v in request.requestHeaders.getAllRawHeaders()
                   if k.lower() in (b"content-type", b"x-consul-token")}
        d = self.client.request(method.decode("ascii"), self.upstream + request.uri.decode(),
                                data=body, headers=headers)

        def read(response):
            return response.content().addCallback(lambda data: (response.code, data))

        def reply(answer):
            code, data = answer
            if self.pick(method.decode("ascii"), path.decode("utf-8"), body):
                self.failed.append((method, path))
                code, data = self.answer
            request.setResponseCode(code)
            request.write(data)
            request.finish()
        d.addCallback(read).addCallback(reply)
        return server.NOT_DONE_YET


def serve(testCase, res, reactor):
    """
    @return: the base URL of an HTTP server on 127.0.0.1 for C{res},
        stopped (its connections closed) at C{testCase}'s cleanup.
    """
    tracking = TrackingFactory(server.Site(res))
    port = reactor.listenTCP(0, tracking, interface="127.0.0.1")
    testCase.addCleanup(lambda: defer.gatherResults([
        defer.maybeDeferred(port.stopListening), tracking.closeAll()]))
    if isinstance(res, CommitThenFail):
        testCase.addCleanup(res.pool.closeCachedConnections)
    return "http://127.0.0.1:%d" % (port.getHost().port,)


def once(pick):
    """
    @return: a C{pick} for L{CommitThenFail} choosing only the first
        request C{pick} chooses.
    """
    chosen = []

    def first(method, path, body):
        if not chosen and pick(method, path, body):
            chosen.append(True)
            return True
        return False
    return first
