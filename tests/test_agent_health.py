"""
Tests for L{p2twisted.agent.health}: L{HealthMonitor} on an in-memory store
with a fake clock and a fake checker; then L{HTTPHealthChecker} against real
HTTP and HTTPS servers started on 127.0.0.1 by the tests.
"""

import json
import os
import shutil
import subprocess
import sys

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.ssl import PrivateCertificate
from twisted.trial import unittest
from twisted.web import resource, server
from zope.interface import implementer
from zope.interface.verify import verifyObject

from p2twisted.agent.health import (
    OUTPUT_REFRESH, HealthMonitor, HTTPHealthChecker, statusURL)
from p2twisted.agent.interfaces import HealthResult, IHealthChecker
from p2twisted import listeners
from p2twisted.errors import StoreUnavailable, ValueTooLarge
from p2twisted.manifest import parseManifest
from p2twisted.store import keys
from p2twisted.store.common import MAX_VALUE
from p2twisted.store.memory import MemoryState, MemoryStore
from tests.agentharness import freePort
from tests.httpservers import TrackingFactory
from tests.p2hello import LOOPBACK, legacyTLSServer, listeningAddresses
from tests.store_contract import waitFor

NODE = "n1"

#: Where the fake clock starts: epoch seconds.
START = 1700000000.0

#: Seconds between checks, and after which an unchanged result is rewritten.
INTERVAL = 1.0
REFRESH = 30.0

#: The agent's session TTL in the monitor tests.
TTL = 10.0

#: Failing real-network tests must still finish.
TIMEOUT = 20


def manifestYAML(podId, port=None, http=True, path=None, version="1"):
    """
    @return: the bytes of a valid pod manifest; with C{port}, declaring a
        status check on it (C{http: false} means HTTPS).
    """
    text = ("id: %s\nrun_as: nobody\nlaunchables:\n  web:\n    launchable_type: hoist\n"
            "    location: https://artifacts.example.com/web_%s.tar.gz\n" % (podId, version))
    if port is not None:
        text += "status: {port: %d, http: %s%s}\n" % (
            port, "true" if http else "false", ", path: %s" % (path,) if path else "")
    return text.encode("ascii")


def sha(raw):
    return parseManifest(raw).sha()


@implementer(IHealthChecker)
class FakeChecker(object):
    """
    An L{IHealthChecker} answering from C{results} (pod id to
    L{HealthResult}; passing by default), recording the pods checked.

    @ivar error: when set, L{check} raises it (breaking its contract), for
        the tests of the monitor's resilience.
    """

    def __init__(self):
        self.results = {}
        self.checked = []
        self.error = None
        self.closed = False

    def check(self, manifest):
        self.checked.append(manifest.id)
        if self.error is not None:
            raise self.error
        if manifest.status.port is None:
            return defer.succeed(None)
        return defer.succeed(self.results.get(manifest.id, HealthResult("passing", "200 ok")))

    def close(self):
        self.closed = True
        return defer.succeed(None)


class HealthMonitorTests(unittest.SynchronousTestCase):
    """
    L{HealthMonitor}: what it publishes, when, and under which session.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.state = MemoryState()
        self.store = MemoryStore(self.state, clock=self.clock)
        self.addCleanup(self.store.close)
        self.other = MemoryStore(self.state, clock=self.clock)
        self.addCleanup(self.other.close)
        self.session = self.newSession()
        self.installed = {}
        self.installedCalls = 0
        self.checker = FakeChecker()
        self.monitor = HealthMonitor(self.store, NODE, self.clock, self.checker,
                                     self.getInstalled, self.liveSession,
                                     interval=INTERVAL, refresh=REFRESH)

    def newSession(self, store=None):
        return self.successResultOf((store or self.store).session(TTL))

    def liveSession(self):
        # Like the agent's Presence: no session while it is lost.
        if self.session is None or self.session.lost:
            return None
        return self.session

    def getInstalled(self):
        self.installedCalls += 1
        return dict(self.installed)

    def start(self, settled=None):
        if settled is not None:
            self.monitor.settled = settled
        self.monitor.startService()
        self.addCleanup(self.stop)

    def stop(self):
        if self.monitor.running:
            self.successResultOf(self.monitor.stopService())

    def tick(self, times=1):
        for _ in range(times):
            self.clock.advance(INTERVAL)

    def entry(self, podId):
        return self.successResultOf(self.store.get(keys.health(podId, NODE)))

    def health(self, podId):
        entry = self.entry(podId)
        return None if entry is None else json.loads(entry.value.decode("utf-8"))

    def allHealth(self):
        return self.successResultOf(self.store.list(keys.tree(keys.HEALTH)))

    def test_interface(self):
        """
        The fake checker provides L{IHealthChecker}, as the real one does
        (L{HTTPHealthCheckerTests.test_interface}).
        """
        self.assertTrue(verifyObject(IHealthChecker, FakeChecker()))

    def test_checkSoon(self):
        """
        A pod deployed between two ticks (the agent calls L{checkSoon} once
        its worker is done) has its health published at once, not at the
        next tick; asked while a check is under way, the monitor checks
        once more after it.
        """
        self.start()
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.monitor.checkSoon()
        self.clock.advance(0)
        self.assertEqual(self.health("web")["status"], "passing")
        held = defer.Deferred()
        self.checker.results["web"] = HealthResult("critical", "500")
        self.checker.check = lambda manifest: held
        self.monitor.checkSoon()
        self.clock.advance(0)
        self.monitor.checkSoon()
        self.clock.advance(0)
        self.checker.check = lambda manifest: defer.succeed(HealthResult("warning", "slow"))
        held.callback(HealthResult("critical", "500"))
        self.assertEqual(self.health("web")["status"], "warning")
        self.stop()
        self.monitor.checkSoon()
        self.clock.advance(0)

    def test_firstCheckPublishes(self):
        """
        At start the monitor checks each installed pod declaring a check and
        publishes its health at C{health/<pod>/<node>}: the status, the
        output, the SHA of the manifest checked and the time; as an
        ephemeral key of the agent's session.
        """
        raw = manifestYAML("web", port=8080)
        self.installed = {"web": raw}
        self.start()
        self.assertEqual(self.health("web"), {"status": "passing", "output": "200 ok",
                                              "sha": sha(raw), "time": START})
        self.assertEqual(self.entry("web").owner, self.session.id)
        self.assertEqual(self.checker.checked, ["web"])
        self.assertEqual(list(self.allHealth()), [keys.health("web", NODE)])

    def test_otherPodsManifestNotChecked(self):
        """
        A pod directory holding another pod's manifest (garb3 with C{id:
        web}) is not checked, and nothing is published for either pod.
        """
        self.installed = {"garb3": manifestYAML("web", port=8080)}
        self.start()
        self.assertEqual(self.checker.checked, [])
        self.assertEqual(list(self.allHealth()), [])

    def test_checkedEveryInterval(self):
        """
        The pods are checked again every C{interval} seconds.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        self.tick(3)
        self.assertEqual(self.checker.checked, ["web"] * 4)

    def test_unchangedRewrittenOnlyAfterRefresh(self):
        """
        An unchanged result is not written again (the entry keeps its
        version) until C{refresh} seconds have passed; then it is, with the
        new time.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        first = self.entry("web")
        self.tick(int(REFRESH / INTERVAL) - 1)
        self.assertEqual(self.entry("web").version, first.version)
        self.assertEqual(self.health("web")["time"], START)
        self.tick()
        self.assertNotEqual(self.entry("web").version, first.version)
        self.assertEqual(self.health("web")["time"], START + REFRESH)
        self.assertEqual(self.entry("web").owner, self.session.id)

    def test_statusChangeWrittenAtOnce(self):
        """
        A change from passing to critical (and back) is written at the next
        check, within the refresh period.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        self.checker.results["web"] = HealthResult("critical", "503 down")
        self.tick()
        health = self.health("web")
        self.assertEqual((health["status"], health["output"], health["time"]),
                         ("critical", "503 down", START + INTERVAL))
        del self.checker.results["web"]
        self.tick()
        self.assertEqual(self.health("web")["status"], "passing")
        self.assertEqual(self.entry("web").owner, self.session.id)

    def test_outputChangeWaitsForRefresh(self):
        """
        A new output with the same status (a page showing a time or a
        counter) is written only once the last write is C{OUTPUT_REFRESH}
        seconds old.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        version = self.entry("web").version
        self.checker.results["web"] = HealthResult("passing", "200 still ok")
        self.tick()
        self.assertEqual((self.entry("web").version, self.health("web")["output"]),
                         (version, "200 ok"))
        self.clock.advance(OUTPUT_REFRESH - 2 * INTERVAL)
        self.assertEqual(self.entry("web").version, version)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.health("web")["output"], "200 still ok")

    def test_newManifestWrittenAtOnce(self):
        """
        When the installed manifest changes, the health is written at once
        with the new SHA, even though the result is the same.
        """
        old, new = manifestYAML("web", port=8080), manifestYAML("web", port=8080, version="2")
        self.assertNotEqual(sha(old), sha(new))
        self.installed = {"web": old}
        self.start()
        self.installed = {"web": new}
        self.tick()
        self.assertEqual(self.health("web")["sha"], sha(new))
        self.assertEqual(self.health("web")["time"], START + INTERVAL)

    def test_closedSessionTakesTheKey(self):
        """
        The key is ephemeral: it goes with the session that wrote it; with a
        new session, the monitor creates it again at the next check.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        self.assertIsNot(self.entry("web"), None)
        self.successResultOf(self.session.close())
        self.assertIs(self.entry("web"), None)
        self.tick(2)
        self.assertIs(self.entry("web"), None)
        self.session = self.newSession()
        self.tick()
        self.assertEqual(self.entry("web").owner, self.session.id)
        self.assertEqual(self.health("web")["time"], START + 3 * INTERVAL)

    def test_expiredSessionTakesTheKey(self):
        """
        When the agent's process dies its session expires and the health of
        its pods disappears rather than staying passing.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.session = self.newSession(self.other)
        self.start()
        self.assertEqual(self.entry("web").owner, self.session.id)
        self.other.crash()
        self.clock.advance(TTL)
        self.assertTrue(self.session.lost)
        self.assertIs(self.entry("web"), None)
        self.session = self.newSession()
        self.tick()
        self.assertEqual(self.entry("web").owner, self.session.id)

    def test_keyStillHeldByEarlierSession(self):
        """
        A key still held by an earlier session of ours is replaced by one of
        the new session at once (the agent is its only writer), so it shows
        the current health and does not vanish with the earlier session.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        earlier, self.session = self.session, self.newSession()
        self.checker.results["web"] = HealthResult("critical", "503 down")
        self.tick()
        self.assertEqual(self.entry("web").owner, self.session.id)
        self.assertEqual(self.health("web")["status"], "critical")
        self.successResultOf(earlier.close())
        self.assertEqual(self.entry("web").owner, self.session.id)

    def test_lostReplyDoesNotFreeze(self):
        """
        A write that reached the store but whose reply was lost (the store
        failed the call) does not freeze the health: the next change is
        written all the same.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        cas = self.store.cas

        def lostReply(key, value, version):
            d = cas(key, value, version)
            return d.addCallback(lambda _: defer.fail(StoreUnavailable(key, "memory",
                                                                       "reply lost")))
        self.patch(self.store, "cas", lostReply)
        self.checker.results["web"] = HealthResult("critical", "503 down")
        self.tick()
        self.assertEqual(self.health("web")["status"], "critical")
        self.patch(self.store, "cas", cas)
        del self.checker.results["web"]
        self.tick()
        self.assertEqual(self.health("web")["status"], "passing")
        self.assertEqual(self.entry("web").owner, self.session.id)

    def test_busyPodLeftAsItWas(self):
        """
        While C{settled} says a pod is being deployed, it is not checked and
        its last health stays (it is not deleted).
        """
        busy = set()
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start(settled=lambda podId: podId not in busy)
        busy.add("web")
        self.checker.results["web"] = HealthResult("critical", "503 down")
        self.tick()
        self.assertEqual(self.health("web")["status"], "passing")
        busy.clear()
        self.tick()
        self.assertEqual(self.health("web")["status"], "critical")

    def test_noSessionWritesNothing(self):
        """
        While C{session()} returns C{None} nothing is written; once there is
        a session the health is published.
        """
        self.session = None
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        self.tick(3)
        self.assertEqual(self.checker.checked, ["web"] * 4)
        self.assertEqual(self.allHealth(), {})
        self.session = self.newSession()
        self.tick()
        self.assertEqual(self.entry("web").owner, self.session.id)

    def test_externallyDeletedKeyRecreatedEphemeral(self):
        """
        When the key disappears under a live session (deleted by someone
        else), the monitor writes it again as an ephemeral key of its
        session, never as a persistent key that would outlive the agent.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        self.successResultOf(self.other.delete(keys.health("web", NODE)))
        self.checker.results["web"] = HealthResult("critical", "503 down")
        self.tick()
        self.assertEqual(self.health("web")["status"], "critical")
        self.assertEqual(self.entry("web").owner, self.session.id)
        self.successResultOf(self.session.close())
        self.assertIs(self.entry("web"), None)

    def test_externallyDeletedKeyRecreatedAtRefresh(self):
        """
        An unchanged result deleted by someone else is written again at the
        refresh, still ephemeral.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        self.successResultOf(self.other.delete(keys.health("web", NODE)))
        self.tick(int(REFRESH / INTERVAL))
        self.assertEqual(self.health("web")["time"], START + REFRESH)
        self.assertEqual(self.entry("web").owner, self.session.id)

    def test_removedPodKeyDeleted(self):
        """
        The health of a pod no longer installed is deleted; other pods keep
        theirs.
        """
        self.installed = {"web": manifestYAML("web", port=8080),
                          "api": manifestYAML("api", port=8081)}
        self.start()
        self.assertEqual(sorted(self.allHealth()),
                         [keys.health("api", NODE), keys.health("web", NODE)])
        del self.installed["web"]
        self.tick()
        self.assertEqual(list(self.allHealth()), [keys.health("api", NODE)])

    def test_noCheckNoKey(self):
        """
        A pod whose manifest declares no status check gets no health key.
        """
        self.installed = {"batch": manifestYAML("batch")}
        self.start()
        self.tick()
        self.assertEqual(self.checker.checked, ["batch", "batch"])
        self.assertEqual(self.allHealth(), {})

    def test_droppedCheckKeyDeleted(self):
        """
        When a pod's new manifest no longer declares a check, the health
        written earlier is deleted.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        self.assertIsNot(self.entry("web"), None)
        self.installed = {"web": manifestYAML("web")}
        self.tick()
        self.assertIs(self.entry("web"), None)

    def test_invalidManifestSkipped(self):
        """
        An installed pod whose manifest cannot be parsed is not checked, and
        the other pods are.
        """
        self.installed = {"bad": b"id: bad\nlaunchables: [not, a, map\n",
                          "web": manifestYAML("web", port=8080)}
        self.start()
        self.tick()
        self.assertEqual(self.checker.checked, ["web", "web"])
        self.assertEqual(list(self.allHealth()), [keys.health("web", NODE)])

    def test_checkerRaises(self):
        """
        A checker that raises (despite its interface) makes the pod
        critical, saying so, without losing the round or the loop: the next
        one publishes what the check says.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.checker.error = RuntimeError("checker broke")
        self.start()
        self.assertEqual((self.health("web")["status"], self.health("web")["output"]),
                         ("critical", "the health check failed: checker broke"))
        self.checker.error = None
        self.tick()
        self.assertEqual(self.health("web")["status"], "passing")

    def test_installedFails(self):
        """
        A failure listing the installed pods (raised, or a failed Deferred)
        is logged and the next round still runs.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        failures = [lambda: defer.fail(OSError("pod root unreadable")),
                    lambda: 1 / 0]

        def installed():
            if failures:
                return failures.pop(0)()
            return self.getInstalled()
        self.monitor.installed = installed
        self.start()
        self.tick()
        self.assertEqual(self.allHealth(), {})
        self.assertEqual(len(self.flushLoggedErrors(OSError, ZeroDivisionError)), 2)
        self.tick()
        self.assertEqual(self.health("web")["status"], "passing")

    def test_storeErrorSkipsOnlyThatPod(self):
        """
        A health the store refuses (here, too large) is not published and
        the other pods' still are; the refused one is retried next time.
        """
        self.installed = {"big": manifestYAML("big", port=8080),
                          "web": manifestYAML("web", port=8081)}
        self.checker.results["big"] = HealthResult("critical", "x" * MAX_VALUE)
        self.start()
        self.assertEqual(list(self.allHealth()), [keys.health("web", NODE)])
        self.assertEqual(self.monitor.written.keys(), {"web"})
        self.assertEqual(self.flushLoggedErrors(ValueTooLarge), [])
        self.checker.results["big"] = HealthResult("critical", "503 down")
        self.tick()
        self.assertEqual(self.health("big")["status"], "critical")

    def test_stopService(self):
        """
        Stopping the monitor stops the checks and closes the checker.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        self.stop()
        self.assertTrue(self.checker.closed)
        calls = self.installedCalls
        self.tick(3)
        self.assertEqual((self.installedCalls, self.checker.checked), (calls, ["web"]))

    def test_stopDuringCheckSoon(self):
        """
        Stopping the monitor while a check asked by L{checkSoon} (not by a
        tick) is under way waits for it before closing the checker, and
        starts no check after it, even one asked for meanwhile.
        """
        self.installed = {"web": manifestYAML("web", port=8080)}
        self.start()
        held = defer.Deferred()
        self.checker.check = lambda manifest: held
        self.monitor.checkSoon()
        self.clock.advance(0)
        self.monitor.checkSoon()
        self.clock.advance(0)
        stopped = self.monitor.stopService()
        self.assertNoResult(stopped)
        self.assertFalse(self.checker.closed)
        checked = []
        self.checker.check = lambda manifest: checked.append(manifest.id) or held
        held.callback(HealthResult("critical", "500"))
        self.successResultOf(stopped)
        self.assertTrue(self.checker.closed)
        self.assertEqual(checked, [])


# -- the real checker against real servers --------------------------------


class Status(resource.Resource):
    """
    Answers C{code} and C{body} at C{path}, 404 elsewhere; records the
    paths asked for.
    """

    isLeaf = True

    def __init__(self, code=200, body=b"ok\n", path=b"/_status"):
        resource.Resource.__init__(self)
        self.code = code
        self.body = body
        self.path = path
        self.requests = []

    def render_GET(self, request):
        self.requests.append((request.path, request.getHeader(b"user-agent")))
        if request.path != self.path:
            request.setResponseCode(404)
            return b"no such page"
        request.setResponseCode(self.code)
        return self.body


class HangingBody(resource.Resource):
    """
    Sends the headers and part of the body, then nothing more.
    """

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-length", b"1000")
        request.write(b"x" * 100)
        return server.NOT_DONE_YET


class HTTPHealthCheckerTests(unittest.TestCase):
    """
    L{HTTPHealthChecker} against real servers on 127.0.0.1.
    """

    timeout = TIMEOUT

    def checker(self, timeout=5.0):
        # These servers are this test process, standing for the pod: no
        # check of who listens (see ListenerTests for that).
        checker = HTTPHealthChecker(reactor, timeout=timeout, listener=lambda port, pod: None)
        self.addCleanup(checker.close)
        return checker

    def listen(self, factory, tls=None):
        """
        Serve C{factory} on a free port of 127.0.0.1 (with TLS options
        C{tls}) until the test ends, and wait at cleanup for its connections
        to close.

        @return: C{(port number, tracking factory)}.
        """
        tracking = TrackingFactory(factory)
        if tls is None:
            port = reactor.listenTCP(0, tracking, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, tracking, tls, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(tracking.closeAll)
        return port.getHost().port, tracking

    def serve(self, root, tls=None):
        return self.listen(server.Site(root), tls)

    def manifest(self, port, http=True, path=None):
        return parseManifest(manifestYAML("web", port=port, http=http, path=path))

    def test_interface(self):
        """
        L{HTTPHealthChecker} provides L{IHealthChecker}.
        """
        self.assertTrue(verifyObject(IHealthChecker, self.checker()))

    def test_statusURL(self):
        """
        L{statusURL} is C{http} or (for C{http: false}) C{https} on
        127.0.0.1 at the status port and path; C{None} without a port.
        """
        self.assertEqual(statusURL(self.manifest(8080)), "http://127.0.0.1:8080/_status")
        self.assertEqual(statusURL(self.manifest(8443, http=False, path="/healthz")),
                         "https://127.0.0.1:8443/healthz")
        self.assertIs(statusURL(parseManifest(manifestYAML("web"))), None)
        self.assertEqual(statusURL(self.manifest(8080), "127.0.0.2"),
                         "http://127.0.0.2:8080/_status")

    def test_noCheck(self):
        """
        A manifest without a status port gives C{None}.
        """
        d = self.checker().check(parseManifest(manifestYAML("web")))
        self.assertIs(self.successResultOf(d), None)

    @defer.inlineCallbacks
    def test_passing(self):
        """
        A 200 answer is passing; the output has the URL, the code and the
        body; the request says it is the agent's health check.
        """
        status = Status()
        port, tracking = self.serve(status)
        result = yield self.checker().check(self.manifest(port))
        url = "http://127.0.0.1:%d/_status" % (port,)
        self.assertEqual(result, HealthResult("passing", "GET %s: HTTP 200 ok" % (url,)))
        self.assertEqual(status.requests, [(b"/_status", b"p2-agent health check")])
        yield tracking.whenEmpty()

    @defer.inlineCallbacks
    def test_podAddress(self):
        """
        A checker given the node's pod address checks there: of two servers
        on one port, the one on 127.0.0.1 (another node's pod) is not asked.
        """
        other = Status(503, b"another node's pod")
        mine = Status()
        port, _ = self.serve(other)
        tracking = TrackingFactory(server.Site(mine))
        listening = reactor.listenTCP(port, tracking, interface="127.0.0.2")
        self.addCleanup(listening.stopListening)
        self.addCleanup(tracking.closeAll)
        checker = HTTPHealthChecker(reactor, timeout=5.0, listener=lambda port, pod: None,
                                    address="127.0.0.2")
        self.addCleanup(checker.close)
        result = yield checker.check(self.manifest(port))
        self.assertEqual(result.status, "passing")
        self.assertEqual((len(mine.requests), other.requests), (1, []))
        yield tracking.whenEmpty()

    @defer.inlineCallbacks
    def test_critical(self):
        """
        A 503 answer is critical, with the code and the body in the output.
        """
        port, tracking = self.serve(Status(503, b"database down"))
        result = yield self.checker().check(self.manifest(port))
        self.assertEqual(result.status, "critical")
        self.assertEqual(result.output,
                         "GET http://127.0.0.1:%d/_status: HTTP 503 database down" % (port,))
        yield tracking.whenEmpty()

    @defer.inlineCallbacks
    def test_longBodyTruncated(self):
        """
        Only the beginning of a long status page is kept as output.
        """
        port, tracking = self.serve(Status(200, b"y" * 100000))
        result = yield self.checker().check(self.manifest(port))
        self.assertEqual(result.status, "passing")
        self.assertLess(len(result.output), 1000)
        yield tracking.whenEmpty()

    @defer.inlineCallbacks
    def test_outputIsOneLine(self):
        """
        A status page of many lines of HTML is kept as one line of its
        text: C{p2 deploy --wait} and C{p2 status} show it on one line.
        """
        page = (b"<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n"
                b"        <meta charset=\"utf-8\">\n        <title>Error response</title>\n"
                b"    </head>\n    <body>\n        <h1>Error response</h1>\n"
                b"        <p>Error code: 404</p>\n        <p>Message: File not found.</p>\n"
                b"    </body>\n</html>\n" + b"x" * 400)
        port, tracking = self.serve(Status(404, page))
        result = yield self.checker().check(self.manifest(port))
        self.assertEqual(result.status, "critical")
        self.assertNotIn("\n", result.output)
        self.assertNotIn("<", result.output)
        self.assertIn(": HTTP 404 Error response Error response Error code: 404", result.output)
        self.assertLessEqual(len(result.output), 260)
        self.assertTrue(result.output.endswith("..."))
        yield tracking.whenEmpty()

    @defer.inlineCallbacks
    def test_customPath(self):
        """
        The manifest's status path is the one asked for.
        """
        status = Status(path=b"/healthz")
        port, tracking = self.serve(status)
        checker = self.checker()
        result = yield checker.check(self.manifest(port, path="/healthz"))
        self.assertEqual(result.status, "passing")
        self.assertIn("/healthz: HTTP 200", result.output)
        result = yield checker.check(self.manifest(port))
        self.assertEqual(result.status, "critical")
        self.assertIn("/_status: HTTP 404", result.output)
        self.assertEqual([path for path, _ in status.requests], [b"/healthz", b"/_status"])

    @defer.inlineCallbacks
    def test_connectionRefused(self):
        """
        Nothing listening on the status port is critical.
        """
        port = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        number = port.getHost().port
        yield port.stopListening()
        result = yield self.checker().check(self.manifest(number))
        self.assertEqual(result.status, "critical")
        self.assertEqual(result.output,
                         "GET http://127.0.0.1:%d/_status: connection refused" % (number,))

    @defer.inlineCallbacks
    def test_noAnswer(self):
        """
        A server that accepts the connection but never answers is critical
        once the timeout passes, and the connection is closed.
        """
        port, tracking = self.listen(protocol.Factory.forProtocol(protocol.Protocol))
        result = yield self.checker(timeout=0.5).check(self.manifest(port))
        self.assertEqual(result, HealthResult(
            "critical", "GET http://127.0.0.1:%d/_status: timeout after 0.5 s" % (port,)))
        self.assertEqual(tracking.connections, 1)
        yield tracking.whenEmpty()

    @defer.inlineCallbacks
    def test_bodyNeverEnds(self):
        """
        A status page whose body never ends is critical once the timeout
        passes.
        """
        port, tracking = self.serve(HangingBody())
        result = yield self.checker(timeout=0.5).check(self.manifest(port))
        self.assertEqual(result.status, "critical")
        self.assertIn(": timeout after 0.5 s", result.output)
        yield tracking.whenEmpty()

    def certificate(self):
        """
        @return: TLS server options with a fresh self-signed certificate
            for C{localhost}, made by C{openssl}.
        """
        openssl = shutil.which("openssl")
        if openssl is None:
            raise unittest.SkipTest("the openssl command is needed to make a certificate")
        directory = self.mktemp()
        os.makedirs(directory)
        key, cert = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                       check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with open(cert, "rb") as c, open(key, "rb") as k:
            return PrivateCertificate.loadPEM(c.read() + k.read()).options()

    @defer.inlineCallbacks
    def test_https(self):
        """
        An C{http: false} check uses HTTPS, and passes although the pod's
        certificate is self-signed (there is no name to verify on
        127.0.0.1).
        """
        status = Status()
        port, tracking = self.serve(status, tls=self.certificate())
        result = yield self.checker().check(self.manifest(port, http=False))
        self.assertEqual(result, HealthResult(
            "passing", "GET https://127.0.0.1:%d/_status: HTTP 200 ok" % (port,)))
        self.assertEqual(len(status.requests), 1)
        yield tracking.whenEmpty()

    @defer.inlineCallbacks
    def test_httpsCritical(self):
        """
        Over HTTPS too, a 503 answer is critical.
        """
        port, tracking = self.serve(Status(503, b"down"), tls=self.certificate())
        result = yield self.checker().check(self.manifest(port, http=False))
        self.assertEqual(result.status, "critical")
        self.assertIn("https://127.0.0.1:%d/_status: HTTP 503 down" % (port,), result.output)
        yield tracking.whenEmpty()

    @defer.inlineCallbacks
    def test_httpsBodyNeverEnds(self):
        """
        Over HTTPS too, a status page whose body never ends is critical once
        the timeout passes, and the connection is closed.
        """
        port, tracking = self.serve(HangingBody(), tls=self.certificate())
        result = yield self.checker(timeout=0.5).check(self.manifest(port, http=False))
        self.assertEqual(result.status, "critical")
        self.assertIn(": timeout after 0.5 s", result.output)
        yield tracking.whenEmpty()

    @defer.inlineCallbacks
    def test_httpFalseSpeaksTLS(self):
        """
        An C{http: false} check speaks TLS: a plain HTTP status endpoint is
        not reached (critical) and sees no HTTP request.
        """
        status = Status()
        port, tracking = self.serve(status)
        result = yield self.checker(timeout=2.0).check(self.manifest(port, http=False))
        self.assertEqual(result.status, "critical")
        self.assertTrue(result.output.startswith("GET https://127.0.0.1:%d/_status: " % (port,)),
                        result.output)
        self.assertEqual(status.requests, [])

    @defer.inlineCallbacks
    def test_tlsHandshakeFailedPlainLine(self):
        """
        A failed TLS handshake (here, a server answering in plain HTTP) is
        one plain line with OpenSSL's reason, not a Python repr.
        """
        class PlainHTTP(protocol.Protocol):
            def connectionMade(self):
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                self.transport.loseConnection()
        port, tracking = self.listen(protocol.Factory.forProtocol(PlainHTTP))
        result = yield self.checker().check(self.manifest(port, http=False))
        self.assertEqual(result.status, "critical")
        prefix = "GET https://127.0.0.1:%d/_status: TLS handshake failed: " % (port,)
        self.assertTrue(result.output.startswith(prefix), result.output)
        reason = result.output[len(prefix):]
        self.assertTrue(reason and reason[0].isalpha(), result.output)
        for repr_ in ("Failure", "[", "(", "'"):
            self.assertNotIn(repr_, result.output)
        yield tracking.whenEmpty()

    @defer.inlineCallbacks
    def test_legacyTLSServer(self):
        """
        A server without secure renegotiation (TLS 1.2 without the RFC 5746
        extension, as P2's Go 1.4 C{hoisted-hello}; here GnuTLS's
        C{gnutls-serv}, which OpenSSL 3 refuses by default) passes, as it
        does with curl.
        """
        port, stop = yield legacyTLSServer(self)
        self.assertIn("0100007F", listeningAddresses(port))
        self.assertLessEqual(listeningAddresses(port), LOOPBACK)
        result = yield self.checker().check(self.manifest(port, http=False))
        self.assertEqual(result.status, "passing", result.output)
        self.assertTrue(result.output.startswith(
            "GET https://127.0.0.1:%d/_status: HTTP 200 " % (port,)), result.output)
        yield stop()


class MonitorWithRealCheckerTests(unittest.TestCase):
    """
    L{HealthMonitor} with L{HTTPHealthChecker}, a real status endpoint and
    the reactor's clock.
    """

    timeout = TIMEOUT

    @defer.inlineCallbacks
    def test_publishesWhatTheEndpointSays(self):
        """
        The health follows the pod's status endpoint: passing while it
        answers 200, critical once it answers 503.
        """
        status = Status()
        tracking = TrackingFactory(server.Site(status))
        port = reactor.listenTCP(0, tracking, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(tracking.closeAll)
        store = MemoryStore(clock=reactor)
        self.addCleanup(store.close)
        session = yield store.session(TTL)
        raw = manifestYAML("web", port=port.getHost().port)
        checker = HTTPHealthChecker(reactor, timeout=5.0, listener=lambda port, pod: None)
        monitor = HealthMonitor(store, NODE, reactor, checker,
                                lambda: {"web": raw}, lambda: session, interval=0.05)
        monitor.startService()
        self.addCleanup(monitor.stopService)

        def health():
            return store.get(keys.health("web", NODE)).addCallback(
                lambda entry: entry and json.loads(entry.value.decode("utf-8")))
        first = yield waitFor(health, what="the health of web")
        self.assertEqual((first["status"], first["sha"]), ("passing", sha(raw)))
        status.code = 503
        second = yield waitFor(lambda: health().addCallback(
            lambda h: h if h["status"] == "critical" else None), what="web to be critical")
        self.assertIn(": HTTP 503 ok", second["output"])


class ListenerTests(unittest.TestCase):
    """
    L{HTTPHealthChecker} with its real listener check: a status port held
    by another program than the pod (the pod could not bind it) is critical
    even when that program answers 200, and the output names it.
    """

    timeout = TIMEOUT

    def serveElsewhere(self, env):
        """
        Run C{python3 -m http.server} on a free port of 127.0.0.1 with the
        environment C{env} until the test ends.

        @return: L{Deferred} firing with C{(port, pid)} once it listens.
        """
        if listeners.listeningInodes(1) is None:
            raise unittest.SkipTest("no /proc/net/tcp here")
        port = freePort()
        process = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
            env=env, cwd=os.path.dirname(os.path.abspath(__file__)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop():
            process.terminate()
            process.wait()
        self.addCleanup(stop)
        d = waitFor(lambda: listeners.listeningInodes(port), what="http.server to listen")
        return d.addCallback(lambda _: (port, process.pid))

    def check(self, port):
        checker = HTTPHealthChecker(reactor, timeout=5.0)
        self.addCleanup(checker.close)
        return checker.check(parseManifest(manifestYAML("web", port=port, path="/")))

    @defer.inlineCallbacks
    def test_otherProgramOnTheStatusPort(self):
        """
        A program without the pod's C{POD_ID} answering 200 on the status
        port: critical, saying which process holds the port.
        """
        env = {k: v for k, v in os.environ.items() if k != "POD_ID"}
        port, pid = yield self.serveElsewhere(env)
        result = yield self.check(port)
        self.assertEqual(result.status, "critical")
        self.assertIn("port %d is held by pid %d (" % (port, pid), result.output)
        self.assertIn("not by a process of pod web", result.output)
        self.assertIn(": HTTP 200 ", result.output)

    @defer.inlineCallbacks
    def test_podOnItsStatusPort(self):
        """
        The pod's own process (C{POD_ID=web}, as p2-exec sets) answering 200
        is passing.
        """
        port, pid = yield self.serveElsewhere(dict(os.environ, POD_ID="web"))
        result = yield self.check(port)
        self.assertEqual(result.status, "passing", result.output)
