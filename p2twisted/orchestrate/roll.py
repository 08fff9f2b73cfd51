# -*- test-case-name: tests.test_orchestrate_roll -*-
"""
Rolling updates: C{step(roll, snapshot, now) -> Plan | Wait | Done}.

P2's rolling update (C{pkg/roll/run_update.go}, reference/p2.md section 8):
a roll moves replica counts from the old RC to the new one, a batch at a
time, each batch one compare-and-set transaction over both RC records, and
never lets the healthy pods of the two fall below C{min_healthy}
(L{rollAlgorithm}).  The RCs do the scheduling: the new RC takes the old
one's surplus pods over in place (see L{p2twisted.orchestrate.rc}), so a
roll unschedules nothing on the way; all its state is in the two RC records
and the roll record, so a killed orchestrator's successor continues with no
extra schedule or unschedule.

A step, in order:
 1. the roll record is gone: L{Done}; the RC it moves from is gone: the
    roll ends (P2's farm deleted such a roll as complete: a finished roll
    deletes the old RC first); the RC it moves to is gone: it waits, as in
    P2 (a wiped RC tree must not end every roll);
 2. the RC it moves to is disabled, or the one it moves from enabled: one
    transaction swaps them (the newly enabled RC adopts the pods it has);
 3. the target is not yet desired: the next batch (after C{roll_delay},
    not before the first) or a wait for health.  Where P2 stopped for good
    (healthy pods at the minimum, no capacity to add), one pod surges onto
    a free node, so a roll of 3 at min_healthy 3 can move;
 4. the target is desired but not yet placed: wait;
 5. done: the old RC's leftover pods (on nodes the new RC could not take
    over) are drained once enough new pods are healthy, then the old RC
    (unless C{leave_old}) and the roll record are deleted.

Beyond P2: a roll with C{auto_rollback} whose new pods keep it from moving
(or from finishing) for C{rollback_after} seconds turns round: the same
steps run with the RCs' roles swapped, back to the old RC's starting count,
and the new RC is left with no replicas for a person to look at.

L{createRoll} and L{abortRoll} are a person's changes, as plans.
"""

import attr

from p2twisted.errors import UsageError
from p2twisted.orchestrate.plan import Done, Plan, UpdateRecord, Wait
from p2twisted.orchestrate.rc import PodView
from p2twisted.records.controllers import ROLLING_BACK, AuditEvent, Roll

#: A health status that says nothing either way (P2's C{health.Unknown}).
UNKNOWN = "unknown"


def rollAlgorithm(old, new, oldDesired, newDesired, targetDesired, minHealthy, spare=0):
    """
    P2's C{rollAlgorithm} (square/p2 C{pkg/roll/run_update.go}, Apache-2.0):
    how many replicas to remove from the old RC and add to the new one.

    @param old: healthy pods of the old RC (at most its desired count).
    @param new: healthy pods of the new RC.
    @param oldDesired: the old RC's desired count.
    @param newDesired: the new RC's desired count.
    @param targetDesired: the new RC's final count.
    @param minHealthy: pods that must stay healthy.
    @param spare: (not in P2) how many of the pods the move takes over are
        known not to be healthy, so taking them loses no health.
    @return: C{(nodesToRemove, nodesToAdd)}, both >= 0; C{(0, 0)} when done
        or at or below the minimum.
    """
    headroom = old + new - minHealthy + spare
    capacityIncrease = targetDesired - (oldDesired + newDesired)
    if capacityIncrease > 0:
        headroom += capacityIncrease
    else:
        capacityIncrease = 0
    remaining = targetDesired - newDesired
    if remaining <= 0:
        return 0, 0
    if new >= minHealthy:
        return max(0, remaining - capacityIncrease), remaining
    if headroom <= 0:
        return 0, 0
    nodesToAdd = min(remaining, headroom)
    return max(0, nodesToAdd - capacityIncrease), nodesToAdd


@attr.s(frozen=True)
class Counts(object):
    """
    One RC's pods as a roll sees them (P2's C{rcNodeCounts}).

    @ivar current: pods labelled as the RC's.
    @ivar real: current pods whose reality is the RC's manifest.
    @ivar healthy: real pods whose health is passing.
    @ivar unknown: desired pods not yet placed, plus real pods whose health
        is not reported or C{"unknown"}.
    @ivar spare: current pods known not to be healthy (critical, or not
        running the RC's manifest) on nodes the other RC may take over,
        beyond the surplus it will take first.  A pod whose health is not
        reported yet may be serving: it is not spare.
    """

    desired = attr.ib()
    current = attr.ib()
    real = attr.ib()
    healthy = attr.ib()
    unhealthy = attr.ib()
    unknown = attr.ib()
    spare = attr.ib(default=0)

    def __str__(self):
        return "%d desired, %d current, %d healthy" % (self.desired, self.current, self.healthy)


def count(rc, snapshot, takerEligible=None):
    """
    @param takerEligible: the nodes eligible for the RC that takes this
        one's pods over (for L{Counts.spare}), or C{None}.
    @return: L{Counts} of C{rc}'s pods in C{snapshot}.
    """
    view = PodView(snapshot, rc.podId)
    nodes = view.podsOf(rc.id)
    real = [n for n in nodes if view.runs("reality", n, rc)]
    healthy = {n for n in real if view.healthy(n, rc)}
    unknown = {n for n in real if n not in healthy and getattr(
        snapshot.health(rc.podId, n), "status", UNKNOWN) == UNKNOWN}
    spare = 0
    if takerEligible is not None:
        notHealthy = len([n for n in nodes if n in takerEligible and n not in healthy
                          and n not in unknown])
        spare = max(0, notHealthy - max(0, len(nodes) - rc.replicas_desired))
    return Counts(desired=rc.replicas_desired, current=len(nodes), real=len(real),
                  healthy=len(healthy), unhealthy=len(real) - len(healthy) - len(unknown),
                  unknown=max(0, rc.replicas_desired - len(nodes)) + len(unknown),
                  spare=spare)


def _roles(roll):
    """@return: C{(toId, fromId, target)} of C{roll} in its state."""
    if roll.rollingBack:
        return (roll.old_rc, roll.new_rc,
                roll.desired if roll.old_desired is None else roll.old_desired)
    return roll.new_rc, roll.old_rc, roll.desired


def _event(roll, action, **details):
    return AuditEvent("roll", roll.id, action, details)


def _update(snapshot, record):
    return UpdateRecord(record.key, record.toBytes(), snapshot.version(record.key))


def _delete(snapshot, key):
    return UpdateRecord(key, None, snapshot.version(key))


def _rollUpdate(snapshot, roll, **changes):
    """@return: C{[UpdateRecord]} writing C{changes} to the roll, or C{[]} if none."""
    changed = attr.evolve(roll, **changes)
    return [] if changed == roll else [_update(snapshot, changed)]


def step(roll, snapshot, now):
    """
    @param roll: the L{Roll} (its current record is read from C{snapshot}).
    @param now: seconds since the epoch.
    @return: a L{Plan} to apply, a L{Wait} or L{Done}.
    """
    current = snapshot.roll(roll.id)
    if current is None:
        return Done("roll %s is gone" % (roll.id,))
    roll = current
    back = roll.rollingBack
    toId, fromId, target = _roles(roll)
    to, from_ = snapshot.rc(toId), snapshot.rc(fromId)
    if to is None:
        # Like P2's roll farm ("Expected RC to exist"): the RC it moves to
        # is never deleted by a roll, so its absence is a person's mistake
        # or a wiped (half-restored) RC tree; ending the roll would lose
        # where it was.  A person who meant it aborts the roll.
        return Wait("RC %s is gone%s; waiting for it to come back, or for p2 roll abort %s"
                    % (toId, "" if from_ is not None else " and so is %s" % (fromId,), roll.id))
    if from_ is None:
        return Plan([_delete(snapshot, roll.key)],
                    reason="RC %s is gone: the roll ends" % (fromId,),
                    events=[_event(roll, "abort", reason="RC %s is gone" % (fromId,))],
                    snapshot=snapshot)

    draining = (to.replicas_desired >= target and from_.replicas_desired == 0
                and not to.disabled and not from_.disabled)
    if not draining and (to.disabled or not from_.disabled):
        adopted = max(to.replicas_desired, count(to, snapshot).current)
        return Plan([_update(snapshot, from_.withDisabled(True)),
                     _update(snapshot, to.withDisabled(False).withReplicas(adopted))],
                    reason="enable %s, disable %s" % (toId, fromId),
                    events=[_event(roll, "enable", enabled=toId, disabled=fromId)],
                    snapshot=snapshot)

    toEligible = set(snapshot.eligible(to.node_selector))
    toCounts = count(to, snapshot)
    fromCounts = count(from_, snapshot, toEligible)
    where = "%s: %s; %s: %s" % (toId, toCounts, fromId, fromCounts)

    if toCounts.desired < target:
        remove, add = rollAlgorithm(min(fromCounts.healthy, fromCounts.desired),
                                    toCounts.healthy, fromCounts.desired, toCounts.desired,
                                    target, roll.min_healthy, fromCounts.spare)
        if not (remove or add):
            capacity = max(roll.desired, roll.desired if roll.old_desired is None
                           else roll.old_desired)
            if not _canSurge(to, toCounts, fromCounts, capacity, toEligible, snapshot):
                return _blocked(roll, snapshot, now, toCounts, where,
                                "at or below min_healthy %d" % (roll.min_healthy,))
            remove, add = 0, 1
        if toCounts.desired > 0 and roll.roll_delay > 0:
            if roll.ready_since is None:
                return Plan(_rollUpdate(snapshot, roll, ready_since=now),
                            reason="next batch ready; waiting roll_delay %ss (%s)"
                            % (roll.roll_delay, where), snapshot=snapshot)
            if now < roll.ready_since + roll.roll_delay:
                return Wait("roll_delay until the next batch (%s)" % (where,),
                            at=roll.ready_since + roll.roll_delay)
        return Plan([_update(snapshot, to.withReplicas(to.replicas_desired + add)),
                     _update(snapshot, from_.withReplicas(from_.replicas_desired - remove))]
                    + _rollUpdate(snapshot, roll, ready_since=None, unhealthy_since=None),
                    reason="move %d to %s, %d from %s (%s)" % (add, toId, remove, fromId, where),
                    events=[_event(roll, "rollback_step" if back else "step", add=add,
                                   remove=remove, to=toId, to_desired=to.replicas_desired + add,
                                   from_desired=from_.replicas_desired - remove)],
                    snapshot=snapshot)

    if toCounts.current < target:
        return Wait("%s has %d of %d pods placed (%s)" % (toId, toCounts.current, target, where))

    # Like P2, a roll whose counts have all moved ends whatever the health
    # (a known-bad version at min_healthy 0 must not hang), but draining the
    # old RC's leftover pods keeps min_healthy, and auto_rollback wants the
    # new version healthy before it calls the roll done.
    keepFrom = roll.leave_old and not back
    need = min(roll.min_healthy, target) if (fromCounts.current and not keepFrom) else 0
    if roll.auto_rollback and not back:
        need = max(min(roll.min_healthy, target), min(1, target))
    if toCounts.healthy < need:
        return _blocked(roll, snapshot, now, toCounts, where,
                        "%d healthy of %d needed to finish" % (toCounts.healthy, need))
    if not keepFrom and (from_.replicas_desired or from_.disabled) and fromCounts.current:
        return Plan([_update(snapshot, from_.withReplicas(0).withDisabled(False))]
                    + _rollUpdate(snapshot, roll, ready_since=None, unhealthy_since=None),
                    reason="drain %s's %d leftover pod(s) (%s)" % (fromId, fromCounts.current,
                                                                  where),
                    events=[_event(roll, "drain", rc=fromId, pods=fromCounts.current)],
                    snapshot=snapshot)
    if not keepFrom and fromCounts.current:
        return Wait("%s still has %d pod(s) (on nodes whose agent is down?) (%s)"
                    % (fromId, fromCounts.current, where))
    changes = [_delete(snapshot, roll.key)]
    if to.replicas_desired > target:
        # It adopted pods beyond the target when it was enabled.
        changes.append(_update(snapshot, to.withReplicas(target)))
    if back:
        resting = from_.withReplicas(0).withDisabled(True)
        if resting != from_:
            changes.append(_update(snapshot, resting))
        action, reason = "rolled_back", "rolled back to %s: %s" % (toId, roll.reason)
    else:
        if not keepFrom:
            changes.append(_delete(snapshot, from_.key))
        action, reason = "finish", "finished: %s runs %d" % (toId, target)
    return Plan(changes, reason=reason, events=[_event(roll, action, to=toId, desired=target)],
                snapshot=snapshot)


def _canSurge(to, toCounts, fromCounts, capacity, toEligible, snapshot):
    """
    (Not in P2, whose roll stops for good when healthy pods are at the
    minimum and no capacity is added, e.g. 3 replicas at min_healthy 3.)
    Whether the RC moved to may run one pod beyond the target for a while:
    all its pods are placed and healthy, the RC moved from has no surplus
    (so the new pod cannot take a healthy one over), nothing is surging
    yet (the two RCs want no more than C{capacity}, the larger of the
    roll's start and end counts), and a free eligible node with a running
    agent is there to take it.
    """
    if not (toCounts.desired == toCounts.current == toCounts.healthy):
        return False
    if fromCounts.current > fromCounts.desired or \
            toCounts.desired + fromCounts.desired > capacity:
        return False
    view = PodView(snapshot, to.podId)
    mine = set(view.podsOf(to.id))
    return any(view.up(n) and not view.occupied(n) for n in toEligible if n not in mine)


def _blocked(roll, snapshot, now, toCounts, where, why):
    """
    The roll cannot move: wait, and with C{auto_rollback} start or check the
    clock on the new RC's unhealthy pods.
    """
    unhealthy = toCounts.current - toCounts.healthy
    reason = "waiting: %s (%s)" % (why, where)
    if not roll.auto_rollback or roll.rollingBack or unhealthy <= 0:
        if roll.unhealthy_since is not None:
            return Plan(_rollUpdate(snapshot, roll, unhealthy_since=None), reason=reason,
                        snapshot=snapshot)
        return Wait(reason)
    if roll.unhealthy_since is None:
        return Plan(_rollUpdate(snapshot, roll, unhealthy_since=now),
                    reason="%s; %d new pod(s) unhealthy: rolling back in %ss unless healthy"
                    % (reason, unhealthy, roll.rollback_after), snapshot=snapshot)
    deadline = roll.unhealthy_since + roll.rollback_after
    if now < deadline:
        return Wait("%s; rolling back in %ds unless healthy" % (reason, deadline - now),
                    at=deadline)
    why = ("%d new pod(s) of %s unhealthy for %ds" % (unhealthy, roll.new_rc, now -
                                                      roll.unhealthy_since))
    return Plan(_rollUpdate(snapshot, roll, state=ROLLING_BACK, reason=why, unhealthy_since=None,
                            ready_since=None),
                reason="rolling back: " + why, events=[_event(roll, "rollback", reason=why)],
                snapshot=snapshot)


def createRoll(snapshot, oldId, newId, minHealthy, desired=None, **options):
    """
    Validate a new roll from C{oldId} to C{newId} and plan its creation.

    The plan rewrites both RC records unchanged by compare-and-set (so two
    rolls created at once over one RC cannot both succeed) and creates the
    roll record.

    @param desired: the new RC's final count (default: the old RC's).
    @param options: other L{Roll} fields (C{roll_delay}, C{leave_old},
        C{auto_rollback}, C{rollback_after}).
    @return: C{(roll, plan)}.
    @raise UsageError: one line saying why the roll cannot be created.
    """
    old, new = snapshot.rc(oldId), snapshot.rc(newId)
    for rcId, rc in ((oldId, old), (newId, new)):
        if rc is None:
            raise UsageError("no replication controller %r" % (rcId,))
    if old.podId != new.podId:
        raise UsageError("RC %s runs pod %r and RC %s pod %r: a roll moves one pod id to a new "
                         "version" % (oldId, old.podId, newId, new.podId))
    for other in snapshot.rolls().values():
        busy = {other.old_rc, other.new_rc} & {oldId, newId}
        if busy:
            raise UsageError("RC %s is already in roll %s; abort or finish it first"
                             % (sorted(busy)[0], other.id))
    desired = old.replicas_desired if desired is None else desired
    if minHealthy > desired and not options.get("leave_old"):
        raise UsageError("min_healthy %d is over the %d replicas the roll ends with: it could "
                         "never remove the old RC (use leave_old for a canary)"
                         % (minHealthy, desired))
    roll = Roll(old_rc=oldId, new_rc=newId, min_healthy=minHealthy,
                desired=desired,
                old_desired=old.replicas_desired, **options)
    plan = Plan([_update(snapshot, old), _update(snapshot, new),
                 UpdateRecord(roll.key, roll.toBytes(), None)],
                reason="start roll %s from %s" % (roll.id, oldId),
                events=[_event(roll, "start", old_rc=oldId, new_rc=newId, desired=roll.desired,
                               min_healthy=minHealthy)],
                snapshot=snapshot)
    return roll, plan


def abortRoll(snapshot, rollId):
    """
    Plan the end of a roll where it stands: the roll record goes, both RCs
    keep their counts (the old one stays disabled), nothing is unscheduled.

    @raise UsageError: if there is no such roll.
    """
    roll = snapshot.roll(rollId)
    if roll is None:
        raise UsageError("no roll %r" % (rollId,))
    return Plan([_delete(snapshot, roll.key)], reason="abort roll %s" % (rollId,),
                events=[_event(roll, "abort")], snapshot=snapshot)
