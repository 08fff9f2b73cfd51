# -*- test-case-name: tests.test_cli_rc -*-
"""
C{p2 rc}: create, list, show, scale, enable, disable and delete replication
controllers (C{replication_controllers/<id>}); C{twistd p2-orchestrator}'s
RC farm does the scheduling.

Reads go through the read model (L{Snapshot}); writes are compare-and-set
plans of L{p2twisted.orchestrate.edit}, each written with its audit event.
"""

import time

from twisted.internet import defer

from p2twisted.cli.main import withStore, writeJSON
from p2twisted.errors import UsageError


def register(subparsers):
    rc = subparsers.add_parser(
        "rc", help="manage replication controllers",
        description="Replication controllers keep N copies of a pod on the nodes a label "
                    "selector picks, one per node; 'twistd p2-orchestrator' schedules them.")
    commands = rc.add_subparsers(dest="rc_command", metavar="COMMAND")

    create = commands.add_parser(
        "create", help="create a replication controller",
        description="Create a replication controller running the pod manifest FILE on "
                    "REPLICAS of the nodes SELECTOR matches.")
    create.add_argument("--manifest", required=True, metavar="FILE",
                        help="the pod manifest (YAML, may be signed: p2 sign); - reads stdin")
    create.add_argument("--selector", default="", metavar="SELECTOR",
                        help="node label selector, e.g. 'tier=web,region in (a,b)' "
                             "(default: every node)")
    create.add_argument("--replicas", required=True, type=_count, metavar="N",
                        help="how many nodes run the pod")
    create.add_argument("--pod-label", action="append", default=[], metavar="K=V",
                        help="a label for every pod it schedules (repeatable)")
    create.add_argument("--id", default=None, metavar="ID",
                        help="its id (default: POD_ID-SHA, the manifest's first 8 SHA digits)")
    create.add_argument("--disabled", action="store_true",
                        help="create it disabled (it changes nothing until enabled)")
    create.set_defaults(run=runCreate, writes=True)

    lst = commands.add_parser("list", help="list replication controllers",
                              description="List every replication controller with its desired, "
                                          "current and healthy pod counts.")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(run=runList)

    show = commands.add_parser("show", help="show a replication controller and its pods",
                               description="Show a replication controller, its pods (node, "
                                           "intent vs reality, health), its roll and what its "
                                           "farm last reported.")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=runShow)

    scale = commands.add_parser("scale", help="set how many pods it runs",
                                description="Set a replication controller's desired replicas.")
    scale.add_argument("id", metavar="ID")
    scale.add_argument("replicas", type=_count, metavar="N")
    scale.set_defaults(run=runScale, writes=True)

    for name, helpText in (("enable", "let it schedule again"),
                           ("disable", "freeze it: it changes nothing until enabled")):
        verb = commands.add_parser(name, help=helpText, description=helpText[0].upper()
                                   + helpText[1:] + ".")
        verb.add_argument("id", metavar="ID")
        verb.set_defaults(run=runEnable if name == "enable" else runDisable, writes=True)

    delete = commands.add_parser(
        "delete", help="delete a replication controller",
        description="Delete a replication controller. It must want 0 replicas and have no pods "
                    "left ('p2 rc scale ID 0' first); --force deletes it anyway and leaves its "
                    "pods running, managed by nobody.")
    delete.add_argument("id", metavar="ID")
    delete.add_argument("--force", action="store_true",
                        help="delete it even with replicas or pods (they keep running)")
    delete.set_defaults(run=runDelete, writes=True)
    rc.set_defaults(run=lambda options: rc.print_help(options.err) or 2)


def number(kind, what="a number"):
    """
    @return: an argparse C{type} reading a finite C{kind} (C{int},
        C{float}) >= 0 (C{nan} and C{inf} are no JSON).
    """
    def parse(text):
        import argparse
        import math
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not 0 <= value < math.inf:
            raise argparse.ArgumentTypeError("expected %s >= 0, got %r" % (what, text))
        return value
    return parse


_count = number(int, "a whole number")


def checkSelector(text):
    """
    @raise UsageError: naming C{--selector} when C{text} is no selector.
    """
    from p2twisted.errors import SelectorError
    from p2twisted.labels import parseSelector
    try:
        parseSelector(text)
    except SelectorError as e:
        raise UsageError("--selector: %s" % (e,))


def podLabels(args):
    """
    @param args: C{K=V} texts.
    @return: the label map.
    @raise SelectorError: for a malformed one.
    """
    from p2twisted.labels import parseChanges
    changes = parseChanges(args)
    if changes.remove:
        raise UsageError("--pod-label wants K=V, got %s-" % (sorted(changes.remove)[0],))
    return dict(changes.set)


def _pods(snapshot, rc):
    """@return: C{[{"node", "intent", "reality", "health", "agent"}]} of C{rc}'s pods."""
    return podRows(snapshot, snapshot.podsOf(rc.id), rc.podId)


def podRows(snapshot, pods, podId):
    """
    @param pods: C{[(node, podId)]} of a controller.
    @return: C{[{"node", "intent", "reality", "health", "agent"}]} of those
        of C{podId}.
    """
    rows = []
    for node, pod in pods:
        if pod != podId:
            continue
        health = snapshot.health(pod, node)
        rows.append({"node": node, "intent": snapshot.intentSha(node, pod),
                     "reality": snapshot.realitySha(node, pod),
                     "health": None if health is None else health.status,
                     "health_sha": None if health is None else health.sha,
                     "agent": "up" if snapshot.agentUp(node) else "down"})
    return rows


def farmStatus(entry):
    """
    @return: the JSON object a farm's C{status/<kind>/<id>} entry holds, or
        C{None} when absent or unreadable.
    """
    from p2twisted.records import CorruptRecord
    from p2twisted.records.base import loadObject
    if entry is None:
        return None
    try:
        return loadObject(entry.key, entry.value)
    except CorruptRecord:
        return None


def view(snapshot, rc, statuses=None, pods=False):
    """
    @param statuses: C{{key: Entry}} of C{status/rc/}, as listed.
    @return: the JSON-able view of C{rc}: its record's fields, its pods'
        counts (L{controllers.podCounts}), its roll and its farm's last status.
    """
    from p2twisted.orchestrate.controllers import podCounts
    from p2twisted.orchestrate.edit import rollOf
    from p2twisted.store import keys
    roll = rollOf(snapshot, rc.id)
    entry = (statuses or {}).get(keys.status("rc", rc.id))
    found = dict(podCounts(rc, snapshot), id=rc.id, pod_id=rc.podId, sha=rc.sha,
                 selector=rc.node_selector, pod_labels=rc.pod_labels, disabled=rc.disabled,
                 eligible=len(snapshot.eligible(rc.node_selector)),
                 roll=None if roll is None else roll.id,
                 farm=farmStatus(entry))
    if pods:
        found["pods"] = _pods(snapshot, rc)
    return found


@defer.inlineCallbacks
def readAll(store):
    """
    @return: L{Deferred} firing with C{(snapshot, statuses)}: the read model
        and the RC farm's C{status/rc/} entries.
    """
    from p2twisted.orchestrate.snapshot import Snapshot
    from p2twisted.store import keys
    snapshot, statuses = yield defer.gatherResults(
        [Snapshot.read(store), store.list(keys.status("rc"))], consumeErrors=True).addErrback(
            lambda f: f.value.subFailure)
    return snapshot, statuses


def stateText(info):
    text = "disabled" if info["disabled"] else "enabled"
    if info["roll"]:
        text += ", in roll %s" % (info["roll"],)
    return text


@defer.inlineCallbacks
def runCreate(options):
    from p2twisted.cli.manifest import readManifest
    from p2twisted.orchestrate import edit
    from p2twisted.orchestrate.edit import createRC
    from p2twisted.records.controllers import ReplicationController
    manifest = readManifest(options.manifest)
    checkSelector(options.selector)
    rc = ReplicationController(options.id or edit.defaultId(manifest.raw), manifest.raw,
                               options.replicas, options.selector,
                               podLabels(options.pod_label), disabled=options.disabled)
    from p2twisted.store import keys
    snapshot = yield withStore(options, lambda store: edit.change(
        store, lambda s: (s, createRC(s, rc)), time.time(),
        (keys.REPLICATION_CONTROLLERS, keys.LABELS, keys.INTENT, keys.MACHINES)))
    snapshot = snapshot[0]
    eligible = snapshot.eligible(rc.node_selector)
    options.out.write("created RC %s: pod %s (sha %s), %d replica(s) on nodes matching %s "
                      "(%d eligible now)%s\n" % (
                          rc.id, rc.podId, rc.sha[:12], rc.replicas_desired,
                          repr(rc.node_selector) if rc.node_selector else "anything",
                          len(eligible), ", disabled" if rc.disabled else ""))
    if len(eligible) < rc.replicas_desired:
        options.out.write("warning: only %d node(s) match: the farm will report a shortfall of "
                          "%d\n" % (len(eligible), rc.replicas_desired - len(eligible)))
    return 0


@defer.inlineCallbacks
def runList(options):
    snapshot, statuses = yield withStore(options, readAll)
    infos = [view(snapshot, rc, statuses) for rcId, rc in sorted(snapshot.rcs().items())]
    if options.json:
        return writeJSON(options.out, infos)
    if not infos:
        options.out.write("no replication controllers: create one with 'p2 rc create'\n")
        return 0
    width = max(len("ID"), *(len(i["id"]) for i in infos))
    podWidth = max(len("POD"), *(len(i["pod_id"]) for i in infos))
    options.out.write("%-*s  %-*s  %7s %7s %7s  %-20s %s\n" % (
        width, "ID", podWidth, "POD", "DESIRED", "CURRENT", "HEALTHY", "SELECTOR", "STATE"))
    for i in infos:
        options.out.write("%-*s  %-*s  %7d %7d %7d  %-20s %s\n" % (
            width, i["id"], podWidth, i["pod_id"], i["desired"], i["current"], i["healthy"],
            i["selector"] or "(every node)", stateText(i)))
    return 0


def writeFarm(out, farm, indent="  "):
    """Write what the farm last reported (C{status/<kind>/<id>}), if anything."""
    if not farm:
        out.write("%sfarm: no status yet (is 'twistd p2-orchestrator' running?)\n" % (indent,))
        return
    out.write("%sfarm: %s (by %s since %s)\n" % (
        indent, farm.get("reason") or "-", farm.get("holder", "?"), farm.get("since", "?")))
    if farm.get("shortfall"):
        out.write("%s  shortfall: %d replica(s) found no eligible node\n"
                  % (indent, farm["shortfall"]))
    if farm.get("error"):
        out.write("%s  last error: %s\n" % (indent, farm["error"]))


@defer.inlineCallbacks
def runShow(options):
    from p2twisted.orchestrate.edit import requireRC
    snapshot, statuses = yield withStore(options, readAll)
    info = view(snapshot, requireRC(snapshot, options.id), statuses, pods=True)
    if options.json:
        return writeJSON(options.out, info)
    out = options.out
    out.write("RC %s: pod %s, sha %s, %s\n" % (info["id"], info["pod_id"], info["sha"][:12],
                                               stateText(info)))
    out.write("  selector: %s (%d eligible node(s))\n" % (
        info["selector"] or "(every node)", info["eligible"]))
    if info["pod_labels"]:
        out.write("  pod labels: %s\n" % (
            ", ".join("%s=%s" % kv for kv in sorted(info["pod_labels"].items())),))
    out.write("  replicas: %d desired, %d current, %d healthy\n"
              % (info["desired"], info["current"], info["healthy"]))
    writeFarm(out, info["farm"])
    writePods(out, info["pods"], info["sha"])
    return 0


def writePods(out, pods, sha):
    """Write the rows of L{podRows}, one a line; C{sha} is the wanted version."""
    for pod in pods:
        short = lambda sha: (sha or "-")[:12]  # noqa: E731
        health = pod["health"] or "-"
        if pod["health"] and pod["health_sha"] not in (None, sha):
            health += " (other version)"
        out.write("  %-16s intent %-12s reality %-12s health %-10s agent %s\n" % (
            pod["node"], short(pod["intent"]), short(pod["reality"]), health, pod["agent"]))


def _change(options, build, trees, done):
    from p2twisted.orchestrate import edit

    @defer.inlineCallbacks
    def run():
        plan = yield withStore(options, lambda store: edit.change(
            store, build, time.time(), trees))
        options.out.write(done(plan) + "\n")
        return 0
    return run()


def _trees(*more):
    from p2twisted.store import keys
    return (keys.REPLICATION_CONTROLLERS, keys.ROLLS) + more


def _said(plan):
    return plan.reason if plan else plan.reason + "; nothing to do"


def runScale(options):
    from p2twisted.orchestrate import edit

    def done(plan):
        if not plan:
            return _said(plan)
        details = plan.events[0].details
        return "RC %s: %d -> %d replica(s)" % (options.id, details["from"], details["to"])
    return _change(options, lambda s: edit.scaleRC(s, options.id, options.replicas), _trees(),
                   done)


def runEnable(options):
    from p2twisted.orchestrate import edit
    return _change(options, lambda s: edit.setDisabled(s, options.id, False), _trees(), _said)


def runDisable(options):
    from p2twisted.orchestrate import edit
    return _change(options, lambda s: edit.setDisabled(s, options.id, True), _trees(), _said)


def runDelete(options):
    from p2twisted.orchestrate import edit
    from p2twisted.store import keys
    left = []

    def build(snapshot):
        plan = edit.deleteRC(snapshot, options.id, options.force)
        left[:] = edit.podsOf(snapshot, snapshot.rc(options.id))
        return plan

    def done(plan):
        return "deleted RC %s%s" % (options.id, "; its pods on %s keep running, unmanaged"
                                    % (", ".join(left),) if left else "")
    return _change(options, build, _trees(keys.LABELS), done)
