# -*- test-case-name: tests.test_orchestrate_tap -*-
"""
C{twistd p2-orchestrator}: options, settings, and the service they build --
one L{Farm} per farm kind named (C{rc}, C{roll}) on one store, and one
L{WatchedReader} of the cluster trees: the controllers' snapshots, whose
news has them reconcile.
"""

import attr
from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python import usage

from p2twisted.config import loadConfig
from p2twisted.errors import P2Error, UsageError
from p2twisted.listen import listenSetting
from p2twisted.metrics import OrchestratorMetrics, metricsService
from p2twisted.orchestrate import gauges
from p2twisted.store.metered import MeteredStore

log = Logger()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run p2 orchestrators: claim replication controllers, rolling updates, pod "
                "clusters and daemon sets from the coordination store (shared with any other "
                "p2-orchestrator) and converge them. Every setting has a default; a config file "
                "(see conf/orchestrator.yaml) and these flags override them.")
    optParameters = [
        ["config", "c", None, "config file (YAML)"],
        ["store", None, None, "coordination store URL (default: $P2_STORE, the config file, "
                              "else the embedded local store)"],
        ["farms", None, None, "comma-separated farms to run, of: rc, roll, pc, ds (default: all)"],
        ["metrics-listen", None, None, "serve Prometheus metrics at /metrics on PORT "
                                       "(127.0.0.1) or a Twisted endpoint (default: none)"],
    ]

    def postOptions(self):
        """
        Read the settings now, so that a bad one is a usage error twistd
        shows as one line.
        """
        try:
            self.settings = orchestratorConfig(self["config"], {
                "store": self["store"], "farms": self["farms"],
                "metrics_listen": self["metrics-listen"]})
        except P2Error as e:
            raise usage.UsageError(str(e))


@attr.s
class OrchestratorConfig(object):
    """
    Every orchestrator setting, with its default.
    """

    store = attr.ib()
    farms = attr.ib()
    sessionTTL = attr.ib(default=15.0)
    resyncInterval = attr.ib(default=30.0)
    newsInterval = attr.ib(default=0.1)
    #: The pod-cluster syncers' settings: C{{name: {setting: value}}}.
    syncers = attr.ib(default=None)
    #: Seconds before a second read may confirm a pod cluster's sudden drop.
    confirmDelay = attr.ib(default=5.0)
    metricsListen = attr.ib(default=None)


def _number(data, name, default, low):
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise UsageError("orchestrator config %s: expected a number >= %s, got %r"
                         % (name, low, value))
    return value


def orchestratorConfig(path=None, flags=None, environ=None, known=None):
    """
    Build the settings from the config file at C{path} (or the usual places)
    and the command-line C{flags} (a dict; C{None} values are ignored).

    @param known: the farm names there are (default: L{controllers.FARMS}).
    @raise UsageError: for a bad file or setting; the message names it.
    """
    if known is None:
        from p2twisted.orchestrate.controllers import FARMS as known
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config = loadConfig(path, environ)
    data = dict(config.data)
    data.update(flags)
    farms = data.get("farms", sorted(known))
    if isinstance(farms, str):
        farms = [f.strip() for f in farms.split(",") if f.strip()]
    if not isinstance(farms, list) or not farms:
        raise UsageError("orchestrator config farms: expected farm names (of %s), got %r"
                         % (", ".join(sorted(known)), data.get("farms")))
    unknown = [f for f in farms if f not in known]
    if unknown:
        raise UsageError("orchestrator config farms: unknown farm %r; expected some of %s"
                         % (unknown[0], ", ".join(sorted(known))))
    return OrchestratorConfig(
        store=config.storeURL(flags.get("store")),
        farms=sorted(set(farms)),
        sessionTTL=_number(data, "session_ttl", 15.0, 1.0),
        resyncInterval=_number(data, "resync_interval", 30.0, 0.1),
        newsInterval=_number(data, "news_interval", 0.1, 0.0),
        syncers=_syncers(data.get("syncers")),
        confirmDelay=_number(data, "confirm_delay", 5.0, 0.0),
        metricsListen=listenSetting(data.get("metrics_listen"),
                                    "orchestrator config metrics_listen"),
    )


def _syncers(settings):
    """
    @return: C{settings} (the config's C{syncers:}), once every syncer it
        names is installed and takes its settings.
    @raise UsageError: naming the syncer or setting at fault.
    """
    from p2twisted.orchestrate.syncers import loadSyncers
    loadSyncers(settings, None)
    return settings


class Orchestrator(service.MultiService):
    """
    Opens the store (retrying while it cannot be reached), then runs the
    farms and the L{WatchedReader} of the cluster trees as children.

    @param kinds: C{{name: FarmKind}} of the farms there are (default
        L{controllers.FARMS}).
    @param store: an open L{IStore} to use instead of opening
        C{config.store} (it is closed when the service stops); one it opens
        is metered (L{MeteredStore}).
    @param metrics: the L{OrchestratorMetrics} (default: new ones, with a
        registry of their own); served at C{config.metricsListen}, if set.
    @ivar farms: C{{name: Farm}} once the store is open.
    """

    def __init__(self, config, reactor, kinds=None, store=None, metrics=None):
        service.MultiService.__init__(self)
        self.metrics = metrics if metrics is not None else OrchestratorMetrics()
        self.metrics.watchControllers(lambda: self._held("rc", gauges.rcCounts),
                                      lambda: self._held("roll", gauges.rollProgress))
        self.reader = None
        if config.metricsListen is not None:
            metricsService(config.metricsListen, self.metrics, reactor).setServiceParent(self)
        if kinds is None:
            from p2twisted.orchestrate.controllers import FARMS as kinds
        self.config = config
        self.reactor = reactor
        self.kinds = kinds
        self.store = store
        self.farms = {}
        self._delays = backoffPolicy(1.0, 30.0)
        self._opening = None

    def startService(self):
        service.MultiService.startService(self)
        self._opening = self._open().addErrback(
            lambda f: log.failure("the orchestrator failed to start", f))

    @defer.inlineCallbacks
    def _open(self):
        from p2twisted.orchestrate.controllers import WATCHED, WatchedReader
        from p2twisted.orchestrate.farm import Farm
        from p2twisted.store import openStore
        attempts = 0
        while self.store is None and self.running:
            try:
                store = yield openStore(self.config.store, self.reactor)
                self.store = MeteredStore(store, self.metrics, self.reactor)
            except Exception as e:
                delay = self._delays(attempts)
                attempts += 1
                log.warn("cannot open store {url}: {error}; retrying in {delay:.1f}s",
                         url=self.config.store, error=str(e), delay=delay)
                yield task.deferLater(self.reactor, delay, lambda: None)
        if not self.running:
            if self.store is not None:
                yield self.store.close()
            return
        log.info("orchestrator on {url}: farms {farms}", url=self.config.store,
                 farms=",".join(self.config.farms), event="start")
        # One watch per tree the decisions read (and per news tree): the
        # controllers' snapshots come from them, and their news nudges the
        # farms that care -- a farm's own tree too, whose records are in
        # those snapshots -- once the snapshots show it; an object whose own
        # record changed reconciles at once.
        news = {}
        for name in self.config.farms:
            kind = self.kinds[name]
            for tree in set(kind.news) | {kind.tree}:
                news.setdefault(tree, []).append(name)

        def changed(tree):
            for name in news.get(tree, ()):
                farm = self.farms.get(name)
                if farm is None:
                    continue
                if tree == farm.tree:
                    farm.recordsShown(reader.entries(tree))
                else:
                    farm.nudge()
        reader = WatchedReader(self.store, sorted(set(WATCHED) | set(news)), changed,
                               clock=self.reactor)
        reader.setServiceParent(self)
        self.reader = reader
        for name in self.config.farms:
            kind = self.kinds[name]
            context = None
            if kind.prepare is not None:
                prepared = kind.prepare(self.store, self.reactor, self.config)
                if not prepared.run:
                    continue
                context = prepared.context
                for extra in prepared.services:
                    extra.setServiceParent(self)
            factory = kind.factory(self.store, self.reactor, reader, context)
            farm = Farm(self.store, kind.name, kind.tree, factory, self.reactor,
                        ttl=self.config.sessionTTL, resyncInterval=self.config.resyncInterval,
                        holdWhenEmpty=kind.holdWhenEmpty, newsInterval=self.config.newsInterval)
            farm.setName(name)
            farm.setServiceParent(self)
            self.farms[name] = farm

    def _held(self, name, measure):
        """
        @return: what C{measure(snapshot, ids)} says of the objects farm
            C{name} holds, in the reader's latest snapshot (C{{}} before
            there is one).
        """
        farm = self.farms.get(name)
        snapshot = None if self.reader is None else self.reader.latest()
        if farm is None or snapshot is None:
            return {}
        return measure(snapshot, sorted(farm.claims))

    @defer.inlineCallbacks
    def stopService(self):
        """
        Stop the farms (closing their sessions: their locks go at once), then
        close the store.
        """
        yield service.MultiService.stopService(self)
        if self.store is not None:
            store, self.store = self.store, None
            yield store.close()
        log.info("orchestrator stopped", event="stop")


def makeService(options, reactor=None):
    """
    @return: the orchestrator's L{IService}.
    """
    if reactor is None:
        from twisted.internet import reactor
    return Orchestrator(options.settings, reactor)
