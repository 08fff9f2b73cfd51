# -*- test-case-name: tests.test_cli_services_fleet -*-
"""
pop services across a fleet: C{p2 deploy NAME --replicas N} puts a service
under a replication controller (the orchestrator picks the nodes), C{p2
config NAME KEY=VALUE} then rolls it to the re-rendered manifest instead of
restarting every instance at once, C{p2 scale NAME N} changes its count and
C{p2 status NAME} shows its RC and any roll.

A service's RCs are those running its pod (the pod id is the service's
name); it is under exactly one, or two while a roll moves it.
"""

import time

from twisted.internet import defer

from p2twisted import services
from p2twisted.cli.main import withStore
from p2twisted.cli.rc import checkSelector, number
from p2twisted.errors import UsageError


def register(subparsers):
    scale = subparsers.add_parser(
        "scale", help="set how many nodes run a service",
        description="Set the replicas of a service deployed with 'p2 deploy NAME --replicas N': "
                    "its replication controller's desired count; the orchestrator adds or "
                    "removes pods.")
    scale.add_argument("name", metavar="NAME")
    scale.add_argument("replicas", type=number(int, "a whole number"), metavar="N")
    scale.set_defaults(run=runScale, writes=True)


def _trees():
    from p2twisted.store import keys
    return (keys.REPLICATION_CONTROLLERS, keys.ROLLS, keys.LABELS, keys.INTENT, keys.MACHINES)


def serviceRCs(snapshot, name):
    """@return: the RCs running pod C{name}, by id."""
    return [rc for rcId, rc in sorted(snapshot.rcs().items()) if rc.podId == name]


def serviceRoll(snapshot, rcs):
    """@return: the roll moving any of C{rcs}, or C{None}."""
    from p2twisted.orchestrate.edit import rollOf
    for rc in rcs:
        roll = rollOf(snapshot, rc.id)
        if roll is not None:
            return roll
    return None


def currentRC(snapshot, name, doing):
    """
    @param doing: what the caller is about to do, for the errors.
    @return: the one RC service C{name} runs under, or C{None}.
    @raise UsageError: while a roll moves it, or when it runs under several.
    """
    rcs = serviceRCs(snapshot, name)
    roll = serviceRoll(snapshot, rcs)
    if roll is not None:
        raise UsageError("%s is being rolled from %s to %s; wait until that ends ('p2 roll "
                         "status %s --follow') or abort it ('p2 roll abort %s') before you %s"
                         % (name, roll.old_rc, roll.new_rc, roll.id, roll.id, doing))
    if len(rcs) > 1:
        hint = "roll it to the one to keep ('p2 roll start --from ID --to ID --min-healthy N')"
        stopped = [rc for rc in rcs if rc.disabled]
        if len(rcs) == 2 and len(stopped) == 1:
            new = [rc for rc in rcs if not rc.disabled][0]
            hint = ("resume the roll ('p2 roll start --from %s --to %s --min-healthy N') or roll "
                    "back ('--from %s --to %s')" % (stopped[0].id, new.id, new.id, stopped[0].id))
        raise UsageError("%s runs under %d replication controllers (%s), as an aborted roll "
                         "leaves it; %s before you %s"
                         % (name, len(rcs), ", ".join(rc.id for rc in rcs), hint, doing))
    return rcs[0] if rcs else None


def minHealthy(service, desired):
    """
    @return: the minimum of healthy pods a roll of C{service} keeps: what
        C{p2 deploy --min-healthy} stored (at most C{desired}), else one
        less than C{desired}.
    """
    stored = (service.fleet or {}).get("min_healthy")
    if stored is None:
        return max(desired - 1, 0)
    return min(stored, desired)


def deployPlan(snapshot, service, manifest, replicas, selector, floor):
    """
    Plan putting C{service} under an RC of C{manifest} with C{replicas} on
    the nodes C{selector} picks (C{None}: the RC's, or every node): a new
    RC; or the RC's count and selector changed; or, for a new manifest, a
    roll to a new RC keeping C{floor} pods healthy.

    @return: a L{Plan}, or C{(roll, plan)}.
    @raise UsageError: while it is rolled, or deployed by node.
    """
    import attr

    from p2twisted.orchestrate import edit
    from p2twisted.orchestrate.edit import createRC
    from p2twisted.records.controllers import RC_ID_LABEL, ReplicationController
    name = service.name
    rc = currentRC(snapshot, name, "deploy it again")
    if rc is None:
        byNode = [n for n in snapshot.deployedTo(name)
                  if snapshot.podLabels(n, name).get(RC_ID_LABEL) is None]
        # The RC adopts, with no restart, pods of its manifest on eligible
        # nodes (up to its count); any other would run on beside it.
        eligible = set(snapshot.eligible(selector or ""))
        if byNode and (len(byNode) > replicas or any(
                n not in eligible or snapshot.intentSha(n, name) != manifest.sha()
                for n in byNode)):
            raise UsageError("%s is deployed by node (to %s), which the replication controller "
                             "could not adopt as it is (another version, a node the selector "
                             "does not match, or more than %d); undeploy it first ('p2 "
                             "undeploy %s')" % (name, ", ".join(byNode), replicas, name))
        return createRC(snapshot, ReplicationController(
            edit.defaultId(manifest.raw), manifest.raw, replicas, selector or ""))
    if manifest.sha() != rc.sha:
        return edit.startRoll(snapshot, rc.id, min(floor, replicas), manifest=manifest.raw,
                              selector=selector, desired=replicas)
    if selector is None or selector == rc.node_selector:
        return edit.scaleRC(snapshot, rc.id, replicas)
    changed = attr.evolve(rc, node_selector=selector, replicas_desired=replicas)
    return edit.recordPlan(snapshot, changed, "update", {
        "node_selector": {"from": rc.node_selector, "to": selector},
        "replicas_desired": {"from": rc.replicas_desired, "to": replicas}})


@defer.inlineCallbacks
def saveMinHealthy(store, name, value):
    """Store C{value} as service C{name}'s roll minimum (compare-and-set)."""
    import attr

    from p2twisted.errors import VersionConflict
    from p2twisted.store import keys
    for attempt in range(services.RETRIES):
        service = yield services.getService(store, name)
        fleet = dict(service.fleet or {}, min_healthy=value)
        if fleet == service.fleet:
            return
        try:
            yield store.cas(keys.service(name), attr.evolve(service, fleet=fleet).toBytes(),
                            service.version)
            return
        except VersionConflict:
            continue


@defer.inlineCallbacks
def runDeploy(options):
    """
    C{p2 deploy NAME --replicas N [--selector S] [--min-healthy M]}.
    """
    from p2twisted.cli.services_common import artifactLocation, manifestSigner
    from p2twisted.orchestrate import edit
    if options.node:
        raise UsageError("--replicas lets the orchestrator choose the nodes: give --node or "
                         "--replicas, not both")
    if options.replicas < 0 or (options.min_healthy or 0) < 0:
        raise UsageError("--replicas and --min-healthy must be whole numbers >= 0")
    if options.min_healthy is not None and options.min_healthy > options.replicas:
        raise UsageError("--min-healthy %d is over --replicas %d"
                         % (options.min_healthy, options.replicas))
    if options.selector is not None:
        checkSelector(options.selector)
    directory, baseURL = artifactLocation(options)

    @defer.inlineCallbacks
    def deploy(store):
        service = yield services.getService(store, options.name)
        manifest = services.render(service, directory, baseURL, manifestSigner(options))
        floor = (options.min_healthy if options.min_healthy is not None
                 else minHealthy(service, options.replicas))
        built = yield edit.change(
            store, lambda s: deployPlan(s, service, manifest, options.replicas,
                                        options.selector, floor), time.time(), _trees())
        if options.min_healthy is not None:
            yield saveMinHealthy(store, options.name, options.min_healthy)
        _report(options, manifest, built)
        if options.wait:
            yield waitFleet(store, options.name, options.timeout, options.out, options.reactor)
    yield withStore(options, deploy)
    return 0


@defer.inlineCallbacks
def waitFleet(store, name, timeout, out, reactor):
    """
    Wait until service C{name} runs under one RC, rolled, with every desired
    pod current and healthy; print its line each time it changes.

    @raise P2Error: at C{timeout}.
    """
    from twisted.internet import task

    from p2twisted.errors import P2Error
    from p2twisted.orchestrate.snapshot import Snapshot
    deadline, last = reactor.seconds() + timeout, None
    while True:
        snapshot = yield Snapshot.read(store)
        info = fleetInfo(snapshot, name)
        lines = "".join(fleetLines(info)) if info else "  no replication controller\n"
        if lines != last:
            out.write(lines)
            out.flush()
            last = lines
        if info and not info["roll"] and len(info["replication_controllers"]) == 1:
            rc = info["replication_controllers"][0]
            if rc["desired"] == rc["current"] == rc["healthy"]:
                out.write("%s: %d of %d replica(s) healthy\n" % (name, rc["healthy"],
                                                                  rc["desired"]))
                return
        if reactor.seconds() > deadline:
            raise P2Error("%s is still converging after %gs (is 'twistd p2-orchestrator' "
                          "running? see 'p2 status %s')" % (name, timeout, name))
        yield task.deferLater(reactor, WAIT_INTERVAL, lambda: None)


#: Seconds between two looks while C{deploy --replicas --wait} waits.
WAIT_INTERVAL = 0.5


def _report(options, manifest, built):
    """Say what C{p2 deploy --replicas} did."""
    out, name = options.out, options.name
    if isinstance(built, tuple):
        roll = built[0]
        out.write("rolling %s (sha %s) from %s to %s: %d replica(s), min healthy %d; follow it "
                  "with 'p2 roll status %s --follow'\n" % (
                      name, manifest.sha()[:12], roll.old_rc, roll.new_rc, roll.desired,
                      roll.min_healthy, roll.id))
    elif built and built.events[0].action == "scale":
        details = built.events[0].details
        out.write("%s: %d -> %d replica(s)\n" % (name, details["from"], details["to"]))
    elif built and built.events[0].action == "update":
        out.write("%s: %s\n" % (name, built.reason))
    elif built:
        rcId = built.events[0].id
        out.write("deployed %s (sha %s) under replication controller %s: %d replica(s) on %s; "
                  "the orchestrator places them ('p2 status %s')\n" % (
                      name, manifest.sha()[:12], rcId, options.replicas,
                      "nodes matching %r" % (options.selector,) if options.selector
                      else "the nodes it chooses", name))
    else:
        out.write("%s: %s\n" % (name, built.reason))
    out.flush()


@defer.inlineCallbacks
def refuseUnderRC(store, name, doing):
    """
    @raise UsageError: when service C{name} runs under a replication
        controller (what C{doing} would do, the RC would undo).
    """
    from p2twisted.orchestrate.snapshot import Snapshot
    from p2twisted.store import keys
    snapshot = yield Snapshot.read(store, (keys.REPLICATION_CONTROLLERS,))
    rcs = serviceRCs(snapshot, name)
    if rcs:
        raise UsageError("%s runs under replication controller %s: %s" % (
            name, ", ".join(rc.id for rc in rcs), doing))


@defer.inlineCallbacks
def configuredRC(store, name):
    """
    Before C{p2 config} changes the settings of C{name}.

    @return: L{Deferred} firing with the RC it runs under, or C{None}.
    @raise UsageError: while a roll moves it, or under several RCs (so the
        settings are not changed when no roll could follow).
    """
    from p2twisted.orchestrate.snapshot import Snapshot
    from p2twisted.store import keys
    snapshot = yield Snapshot.read(store, (keys.REPLICATION_CONTROLLERS, keys.ROLLS))
    return currentRC(snapshot, name, "change its settings")


@defer.inlineCallbacks
def rollSettings(store, options, name):
    """
    After C{p2 config} changed the settings of C{name}, which runs under an
    RC: roll it to the re-rendered manifest.

    @return: L{Deferred} firing with the L{Roll}.
    """
    from p2twisted.cli.services_common import artifactLocation, manifestSigner
    from p2twisted.orchestrate import edit
    directory, baseURL = artifactLocation(options)
    service = yield services.getService(store, name)
    manifest = services.render(service, directory, baseURL, manifestSigner(options))

    def build(snapshot):
        rc = currentRC(snapshot, name, "change its settings")
        return edit.startRoll(snapshot, rc.id, minHealthy(service, rc.replicas_desired),
                              manifest=manifest.raw)
    try:
        roll, plan = yield edit.change(store, build, time.time(), _trees())
    except UsageError as e:
        raise UsageError("settings saved, but %s; then run 'p2 deploy %s --replicas N' to "
                         "roll to them" % (e, name))
    return roll


def fleetInfo(snapshot, name, statuses=None):
    """
    @return: C{{"replication_controllers": [rc view...], "roll": progress}}
        of service C{name}, or C{None} when it runs under no RC.
    """
    from p2twisted.cli import rc as rccli
    from p2twisted.cli.roll import progress
    rcs = serviceRCs(snapshot, name)
    if not rcs:
        return None
    roll = serviceRoll(snapshot, rcs)
    return {"replication_controllers": [rccli.view(snapshot, rc, statuses) for rc in rcs],
            "roll": None if roll is None else progress(roll, snapshot)}


def fleetTrees():
    """@return: what C{p2 status} reads beside the pods: one C{list()} each."""
    from p2twisted.store import keys
    return (keys.REPLICATION_CONTROLLERS, keys.ROLLS, keys.LABELS, keys.status("rc"))


@defer.inlineCallbacks
def readFleet(store, snapshot):
    """
    @param snapshot: a snapshot of the pods (L{services.readPods}).
    @return: L{Deferred} firing with C{(snapshot, statuses)}: C{snapshot}
        plus the RCs, rolls and labels, and the RC farm's C{status/rc/}
        entries.
    """
    from p2twisted.orchestrate.snapshot import Snapshot
    from p2twisted.store import keys
    more = yield Snapshot.read(store, fleetTrees())
    entries = dict(snapshot.entries)
    entries.update(more.entries)
    statuses = {k: e for k, e in more.entries.items() if keys.parse(k)[:2] == (keys.STATUS, "rc")}
    return Snapshot.fromEntries(entries), statuses


def fleetLines(fleet):
    """@return: the lines C{p2 status} shows of a service's RCs and roll."""
    from p2twisted.cli.roll import progressLine
    lines = []
    for info in fleet["replication_controllers"]:
        lines.append("  replication controller %s: %d desired, %d current, %d healthy; nodes %s"
                     "%s\n" % (info["id"], info["desired"], info["current"], info["healthy"],
                               repr(info["selector"]) if info["selector"] else "(every node)",
                               ", disabled" if info["disabled"] else ""))
        farm = info.get("farm") or {}
        if farm.get("shortfall"):
            lines.append("    %d replica(s) found no eligible node\n" % (farm["shortfall"],))
        if farm.get("error"):
            lines.append("    orchestrator: %s\n" % (farm["error"],))
    if fleet["roll"]:
        lines.append("  roll %s %s\n" % (fleet["roll"]["id"], progressLine(fleet["roll"])))
    return lines


def runScale(options):
    from p2twisted.orchestrate import edit

    def build(snapshot):
        rc = currentRC(snapshot, options.name, "scale it")
        if rc is None:
            raise UsageError("%s runs under no replication controller; deploy it with 'p2 "
                             "deploy %s --replicas N'" % (options.name, options.name))
        return edit.scaleRC(snapshot, rc.id, options.replicas)

    @defer.inlineCallbacks
    def scale(store):
        yield services.getService(store, options.name)
        plan = yield edit.change(store, build, time.time(), _trees())
        return plan

    def said(plan):
        if plan:
            details = plan.events[0].details
            options.out.write("%s: %d -> %d replica(s)\n" % (
                options.name, details["from"], details["to"]))
        else:
            options.out.write("%s: %s\n" % (options.name, plan.reason))
        return 0
    return withStore(options, scale).addCallback(said)
