# -*- test-case-name: tests.test_orchestrate_plan -*-
"""
Plans: what an orchestrator wants changed, and how a plan becomes store
transactions.

L{rc.decide} and L{roll.step} are pure: they read a L{Snapshot} and return a
L{Plan} (or L{Wait} / L{Done}).  L{toTransactions} turns a plan into
transactions of at most 64 ops, each beginning with the caller's I{fence}:
C{Check} ops on the farm's lock and the object's version, so a process that
lost its lock (or decided over a stale object) writes nothing.  Every other
write is a compare-and-set against the version the plan was decided over, so
a plan made from a stale snapshot fails instead of clobbering a newer write.

Scheduling a pod writes its intent, its pod labels and, on a node without
one, the node marker in one transaction; one node's changes are never split
across transactions.
"""

import attr
from twisted.internet import defer
from zope.interface import Attribute, Interface, implementer

from p2twisted.errors import StoreError
from p2twisted.intent import nodeMarker
from p2twisted.labels import encodeLabels
from p2twisted.store import keys
from p2twisted.store.common import MAX_OPS, Check, Create, Delete, Put


@attr.s(frozen=True)
class Schedule(object):
    """
    Run C{manifest} (bytes) as C{podId} on C{node}, labelled C{podLabels}
    (the pod's whole label map).
    """

    node = attr.ib()
    podId = attr.ib()
    manifest = attr.ib(repr=False)
    podLabels = attr.ib(hash=False)


@attr.s(frozen=True)
class Unschedule(object):
    """Remove C{podId} from C{node}'s intent, and its pod labels."""

    node = attr.ib()
    podId = attr.ib()


#: The version of an L{UpdateRecord} written whatever the entry holds.
ANY = "any"


@attr.s(frozen=True)
class UpdateRecord(object):
    """
    Write C{value} to C{key} if it still has C{version} (C{None}: if it is
    absent; L{ANY}: in any case); a C{value} of C{None} deletes it.
    """

    key = attr.ib()
    value = attr.ib(repr=False)
    version = attr.ib()


@attr.s(frozen=True)
class Plan(object):
    """
    Changes to make, why, and how many replicas could not be placed.

    @ivar changes: a tuple of L{Schedule}, L{Unschedule}, L{UpdateRecord}.
    @ivar events: L{AuditEvent}s (without who/when) to append once applied.
    @ivar snapshot: the snapshot it was decided over (its versions guard
        the writes).
    """

    changes = attr.ib(converter=tuple, default=())
    reason = attr.ib(default="")
    shortfall = attr.ib(default=0)
    events = attr.ib(converter=tuple, default=())
    snapshot = attr.ib(default=None, eq=False, repr=False)

    def __bool__(self):
        return bool(self.changes)

    def scheduled(self):
        return [c for c in self.changes if isinstance(c, Schedule)]

    def unscheduled(self):
        return [c for c in self.changes if isinstance(c, Unschedule)]


@attr.s(frozen=True)
class Wait(object):
    """
    Nothing to do until the world changes (or until C{at}, seconds since the
    epoch, when given); C{reason} says what it waits for.
    """

    reason = attr.ib()
    at = attr.ib(default=None)

    def __bool__(self):
        return False


@attr.s(frozen=True)
class Done(object):
    """The object needs nothing more, ever; C{reason} says why."""

    reason = attr.ib()

    def __bool__(self):
        return False


class PlanTooLarge(ValueError):
    """One node's changes do not fit in one transaction beside the fence."""


def _versioned(key, version, same, value):
    """
    Write C{value} over the entry read at C{version} by compare-and-set, or
    create it (C{version} C{None}); when it is the C{same}, only check it.
    """
    if version is None:
        return Create(key, value)
    if same:
        return Check(key, version)
    return Put(key, value, version)


def _opsFor(change, snapshot, marked):
    if isinstance(change, UpdateRecord):
        if change.value is None:
            return [Delete(change.key, change.version)]
        if change.version is None:
            return [Create(change.key, change.value)]
        return [Put(change.key, change.value, None if change.version == ANY else change.version)]
    if snapshot is None:
        raise ValueError("a plan that schedules or unschedules needs the snapshot it was "
                         "decided over")
    labelKey = keys.label("pod", "%s/%s" % (change.node, change.podId))
    labelVersion = snapshot.podLabelsVersion(change.node, change.podId)
    intentKey = keys.intent(change.node, change.podId)
    intentEntry = snapshot.intent(change.node, change.podId)
    ops = []
    if isinstance(change, Unschedule):
        if intentEntry is not None:
            ops.append(Delete(intentKey, intentEntry.version))
        if labelVersion is not None:
            ops.append(Delete(labelKey, labelVersion))
        return ops
    # Over an existing intent, its compare-and-set already fails if the node
    # was wiped since (a recursive delete takes the children first); a new
    # intent checks, or creates, the marker.
    if intentEntry is None and change.node not in marked:
        marked.add(change.node)
        marker = snapshot.marker(change.node)
        markerKey = keys.intentNode(change.node)
        ops.append(Create(markerKey, nodeMarker(change.node)) if marker is None
                   else Check(markerKey, marker.version))
    ops.append(_versioned(intentKey, None if intentEntry is None else intentEntry.version,
                          intentEntry is not None and intentEntry.value == change.manifest,
                          change.manifest))
    ops.append(_versioned(labelKey, labelVersion,
                          snapshot.podLabels(change.node, change.podId) == change.podLabels,
                          encodeLabels(change.podLabels)))
    return ops


#: Ops kept free in each transaction for the audit events of its changes
#: (one per kind of change, plus the plan's own events in the first).
AUDIT_ROOM = 8


def batches(plan, snapshot=None, fence=(), audit=None):
    """
    @param snapshot: the snapshot C{plan} was decided over (default: the
        plan's own).
    @param fence: C{Check} ops that begin every transaction.
    @param audit: C{None}, or C{audit(changes, first)} returning the ops
        (at most L{AUDIT_ROOM}) that append the audit events of a
        transaction's C{changes} (C{first}: it is the plan's first, which
        also carries the plan's own events) -- in the same transaction, so a
        change is never made without its record, even by a process killed
        right after.
    @return: a list of C{(changes, ops)}: each transaction (at most 64 ops)
        and the plan's changes it makes; a plan's record updates share one
        transaction, and a node's changes are never split.
    @raise PlanTooLarge: if a group cannot fit beside the fence.
    """
    if not isinstance(plan, Plan):
        return []
    snapshot = plan.snapshot if snapshot is None else snapshot
    fence = list(fence)
    room = MAX_OPS - len(fence) - (AUDIT_ROOM if audit is not None else 0)
    groups = {}
    marked = set()
    for change in plan.changes:
        group = None if isinstance(change, UpdateRecord) else change.node
        changes, ops = groups.setdefault(group, ([], []))
        changes.append(change)
        ops.extend(_opsFor(change, snapshot, marked))
    ordered = ([groups.pop(None)] if None in groups else []) + list(groups.values())
    found = []
    changes, current = [], []
    for groupChanges, ops in ordered:
        if len(ops) > room:
            raise PlanTooLarge("%d ops for one node or the records do not fit in a transaction "
                               "beside a fence of %d" % (len(ops), len(fence)))
        if current and len(current) + len(ops) > room:
            found.append((tuple(changes), fence + current))
            changes, current = [], []
        changes.extend(groupChanges)
        current.extend(ops)
    if current:
        found.append((tuple(changes), fence + current))
    if audit is not None:
        audited = []
        for index, (changes, ops) in enumerate(found):
            extra = list(audit(changes, index == 0))
            if len(extra) > AUDIT_ROOM:
                raise PlanTooLarge("%d audit events for one transaction; at most %d fit"
                                   % (len(extra), AUDIT_ROOM))
            audited.append((changes, ops + extra))
        found = audited
    return found


def toTransactions(plan, snapshot=None, fence=()):
    """
    @return: the transactions of L{batches}, lists of ops.
    """
    return [ops for changes, ops in batches(plan, snapshot, fence)]


class IPlanner(Interface):
    """
    Applies plans to a store and reads snapshots of it.
    """

    store = Attribute("The L{IStore} plans are applied to.")

    def snapshot():
        """
        @return: L{Deferred} firing with a fresh L{Snapshot} of the store.
        """

    def apply(plan, fence=(), audit=None):
        """
        Apply C{plan}'s transactions in order (nothing for L{Wait}/L{Done}),
        each with the audit ops of its changes (see L{batches}).

        @return: L{Deferred} firing with the list of transaction results;
            fails with the store's error (L{VersionConflict} when the fence
            or a version guard failed, L{KeyExists} when something the plan
            meant to create appeared) at the first transaction that fails;
            the first transaction, if it holds the plan's record updates or
            its own events, or places pods anew (see L{Planner}), is applied
            before the others, which may be applied several at once: the
            error's C{applied} attribute holds the changes of those that
            were applied (so they can be audited).
        """


def _places(changes, snapshot):
    """
    @return: whether C{changes} place a pod where none was (creating its
        intent): the parents such creates share with the plan's other
        transactions (C{audit/}, C{labels/pod/}) may not exist yet.
    """
    return snapshot is not None and any(
        isinstance(c, Schedule) and snapshot.intent(c.node, c.podId) is None for c in changes)


#: How many transactions of one plan L{Planner} has in flight at once: they
#: change different nodes, so the store can pipeline them (on ZooKeeper, one
#: at a time waited a disk sync each).
WINDOW = 8


@implementer(IPlanner)
class Planner(object):
    """
    The L{IPlanner} of a store: the first transaction of a plan alone when
    it holds the plan's record updates or its own events, or when it
    places pods anew and others follow (the parents their creates share --
    C{audit/}, C{labels/pod/}, C{intent/} on a fresh store -- are then made
    once, by it: on ZooKeeper every transaction in flight raced to make
    them, and all but one failed and were planned again); then the others
    up to C{window} at once (each begins with the fence, so a stale plan
    fails in each); after a failure, none is started.
    """

    def __init__(self, store, window=WINDOW):
        self.store = store
        self.window = window

    def snapshot(self):
        from p2twisted.orchestrate.snapshot import Snapshot
        return Snapshot.read(self.store)

    @defer.inlineCallbacks
    def apply(self, plan, fence=(), audit=None):
        batched = list(batches(plan, fence=fence, audit=audit))
        applied, failed = [], []

        def one(changes, ops):
            if failed:
                return defer.succeed(None)  # the apply fails anyway
            d = self.store.transaction(ops)
            d.addCallback(lambda result: (applied.extend(changes), result)[1])
            return d.addErrback(failed.append)

        def outcome(results):
            if failed:
                if failed[0].check(StoreError):
                    failed[0].value.applied = tuple(applied)
                failed[0].raiseException()
            return results
        if not batched:
            return []
        first = []
        # The first transaction goes alone when a failure of it must leave
        # the rest unapplied: it updates the records (the rest follows from
        # them), or it carries the plan's own audit events; and when it
        # places pods anew and others follow, so the parents their creates
        # share are made once, by it.
        if plan.events or any(isinstance(c, UpdateRecord) for c in batched[0][0]) or (
                len(batched) > 1 and _places(batched[0][0], plan.snapshot)):
            first = outcome([(yield one(*batched[0]))])
            batched = batched[1:]
        slots = defer.DeferredSemaphore(self.window)
        rest = yield defer.gatherResults([slots.run(one, changes, ops)
                                          for changes, ops in batched])
        return first + outcome(rest)
