# -*- test-case-name: tests.test_metrics -*-
"""
What an orchestrator's metrics say of the objects it holds, read from a
L{Snapshot} (pure functions: the scrape passes the latest snapshot and the
ids the farms hold).
"""

from p2twisted.orchestrate.roll import _roles, count
from p2twisted.records import CorruptRecord

#: What L{_read} returns for an unreadable record.
_UNREADABLE = object()


def _read(get, objectId):
    """
    @return: C{get(objectId)}, or L{_UNREADABLE}: a farm holds an object
        whose record is unreadable too, and one such record must not fail
        every scrape's gauges (its controller's status says what is wrong).
    """
    try:
        return get(objectId)
    except CorruptRecord:
        return _UNREADABLE


def rcCounts(snapshot, rcIds):
    """
    @return: C{{rc_id: {"desired", "current", "healthy"}}} of the RCs
        C{rcIds} in C{snapshot} (those it shows readable).
    """
    found = {}
    for rcId in rcIds:
        rc = _read(snapshot.rc, rcId)
        if rc is not None and rc is not _UNREADABLE:
            counts = count(rc, snapshot)
            found[rcId] = {"desired": counts.desired, "current": counts.current,
                           "healthy": counts.healthy}
    return found


def rollProgress(snapshot, rollIds):
    """
    @return: C{{roll_id: {"target", "new_healthy", "old_healthy"}}} of the
        rolls C{rollIds} in C{snapshot}: the replicas it moves, and the
        healthy pods of the RC it moves them to ("new"; the old RC while it
        rolls back) and from (a roll whose record, or one of whose RCs'
        records, is unreadable is left out).
    """
    found = {}
    for rollId in rollIds:
        roll = _read(snapshot.roll, rollId)
        if roll is None or roll is _UNREADABLE:
            continue
        to, away, target = _roles(roll)
        rcs = {name: _read(snapshot.rc, rcId)
               for name, rcId in (("new_healthy", to), ("old_healthy", away))}
        if any(rc is _UNREADABLE for rc in rcs.values()):
            continue
        found[rollId] = {name: 0 if rc is None else count(rc, snapshot).healthy
                         for name, rc in rcs.items()}
        found[rollId]["target"] = target
    return found
