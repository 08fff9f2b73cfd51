# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics of an agent or an orchestrator.

Each process (each L{AgentService}, each L{Orchestrator}) has its own
L{CollectorRegistry}: nothing goes to prometheus_client's global registry, so
two services in one process (tests) never share or clash.  Counters and
histograms are updated where things happen; gauges of state (pods by state,
RC replicas, roll progress) are read from the live objects at each scrape.

Names follow Prometheus' conventions: C{p2_} prefix, base units
(C{_seconds}), C{_total} on counters (prometheus_client adds it).
"""

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

#: Buckets of install/launch/upgrade durations: a local artifact installs in
#: well under a second, a large one fetched over a slow link in minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

#: Buckets of watch lags: milliseconds normally, seconds on a loaded store.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


#: Seconds a scrape waits for the reactor to compute the gauges.
PATIENCE = 5.0


class _Gauges(object):
    """
    A collector of gauges computed at scrape time by C{compute()}, which
    returns C{[(name, help, labelNames, [(labelValues, value)])]}.  A scrape
    runs in a thread of the reactor's pool (prometheus_client's Twisted
    resource is a WSGI one): C{compute} runs in the reactor's thread.
    """

    def __init__(self, compute, described):
        self.compute = compute
        self.described = described

    def describe(self):
        return [GaugeMetricFamily(name, doc, labels=labels) for name, doc, labels in self.described]

    def collect(self):
        from twisted.python import threadable
        # What compute reads belongs to the reactor's thread: it runs there
        # (a scrape in the reactor's thread, or before the reactor runs,
        # computes at once).
        direct = threadable.ioThread is None or threadable.isInIOThread()
        computed = self.compute() if direct else _inReactor(self.compute)
        families = []
        for name, doc, labels, samples in computed:
            family = GaugeMetricFamily(name, doc, labels=labels)
            for values, value in samples:
                family.add_metric(list(values), value)
            families.append(family)
        return families


def _inReactor(f, patience=PATIENCE):
    """
    Call C{f} in the reactor's thread from a scrape's thread.

    @return: its result, or C{[]} when the reactor does not run it within
        C{patience} seconds (it is stopping, and joining this very thread:
        a scrape must not hang the shutdown).
    """
    import threading

    from twisted.internet import reactor
    done, result = threading.Event(), []

    def call():
        try:
            result.append(f())
        finally:
            done.set()
    reactor.callFromThread(call)
    if not done.wait(patience) or not result:
        return []
    return result[0]


class StoreMetrics(object):
    """
    What every process measures of its store (L{MeteredStore} updates them).

    @ivar registry: this process's L{CollectorRegistry}.
    """

    def __init__(self, registry=None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.storeErrors = Counter(
            "p2_store_errors", "Store operations that failed, by operation and error type",
            ["operation", "error"], registry=self.registry)
        self.storeReconnects = Counter(
            "p2_store_reconnects", "Times the store answered again after being unavailable",
            registry=self.registry)
        self.watchLag = Histogram(
            "p2_watch_lag_seconds", "Seconds from this process issuing a write to one of its "
            "watches delivering it", buckets=LAG_BUCKETS, registry=self.registry)

    def gauges(self, compute, described):
        """
        Register gauges computed at each scrape (see L{_Gauges}).

        @param described: C{[(name, help, labelNames)]} of what C{compute}
            returns.
        """
        self.registry.register(_Gauges(compute, described))


class AgentMetrics(StoreMetrics):
    """
    A machine agent's metrics.
    """

    def __init__(self, registry=None):
        StoreMetrics.__init__(self, registry)
        self.installSeconds = Histogram(
            "p2_pod_install_seconds", "Seconds to fetch, verify and extract a pod's artifacts",
            ["pod"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.launchSeconds = Histogram(
            "p2_pod_launch_seconds", "Seconds to activate a pod's installs and start its services",
            ["pod"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.upgradeSeconds = Histogram(
            "p2_pod_upgrade_seconds", "Seconds from deciding to replace a running version of a "
            "pod to the new one running (in reality)", ["pod"], buckets=DURATION_BUCKETS,
            registry=self.registry)
        self.deployFailures = Counter(
            "p2_pod_deploy_failures", "Deploys of a pod that failed (the old version kept running)",
            ["pod"], registry=self.registry)
        self.hookRuns = Counter(
            "p2_hook_runs", "Hook runs, by event and outcome (ok, failed, timeout, missing, "
            "not_executable)", ["event", "outcome"], registry=self.registry)
        self.hookTimeouts = Counter(
            "p2_hook_timeouts", "Hook runs killed for running too long", ["event"],
            registry=self.registry)
        self.healthChecks = Counter(
            "p2_health_checks", "Pod health check results, by pod and status",
            ["pod", "status"], registry=self.registry)

    def forgetPod(self, podId):
        """
        Drop the series of pod C{podId}, which left this node: pod ids come
        and go, and their series must not pile up for as long as the agent
        runs (Prometheus keeps what it scraped).
        """
        for metric, names in ((self.installSeconds, ("pod",)), (self.launchSeconds, ("pod",)),
                              (self.upgradeSeconds, ("pod",)), (self.deployFailures, ("pod",)),
                              (self.healthChecks, ("pod", "status"))):
            labelled = {tuple(sample.labels[n] for n in names)
                        for family in metric.collect() for sample in family.samples
                        if sample.labels.get("pod") == podId}
            for values in labelled:
                metric.remove(*values)

    def watchPods(self, podStates):
        """
        Publish C{p2_pods{state}} and C{p2_pod_state{pod, state}} from
        C{podStates()}, C{{pod_id: state}} (idle pods are "running").
        """
        def compute():
            states = dict(podStates())
            counts = {}
            for state in states.values():
                counts[state] = counts.get(state, 0) + 1
            return [("p2_pods", "Pods on this node by the agent's state of them", ["state"],
                     [((s,), n) for s, n in sorted(counts.items())]),
                    ("p2_pod_state", "1 for each pod's current state", ["pod", "state"],
                     [((p, s), 1) for p, s in sorted(states.items())])]
        self.gauges(compute, [("p2_pods", "", ["state"]), ("p2_pod_state", "", ["pod", "state"])])


class OrchestratorMetrics(StoreMetrics):
    """
    An orchestrator's metrics.
    """

    def __init__(self, registry=None):
        StoreMetrics.__init__(self, registry)

    def watchControllers(self, rcCounts, rollProgress):
        """
        Publish the replica counts of the RCs and the progress of the rolls
        this orchestrator holds.

        @param rcCounts: callable returning C{{rc_id: {"desired", "current",
            "healthy"}}}.
        @param rollProgress: callable returning C{{roll_id: {"target",
            "new_healthy", "old_healthy"}}}.
        """
        described = [
            ("p2_rc_replicas_desired", "Replicas an RC wants", ["rc"]),
            ("p2_rc_replicas_current", "Pods labelled as an RC's", ["rc"]),
            ("p2_rc_replicas_healthy", "An RC's pods running its manifest and passing health",
             ["rc"]),
            ("p2_roll_target_replicas", "Replicas a roll moves to its new RC", ["roll"]),
            ("p2_roll_new_healthy_replicas", "Healthy replicas of a roll's new RC", ["roll"]),
            ("p2_roll_old_healthy_replicas", "Healthy replicas of a roll's old RC", ["roll"]),
            ("p2_roll_progress_ratio", "Healthy new replicas over the target (1 when done)",
             ["roll"]),
        ]

        def compute():
            rcs = dict(rcCounts())
            rolls = dict(rollProgress())
            values = {
                "p2_rc_replicas_desired": [((r,), c["desired"]) for r, c in sorted(rcs.items())],
                "p2_rc_replicas_current": [((r,), c["current"]) for r, c in sorted(rcs.items())],
                "p2_rc_replicas_healthy": [((r,), c["healthy"]) for r, c in sorted(rcs.items())],
                "p2_roll_target_replicas": [((r,), p["target"]) for r, p in sorted(rolls.items())],
                "p2_roll_new_healthy_replicas": [((r,), p["new_healthy"])
                                                 for r, p in sorted(rolls.items())],
                "p2_roll_old_healthy_replicas": [((r,), p["old_healthy"])
                                                 for r, p in sorted(rolls.items())],
                "p2_roll_progress_ratio": [
                    ((r,), min(1.0, p["new_healthy"] / p["target"]) if p["target"] else 1.0)
                    for r, p in sorted(rolls.items())],
            }
            return [(name, doc, labels, values[name]) for name, doc, labels in described]
        self.gauges(compute, described)


def metricsResource(metrics):
    """
    @return: the L{IResource} serving C{metrics}' registry in Prometheus'
        text format (prometheus_client's Twisted resource).
    """
    from prometheus_client.twisted import MetricsResource
    return MetricsResource(registry=metrics.registry)


@implementer(IStreamServerEndpoint)
class _Announced(object):
    """
    An endpoint that says where it listens once it does, and warns when
    that is not loopback only.
    """

    def __init__(self, endpoint, description):
        self.endpoint = endpoint
        self.description = description

    def listen(self, factory):
        return self.endpoint.listen(factory).addCallback(self._listening)

    def _listening(self, port):
        from p2twisted.listen import isLoopback, url
        log.info("serving Prometheus metrics at {url}metrics", url=url(port.getHost()),
                 event="metrics")
        if not isLoopback(self.description):
            log.warn("metrics_listen {listen} is not loopback only: anyone who can reach it "
                     "reads the metrics", listen=self.description)
        return port


def metricsService(listen, metrics, reactor=None):
    """
    @param listen: an endpoint description (L{p2twisted.listen.listenSetting}).
    @return: the L{IService} serving C{metrics} at C{/metrics} there; once
        listening it logs the URL, and warns when that is not loopback only
        (anyone who reaches it reads the metrics: pod names, node state).
    """
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet import endpoints
    from twisted.web import resource, server
    if reactor is None:
        from twisted.internet import reactor
    root = resource.Resource()
    root.putChild(b"metrics", metricsResource(metrics))
    endpoint = _Announced(endpoints.serverFromString(reactor, listen), listen)
    return StreamServerEndpointService(endpoint, server.Site(root))
