# -*- test-case-name: tests.test_agent_service -*-
"""
The machine agent service: registers the machine (taking over the key of a
dead predecessor on this machine), watches this node's intent, resyncs
periodically, and hands each pod to its L{PodWorker}; its children check the
pods' health (L{HealthMonitor}) and carry out the requests of C{p2 run} and
C{p2 logs} (L{RequestRunner}).

Failsafes (DESIGN.md; README.rst, "The failsafe"):
  - The agent acts on an intent listing only while C{intent/<node>} holds the
    node marker; without it, nothing is installed or removed, and the log and
    C{status/agents/<node>} say so.
  - A pod whose intent disappears is removed only once it has been gone for
    the removal grace with the marker still there (L{failsafe.decide}), so a
    recursive delete of the node's intent, children first, removes nothing.
  - A marker other than the one last seen (remembered in the state
    directory), or pods on disk in neither intent nor reality (orphans),
    hold every removal until C{p2 node confirm NODE} (or the hold timeout);
    what intent names is still installed meanwhile.
  - While the store is unreachable or the machine's session is lost, running
    pods keep running and nothing is installed or removed.

Authorization (L{p2twisted.auth}): the C{auth:} policy, reloaded when its
files change (L{PolicyReloader}), decides every change of what runs -- a
pod's new manifest, a hook pod, a request; a refusal installs nothing and
stops nothing (L{PodWorker}).
"""

import time

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from p2twisted.agent import failsafe
from p2twisted.agent.crashloop import CrashLoopMonitor
from p2twisted.agent.health import HealthMonitor
from p2twisted.agent.hookpods import HookSync
from p2twisted.agent.layout import StateLayout
from p2twisted.agent.supervisors import processStartTime
from p2twisted.agent.requests import RequestRunner
from p2twisted.agent.nodereads import STALE, NodeReads
from p2twisted.agent.worker import IDLE, PodWorker, retryPolicy
from p2twisted.auth.policy import NONE
from p2twisted.auth.reload import PolicyReloader
from p2twisted.auth.settings import AuthSettings
from p2twisted.errors import KeyExists, StoreError
from p2twisted.metrics import AgentMetrics
from p2twisted.records import (
    AgentStatus, Confirmation, CorruptRecord, MachineFacts, markerIdentity, readable)
from p2twisted.store import keys, openStore
from p2twisted.store.metered import MeteredStore
from p2twisted.store.presence import Presence

log = Logger()

#: Seconds from a change of C{status/agents/<node>} to its write: the
#: changes of a burst of syncs (a node's marker, then its first pod), and a
#: deploy ending meanwhile, are written together.
STATUS_INTERVAL = 0.5


def _confirmedMarker(entry):
    """
    @return: the marker identity a C{confirmations/<node>} entry confirms, or
        C{None}.
    """
    confirmation = readable(Confirmation, entry)
    return None if confirmation is None else confirmation.marker


_HOLD_REASONS = {
    failsafe.NEW_MARKER: lambda marker, orphans: (
        "the node marker (created %s) is not the one this agent last saw"
        % (marker.get("created"),)),
    failsafe.ORPHANS: lambda marker, orphans: (
        "pods on disk in neither intent nor reality: %s" % (", ".join(sorted(orphans)),)),
}


def deadPredecessor(facts, value, key=None):
    """
    Whether C{machines/<node>} holding C{value} was left by an agent whose
    process is gone (killed, its session not expired yet), so a restarted
    agent may take it over rather than wait.  Only a holder provably of this
    machine, this boot and this pid namespace qualifies (another container
    or a clone sharing the machine id never does), and only if its pid is
    gone or now belongs to a process started at another time.

    @param facts: this agent's facts (C{machine_id}, C{process}).
    @param value: the key's value: the previous holder's facts.
    @param key: the key (default: C{machines/<facts' node>}).
    """
    try:
        previous = MachineFacts.fromBytes(key or keys.machine(facts.get("node") or "unknown"),
                                          value)
    except CorruptRecord:
        return False
    mine, theirs = facts.get("process") or {}, previous.process
    if not (theirs and facts.get("machine_id") and previous.machineId == facts["machine_id"]):
        return False
    for name in ("boot_id", "pid_ns"):
        if mine.get(name) is None or theirs.get(name) != mine[name]:
            return False
    pid = previous.pid
    if pid is None or pid <= 1 or pid == mine.get("pid"):
        return False
    # None when it is gone or a zombie: different from any start time.
    return processStartTime(pid) != theirs.get("pid_start")


class AgentService(service.MultiService):
    """
    The agent.

    @param config: an L{p2twisted.agent.config.AgentConfig}.
    @param pods: the L{IPodOperations}.
    @param reactor: the reactor (clock, processes).
    @param store: an open L{IStore}, or C{None} to open C{config.store}
        (then metered: L{MeteredStore}).
    @param metrics: the L{AgentMetrics} to update (default: new ones, with
        a registry of their own).
    """

    def __init__(self, config, pods, reactor, store=None, facts=None, auth=None,
                 metrics=None):
        service.MultiService.__init__(self)
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.metrics.watchPods(self.podStates)
        #: The auth policy (an L{IAuthPolicy} with a C{generation}).
        self.auth = auth or PolicyReloader(getattr(config, "auth", None) or AuthSettings(),
                                           reactor)
        if isinstance(self.auth, service.Service):
            self.auth.setServiceParent(self)
        self.auth.subscribe(self._policyChanged)
        self.config = config
        self.node = config.node
        self.pods = pods
        self.reactor = reactor
        self.store = store
        self.facts = facts or (lambda: {"node": self.node})
        self.workers = {}
        #: The L{HealthMonitor}, once started (if the pods check health).
        self.health = None
        self.markerPresent = None
        self.presence = None
        self.lastSync = None
        self._watch = None
        self._resync = None
        self._opening = None
        self._openDelay = retryPolicy(maximum=30.0)
        self._openAttempts = 0
        self._syncing = defer.DeferredLock()
        self.hookSync = None
        self._confirmWatch = None
        self._confirmSeen = False
        self._markerMemory = failsafe.MarkerMemory(StateLayout(config.stateDir).nodeMarker,
                                                   self.node)
        self._lastSeen = self._markerMemory.load()
        self._absentSince = {}
        self._onDisk = None
        self._orphans = set()
        self._holdSince = None
        self._holdFor = None
        self._verdict = failsafe.Verdict()
        self._wake = None
        #: What the syncs read (the store is set when opened).
        self._reads = NodeReads(store, self.node)
        #: The last agent status written (or being written), C{last_sync}
        #: aside; the timer of the next.
        self._statusWritten = None
        self._statusTimer = None

    # -- lifecycle -----------------------------------------------------------

    def startService(self):
        service.MultiService.startService(self)
        self._opening = self._open().addErrback(
            lambda f: log.failure("the agent failed to start", f, node=self.node))

    @defer.inlineCallbacks
    def _open(self):
        while self.store is None and self.running:
            try:
                store = yield openStore(self.config.store, self.reactor)
                self.store = self._reads.store = MeteredStore(store, self.metrics, self.reactor)
            except Exception as e:
                delay = self._openDelay(self._openAttempts)
                self._openAttempts += 1
                log.warn("cannot open store {url}: {error}; retrying in {delay:.1f}s",
                         url=self.config.store, error=str(e), delay=delay)
                yield task.deferLater(self.reactor, delay, lambda: None)
        if not self.running:
            if self.store is not None:  # opened after stopService: not closed there
                yield self.store.close()
            return
        yield self._startHooks()
        if not self.running:
            return
        self.presence = Presence(self.store, keys.machine(self.node), self._machineValue,
                                 self.config.sessionTTL, self.reactor, onPresent=self._present,
                                 takeOver=lambda value: deadPredecessor(
                                     self.facts(), value, keys.machine(self.node)))
        self.presence.setServiceParent(self)
        self._startRequests()
        self._startHealth()
        self._startCrashLoops()
        self._watch = self.store.watch(keys.intentNode(self.node), self._intentChanged)
        self._confirmWatch = self.store.watch(keys.confirmation(self.node),
                                              self._confirmationChanged)
        self._resync = task.LoopingCall(self.resync)
        self._resync.clock = self.reactor
        self._resync.start(self.config.resyncInterval, now=False)

    @defer.inlineCallbacks
    def _startHooks(self):
        """
        Install the hook pods scheduled in the store, then run the
        C{agent_init} hooks (unless the pod operations run no hooks).
        """
        hooks = self.pods.hooks
        if hooks is None:
            return
        hooks.store = self.store
        self.hookSync = HookSync(self.store, self.config, self.reactor, self.pods.artifacts,
                                 self.pods.installer, resyncInterval=self.config.resyncInterval,
                                 auth=self._policy(), refused=self._refused)
        self.hookSync.setServiceParent(self)
        yield self.hookSync.whenSynced()
        try:
            yield hooks.run("agent_init")
        except Exception as e:
            log.warn("agent_init hooks: {error}", error=str(e), node=self.node)

    def _startRequests(self):
        """
        Take the requests to this node (C{p2 run}, C{p2 logs}), unless the
        pod operations take none.
        """
        handlers = self.pods.requestHandlers()
        if handlers is not None:
            RequestRunner(self.store, self.node, self.reactor, handlers,
                          auth=self._policy(), podRoot=self.config.podRoot,
                          seenPath=StateLayout(self.config.stateDir).seenRequests,
                          runsAs=self.pods.runsAs).setServiceParent(self)

    def _startHealth(self):
        """
        Check the installed pods' health and publish it in the agent's
        session, unless the pod operations check none.
        """
        checker = self.pods.healthChecker()
        if checker is not None:
            self.health = HealthMonitor(self.store, self.node, self.reactor, checker,
                                        self.pods.installedPods, self._liveSession,
                                        settled=self._settled, metrics=self.metrics)
            self.health.setServiceParent(self)

    def _startCrashLoops(self):
        """
        Publish the pods' restart counts and crash loops in their status
        records, if the pod operations have a supervisor.
        """
        if self.pods.supervisor is not None:
            CrashLoopMonitor(self.store, self.node, self.reactor,
                             self.pods.supervisor).setServiceParent(self)

    def _settled(self, podId):
        """
        @return: whether C{podId}'s worker is idle: no deploy or removal under
            way, and none failed and waiting to be retried (then the manifest
            on disk may not be the running one).
        """
        worker = self.workers.get(podId)
        return worker is None or worker.state == IDLE

    def _liveSession(self):
        return self.presence.session if self.canAct() else None

    @defer.inlineCallbacks
    def stopService(self):
        # Not running from now on, though the workers' attempts under way
        # still end: a sync ending meanwhile hands nothing over.
        service.Service.stopService(self)
        if self._resync is not None and self._resync.running:
            self._resync.stop()
        for watch in (self._watch, self._confirmWatch):
            if watch is not None:
                watch.cancel()
        for timer in (self._wake, self._statusTimer):
            if timer is not None and timer.active():
                timer.cancel()
        if self.markerPresent is not None and self.canAct():
            # A change not yet written (a deploy just ended) would be shown
            # until the agent is back: written now, if any, as the pods are
            # (not as their stopped workers); not while the store is out of
            # reach (the stop would wait for the write to time out).
            yield self._writeAgentStatusNow()
        yield defer.gatherResults([w.stop() for w in self.workers.values()])
        yield service.MultiService.stopService(self)
        if self.store is not None:
            yield self.store.close()

    def canAct(self):
        """
        @return: whether the agent may install or remove anything now.
        """
        return self.presence is not None and self.presence.present

    def _present(self):
        # A new session: reality may have changed while the agent was away.
        self._reads.forgetReality()
        for worker in self.workers.values():
            worker.kick()

    def _machineValue(self):
        return MachineFacts(self.node, self.facts()).toBytes()

    # -- intent ----------------------------------------------------------------

    def _intentChanged(self, snapshot):
        # The watch hands over the subtree's latest state (IStore.watch:
        # latest wins, calls never overlap), so the sync it starts acts on
        # it rather than listing intent again.  But it may be older than a
        # listing a resync took meanwhile (the sync waits for the one under
        # way): handed over after it, it could take a pod scheduled since
        # for unscheduled, so then it is listed afresh (NodeReads).
        self._reads.delivered(snapshot)
        return self._sync(resync=False)

    def resync(self):
        """
        Re-read intent and reality in full and hand every pod to its worker.

        @return: L{Deferred} firing when the pods have been handed over.
        """
        return self._sync(resync=True)

    def _sync(self, resync):
        """
        Read intent and reality and hand the pods over, one sync at a time:
        each reads what the one before it handed over, or newer.
        """
        return self._syncing.run(self._syncOnce, resync)

    @defer.inlineCallbacks
    def _syncOnce(self, resync):
        if not self.running:
            return
        try:
            # Decided as of the read: a slow sync gets no credit for the time
            # its other reads took (the marker may have gone meanwhile).
            readAt = self.reactor.seconds()
            snapshot, reality = yield self._reads.read(resync)
            yield self._converge(snapshot, reality, readAt, resync=resync)
        except StoreError as e:
            # (Reality read again next time: an adoption's write may have
            # been applied.)
            self._reads.forgetReality()
            log.warn("sync failed: {error}", error=str(e), node=self.node)
        except Exception:
            self._reads.forgetReality()
            log.failure("sync failed", node=self.node)

    def _confirmationChanged(self, snapshot):
        self._confirmSeen = bool(snapshot)
        if snapshot:
            return self.resync()

    @defer.inlineCallbacks
    def _converge(self, snapshot, reality, now, resync):
        """
        Act on C{snapshot} and C{reality}, this node's intent and reality as
        read at C{now}: install what intent names, remove what the failsafe
        allows as of C{now}.
        """
        markerKey = keys.intentNode(self.node)
        if markerKey not in snapshot:
            if self.markerPresent is not False:
                log.warn("{key} holds no node marker: acting on nothing (failsafe); "
                         "schedule a pod with 'p2 schedule --node {node}' to create it",
                         key=markerKey, node=self.node, event="no-marker")
            self.markerPresent = False
            self._reads.synced(None)
            # Whatever comes back is a new marker or starts the grace anew.
            self._absentSince.clear()
            self._holdSince = None
            self._verdict = failsafe.decide(None, self._lastSeen, {}, now, 0)
            self._wakeAt(None)
            yield self._writeAgentStatus(resync)
            return
        self.markerPresent = True
        marker = markerIdentity(snapshot[markerKey])
        self._reads.synced(marker)
        intents = {}
        for key, entry in snapshot.items():
            podId = keys.child(markerKey, key)
            if podId is not None and key == keys.intent(self.node, podId):
                intents[podId] = entry
        realPods = {keys.child(keys.realityNode(self.node), k) for k in reality}
        realPods.discard(None)
        if not self.running:  # stopped meanwhile: its workers are stopped
            return
        # A pod in neither intent nor reality is gone: its worker is told
        # once (an intent with no reality, e.g. an invalid one, leaves only
        # its status to delete), under the same failsafe as a removal, then
        # forgotten once it has converged to nothing.  One whose deploy
        # failed or is under way may have files on disk, even running
        # services: it is recorded in reality first, so its worker removes
        # them rather than leave an orphan.
        gone = set(self.workers) - set(intents) - realPods
        for podId in sorted(gone):
            if self.workers[podId].absent():
                del self.workers[podId]
                self.metrics.forgetPod(podId)
        gone &= set(self.workers)
        found = self._orphans
        if resync or self._onDisk is None or gone:  # what is on disk may have changed
            found = yield self._onDiskSettled()
        self._orphans = {p for p in found if p not in intents and p not in realPods}
        verdict, confirmation = yield self._decide(marker, set(intents), realPods | gone,
                                                   set(self._orphans), now)
        remove = verdict.remove
        if remove and not resync:
            # Removals are decided by a resync: on intent and reality as
            # listed, not as delivered or remembered (NodeReads), and on the
            # pods on disk as found then (the orphans): at once.
            remove = frozenset()
            self._wakeAt(now)
        installed = remove & gone & set(self._onDisk)
        adopted = verdict.adopt | installed
        for podId in sorted(adopted):
            yield self._adopt(podId)
            realPods.add(podId)
        if confirmation is not None:  # what it allowed is done (or handed to the workers)
            d = self.store.delete(confirmation.key, confirmation.version)
            d.addErrback(lambda f: log.warn("cannot delete {key}: {error}", key=confirmation.key,
                                            error=f.getErrorMessage()))
        for podId in sorted(set(intents) | realPods | gone):
            worker = self.worker(podId)
            # What reality said as read with intent (none for the pods
            # adopted since, whose reality was just written): the worker's
            # next attempt need not read it again.
            seen = {} if podId in adopted else dict(
                reality=reality.get(keys.reality(self.node, podId)), readAt=now)
            if podId in intents:
                worker.update(intents[podId], resync=resync, **seen)
            elif podId in remove:
                worker.update(None, resync=resync, **seen)
            else:
                continue
            if worker.state != IDLE:
                # Its health is checked once it is deployed or removed, not
                # up to a tick later; the agent's status says so too.
                worker.whenIdle().addCallback(lambda _: self._settledNow())
        self.lastSync = time.time()
        yield self._writeAgentStatus(resync)

    def _settledNow(self):
        """
        A worker the last sync started is idle: check its health now, and
        write the agent's status.
        """
        if self.health is not None:
            self.health.checkSoon()
        self._writeAgentStatus(resync=False)

    @defer.inlineCallbacks
    def _decide(self, marker, intended, realPods, orphans, now):
        """
        Run the failsafe's decision on what the agent read at C{now}, and
        keep what it says: the marker accepted, the hold, the confirmation to
        consume (once the orphans are adopted), the timer for the next grace
        ending.

        @return: L{Deferred} firing with the L{failsafe.Verdict} and the
            confirmation entry to delete once the orphans are adopted, or
            C{None}.
        """
        candidates = (realPods | orphans) - intended
        for podId in list(self._absentSince):
            if podId not in candidates:
                del self._absentSince[podId]
        for podId in candidates:
            self._absentSince.setdefault(podId, now)
        if self._holdFor != marker:  # another marker: its hold starts when first seen
            self._holdSince = None
        confirmation = confirmed = None
        if self._confirmSeen or orphans or (self._lastSeen is not None
                                            and marker != self._lastSeen):
            confirmation = yield self.store.get(keys.confirmation(self.node))
            confirmed = _confirmedMarker(confirmation)
        verdict = failsafe.decide(
            marker, self._lastSeen, self._absentSince, now, self.config.removalGrace,
            orphans=orphans, confirmed=confirmed, holdSince=self._holdSince,
            holdTimeout=self.config.holdTimeout)
        if verdict.hold is not None and self._holdSince is None:
            self._holdSince, self._holdFor = now, marker
            log.warn("removals on {node} are held ({why}): installing what intent names, "
                     "removing nothing until 'p2 node confirm {node}'{timeout}",
                     node=self.node, why=_HOLD_REASONS[verdict.hold](marker, orphans),
                     timeout=("" if self.config.holdTimeout is None else
                              " or %gs have passed" % (self.config.holdTimeout,)),
                     event="removals-held")
        elif verdict.hold is None and self._holdSince is not None:
            timeout = self.config.holdTimeout
            how = ("confirmed" if confirmed == marker else
                   "the hold timed out" if timeout is not None and now >= self._holdSince + timeout
                   else "nothing to hold any more")
            self._holdSince = None
            log.info("removals on {node} are no longer held: {how}", node=self.node, how=how,
                     event="removals-released")
        if verdict.accept:
            self._remember(marker)
        if not (confirmed == marker and verdict.hold is None):
            confirmation = None
        self._verdict = verdict
        self._wakeAt(verdict.wakeAt)
        return verdict, confirmation

    def _remember(self, marker):
        self._lastSeen = marker
        try:
            self._markerMemory.save(marker)
        except OSError as e:
            log.error("cannot remember the node marker in {path}: {error}; an agent restarted "
                      "now would hold removals until 'p2 node confirm {node}'",
                      path=self._markerMemory.path, error=str(e), node=self.node)

    def _wakeAt(self, when):
        """
        Resync (a fresh read of the store) at C{when}, when a grace or the
        hold timeout ends; C{None}: no timer.
        """
        if self._wake is not None and self._wake.active():
            if when is not None and self._wake.getTime() == when:
                return
            self._wake.cancel()
        self._wake = None
        if when is not None and self.running:
            self._wake = self.reactor.callLater(max(0.0, when - self.reactor.seconds()),
                                                self.resync)

    def worker(self, podId):
        """
        @return: the L{PodWorker} of C{podId}, created on first use.
        """
        if podId not in self.workers:
            self.workers[podId] = PodWorker(self.pods, self.store, self.node, podId,
                                            self.reactor, canAct=self.canAct,
                                            auth=self._policy(), refused=self._refused,
                                            metrics=self.metrics,
                                            realityChanged=self._reads.realityChanged)
        return self.workers[podId]

    # -- authorization -----------------------------------------------------------

    def _policy(self):
        """
        @return: the auth policy the workers, hook pods and requests ask, or
            C{None} under C{none} (every manifest is deployed, as before).
        """
        return None if self.auth.name == NONE else self.auth

    def _refused(self, manifest, decision):
        """
        Run the C{after_auth_fail} hooks for a refused manifest.
        """
        hooks = self.pods.hooks
        if hooks is None:
            return defer.succeed(None)
        from p2twisted.agent.hooks import podContext
        from p2twisted.agent.layout import PodLayout
        layout = PodLayout(self.config.podRoot, manifest.id)
        return hooks.run("after_auth_fail", podContext(layout, manifest))

    def _policyChanged(self):
        """
        The policy's files changed: what it refused is tried again.
        """
        for worker in list(self.workers.values()):
            worker.reconsider()
        if self.hookSync is not None and self.hookSync.running:
            self.hookSync.resync()

    @defer.inlineCallbacks
    def _onDiskSettled(self):
        """
        Read which pods are on disk (the orphans among them are those in
        neither intent nor reality).

        @return: L{Deferred} firing with the set of those whose worker is not
            in the middle of something (a deploy writes reality only when it
            is done).
        """
        onDisk = yield defer.maybeDeferred(self.pods.installedPods)
        self._onDisk = dict(onDisk or {})
        return {podId for podId in self._onDisk if self._settled(podId)}

    @defer.inlineCallbacks
    def _adopt(self, podId):
        """
        Record a pod on disk in neither intent nor reality in reality, so
        the normal loop removes it: an orphan once removals are confirmed, or
        a pod its worker left installed whose removal is due.
        """
        log.info("pod {pod} is on disk but in neither intent nor reality; recording it in "
                 "reality so it is removed", pod=podId, node=self.node, event="orphan")
        key = keys.reality(self.node, podId)
        try:
            self._reads.realityChanged(key, (yield self.store.create(key, self._onDisk[podId])))
        except KeyExists:
            self._reads.realityChanged(key, STALE)
        self._orphans.discard(podId)

    # -- status ----------------------------------------------------------------

    def converged(self):
        """
        @return: whether every pod worker is idle and the agent can act.
        """
        return self.canAct() and all(w.state == "idle" for w in self.workers.values())

    def podStates(self):
        """
        @return: C{{pod_id: state}} of the pods this agent has a status for,
            as their status records say it (running, deploying, failed,
            removing, invalid, refused).
        """
        states = {}
        for podId, worker in list(self.workers.items()):
            state = worker.reportedState()
            if state is not None:
                states[podId] = state
        return states

    def statusRecord(self):
        """
        @return: the agent's status as a JSON-able dict.
        """
        pods = {}
        for podId, w in sorted(self.workers.items()):
            invalid = w.invalidIntent()
            refusal = w.refusal()
            if invalid is not None:
                pods[podId] = {"state": "invalid", "attempts": w.attempts,
                               "error": "invalid manifest in intent: %s" % (invalid,)}
            elif refusal is not None:
                pods[podId] = {"state": "refused", "attempts": w.attempts,
                               "error": refusal.describe(), "auth": refusal.toDict()}
            else:
                pods[podId] = {"state": w.state, "attempts": w.attempts, "error": w.lastError}
        return {
            "node": self.node,
            "store": self.config.store,
            "connected": self.canAct(),
            # An intent the agent cannot parse or may not deploy is not
            # converged: it is an error.
            "converged": self.converged() and all(
                p["state"] not in ("invalid", "refused") for p in pods.values()),
            "node_marker": self.markerPresent,
            "removals": failsafe.describe(self._verdict, self.node, bool(self.markerPresent),
                                          self._orphans),
            "last_sync": self.lastSync,
            "pods": pods,
        }

    def _writeAgentStatus(self, resync=True):
        """
        Write C{status/agents/<node>}: at once at a resync (which keeps its
        C{last_sync} fresh); otherwise L{STATUS_INTERVAL} from now, as it is
        then (what is asked meanwhile is written with it), if anything in it
        changed.

        @return: L{Deferred} firing when written (at a resync) or when the
            write is scheduled.
        """
        if resync:
            return self._writeAgentStatusNow(forced=True)
        if self._statusTimer is None and self.running:
            self._statusTimer = self.reactor.callLater(STATUS_INTERVAL,
                                                       self._writeAgentStatusNow)
        return defer.succeed(None)

    def _writeAgentStatusNow(self, forced=False):
        if self._statusTimer is not None:
            if self._statusTimer.active():
                self._statusTimer.cancel()
            self._statusTimer = None
        status = self.statusRecord()
        same = dict(status, last_sync=None)
        if not forced and same == self._statusWritten:
            return defer.succeed(None)
        self._statusWritten = same
        record = AgentStatus(**status).toBytes()
        key = keys.status("agents", self.node)

        def failed(f):
            if self._statusWritten is same:  # not written: the next sync writes it
                self._statusWritten = None
            if f.check(StoreError):  # an outage: the next sync writes it again
                log.warn("cannot write {key}: {error}", key=key, error=f.getErrorMessage(),
                         node=self.node)
            else:
                log.failure("cannot write {key}", f, key=key, node=self.node)
        return self.store.put(key, record).addErrback(failed)
