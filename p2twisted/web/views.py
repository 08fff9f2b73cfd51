# -*- test-case-name: tests.test_web_api -*-
"""
The JSON objects the API serves, built from the read model (a
L{Snapshot}, typed records): the one place in the API that turns them into
dicts.  Every function is pure over what it is given; the CLI's views of
RCs and rolls (L{p2twisted.cli.rc.view}, L{p2twisted.cli.roll.progress})
are reused, so C{p2 rc show --json} and C{/api/v1/rcs/<id>} agree.

No response carries store credentials: the store URL an agent reports is
shown without its password (L{safeURL}).
"""

from urllib.parse import urlsplit, urlunsplit

import attr

from p2twisted import records
from p2twisted.orchestrate.snapshot import TREES, manifestSha
from p2twisted.store import keys

#: The trees the API reads: the read model's, the agents' and the farms'
#: statuses, and the daemon sets and pod clusters when there are any.
API_TREES = TREES + (keys.status("pods"), keys.status("agents"), keys.status("rc"),
                     keys.status("roll"), keys.status("ds"), keys.status(keys.POD_CLUSTERS),
                     keys.DAEMON_SETS, keys.POD_CLUSTERS)

#: The most audit events one answer holds.
MAX_AUDIT = 1000


def safeURL(url):
    """
    @return: C{url} without the password of its user part
        (C{zk://user:***@host/p2}); not a URL is given back as it is.
    """
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc="%s:***@%s" % (user.split(":", 1)[0], host)))


def _readable(read):
    """
    @return: C{(value, None)} of C{read()}, or C{(None, error text)} when
        it raises L{records.CorruptRecord}.
    """
    try:
        return read(), None
    except records.CorruptRecord as e:
        return None, str(e)


# -- nodes and pods -----------------------------------------------------------

def node(snapshot, name):
    """
    @return: C{{"node", "agent", "marker", "labels", "pods"}} of C{name}:
        its agent C{up} or C{down}, whether it has a node marker, its
        labels and the pods in its intent or reality; C{"error"} when its
        labels are unreadable.
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


def nodeDetail(snapshot, name):
    """
    @return: L{node} of C{name}, with its agent's C{facts} (C{None} while
        it is down), the agent's last C{status} (C{connected},
        C{converged}, C{removals}, C{last_sync}, C{store} without its
        password) and its pods in full (L{pod}).
    """
    found = node(snapshot, name)
    facts, factsError = _readable(lambda: snapshot.machineFacts(name))
    status, statusError = _readable(lambda: snapshot.agentStatus(name))
    found["facts"] = None if facts is None else facts.facts
    if status is not None:
        status = attr.asdict(status, recurse=False)
        del status["pods"]  # in "pods" below, per pod
        status["store"] = safeURL(status["store"])
    found["status"] = status
    errors = [e for e in (found.get("error"), factsError, statusError) if e]
    if errors:
        found["error"] = "; ".join(errors)
    found["pods"] = [pod(snapshot, name, podId) for podId in found["pods"]]
    return found


def pod(snapshot, nodeName, podId):
    """
    @return: C{{"node", "pod_id", "intent_sha", "reality_sha", "health",
        "health_sha", "health_output", "state", "last_error", "attempts",
        "restarts", "labels"}} of pod C{podId} on C{nodeName}: the SHAs are
        C{None} when absent and C{"invalid"} for an invalid manifest;
        C{health} C{passing}, C{critical} or C{None} (no check, or no
        agent), C{health_sha} the manifest it checked; C{state} the agent's
        worker state (C{deploying}, C{idle}, C{failed}...).
    """
    health = snapshot.health(podId, nodeName)
    status, statusError = _readable(lambda: snapshot.podStatus(nodeName, podId))
    labels, labelsError = _readable(lambda: snapshot.podLabels(nodeName, podId))
    found = {
        "node": nodeName, "pod_id": podId,
        "intent_sha": snapshot.intentSha(nodeName, podId),
        "reality_sha": snapshot.realitySha(nodeName, podId),
        "health": None if health is None else health.status,
        "health_sha": None if health is None else health.sha,
        "health_output": None if health is None else health.output,
        "state": None if status is None else status.state,
        "last_error": statusError or (None if status is None else status.error),
        "attempts": 0 if status is None else status.attempts,
        "restarts": None if status is None else status.restarts,
        "labels": labels or {},
    }
    if labelsError:
        found["labels_error"] = labelsError
    return found


def pods(snapshot, nodeName=None):
    """
    @return: L{pod} of every pod the snapshot knows (of C{nodeName} only,
        when given), by node then id.
    """
    return [pod(snapshot, n, podId) for n, podId in snapshot.pods()
            if nodeName is None or n == nodeName]


# -- controllers --------------------------------------------------------------

def rc(snapshot, rcId, pods=False):
    """
    @return: the view of the RC C{rcId} C{p2 rc show --json} prints (with
        its pods when C{pods}), or C{None} when there is none.
    @raise records.CorruptRecord: when its record is unreadable.
    """
    from p2twisted.cli.rc import view
    found = snapshot.rc(rcId)
    return None if found is None else view(snapshot, found, snapshot.entries, pods=pods)


def rcs(snapshot):
    """@return: L{rc} of every readable RC, by id."""
    from p2twisted.cli.rc import view
    return [view(snapshot, found, snapshot.entries) for found in snapshot.rcs().values()]


def roll(snapshot, rollId):
    """
    @return: the progress of roll C{rollId} C{p2 roll status --json}
        prints: its fields, C{old} and C{new} C{{"id", "desired", "current",
        "real", "healthy", "disabled"}}, its target C{desired} and
        C{min_healthy}, and its farm's last word; or C{None}.
    @raise records.CorruptRecord: when its record is unreadable.
    """
    from p2twisted.cli.rc import farmStatus
    from p2twisted.cli.roll import progress
    found = snapshot.roll(rollId)
    if found is None:
        return None
    return progress(found, snapshot, farmStatus(snapshot.entries.get(keys.status("roll", rollId))))


def rolls(snapshot):
    """@return: L{roll} of every readable roll, by id."""
    return [roll(snapshot, rollId) for rollId in snapshot.rolls()]


def record(found):
    """
    @return: the fields of the attrs record C{found} as JSON values: a
        manifest's bytes become its C{manifest_sha}, other bytes text.
    """
    fields = {}
    for name, value in attr.asdict(found, recurse=False).items():
        if name == "manifest" and isinstance(value, bytes):
            fields["manifest_sha"] = manifestSha(value)
        elif isinstance(value, bytes):
            fields[name] = value.decode("utf-8", "replace")
        else:
            fields[name] = value
    return fields


def daemonSets(snapshot):
    """
    @return: the daemon sets: each L{record} with its farm's last status
        (C{status/ds/<id>}); C{[]} while the read model has no daemon sets.
    """
    from p2twisted.cli.rc import farmStatus
    found = getattr(snapshot, "daemonSets", None)
    if found is None:
        return []
    return [dict(record(obj), id=objectId,
                 farm=farmStatus(snapshot.entries.get(keys.status("ds", objectId))))
            for objectId, obj in sorted(found().items())]


def _podCluster(snapshot, found, members=False):
    """
    @return: L{p2twisted.cli.pc.view} of C{found}, plus C{farm}: its
        C{syncers} (C{{syncer: status}}) under the key every controller's
        view has for what its farm last said.
    """
    from p2twisted.cli.pc import view
    info = view(snapshot, found, members=members)
    info["farm"] = info["syncers"]
    return info


def podCluster(snapshot, pcId):
    """
    @return: the view of pod cluster C{pcId} C{p2 pc show --json} prints:
        its record, member and healthy counts, each syncer's last status
        and its members; or C{None}.
    @raise records.CorruptRecord: when its record is unreadable.
    """
    found = snapshot.podCluster(pcId)
    return None if found is None else _podCluster(snapshot, found, members=True)


def podClusters(snapshot):
    """@return: the pod clusters as C{p2 pc list --json} shows them, by id."""
    return [_podCluster(snapshot, found) for found in snapshot.podClusters().values()]


def auditEvent(event):
    """@return: C{{"when", "who", "kind", "id", "action", "details"}}."""
    return {name: getattr(event, name) for name in event.FIELDS}
