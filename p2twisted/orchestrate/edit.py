# -*- test-case-name: tests.test_orchestrate_edit -*-
"""
The changes people make to replication controllers and rolls (C{p2 rc},
C{p2 roll}, fleet services): pure plan builders over a L{Snapshot}, like
L{roll.createRoll}, and L{change}, which reads, builds and writes a plan
with its audit events in one transaction, deciding again when the store
changed in between.

Every record write is a compare-and-set against the version the plan was
built over, so a person and an orchestrator never overwrite each other; an
RC that a roll moves is refused (the roll sets its count: abort it first).
"""

import getpass
import socket

import attr

from twisted.internet import defer

from p2twisted.errors import KeyExists, UsageError, VersionConflict
from p2twisted.manifest.signed import isSigned, wrapperOf
from p2twisted.orchestrate.plan import ANY, Plan, UpdateRecord, toTransactions
from p2twisted.records.controllers import AuditEvent, Deletion, ReplicationController
from p2twisted.store import keys
from p2twisted.store.common import MAX_OPS

#: How often L{change} builds its plan again after a conflicting write.
RETRIES = 10


def who():
    """@return: who the audit log says made a change from this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "uid%d" % (__import__("os").getuid(),)
    return "%s@%s (p2)" % (user, socket.gethostname())


def defaultId(manifest):
    """
    @param manifest: a pod manifest's bytes.
    @return: the id an RC of C{manifest} gets when none is given:
        C{<pod id>-<first 8 of its SHA>}.
    """
    rc = ReplicationController("x", manifest, 0)
    return "%s-%s" % (rc.podId, rc.sha[:8])


def rollOf(snapshot, rcId):
    """@return: the L{Roll} moving C{rcId} (from or to it), or C{None}."""
    for roll in snapshot.rolls().values():
        if rcId in (roll.old_rc, roll.new_rc):
            return roll
    return None


def _require(found, objectId, choices, what, more):
    from p2twisted.cli.main import didYouMean
    if found is None:
        raise UsageError("no %s %r%s (%s)" % (what, objectId, didYouMean(objectId, choices), more))
    return found


def requireRC(snapshot, rcId):
    """
    @return: the RC C{rcId}.
    @raise UsageError: when there is none (naming the closest id).
    """
    return _require(snapshot.rc(rcId), rcId, snapshot.rcs(), "replication controller",
                    "see 'p2 rc list'")


def requireRoll(snapshot, rollId):
    """
    @return: the roll C{rollId}.
    @raise UsageError: when there is none (naming the closest id).
    """
    return _require(snapshot.roll(rollId), rollId, snapshot.rolls(), "roll",
                    "a finished or aborted roll leaves no record; see 'p2 audit'")


def _notRolling(snapshot, rc, verb):
    roll = rollOf(snapshot, rc.id)
    if roll is not None:
        raise UsageError("cannot %s RC %s: roll %s is moving it (wait until it ends, 'p2 roll "
                         "status %s', or abort it, 'p2 roll abort %s')"
                         % (verb, rc.id, roll.id, roll.id, roll.id))


def recordPlan(snapshot, rc, action, details, delete=False):
    """
    @return: the L{Plan} writing C{rc}'s record (or deleting it) by
        compare-and-set, with an audit event of C{action} and C{details}.
    """
    from p2twisted.orchestrate.controllers import AUDIT_KIND
    change = UpdateRecord(rc.key, None if delete else rc.toBytes(), snapshot.version(rc.key))
    extra = [deletion(snapshot, keys.REPLICATION_CONTROLLERS, rc.id, rc.key)] if delete else []
    return Plan([change] + extra, reason="%s RC %s" % (action, rc.id),
                events=[AuditEvent(AUDIT_KIND, rc.id, action, details)], snapshot=snapshot)


def deletion(snapshot, tree, objectId, key):
    """
    @return: the L{UpdateRecord} that, beside the delete of C{key} (the
        record of C{objectId} in C{tree}) and in its transaction, says a
        person deleted it (L{Deletion}; the last delete wins): the farms
        then take their tree emptied by it for a delete, not a wipe.
    """
    return UpdateRecord(keys.deleted(tree), Deletion(objectId, snapshot.version(key)).toBytes(),
                        ANY)


def createRC(snapshot, rc):
    """
    Plan the creation of C{rc}'s record.

    @raise UsageError: if an RC of that id exists.
    """
    if snapshot.version(rc.key) is not None:
        raise UsageError("replication controller %s already exists (see 'p2 rc show %s')"
                         % (rc.id, rc.id))
    plan = recordPlan(snapshot, rc, "create", {
        "replicas_desired": rc.replicas_desired, "node_selector": rc.node_selector,
        "pod_labels": rc.pod_labels, "pod_id": rc.podId, "sha": rc.sha,
        "disabled": rc.disabled})
    return attr.evolve(plan, changes=[UpdateRecord(rc.key, rc.toBytes(), None)])


def scaleRC(snapshot, rcId, count):
    """
    Plan setting C{rcId}'s C{replicas_desired} to C{count}: an empty plan
    (no audit event) when it already wants that many.

    @raise UsageError: for an unknown RC (naming the closest id), a bad
        count, or an RC a roll is moving.
    """
    rc = requireRC(snapshot, rcId)
    changed = rc.withReplicas(count)
    _notRolling(snapshot, rc, "scale")
    if rc.replicas_desired == count:
        return Plan(reason="RC %s already wants %d replica(s)" % (rc.id, count),
                    snapshot=snapshot)
    return recordPlan(snapshot, changed, "scale", {"from": rc.replicas_desired, "to": count})


def setDisabled(snapshot, rcId, disabled):
    """
    Plan disabling (or enabling) C{rcId}: a disabled RC changes nothing.
    An empty plan when it already is.
    """
    rc = requireRC(snapshot, rcId)
    action = "disable" if disabled else "enable"
    _notRolling(snapshot, rc, action)
    if rc.disabled == disabled:
        return Plan(reason="RC %s is already %sd" % (rc.id, action), snapshot=snapshot)
    return recordPlan(snapshot, rc.withDisabled(disabled), action, {})


def podsOf(snapshot, rc):
    """@return: the nodes holding a pod of C{rc}, sorted."""
    return [node for node, pod in snapshot.podsOf(rc.id) if pod == rc.podId]


def deleteRC(snapshot, rcId, force=False):
    """
    Plan deleting C{rcId}'s record.  Its pods are not unscheduled: it must
    want 0 replicas and its pods be gone first (the farm removes them),
    unless C{force} (its pods then run on, managed by nobody).

    @raise UsageError: when it still wants replicas or has pods (without
        C{force}), or a roll moves it.
    """
    rc = requireRC(snapshot, rcId)
    _notRolling(snapshot, rc, "delete")
    pods = podsOf(snapshot, rc)
    if not force and rc.replicas_desired:
        raise UsageError("RC %s still wants %d replicas: scale it to 0 first ('p2 rc scale %s "
                         "0') and let the farm remove its pods, or delete it with --force and "
                         "leave its pods running unmanaged" % (rc.id, rc.replicas_desired, rc.id))
    if not force and pods:
        raise UsageError("RC %s still has %d pod(s) (on %s): wait until the farm removed them, "
                         "or delete it with --force and leave them running unmanaged"
                         % (rc.id, len(pods), ", ".join(pods[:5])))
    return recordPlan(snapshot, rc, "delete", {
        "replicas_desired": rc.replicas_desired, "forced": bool(force and (
            rc.replicas_desired or pods)), "pods_left": pods}, delete=True)


def startRoll(snapshot, oldId, minHealthy, newId=None, manifest=None, selector=None, **options):
    """
    Plan a roll from C{oldId} to the RC C{newId}, or to a new RC running
    C{manifest} (bytes; the old RC's selector and pod labels, no replicas,
    id L{defaultId}) created in the same transaction.

    @param selector: the new RC's node selector, when not the old one's.

    @param options: L{Roll} fields (C{desired}, C{roll_delay}, C{leave_old},
        C{auto_rollback}, C{rollback_after}).
    @return: C{(roll, plan)}; C{(None, plan)} when C{manifest} is the old
        RC's, now signed: the plan replaces its manifest's bytes
        (L{resignRC}).
    @raise UsageError: see L{roll.createRoll}; or when the new RC exists.
    """
    from p2twisted.orchestrate.roll import createRoll
    from p2twisted.orchestrate.snapshot import Snapshot
    from p2twisted.store.common import Entry
    old = requireRC(snapshot, oldId)
    busy = rollOf(snapshot, oldId)
    if busy is not None:
        raise UsageError("RC %s is already in roll %s; abort or finish it first"
                         % (oldId, busy.id))
    created = None
    if manifest is not None:
        created = ReplicationController(newId or defaultId(manifest), manifest, 0,
                                        old.node_selector if selector is None else selector,
                                        dict(old.pod_labels))
        if created.sha == old.sha and manifest != old.manifest and isSigned(manifest):
            return None, resignRC(snapshot, old, manifest)
        if created.sha == old.sha:
            raise UsageError("RC %s already runs that manifest (sha %s): nothing to roll to"
                             % (old.id, old.sha[:12]))
        if snapshot.version(created.key) is not None:
            raise UsageError("replication controller %s already exists: roll to it with "
                             "'--to %s', or delete it first" % (created.id, created.id))
        newId = created.id
        # Decide over the store as it will be with the new RC: its record,
        # absent from the store (version None), is then created.
        entries = dict(snapshot.entries)
        entries[created.key] = Entry(created.key, created.toBytes(), None)
        snapshot = Snapshot.fromEntries(entries)
    else:
        requireRC(snapshot, newId)
    roll, plan = createRoll(snapshot, oldId, newId, minHealthy, **options)
    if created is not None:
        plan = Plan(plan.changes, reason=plan.reason,
                    events=createRC(snapshot, created).events + plan.events, snapshot=snapshot)
    return roll, plan


def resignRC(snapshot, rc, manifest):
    """
    Plan replacing C{rc}'s manifest bytes with C{manifest}: the same
    canonical SHA, signed.  Its pods' intent is then rewritten (L{rc.decide})
    and nothing restarts.
    """
    return recordPlan(snapshot, attr.evolve(rc, manifest=manifest), "sign",
                      {"sha": rc.sha, "signature": wrapperOf(manifest)})


def transactions(plan, events, who, when):
    """
    @return: C{plan}'s transactions with the C{Create}s of its audit
        C{events} in its last one (or after it, when they do not fit), so a
        change is never written without its audit record.
    """
    from p2twisted.orchestrate import audit
    found = toTransactions(plan)
    ops = audit.creates(events, who, when)
    if found and len(found[-1]) + len(ops) <= MAX_OPS:
        found[-1] = found[-1] + ops
    elif ops:
        found.append(ops)
    return found


@defer.inlineCallbacks
def change(store, build, when, trees=None, author=None):
    """
    Read a snapshot, C{build(snapshot)} a plan and write it with its audit
    events; when the store changed in between (a compare-and-set failed),
    read and build again.

    @param build: C{build(snapshot) -> Plan} (or C{(anything, Plan)}); it
        raises L{UsageError} to refuse.
    @param when: seconds since the epoch, for the audit log.
    @param trees: the trees to read (default: L{Snapshot.read}'s).
    @return: L{Deferred} firing with what C{build} returned last.
    """
    from p2twisted.orchestrate.snapshot import Snapshot
    author = who() if author is None else author
    for attempt in range(RETRIES):
        snapshot = yield (Snapshot.read(store) if trees is None
                          else Snapshot.read(store, trees))
        built = build(snapshot)
        plan = built[1] if isinstance(built, tuple) else built
        try:
            for ops in transactions(plan, plan.events, author, when):
                yield store.transaction(ops)
        except (VersionConflict, KeyExists):
            continue
        return built
    raise VersionConflict(keys.tree(keys.REPLICATION_CONTROLLERS), store.backend,
                          "gave up after %d conflicting writes: something else keeps changing "
                          "these records" % (RETRIES,))
