# -*- test-case-name: tests.test_cli_tutorial -*-
"""
C{p2 inspect [--json]}: the cluster view, per pod and node: the SHA in
intent and in reality, the agent's state of the pod, its health and its
last error, whether one of its services is crash-looping (read from the
whole C{intent}, C{reality}, C{health} and C{status/pods} trees), and the
removals each agent holds back (from C{status/agents}): pods waiting out the
removal grace, removals held until C{p2 node confirm}, and orphans (pods on a
node's disk in neither intent nor reality).
"""

import time

from twisted.internet import defer

from p2twisted import services
from p2twisted.cli.main import writeJSON
from p2twisted.records import CorruptRecord
from p2twisted.store import keys


def register(subparsers):
    inspect = subparsers.add_parser(
        "inspect", help="show every pod on every node: intent vs reality, health",
        description="Show the cluster: for each pod and node, the SHA of the manifest in "
                    "intent and in reality, whether they agree, the agent's state of the pod, "
                    "its health (passing or critical, from the agent's check of its status "
                    "endpoint; - without one) and its last error; and the removals agents "
                    "hold: in their grace, or held until 'p2 node confirm NODE' (a new node "
                    "marker, or orphans: pods on disk in neither intent nor reality), and "
                    "the nodes without a node marker, whose agents act on nothing.")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(run=runInspect)


def clusterView(snapshot):
    """
    @param snapshot: a L{Snapshot} from L{services.readPods}.
    @return: C{[{"pod", "node", "intent", "reality", "in_sync", "state",
        "error", "time", "attempts", "restarts", "crash_loop", "health",
        "removal"}]} sorted by pod and node, each as L{services.podState}
        gives it; C{removal} is C{None}, C{"grace"} (the agent removes it
        when its grace ends), C{"held"} (until C{p2 node confirm}),
        C{"orphan"} (on the node's disk in neither intent nor reality; held
        too) or C{"no-marker"} (not in sync on a node whose agent reports no
        node marker: it installs and removes nothing).
    """
    rows = {}

    def row(node, podId):
        if (podId, node) not in rows:
            rows[(podId, node)] = dict(services.podState(snapshot, podId, node), pod=podId,
                                       removal=None)
        return rows[(podId, node)]

    for node, podId in snapshot.pods():
        row(node, podId)
    for node, record in agentRemovals(snapshot).items():
        for podId in record.get("orphans") or []:
            row(node, podId)["removal"] = "orphan"
        for podId in (record.get("held") or []) if record.get("state") == "held" else []:
            if row(node, podId)["removal"] is None:
                row(node, podId)["removal"] = "held"
        for podId in record.get("grace_until") or {}:
            row(node, podId)["removal"] = "grace"
        if record.get("state") == "no-marker":
            for (podId, rowNode), r in rows.items():
                if rowNode == node and r["intent"] != r["reality"]:
                    r["removal"] = "no-marker"
    result = []
    for k in sorted(rows):
        r = rows[k]
        r["in_sync"] = r["intent"] == r["reality"] and r["removal"] != "orphan"
        result.append(r)
    return result


def agentRemovals(snapshot, unreadable=None):
    """
    @param snapshot: a L{Snapshot} holding C{status/agents}.
    @param unreadable: a list to which the one-line error (naming the key)
        of each agent status that cannot be read is appended.
    @return: C{{node: removals}}: the C{removals} record of each agent's
        status (L{p2twisted.agent.failsafe.describe}) that has one.
    """
    found = {}
    for node in snapshot.agentStatusNodes():
        try:
            status = snapshot.agentStatus(node)
        except CorruptRecord as e:
            if unreadable is not None:
                unreadable.append(str(e))
            continue
        if status.removals is not None:
            found[node] = status.removals
    return found


def heldNotes(removals, agentUp=None):
    """
    @param agentUp: C{agentUp(node)} tells whether C{node}'s agent is
        present (L{Snapshot.agentUp}); the no-marker line is only for those
        (the last status of a removed node's stopped agent says nothing).
    @return: one line per node whose agent holds removals, naming the command
        that confirms them, has removals waiting out their grace, or has no
        node marker (and so acts on nothing).
    """
    why = {"new-marker": "its node marker is not the one its agent last saw",
           "orphans": "pods on its disk are in neither intent nor reality"}
    lines = []
    for node, record in sorted(removals.items()):
        if record.get("state") == "no-marker" and (agentUp is None or agentUp(node)):
            lines.append("%s holds no node marker: the agent of %s installs and removes nothing "
                         "until one is written ('p2 node add %s'; a new marker holds removals "
                         "until 'p2 node confirm %s')\n" % (keys.intentNode(node), node, node, node))
        until = record.get("grace_until") or {}
        if record.get("state") == "grace" and until:
            lines.append("removals on %s wait out the failsafe's grace: %s\n" % (node, ", ".join(
                "%s (until %s)" % (pod, time.strftime("%H:%M:%SZ", time.gmtime(t)))
                for pod, t in sorted(until.items()))))
        if record.get("state") == "held":
            timeout = record.get("hold_until")
            lines.append("removals on %s are held (%s): %s; confirm with '%s'%s\n" % (
                node, why.get(record.get("hold"), record.get("hold")),
                ", ".join(record.get("held") or []) or "none pending",
                record.get("confirm") or "p2 node confirm %s" % (node,),
                "" if not isinstance(timeout, (int, float)) else
                " (else they go ahead at %s, when the hold times out)"
                % (time.strftime("%H:%M:%SZ", time.gmtime(timeout)),)))
    return lines


@defer.inlineCallbacks
def runInspect(options):
    store = yield options.openStore()
    try:
        snapshot = yield services.readPods(store)
    finally:
        yield store.close()
    rows = clusterView(snapshot)
    unreadable = []
    notes = heldNotes(agentRemovals(snapshot, unreadable), snapshot.agentUp) + [
        "%s\n" % (line,) for line in unreadable]
    out = options.out
    if options.json:
        return writeJSON(out, rows)
    if not rows:
        out.write("no pods in intent or reality (deploy one with 'p2 deploy NAME')\n")
        out.write("".join(notes))
        return 0
    header = ("POD", "NODE", "INTENT", "REALITY", "SYNC", "STATE", "HEALTH")
    table = [header]
    for r in rows:
        synced = (r["removal"] if r["removal"] is not None else
                  "-" if r["intent"] is None and r["reality"] is None else
                  "yes" if r["in_sync"] else
                  "removing" if r["intent"] is None else "converging")
        table.append((r["pod"], r["node"], (r["intent"] or "-")[:12],
                      (r["reality"] or "-")[:12], synced, r["state"] or "unknown",
                      services.healthText(r["health"], r["reality"])))
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for i, line in enumerate(table):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() + "\n")
        if not i:
            continue
        health = rows[i - 1]["health"]
        if health is not None and health["status"] != "passing":
            out.write("    health check: %s\n" % (health["output"],))
        loop = services.crashLoopLine(rows[i - 1])
        if loop:
            out.write("    %s\n" % (loop,))
        if rows[i - 1]["error"]:
            out.write("    last error: %s\n" % (rows[i - 1]["error"],))
    out.write("".join(notes))
    return 0
