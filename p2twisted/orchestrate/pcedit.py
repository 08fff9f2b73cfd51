# -*- test-case-name: tests.test_cli_pc -*-
"""
The changes people make to pod clusters (C{p2 pc}): pure plan builders over
a L{Snapshot}, written by L{edit.change} with their audit events.

Creating a pod cluster creates its record and its name index key
C{pod_cluster_names/<pod_id>/<az>/<cluster_name>} in one transaction: of two
creators racing for one triple, one transaction fails (the key exists) and
its retry refuses, naming the cluster that won.
"""

from p2twisted.errors import InvalidKey, UsageError
from p2twisted.orchestrate.plan import Plan, UpdateRecord
from p2twisted.records import CorruptRecord
from p2twisted.records.controllers import AuditEvent
from p2twisted.store import keys

#: The kind the audit log names pod clusters by.
AUDIT_KIND = "pod_cluster"

#: The trees the CLI reads for pod clusters and their membership.
TREES = (keys.POD_CLUSTERS, keys.POD_CLUSTER_NAMES, keys.INTENT, keys.MACHINES,
         keys.labelTree("pod"), keys.HEALTH, keys.status(keys.POD_CLUSTERS))


def requirePC(snapshot, pcId):
    """
    @return: the pod cluster C{pcId}.
    @raise UsageError: when there is none (naming the closest id).
    """
    from p2twisted.cli.main import didYouMean
    found = snapshot.podCluster(pcId)
    if found is None:
        raise UsageError("no pod cluster %r%s (see 'p2 pc list')"
                         % (pcId, didYouMean(pcId, snapshot.podClusters())))
    return found


def _plan(snapshot, changes, pcId, action, details):
    return Plan(changes, reason="%s pod cluster %s" % (action, pcId),
                events=[AuditEvent(AUDIT_KIND, pcId, action, details)], snapshot=snapshot)


def createPC(snapshot, pc):
    """
    Plan creating C{pc}'s record and its name index key.

    @raise UsageError: when a pod cluster of that id, or of that pod id, zone
        and name, exists.
    """
    if snapshot.version(pc.key) is not None:
        raise UsageError("pod cluster %s already exists (see 'p2 pc show %s')" % (pc.id, pc.id))
    entry = snapshot.entries.get(pc.nameKey)
    other = None if entry is None else entry.value.decode("utf-8", "replace")
    if entry is not None and _exists(snapshot, other):
        raise UsageError("pod %s already has a pod cluster %s in zone %s: %s (see 'p2 pc show "
                         "%s')" % (pc.pod_id, pc.cluster_name, pc.availability_zone, other,
                                   other))
    # A name whose cluster is gone (its record deleted by other means than
    # 'p2 pc delete') is taken over, by compare-and-set.
    return _plan(snapshot, [UpdateRecord(pc.key, pc.toBytes(), None),
                            UpdateRecord(pc.nameKey, pc.id.encode("utf-8"),
                                         None if entry is None else entry.version)],
                 pc.id, "create", pc.toDict())


def _exists(snapshot, pcId):
    """@return: whether C{pod_clusters/<pcId>} has a record."""
    try:
        return snapshot.version(keys.podCluster(pcId)) is not None
    except InvalidKey:  # no valid id: no record can have it
        return False


def updatePC(snapshot, pc, action, details):
    """Plan rewriting C{pc}'s record by compare-and-set."""
    return _plan(snapshot, [UpdateRecord(pc.key, pc.toBytes(), snapshot.version(pc.key))],
                 pc.id, action, details)


def deletePC(snapshot, pcId):
    """
    Plan deleting C{pcId}'s record, its name index key and its syncers'
    statuses (the farm's sweeper then deletes it from each syncer).  An
    unreadable record is deleted too (its name index key, unknown, is taken
    over by the next L{createPC} of its triple).
    """
    try:
        pc = requirePC(snapshot, pcId)
    except CorruptRecord as e:
        pc, details = None, {"unreadable": str(e)}
    else:
        details = pc.toDict()
    key = keys.podCluster(pcId)
    changes = [UpdateRecord(key, None, snapshot.version(key))]
    if pc is not None and snapshot.version(pc.nameKey) is not None:
        changes.append(UpdateRecord(pc.nameKey, None, snapshot.version(pc.nameKey)))
    prefix = keys.parse(keys.status(keys.POD_CLUSTERS, pcId))
    for key, entry in sorted(snapshot.entries.items()):
        if keys.parse(key)[:len(prefix)] == prefix:
            changes.append(UpdateRecord(key, None, entry.version))
    return _plan(snapshot, changes, pcId, "delete", details)
