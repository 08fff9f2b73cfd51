# -*- test-case-name: tests.test_orchestrate_controllers -*-
"""
The controllers a farm runs per claimed object: the glue between the store
and the pure decisions of L{p2twisted.orchestrate.rc} and
L{p2twisted.orchestrate.roll}.

Each reconcile reads a L{Snapshot} (shared with the other controllers of the
process: one read serves every controller asking meanwhile), decides, applies
the plan as transactions that each begin with the fence
C{[Check(lock), Check(object record)]}, writes the object's status
(C{status/<kind>/<id>}, under the same lock check) and appends what it
changed to C{audit/}.
"""

import os
import re
import socket
import time

import attr
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted import records
from p2twisted.errors import KeyExists, StoreError, VersionConflict
from p2twisted.orchestrate import audit, rc as rcLogic, roll as rollLogic
from p2twisted.orchestrate.farm import IController
from p2twisted.orchestrate.plan import Plan, Planner, Wait, batches
from p2twisted.records.base import dumpObject
from p2twisted.records.controllers import RC_ID_LABEL, AuditEvent
from p2twisted.store import keys
from p2twisted.store.common import Check, Put

log = Logger()

#: The kind the audit log names replication controllers by (as the CLI's
#: changes to them do).
AUDIT_KIND = "replication_controller"

#: Seconds after applying a plan until the controller looks again.
LOOK_AGAIN = 1.0

#: Seconds after a plan lost a race with another write until the
#: controller decides again.
DECIDE_AGAIN = 0.2

#: Seconds a status that changed only in its counts waits after the last
#: status written: a fleet's burst of health changes moved the counts of the
#: RCs and rolls it touched, and their statuses were written at every
#: reconcile (up to ten times a second each); held, the latest is written a
#: second after the last, and any other change at once.
STATUS_HOLD = 1.0

#: Seconds of CPU a decision costs, on a real reactor: the CPU of the
#: reactor's thread alone (C{time.process_time} counted what the ZooKeeper
#: client's thread spent meanwhile too, and slowed the news for nothing).
CPU = time.thread_time


def _noCPU():
    """A simulated clock's decisions take no time."""
    return 0.0


#: Who the audit events of this process name.
WHO = "p2-orchestrator@%s:%d" % (socket.gethostname(), os.getpid())


class SnapshotReader(object):
    """
    Coalesced snapshot reads: L{read} fires with a snapshot read I{after} it
    was called; callers arriving while a read is under way share the next
    one, so N controllers woken by the same news cost one read, not N.

    @param read: a function of the store giving a L{Deferred} snapshot
        (default L{Snapshot.read}).
    """

    def __init__(self, store, read=None):
        if read is None:
            from p2twisted.orchestrate.snapshot import Snapshot
            read = Snapshot.read
        self.store = store
        self._read = read
        self._running = False
        self._queued = []
        #: How many reads were made (for tests and logs).
        self.reads = 0

    def read(self, after=()):
        """
        @param after: ignored: a read begun after this call sees every write
            made before it.
        @return: L{Deferred} firing with a snapshot begun after this call;
            fails with the store's error.
        """
        d = defer.Deferred()
        self._queued.append(d)
        if not self._running:
            self._next()
        return d

    def _next(self):
        waiters, self._queued = self._queued, []
        if not waiters:
            return
        self._running = True
        self.reads += 1
        d = defer.maybeDeferred(self._read, self.store)

        def done(result):
            self._running = False
            for w in waiters:
                w.callback(result) if not isinstance(result, defer.Failure) else w.errback(result)
            self._next()
        d.addBoth(done)


#: Seconds a L{WatchedReader} waits for its watches to show a controller's
#: own writes before it lists the trees instead.
PATIENCE = 5.0

#: The trees a L{WatchedReader} keeps: those a L{Snapshot} indexes for the
#: controllers' decisions.
WATCHED = (keys.INTENT, keys.REALITY, keys.MACHINES, keys.labelTree("node"),
           keys.labelTree("pod"), keys.HEALTH, keys.REPLICATION_CONTROLLERS, keys.ROLLS)


class WatchedReader(service.Service):
    """
    Snapshots kept current by watches instead of read afresh: a
    L{SnapshotReader} lists every tree at each read (on ZooKeeper, two
    requests per znode: ~11,000 for a fleet of 1,000 nodes, seconds on a
    loaded machine), where this reader watches the trees once and answers
    from what the watches last delivered.  A read is as fresh as the
    watches (a change reaches them within milliseconds); a decision that a
    later write overtook fails its compare-and-set and is made again.

    After each change to a tree (but its first delivery) it calls
    C{onChange(tree)}: news comes after the reads can see it.

    A controller reads its own writes: L{read} given the keys it wrote (with
    their versions before) waits until the watches show each of them
    changed, or lists the trees afresh after C{patience} seconds.  The
    trees' watches deliver independently, and a decision over a snapshot
    showing a new pod's intent but not yet its pod labels scheduled the
    replica a second time on another node (a create, which no fence or
    compare-and-set refuses).

    @ivar reads: how many reads were answered (for tests and logs).
    """

    def __init__(self, store, trees=WATCHED, onChange=None, clock=None, patience=PATIENCE):
        if clock is None:
            from twisted.internet import reactor as clock
        self.store = store
        self.trees = tuple(trees)
        self.onChange = onChange
        self.clock = clock
        self.patience = patience
        self.reads = 0
        self._behind = []
        self._latest = {}
        self._snapshot = self._previous = None
        #: The trees delivered since the last snapshot was built.
        self._changed = set()
        self._waiting = []
        self._watches = []

    def startService(self):
        service.Service.startService(self)
        self._watches = [self.store.watch(tree, self._watcher(tree)) for tree in self.trees]

    def stopService(self):
        service.Service.stopService(self)
        for watch in self._watches:
            watch.cancel()
        self._watches, self._latest, self._snapshot, self._previous = [], {}, None, None
        self._changed = set()

    def _watcher(self, tree):
        def changed(entries):
            first = tree not in self._latest
            self._latest[tree] = entries
            self._changed.add(tree)
            self._snapshot = None
            if self._waiting and len(self._latest) == len(self.trees):
                waiting, self._waiting = self._waiting, []
                for d in waiting:
                    d.callback(self._current())
            behind, self._behind = self._behind, []
            for after, d, timer in behind:
                if self._shows(after):
                    timer.cancel()
                    d.callback(self._current())
                else:
                    self._behind.append((after, d, timer))
            if not first and self.onChange is not None:
                self.onChange(tree)
        return changed

    def _shows(self, after):
        """Whether the watches delivered every tree, and changes of C{after}."""
        if len(self._latest) != len(self.trees):
            return False
        snapshot = self._current()
        trees = [keys.parse(tree) for tree in self.trees]
        return all(snapshot.version(key) != version for key, version in after
                   if any(keys.parse(key)[:len(tree)] == tree for tree in trees))

    def _current(self):
        if self._snapshot is None:
            from p2twisted.orchestrate.snapshot import Snapshot
            entries = {}
            for tree in self.trees:
                entries.update(self._latest[tree])
            # The trees delivered since the last snapshot are indexed again;
            # the others, and what it decoded of unchanged entries, are kept.
            self._snapshot = self._previous = Snapshot(
                entries, self._previous, trees=self._latest, changed=self._changed)
            self._changed = set()
        return self._snapshot

    def entries(self, tree):
        """
        @return: C{{key: Entry}} of C{tree} as its watch last delivered it
            (C{{}} before it has).
        """
        return self._latest.get(tree, {})

    def latest(self):
        """
        @return: the L{Snapshot} of what the watches last delivered, or
            C{None} until each has delivered once.
        """
        return self._current() if len(self._latest) == len(self.trees) else None

    def read(self, after=()):
        """
        @param after: C{(key, version)} pairs: keys the caller changed from
            C{version} (C{None}: absent) that the snapshot must show.
        @return: L{Deferred} firing with a L{Snapshot} of what the watches
            last delivered, once each has delivered once and shows
            C{after}; failing that, after C{patience} seconds, with the trees
            listed afresh.
        """
        self.reads += 1
        after = tuple(after)
        if not after:
            if len(self._latest) == len(self.trees):
                return defer.succeed(self._current())
            d = defer.Deferred()
            self._waiting.append(d)
            return d
        if self._shows(after):
            return defer.succeed(self._current())
        d = defer.Deferred()

        def impatient():
            from p2twisted.orchestrate.snapshot import Snapshot
            self._behind[:] = [b for b in self._behind if b[1] is not d]
            Snapshot.read(self.store, self.trees).chainDeferred(d)
        self._behind.append((after, d, self.clock.callLater(self.patience, impatient)))
        return d


class _Controller(object):
    """
    What both controllers share: the fence, the status write and the audit.

    Subclasses define C{kind}, C{recordKey()} and C{decide(snapshot)},
    returning C{(Plan, Wait or Done; status dict)}, or C{(None, None)} when
    the object's record is gone.
    """

    kind = None
    #: Seconds a status changed only in its counts may be held back (see
    #: L{report}); none for a status that records what a restart resumes
    #: from (a daemon set's progress).
    statusHold = 0.0

    def __init__(self, store, objectId, lock, clock, reader, planner=None, who=WHO, cpu=None):
        """
        @param cpu: a function giving seconds of CPU, which measures what a
            decision cost (L{IController.cost}, by which the farm paces
            news); default L{CPU} on a real reactor, and none on a
            simulated clock (a L{task.Clock}), whose pacing then follows
            the clock alone, as its tests do.
        """
        if cpu is None:
            cpu = CPU if IReactorCore.providedBy(clock) else _noCPU
        self.cpu = cpu
        self.store = store
        self.objectId = objectId
        self.lock = lock
        self.clock = clock
        self.reader = reader
        self.planner = planner if planner is not None else Planner(store)
        self.who = who
        self._stopped = False
        #: Seconds of CPU the last decision took (L{IController.cost}).
        self.cost = 0.0
        self._status = None
        #: When the last status was written (clock), the status held back
        #: (only its counts changed since) and the call writing it.
        self._statusAt = None
        self._held = None
        self._holding = None
        self._wrote = ()
        self.statusKey = keys.status(self.kind, objectId)

    def start(self):
        log.info("{kind} {object}: controller started", kind=self.kind, object=self.objectId,
                 event="start")

    def stop(self):
        """
        Stop; a status held back is written first (the last state a
        status shows is never hidden).

        @return: L{Deferred} firing once done (never failing).
        """
        held = self._held
        self._release()
        d = self._write(held) if held is not None else defer.succeed(None)
        self._stopped = True
        return d

    def fence(self, snapshot):
        """
        @return: the C{Check} ops beginning every transaction: the farm's
            lock and the object's record, as read.
        """
        key = self.recordKey()
        return [Check(self.lock.key, self.lock.version), Check(key, snapshot.version(key))]

    @defer.inlineCallbacks
    def reconcile(self):
        """
        Read, decide, apply, report.

        @return: L{Deferred} firing with C{None}, or with the seconds after
            which to reconcile again without news: L{LOOK_AGAIN} after a
            plan was applied (to see its effect and report fresh counts), or
            a wait's deadline; fails with the store's error (the farm
            retries).
        """
        if self._stopped:
            return None
        # What the last plan wrote must show, or this decides over a
        # snapshot older than its own writes.
        wrote, self._wrote = self._wrote, ()
        asked = self.clock.seconds()
        snapshot = yield (self.reader.read(wrote) if wrote else self.reader.read())
        if self._stopped:
            return None
        read = self.clock.seconds()
        began = self.cpu()
        try:
            outcome, status = self.decide(snapshot)
        except records.CorruptRecord as e:
            log.warn("{kind} {object}: {error}", kind=self.kind, object=self.objectId,
                     error=str(e), event="corrupt")
            yield self.report({"error": str(e)})
            return None
        finally:
            self.cost = self.cpu() - began
        if outcome is None:  # the record is gone: the farm releases it
            return None
        applied = isinstance(outcome, Plan) and bool(outcome)
        if applied:
            try:
                yield self.planner.apply(outcome, fence=self.fence(snapshot),
                                         audit=self.auditOps(outcome))
            except StoreError as e:
                # What went through before the failure carried its audit.
                done = getattr(e, "applied", ())
                self._wrote = _writes(attr.evolve(outcome, changes=done), snapshot)
                if not isinstance(e, (VersionConflict, KeyExists)):
                    raise
                yield self.report(dict(status, error="the store changed under this plan "
                                                     "(%s); deciding again" % (e,)))
                if e.key == self.lock.key:
                    raise  # the lock is lost: the farm backs off (and notices)
                # The object or a node changed meanwhile (a roll moving the
                # counts, say): decide again soon, not after a backoff that
                # grows with each such race.
                log.info("{kind} {object}: {error}; deciding again", kind=self.kind,
                         object=self.objectId, error=str(e), event="conflict")
                return DECIDE_AGAIN
            self._wrote = _writes(outcome, snapshot)
            log.info("{kind} {object}: {reason} (read {read:.3f}s, decided {decided:.3f}s, "
                     "applied {applied:.3f}s)", kind=self.kind, object=self.objectId,
                     reason=outcome.reason, event="applied", read=read - asked,
                     decided=self.cost, applied=self.clock.seconds() - read - self.cost)
        yield self.report(dict(status, error=None))
        if isinstance(outcome, Wait) and outcome.at is not None:
            return max(outcome.at - self.clock.seconds(), 0.0)
        return LOOK_AGAIN if applied else None

    def events(self, plan):
        """
        @return: the L{AuditEvent}s (without who/when) of an applied C{plan}.
        """
        return list(plan.events)

    def auditOps(self, plan):
        """
        @return: the C{audit} callable of L{IPlanner.apply} for C{plan}: the
            ops appending the events of each transaction's changes, written
            in that transaction (a process killed right after a change still
            leaves its record).
        """
        when = self.clock.seconds()

        def ops(changes, first):
            part = attr.evolve(plan, changes=changes, events=plan.events if first else ())
            return audit.creates(self.events(part), self.who, when)
        return ops

    def report(self, status):
        """
        Write C{status} (plus since-when) to C{status/<kind>/<id>} when it
        changed, under the lock check; a status a lost lock cannot write is
        not written.  One that changed only in its counts (L{countsOnly})
        within C{statusHold} seconds of the last written is held back and
        written then, unless a later one replaces it.

        @return: L{Deferred} firing once written or held (never failing).
        """
        if self._stopped:
            return defer.succeed(None)
        if status == self._status:
            self._release()  # what the status shows is the latest again
            return defer.succeed(None)
        now = self.clock.seconds()
        if (self._statusAt is not None and now < self._statusAt + self.statusHold
                and countsOnly(self._status, status)):
            self._held = status
            if self._holding is None:
                self._holding = self.clock.callLater(self._statusAt + self.statusHold - now,
                                                     self._flush)
            return defer.succeed(None)
        self._release()
        return self._write(status)

    def _release(self):
        """Forget the status held back, and the call that was to write it."""
        self._held = None
        if self._holding is not None and self._holding.active():
            self._holding.cancel()
        self._holding = None

    def _flush(self):
        self._holding = None
        held, self._held = self._held, None
        if held is not None and not self._stopped:
            self._write(held)

    @defer.inlineCallbacks
    def _write(self, status):
        self._statusAt = self.clock.seconds()
        value = dumpObject(dict(status, since=_iso(self.clock.seconds()), holder=self.who))
        try:
            yield self.store.transaction([Check(self.lock.key, self.lock.version),
                                          Put(self.statusKey, value)])
        except StoreError as e:
            log.warn("{kind} {object}: cannot write its status: {error}", kind=self.kind,
                     object=self.objectId, error=str(e))
            return
        self._status = status


_NUMBER = re.compile(r"(?<![\w.\-/])\d+(?:\.\d+)?")


def countsOnly(before, after):
    """
    @return: whether status C{after} differs from C{before} only in counts:
        numbers, and numbers standing alone in its texts (a roll's reason
        shows its RCs' counts), not a node's or an object's name.
    """
    if isinstance(before, dict) and isinstance(after, dict):
        return before.keys() == after.keys() and all(
            countsOnly(before[k], after[k]) for k in before)
    if isinstance(before, str) and isinstance(after, str):
        return _NUMBER.sub("#", before) == _NUMBER.sub("#", after)
    if isinstance(before, bool) or isinstance(after, bool):
        return before == after
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        return True
    return before == after


def _writes(plan, snapshot):
    """
    @return: C{(key, version)} of each key the applied C{plan} wrote, with
        its version in C{snapshot}, the one it was decided over.
    """
    return tuple((op.key, snapshot.version(op.key))
                 for _, ops in batches(plan, snapshot) for op in ops
                 if not isinstance(op, Check))


def _iso(when):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def podCounts(rc, snapshot):
    """
    @return: C{{"desired", "current", "real", "healthy"}} of C{rc}: its pods
        (by label), those running its manifest, and those of these whose
        health is passing (as a roll counts them).
    """
    found = rollLogic.count(rc, snapshot)
    return {"desired": found.desired, "current": found.current, "real": found.real,
            "healthy": found.healthy}


@implementer(IController)
class RCController(_Controller):
    """
    Keeps a replication controller's pods where L{rc.decide} says.
    """

    kind = "rc"
    statusHold = STATUS_HOLD
    #: The audit kind of its events, and the pod label naming its pods' owner.
    auditKind = AUDIT_KIND
    ownerLabel = RC_ID_LABEL

    def __init__(self, *args, **kw):
        self.decideRC = kw.pop("decide", rcLogic.decide)
        _Controller.__init__(self, *args, **kw)

    def recordKey(self):
        return keys.replicationController(self.objectId)

    def decide(self, snapshot):
        rc = snapshot.rc(self.objectId)
        if rc is None:
            return None, None
        plan = self.decideRC(rc, snapshot)
        status = dict(podCounts(rc, snapshot), shortfall=plan.shortfall,
                      disabled=rc.disabled, reason=plan.reason)
        return plan, status

    def events(self, plan):
        """
        @return: the plan's own events, then one per kind of change: pods
            placed (C{schedule}), pods whose intent already held the
            manifest and were only labelled as the RC's (C{adopt}: scheduled
            by hand, or their labels lost), the RC's own pods only relabelled
            (C{relabel}: its pod labels changed), pods whose intent was rewritten in place
            (C{rewrite}: drift, or a roll's takeover) and pods removed
            (C{unschedule}), each naming its nodes.
        """
        found = list(plan.events)
        before = plan.snapshot
        placed = [c for c in plan.scheduled()
                  if before is None or before.intent(c.node, c.podId) is None]
        kept = [c for c in plan.scheduled() if c not in placed
                and before.intent(c.node, c.podId).value == c.manifest]
        adopted = [c for c in kept if not self._wasMine(before, c)]
        relabelled = [c for c in kept if c not in adopted]
        rewritten = [c for c in plan.scheduled() if c not in placed and c not in kept]
        for action, changes in (("schedule", placed), ("adopt", adopted),
                                ("relabel", relabelled), ("rewrite", rewritten),
                                ("unschedule", plan.unscheduled())):
            if changes:
                found.append(AuditEvent(self.auditKind, self.objectId, action, {
                    "nodes": sorted(c.node for c in changes), "pod_id": changes[0].podId,
                    "reason": plan.reason}))
        return found


    def _wasMine(self, snapshot, change):
        try:
            labels = snapshot.podLabels(change.node, change.podId)
        except StoreError:
            return False
        return labels.get(self.ownerLabel) == self.objectId


@implementer(IController)
class RollController(_Controller):
    """
    Moves a rolling update on by L{roll.step}.
    """

    kind = "roll"
    statusHold = STATUS_HOLD

    def __init__(self, *args, **kw):
        self.step = kw.pop("step", rollLogic.step)
        _Controller.__init__(self, *args, **kw)

    def recordKey(self):
        return keys.roll(self.objectId)

    def decide(self, snapshot):
        roll = snapshot.roll(self.objectId)
        if roll is None:
            return None, None
        outcome = self.step(roll, snapshot, self.clock.seconds())
        status = {"state": roll.state, "desired": roll.desired, "min_healthy": roll.min_healthy,
                  "reason": outcome.reason, "rollback_reason": roll.reason}
        for name, rcId in (("old", roll.old_rc), ("new", roll.new_rc)):
            rc = snapshot.rc(rcId)
            status[name] = dict(podCounts(rc, snapshot), id=rcId) if rc is not None else None
        return outcome, status

def _dsController(*args, **kw):
    """The daemon set farm's controller (its module imports this one)."""
    from p2twisted.orchestrate.dscontroller import DSController
    return DSController(*args, **kw)


@attr.s(frozen=True)
class FarmKind(object):
    """
    One kind of farm C{twistd p2-orchestrator --farms} can run.

    @ivar name: its lock and status kind, and its C{--farms} name.
    @ivar tree: the tree of its objects.
    @ivar news: trees whose changes have its controllers reconcile before
        the next resync.
    @ivar controller: the L{IController} class, called as C{controller(store,
        objectId, lock, clock, reader)}.
    @ivar holdWhenEmpty: whether the farm's empty-tree failsafe holds (not
        for rolls: the last roll ending empties their tree).
    @ivar prepare: C{None}, or C{prepare(store, clock, config)} giving what
        the orchestrator sets up once for this kind: an object with
        C{context} (keyword arguments of every controller), C{services}
        (run beside the farm) and C{run} (false: the farm does not run).
    """

    name = attr.ib()
    tree = attr.ib()
    news = attr.ib()
    controller = attr.ib()
    holdWhenEmpty = attr.ib(default=True)
    prepare = attr.ib(default=None)

    def factory(self, store, clock, reader=None, context=None):
        """
        @param context: keyword arguments for every controller.
        @return: the farm's C{controllerFactory(objectId, lock)}; its
            controllers share C{reader} (default: a new L{SnapshotReader}).
        """
        if reader is None:
            reader = SnapshotReader(store)
        context = context or {}
        return lambda objectId, lock: self.controller(store, objectId, lock, clock, reader,
                                                      **context)


def _podClusterController(*args, **kw):
    from p2twisted.orchestrate.pcfarm import PodClusterController
    return PodClusterController(*args, **kw)


def _preparePodClusters(store, clock, config):
    from p2twisted.orchestrate.pcfarm import prepare
    return prepare(store, clock, config)


#: The farms there are, by C{--farms} name.  Their news trees leave out
#: what their own writes change most (intent, pod labels for RCs), which the
#: resync covers.
FARMS = {
    "rc": FarmKind("rc", keys.REPLICATION_CONTROLLERS,
                   (keys.labelTree("node"), keys.HEALTH, keys.MACHINES, keys.REALITY, keys.ROLLS),
                   RCController),
    "roll": FarmKind("roll", keys.ROLLS,
                     (keys.REPLICATION_CONTROLLERS, keys.labelTree("pod"), keys.HEALTH,
                      keys.REALITY), RollController, holdWhenEmpty=False),
    "pc": FarmKind("pc", keys.POD_CLUSTERS,
                   (keys.labelTree("pod"), keys.HEALTH, keys.MACHINES, keys.INTENT),
                   _podClusterController, prepare=_preparePodClusters),
    "ds": FarmKind("ds", keys.DAEMON_SETS,
                   (keys.labelTree("node"), keys.HEALTH, keys.MACHINES, keys.REALITY),
                   _dsController),
}
