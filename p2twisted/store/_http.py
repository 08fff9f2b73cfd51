# -*- test-case-name: tests.test_store_http -*-
"""
The HTTP client layer of the store backends that speak HTTP (Consul; etcd's
JSON gateway), in the spirit of txconsul: a thin, Deferred-returning API over
an injected treq C{HTTPClient}.

One L{HTTPEndpoint} per store owns its connection pool (closed by
L{HTTPEndpoint.close}, so nothing is left in the reactor), sends the store's
headers (an ACL token) on every request, talks TLS when asked (a CA file, a
client certificate), bounds every request (connect, headers and body) by a
timeout, and retries with jittered exponential backoff
(L{twisted.application.internet.backoffPolicy}) what is safe to retry, never
a 4xx:

  - a connection failure before the request was sent, always;
  - a 5xx answer, or a connection lost or timed out after sending, only for
    a request the caller says is idempotent (GETs by default): a 5xx such as
    Consul's "leadership lost while committing log" or etcd's 503 "request
    timed out" may come after the write WAS applied, and sending a
    conditional write (a cas, a create, a lock) again would then report a
    false conflict about our own write.  Such a request fails at once with
    L{StoreUnavailable} saying its outcome is unknown; the caller re-reads
    (and may recognise its own write) or retries at a higher level.

Errors are L{StoreUnavailable} naming the endpoint, the key and the backend.
"""

import json
import random

import attr
from treq.client import HTTPClient
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error, task
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS, platformTrust
from twisted.logger import Logger
from twisted.web.client import (
    Agent, HTTPConnectionPool, RequestTransmissionFailed, ResponseDone, ResponseFailed,
    ResponseNeverReceived, readBody)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from p2twisted.errors import StoreError, StoreUnavailable, UsageError

log = Logger()

#: Seconds a request may take, connect to last body byte, unless told.
TIMEOUT = 10.0
#: Tries per request, the first included.
ATTEMPTS = 4
#: Requests in flight at once (blocking queries not counted).
CONCURRENCY = 16

#: Failures that mean the request never reached the server: always retried.
NOT_SENT = (error.ConnectError, error.DNSLookupError, RequestTransmissionFailed)
#: Failures after which the server may or may not have acted.
MAYBE_SENT = (ResponseNeverReceived, ResponseFailed, error.ConnectionLost, defer.CancelledError)
#: Why a request that is not idempotent failed when it may have been applied.
UNKNOWN = "%s; not retried, the write may or may not have been applied (outcome unknown)"


def retryDelays(initial=0.05, maximum=2.0):
    """
    @return: C{policy(attempt) -> seconds}: exponential from C{initial} up to
        C{maximum}, plus up to C{initial} seconds of random jitter.
    """
    return backoffPolicy(initial, maximum, 2.0, jitter=lambda: random.uniform(0, initial))


@attr.s(frozen=True)
class TLSFiles(object):
    """
    Where the TLS material of a store URL lives.

    @ivar ca: PEM file of the CA to trust, or C{None} for the system's.
    @ivar cert: PEM file of the client certificate, or C{None}.
    @ivar key: PEM file of its private key (C{None}: it is in C{cert}).
    """

    ca = attr.ib(default=None)
    cert = attr.ib(default=None)
    key = attr.ib(default=None)

    def policy(self):
        """
        @return: an L{IPolicyForHTTPS} built from the files.
        @raise UsageError: if a file cannot be read or parsed.
        """
        try:
            trust = Certificate.loadPEM(_read(self.ca)) if self.ca else platformTrust()
            client = None
            if self.cert:
                pem = _read(self.cert) + (b"\n" + _read(self.key) if self.key else b"")
                client = PrivateCertificate.loadPEM(pem)
        except UsageError:
            raise
        except Exception as e:
            raise UsageError("cannot load TLS files %s: %s" % (
                ", ".join(f for f in (self.ca, self.cert, self.key) if f), e))
        return ClientTLS(trust, client)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e.strerror))


@implementer(IPolicyForHTTPS)
class ClientTLS(object):
    """
    Verify the server against C{trustRoot}; present C{clientCertificate}.
    """

    def __init__(self, trustRoot, clientCertificate=None):
        self.trustRoot = trustRoot
        self.clientCertificate = clientCertificate

    def creatorForNetloc(self, hostname, port):
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self.trustRoot,
                                   clientCertificate=self.clientCertificate)


@attr.s(frozen=True)
class Response(object):
    """
    An HTTP answer read in full.
    """

    code = attr.ib()
    headers = attr.ib()
    body = attr.ib()

    def header(self, name):
        """
        @return: the first value of header C{name} as text, or C{None}.
        """
        values = self.headers.getRawHeaders(name.encode("latin-1"))
        return values[0].decode("latin-1") if values else None

    def json(self):
        return json.loads(self.body)

    def text(self, limit=300):
        """
        @return: the body as one line of text, for error messages.
        """
        text = " ".join(self.body.decode("utf-8", "replace").split())
        return text[:limit] + ("..." if len(text) > limit else "")


class HTTPEndpoint(object):
    """
    One HTTP server a store talks to.

    @param reactor: the reactor (time, connections).
    @param base: e.g. C{"http://127.0.0.1:8500"}.
    @param backend: the backend's short name, for error messages.
    @param headers: sent with every request (e.g. an ACL token).
    @param tls: L{TLSFiles}, for C{https} bases.
    @param client: a treq C{HTTPClient} to use instead of our own (tests,
        C{StubTreq}); the caller then owns its connections.
    @param limit: most requests in flight at once (L{stream}s not counted),
        or C{None} for no limit; more wait their turn, so a burst of writes
        does not open a connection each.
    """

    def __init__(self, reactor, base, backend, headers=None, tls=None, client=None,
                 timeout=TIMEOUT, attempts=ATTEMPTS, delays=None, concurrency=CONCURRENCY):
        self.base = base.rstrip("/")
        self.backend = backend
        self._reactor = reactor
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._attempts = attempts
        self._delays = delays or retryDelays()
        self._pool = None
        if client is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = 16
            self._pool.retryAutomatically = False  # we decide what is retried
            kwargs = {"pool": self._pool}
            if tls is not None:
                kwargs["contextFactory"] = tls.policy()
            client = HTTPClient(Agent(reactor, **kwargs))
        self._client = client
        self._inflight = set()
        self._slots = defer.DeferredSemaphore(concurrency)
        self.closed = False

    def request(self, method, path, params=None, body=None, key=None, timeout=None,
                idempotent=None, expect=(200,), blocking=False, attempts=None):
        """
        Send one request, retrying what is worth retrying.

        @param path: the URL path below the base, e.g. C{"/v1/kv/p2/a"}.
        @param params: query parameters, a list of pairs or a dict; a value
            of C{None} sends the bare name (C{?recurse}).
        @param body: bytes, or a JSON-able object sent as JSON.
        @param key: the store key this is about, for error messages.
        @param timeout: seconds for the whole exchange (default L{TIMEOUT}).
        @param idempotent: whether a request that may have reached the
            server (a 5xx, a connection lost after sending) can be sent
            again; by default only for GET.
        @param expect: status codes the caller handles; others fail.
        @param blocking: whether this is a long-poll (a blocking query) or
            a heartbeat (a session renewal), which neither waits for nor
            counts against the endpoint's concurrency.
        @param attempts: tries for this request (default: the endpoint's).
        @return: L{Deferred} firing with a L{Response}; fails with
            L{StoreUnavailable} (unreachable, timed out, 5xx after the
            retries; for a request that is not idempotent, a message saying
            its outcome is unknown when it may have been applied) or
            L{StoreError} (another unexpected status).
        """
        if idempotent is None:
            idempotent = method == "GET"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
        args = (method, path, _query(params), body, key, timeout or self._timeout, idempotent,
                expect, 0, attempts or self._attempts)
        if blocking:
            return self._attempt(*args)
        d = self._slots.acquire()
        self._inflight.add(d)

        def send(_):
            self._inflight.discard(d)
            return self._attempt(*args).addBoth(lambda r: (self._slots.release(), r)[1])

        def closed(f):
            self._inflight.discard(d)
            f.trap(defer.CancelledError)
            raise self._error(key, method, path, "the store was closed")
        return d.addCallbacks(send, closed)

    def _attempt(self, method, path, query, body, key, timeout, idempotent, expect, attempt,
                 attempts):
        if self.closed:
            return defer.fail(self._error(key, method, path, "the store was closed"))
        timedOut = []
        d = self._send(method, path, query, body, timeout, timedOut)
        self._inflight.add(d)

        def done(result):
            self._inflight.discard(d)
            return result

        def answered(response):
            if response.code in expect:
                return response
            reason = "HTTP %d: %s" % (response.code, response.text())
            if response.code < 500:
                raise self._error(key, method, path, reason, StoreError)
            if not idempotent:
                raise self._error(key, method, path, UNKNOWN % (reason,))
            if attempt + 1 < attempts:
                return self._again(method, path, query, body, key, timeout, idempotent, expect,
                                   attempt, attempts, "HTTP %d" % (response.code,))
            raise self._error(key, method, path, reason)

        def failed(f):
            if self.closed:
                raise self._error(key, method, path, "the store was closed")
            if _cancelled(f) and not timedOut:
                raise defer.CancelledError()  # by our caller: nothing to retry
            reason = _describe(f, timeout)
            if not f.check(*NOT_SENT) and not idempotent:
                raise self._error(key, method, path, UNKNOWN % (reason,))
            if (f.check(*NOT_SENT) or f.check(*MAYBE_SENT)) and attempt + 1 < attempts:
                return self._again(method, path, query, body, key, timeout, idempotent, expect,
                                   attempt, attempts, reason)
            raise self._error(key, method, path, reason)
        return d.addBoth(done).addCallbacks(answered, failed)

    def _again(self, method, path, query, body, key, timeout, idempotent, expect, attempt,
               attempts, reason):
        delay = self._delays(attempt)
        log.debug("{method} {url} failed ({reason}); retrying in {delay:.2f}s", method=method,
                  url=self.base + path, reason=reason, delay=delay)
        d = task.deferLater(self._reactor, delay, self._attempt, method, path, query, body, key,
                            timeout, idempotent, expect, attempt + 1, attempts)
        self._inflight.add(d)
        return d.addBoth(lambda r: (self._inflight.discard(d), r)[1])

    def _send(self, method, path, query, body, timeout, timedOut):
        d = self._open(method, path, query, body)

        def read(response):
            return readBody(response).addCallback(
                lambda data: Response(response.code, response.headers, data))
        d.addCallback(read)

        def expire():
            timedOut.append(True)
            d.cancel()
        timer = self._reactor.callLater(timeout, expire)
        return d.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])

    def _open(self, method, path, query, body):
        url = self.base + path + (("?" + query) if query else "")
        headers = {k: [v] for k, v in self._headers.items()}
        return self._client.request(method, url, headers=headers, data=body, unbuffered=True,
                                    allow_redirects=False, reactor=self._reactor)

    def stream(self, method, path, body, onData, params=None, key=None, timeout=None):
        """
        Send one request whose answer is a long-lived stream (etcd's
        C{/v3/watch}), handing each chunk of its body to C{onData(bytes)} as
        it arrives.  Not retried: the caller knows where to resume.

        @param timeout: seconds to wait for the answer's headers (the body
            may take for ever).
        @return: L{Deferred} firing with C{None} when the server ends the
            stream; failing with L{StoreUnavailable} when the connection
            fails or is lost, L{StoreError} for a status other than 200.
            Cancelling it closes the connection.
        """
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
        if self.closed:
            return defer.fail(self._error(key, method, path, "the store was closed"))
        timeout = timeout or self._timeout
        receiver = _StreamReceiver(onData)
        opening = self._open(method, path, _query(params), body).addTimeout(
            timeout, self._reactor)

        cancelled = []

        def cancel(_):
            cancelled.append(True)
            opening.cancel()
            receiver.abort()
        done = defer.Deferred(cancel)
        self._inflight.add(done)
        done.addBoth(lambda result: (self._inflight.discard(done), result)[1])

        def answered(response):
            if response.code != 200:
                def refuse(data):
                    text = Response(response.code, response.headers, data).text()
                    cls = StoreUnavailable if response.code >= 500 else StoreError
                    raise self._error(key, method, path, "HTTP %d: %s" % (response.code, text),
                                      cls)
                return readBody(response).addCallback(refuse)
            response.deliverBody(receiver)
            return receiver.finished

        def failed(f):
            if self.closed:
                raise self._error(key, method, path, "the store was closed")
            if cancelled:
                raise defer.CancelledError()
            if f.check(StoreError):
                return f
            raise self._error(key, method, path, _describe(f, timeout))
        opening.addCallback(answered).addErrback(failed).chainDeferred(done)
        return done

    def _error(self, key, method, path, detail, cls=StoreUnavailable):
        return cls(key, self.backend, "%s %s%s failed: %s" % (method, self.base, path, detail))

    def notReached(self, error, server, scheme):
        """
        The error a store's first request gives when its server does not
        answer: C{error} (a L{StoreUnavailable}) plus what to check.
        """
        return StoreUnavailable(error.key, self.backend, "%s; is %s running there? (check the host "
                                "and port of the %s:// store URL)" % (error.detail, server, scheme))

    @defer.inlineCallbacks
    def close(self):
        """
        Cancel the requests in flight and close every connection.

        @return: L{Deferred} firing with C{None} once they are closed.
        """
        if self.closed:
            return
        self.closed = True
        for d in list(self._inflight):
            d.cancel()
        if self._pool is not None:
            yield self._pool.closeCachedConnections()
        # Aborted connections finish closing on the next reactor turn.
        yield task.deferLater(self._reactor, 0, lambda: None)


class _StreamReceiver(Protocol):
    """
    Hands each chunk of a response body to C{onData}; C{finished} fires
    when the body ends (fails when the connection was lost).
    """

    def __init__(self, onData):
        self._onData = onData
        self._aborted = False
        self.finished = defer.Deferred()

    def connectionMade(self):
        if self._aborted:
            self.transport.stopProducing()

    def dataReceived(self, data):
        try:
            self._onData(data)
        except Exception:
            log.failure("handling a streamed answer")
            self.abort()

    def connectionLost(self, reason):
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(None)
        else:
            self.finished.errback(reason)

    def abort(self):
        self._aborted = True
        if self.transport is not None:
            self.transport.stopProducing()


def _query(params):
    """
    @return: C{params} as a URL query string; C{None} values give a bare name.
    """
    from urllib.parse import quote
    if not params:
        return ""
    items = params.items() if isinstance(params, dict) else params
    parts = []
    for name, value in items:
        if value is None:
            parts.append(quote(name, safe=""))
        else:
            parts.append("%s=%s" % (quote(name, safe=""), quote(str(value), safe="")))
    return "&".join(parts)


def _cancelled(f):
    """
    @return: whether C{f} is a cancellation (perhaps wrapped by the agent).
    """
    reasons = getattr(f.value, "reasons", None) or []
    return bool(f.check(defer.CancelledError) or any(
        r.check(defer.CancelledError) for r in reasons))


def _describe(f, timeout):
    """
    @return: a failure in words.
    """
    if _cancelled(f):
        return "no answer within %gs" % (timeout,)
    if f.check(ResponseNeverReceived, ResponseFailed, RequestTransmissionFailed):
        reasons = getattr(f.value, "reasons", None) or []
        inner = "; ".join(r.getErrorMessage() for r in reasons) or f.getErrorMessage()
        return "connection failed: %s" % (inner,)
    message = f.getErrorMessage()
    if f.check(error.ConnectionRefusedError):
        return "connection refused"
    return message or f.type.__name__
