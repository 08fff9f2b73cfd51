# -*- test-case-name: tests.test_cli_ds -*-
"""
The changes people make to daemon sets (C{p2 ds}): pure plan builders over
a L{Snapshot}, written by L{edit.change} (compare-and-set, with their audit
events in the same transaction).

Deleting a daemon set leaves its pods running unless asked to C{cascade}:
it is first disabled and its pods' C{daemon_set_id} label removed (they
run on, managed by nobody, and are no orphans for the farm to clean up),
then its record goes.  With C{cascade}, its record goes and its pods are
unscheduled; a cascade cut short leaves orphans the farm removes.
"""

import attr

from p2twisted.errors import UsageError
from p2twisted.orchestrate import daemonset as dsLogic
from p2twisted.orchestrate.edit import _require, deletion
from p2twisted.orchestrate.plan import Plan, Schedule, Unschedule, UpdateRecord
from p2twisted.records import CorruptRecord
from p2twisted.records.controllers import POD_ID_LABEL, AuditEvent
from p2twisted.records.daemonset import DS_ID_LABEL
from p2twisted.store import keys

#: What the daemon set verbs read.
TREES = (keys.DAEMON_SETS, keys.INTENT, keys.REALITY, keys.MACHINES, keys.LABELS, keys.HEALTH)


def requireDS(snapshot, dsId):
    """
    @return: the daemon set C{dsId}.
    @raise UsageError: when there is none (naming the closest id).
    """
    return _require(snapshot.daemonSet(dsId), dsId, snapshot.daemonSets(), "daemon set",
                    "see 'p2 ds list'")


def _event(ds, action, **details):
    return AuditEvent(dsLogic.AUDIT_KIND, ds.id, action, details)


def _write(snapshot, ds, action, details):
    change = UpdateRecord(ds.key, ds.toBytes(), snapshot.version(ds.key))
    return Plan([change], reason="%s daemon set %s" % (action, ds.id),
                events=[_event(ds, action, **details)], snapshot=snapshot)


def _uncontended(snapshot, ds, verb):
    """
    @raise UsageError: when enabled C{ds} would contend with another set.
    """
    if ds.disabled:
        return
    rival = dsLogic.contender(ds, snapshot)
    if rival is not None:
        raise UsageError("cannot %s daemon set %s: daemon set %s already runs pod %s on "
                         "overlapping nodes (selectors %r and %r); disable or delete it first, "
                         "or pick disjoint selectors"
                         % (verb, ds.id, rival.id, ds.pod_id, ds.node_selector or "",
                            rival.node_selector))


def createDS(snapshot, ds):
    """
    Plan the creation of C{ds}'s record.

    @raise UsageError: if a daemon set of that id exists, or an enabled one
        runs the same pod on overlapping nodes.
    """
    if snapshot.version(ds.key) is not None:
        raise UsageError("daemon set %s already exists (see 'p2 ds show %s')" % (ds.id, ds.id))
    _uncontended(snapshot, ds, "create")
    return _write(snapshot, ds, "create", {
        "pod_id": ds.pod_id, "sha": ds.sha, "node_selector": ds.node_selector,
        "min_health": ds.min_health, "disabled": ds.disabled})


def setDisabled(snapshot, dsId, disabled):
    """Plan disabling (or enabling) C{dsId}; an empty plan when it already is."""
    ds = requireDS(snapshot, dsId)
    action = "disable" if disabled else "enable"
    if ds.disabled == disabled:
        return Plan(reason="daemon set %s is already %sd" % (ds.id, action), snapshot=snapshot)
    changed = ds.withDisabled(disabled)
    _uncontended(snapshot, changed, action)
    return _write(snapshot, changed, action, {})


def updateDS(snapshot, dsId, **fields):
    """
    Plan changing C{dsId}'s fields (C{manifest}, C{node_selector},
    C{min_health}, C{timeout}, C{rate}, C{parallel}; C{None} leaves one
    as it is).

    @raise UsageError: for a manifest of another pod id, a bad value, or a
        change making it contend with another set.
    """
    ds = requireDS(snapshot, dsId)
    fields = {k: v for k, v in fields.items() if v is not None}
    manifest = fields.pop("manifest", None)
    if manifest is not None:
        from p2twisted.records.controllers import _parsed
        podId = _parsed(manifest).id
        if podId != ds.pod_id:
            raise UsageError("daemon set %s runs pod %s; this manifest is pod %s (a daemon set "
                             "keeps its pod id: create another one)" % (ds.id, ds.pod_id, podId))
        fields["manifest"] = manifest
    changed = attr.evolve(ds, **fields)
    if changed == ds:
        return Plan(reason="daemon set %s already has these settings" % (ds.id,),
                    snapshot=snapshot)
    _uncontended(snapshot, changed, "update")
    details = {k: ([getattr(ds, k), getattr(changed, k)] if k != "manifest" else
                   [ds.sha, changed.sha]) for k in sorted(fields) if getattr(ds, k) !=
               getattr(changed, k)}
    return _write(snapshot, changed, "update", details)


def selectorDiff(snapshot, ds, selector):
    """
    @return: C{(added, removed)}: the nodes that would get C{ds}'s pod and
        those that would lose it with C{selector}.
    """
    now = dsLogic.Survey(ds, snapshot)
    then = dsLogic.Survey(attr.evolve(ds, node_selector=selector), snapshot)
    wanted = lambda s: s.eligible - set(s.blocked)  # noqa: E731
    added = sorted(wanted(then) - set(now.mine))
    removed = sorted(set(now.mine) - then.eligible) if then.eligible else []
    return added, removed


def updateDiff(snapshot, ds, changed):
    """
    @return: C{(added, removed, replaced)}: the nodes that would get the
        pod, lose it, and have it replaced by a new manifest if C{ds}
        became C{changed}.
    """
    added, removed = selectorDiff(snapshot, ds, changed.node_selector)
    replaced = []
    if changed.sha != ds.sha:
        found = dsLogic.Survey(ds, snapshot)
        replaced = sorted(n for n in found.mine if n not in removed
                          and not found.view.runs("intent", n, changed))
    return added, removed, replaced


def deleteDS(snapshot, dsId, cascade=False):
    """
    Plan the next step of deleting C{dsId}.  Without C{cascade}: while pods
    carry its label, a plan disabling it and removing that label from them
    (their intent stays); then a plan deleting its record.  With
    C{cascade}: one plan deleting its record and unscheduling its pods
    (those of its pod id: another pod carrying its label only loses it).
    An unreadable record is deleted the same way (its pods are those whose
    C{pod_id} label names their own pod id, as for orphans; it is not
    rewritten disabled: the farm runs no unreadable set).

    @return: C{(done, plan)}: whether the plan deletes the record.
    """
    try:
        ds = requireDS(snapshot, dsId)
    except CorruptRecord as e:
        ds, details = None, {"unreadable": str(e)}
    else:
        details = {}
    key = keys.daemonSet(dsId)
    pods = snapshot.podsOfDaemonSet(dsId)
    if cascade:
        # Only pods of its pod id are the set's; another pod carrying its
        # label (by hand) only loses the label.
        own = [(n, p) for n, p in pods if p == (
            snapshot.podLabels(n, p).get(POD_ID_LABEL) if ds is None else ds.pod_id)]
        plan = _remove(snapshot, dsId, key, dict(details, cascade=True,
                                                  nodes=sorted(n for n, p in own)))
        return True, attr.evolve(plan, changes=plan.changes + tuple(
            Unschedule(n, p) if (n, p) in own else _disown(snapshot, n, p) for n, p in pods))
    if not pods:
        return True, _remove(snapshot, dsId, key, dict(details, cascade=False))
    changes = []
    if ds is not None and not ds.disabled:
        changes.append(UpdateRecord(ds.key, ds.withDisabled(True).toBytes(),
                                    snapshot.version(ds.key)))
    changes.extend(_disown(snapshot, node, podId) for node, podId in pods)
    return False, Plan(changes, reason="disown the pods of daemon set %s" % (dsId,),
                       events=[AuditEvent(dsLogic.AUDIT_KIND, dsId, "disown",
                                          {"nodes": sorted(n for n, p in pods)})],
                       snapshot=snapshot)


def _remove(snapshot, dsId, key, details):
    """
    @return: the plan deleting daemon set C{dsId}'s record at C{key}, with
        the marker saying a person deleted it (L{deletion}).
    """
    return Plan([UpdateRecord(key, None, snapshot.version(key)),
                 deletion(snapshot, keys.DAEMON_SETS, dsId, key)],
                reason="delete daemon set %s" % (dsId,),
                events=[AuditEvent(dsLogic.AUDIT_KIND, dsId, "delete", details)],
                snapshot=snapshot)


def _disown(snapshot, node, podId):
    """@return: the change removing C{daemon_set_id} from a pod's labels."""
    labels = snapshot.podLabels(node, podId)
    labels.pop(DS_ID_LABEL, None)
    entry = snapshot.intent(node, podId)
    return Unschedule(node, podId) if entry is None else Schedule(node, podId, entry.value,
                                                                  labels)
