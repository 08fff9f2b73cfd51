"""
Prometheus metrics: each process's own registry, the metered store, the
orchestrator's gauges over a snapshot, and -- scraped over real HTTP from
real C{twistd p2-agent} and C{twistd p2-orchestrator} processes and parsed
with prometheus_client's parser -- what a person watching a fleet sees.
"""

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from p2twisted.errors import StoreUnavailable, UsageError, VersionConflict
from p2twisted.metrics import AgentMetrics, OrchestratorMetrics
from p2twisted.orchestrate import gauges
from p2twisted.orchestrate.tap import orchestratorConfig
from p2twisted.store.interfaces import IStore
from p2twisted.store.memory import MemoryStore
from p2twisted.store.metered import MeteredStore
from tests import orchfleet
from tests.agentharness import freePort, httpGet
from tests.cli import P2CommandMixin
from tests.fleetprocesses import Fleet
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit


def samples(text):
    """
    @return: C{{(name, ((label, value), ...)): value}} of Prometheus text.
    """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found, name, **labels):
    """@return: the sample C{name{labels}} in C{found}, or C{None}."""
    return found.get((name, tuple(sorted(labels.items()))))


class RegistryTests(unittest.TestCase):

    def test_ownRegistry(self):
        """
        Each process's metrics have a registry of their own: two agents'
        metrics in one process count apart, and nothing reaches
        prometheus_client's global registry.
        """
        first, second = AgentMetrics(), AgentMetrics()
        first.installSeconds.labels("web").observe(0.2)
        self.assertEqual(value(samples(generate_latest(first.registry).decode()),
                               "p2_pod_install_seconds_count", pod="web"), 1.0)
        self.assertIsNone(value(samples(generate_latest(second.registry).decode()),
                                "p2_pod_install_seconds_count", pod="web"))
        OrchestratorMetrics()
        self.assertNotIn(b"p2_", generate_latest(REGISTRY))

    def test_podStates(self):
        """
        C{p2_pods} counts the pods by the state a callable reports, at
        scrape time.
        """
        metrics = AgentMetrics()
        states = {"web": "running", "db": "running", "batch": "failed"}
        metrics.watchPods(lambda: states)
        found = samples(generate_latest(metrics.registry).decode())
        self.assertEqual((value(found, "p2_pods", state="running"),
                          value(found, "p2_pods", state="failed"),
                          value(found, "p2_pod_state", pod="batch", state="failed")),
                         (2.0, 1.0, 1.0))
        states["batch"] = "running"
        found = samples(generate_latest(metrics.registry).decode())
        self.assertEqual((value(found, "p2_pods", state="running"),
                          value(found, "p2_pods", state="failed")), (3.0, None))


class _StatusOutage(MemoryStore):
    """A memory store whose writes of pod status records fail while C{down}."""

    down = False

    def get(self, key):
        if self.down and key.startswith("status/pods/"):
            return defer.fail(StoreUnavailable(key, "memory", "down"))
        return MemoryStore.get(self, key)


class PodStatesTests(unittest.TestCase):

    def test_statusWriteFails(self):
        """
        A pod whose status record cannot be written (the store is down)
        stays in C{p2_pods} with the state its record still says, rather
        than vanishing from the agent's metrics until the store is back.
        """
        import os

        from p2twisted.agent.config import AgentConfig
        from p2twisted.agent.service import AgentService
        from p2twisted.agent.testing import FakePods
        from p2twisted.store import keys
        from tests.test_agent_worker import V1, V2
        clock = task.Clock()
        store = _StatusOutage(clock=clock)
        config = AgentConfig(node="n1", store="memory://", podRoot="/nonexistent",
                             stateDir=os.path.abspath(self.mktemp()), resyncInterval=30.0,
                             sessionTTL=10.0)
        metrics = AgentMetrics()
        agent = AgentService(config, FakePods(), clock, store=store, metrics=metrics)
        agent.startService()
        self.addCleanup(agent.stopService)
        self.successResultOf(store.put(keys.intentNode("n1"), b'{"node": "n1"}'))
        self.successResultOf(store.put(keys.intent("n1", "web"), V1))
        found = samples(generate_latest(metrics.registry).decode())
        self.assertEqual(value(found, "p2_pod_state", pod="web", state="running"), 1.0)
        store.down = True
        self.successResultOf(store.put(keys.intent("n1", "web"), V2))
        self.assertEqual(self.successResultOf(store.get(keys.reality("n1", "web"))).value, V2)
        found = samples(generate_latest(metrics.registry).decode())
        self.assertEqual((value(found, "p2_pods", state="running"),
                          value(found, "p2_pod_state", pod="web", state="running")),
                         (1.0, 1.0))


    def test_podGoneForgotten(self):
        """
        A pod removed from the node leaves the agent's metrics: its
        per-pod series do not pile up while pod ids come and go.
        """
        import os

        from p2twisted.agent.config import AgentConfig
        from p2twisted.agent.service import AgentService
        from p2twisted.agent.testing import FakePods
        from p2twisted.store import keys
        from tests.test_agent_worker import V1
        clock = task.Clock()
        store = MemoryStore(clock=clock)
        config = AgentConfig(node="n1", store="memory://", podRoot="/nonexistent",
                             stateDir=os.path.abspath(self.mktemp()), resyncInterval=30.0,
                             sessionTTL=10.0, removalGrace=10.0)
        metrics = AgentMetrics()
        agent = AgentService(config, FakePods(), clock, store=store, metrics=metrics)
        agent.startService()
        self.addCleanup(agent.stopService)
        self.successResultOf(store.put(keys.intentNode("n1"), b'{"node": "n1"}'))
        self.successResultOf(store.put(keys.intent("n1", "web"), V1))
        metrics.installSeconds.labels("web").observe(0.5)
        metrics.healthChecks.labels("web", "passing").inc()
        metrics.healthChecks.labels("db", "passing").inc()
        self.successResultOf(store.delete(keys.intent("n1", "web")))
        clock.advance(11)
        clock.advance(30)
        self.assertEqual(agent.podStates(), {})
        found = samples(generate_latest(metrics.registry).decode())
        self.assertEqual(sorted({(n, dict(labels).get("pod")) for n, labels in found
                                 if dict(labels).get("pod")}),
                         [("p2_health_checks_created", "db"), ("p2_health_checks_total", "db")])


class ScrapeThreadTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_gaugesComputedInTheReactor(self):
        """
        A scrape in a thread of the pool (as prometheus_client's Twisted
        resource runs it) has the gauges computed in the reactor's thread.
        """
        import threading

        from twisted.internet import threads
        metrics = AgentMetrics()
        seen = []

        def states():
            seen.append(threading.current_thread())
            return {"web": "running"}
        metrics.watchPods(states)
        text = yield threads.deferToThread(generate_latest, metrics.registry)
        self.assertEqual(value(samples(text.decode()), "p2_pods", state="running"), 1.0)
        self.assertEqual(seen, [threading.main_thread()])


class _Outage(MemoryStore):
    """A memory store whose reads fail while C{down}."""

    down = False

    def get(self, key):
        if self.down:
            return defer.fail(StoreUnavailable(key, "memory", "down"))
        return MemoryStore.get(self, key)


class MeteredStoreTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.wrapped = _Outage(clock=self.clock)
        self.metrics = AgentMetrics()
        self.store = MeteredStore(self.wrapped, self.metrics, self.clock)

    def found(self):
        return samples(generate_latest(self.metrics.registry).decode())

    def test_interface(self):
        verifyObject(IStore, self.store)
        self.assertEqual((self.store.backend, self.store.url), ("memory", "memory://"))

    def test_errorsAndReconnects(self):
        """
        A failing call counts as an error by operation and type (and still
        fails); the first success after the store was unavailable counts as
        a reconnect.
        """
        self.wrapped.down = True
        self.failureResultOf(self.store.get("a"), StoreUnavailable)
        self.failureResultOf(self.store.get("a"), StoreUnavailable)
        self.successResultOf(self.store.put("a", b"1"))
        self.failureResultOf(self.store.cas("a", b"2", "nope"), VersionConflict)
        self.wrapped.down = False
        self.successResultOf(self.store.get("a"))
        self.successResultOf(self.store.get("a"))
        found = self.found()
        self.assertEqual((value(found, "p2_store_errors_total", operation="get",
                                error="StoreUnavailable"),
                          value(found, "p2_store_errors_total", operation="cas",
                                error="VersionConflict"),
                          value(found, "p2_store_reconnects_total")), (2.0, 1.0, 1.0))

    def test_watchLag(self):
        """
        A write of this process under a watched prefix is timed until a
        watch delivers it (here a watch still busy with the previous
        delivery for a quarter of a second); writes elsewhere are not.
        """
        seen, busy = [], defer.Deferred()

        def changed(snapshot):
            seen.append(snapshot)
            return busy if len(seen) == 1 else None
        self.store.watch("intent", changed)
        self.successResultOf(self.store.put("status/x", b"1"))
        self.successResultOf(self.store.put("intent/n1", b"marker"))
        self.clock.advance(0.25)
        busy.callback(None)
        self.clock.advance(0)
        self.assertEqual(seen[-1]["intent/n1"].value, b"marker")
        found = self.found()
        self.assertEqual((value(found, "p2_watch_lag_seconds_count"),
                          value(found, "p2_watch_lag_seconds_sum")), (1.0, 0.25))


class GaugeTests(unittest.TestCase):

    def test_rcCountsAndRollProgress(self):
        """
        The RC gauges count desired, current and healthy pods as the RC's
        status does; a roll's progress counts the healthy pods of the RC it
        moves to, and from.
        """
        fleet = orchfleet.Fleet(self, {"n%d" % i: {"tier": "web"} for i in range(1, 4)})
        fleet.putRC("web", 1, replicas=3, selector="tier=web")
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(gauges.rcCounts(snapshot, ["web", "gone"]),
                         {"web": {"desired": 3, "current": 3, "healthy": 3}})
        self.assertEqual(gauges.rollProgress(snapshot, ["nothing"]), {})

    def test_unreadableRecordSkipped(self):
        """
        An RC or roll whose record is unreadable (a farm still holds its
        key) is left out of the gauges; the others are still shown, rather
        than every scrape's gauges failing on it.
        """
        from p2twisted.store import keys
        fleet = orchfleet.Fleet(self, {"n1": {"tier": "web"}})
        fleet.putRC("web", 1, replicas=1, selector="tier=web")
        fleet.run(fleet.store.put(keys.replicationController("bad"), b"{not json"))
        fleet.run(fleet.store.put(keys.roll("bad"), b"{not json"))
        fleet.converge()
        snapshot = fleet.snapshot()
        self.assertEqual(gauges.rcCounts(snapshot, ["bad", "web"]),
                         {"web": {"desired": 1, "current": 1, "healthy": 1}})
        self.assertEqual(gauges.rollProgress(snapshot, ["bad"]), {})


class ConfigTests(unittest.TestCase):

    def test_metricsListen(self):
        """
        Metrics are not served unless asked; a port binds loopback; an
        endpoint is taken as given; anything else is a one-line error.
        """
        def listen(setting):
            flags = {"store": "memory://", "metrics_listen": setting}
            return orchestratorConfig(None, flags, environ={}).metricsListen
        self.assertEqual((listen(None), listen("9120"), listen("tcp:9121:interface=0.0.0.0")),
                         (None, "tcp:9120:interface=127.0.0.1", "tcp:9121:interface=0.0.0.0"))
        for bad in ("soon", "0", "tcp:port"):
            e = self.assertRaises(UsageError, listen, bad)
            self.assertIn("orchestrator config metrics_listen", str(e))
            self.assertNotIn("\n", str(e))


class MetricsListenTests(unittest.TestCase):
    """
    An agent's C{metrics_listen}: where Prometheus on another host scrapes
    it.
    """

    timeout = 120

    def test_agentSetting(self):
        """
        As for the orchestrator: not served unless asked; a port binds
        loopback; an endpoint is taken as given; anything else is a
        one-line error naming the setting.
        """
        from p2twisted.agent.config import agentConfig

        def listen(setting):
            flags = {"store": "memory://", "metrics_listen": setting,
                     "state_dir": self.mktemp()}
            return agentConfig(None, flags, environ={}).metricsListen
        self.assertEqual((listen(None), listen("7476"), listen("tcp:7477:interface=0.0.0.0")),
                         (None, "tcp:7476:interface=127.0.0.1", "tcp:7477:interface=0.0.0.0"))
        for bad in ("soon", "0", "tcp:port", "nope:1"):
            e = self.assertRaises(UsageError, listen, bad)
            self.assertIn("agent config metrics_listen", str(e))
            self.assertNotIn("\n", str(e))

    def test_notLoopbackWarns(self):
        """
        Metrics served on every interface say so in a warning, and where:
        anyone who reaches that port reads them.  On loopback there is no
        warning.
        """
        from twisted.logger import LogLevel, globalLogPublisher

        from p2twisted.metrics import metricsService
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for listen in ("tcp:0:interface=0.0.0.0", "tcp:0:interface=127.0.0.2"):
            served = metricsService(listen, AgentMetrics(), reactor)
            served.startService()
            self.addCleanup(served.stopService)
        warned = [e["listen"] for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(warned, ["tcp:0:interface=0.0.0.0"])
        self.assertEqual(len([e for e in events if e.get("event") == "metrics"]), 2)

    @defer.inlineCallbacks
    def test_scrapeAgentOnAnotherAddress(self):
        """
        A real C{twistd p2-agent --metrics-listen tcp:0:interface=127.0.0.2}
        says where it serves its metrics, and a scrape there (not
        127.0.0.1: as from another host) parses with prometheus_client's
        parser; a loopback address gives no warning.
        """
        import os
        import re
        import signal
        import sys

        from tests.test_agent_process_e2e import ROOT, _Output
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        argv = [sys.executable, twistd, "-n", "--pidfile=", "--logfile=-", "p2-agent",
                "--store", "memory://", "--node", "n1", "--supervisor", "builtin",
                "--state-dir", os.path.abspath(self.mktemp()),
                "--metrics-listen", "tcp:0:interface=127.0.0.2"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
        env["PYTHONPATH"] = ROOT
        output = _Output()
        process = reactor.spawnProcess(output, argv[0], argv, env=env, path=ROOT)

        def stop():
            if not output.ended.called:
                process.signalProcess(signal.SIGTERM)
            return output.ended
        self.addCleanup(stop)
        pattern = re.compile(rb"serving Prometheus metrics at (http://127\.0\.0\.2:\d+/metrics)")
        yield waitFor(lambda: pattern.search(output.output) or output.ended.called,
                      timeout=60, interval=0.1, what="the agent serving metrics")
        found = pattern.search(output.output)
        self.assertIsNotNone(found, output.output.decode("utf-8", "replace"))
        result = yield httpGet(found.group(1).decode(), timeout=10)
        self.assertEqual(result[0], 200, result)
        families = {f.name for f in text_string_to_metric_families(result[1].decode())}
        self.assertTrue({"p2_pods", "p2_pod_install_seconds", "p2_store_reconnects"} <= families,
                        families)
        self.assertEqual(value(samples(result[1].decode()), "p2_store_reconnects_total"), 0.0)
        self.assertNotIn(b"not loopback only", output.output)


class ScrapedFleetTests(P2CommandMixin, unittest.TestCase):
    """
    Two real agents with a status port, an orchestrator serving metrics, a
    replication controller and a roll, on the embedded store.
    """

    timeout = 600

    @defer.inlineCallbacks
    def scrape(self, port):
        result = yield httpGet("http://127.0.0.1:%d/metrics" % (port,), timeout=10)
        self.assertIsNotNone(result, "nothing answers on port %d" % (port,))
        self.assertEqual(result[0], 200, result[1])
        return samples(result[1].decode())

    def until(self, port, predicate, what):
        """Scrape C{port} until C{predicate(samples)}; fire with them."""
        @defer.inlineCallbacks
        def check():
            result = yield httpGet("http://127.0.0.1:%d/metrics" % (port,), timeout=10)
            if result is None or result[0] != 200:
                return None
            found = samples(result[1].decode())
            return found if predicate(found) else None
        return waitFor(check, timeout=120, interval=0.5, what=what)

    @defer.inlineCallbacks
    def test_fleet(self):
        """
        Deployed by an RC, each agent's pod shows up as running with one
        install and one launch timed and passing health checks; the
        orchestrator shows the RC's 2 desired, current and healthy
        replicas.  A roll to version 2 (its second step held back by a long
        delay) shows its target and the healthy pods on each side, and the
        node it moved counts an upgrade and a second install.
        """
        requireRunit()
        from p2twisted.store import openStore
        store = yield openStore(self.url, reactor)
        self.addCleanup(store.close)
        fleet = Fleet(self, self.url, store, ("n1", "n2"))
        ports = {}
        for node in sorted(fleet.nodes):
            yield fleet.label(node, tier="web")
            ports[node] = freePort()
            fleet.startAgent(node, config="status_port: %d\n" % (ports[node],))
        yield fleet.waitAgents()
        orchestrator = freePort()
        fleet.startOrchestrator(config="metrics_listen: %d\n" % (orchestrator,))
        yield self.succeed("rc", "create", "--manifest", fleet.manifestFile("1"),
                           "--selector", "tier=web", "--replicas", "2", "--id", "web")
        yield fleet.waitFleet({"n1": "1", "n2": "1"})

        for node, port in sorted(ports.items()):
            found = yield self.until(port, lambda f: value(
                f, "p2_health_checks_total", pod="web", status="passing"),
                "%s's passing health checks" % (node,))
            self.assertEqual(
                (value(found, "p2_pods", state="running"),
                 value(found, "p2_pod_state", pod="web", state="running"),
                 value(found, "p2_pod_install_seconds_count", pod="web"),
                 value(found, "p2_pod_launch_seconds_count", pod="web"),
                 value(found, "p2_pod_upgrade_seconds_count", pod="web")),
                (1.0, 1.0, 1.0, 1.0, None), node)
            self.assertGreater(value(found, "p2_pod_install_seconds_sum", pod="web"), 0)

        found = yield self.until(orchestrator, lambda f: value(
            f, "p2_rc_replicas_healthy", rc="web") == 2, "the RC's 2 healthy replicas")
        self.assertEqual((value(found, "p2_rc_replicas_desired", rc="web"),
                          value(found, "p2_rc_replicas_current", rc="web")), (2.0, 2.0))

        yield self.succeed("roll", "start", "--from", "web", "--manifest",
                           fleet.manifestFile("2"), "--min-healthy", "1", "--delay", "600")
        found = yield self.until(orchestrator, lambda f: len([
            n for n in f if n[0] == "p2_roll_new_healthy_replicas" and f[n] == 1]) == 1,
            "the roll's first new replica healthy")
        (rollId,) = [dict(n[1])["roll"] for n in found if n[0] == "p2_roll_target_replicas"]
        self.assertEqual((value(found, "p2_roll_target_replicas", roll=rollId),
                          value(found, "p2_roll_old_healthy_replicas", roll=rollId),
                          value(found, "p2_roll_progress_ratio", roll=rollId)), (2.0, 1.0, 0.5))
        moved = yield fleet.serving()
        upgraded = [n for n, v in moved.items() if v == "2"]
        self.assertEqual(len(upgraded), 1, moved)
        found = yield self.until(ports[upgraded[0]], lambda f: value(
            f, "p2_pod_upgrade_seconds_count", pod="web") == 1, "the upgrade timed")
        self.assertEqual(value(found, "p2_pod_install_seconds_count", pod="web"), 2.0)
