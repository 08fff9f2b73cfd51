"""
The HTTP client layer of the HTTP store backends, against real HTTP(S)
servers in this process (and treq's C{StubTreq} where a server adds nothing):
what is retried, what is not, timeouts, TLS with a client certificate, and a
clean reactor after C{close}.
"""

import os
import shutil
import subprocess

from treq.testing import StubTreq
from twisted.internet import defer, reactor, ssl
from twisted.trial import unittest
from twisted.web import resource, server

from p2twisted.errors import StoreError, StoreUnavailable, UsageError
from p2twisted.store._http import HTTPEndpoint, TLSFiles
from tests.httpservers import TrackingFactory
from tests.store_contract import waitFor
from tests.zkserver import freePort


class Scripted(resource.Resource):
    """
    Answers each request with the next of C{answers}: C{(code, body)}, or
    C{"hang"} (never answer), or C{"drop"} (close the connection unanswered).
    Records C{(method, uri, headers, body)} of every request.
    """

    isLeaf = True

    def __init__(self, *answers):
        resource.Resource.__init__(self)
        self.answers = list(answers)
        self.requests = []
        self.hanging = []

    def render(self, request):
        self.requests.append((request.method, request.uri, request.requestHeaders,
                              request.content.read(), request.channel.transport))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == "hang":
            self.hanging.append(request)
            return server.NOT_DONE_YET
        if answer == "drop":
            request.channel.transport.abortConnection()
            return server.NOT_DONE_YET
        code, body = answer
        request.setResponseCode(code)
        return body


class EndpointTests(unittest.TestCase):

    def serve(self, res, tls=None):
        """
        @return: the base URL of a server for C{res}, stopped at cleanup.
        """
        tracking = TrackingFactory(server.Site(res))
        if tls is None:
            port = reactor.listenTCP(0, tracking, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, tracking, tls, interface="127.0.0.1")

        def stop():
            return defer.gatherResults([defer.maybeDeferred(port.stopListening),
                                        tracking.closeAll()])
        self.addCleanup(stop)
        scheme = "https" if tls else "http"
        return "%s://127.0.0.1:%d" % (scheme, port.getHost().port)

    def endpoint(self, base, **kwargs):
        kwargs.setdefault("delays", lambda attempt: 0.01)
        http = HTTPEndpoint(reactor, base, "consul", **kwargs)
        self.addCleanup(http.close)
        return http

    @defer.inlineCallbacks
    def test_requestAndHeaders(self):
        """
        A request carries the endpoint's headers, bare and valued query
        parameters and a JSON body; the answer comes back whole.
        """
        res = Scripted((200, b'{"ok": true}'))
        http = self.endpoint(self.serve(res), headers={"X-Consul-Token": "secret"})
        response = yield http.request("PUT", "/v1/txn", [("recurse", None), ("index", 7)],
                                      body=[{"KV": {"Verb": "get"}}])
        self.assertEqual((response.code, response.json()), (200, {"ok": True}))
        method, uri, headers, body, _ = res.requests[0]
        self.assertEqual((method, uri), (b"PUT", b"/v1/txn?recurse&index=7"))
        self.assertEqual(headers.getRawHeaders(b"x-consul-token"), [b"secret"])
        self.assertEqual(body, b'[{"KV": {"Verb": "get"}}]')

    @defer.inlineCallbacks
    def test_retries5xx(self):
        """
        A 5xx answer is retried for a read, and for a write the caller says
        is idempotent.
        """
        res = Scripted((500, b"No cluster leader"), (503, b"busy"), (200, b"true"))
        http = self.endpoint(self.serve(res))
        response = yield http.request("GET", "/v1/kv/p2/a")
        self.assertEqual(response.body, b"true")
        self.assertEqual(len(res.requests), 3)
        res.answers[:] = [(500, b"No cluster leader"), (200, b"true")]
        response = yield http.request("PUT", "/v1/kv/p2/a", body=b"x", idempotent=True)
        self.assertEqual(response.body, b"true")
        self.assertEqual(len(res.requests), 3 + 2)

    @defer.inlineCallbacks
    def test_conditionalWrite5xxNotRetried(self):
        """
        A 5xx answer to a write that is not idempotent (a cas, a create, a
        lock) is not sent again: the server may have applied it before
        failing, and a second try would report a false conflict about our
        own write.  It fails at once with L{StoreUnavailable} saying the
        outcome is unknown.
        """
        res = Scripted((500, b"leadership lost while committing log"), (200, b"false"))
        http = self.endpoint(self.serve(res))
        e = yield self.assertFailure(
            http.request("PUT", "/v1/kv/p2/a", [("cas", 0)], body=b"x", key="a"),
            StoreUnavailable)
        self.assertEqual(len(res.requests), 1)
        for part in ["HTTP 500: leadership lost while committing log", "outcome unknown", "'a'"]:
            self.assertIn(part, str(e))

    @defer.inlineCallbacks
    def test_5xxGivesUp(self):
        """
        After the last try a 5xx is L{StoreUnavailable} naming the endpoint,
        the key, the backend and what the server said.
        """
        res = Scripted((500, b"No cluster leader"))
        base = self.serve(res)
        http = self.endpoint(base, attempts=3)
        e = yield self.assertFailure(http.request("GET", "/v1/kv/p2/a", key="a"),
                                     StoreUnavailable)
        self.assertEqual(len(res.requests), 3)
        message = str(e)
        for part in [base + "/v1/kv/p2/a", "'a'", "consul store", "HTTP 500", "No cluster leader"]:
            self.assertIn(part, message)

    @defer.inlineCallbacks
    def test_attemptsPerRequest(self):
        """
        A request may ask for fewer tries than the endpoint's (closing a
        session on an unreachable agent must not take long).
        """
        res = Scripted((500, b"No cluster leader"))
        http = self.endpoint(self.serve(res))
        yield self.assertFailure(http.request("PUT", "/v1/session/destroy/x", idempotent=True,
                                              attempts=2), StoreUnavailable)
        self.assertEqual(len(res.requests), 2)

    @defer.inlineCallbacks
    def test_4xxNotRetried(self):
        """
        A 4xx the caller does not expect fails at once with L{StoreError}
        (not L{StoreUnavailable}: retrying will not help); an expected one
        is an answer.
        """
        res = Scripted((403, b"Permission denied"))
        http = self.endpoint(self.serve(res))
        e = yield self.assertFailure(http.request("GET", "/v1/kv/p2/a", key="a"), StoreError)
        self.assertNotIsInstance(e, StoreUnavailable)
        self.assertIn("HTTP 403: Permission denied", str(e))
        self.assertEqual(len(res.requests), 1)
        response = yield http.request("GET", "/v1/kv/p2/a", expect=(200, 403))
        self.assertEqual(response.code, 403)

    @defer.inlineCallbacks
    def test_refused(self):
        """
        A server that is not there is L{StoreUnavailable} after the retries,
        naming the endpoint and the key.
        """
        base = "http://127.0.0.1:%d" % (freePort(),)
        http = self.endpoint(base)
        e = yield self.assertFailure(http.request("PUT", "/v1/kv/p2/k", body=b"", key="k"),
                                     StoreUnavailable)
        self.assertIn("PUT %s/v1/kv/p2/k failed: connection refused" % (base,), str(e))
        self.assertIn("'k'", str(e))

    @defer.inlineCallbacks
    def test_openRefused(self):
        """
        Opening an C{etcd://} or C{consul://} store where no server listens
        says what to check, as C{zk://} does, besides what failed.
        """
        from p2twisted.store import openStore
        port = freePort()
        for url, server in [("etcd://127.0.0.1:%d/p2" % (port,), "is etcd running there?"),
                            ("consul://127.0.0.1:%d/p2" % (port,),
                             "is the Consul agent running there?")]:
            e = yield self.assertFailure(openStore(url), StoreUnavailable)
            self.assertIn("http://127.0.0.1:%d/" % (port,), str(e))
            self.assertIn("connection refused; " + server, str(e))
            self.assertIn("store URL", str(e))

    @defer.inlineCallbacks
    def test_timeout(self):
        """
        A server that does not answer in time is L{StoreUnavailable} saying
        so; a GET is retried, and its connection is closed.
        """
        res = Scripted("hang")
        http = self.endpoint(self.serve(res), timeout=0.2, attempts=2)
        e = yield self.assertFailure(http.request("GET", "/v1/kv/p2/a"), StoreUnavailable)
        self.assertIn("no answer within 0.2s", str(e))
        self.assertEqual(len(res.requests), 2)

    @defer.inlineCallbacks
    def test_writeMaybeSentNotRetried(self):
        """
        A write whose connection dies after the server got it is not sent
        again (it may have been applied) unless it is idempotent.
        """
        res = Scripted("drop")
        http = self.endpoint(self.serve(res))
        e = yield self.assertFailure(http.request("PUT", "/v1/txn", body=b"[]"),
                                     StoreUnavailable)
        self.assertIn("outcome unknown", str(e))
        self.assertEqual(len(res.requests), 1)
        yield self.assertFailure(
            http.request("PUT", "/v1/session/renew/x", idempotent=True), StoreUnavailable)
        self.assertEqual(len(res.requests), 1 + 4)

    @defer.inlineCallbacks
    def test_closeCancels(self):
        """
        C{close} fails a request in flight (a blocking query) with
        L{StoreUnavailable} and leaves no connection open; later requests
        fail at once.
        """
        res = Scripted("hang")
        http = self.endpoint(self.serve(res))
        d = http.request("GET", "/v1/kv/p2?recurse&index=5&wait=60s", timeout=70)
        yield waitFor(lambda: res.requests, what="the request to arrive")
        yield http.close()
        e = yield self.assertFailure(d, StoreUnavailable)
        self.assertIn("closed", str(e))
        yield self.assertFailure(http.request("GET", "/v1/kv/p2/a"), StoreUnavailable)

    @defer.inlineCallbacks
    def test_cancelNotRetried(self):
        """
        A request its caller cancels (a watch stopped) fails with
        C{CancelledError} and is not sent again, though a timeout would be.
        """
        res = Scripted("hang")
        http = self.endpoint(self.serve(res))
        d = http.request("GET", "/v1/kv/p2?recurse&index=5&wait=60s", blocking=True)
        yield waitFor(lambda: res.requests, what="the request to arrive")
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        yield waitFor(lambda: not res.hanging[0].channel, what="the connection to close")
        self.assertEqual(len(res.requests), 1)

    @defer.inlineCallbacks
    def test_stubTreq(self):
        """
        Any treq C{HTTPClient} can be injected, e.g. C{StubTreq}.
        """
        stub = StubTreq(Scripted((404, b"")))
        http = HTTPEndpoint(reactor, "http://consul.invalid:8500", "consul", client=stub)
        d = http.request("GET", "/v1/kv/p2/a", expect=(200, 404))
        stub.flush()
        self.assertEqual((yield d).code, 404)
        yield http.close()

    # -- TLS ---------------------------------------------------------------------

    def pki(self):
        """
        @return: paths of a CA, a server certificate for 127.0.0.1 and a
            client certificate it signed (made by C{openssl}).
        """
        openssl = shutil.which("openssl")
        if openssl is None:
            raise unittest.SkipTest("the openssl command is needed to make certificates")
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        paths = {n: os.path.join(d, n) for n in [
            "ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key", "ext"]}
        with open(paths["ext"], "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

        def run(*args):
            subprocess.run([openssl] + list(args), check=True, cwd=d,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=p2 test CA")
        for name in ["server", "client"]:
            run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
                name + ".csr", "-subj", "/CN=" + name)
            run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", "ext")
        return paths

    def tlsServer(self, paths):
        def load(name):
            with open(paths[name], "rb") as f:
                return f.read()
        cert = ssl.PrivateCertificate.loadPEM(load("server.pem") + load("server.key"))
        ca = ssl.Certificate.loadPEM(load("ca.pem"))
        return cert.options(ca)  # requires a client certificate signed by the CA

    @defer.inlineCallbacks
    def test_tlsClientCertificate(self):
        """
        With a CA file and a client certificate, the server is verified and
        accepts us; without the client certificate it refuses.
        """
        paths = self.pki()
        res = Scripted((200, b"true"))
        base = self.serve(res, tls=self.tlsServer(paths))
        http = self.endpoint(base, tls=TLSFiles(paths["ca.pem"], paths["client.pem"],
                                                paths["client.key"]))
        self.assertEqual((yield http.request("GET", "/v1/status/leader")).body, b"true")
        anonymous = self.endpoint(base, tls=TLSFiles(paths["ca.pem"]), attempts=1)
        yield self.assertFailure(anonymous.request("GET", "/v1/status/leader"), StoreUnavailable)

    @defer.inlineCallbacks
    def test_tlsUntrustedServer(self):
        """
        A server whose certificate the CA file does not vouch for is refused.
        """
        paths = self.pki()
        res = Scripted((200, b"true"))
        base = self.serve(res, tls=self.tlsServer(paths))
        other = self.pki()
        http = self.endpoint(base, tls=TLSFiles(other["ca.pem"], paths["client.pem"],
                                                paths["client.key"]), attempts=1)
        yield self.assertFailure(http.request("GET", "/v1/status/leader"), StoreUnavailable)
        self.assertEqual(res.requests, [])

    def test_tlsMissingFile(self):
        """
        A TLS file that cannot be read is a L{UsageError} naming it.
        """
        e = self.assertRaises(UsageError, HTTPEndpoint, reactor, "https://127.0.0.1:1", "consul",
                              tls=TLSFiles("/nonexistent/ca.pem"))
        self.assertIn("/nonexistent/ca.pem", str(e))

