# -*- test-case-name: tests.test_cli_namespace -*-
"""
C{p2 node add}, C{p2 node confirm}, C{p2 node remove} and C{p2 nodes}: make
a node known to schedulers, let its agent carry out the removals it holds,
forget a node (optionally draining it first), and list nodes with their
agents' presence.
"""

import getpass
import socket

from twisted.internet import defer

from p2twisted import intent
from p2twisted.cli.main import writeJSON
from p2twisted.cli.schedule import nodeName
from p2twisted.errors import KeyExists, P2Error
from p2twisted.labels import LabelStore, parseChanges
from p2twisted.records import (
    AgentStatus, Confirmation, CorruptRecord, markerIdentity, readable)
from p2twisted.store import keys


def register(subparsers):
    node = subparsers.add_parser(
        "node", help="manage nodes",
        description="Manage nodes: 'p2 node add NODE' writes the node marker, so the node's "
                    "agent acts on its (still empty) intent; 'p2 node remove NODE' deletes it.")
    commands = node.add_subparsers(dest="node_command", metavar="COMMAND")
    add = commands.add_parser(
        "add", help="write a node's marker (and labels)",
        description="Write intent/<NODE>, the marker without which the node's agent installs "
                    "and removes nothing, and optionally the node's labels.")
    add.add_argument("node", metavar="NODE")
    add.add_argument("--label", action="append", default=[], metavar="K=V",
                     help="a label to set on the node (repeatable)")
    add.set_defaults(run=runAdd, writes=True)
    confirm = commands.add_parser(
        "confirm", help="let a node's agent carry out the removals it holds",
        description="A node's agent holds every removal when its node marker is not the one "
                    "it last saw (a wipe, a restore, a re-created marker) or pods are on its "
                    "disk in neither intent nor reality; 'p2 inspect' lists them. Confirming "
                    "says the node's intent, as it is now, is right: the agent then removes "
                    "what intent does not name (orphans included).")
    confirm.add_argument("node", metavar="NODE")
    confirm.set_defaults(run=runConfirm)
    registerRemove(commands)
    node.set_defaults(run=lambda options: node.print_help(options.err) or 2)

    nodes = subparsers.add_parser(
        "nodes", help="list nodes: marker, agent presence, pods",
        description="List every node known: added ('p2 node add'), running an agent, "
                    "labelled, or with pods in intent.")
    nodes.add_argument("--json", action="store_true", help="print JSON")
    nodes.set_defaults(run=runNodes)


@defer.inlineCallbacks
def runAdd(options):
    name = nodeName(options.node)
    changes = parseChanges(options.label)
    store = yield options.openStore()
    try:
        try:
            yield store.create(keys.intentNode(name), intent.nodeMarker(name))
            options.out.write("added node %s\n" % (name,))
        except KeyExists:
            options.out.write("node %s already has its marker\n" % (name,))
        if changes.set or changes.remove:
            labels = yield LabelStore(store).applyLabels(
                "node", name, set=changes.set, remove=changes.remove)
            options.out.write("".join("  %s=%s\n" % kv for kv in sorted(labels.items())))
    finally:
        yield store.close()
    return 0


@defer.inlineCallbacks
def confirmNode(store, node, now=None):
    """
    Write C{confirmations/<node>}: a go-ahead for the removals C{node}'s
    agent holds, bound to the node marker there now (a later marker needs a
    confirmation of its own).

    @return: L{Deferred} firing with C{(marker identity, removals, agent)}:
        C{removals} is the C{removals} record of the agent's status, or
        C{None} when it has published none; C{agent}, whether the node's
        agent is registered (C{machines/<node>}) and so acts on it now.
    @raise P2Error: when the node has no marker.
    """
    marker = yield store.get(keys.intentNode(node))
    if marker is None:
        raise P2Error("%s holds no node marker: its agent acts on nothing, so there is nothing "
                      "to confirm (schedule a pod there or run 'p2 node add %s')"
                      % (keys.intentNode(node), node))
    identity = markerIdentity(marker)
    try:
        by = "%s@%s" % (getpass.getuser(), socket.gethostname())
    except Exception:
        by = None
    yield store.put(keys.confirmation(node), Confirmation.new(node, identity, by, now).toBytes())
    status = readable(AgentStatus, (yield store.get(keys.status("agents", node))))
    agent = yield store.get(keys.machine(node))
    return identity, status.removals if status is not None else None, agent is not None


@defer.inlineCallbacks
def runConfirm(options):
    name = nodeName(options.node)
    store = yield options.openStore()
    try:
        identity, removals, agent = yield confirmNode(store, name)
    finally:
        yield store.close()
    options.out.write("confirmed the node marker of %s (created %s)\n"
                      % (name, identity.get("created") or "at an unknown time"))
    if not agent:
        options.out.write("no agent of %s is running (%s is absent): it acts on the confirmation "
                          "when it starts, if the marker is still this one\n"
                          % (name, keys.machine(name)))
    elif removals and removals.get("state") == "held":
        pods = removals.get("held") or []
        options.out.write("its agent now removes what intent does not name: %s\n"
                          % (", ".join(pods) or "nothing yet"))
        if removals.get("orphans"):
            options.out.write("and the pods on its disk in neither intent nor reality: %s\n"
                              % (", ".join(removals["orphans"]),))
    else:
        options.out.write("its agent reported no held removals: nothing to carry out\n")
    return 0


def describeNodes(snapshot):
    """
    @param snapshot: a L{Snapshot} of intent, machines and node labels.
    @return: C{{node: {"marker", "agent", "pods", "labels"}}} of the node
        universe and the nodes with pods in intent: C{agent} is the facts its
        agent publishes (C{{}} when unreadable), or C{None} when it is down.
    """
    nodes = {}
    for node in sorted(set(snapshot.nodes()) | set(snapshot.intentNodes())):
        agent = None
        if snapshot.agentUp(node):
            try:
                agent = snapshot.machineFacts(node).facts
            except CorruptRecord:
                agent = {}
        try:
            labels = snapshot.nodeLabels(node)
        except CorruptRecord:
            labels = None
        nodes[node] = {"marker": snapshot.marker(node) is not None, "agent": agent,
                       "pods": snapshot.podsOnNode(node), "labels": labels}
    return nodes


@defer.inlineCallbacks
def runNodes(options):
    from p2twisted.orchestrate.snapshot import Snapshot
    store = yield options.openStore()
    try:
        nodes = describeNodes((yield Snapshot.read(
            store, (keys.INTENT, keys.MACHINES, keys.labelTree("node")))))
    finally:
        yield store.close()
    if options.json:
        return writeJSON(options.out, nodes)
    if not nodes:
        options.err.write("no nodes: add one with 'p2 node add NODE' or start an agent\n")
        return 0
    options.out.write("%-24s %-8s %-8s %s\n" % ("NODE", "MARKER", "AGENT", "PODS"))
    for name in sorted(nodes):
        info = nodes[name]
        options.out.write("%-24s %-8s %-8s %s\n" % (
            name, "yes" if info["marker"] else "NO", "up" if info["agent"] is not None else "down",
            ",".join(sorted(info["pods"])) or "-"))
    return 0


#: Seconds between two looks at a draining node's reality.
DRAIN_INTERVAL = 0.2


def registerRemove(commands):
    remove = commands.add_parser(
        "remove", help="forget a node: delete its marker and labels",
        description="Delete intent/<NODE> (the node's marker) and the node's labels. Refuses "
                    "while pods are scheduled or still run there, unless --drain is given: "
                    "then its pods are unscheduled, and the marker is deleted once the node's "
                    "agent has removed them (its reality is empty).")
    remove.add_argument("node", metavar="NODE")
    remove.add_argument("--drain", action="store_true",
                        help="unschedule its pods and wait until its agent removed them")
    remove.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="how long --drain waits for the agent (default: 60)")
    remove.set_defaults(run=runRemove, writes=True)


def _podsOf(store, prefix):
    """
    @return: L{Deferred} firing with the set of pod ids under C{prefix}
        (C{intent/<node>}, C{reality/<node>} or C{status/pods/<node>}).
    """
    d = store.list(prefix)
    return d.addCallback(lambda entries: {keys.child(prefix, k) for k in entries} - {None})


@defer.inlineCallbacks
def _drained(store, name, unscheduled, seen, since):
    """
    Whether C{name}'s agent has nothing left to remove, so its marker may go
    (the agent removes nothing without it).  Its reality and its pods'
    status records must be empty; a pod's status record is written when a
    deploy begins, its reality when it ends, and deleted after its removal,
    so one that was deploying when it was unscheduled may show neither yet.
    Hence, while the agent is up, each unscheduled pod must also be known
    to the agent's status record written after the unschedule
    (C{status/agents/<node>}, version other than C{since}) as a pod it has no
    worker for, or have been seen in reality or status meanwhile (C{seen}:
    its removal, which deletes both, is then over).

    @return: L{Deferred} firing with C{(done, what it waits for)}.
    @raise P2Error: when the agent holds its removals (a confirmation is due).
    """
    realPods = yield _podsOf(store, keys.realityNode(name))
    statusPods = yield _podsOf(store, keys.status("pods", name))
    seen.update(realPods | statusPods)
    record = yield store.get(keys.status("agents", name))
    status = readable(AgentStatus, record)
    removals = status.removals if status is not None else None
    if isinstance(removals, dict) and removals.get("state") == "held":
        raise P2Error("node %s's agent holds its removals (%s: %s); its marker is kept: check "
                      "with 'p2 status', run '%s', then run this again" % (
                          name, removals.get("hold"), ", ".join(removals.get("held") or ())
                          or ", ".join(removals.get("orphans") or ()) or "-",
                          removals.get("confirm") or "p2 node confirm " + name))
    if realPods or statusPods:
        return False, "still runs %s" % (", ".join(sorted(realPods | statusPods)),)
    if not unscheduled or (yield store.get(keys.machine(name))) is None:
        return True, None  # no agent up: none is deploying them
    fresh = record is not None and record.version != since
    busy = set()
    if fresh:
        agentPods = status.pods if status is not None else {}
        busy = {p for p in unscheduled if p in agentPods}
        busy -= seen
        if isinstance(removals, dict) and (removals.get("orphans") or removals.get("grace_until")):
            busy.add("(pods on disk or in their removal grace)")
    if not fresh or busy:
        return False, "its agent has not yet shown it dropped %s" % (
            ", ".join(sorted(busy or unscheduled)),)
    return True, None


@defer.inlineCallbacks
def runRemove(options):
    from twisted.internet import task

    from p2twisted.store.common import Delete

    name = nodeName(options.node)
    store = yield options.openStore()
    try:
        scheduled = sorted((yield _podsOf(store, keys.intentNode(name))))
        running = sorted((yield _podsOf(store, keys.realityNode(name))))
        marker = yield store.get(keys.intentNode(name))
        labels = yield store.get(keys.label("node", name))
        if marker is None and labels is None and not scheduled and not running:
            options.out.write("node %s has no marker, labels or pods; nothing to do\n" % (name,))
            return 0
        if (scheduled or running) and not options.drain:
            raise P2Error("node %s %s; unschedule them first or use 'p2 node remove %s "
                          "--drain'" % (name, "has pods scheduled: " + ", ".join(scheduled)
                                        if scheduled else "still runs pods: " + ", ".join(running),
                                        name))
        if marker is None and running and options.drain:
            raise P2Error("node %s has no marker, so its agent removes nothing (the failsafe) and "
                          "%s stay; let it remove them with 'p2 node add %s' then 'p2 node "
                          "confirm %s', then run this again" % (
                              name, ", ".join(running), name, name))
        for podId in scheduled:
            yield intent.unschedule(store, name, podId)
            options.out.write("unscheduled %s from %s\n" % (podId, name))
        # Read after the unschedule: a record of another version was written
        # by a sync that ended after it.
        since = yield store.get(keys.status("agents", name))
        since = since.version if since is not None else None
        seen = set(running)
        deadline = options.reactor.seconds() + options.timeout
        while True:
            done, waiting = yield _drained(store, name, set(scheduled), seen, since)
            if done:
                break
            if options.reactor.seconds() > deadline:
                raise P2Error("node %s %s %gs after its pods were unscheduled; its marker is "
                              "kept so its agent removes them (is it running? see 'p2 nodes'); "
                              "run this again later" % (name, waiting, options.timeout))
            yield task.deferLater(options.reactor, DRAIN_INTERVAL, lambda: None)
        yield store.transaction([Delete(keys.intentNode(name)), Delete(keys.label("node", name))])
    finally:
        yield store.close()
    options.out.write("removed node %s\n" % (name,))
    return 0
