# -*- test-case-name: tests.test_agent_service -*-
"""
The machine agent service: registers the machine (taking over the key of a
dead predecessor on this machine), watches this node's intent, resyncs
periodically, and hands each pod to its L{PodWorker}; its children check the
pods' health (L{HealthMonitor}) and carry out the requests of C{p2 run} and
C{p2 logs} (L{RequestRunner}).

Failsafes (DESIGN.md):
  - The agent acts on an intent listing only while C{intent/<node>} holds the
    node marker; without it, nothing is installed or removed, and the log and
    C{status/agents/<node>} say so.
  - While the store is unreachable or the machine's session is lost, running
    pods keep running and nothing is installed or removed.
"""

import json
import time

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from p2twisted.agent.health import HealthMonitor
from p2twisted.agent.hookpods import HookSync
from p2twisted.agent.supervisors import processStartTime
from p2twisted.agent.requests import RequestRunner
from p2twisted.agent.worker import IDLE, PodWorker, retryPolicy
from p2twisted.errors import StoreError
from p2twisted.store import keys, openStore
from p2twisted.store.presence import Presence

log = Logger()


def deadPredecessor(facts, value):
    """
    Whether C{machines/<node>} holding C{value} was left by an agent whose
    process is gone (killed, its session not expired yet), so a restarted
    agent may take it over rather than wait.  Only a holder provably of this
    machine, this boot and this pid namespace qualifies (another container
    or a clone sharing the machine id never does), and only if its pid is
    gone or now belongs to a process started at another time.

    @param facts: this agent's facts (C{machine_id}, C{process}).
    @param value: the key's value: the previous holder's facts.
    """
    try:
        previous = json.loads(value)
    except ValueError:
        return False
    if not isinstance(previous, dict):
        return False
    mine, theirs = facts.get("process") or {}, previous.get("process")
    if not (isinstance(theirs, dict) and facts.get("machine_id")
            and previous.get("machine_id") == facts["machine_id"]):
        return False
    for key in ("boot_id", "pid_ns"):
        if mine.get(key) is None or theirs.get(key) != mine[key]:
            return False
    pid = theirs.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or pid == mine.get("pid"):
        return False
    # None when it is gone or a zombie: different from any start time.
    return processStartTime(pid) != theirs.get("pid_start")


class AgentService(service.MultiService):
    """
    The agent.

    @param config: an L{p2twisted.agent.config.AgentConfig}.
    @param pods: the L{IPodOperations}.
    @param reactor: the reactor (clock, processes).
    @param store: an open L{IStore}, or C{None} to open C{config.store}.
    """

    def __init__(self, config, pods, reactor, store=None, facts=None):
        service.MultiService.__init__(self)
        self.config = config
        self.node = config.node
        self.pods = pods
        self.reactor = reactor
        self.store = store
        self.facts = facts or (lambda: {"node": self.node})
        self.workers = {}
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

    # -- lifecycle -----------------------------------------------------------

    def startService(self):
        service.MultiService.startService(self)
        self._opening = self._open().addErrback(
            lambda f: log.failure("the agent failed to start", f, node=self.node))

    @defer.inlineCallbacks
    def _open(self):
        while self.store is None and self.running:
            try:
                self.store = yield openStore(self.config.store, self.reactor)
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
                                 takeOver=lambda value: deadPredecessor(self.facts(), value))
        self.presence.setServiceParent(self)
        # A store error here (a blip just after it opened) must not leave
        # the agent up but never watching: try again.
        while self.running:
            try:
                yield self._adoptOrphans()
                break
            except StoreError as e:
                delay = self._openDelay(self._openAttempts)
                self._openAttempts += 1
                log.warn("cannot look for orphaned pods: {error}; retrying in {delay:.1f}s",
                         error=str(e), delay=delay, node=self.node)
                yield task.deferLater(self.reactor, delay, lambda: None)
        if not self.running:  # stopped meanwhile: start nothing more
            return
        self._startRequests()
        self._startHealth()
        self._watch = self.store.watch(keys.intentNode(self.node), self._intentChanged)
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
                                 self.pods.installer, resyncInterval=self.config.resyncInterval)
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
            RequestRunner(self.store, self.node, self.reactor, handlers).setServiceParent(self)

    def _startHealth(self):
        """
        Check the installed pods' health and publish it in the agent's
        session, unless the pod operations check none.
        """
        checker = self.pods.healthChecker()
        if checker is not None:
            HealthMonitor(self.store, self.node, self.reactor, checker,
                          self.pods.installedPods, self._liveSession,
                          settled=self._settled).setServiceParent(self)

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
        if self._watch is not None:
            self._watch.cancel()
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
        for worker in self.workers.values():
            worker.kick()

    def _machineValue(self):
        return json.dumps(self.facts(), sort_keys=True).encode()

    # -- intent ----------------------------------------------------------------

    def _intentChanged(self, snapshot):
        # The watch's snapshot may be older than a listing a resync took
        # meanwhile (it waits for the previous call to end): handed over
        # after it, it would take a pod scheduled since for unscheduled.  So
        # the watch only says when to read intent afresh, in turn.
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
            snapshot = yield self.store.list(keys.intentNode(self.node))
            yield self._converge(snapshot, resync=resync)
        except StoreError as e:
            log.warn("sync failed: {error}", error=str(e), node=self.node)
        except Exception:
            log.failure("sync failed", node=self.node)

    @defer.inlineCallbacks
    def _converge(self, snapshot, resync):
        markerKey = keys.intentNode(self.node)
        if markerKey not in snapshot:
            if self.markerPresent is not False:
                log.warn("{key} holds no node marker: acting on nothing (failsafe); "
                         "schedule a pod with 'p2 schedule --node {node}' to create it",
                         key=markerKey, node=self.node, event="no-marker")
            self.markerPresent = False
            yield self._writeAgentStatus()
            return
        self.markerPresent = True
        intents = {}
        for key, entry in snapshot.items():
            podId = keys.child(markerKey, key)
            if podId is not None and key == keys.intent(self.node, podId):
                intents[podId] = entry
        reality = yield self.store.list(keys.realityNode(self.node))
        realPods = {keys.child(keys.realityNode(self.node), k) for k in reality}
        realPods.discard(None)
        if not self.running:  # stopped meanwhile: its workers are stopped
            return
        # A pod in neither is gone: its worker is told once (an intent with
        # no reality, e.g. an invalid one, leaves only its status to delete),
        # then forgotten once it has converged to nothing.
        gone = set(self.workers) - set(intents) - realPods
        for podId in sorted(gone):
            if self.workers[podId].absent():
                del self.workers[podId]
        for podId in sorted(set(intents) | realPods | (gone & set(self.workers))):
            self.worker(podId).update(intents.get(podId), resync=resync)
        self.lastSync = time.time()
        yield self._writeAgentStatus()

    def worker(self, podId):
        """
        @return: the L{PodWorker} of C{podId}, created on first use.
        """
        if podId not in self.workers:
            self.workers[podId] = PodWorker(self.pods, self.store, self.node, podId,
                                            self.reactor, canAct=self.canAct)
        return self.workers[podId]

    @defer.inlineCallbacks
    def _adoptOrphans(self):
        """
        Pods on disk in neither intent nor reality are written to reality, so
        the normal loop removes them (subject to the marker failsafe).
        """
        onDisk = yield defer.maybeDeferred(self.pods.installedPods)
        if not onDisk:
            return
        intent = yield self.store.list(keys.intentNode(self.node))
        reality = yield self.store.list(keys.realityNode(self.node))
        for podId, raw in sorted(onDisk.items()):
            if keys.intent(self.node, podId) in intent or keys.reality(self.node, podId) in reality:
                continue
            log.info("pod {pod} is on disk but in neither intent nor reality; recording it in "
                     "reality so it is removed", pod=podId, node=self.node, event="orphan")
            yield self.store.put(keys.reality(self.node, podId), raw)

    # -- status ----------------------------------------------------------------

    def converged(self):
        """
        @return: whether every pod worker is idle and the agent can act.
        """
        return self.canAct() and all(w.state == "idle" for w in self.workers.values())

    def statusRecord(self):
        """
        @return: the agent's status as a JSON-able dict.
        """
        return {
            "node": self.node,
            "store": self.config.store,
            "connected": self.canAct(),
            "converged": self.converged(),
            "node_marker": self.markerPresent,
            "last_sync": self.lastSync,
            "pods": {podId: {"state": w.state, "attempts": w.attempts, "error": w.lastError}
                     for podId, w in sorted(self.workers.items())},
        }

    def _writeAgentStatus(self):
        record = json.dumps(self.statusRecord(), sort_keys=True).encode()
        key = keys.status("agents", self.node)

        def failed(f):
            if f.check(StoreError):  # an outage: the next sync writes it again
                log.warn("cannot write {key}: {error}", key=key, error=f.getErrorMessage(),
                         node=self.node)
            else:
                log.failure("cannot write {key}", f, key=key, node=self.node)
        return self.store.put(key, record).addErrback(failed)
