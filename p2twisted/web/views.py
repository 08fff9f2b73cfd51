# -*- test-case-name: tests.test_web_views -*-
"""
The JSON objects the API serves, built from the read model (a
L{Snapshot}, typed records): the one place that turns them into dicts.
Every function is pure over what it is given.
"""

from p2twisted import records
from p2twisted.orchestrate.snapshot import TREES
from p2twisted.store import keys

#: The trees the API reads: the orchestrators' and the agents' statuses.
API_TREES = TREES + (keys.status("pods"), keys.status("agents"))


def _readable(read):
    """
    @return: C{(value, None)} of C{read()}, or C{(None, error text)} when
        it raises L{records.CorruptRecord}.
    """
    try:
        return read(), None
    except records.CorruptRecord as e:
        return None, str(e)


def node(snapshot, name):
    """
    @return: C{{"node", "agent", "marker", "labels", "pods"}} of C{name}:
        its agent C{up} or C{down}, whether it has a node marker, its
        labels and the pods in its intent or reality.
    """
    labels, error = _readable(lambda: snapshot.nodeLabels(name))
    found = {"node": name, "agent": "up" if snapshot.agentUp(name) else "down",
             "marker": snapshot.marker(name) is not None, "labels": labels or {},
             "pods": sorted(set(snapshot.podsOnNode(name)) | set(snapshot.podsInReality(name)))}
    if error:
        found["error"] = error
    return found


def nodes(snapshot):
    """@return: L{node} of every node of the universe."""
    return [node(snapshot, name) for name in snapshot.nodes()]


def pod(snapshot, nodeName, podId):
    """
    @return: C{{"node", "pod_id", "intent_sha", "reality_sha", "health",
        "health_sha", "health_output", "state", "last_error", "attempts",
        "labels"}} of pod C{podId} on C{nodeName}.
    """
    health = snapshot.health(podId, nodeName)
    status, statusError = _readable(lambda: snapshot.podStatus(nodeName, podId))
    labels, labelsError = _readable(lambda: snapshot.podLabels(nodeName, podId))
    return {
        "node": nodeName, "pod_id": podId,
        "intent_sha": snapshot.intentSha(nodeName, podId),
        "reality_sha": snapshot.realitySha(nodeName, podId),
        "health": None if health is None else health.status,
        "health_sha": None if health is None else health.sha,
        "health_output": None if health is None else health.output,
        "state": None if status is None else status.state,
        "last_error": statusError or (None if status is None else status.error),
        "attempts": 0 if status is None else status.attempts,
        "labels": labels or {},
        "labels_error": labelsError,
    }


def pods(snapshot):
    """@return: L{pod} of every pod the snapshot knows, by node then id."""
    return [pod(snapshot, nodeName, podId) for nodeName, podId in snapshot.pods()]
