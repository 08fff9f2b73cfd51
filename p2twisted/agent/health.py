# -*- test-case-name: tests.test_agent_health -*-
"""
Health checks: the agent checks every installed pod that declares a status
check (manifest C{status:}) every L{INTERVAL} seconds with
C{GET http(s)://127.0.0.1:<port><path>} and publishes the result at
C{health/<pod_id>/<node>}: JSON C{{status, output, time, sha}}, C{status}
C{passing} (a 2xx answer within L{TIMEOUT} seconds) or C{critical}.

The key is ephemeral, held by the agent's session (DESIGN.md): when the agent
or its host dies, its pods' health disappears rather than staying
"passing".  It is written when the result changes and at least every
L{REFRESH} seconds (so C{time} says how fresh it is), and deleted when the
pod is removed.  C{sha} is the manifest checked, so a reader can tell the
health of a new version from that of the old one.
"""

import json

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from p2twisted.agent.interfaces import HealthResult, IHealthChecker
from p2twisted.errors import KeyExists, ManifestError, StoreError
from p2twisted.manifest import parseManifest
from p2twisted.store import keys

log = Logger()

PASSING, CRITICAL = "passing", "critical"

#: Seconds between two checks of a pod.
INTERVAL = 1.0
#: Seconds a check may take.
TIMEOUT = 2.0
#: Seconds after which an unchanged result is written again.
REFRESH = 30.0
#: At most this many characters of a status page are kept as output.
MAX_OUTPUT = 512


@implementer(IPolicyForHTTPS)
class _LocalTLS(object):
    """
    A pod's own status endpoint on 127.0.0.1: TLS without verifying its
    certificate (there is no name to verify it against).
    """

    def creatorForNetloc(self, hostname, port):
        return CertificateOptions(verify=False)


def statusURL(manifest):
    """
    @return: the URL of C{manifest}'s status check, or C{None} without one.
    """
    status = manifest.status
    if not status.port:
        return None
    return "%s://127.0.0.1:%d%s" % ("http" if status.http else "https", status.port,
                                    status.path)


@implementer(IHealthChecker)
class HTTPHealthChecker(object):
    """
    P2's check: C{GET} the pod's status URL; a 2xx answer is passing.
    """

    def __init__(self, reactor, timeout=TIMEOUT):
        self.reactor = reactor
        self.timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._agent = Agent(reactor, contextFactory=_LocalTLS(), pool=self._pool,
                            connectTimeout=timeout)

    def check(self, manifest):
        url = statusURL(manifest)
        if url is None:
            return defer.succeed(None)
        d = self._agent.request(b"GET", url.encode("ascii"),
                                Headers({b"User-Agent": [b"p2-agent health check"]}))
        d.addCallback(self._answered, url)
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(lambda f: HealthResult(CRITICAL, "GET %s: %s" % (
            url, "no answer within %gs" % (self.timeout,) if f.check(defer.TimeoutError)
            else f.getErrorMessage() or f.type.__name__)))
        return d

    def _answered(self, response, url):
        d = readBody(response)

        def done(body):
            text = body[:MAX_OUTPUT].decode("utf-8", "replace").strip()
            status = PASSING if 200 <= response.code < 300 else CRITICAL
            return HealthResult(status, "GET %s: %d %s" % (url, response.code, text))
        return d.addCallback(done)

    def close(self):
        return self._pool.closeCachedConnections()


class HealthMonitor(service.Service):
    """
    Checks this node's installed pods and publishes their health.

    @param installed: callable returning C{{pod_id: manifest bytes}} of the
        pods installed on this machine.
    @param session: callable returning the agent's live L{ISession}, or
        C{None} while it has none (nothing is written then).
    """

    def __init__(self, store, node, clock, checker, installed, session,
                 interval=INTERVAL, refresh=REFRESH):
        self.store = store
        self.node = node
        self.clock = clock
        self.checker = checker
        self.installed = installed
        self.session = session
        self.interval = interval
        self.refresh = refresh
        #: C{{pod_id: (session, status, output, sha, time written)}} of what we wrote.
        self.written = {}
        self._manifests = {}
        self._loop = None

    def startService(self):
        service.Service.startService(self)
        self._loop = task.LoopingCall(self.checkAll)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self):
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self.checker.close()

    def _manifest(self, podId, raw):
        cached = self._manifests.get(podId)
        if cached is None or cached[0] != raw:
            try:
                manifest = parseManifest(raw)
            except ManifestError:
                manifest = None
            cached = self._manifests[podId] = (raw, manifest)
        return cached[1]

    @defer.inlineCallbacks
    def checkAll(self):
        """
        Check every installed pod once, and publish what changed.

        @return: L{Deferred} firing when done; never failing.
        """
        try:
            installed = yield defer.maybeDeferred(self.installed)
            pods = {podId: self._manifest(podId, raw) for podId, raw in installed.items()}
            pods = {podId: m for podId, m in pods.items() if m is not None}
            order = sorted(pods)
            results = yield defer.gatherResults([self.checker.check(pods[p]) for p in order])
            checked = set()
            for podId, result in zip(order, results):
                if result is not None:
                    checked.add(podId)
                    yield self._publish(podId, pods[podId].sha(), result)
            for podId in sorted(set(self.written) - checked):
                yield self._unpublish(podId)
            for podId in set(self._manifests) - set(pods):
                del self._manifests[podId]
        except Exception:
            log.failure("health checks failed", node=self.node)

    @defer.inlineCallbacks
    def _publish(self, podId, sha, result):
        session = self.session()
        if session is None:
            return
        now = self.clock.seconds()
        last = self.written.get(podId)
        if (last is not None and last[0] is session and last[1:4] == (result.status,
                                                                      result.output, sha)
                and now - last[4] < self.refresh):
            return
        key = keys.health(podId, self.node)
        value = json.dumps({"status": result.status, "output": result.output, "sha": sha,
                            "time": now}, sort_keys=True).encode("utf-8")
        try:
            if last is not None and last[0] is session:
                yield self.store.put(key, value)
            else:
                yield session.createEphemeral(key, value)
        except KeyExists:
            # Still held by an earlier session of ours: it goes with that session.
            return
        except StoreError as e:
            log.warn("cannot publish the health of {pod}: {error}", pod=podId, error=str(e))
            return
        if last is None or last[1] != result.status:
            log.info("pod {pod} is {status}: {output}", pod=podId, status=result.status,
                     output=result.output, event="health")
        self.written[podId] = (session, result.status, result.output, sha, now)

    @defer.inlineCallbacks
    def _unpublish(self, podId):
        try:
            yield self.store.delete(keys.health(podId, self.node))
        except StoreError as e:
            log.warn("cannot delete the health of {pod}: {error}", pod=podId, error=str(e))
            return
        del self.written[podId]
