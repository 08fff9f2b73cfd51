"""
Health for every pod: a pod without a status check is passing once all its
services have stayed up for C{MIN_UPTIME} seconds, critical while any is
down or restarting.  The rule (L{uptimeHealth}) table-driven; the monitor
with a fake clock and a supervisor stub; then a real agent under runit.
"""

import json
import os
import signal

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from p2twisted import intent
from p2twisted.agent.health import (
    MIN_UPTIME, HealthMonitor, PodHealthChecker, ServiceUptimeChecker, uptimeHealth)
from p2twisted.agent.interfaces import (
    HealthResult, IHealthChecker, ISupervisor, ServiceStatus)
from p2twisted.agent.supervisors import CRASH_LOOP_EXITS
from p2twisted.agent.supervisors import MIN_UPTIME as SUPERVISOR_MIN_UPTIME
from p2twisted.manifest import parseManifest
from p2twisted.store import keys, openStore
from p2twisted.store.memory import MemoryState, MemoryStore
from tests.agentharness import AgentHarness
from tests.artifacts import simpleHoist
from tests.reachable import reachableDirectory
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit
from tests.test_agent_health import FakeChecker

NODE = "n1"
START = 1700000000.0


def manifest(podId="web", launchables=("web",), policy="always", status=False):
    text = "id: %s\nrun_as: nobody\nlaunchables:\n" % (podId,)
    for launchable in launchables:
        text += ("  %s:\n    launchable_type: hoist\n    location: /a/%s_1.tar.gz\n"
                 "    restart_policy: %s\n" % (launchable, launchable, policy))
    if status:
        text += "status: {port: 8080, http: true}\n"
    return parseManifest(text.encode("ascii"))


def up(name, uptime):
    return name, ServiceStatus(name=name, running=True, pid=1, uptime=uptime)


def down(name, lastExit=None):
    return name, ServiceStatus(name=name, running=False, lastExit=lastExit)


class UptimeHealthTests(unittest.SynchronousTestCase):
    """
    L{uptimeHealth}: which services make a pod critical, and what it says.
    """

    def test_table(self):
        web, api = "web__web__bin__launch", "web__api__bin__launch"
        two = manifest(launchables=("web", "api"))
        once = manifest(policy="never")
        cases = [
            (two, [up(web, MIN_UPTIME), up(api, 100)],
             ("passing", "2 services up for 5 s or more")),
            (manifest(), [up(web, 7)], ("passing", "1 service up for 5 s or more")),
            (two, [up(web, 100), up(api, MIN_UPTIME - 0.5)],
             ("critical", "%s up for less than 5 s" % (api,))),
            (two, [up(web, 100), down(api, "exit 3")],
             ("critical", "%s down (last run: exit 3)" % (api,))),
            (two, [down(web), (api, None)],
             ("critical", "%s down; %s down" % (web, api))),
            (manifest(), [up(web, None)], ("critical", "%s up for less than 5 s" % (web,))),
            (manifest(), [], ("critical", "no service of the pod is supervised")),
            # restart_policy: never -- running or exited 0 is fine.
            (once, [up(web, 0)], ("passing", "1 service up for 5 s or more")),
            (once, [down(web, "exit 0")], ("passing", "1 service up for 5 s or more")),
            (once, [down(web, "exit 1")], ("critical", "%s down (last run: exit 1)" % (web,))),
            (once, [down(web)], ("critical", "%s down" % (web,))),
        ]
        for podManifest, statuses, expected in cases:
            self.assertEqual(uptimeHealth(podManifest, statuses),
                             HealthResult(*expected), statuses)

    def test_crashLoopNeverPasses(self):
        """
        A service in a crash loop (the supervisor's: L{CRASH_LOOP_EXITS}
        runs in a row shorter than its L{supervisors.MIN_UPTIME}) is
        critical even while up longer than C{minUptime}, saying so, until it
        has been up long enough to end the loop.
        """
        web = "web__web__bin__launch"

        def looping(running, uptime):
            return web, ServiceStatus(name=web, running=running, pid=1 if running else None,
                                      uptime=uptime, quickExits=CRASH_LOOP_EXITS,
                                      lastExit="exit 1")
        expected = HealthResult("critical", "%s crash-looping (3 restarts, last exit 1)" % (web,))
        self.assertEqual(uptimeHealth(manifest(), [looping(True, MIN_UPTIME + 1)]), expected)
        self.assertEqual(uptimeHealth(manifest(), [looping(False, None)]), expected)
        self.assertEqual(uptimeHealth(manifest(), [looping(True, SUPERVISOR_MIN_UPTIME)]).status,
                         "passing")

    def test_minUptime(self):
        """
        The uptime required is a parameter.
        """
        statuses = [up("web__web__bin__launch", 2)]
        self.assertEqual(uptimeHealth(manifest(), statuses, minUptime=1).status, "passing")
        self.assertEqual(uptimeHealth(manifest(), statuses, minUptime=3).output,
                         "web__web__bin__launch up for less than 3 s")


@implementer(ISupervisor)
class ClockSupervisor(object):
    """
    Services that are up from when L{run} says until L{crash}, their uptime
    read on a clock.  Only what the uptime check reads is real.
    """

    name = "clock"

    def __init__(self, clock):
        self.clock = clock
        self.started = {}
        self.exits = {}
        self.broken = None

    def run(self, name):
        self.started[name] = self.clock.seconds()

    def crash(self, name, exit="exit 1"):
        self.started[name] = None
        self.exits[name] = exit

    def services(self):
        if self.broken is not None:
            return defer.fail(self.broken)
        return defer.succeed(sorted(self.started))

    def status(self, name):
        if name not in self.started:
            return defer.succeed(None)
        since = self.started[name]
        if since is None:
            return defer.succeed(ServiceStatus(name=name, running=False,
                                               lastExit=self.exits.get(name)))
        return defer.succeed(ServiceStatus(name=name, running=True, pid=1,
                                           uptime=self.clock.seconds() - since))

    def start(self, spec, restart=False):
        raise NotImplementedError()

    def prepare(self, spec):
        raise NotImplementedError()

    def unprepare(self, name):
        raise NotImplementedError()

    def stop(self, name, timeout):
        raise NotImplementedError()

    def remove(self, name, timeout):
        raise NotImplementedError()

    def close(self):
        return defer.succeed(None)


class UptimeMonitorTests(unittest.SynchronousTestCase):
    """
    L{HealthMonitor} with L{PodHealthChecker}: what a pod without a status
    check publishes as its services come up, crash and restart.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.store = MemoryStore(MemoryState(), clock=self.clock)
        self.addCleanup(self.store.close)
        self.session = self.successResultOf(self.store.session(10.0))
        self.supervisor = ClockSupervisor(self.clock)
        self.http = FakeChecker()
        self.checker = PodHealthChecker(self.http, ServiceUptimeChecker(self.supervisor))
        self.installed = {}
        self.monitor = HealthMonitor(self.store, NODE, self.clock, self.checker,
                                     lambda: dict(self.installed), lambda: self.session,
                                     interval=1.0, refresh=30.0)

    def start(self):
        self.monitor.startService()
        self.addCleanup(lambda: self.monitor.running and self.successResultOf(
            self.monitor.stopService()))

    def health(self, podId="worker"):
        entry = self.successResultOf(self.store.get(keys.health(podId, NODE)))
        return None if entry is None else json.loads(entry.value.decode("utf-8"))

    def install(self, podManifest, raw):
        self.installed[podManifest.id] = raw

    def workerManifest(self):
        raw = (b"id: worker\nrun_as: nobody\nlaunchables:\n  jobs:\n    launchable_type: hoist\n"
               b"    location: /a/jobs_1.tar.gz\n")
        return parseManifest(raw), raw

    def test_interfaces(self):
        self.assertTrue(verifyObject(IHealthChecker, self.checker))
        self.assertTrue(verifyObject(IHealthChecker, ServiceUptimeChecker(self.supervisor)))
        self.assertTrue(verifyObject(ISupervisor, self.supervisor))

    def test_upForMinUptime(self):
        """
        Critical until the service has been up L{MIN_UPTIME} seconds, then
        passing; published like any health (status, output, sha, time).
        """
        worker, raw = self.workerManifest()
        self.supervisor.run("worker__jobs__bin__launch")
        self.install(worker, raw)
        self.start()
        self.assertEqual(self.health()["status"], "critical")
        self.assertEqual(self.health()["output"],
                         "worker__jobs__bin__launch up for less than 5 s")
        self.clock.advance(MIN_UPTIME - 1)
        self.assertEqual(self.health()["status"], "critical")
        self.clock.advance(1)
        self.assertEqual(self.health(), {"status": "passing",
                                         "output": "1 service up for 5 s or more",
                                         "sha": worker.sha(), "time": START + MIN_UPTIME})

    def test_crashAndRestart(self):
        """
        A service that crashes makes the pod critical at the next check,
        with its last exit; restarted, it passes again only after
        L{MIN_UPTIME} seconds up.
        """
        worker, raw = self.workerManifest()
        name = "worker__jobs__bin__launch"
        self.supervisor.run(name)
        self.install(worker, raw)
        self.clock.advance(100)
        self.start()
        self.assertEqual(self.health()["status"], "passing")
        self.supervisor.crash(name, "killed by SIGKILL")
        self.clock.advance(1)
        self.assertEqual(self.health()["output"], name + " down (last run: killed by SIGKILL)")
        self.supervisor.run(name)
        for _ in range(int(MIN_UPTIME) - 1):
            self.clock.advance(1)
            self.assertEqual(self.health()["status"], "critical")
        self.clock.advance(1)
        self.assertEqual(self.health()["status"], "passing")

    def test_statusCheckStillHTTP(self):
        """
        A pod that declares a status check is checked by its endpoint, not
        by its services' uptime.
        """
        web = manifest(status=True)
        self.install(web, (b"id: web\nrun_as: nobody\nlaunchables:\n  web:\n"
                           b"    launchable_type: hoist\n    location: /a/web_1.tar.gz\n"
                           b"status: {port: 8080, http: true}\n"))
        self.http.results["web"] = HealthResult("passing", "GET /_status: HTTP 200 ok")
        self.start()
        self.assertEqual(self.health("web")["output"], "GET /_status: HTTP 200 ok")
        self.assertEqual(self.http.checked, ["web"])

    def test_supervisorFails(self):
        """
        A supervisor that cannot answer makes the pod critical, saying so
        in a line.
        """
        worker, raw = self.workerManifest()
        self.install(worker, raw)
        self.supervisor.broken = OSError("runsv is gone")
        self.start()
        self.assertEqual(self.health(), {
            "status": "critical", "output": "cannot read the supervisor: runsv is gone",
            "sha": worker.sha(), "time": START})


class UptimeUnderRunitTests(unittest.TestCase):
    """
    A real agent under runit: a pod without a status check gets a health
    that follows its process.
    """

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        requireRunit()
        self.artifacts = reachableDirectory(self, "p2-uptime-")
        self.url = "local://%s/state.db" % (os.path.abspath(self.mktemp()),)
        self.store = yield openStore(self.url)
        self.addCleanup(self.store.close)
        self.harness = AgentHarness(self, self.url).start()

    @defer.inlineCallbacks
    def deploy(self, podId, script):
        path = os.path.join(self.artifacts, "%s_1.tar.gz" % (podId,))
        simpleHoist(path, script=script)
        raw = (b"id: %s\nrun_as: nobody\nlaunchables:\n  work:\n    launchable_type: hoist\n"
               b"    location: %s\n" % (podId.encode(), path.encode()))
        yield intent.schedule(self.store, NODE, parseManifest(raw))

    def healthIs(self, podId, status):
        def check():
            d = self.store.get(keys.health(podId, NODE))
            d.addCallback(lambda e: e and json.loads(e.value.decode("utf-8")))
            return d.addCallback(lambda h: h if h and h["status"] == status else None)
        return waitFor(check, timeout=60, what="%s to be %s" % (podId, status))

    def servicePid(self, podId):
        return self.harness.servicePid(podId, "work")

    @defer.inlineCallbacks
    def test_followsTheProcess(self):
        """
        Passing once the pod has been up 5 s; critical once its process is
        killed (down, then up again for less than 5 s); passing again after.
        """
        yield self.deploy("worker", b"#!/bin/sh\nexec sleep 1000\n")
        health = yield self.healthIs("worker", "passing")
        self.assertEqual(health["output"], "1 service up for 5 s or more")
        os.kill(self.servicePid("worker"), signal.SIGKILL)
        health = yield self.healthIs("worker", "critical")
        self.assertIn("worker__work__bin__launch ", health["output"])
        yield self.healthIs("worker", "passing")

    @defer.inlineCallbacks
    def test_crashLoopNeverPasses(self):
        """
        A pod whose process exits at once is critical, with why, and does
        not pass while it keeps exiting.
        """
        yield self.deploy("crashy", b"#!/bin/sh\nexit 3\n")
        health = yield self.healthIs("crashy", "critical")
        self.assertIn("crashy__work__bin__launch ", health["output"])
        seen = []

        def watched():
            d = self.store.get(keys.health("crashy", NODE))
            d.addCallback(lambda e: seen.append(json.loads(e.value)["status"]) if e else None)
            return d.addCallback(lambda _: len(seen) >= 3 * int(MIN_UPTIME))
        # Looked at every 0.5 s for 7.5 s (longer than MIN_UPTIME): never passing.
        yield waitFor(watched, timeout=60, interval=0.5, what="crashy's health, 15 times")
        self.assertEqual(set(seen), {"critical"})
