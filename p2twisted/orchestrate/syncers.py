# -*- test-case-name: tests.test_syncers -*-
"""
Pod cluster syncers: plugins that hand a pod cluster's membership to
something outside p2 -- a load balancer, a service-discovery file.

A syncer is an L{IPodClusterSyncer}, made by a factory found under its name
in the entry-point group C{p2twisted.syncers} (setup.py; a package of your
own adds one the same way) and called as C{factory(settings, reactor)} with
its section of the orchestrator config's C{syncers:} mapping.  The
pod-cluster farm (L{p2twisted.orchestrate.pcfarm}) runs them.

L{MemorySyncer} is the public fake: it remembers what it was given.
"""

import attr
from twisted.internet import defer
from zope.interface import Attribute, Interface, implementer

from p2twisted.errors import UsageError

#: The entry-point group syncers are found in.
GROUP = "p2twisted.syncers"


class IPodClusterSyncer(Interface):
    """
    Hands pod cluster memberships to one outside system.
    """

    name = Attribute("The syncer's name (its entry point's), e.g. 'haproxy'; its status is "
                     "status/pod_clusters/<id>/<name>.")

    def sync(cluster, members):
        """
        Make the outside system hold C{members} for C{cluster}.

        @param cluster: the L{p2twisted.records.podcluster.PodCluster}.
        @param members: the L{p2twisted.orchestrate.podcluster.Member}s,
            sorted (healthy or not; with an address or not).
        @return: L{Deferred} firing with C{None} once done; failing (with a
            L{p2twisted.errors.P2Error} saying why, in one line) when not:
            the farm retries until it succeeds or the membership changes.
        """

    def delete(clusterId):
        """
        Remove what the outside system holds for C{clusterId}, if anything.

        @return: L{Deferred} firing with C{None} once done.
        """

    def initialClusters():
        """
        @return: L{Deferred} firing with the ids of the clusters the outside
            system holds (the farm deletes those whose record is gone).
        """


class SyncerError(UsageError):
    """A syncer's settings are wrong, or it is unknown."""


def available():
    """
    @return: C{{name: entry point}} of the installed syncers.
    """
    from importlib.metadata import entry_points
    found = entry_points()
    group = (found.select(group=GROUP) if hasattr(found, "select")
             else found.get(GROUP, ()))
    return {ep.name: ep for ep in group}


def loadSyncers(settings, reactor, known=None):
    """
    @param settings: C{{name: {setting: value}}}, the orchestrator config's
        C{syncers:} mapping.
    @param known: C{{name: factory}} to use instead of the entry points.
    @return: the L{IPodClusterSyncer}s named, sorted by name.
    @raise SyncerError: for an unknown syncer or bad settings (naming them).
    """
    if settings is None:
        return []
    if not isinstance(settings, dict):
        raise SyncerError("orchestrator config syncers: expected a mapping of syncer name to "
                          "its settings, got %r" % (settings,))
    if known is None:
        known = {name: ep.load for name, ep in available().items()}
    else:
        known = {name: (lambda f=factory: f) for name, factory in known.items()}
    syncers = []
    for name in sorted(settings):
        if name not in known:
            raise SyncerError("orchestrator config syncers: unknown syncer %r; installed: %s"
                              % (name, ", ".join(sorted(known)) or "none"))
        options = settings[name] or {}
        if not isinstance(options, dict):
            raise SyncerError("orchestrator config syncers.%s: expected a mapping of settings, "
                              "got %r" % (name, options))
        syncer = known[name]()(options, reactor)
        if syncer.name != name:
            syncer.name = name
        syncers.append(syncer)
    return syncers


def setting(name, options, key, kind, default=None, required=False):
    """
    @return: C{options[key]}, checked to be a C{kind}, or C{default}.
    @raise SyncerError: naming C{syncers.<name>.<key>}.
    """
    value = options.get(key, default)
    if value is None:
        if required:
            raise SyncerError("orchestrator config syncers.%s.%s is required" % (name, key))
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise SyncerError("orchestrator config syncers.%s.%s: expected %s, got %r"
                          % (name, key, getattr(kind, "__name__", kind), value))
    return value


@attr.s
@implementer(IPodClusterSyncer)
class MemorySyncer(object):
    """
    A syncer holding memberships in memory, for tests.

    @ivar clusters: C{{clusterId: [Member]}} as last synced.
    @ivar calls: C{[("sync", id, [addresses]) or ("delete", id)]}, in order.
    @ivar failures: how many of the next syncs fail.
    @ivar manual: when true, L{sync} returns a L{Deferred} the test fires
        (C{pending}).
    """

    name = attr.ib(default="memory")
    clusters = attr.ib(factory=dict)
    calls = attr.ib(factory=list)
    failures = attr.ib(default=0)
    manual = attr.ib(default=False)
    pending = attr.ib(factory=list)

    def sync(self, cluster, members):
        self.calls.append(("sync", cluster.id, sorted(m.address for m in members
                                                      if m.healthy and m.address)))
        if self.failures:
            self.failures -= 1
            return defer.fail(SyncerError("memory syncer: told to fail"))

        def done(_=None):
            self.clusters[cluster.id] = list(members)
        if self.manual:
            d = defer.Deferred()
            self.pending.append(d)
            return d.addCallback(done)
        done()
        return defer.succeed(None)

    def delete(self, clusterId):
        self.calls.append(("delete", clusterId))
        self.clusters.pop(clusterId, None)
        return defer.succeed(None)

    def initialClusters(self):
        return defer.succeed(sorted(self.clusters))

