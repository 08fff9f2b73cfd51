# -*- test-case-name: tests.test_cli_pc -*-
"""
C{p2 pc}: create, list, show and delete pod clusters (C{pod_clusters/<id>}),
and change their annotations and selector; C{twistd p2-orchestrator}'s pc
farm hands their membership to the syncers (HAProxy, a JSON file).

Reads go through the read model (L{Snapshot}, L{podcluster.membership});
writes are compare-and-set plans of L{p2twisted.orchestrate.pcedit}, each
written with its audit event.
"""

import json
import time

from twisted.internet import defer

from p2twisted.cli.main import withStore, writeJSON
from p2twisted.errors import UsageError


def register(subparsers):
    pc = subparsers.add_parser(
        "pc", help="manage pod clusters",
        description="A pod cluster is a named group of pods -- pod id, availability zone and "
                    "cluster name, unique together -- whose healthy members 'twistd "
                    "p2-orchestrator' hands to its syncers (an HAProxy backend, a JSON "
                    "service-discovery file).")
    commands = pc.add_subparsers(dest="pc_command", metavar="COMMAND")

    create = commands.add_parser(
        "create", help="create a pod cluster",
        description="Create a pod cluster of the pods labelled pod_id=POD, "
                    "availability_zone=AZ and cluster_name=NAME (or matching --selector).")
    create.add_argument("--pod", required=True, metavar="POD_ID", help="the pods' id")
    create.add_argument("--az", required=True, metavar="AZ", help="the availability zone")
    create.add_argument("--name", required=True, metavar="NAME", help="the cluster name")
    create.add_argument("--selector", default=None, metavar="SELECTOR",
                        help="pod label selector (default: the three labels above)")
    create.add_argument("--annotations", default="{}", metavar="JSON",
                        help="annotations for the syncers, a JSON object, e.g. '{\"port\": "
                             "8080, \"haproxy_backend\": \"web\"}'")
    create.add_argument("--id", default=None, metavar="ID",
                        help="its id (default: POD-AZ-NAME)")
    create.set_defaults(run=runCreate, writes=True)

    lst = commands.add_parser("list", help="list pod clusters",
                              description="List every pod cluster with its member counts and "
                                          "its syncers' states.")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(run=runList)

    show = commands.add_parser("show", help="show a pod cluster and its members",
                               description="Show a pod cluster, its members (node, address, "
                                           "health) and what each syncer last reported.")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=runShow)

    delete = commands.add_parser(
        "delete", help="delete a pod cluster",
        description="Delete a pod cluster; the farm then removes it from every syncer (the "
                    "last pod cluster stays in them until another exists). Its pods keep "
                    "running.")
    delete.add_argument("id", metavar="ID")
    delete.set_defaults(run=runDelete, writes=True)

    annotations = commands.add_parser(
        "update-annotations", help="replace a pod cluster's annotations",
        description="Replace a pod cluster's annotations with the JSON object given.")
    annotations.add_argument("id", metavar="ID")
    annotations.add_argument("annotations", metavar="JSON")
    annotations.set_defaults(run=runAnnotations, writes=True)

    selector = commands.add_parser(
        "update-selector", help="change a pod cluster's pod selector",
        description="Change a pod cluster's pod selector: shows the members it adds and "
                    "removes and asks before applying (--yes applies without asking).")
    selector.add_argument("id", metavar="ID")
    selector.add_argument("selector", metavar="SELECTOR")
    selector.add_argument("--yes", "-y", action="store_true", help="apply without asking")
    selector.set_defaults(run=runSelector, writes=True)
    pc.set_defaults(run=lambda options: pc.print_help(options.err) or 2)


def _annotations(text):
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UsageError("annotations: not JSON (%s)" % (e,))
    if not isinstance(value, dict):
        raise UsageError("annotations: expected a JSON object, got %s" % (text,))
    return value


def _selector(text, what="--selector"):
    from p2twisted.errors import SelectorError
    from p2twisted.labels import parseSelector
    try:
        parseSelector(text)
    except SelectorError as e:
        raise UsageError("%s: %s" % (what, e))
    if not text.strip():
        raise UsageError("%s: an empty selector matches every pod of every pod id; name the "
                         "labels the cluster's pods have (e.g. 'pod_id=web,cluster_name=prod')"
                         % (what,))
    return text


def read(store):
    from p2twisted.orchestrate.pcedit import TREES
    from p2twisted.orchestrate.snapshot import Snapshot
    return Snapshot.read(store, TREES)


def view(snapshot, pc, members=False):
    """
    @return: the JSON-able view of C{pc}: its record, member counts, its
        syncers' statuses (C{{syncer: status}}) and, with C{members}, its
        members.
    """
    from p2twisted import records
    from p2twisted.orchestrate.podcluster import membership
    from p2twisted.records.podcluster import SyncerStatus
    from p2twisted.store import keys
    found = membership(pc, snapshot)
    prefix = keys.parse(keys.status(keys.POD_CLUSTERS, pc.id))
    syncers = {}
    for key, entry in sorted(snapshot.entries.items()):
        parts = keys.parse(key)
        if parts[:len(prefix)] == prefix and len(parts) == len(prefix) + 1:
            status = records.readable(SyncerStatus, entry)
            syncers[parts[-1]] = None if status is None else status.toDict()
    info = dict(pc.toDict(), members=len(found.members), healthy=len(found.addresses()),
                syncers=syncers)
    if members:
        info["member_list"] = [m.toDict() for m in found.members]
    return info


def _state(info):
    if not info["syncers"]:
        return "not synced yet"
    return ", ".join("%s %s" % (name, (s or {}).get("state", "?"))
                     for name, s in sorted(info["syncers"].items()))


@defer.inlineCallbacks
def runCreate(options):
    from p2twisted.orchestrate import edit, pcedit
    from p2twisted.records.podcluster import PodCluster, defaultId
    selector = None if options.selector is None else _selector(options.selector)
    pc = PodCluster(options.id or defaultId(options.pod, options.az, options.name),
                    options.pod, options.az, options.name, selector,
                    _annotations(options.annotations))
    snapshot, plan = yield withStore(options, lambda store: edit.change(
        store, lambda s: (s, pcedit.createPC(s, pc)), time.time(), pcedit.TREES))
    info = view(snapshot, pc)
    options.out.write("created pod cluster %s: pods matching %s (%d now, %d healthy)\n"
                      % (pc.id, pc.pod_selector, info["members"], info["healthy"]))
    return 0


@defer.inlineCallbacks
def runList(options):
    from p2twisted.cli.confirm import writeUnreadable
    from p2twisted.store import keys
    snapshot = yield withStore(options, read)
    found = snapshot.podClusters()
    ids = []
    for key, entry in sorted(snapshot.entries.items()):
        parts = keys.parse(key)
        if parts[0] == keys.POD_CLUSTERS and len(parts) == 2 and parts[1] not in found:
            ids.append(parts[1])
    unreadable = writeUnreadable(options, snapshot, ids, snapshot.podCluster, "pod cluster",
                                 "p2 pc delete")
    infos = [view(snapshot, pc) for pcId, pc in sorted(found.items())]
    if options.json:
        return writeJSON(options.out, infos)
    if not infos:
        if not unreadable:
            options.out.write("no pod clusters: create one with 'p2 pc create'\n")
        return 0
    width = max(len("ID"), *(len(i["id"]) for i in infos))
    options.out.write("%-*s  %-12s %-8s %-12s %7s %7s  %s\n" % (
        width, "ID", "POD", "ZONE", "CLUSTER", "MEMBERS", "HEALTHY", "SYNCERS"))
    for i in infos:
        options.out.write("%-*s  %-12s %-8s %-12s %7d %7d  %s\n" % (
            width, i["id"], i["pod_id"], i["availability_zone"], i["cluster_name"],
            i["members"], i["healthy"], _state(i)))
    return 0


@defer.inlineCallbacks
def runShow(options):
    from p2twisted.orchestrate.pcedit import requirePC
    snapshot = yield withStore(options, read)
    info = view(snapshot, requirePC(snapshot, options.id), members=True)
    if options.json:
        return writeJSON(options.out, info)
    out = options.out
    out.write("pod cluster %s: pod %s, zone %s, cluster %s\n" % (
        info["id"], info["pod_id"], info["availability_zone"], info["cluster_name"]))
    out.write("  selector: %s\n" % (info["pod_selector"],))
    if info["annotations"]:
        out.write("  annotations: %s\n" % (json.dumps(info["annotations"], sort_keys=True),))
    out.write("  members: %d, %d healthy\n" % (info["members"], info["healthy"]))
    for m in info["member_list"]:
        out.write("    %-16s %-22s %s\n" % (m["node"], m["address"] or "(no port)",
                                           "healthy" if m["healthy"] else "unhealthy"))
    if not info["syncers"]:
        out.write("  syncers: no status yet (is 'twistd p2-orchestrator' running with "
                  "syncers configured?)\n")
    for name, status in sorted(info["syncers"].items()):
        status = status or {}
        out.write("  syncer %s: %s -- %s (since %s)\n" % (
            name, status.get("state", "?"), status.get("reason") or "-", status.get("since", "?")))
        if status.get("error"):
            out.write("    last error: %s\n" % (status["error"],))
    return 0


def _change(options, build, done):
    from p2twisted.orchestrate import edit, pcedit

    @defer.inlineCallbacks
    def run():
        plan = yield withStore(options, lambda store: edit.change(
            store, build, time.time(), pcedit.TREES))
        options.out.write(done(plan) + "\n")
        return 0
    return run()


def runDelete(options):
    from p2twisted.orchestrate.pcedit import deletePC
    def done(plan):
        said = "deleted pod cluster %s" % (options.id,)
        if not set(plan.snapshot.podClusters()) - {options.id}:
            said += ("; it was the last one: the syncers keep it until another pod cluster "
                     "exists (the failsafe against an empty listing)")
        return said
    return _change(options, lambda s: deletePC(s, options.id), done)


def runAnnotations(options):
    from p2twisted.orchestrate.pcedit import requirePC, updatePC
    annotations = _annotations(options.annotations)

    def build(snapshot):
        pc = requirePC(snapshot, options.id)
        return updatePC(snapshot, pc.withAnnotations(annotations), "update-annotations",
                        {"from": pc.annotations, "to": annotations})
    return _change(options, build, lambda plan: "pod cluster %s: annotations %s" % (
        options.id, json.dumps(annotations, sort_keys=True)))


def selectorDiff(snapshot, pc, text):
    """
    @return: C{(added, removed)}: the members (L{Member}s) the selector
        C{text} adds to C{pc} and removes from it.
    """
    from p2twisted.orchestrate.podcluster import membership
    before = {(m.node, m.pod_id): m for m in membership(pc, snapshot).members}
    after = {(m.node, m.pod_id): m for m in membership(pc.withSelector(text), snapshot).members}
    return ([after[k] for k in sorted(set(after) - set(before))],
            [before[k] for k in sorted(set(before) - set(after))])


@defer.inlineCallbacks
def runSelector(options):
    from p2twisted.cli.confirm import confirm
    from p2twisted.orchestrate import edit, pcedit
    text = _selector(options.selector, "SELECTOR")

    @defer.inlineCallbacks
    def use(store):
        snapshot = yield read(store)
        pc = pcedit.requirePC(snapshot, options.id)
        if pc.pod_selector == text:
            options.out.write("pod cluster %s already selects %s; nothing to do\n"
                              % (pc.id, text))
            return 0
        added, removed = selectorDiff(snapshot, pc, text)
        out = options.out
        out.write("pod cluster %s: selector %s -> %s\n" % (pc.id, pc.pod_selector, text))
        yes = yield confirm(options, [("+", added), ("-", removed)], lambda m: (
            "%-16s %-22s %s" % (m.node, m.address or "(no port)",
                                "healthy" if m.healthy else "unhealthy")),
            "membership unchanged")
        if not yes:
            return 1
        version = snapshot.version(pc.key)

        def build(fresh):
            current = pcedit.requirePC(fresh, options.id)
            if fresh.version(current.key) != version:
                raise UsageError("pod cluster %s changed since the diff above; run again to see "
                                 "the new one" % (pc.id,))
            return pcedit.updatePC(fresh, current.withSelector(text), "update-selector", {
                "from": pc.pod_selector, "to": text,
                "added": [m.node for m in added], "removed": [m.node for m in removed]})
        yield edit.change(store, build, time.time(), pcedit.TREES)
        out.write("pod cluster %s: selector is now %s (%d member(s) added, %d removed)\n"
                  % (pc.id, text, len(added), len(removed)))
        return 0
    code = yield withStore(options, use)
    return code
