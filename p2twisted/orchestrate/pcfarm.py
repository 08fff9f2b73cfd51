# -*- test-case-name: tests.test_orchestrate_pcfarm -*-
"""
The pod-cluster farm: the generic L{Farm} claims each pod cluster
(C{locks/pc/<id>}) and runs a L{PodClusterController} for it, which hands
the cluster's membership (L{podcluster.membership}) to every configured
syncer (L{IPodClusterSyncer}) through the failsafe (L{podcluster.guard}).

A failed sync is retried with backoff until it succeeds or a newer
membership replaces it.  Each syncer's status is
C{status/pod_clusters/<id>/<syncer>}: its state (C{synced}, C{held} by the
failsafe, C{failed}), the healthy addresses it last synced (a restarted
farm's failsafe starts from them) and the last error.

A L{Sweeper} deletes from each syncer the clusters it holds whose record is
gone -- never on an empty listing of C{pod_clusters} (P2's daemon-set farm
trusted one): the syncers keep what they hold until a listing shows
clusters again; nor on a listing that suddenly drops (L{podcluster.guard})
until a second read confirms it.
"""

import attr
from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted import records
from p2twisted.errors import P2Error, StoreError
from p2twisted.orchestrate import podcluster
from p2twisted.orchestrate.farm import IController
from p2twisted.records.podcluster import ERROR, FAILED, HELD, SYNCED, SyncerStatus
from p2twisted.store import keys
from p2twisted.store.common import Check, Put

log = Logger()

#: The status kind: C{status/pod_clusters/<id>/<syncer>}.
STATUS_KIND = keys.POD_CLUSTERS

#: Seconds after a sudden drop was first read before a second read may
#: confirm it (the orchestrator's C{confirm_delay}).
CONFIRM_DELAY = 5.0


def statusKey(clusterId, syncerName):
    return keys.status(STATUS_KIND, clusterId, syncerName)


@implementer(IController)
class PodClusterController(object):
    """
    Keeps one pod cluster's syncers in step with its membership.

    @param syncers: the L{IPodClusterSyncer}s, shared by the process's
        controllers.
    @param confirmDelay: see L{CONFIRM_DELAY}.
    """

    kind = "pc"

    def __init__(self, store, objectId, lock, clock, reader, syncers=(),
                 confirmDelay=CONFIRM_DELAY, retryDelay=1.0, maxDelay=30.0, who=None):
        from p2twisted.orchestrate.controllers import WHO
        self.store = store
        self.objectId = objectId
        self.lock = lock
        self.clock = clock
        self.reader = reader
        self.syncers = list(syncers)
        self.confirmDelay = confirmDelay
        self.who = who or WHO
        self._delays = backoffPolicy(retryDelay, maxDelay, 2.0, jitter=lambda: 0)
        self._stopped = False
        self._loaded = False
        #: C{{syncer: [(when, addresses)]}} synced recently (the failsafe's
        #: L{podcluster.baseline}).
        self._synced = {}
        #: C{{syncer: membership dict}} last synced.
        self._last = {}
        #: C{{syncer: (addresses, since)}} held back by the failsafe.
        self._held = {}
        self._failures = {}
        self._status = {}
        #: The version of the record last read.
        self._version = None
        #: L{IController.cost}: its membership reads are cheap; the syncers
        #: pace themselves.
        self.cost = 0.0

    def start(self):
        log.info("pc {object}: controller started with syncers {syncers}", object=self.objectId,
                 syncers=",".join(s.name for s in self.syncers) or "none", event="start")

    def stop(self):
        self._stopped = True
        return defer.succeed(None)

    @defer.inlineCallbacks
    def _load(self):
        """Start the failsafe from what the syncers' statuses say was synced."""
        found = yield self.store.list(keys.status(STATUS_KIND, self.objectId))
        for syncer in self.syncers:
            status = records.readable(SyncerStatus, found.get(statusKey(self.objectId,
                                                                        syncer.name)))
            if status is not None and status.synced is not None:
                self._synced[syncer.name] = [(self.clock.seconds(), status.synced)]
        self._loaded = True

    @defer.inlineCallbacks
    def reconcile(self):
        """
        Read, compute the membership, and sync it to each syncer the
        failsafe lets through.

        @return: L{Deferred} firing with C{None}, or with the seconds after
            which to look again (a failed sync's retry, a held drop's
            confirmation).
        """
        if self._stopped:
            return None
        if not self._loaded:
            yield self._load()
        snapshot = yield self.reader.read()
        if self._stopped:
            return None
        try:
            cluster = snapshot.podCluster(self.objectId)
        except records.CorruptRecord as e:
            for syncer in self.syncers:
                # What was synced stays in the status: a restarted farm's
                # failsafe starts from it.
                yield self.report(syncer, {"state": ERROR, "error": str(e),
                                           "synced": self._lastSynced(syncer.name)})
            return None
        if cluster is None:  # gone: the farm releases it, the sweeper deletes it
            return None
        version = snapshot.version(cluster.key)
        if version != self._version:
            # A new record -- perhaps one deleted (with its status, and swept
            # from the syncers) and created again since the last read: what
            # was synced and reported is no longer known to be there.
            self._version = version
            self._last.clear()
            self._status.clear()
        found = podcluster.membership(cluster, snapshot)
        again = []
        for syncer in self.syncers:
            delay = yield self._syncOne(syncer, cluster, found)
            if delay is not None:
                again.append(delay)
        return min(again) if again else None

    def _lastSynced(self, name):
        """@return: the addresses last synced to syncer C{name}, or C{None}."""
        history = self._synced.get(name)
        return history[-1][1] if history else None

    @defer.inlineCallbacks
    def _syncOne(self, syncer, cluster, found):
        name = syncer.name
        now = self.clock.seconds()
        current = found.addresses()
        history = self._synced.get(name, [])
        last = self._lastSynced(name)
        verdict = podcluster.guard(podcluster.baseline(history, now, self.confirmDelay), current,
                                   self._held.get(name), now, self.confirmDelay)
        counts = {"members": len(found.members), "healthy": len(current)}
        if not verdict.sync:
            if self._held.get(name) != verdict.held:
                log.critical("pc {object} syncer {syncer}: {reason}", object=self.objectId,
                             syncer=name, reason=verdict.reason, event="failsafe")
            self._held[name] = verdict.held
            yield self.report(syncer, dict(counts, state=HELD, reason=verdict.reason,
                                           synced=last, held=verdict.held[0], error=None))
            return max(verdict.at - now, 0.0)
        self._held.pop(name, None)
        wanted = found.toDict()
        if self._last.get(name) != wanted:
            try:
                yield syncer.sync(cluster, found.members)
            except Exception as e:
                failures = self._failures.get(name, 0)
                self._failures[name] = failures + 1
                delay = self._delays(failures)
                error = str(e) if isinstance(e, P2Error) else "%s: %s" % (
                    type(e).__name__, e)
                log.warn("pc {object} syncer {syncer}: sync failed: {error}; retrying in "
                         "{delay:.1f}s", object=self.objectId, syncer=name, error=error,
                         delay=delay, event="sync-failed")
                # Not the verdict's reason ("in sync": the failsafe let it
                # through), which read as the sync having happened.
                reason = "attempt %d failed; retrying in %.0fs" % (failures + 1, delay)
                yield self.report(syncer, dict(counts, state=FAILED, reason=reason,
                                               synced=last, error=error,
                                               attempts=failures + 1))
                return delay
            log.info("pc {object} syncer {syncer}: synced {count} healthy member(s) ({reason})",
                     object=self.objectId, syncer=name, count=len(current),
                     reason=verdict.reason, event="synced")
            self._last[name] = wanted
            self._synced[name] = podcluster.remember(history, now, current, self.confirmDelay)
            self._failures.pop(name, None)
        if verdict.confirmed:  # the drop is the new baseline
            self._synced[name] = [(now, current)]
        yield self.report(syncer, dict(counts, state=SYNCED, reason=verdict.reason,
                                       synced=current, error=None))
        return None

    @defer.inlineCallbacks
    def report(self, syncer, status):
        """
        Write C{status} to C{status/pod_clusters/<id>/<syncer>} when it
        changed, under the lock check.
        """
        from p2twisted.orchestrate.controllers import _iso
        if self._status.get(syncer.name) == status or self._stopped:
            return
        key = statusKey(self.objectId, syncer.name)
        value = SyncerStatus(since=_iso(self.clock.seconds()), holder=self.who,
                             **status).toBytes()
        try:
            yield self.store.transaction([Check(self.lock.key, self.lock.version),
                                          Put(key, value)])
        except StoreError as e:
            log.warn("pc {object}: cannot write its status: {error}", object=self.objectId,
                     error=str(e))
            return
        self._status[syncer.name] = status


class Sweeper(service.Service):
    """
    Deletes from each syncer the clusters it holds whose record is gone: on
    start, when the C{pod_clusters} tree changes, and every C{interval}
    seconds.  Deletes nothing while the tree lists empty (failsafe).
    """

    def __init__(self, store, syncers, clock, interval=30.0, confirmDelay=CONFIRM_DELAY):
        self.store = store
        self.syncers = list(syncers)
        self.clock = clock
        self.interval = interval
        self.confirmDelay = confirmDelay
        #: C{[(when, ids)]} listed recently, and C{(ids, since)} held back:
        #: the failsafe of L{podcluster.guard} over the listing.
        self._listed = []
        self._held = None
        self._confirm = None
        self._loop = None
        self._watch = None
        self._running = None
        self._again = False
        #: How many sweeps ran (for tests).
        self.sweeps = 0

    def startService(self):
        service.Service.startService(self)
        if not self.syncers:
            return
        self._watch = self.store.watch(keys.POD_CLUSTERS, lambda entries: self.sweep())
        self._loop = task.LoopingCall(self.sweep)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stopService(self):
        service.Service.stopService(self)
        if self._watch is not None:
            self._watch.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._confirm is not None and self._confirm.active():
            self._confirm.cancel()
        return self._running

    def sweep(self):
        """
        Sweep now, or once more after the sweep under way.

        @return: L{Deferred} firing when that sweep is done.
        """
        if self._running is not None:
            self._again = True
            return self._running
        self._again = False
        self._running = self._sweep()

        def done(_):
            self._running = None
            if self._again and self.running:
                return self.sweep()
        return self._running.addBoth(done)

    @defer.inlineCallbacks
    def _sweep(self):
        self.sweeps += 1
        for syncer in self.syncers:
            try:
                # What the syncer holds first, the listing after: a cluster
                # created (and synced) meanwhile is in the listing.
                held = yield syncer.initialClusters()
                listed = yield self.store.list(keys.POD_CLUSTERS)
            except Exception as e:
                log.warn("pc sweeper: {syncer}: {error}", syncer=syncer.name, error=str(e))
                continue
            ids = {keys.parse(k)[1] for k in listed if len(keys.parse(k)) == 2}
            gone = sorted(set(held) - ids)
            if not ids:
                if gone:
                    log.critical("pc sweeper FAILSAFE: pod_clusters lists empty; syncer "
                                 "{syncer} keeps {count} cluster(s) ({ids}) until clusters are "
                                 "listed again", syncer=syncer.name, count=len(gone),
                                 ids=",".join(gone), event="failsafe")
                continue
            if not self._guard(sorted(ids), syncer, gone):
                continue
            for clusterId in gone:
                try:
                    yield syncer.delete(clusterId)
                except Exception as e:
                    log.warn("pc sweeper: {syncer}: cannot delete {object}: {error}",
                             syncer=syncer.name, object=clusterId, error=str(e))
                    continue
                log.info("pc {object}: deleted from syncer {syncer} (its record is gone)",
                         object=clusterId, syncer=syncer.name, event="deleted")


    def _guard(self, ids, syncer, gone):
        """
        The failsafe over the listing: a listing that suddenly drops to
        fewer than half the clusters listed within C{confirmDelay} (a wipe
        of C{pod_clusters} delivered key by key, as ZooKeeper deletes a
        tree) deletes nothing until a second read confirms it.

        @return: whether C{gone} may be deleted.
        """
        now = self.clock.seconds()
        before = podcluster.baseline(self._listed, now, self.confirmDelay)
        verdict = podcluster.guard(before, ids, self._held, now, self.confirmDelay)
        if not verdict.sync:
            if gone and self._held != verdict.held:
                log.critical("pc sweeper FAILSAFE: pod_clusters lists {count} cluster(s) where "
                             "it listed {before}; syncer {syncer} keeps {ids} until a second "
                             "read confirms it", count=len(ids), before=len(before),
                             syncer=syncer.name, ids=",".join(gone), event="failsafe")
            self._held = verdict.held
            if self._confirm is None or not self._confirm.active():
                self._confirm = self.clock.callLater(
                    max(verdict.at - now, 0.0), lambda: self.running and self.sweep())
            return False
        self._held = None
        self._listed = ([(now, ids)] if verdict.confirmed else
                        podcluster.remember(self._listed, now, ids, self.confirmDelay))
        return True


@attr.s
class Prepared(object):
    """
    What L{prepare} gives the orchestrator: controller arguments, services,
    and whether to run the farm at all.
    """

    context = attr.ib(factory=dict)
    services = attr.ib(factory=list)
    run = attr.ib(default=True)


def prepare(store, clock, config):
    """
    Load the syncers the orchestrator C{config} names (C{syncers:}).

    @return: a L{Prepared}: the controllers' C{syncers} and C{confirmDelay},
        and the L{Sweeper}; or one that does not run the farm when no
        syncer is configured.
    """
    from p2twisted.orchestrate.syncers import loadSyncers
    syncers = loadSyncers(getattr(config, "syncers", None), clock)
    if not syncers:
        # Claiming them would keep them from the orchestrator that has
        # syncers (its syncers write on its own host).
        log.warn("pc farm: no syncers configured (orchestrator config 'syncers:'); not "
                 "running it: pod clusters are left to an orchestrator with syncers",
                 event="no-syncers")
        return Prepared(run=False)
    return Prepared({"syncers": syncers,
                     "confirmDelay": getattr(config, "confirmDelay", CONFIRM_DELAY)},
                    [Sweeper(store, syncers, clock,
                             getattr(config, "resyncInterval", 30.0),
                             getattr(config, "confirmDelay", CONFIRM_DELAY))])
