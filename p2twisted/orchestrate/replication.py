# -*- test-case-name: tests.test_replicate -*-
"""
An ad-hoc, health-gated rollout of one manifest to a list of nodes (P2's
C{p2-replicate}; C{p2 replicate}).

Pre-checks, over one L{Snapshot} read under the deploy lock
C{locks/replication/<pod_id>}: no target node's pod belongs to a
controller (labelled C{replication_controller_id} or C{daemon_set_id}:
the controller would fight the rollout) unless told to ignore them, and
every target node has a live agent (else its intent would never turn into
reality, and the rollout would wait forever).

Then nodes go worst health first (a node whose pod is already down costs
nothing to replace), at most C{len(nodes) - min_nodes} at once; for each the
intent is written, then the rollout waits for its reality to hold the
manifest's SHA and its health for that SHA to reach the threshold.  A node
already running the manifest (intent and reality) is done at once.
"""

import json
import time

from twisted.internet import defer, task

from p2twisted import intent
from p2twisted.orchestrate import audit
from p2twisted.errors import P2Error, StoreUnavailable, VersionConflict
from p2twisted.records import CorruptRecord, Health, PodStatus, readable
from p2twisted.records.controllers import RC_ID_LABEL, AuditEvent
from p2twisted.records.daemonset import DS_ID_LABEL
from p2twisted.store import keys
from p2twisted.store.common import Check

#: Health statuses, worst first.
STATUSES = ("critical", "unknown", "warning", "passing")

#: Seconds between two looks at a node's reality and health.
INTERVAL = 0.5


def rank(status):
    """@return: how good C{status} is (absent or unknown statuses: worst)."""
    return STATUSES.index(status) if status in STATUSES else 0


def refusals(snapshot, podId, nodes, ignoreControllers=False):
    """
    @return: C{[reason]}, one line per node that must not be replicated to
        (empty when all may).
    """
    found = []
    for node in nodes:
        if not ignoreControllers:
            try:
                labels = snapshot.podLabels(node, podId)
            except CorruptRecord:
                labels = {}
                found.append("%s: the labels of %s there are unreadable" % (node, podId))
            for label, what in ((RC_ID_LABEL, "replication controller"),
                                (DS_ID_LABEL, "daemon set")):
                if labels.get(label):
                    found.append("%s: %s there belongs to %s %s (--ignore-controllers to "
                                 "replicate anyway)" % (node, podId, what, labels[label]))
        if not snapshot.agentUp(node):
            found.append("%s: no live agent (machines/%s is absent)" % (node, node))
    return found


def order(snapshot, podId, nodes):
    """
    @return: C{nodes} worst health first (no health record counts as
        critical), then by name.
    """
    def health(node):
        record = snapshot.health(podId, node)
        return rank(None if record is None else record.status)
    return sorted(nodes, key=lambda node: (health(node), node))


#: What L{_look} fires with while the store is unavailable.
_UNAVAILABLE = object()


def _look(f, *args):
    """
    One look of a node's wait: C{f(*args)}, or L{_UNAVAILABLE} while the
    store is unavailable -- a blip must not end a rollout that may take
    hours (the next look tries again; C{--timeout} and the lock's session
    still bound the wait).
    """
    def unavailable(failure):
        failure.trap(StoreUnavailable)
        return _UNAVAILABLE
    return defer.maybeDeferred(f, *args).addErrback(unavailable)


class Replication(object):
    """
    One rollout, driven by L{run}.

    @param store: an open L{IStore}.
    @param manifest: the L{PodManifest} to roll out.
    @param nodes: the nodes, in the order they go (see L{order}).
    @param inFlight: at most this many nodes at once.
    @param threshold: the health status a node must reach.
    @param timeout: seconds a node has to turn healthy, or C{None}.
    @param clock: an L{IReactorTime}.
    @param onChange: called with no argument whenever the progress changes.
    @param who: who the audit log says wrote each node's intent (the
        C{schedule} event of kind C{replication}, in the same transaction).
    @param lock: the deploy lock (an L{ILock}) every intent write is fenced
        on, or C{None}; see also L{lost} and L{guardLock}.
    @ivar progress: C{{node: state}}: C{"waiting"}, C{"writing"} (its
        intent on its way: it may land even if stopped now), C{"intent"} (written,
        reality not yet there), C{"health"} (reality there, health not yet
        good enough: C{health} says what it is), C{"done"}, C{"failed"}.
    """

    def __init__(self, store, manifest, nodes, inFlight, threshold="passing", timeout=None,
                 clock=None, onChange=None, interval=INTERVAL, who="p2 replicate",
                 wallClock=time.time, lock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.store = store
        self.manifest = manifest
        self.sha = manifest.sha()
        self.nodes = list(nodes)
        self.threshold = threshold
        self.timeout = timeout
        self.clock = clock
        self.onChange = onChange or (lambda: None)
        self.interval = interval
        self.who = who
        self.wallClock = wallClock
        self.progress = {node: "waiting" for node in self.nodes}
        self.health = {}
        self.stopped = False
        self.lock = lock
        self._lost = None
        self._slots = defer.DeferredSemaphore(inFlight)

    def _set(self, node, state, health=None):
        if (self.progress[node], self.health.get(node)) != (state, health):
            self.progress[node] = state
            self.health[node] = health
            self.onChange()

    def stop(self):
        """
        Start no further node; those under way are left as they are.
        """
        self.stopped = True

    def lost(self, why):
        """
        The deploy lock is gone (C{why}): start no further node, and fail
        the nodes under way at their next look (they keep their new intent).
        """
        if self._lost is None:
            self._lost = P2Error("lost the deploy lock: %s; the nodes not started are not "
                                 "touched" % (why,))
            self.stop()

    def run(self):
        """
        @return: L{Deferred} firing with C{None} when every node is done;
            failing with L{P2Error} naming the first node that failed (the
            nodes not started by then are not touched).
        """
        return defer.gatherResults([self._slots.run(self._node, node) for node in self.nodes],
                                   consumeErrors=True).addCallbacks(
            lambda _: None, lambda f: f.value.subFailure)

    @defer.inlineCallbacks
    def _node(self, node):
        if self.stopped:
            return
        started = self.clock.seconds()
        intentEntry = yield self.store.get(keys.intent(node, self.manifest.id))
        reality = yield self._realitySha(node)
        if intentEntry is None or intentEntry.value != self.manifest.raw or reality != self.sha:
            if self.stopped:
                return
            # Under way from now: stopped meanwhile (Ctrl-C), the write may
            # still land, and the node must not be said untouched.
            self._set(node, "writing")
            try:
                yield intent.schedule(self.store, node, self.manifest, lambda: self._fence() + (
                    audit.creates([AuditEvent("replication", self.manifest.id, "schedule",
                                              {"nodes": [node], "sha": self.sha})],
                                  self.who, self.wallClock())))
            except VersionConflict:
                self._set(node, "waiting")  # not written
                if self.lock is not None and not (yield self._holding()):
                    self.lost("%s is no longer ours" % (self.lock.key,))
                    raise self._lost
                raise
            self._set(node, "intent")
            while True:
                sha = yield _look(self._realitySha, node)
                if sha == self.sha:
                    break
                if sha is not _UNAVAILABLE:
                    yield _look(self._neverThere, node)
                yield self._wait(node, started, "its reality to hold %s" % (self.sha[:12],))
        status = None
        while True:
            entry = yield _look(self.store.get, keys.health(self.manifest.id, node))
            if entry is not _UNAVAILABLE:
                record = readable(Health, entry)
                status = None if record is None or record.sha != self.sha else record.status
                if status is not None and rank(status) >= rank(self.threshold):
                    break
                self._set(node, "health", status)
            yield self._wait(node, started, "its health to be %s (it is %s)" % (
                self.threshold, status or "not reported"))
        self._set(node, "done")

    @defer.inlineCallbacks
    def _realitySha(self, node):
        from p2twisted.orchestrate.snapshot import manifestSha
        entry = yield self.store.get(keys.reality(node, self.manifest.id))
        return None if entry is None else manifestSha(entry.value)

    @defer.inlineCallbacks
    def _neverThere(self, node):
        """
        Fail C{node} when its reality will never hold the manifest: its
        agent refused it (its auth policy), or someone else wrote another
        manifest into its intent meanwhile.
        """
        from p2twisted.orchestrate.snapshot import manifestSha
        from p2twisted.services import oneLine
        podId = self.manifest.id
        status = readable(PodStatus, (yield self.store.get(keys.status("pods", node, podId))))
        entry = yield self.store.get(keys.intent(node, podId))
        why = None
        if status is not None and status.state == "refused" and status.sha == self.sha:
            why = "its agent refused %s: %s; what ran there keeps running" % (
                podId, oneLine(status.error or "no reason given"))
        elif entry is None or manifestSha(entry.value) != self.sha:
            why = "its intent of %s changed while waiting (now %s); someone else deployed it" % (
                podId, manifestSha(entry.value)[:12] if entry is not None else "none")
        if why is not None:
            self._set(node, "failed", self.health.get(node))
            self.stop()
            raise P2Error("%s: %s" % (node, why))

    def _fence(self):
        return [] if self.lock is None else [Check(self.lock.key, self.lock.version)]

    @defer.inlineCallbacks
    def _holding(self):
        entry = yield self.store.get(self.lock.key)
        return entry is not None and entry.version == self.lock.version

    def _wait(self, node, started, what):
        if self._lost is not None:
            return defer.fail(self._lost)
        if self.timeout is not None and self.clock.seconds() - started >= self.timeout:
            self._set(node, "failed", self.health.get(node))
            self.stop()
            return defer.fail(P2Error("%s: gave up after %gs waiting for %s" % (
                node, self.timeout, what)))
        return task.deferLater(self.clock, self.interval, lambda: None)

    def summary(self):
        """
        @return: a line saying which nodes are done, under way and not
            started.
        """
        groups = {}
        for node in self.nodes:
            groups.setdefault(self.progress[node], []).append(node)
        parts = []
        for state, label in (("done", "done"), ("writing", "intent being written"),
                             ("intent", "intent written, reality pending"),
                             ("health", "waiting for health"), ("failed", "failed"),
                             ("waiting", "not started")):
            if groups.get(state):
                parts.append("%s: %s" % (label, ", ".join(groups[state])))
        return "; ".join(parts)

    def line(self):
        """
        @return: the live progress line.
        """
        counts = {}
        for state in self.progress.values():
            counts[state] = counts.get(state, 0) + 1
        busy = ["%s %s" % (node, "(writing intent)" if state == "writing" else
                           "(reality pending)" if state == "intent" else
                           "(health %s)" % (self.health.get(node) or "not reported",))
                for node, state in sorted(self.progress.items())
                if state in ("writing", "intent", "health")]
        return "replicate %s %s: %d/%d done%s%s" % (
            self.manifest.id, self.sha[:12], counts.get("done", 0), len(self.nodes),
            "; in flight: " + ", ".join(busy) if busy else "",
            "; %d to go" % (counts["waiting"],) if counts.get("waiting") else "")


def holderValue(session, clock):
    """@return: the JSON the deploy lock holds: who took it."""
    from p2twisted.orchestrate.farm import defaultHolder
    return defaultHolder("replication", clock)(session)


@defer.inlineCallbacks
def takeLock(store, session, podId, clock, override=False):
    """
    Take the deploy lock C{locks/replication/<podId>} in C{session}; with
    C{override}, break another holder's lock first.

    @return: L{Deferred} firing with the L{ILock}; failing with L{P2Error}
        naming the holder when it is held and not overridden.
    """
    from p2twisted.errors import AlreadyLocked
    key = keys.lock("replication", podId)
    value = holderValue(session, clock)
    try:
        lock = yield session.lock(key, value)
        return lock
    except AlreadyLocked:
        entry = yield store.get(key)
        holder = _describeHolder(entry)
        if not override:
            raise P2Error("the replication of %s is locked by %s (%s); wait for it, or "
                          "--override-lock to break the lock" % (podId, holder, key))
        yield store.delete(key)
    lock = yield session.lock(key, value)
    return lock


def guardLock(store, session, lock, onLost):
    """
    Call C{onLost(why)} when C{session} ends (the store was lost for longer
    than its TTL) or C{lock} is taken from it (another C{p2 replicate
    --override-lock}): a rollout must not go on without its lock.

    @return: the L{IWatch} of the lock's key (cancel it when done).
    """
    ended = "the store session holding it ended"
    session.whenLost().addCallback(lambda _: onLost(ended))

    def changed(snapshot):
        entry = snapshot.get(lock.key)
        if entry is None or entry.version != lock.version:
            onLost(ended if session.lost else
                   "%s was broken (p2 replicate --override-lock?)" % (lock.key,))
    return store.watch(lock.key, changed)


def _describeHolder(entry):
    if entry is None:
        return "a holder that just left"
    try:
        holder = json.loads(entry.value)
        return "pid %s on %s since %s" % (holder["pid"], holder["host"], holder["since"])
    except (ValueError, KeyError, TypeError):
        return "another process"
