# -*- test-case-name: tests.test_metrics -*-
"""
What an orchestrator's metrics say of the objects it holds, read from a
L{Snapshot} (pure functions: the scrape passes the latest snapshot and the
ids the farms hold).
"""

from p2twisted.orchestrate.roll import _roles, count


def rcCounts(snapshot, rcIds):
    """
    @return: C{{rc_id: {"desired", "current", "healthy"}}} of the RCs
        C{rcIds} in C{snapshot} (those it shows).
    """
    found = {}
    for rcId in rcIds:
        rc = snapshot.rc(rcId)
        if rc is not None:
            counts = count(rc, snapshot)
            found[rcId] = {"desired": counts.desired, "current": counts.current,
                           "healthy": counts.healthy}
    return found


def rollProgress(snapshot, rollIds):
    """
    @return: C{{roll_id: {"target", "new_healthy", "old_healthy"}}} of the
        rolls C{rollIds} in C{snapshot}: the replicas it moves, and the
        healthy pods of the RC it moves them to ("new"; the old RC while it
        rolls back) and from.
    """
    found = {}
    for rollId in rollIds:
        roll = snapshot.roll(rollId)
        if roll is None:
            continue
        to, away, target = _roles(roll)
        healthy = {}
        for name, rcId in (("new_healthy", to), ("old_healthy", away)):
            rc = snapshot.rc(rcId)
            healthy[name] = 0 if rc is None else count(rc, snapshot).healthy
        found[rollId] = dict(healthy, target=target)
    return found
