# -*- test-case-name: tests.test_cli_ds -*-
"""
C{p2 ds}: create, list, show, enable, disable, update and delete daemon sets
(C{daemon_sets/<id>}), and preview a selector (C{test-selector});
C{twistd p2-orchestrator}'s ds farm does the scheduling.

Reads go through the read model (L{Snapshot}); writes are compare-and-set
plans of L{p2twisted.orchestrate.dsedit}, each written with its audit event.
"""

import time

from twisted.internet import defer

from p2twisted.cli.main import withStore, writeJSON
from p2twisted.cli.rc import checkSelector, farmStatus, number, podRows, writeFarm, writePods
from p2twisted.errors import UsageError

_count = number(int, "a whole number")
_seconds = number(float, "a number of seconds")


def _percent(text):
    import argparse
    value = number(int, "a whole percentage")(text)
    if value > 100:
        raise argparse.ArgumentTypeError("expected a percentage 0-100, got %r" % (text,))
    return value


def _positive(text):
    import argparse
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError("expected a whole number >= 1, got %r" % (text,))
    return value


def _selectorArguments(parser, required):
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument("--selector", default=None, metavar="SELECTOR",
                       help="node label selector, e.g. 'tier=web,region in (a,b)'")
    where.add_argument("--everywhere", action="store_true",
                       help="every node (the empty selector), said on purpose")


def _settingArguments(parser, defaults):
    parser.add_argument("--min-health", type=_percent, default=0 if defaults else None,
                        metavar="PCT", help="percent of its pods kept healthy while a new "
                                            "manifest replaces the old (default 0)")
    parser.add_argument("--timeout", type=_seconds, default=300 if defaults else None,
                        metavar="S", help="seconds a node's new pod has to turn healthy; past "
                                          "it, the replacement halts (default 300)")
    parser.add_argument("--rate", type=_seconds, default=0 if defaults else None, metavar="S",
                        help="seconds between starting two nodes (default 0: no limit)")
    parser.add_argument("--parallel", type=_positive, default=50 if defaults else None,
                        metavar="N", help="nodes starting at once at most (default 50)")


def register(subparsers):
    ds = subparsers.add_parser(
        "ds", help="manage daemon sets",
        description="Daemon sets run a pod on every node a label selector matches; "
                    "'twistd p2-orchestrator' schedules them.")
    commands = ds.add_subparsers(dest="ds_command", metavar="COMMAND")

    create = commands.add_parser(
        "create", help="create a daemon set",
        description="Create a daemon set running the pod manifest FILE on every node SELECTOR "
                    "matches (or --everywhere).")
    create.add_argument("--manifest", required=True, metavar="FILE",
                        help="the pod manifest (YAML, may be PGP clear-signed); - reads stdin")
    _selectorArguments(create, True)
    _settingArguments(create, True)
    create.add_argument("--id", default=None, metavar="ID",
                        help="its id (default: the manifest's pod id)")
    create.add_argument("--disabled", action="store_true",
                        help="create it disabled (it changes nothing until enabled)")
    create.set_defaults(run=runCreate, writes=True)

    lst = commands.add_parser("list", help="list daemon sets",
                              description="List every daemon set with its pod counts.")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(run=runList)

    show = commands.add_parser("show", help="show a daemon set and its pods",
                               description="Show a daemon set, its pods (node, intent vs "
                                           "reality, health) and what its farm last reported.")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=runShow)

    for name, helpText in (("enable", "let it schedule again"),
                           ("disable", "freeze it: it changes nothing until enabled")):
        verb = commands.add_parser(name, help=helpText,
                                   description=helpText[0].upper() + helpText[1:] + ".")
        verb.add_argument("id", metavar="ID")
        verb.set_defaults(run=runEnable if name == "enable" else runDisable, writes=True)

    update = commands.add_parser(
        "update", help="change a daemon set's manifest, selector or settings",
        description="Change a daemon set. A new manifest replaces its pod node by node, "
                    "keeping --min-health percent healthy; a new selector adds and removes "
                    "nodes. Either shows the nodes it adds, removes and replaces and asks "
                    "before applying (--yes applies without asking).")
    update.add_argument("id", metavar="ID")
    update.add_argument("--manifest", default=None, metavar="FILE",
                        help="the new pod manifest (same pod id)")
    _selectorArguments(update, False)
    _settingArguments(update, False)
    update.add_argument("--yes", "-y", action="store_true",
                        help="apply a new selector or manifest without showing the nodes it "
                             "adds, removes and replaces and asking")
    update.set_defaults(run=runUpdate, writes=True)

    delete = commands.add_parser(
        "delete", help="delete a daemon set",
        description="Delete a daemon set. Its pods keep running, managed by nobody, unless "
                    "--cascade: then they are unscheduled.")
    delete.add_argument("id", metavar="ID")
    delete.add_argument("--cascade", action="store_true",
                        help="unschedule its pods too")
    delete.set_defaults(run=runDelete, writes=True)

    test = commands.add_parser(
        "test-selector", help="show the nodes a selector would add and remove",
        description="Show the nodes a daemon set would start on and remove from with "
                    "another selector; nothing is changed.")
    test.add_argument("id", metavar="ID")
    _selectorArguments(test, True)
    test.add_argument("--json", action="store_true", help="print JSON")
    test.set_defaults(run=runTestSelector)
    ds.set_defaults(run=lambda options: ds.print_help(options.err) or 2)


def _selector(options):
    """@return: the selector text given (C{""} for --everywhere), or C{None}."""
    if options.everywhere:
        return ""
    if options.selector is not None:
        if not options.selector.strip():
            raise UsageError("--selector is empty: say --everywhere to run on every node")
        checkSelector(options.selector)
    return options.selector


def view(snapshot, ds, statuses=None, pods=False):
    """
    @param statuses: C{{key: Entry}} of C{status/ds/}, as listed.
    @return: the JSON-able view of C{ds}: its record's settings, its pods'
        counts and its farm's last status.
    """
    from p2twisted.orchestrate.daemonset import Survey
    from p2twisted.store import keys
    found = Survey(ds, snapshot)
    info = dict(found.counts(), id=ds.id, pod_id=ds.pod_id, sha=ds.sha,
                selector=ds.node_selector, min_health=ds.min_health, timeout=ds.timeout,
                rate=ds.rate, parallel=ds.parallel, disabled=ds.disabled,
                farm=farmStatus((statuses or {}).get(keys.status("ds", ds.id))))
    if pods:
        info["pods"] = podRows(snapshot, snapshot.podsOfDaemonSet(ds.id), ds.pod_id)
    return info


@defer.inlineCallbacks
def readAll(store):
    """
    @return: L{Deferred} firing with C{(snapshot, statuses)}: the read model
        and the ds farm's C{status/ds/} entries.
    """
    from p2twisted.orchestrate.dsedit import TREES
    from p2twisted.orchestrate.snapshot import Snapshot
    from p2twisted.store import keys
    snapshot, statuses = yield defer.gatherResults(
        [Snapshot.read(store, TREES), store.list(keys.status("ds"))],
        consumeErrors=True).addErrback(lambda f: f.value.subFailure)
    return snapshot, statuses


def _change(options, build, done):
    from p2twisted.orchestrate import edit
    from p2twisted.orchestrate.dsedit import TREES

    @defer.inlineCallbacks
    def run():
        built = yield withStore(options, lambda store: edit.change(
            store, build, time.time(), TREES))
        options.out.write(done(built) + "\n")
        return 0
    return run()


def _said(plan):
    return plan.reason if plan else plan.reason + "; nothing to do"


def runCreate(options):
    from p2twisted.cli.manifest import readManifest
    from p2twisted.orchestrate import dsedit
    from p2twisted.records.daemonset import DaemonSet
    manifest = readManifest(options.manifest)
    ds = DaemonSet(options.id or manifest.id, manifest.id, manifest.raw, _selector(options),
                   min_health=options.min_health, timeout=options.timeout, rate=options.rate,
                   parallel=options.parallel, disabled=options.disabled)

    def done(built):
        snapshot = built[0]
        eligible = snapshot.eligible(ds.node_selector)
        text = ("created daemon set %s: pod %s (sha %s) on nodes matching %s (%d now)%s"
                % (ds.id, ds.pod_id, ds.sha[:12],
                   repr(ds.node_selector) if ds.node_selector else "anything", len(eligible),
                   ", disabled" if ds.disabled else ""))
        return text + _minHealthWarning(ds.min_health)
    return _change(options, lambda s: (s, dsedit.createDS(s, ds)), done)


def _minHealthWarning(minHealth):
    """@return: the warning C{create} and C{update} add for min_health 100 (P2's #642)."""
    if minHealth != 100:
        return ""
    return ("\nwarning: min_health 100 never takes a healthy pod down: a new manifest will "
            "replace only failing pods")


@defer.inlineCallbacks
def runList(options):
    from p2twisted.cli.confirm import writeUnreadable
    snapshot, statuses = yield withStore(options, readAll)
    found = snapshot.daemonSets()
    unreadable = writeUnreadable(options, snapshot, [i for i in snapshot.daemonSetIds()
                                                     if i not in found],
                                 snapshot.daemonSet, "daemon set", "p2 ds delete")
    infos = [view(snapshot, ds, statuses) for dsId, ds in sorted(found.items())]
    if options.json:
        return writeJSON(options.out, infos)
    if not infos:
        if not unreadable:
            options.out.write("no daemon sets: create one with 'p2 ds create'\n")
        return 0
    width = max(len("ID"), *(len(i["id"]) for i in infos))
    podWidth = max(len("POD"), *(len(i["pod_id"]) for i in infos))
    options.out.write("%-*s  %-*s  %7s %7s %7s %7s  %-20s %s\n" % (
        width, "ID", podWidth, "POD", "DESIRED", "CURRENT", "UPDATED", "HEALTHY", "SELECTOR",
        "STATE"))
    for i in infos:
        options.out.write("%-*s  %-*s  %7d %7d %7d %7d  %-20s %s\n" % (
            width, i["id"], podWidth, i["pod_id"], i["desired"], i["current"], i["updated"],
            i["healthy"], i["selector"] or "(every node)", _state(i)))
    return 0


def _state(info):
    text = "disabled" if info["disabled"] else "enabled"
    farm = info["farm"] or {}
    reason = farm.get("reason") or ""
    if reason.startswith(("HALTED", "HOLDING", "DISABLED")):
        text += ", " + reason.split(":")[0]
    return text


@defer.inlineCallbacks
def runShow(options):
    from p2twisted.orchestrate.dsedit import requireDS
    snapshot, statuses = yield withStore(options, readAll)
    info = view(snapshot, requireDS(snapshot, options.id), statuses, pods=True)
    if options.json:
        return writeJSON(options.out, info)
    out = options.out
    out.write("daemon set %s: pod %s, sha %s, %s\n" % (info["id"], info["pod_id"],
                                                       info["sha"][:12], _state(info)))
    out.write("  selector: %s (%d node(s))\n" % (info["selector"] or "(every node)",
                                                 info["desired"]))
    out.write("  min_health %d%%, timeout %gs, rate %gs, parallel %d\n" % (
        info["min_health"], info["timeout"], info["rate"], info["parallel"]))
    out.write("  pods: %d current, %d updated, %d healthy, %d on the old version\n"
              % (info["current"], info["updated"], info["healthy"], info["old"]))
    writeFarm(out, info["farm"])
    writePods(out, info["pods"], info["sha"])
    return 0


def runEnable(options):
    from p2twisted.orchestrate import dsedit
    return _change(options, lambda s: dsedit.setDisabled(s, options.id, False), _said)


def runDisable(options):
    from p2twisted.orchestrate import dsedit
    return _change(options, lambda s: dsedit.setDisabled(s, options.id, True), _said)


@defer.inlineCallbacks
def runUpdate(options):
    from p2twisted.cli.confirm import confirm
    from p2twisted.cli.manifest import readManifest
    from p2twisted.orchestrate import dsedit, edit
    from p2twisted.orchestrate.snapshot import Snapshot
    manifest = None if options.manifest is None else readManifest(options.manifest).raw
    fields = dict(manifest=manifest, node_selector=_selector(options),
                  min_health=options.min_health, timeout=options.timeout, rate=options.rate,
                  parallel=options.parallel)
    if all(v is None for v in fields.values()):
        raise UsageError("nothing to update: give --manifest, --selector, --everywhere or a "
                         "setting")

    @defer.inlineCallbacks
    def use(store):
        snapshot = yield Snapshot.read(store, dsedit.TREES)
        ds = dsedit.requireDS(snapshot, options.id)
        plan = dsedit.updateDS(snapshot, options.id, **fields)
        details = plan.events[0].details if plan else {}
        shown = None
        if "node_selector" in details or "manifest" in details:
            # What runs where changes: say where first, and ask.
            changed = _changed(ds, fields)
            out = options.out
            out.write("daemon set %s: %s\n" % (ds.id, _described(
                details, ("node_selector", "manifest"))))
            added, removed, replaced = dsedit.updateDiff(snapshot, ds, changed)
            if not snapshot.eligible(changed.node_selector):
                out.write("  (it matches no node: the farm would hold, removing nothing)\n")
            yes = yield confirm(options, [("+", added), ("-", removed), ("~", replaced)],
                                lambda node: node, "no node gains, loses or replaces the pod")
            if not yes:
                return 1, plan
            shown = snapshot.version(ds.key)

        def build(fresh):
            if shown is not None and fresh.version(ds.key) != shown:
                raise UsageError("daemon set %s changed since the nodes above were shown; "
                                 "run again to see the new ones" % (options.id,))
            return dsedit.updateDS(fresh, options.id, **fields)
        if not plan:
            return 0, plan
        written = yield edit.change(store, build, time.time(), dsedit.TREES)
        return 0, written
    code, plan = yield withStore(options, use)
    if code:
        return code
    if not plan:
        options.out.write(_said(plan) + "\n")
        return 0
    options.out.write("updated daemon set %s: %s%s\n" % (
        options.id, _described(plan.events[0].details),
        _minHealthWarning(fields["min_health"])))
    return 0


def _changed(ds, fields):
    """@return: C{ds} with the C{fields} given (not C{None})."""
    import attr
    return attr.evolve(ds, **{k: v for k, v in fields.items() if v is not None})


def _described(details, only=None):
    """
    @param details: C{{field: [before, after]}} of an update's audit event.
    @return: C{"field before -> after, ..."} (of the fields C{only} names),
        a sha cut short, the empty selector said.
    """
    def shown(field, value):
        if field == "node_selector":
            return repr(value) if value else "(every node)"
        return str(value)[:12]
    return ", ".join("%s %s -> %s" % (k, shown(k, a), shown(k, b))
                     for k, (a, b) in sorted(details.items()) if only is None or k in only)


@defer.inlineCallbacks
def runDelete(options):
    from p2twisted.orchestrate import dsedit, edit
    from p2twisted.orchestrate.dsedit import TREES
    when = time.time()
    disowned = []

    def use(store):
        @defer.inlineCallbacks
        def steps():
            while True:
                done, plan = yield edit.change(
                    store, lambda s: dsedit.deleteDS(s, options.id, options.cascade), when,
                    TREES)
                if done:
                    return plan
                disowned.extend(plan.events[0].details["nodes"])
        return steps()
    plan = yield withStore(options, use)
    if options.cascade:
        nodes = plan.events[0].details["nodes"]
        options.out.write("deleted daemon set %s; unscheduled its pods%s\n" % (
            options.id, " on %s" % (", ".join(nodes),) if nodes else " (it had none)"))
    else:
        options.out.write("deleted daemon set %s%s\n" % (options.id, (
            "; its pods on %s keep running, unmanaged (unschedule them with 'p2 unschedule', "
            "or delete with --cascade next time)" % (", ".join(sorted(set(disowned))),))
            if disowned else ""))
    return 0


@defer.inlineCallbacks
def runTestSelector(options):
    from p2twisted.orchestrate.dsedit import requireDS, selectorDiff
    selector = _selector(options)
    snapshot, statuses = yield withStore(options, readAll)
    ds = requireDS(snapshot, options.id)
    added, removed = selectorDiff(snapshot, ds, selector)
    if options.json:
        return writeJSON(options.out, {"id": ds.id, "selector": selector, "add": added,
                                       "remove": removed,
                                       "eligible": len(snapshot.eligible(selector))})
    options.out.write("daemon set %s with selector %s:\n  would add: %s\n  would remove: %s\n"
                      % (ds.id, repr(selector) if selector else "(every node)",
                         ", ".join(added) or "none", ", ".join(removed) or "none"))
    if not snapshot.eligible(selector):
        options.out.write("  (it matches no node: the farm would hold, removing nothing)\n")
    return 0
