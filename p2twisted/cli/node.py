# -*- test-case-name: tests.test_cli_namespace -*-
"""
C{p2 node add} and C{p2 nodes}: make a node known to schedulers and list
nodes with their agents' presence.
"""

import json

from twisted.internet import defer

from p2twisted import intent
from p2twisted.cli.schedule import nodeName
from p2twisted.errors import KeyExists
from p2twisted.labels import LabelStore, parseChanges
from p2twisted.store import keys


def register(subparsers):
    node = subparsers.add_parser(
        "node", help="manage nodes",
        description="Manage nodes: 'p2 node add NODE' writes the node marker, so the node's "
                    "agent acts on its (still empty) intent.")
    commands = node.add_subparsers(dest="node_command", metavar="COMMAND")
    add = commands.add_parser(
        "add", help="write a node's marker (and labels)",
        description="Write intent/<NODE>, the marker without which the node's agent installs "
                    "and removes nothing, and optionally the node's labels.")
    add.add_argument("node", metavar="NODE")
    add.add_argument("--label", action="append", default=[], metavar="K=V",
                     help="a label to set on the node (repeatable)")
    add.set_defaults(run=runAdd)
    node.set_defaults(run=lambda options: node.print_help(options.err) or 2)

    nodes = subparsers.add_parser(
        "nodes", help="list nodes: marker, agent presence, pods",
        description="List every node that has intent or a registered agent.")
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
def describeNodes(store):
    """
    @return: L{Deferred} firing with C{{node: {"marker", "agent", "pods"}}}.
    """
    entries = yield store.list(keys.INTENT)
    machines = yield store.list(keys.MACHINES)
    nodes = {}
    for key in entries:
        parts = keys.parse(key)
        info = nodes.setdefault(parts[1], {"marker": False, "agent": None, "pods": []})
        if len(parts) == 2:
            info["marker"] = True
        elif len(parts) == 3:
            info["pods"].append(parts[2])
    for key, entry in machines.items():
        node = keys.parse(key)[1]
        info = nodes.setdefault(node, {"marker": False, "agent": None, "pods": []})
        try:
            info["agent"] = json.loads(entry.value)
        except ValueError:
            info["agent"] = {}
    return nodes


@defer.inlineCallbacks
def runNodes(options):
    store = yield options.openStore()
    try:
        nodes = yield describeNodes(store)
    finally:
        yield store.close()
    if options.json:
        json.dump(nodes, options.out, indent=2, sort_keys=True)
        options.out.write("\n")
        return 0
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
