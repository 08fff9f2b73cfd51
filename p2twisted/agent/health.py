# -*- test-case-name: tests.test_agent_health -*-
"""
Health checks: the agent checks every installed pod that declares a status
check (manifest C{status:}) every L{INTERVAL} seconds with
C{GET http(s)://<pod address>:<port><path>} (the agent's C{pod_address},
127.0.0.1 by default) and publishes the result at
C{health/<pod_id>/<node>}: JSON C{{status, output, time, sha}}, C{status}
C{passing} (a 2xx answer within L{TIMEOUT} seconds) or C{critical}; the
output is one plain line: C{GET <url>: HTTP <code> <the status page without
its markup, cut>}, or why there was no answer (C{connection refused},
C{timeout after 2 s}, C{TLS handshake failed: <OpenSSL's reason>}).  HTTPS
checks verify no certificate and, as curl does, also reach servers without
secure renegotiation (such as P2's C{hoisted-hello}, Go 1.4).  A pod
whose status port is held by another program (the pod could not bind it)
is critical, and the output names that program (L{PodListenerCheck}).  A pod
is checked only while its worker is idle, not while the agent deploys or
removes it or waits to retry a failed attempt: meanwhile the manifest on disk
may not be the one running, and its last health stays as it was.

A pod without a status check gets a health too, from its supervisor
(L{ServiceUptimeChecker}, as P2's runit monitor): passing once every one of
its services has stayed up for L{MIN_UPTIME} seconds, critical while any is
down or restarting.  L{PodHealthChecker} picks the check a manifest asks for.

The key is ephemeral, held by the agent's session (DESIGN.md): when the agent
or its host dies, its pods' health disappears rather than staying
"passing".  It is written when the status or manifest changes, within
L{OUTPUT_REFRESH} seconds when only the output does, and at least every
L{REFRESH} seconds (so C{time} says how fresh it is), and deleted when the
pod is removed.  C{sha} is the manifest checked, so a reader can tell the
health of a new version from that of the old one.
"""

import re

import attr
from OpenSSL import SSL

from twisted.application.internet import TimerService
from twisted.internet import defer, error, protocol
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, PotentialDataLoss, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from p2twisted.agent.interfaces import HealthResult, IHealthChecker
from p2twisted.agent.layout import podServices, serviceLaunchable
from p2twisted.agent.supervisors import crashLoop, crashLoopText
from p2twisted.errors import KeyExists, ManifestError, StoreError, VersionConflict
from p2twisted.agent.worker import checkNamesPod
from p2twisted.listeners import PodListenerCheck
from p2twisted.manifest import parseManifest
from p2twisted.records import CRITICAL, PASSING, Health
from p2twisted.store import keys

log = Logger()

#: Seconds between two checks of a pod.
INTERVAL = 1.0
#: Seconds a check may take.
TIMEOUT = 2.0
#: Seconds after which an unchanged result is written again.
REFRESH = 30.0
#: Seconds after which a result whose output alone changed is written.
OUTPUT_REFRESH = 5.0
#: At most this many bytes of a status page are read.
MAX_OUTPUT = 512
#: At most this many characters of it are kept as output, on one line.
MAX_LINE = 200
#: Seconds every service of a pod without a status check must have been up
#: for the pod to pass.
MIN_UPTIME = 5.0


@implementer(IPolicyForHTTPS)
class _LocalTLS(object):
    """
    A pod's own status endpoint on 127.0.0.1: TLS without verifying its
    certificate (there is no name to verify it against), accepting servers
    that lack secure renegotiation (RFC 5746; OpenSSL refuses them by
    default since 3.0): this client never renegotiates, so their flaw is
    harmless here, and P2's pods include such servers.
    """

    def __init__(self):
        self._options = CertificateOptions(verify=False)
        self._options.getContext().set_options(SSL.OP_LEGACY_SERVER_CONNECT)

    def creatorForNetloc(self, hostname, port):
        return self._options


def _rootCause(failure):
    """
    @return: the failure inside C{twisted.web.client}'s wrappers
        (C{ResponseNeverReceived}, C{ResponseFailed}, ...), which hold a
        list of the reasons.
    """
    while getattr(failure.value, "reasons", None):
        failure = failure.value.reasons[0]
    return failure


def describeFailure(failure, timeout):
    """
    @param timeout: the seconds the check was given.
    @return: why a check got no answer, as one plain line (never a Python
        repr): C{connection refused}, C{timeout after 2 s}, C{TLS handshake
        failed: <reason>}, ...
    """
    failure = _rootCause(failure)
    if failure.check(defer.TimeoutError, error.TimeoutError):
        return "timeout after %g s" % (timeout,)
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(SSL.Error):
        errors = failure.value.args[0] if failure.value.args else None
        reasons = [e[-1] for e in errors if isinstance(e, tuple) and e and e[-1]] \
            if isinstance(errors, list) else []
        return "TLS handshake failed: %s" % (
            "; ".join(reasons) or oneLine(str(failure.value).encode("utf-8")) or "no reason given",)
    if failure.check(error.ConnectionDone, error.ConnectionLost):
        return "connection closed without an answer"
    message = oneLine((failure.getErrorMessage() or "").encode("utf-8"))
    if not message or message.startswith(("<", "[<")):
        return failure.type.__name__
    return message


class _Body(protocol.Protocol):
    """
    Collects the first L{MAX_OUTPUT} bytes of a response body into
    C{finished}.  Unlike C{readBody}, cancelling C{finished} closes the
    connection (C{readBody} cannot: the transport it is given has no
    C{abortConnection}).
    """

    def __init__(self):
        self.data = b""
        self.finished = defer.Deferred(lambda d: self.transport.stopProducing())

    def dataReceived(self, data):
        self.data = (self.data + data)[:MAX_OUTPUT]

    def connectionLost(self, reason):
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(self.data)
        else:
            self.finished.errback(reason)


def oneLine(body, limit=MAX_LINE):
    """
    @return: a status page as one line of at most C{limit} characters: its
        text without HTML tags, whitespace runs made one space.
    """
    text = body.decode("utf-8", "replace")
    if "<" in text:
        text = re.sub(r"(?s)<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def statusURL(manifest, address="127.0.0.1"):
    """
    @param address: the node's pod address.
    @return: the URL of C{manifest}'s status check, or C{None} without one.
    """
    status = manifest.status
    if not status.port:
        return None
    return "%s://%s:%d%s" % ("http" if status.http else "https", address, status.port,
                             status.path)


class _QuietPool(HTTPConnectionPool):
    """
    A pool whose connection factories do not log "Starting factory" and
    "Stopping factory" for every check (twice a second per pod).
    """

    class _factory(HTTPConnectionPool._factory):
        noisy = False


@implementer(IHealthChecker)
class HTTPHealthChecker(object):
    """
    P2's check: C{GET} the pod's status URL; a 2xx answer is passing.
    """

    def __init__(self, reactor, timeout=TIMEOUT, listener=None, address="127.0.0.1"):
        """
        @param address: where this node's pods listen (the agent's
            C{pod_address}).
        @param listener: callable C{(port, pod id)} returning one line when
            another program than the pod listens on the port, else C{None}
            (default: L{PodListenerCheck}, from C{/proc}).
        """
        self.reactor = reactor
        self.timeout = timeout
        self.address = address
        self.listener = PodListenerCheck() if listener is None else listener
        self._pool = _QuietPool(reactor, persistent=False)
        self._agent = Agent(reactor, contextFactory=_LocalTLS(), pool=self._pool,
                            connectTimeout=timeout)

    def check(self, manifest):
        url = statusURL(manifest, self.address)
        if url is None:
            return defer.succeed(None)
        d = self._agent.request(b"GET", url.encode("ascii"),
                                Headers({b"User-Agent": [b"p2-agent health check"]}))
        d.addCallback(self._answered, url)
        d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=self._timedOut)
        d.addErrback(lambda f: HealthResult(CRITICAL, "GET %s: %s" % (
            url, describeFailure(f, self.timeout))))
        return d.addCallback(self._listenerCheck, manifest)

    def _listenerCheck(self, result, manifest):
        """
        Another program than the pod listening on its status port (the pod
        failed to bind it) makes the result critical, whatever it answered.
        """
        try:
            other = self.listener(manifest.status.port, manifest.id)
        except Exception:
            log.failure("cannot tell who listens on port {port}", port=manifest.status.port)
            other = None
        if other is None:
            return result
        return HealthResult(CRITICAL, "%s (%s)" % (other, result.output))

    def _timedOut(self, result, timeout):
        # Cancelling a request fails it with ResponseNeverReceived (not the
        # CancelledError addTimeout converts by default): a timeout anyway.
        raise defer.TimeoutError(timeout)

    def _answered(self, response, url):
        body = _Body()
        response.deliverBody(body)
        d = body.finished

        def done(body):
            status = PASSING if 200 <= response.code < 300 else CRITICAL
            return HealthResult(status, ("GET %s: HTTP %d %s" % (
                url, response.code, oneLine(body))).rstrip())
        return d.addCallback(done)

    def close(self):
        return self._pool.closeCachedConnections()


def uptimeHealth(manifest, statuses, minUptime=MIN_UPTIME):
    """
    The health of a pod without a status check, from its services.

    A service is up once it has run for C{minUptime} seconds, unless its
    supervisor reports it crash-looping (L{crashLoop}: its last runs each
    ended within the supervisor's own minimum, 10 s, which is longer than
    C{minUptime} by default; the loop is over once it has run that long);
    one whose launchable has
    C{restart_policy: never} is up while it runs and once it has exited 0
    (it is not restarted, so it cannot be restarting).

    @param manifest: the pod's L{PodManifest}.
    @param statuses: C{[(service name, L{ServiceStatus} or None)]}, the
        pod's services.
    @return: a L{HealthResult}: passing when every service is up, else
        critical naming each that is not (its output changes only when that
        list, or a crash loop's count, does).
    """
    problems = []
    for name, status in statuses:
        launchable = manifest.launchables.get(serviceLaunchable(name))
        once = launchable is not None and launchable.restartPolicy == "never"
        loop = crashLoop(status) if status is not None else None
        if loop is not None:
            problems.append("%s %s" % (name, crashLoopText(loop)))
        elif status is not None and status.running:
            if once or (status.uptime is not None and status.uptime >= minUptime):
                continue
            problems.append("%s up for less than %g s" % (name, minUptime))
        elif once and status is not None and status.lastExit == "exit 0":
            continue
        else:
            last = status.lastExit if status is not None else None
            problems.append("%s down%s" % (name, " (last run: %s)" % (last,) if last else ""))
    if not statuses:
        return HealthResult(CRITICAL, "no service of the pod is supervised")
    if problems:
        return HealthResult(CRITICAL, oneLine("; ".join(problems).encode("utf-8")))
    return HealthResult(PASSING, "%d service%s up for %g s or more" % (
        len(statuses), "" if len(statuses) == 1 else "s", minUptime))


@implementer(IHealthChecker)
class ServiceUptimeChecker(object):
    """
    The check of a pod without a status check: L{uptimeHealth} of its
    services as its supervisor reports them.

    @param supervisor: the agent's L{ISupervisor}.
    """

    def __init__(self, supervisor, minUptime=MIN_UPTIME):
        self.supervisor = supervisor
        self.minUptime = minUptime

    @defer.inlineCallbacks
    def check(self, manifest):
        try:
            names = podServices((yield self.supervisor.services()), manifest.id)
            statuses = yield defer.gatherResults(
                [self.supervisor.status(name) for name in names], consumeErrors=True)
        except Exception as e:
            if isinstance(e, defer.FirstError):
                e = e.subFailure.value
            return HealthResult(CRITICAL, "cannot read the supervisor: %s" % (
                oneLine(str(e).encode("utf-8")) or type(e).__name__,))
        return uptimeHealth(manifest, list(zip(names, statuses)), self.minUptime)

    def close(self):
        return defer.succeed(None)


@implementer(IHealthChecker)
class PodHealthChecker(object):
    """
    Every pod's check: its C{status:} endpoint when it declares one
    (C{http}), else its services' uptime (C{uptime}).
    """

    def __init__(self, http, uptime):
        self.http = http
        self.uptime = uptime

    def check(self, manifest):
        return (self.http if statusURL(manifest) else self.uptime).check(manifest)

    def close(self):
        return defer.gatherResults([self.http.close(), self.uptime.close()]).addCallback(
            lambda _: None)


@attr.s(frozen=True)
class _Written(object):
    """
    A published health: in which session, what, when, and the entry's version.
    """

    session = attr.ib()
    status = attr.ib()
    output = attr.ib()
    sha = attr.ib()
    time = attr.ib()
    version = attr.ib()


class HealthMonitor(TimerService):
    """
    Checks this node's installed pods and publishes their health.

    @param installed: callable returning C{{pod_id: manifest bytes}} of the
        pods installed on this machine.
    @param session: callable returning the agent's live L{ISession}, or
        C{None} while it has none (nothing is written then).
    @param settled: callable telling whether a pod may be checked now (the
        agent is not deploying or removing it); default: always.
    @param metrics: the L{AgentMetrics} counting the results (default: new
        ones).
    """

    def __init__(self, store, node, clock, checker, installed, session,
                 interval=INTERVAL, refresh=REFRESH, settled=None, metrics=None):
        TimerService.__init__(self, interval, self.checkAll)
        from p2twisted.metrics import AgentMetrics
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.store = store
        self.node = node
        self.clock = clock
        self.checker = checker
        self.installed = installed
        self.session = session
        self.interval = interval
        self.refresh = refresh
        self.settled = settled or (lambda podId: True)
        #: C{{pod_id: L{_Written}}}: what we published last.
        self.written = {}
        self._manifests = {}
        self._checking = None
        self._again = False

    def stopService(self):
        """
        Stop checking: once the check under way (if any) has ended, close the
        checker's connections.
        """
        d = TimerService.stopService(self)
        # A check asked by checkSoon is not the timer's own call.
        d.addCallback(lambda _: self._checking)
        return d.addCallback(lambda _: self.checker.close())

    def _manifest(self, podId, raw):
        """
        @return: C{(manifest, sha)} of the bytes C{raw}, parsed once per
            change, or C{None} when they are not a valid manifest of
            C{podId}.
        """
        cached = self._manifests.get(podId)
        if cached is None or cached[0] != raw:
            try:
                manifest = parseManifest(raw)
                # A pod's directory names it, as its key does: one holding
                # another pod's manifest is not checked as either.
                checkNamesPod(manifest, podId, podId)
                parsed = (manifest, manifest.sha())
            except ManifestError:
                parsed = None
            cached = self._manifests[podId] = (raw, parsed)
        return cached[1]

    def checkSoon(self):
        """
        A pod was deployed or removed: check now rather than at the next
        tick (a rolling update waits for the new pods' health), once the
        check under way, if any, is done.
        """
        if self.running:
            self.clock.callLater(0, lambda: self.checkAll() if self.running else None)

    def checkAll(self):
        """
        Check every installed pod once, and publish what changed; asked
        while a check is under way, check once more after it.

        @return: L{Deferred} firing when done; never failing.
        """
        if self._checking is not None:
            self._again = True
            return self._checking
        self._checking = d = defer.Deferred()

        def done(_):
            again, self._again = self._again, False
            if again and self.running:
                return self._checkOnce().addBoth(done)
            self._checking = None
            d.callback(None)
        self._checkOnce().addBoth(done)
        return d

    @defer.inlineCallbacks
    def _checkOnce(self):
        try:
            installed = yield defer.maybeDeferred(self.installed)
            pods = {podId: self._manifest(podId, raw) for podId, raw in installed.items()}
            pods = {podId: m for podId, m in pods.items() if m is not None}
            busy = {p for p in pods if not self.settled(p)}
            order = sorted(set(pods) - busy)
            results = yield defer.gatherResults([self._check(pods[p][0]) for p in order])
            checked = set(busy)  # left as they are
            for podId, result in zip(order, results):
                if result is not None:
                    self.metrics.healthChecks.labels(podId, result.status).inc()
                    checked.add(podId)
                    yield self._publish(podId, pods[podId][1], result)
            for podId in sorted(set(self.written) - checked):
                yield self._unpublish(podId)
            for podId in set(self._manifests) - set(installed):
                del self._manifests[podId]
        except Exception:
            log.failure("health checks failed", node=self.node)

    def _check(self, manifest):
        """
        @return: the checker's result; a checker that fails (despite its
            interface) gives a critical result rather than losing the round.
        """
        d = defer.maybeDeferred(self.checker.check, manifest)
        return d.addErrback(lambda f: HealthResult(
            CRITICAL, "the health check failed: %s" % (f.getErrorMessage(),)))

    @defer.inlineCallbacks
    def _publish(self, podId, sha, result):
        session = self.session()
        if session is None:
            return
        now = self.clock.seconds()
        last = self.written.get(podId)
        same = last is not None and last.session is session
        if same and (last.status, last.sha) == (result.status, sha):
            # The output alone changing (a page showing a time or a counter)
            # is written at most every OUTPUT_REFRESH seconds: every second
            # per pod would load the store.
            age = now - last.time
            if age < (self.refresh if last.output == result.output else OUTPUT_REFRESH):
                return
        key = keys.health(podId, self.node)
        value = Health(podId, self.node, result.status, result.output, now, sha).toBytes()
        try:
            entry = None
            if same:
                # Not put: if the key is gone (deleted, or the session
                # expired unnoticed) put would make it persistent.
                try:
                    entry = yield self.store.cas(key, value, last.version)
                except VersionConflict:
                    pass
            if entry is None:
                try:
                    entry = yield session.createEphemeral(key, value)
                except KeyExists:
                    # Left by an earlier session of ours, or written by us
                    # with a reply we never got: this agent is its only
                    # writer, so replace it.
                    yield self.store.delete(key)
                    entry = yield session.createEphemeral(key, value)
        except StoreError as e:
            log.warn("cannot publish the health of {pod}: {error}", pod=podId, error=str(e))
            self.written.pop(podId, None)  # its version is unknown now
            return
        if last is None or last.status != result.status:
            log.info("pod {pod} is {status}: {output}", pod=podId, status=result.status,
                     output=result.output, event="health")
        self.written[podId] = _Written(session, result.status, result.output, sha, now,
                                       entry.version)

    @defer.inlineCallbacks
    def _unpublish(self, podId):
        try:
            yield self.store.delete(keys.health(podId, self.node))
        except StoreError as e:
            log.warn("cannot delete the health of {pod}: {error}", pod=podId, error=str(e))
            return
        del self.written[podId]
