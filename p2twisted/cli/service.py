# -*- test-case-name: tests.test_cli_service -*-
"""
The pop-style service verbs: C{p2 list}, C{p2 describe}, C{p2 add},
C{p2 config}, C{p2 deploy}, C{p2 undeploy} and C{p2 status}.

A service is a template plus settings (L{p2twisted.services}); deploying it
renders a pod manifest and writes it into the intent of the chosen nodes.
C{p2 config NAME KEY=VALUE} re-deploys a changed service to every node it
is deployed to, so its pods restart with the new settings.
"""

import io
import json

from twisted.internet import defer

from p2twisted import services
from p2twisted.cli.main import withStore, writeJSON
from p2twisted.cli.schedule import nodeName
from p2twisted.cli.services_inspect import agentRemovals, heldNotes
from p2twisted.cli.services_common import (
    artifactLocation, checkPortHere, extrasParser, hostCheck, parseExtras, portProblem,
    logTail, manifestSigner, readSettingsFile, stateDir, thisHost, writeLogTail)
from p2twisted.cli.services_wait import waitDeployed
from p2twisted.errors import P2Error, UsageError
from p2twisted.store import keys


def register(subparsers):
    lst = subparsers.add_parser(
        "list", help="list the service templates",
        description="List the service templates (built-in and from installed plugins).")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(run=runList, offline=True)

    describe = subparsers.add_parser(
        "describe", help="show a template's options and tasks",
        description="Show a template's options (type, default, help) and tasks.")
    describe.add_argument("template", metavar="TEMPLATE")
    describe.add_argument("--json", action="store_true", help="print JSON")
    describe.set_defaults(run=runDescribe, offline=True)

    add = extrasParser(
        subparsers, "add", help="define a service from a template",
        description="Define the service NAME (stored at services/NAME) from a template: "
                    "template options are given as --OPTION VALUE (see 'p2 describe "
                    "TEMPLATE') or in a YAML file. Then 'p2 deploy NAME' runs it.")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--template", "-t", required=True, help="the template (see 'p2 list')")
    add.add_argument("--config", dest="settings_file", metavar="FILE",
                     help="a YAML file of option: value settings (flags override it)")
    add.add_argument("--force", action="store_true", help="replace an existing service")
    add.add_argument("--no-host-check", action="store_true",
                     help="do not check that its directories exist on this host")
    add.set_defaults(run=runAdd, writes=True)

    config = subparsers.add_parser(
        "config", help="show or change a service's settings",
        description="Without KEY=VALUE, show the service's settings. With them, change the "
                    "settings (KEY= resets one to its default) and re-deploy the service to "
                    "every node it is deployed to, so its pods restart with them; unchanged "
                    "settings restart nothing.")
    config.add_argument("name", metavar="NAME")
    config.add_argument("changes", nargs="*", metavar="KEY=VALUE")
    config.add_argument("--no-host-check", action="store_true",
                        help="do not check that its directories exist and its port is free "
                             "on this host")
    config.add_argument("--json", action="store_true", help="print JSON")
    config.set_defaults(run=runConfig, writes=True)

    deploy = subparsers.add_parser(
        "deploy", help="run a service on nodes",
        description="Render the service's pod manifest and artifact and write the manifest "
                    "into the intent of the nodes (this host by default). Deploying an "
                    "unchanged service restarts nothing.")
    deploy.add_argument("name", metavar="NAME")
    deploy.add_argument("--node", action="append", default=[], metavar="NODE",
                        help="a node to run it on (repeatable; default: this host's name)")
    deploy.add_argument("--wait", action="store_true",
                        help="show progress until every node runs it and, if it declares a "
                             "status check, that node's agent reports it passing")
    deploy.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="how long --wait waits (default: 120)")
    deploy.add_argument("--no-host-check", action="store_true",
                        help="do not check that its port is free on this host")
    deploy.add_argument("--replicas", type=int, default=None, metavar="N",
                        help="run it on N nodes the orchestrator chooses, under a replication "
                             "controller ('twistd p2-orchestrator'), instead of on --node")
    deploy.add_argument("--selector", default=None, metavar="SELECTOR",
                        help="with --replicas: the nodes to choose from, by label (default: "
                             "every node)")
    deploy.add_argument("--min-healthy", type=int, default=None, metavar="M",
                        help="with --replicas: healthy pods a change of settings never goes "
                             "below while it rolls (default: N-1)")
    deploy.set_defaults(run=runDeploy, writes=True)

    undeploy = subparsers.add_parser(
        "undeploy", help="stop running a service on nodes",
        description="Remove the service's pod from the intent of the nodes (default: every "
                    "node it is deployed to); their agents stop and remove it.")
    undeploy.add_argument("name", metavar="NAME")
    undeploy.add_argument("--node", action="append", default=None, metavar="NODE",
                          help="a node to remove it from (repeatable; default: all)")
    undeploy.add_argument("--wait", action="store_true",
                          help="wait until the nodes' agents have removed it (after their "
                               "removal grace, 10 s by default)")
    undeploy.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                          help="how long --wait waits (default: 120)")
    undeploy.set_defaults(run=runUndeploy, writes=True)

    remove = subparsers.add_parser(
        "remove", help="delete a service's definition",
        description="Delete the definition of the service NAME (services/NAME). Refuses while "
                    "it is deployed, unless --undeploy is given, which first removes its pod "
                    "from every node.")
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--undeploy", action="store_true",
                        help="undeploy it from every node first")
    remove.set_defaults(run=runRemove, writes=True)

    status = subparsers.add_parser(
        "status", help="show services: nodes, intent vs reality, health, errors",
        description="Show each service (or NAME): its template, the nodes it is deployed to, "
                    "and per node the SHA in intent and in reality, the agent's state of the "
                    "pod, its health (passing or critical as the node's agent checks it; - "
                    "without a check or a running agent) and its last error.")
    status.add_argument("name", nargs="?", metavar="NAME")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=runStatus)


def runList(options):
    from p2twisted.templates import allTemplates
    templates = allTemplates()
    if options.json:
        return writeJSON(options.out, {name: t.description for name, t in templates.items()})
    width = max(len(name) for name in templates)
    for name in sorted(templates):
        options.out.write("%-*s  %s\n" % (width, name, templates[name].description))
    return 0


def runDescribe(options):
    from p2twisted.templates import getTemplate
    template = getTemplate(options.template)
    out = options.out
    allOptions = getattr(template, "allOptions", lambda: template.options)()
    if options.json:
        return writeJSON(options.out, {
            "template": template.name, "description": template.description,
            "options": [{"name": o.name, "flag": o.flag, "type": o.type, "default": o.default,
                         "required": o.required, "help": o.help} for o in allOptions],
            "tasks": dict(template.tasks)})
    out.write("%s: %s\n\noptions:\n" % (template.name, template.description))
    width = max([len(option.flag + " VALUE") for option in allOptions] + [18])
    for option in allOptions:
        default = " (required)" if option.required else " (default %s)" % (
            "none" if option.default in (None, []) else json.dumps(option.default),)
        if option.default is None and "(default: " in option.help:
            default = ""  # the help says what an unset option means
        out.write("  %-*s %-5s %s%s\n" % (width, option.flag + " VALUE", option.type,
                                            option.help, default))
    out.write("\ntasks (p2 run NAME TASK ...):\n")
    if not template.tasks:
        out.write("  none\n")
    for name in sorted(template.tasks):
        out.write("  %-18s %s\n" % (name, template.tasks[name]))
    return 0


def formatSettings(settings):
    return "".join("  %s = %s\n" % (k, json.dumps(v)) for k, v in sorted(settings.items()))


@defer.inlineCallbacks
def runAdd(options):
    from p2twisted.templates import getTemplate
    template = getTemplate(options.template)
    given = readSettingsFile(options.settings_file) if options.settings_file else {}
    given.update(parseExtras(options.extras))
    # Check before touching the store.
    hostCheck(template, template.settings(given), options.no_host_check)
    store = yield options.openStore()
    try:
        service = yield services.addService(store, options.name, template.name, given,
                                            replace=options.force)
    finally:
        yield store.close()
    options.out.write("added service %s (template %s):\n%s" % (
        service.name, service.template, formatSettings(service.settings)))
    options.out.write("run it with 'p2 deploy %s'\n" % (service.name,))
    return 0


def checkChangedKeys(template, keys):
    """
    @raise UsageError: naming the first of C{keys} that is no option of
        C{template}, with the closest one as C{KEY=}.
    """
    from p2twisted.cli.main import didYouMean
    names = [o.name for o in getattr(template, "allOptions", lambda: template.options)()]
    for key in sorted(keys):
        if key.replace("-", "_") not in names:
            raise UsageError("template %s has no setting %s%s (see 'p2 describe %s')" % (
                template.name, key, didYouMean(key.replace("-", "_"), names, "%s="),
                template.name))


@defer.inlineCallbacks
def checkConfigHere(store, options, service, template, updates, reset):
    """
    Before changing C{service}'s settings: when it runs on this host (or
    nowhere yet), its directories must exist here, and a changed port must
    be free here.
    """
    if options.no_host_check:
        return
    given = dict(service.settings)
    for key in reset:
        given.pop(key.replace("-", "_"), None)
    given.update(updates)
    settings = template.settings(given)
    nodes = yield services.deployedNodes(store, service.name)
    if nodes and thisHost() not in nodes:
        return
    hostCheck(template, settings)
    portOption = getattr(template, "statusPortOption", None)
    port = settings.get(portOption) if portOption else None
    if nodes and port and port != service.settings.get(portOption):
        problem = portProblem(port, service.name)
        if problem:
            raise UsageError(problem)


def parseChanges(changes):
    """
    @return: C{(set, reset)}: C{{key: value}} and the keys given as C{KEY=}.
    """
    updates, reset = {}, []
    for change in changes:
        key, eq, value = change.partition("=")
        key = key.strip().lstrip("-")
        if not eq or not key:
            raise UsageError("expected KEY=VALUE, got %r" % (change,))
        if value == "":
            reset.append(key)
        else:
            updates[key.replace("-", "_")] = value
    return updates, reset


@defer.inlineCallbacks
def runConfig(options):
    from p2twisted.cli import services_fleet
    updates, reset = parseChanges(options.changes)
    store = yield options.openStore()
    try:
        if updates or reset:
            service = yield services.getService(store, options.name)
            template = services.getTemplate(service.template)
            checkChangedKeys(template, list(updates) + reset)
            yield checkConfigHere(store, options, service, template, updates, reset)
            fleet = yield services_fleet.configuredRC(store, options.name)
        if not (updates or reset):
            service = yield services.getService(store, options.name)
            nodes = yield services.deployedNodes(store, options.name)
            if options.json:
                return writeJSON(options.out, {"service": service.name, "template": service.template,
                                       "settings": service.settings, "nodes": nodes})
            options.out.write("%s (template %s), deployed to: %s\n%s" % (
                service.name, service.template, ", ".join(nodes) or "no node",
                formatSettings(service.settings)))
            return 0
        old, new = yield services.updateSettings(store, options.name, updates, reset)
        report = {"service": new.name, "template": new.template, "settings": new.settings,
                  "changed": {}, "redeployed": [], "sha": None}
        # Text goes to standard output as it happens; JSON all at the end.
        out = io.StringIO() if options.json else options.out
        if new.settings == old.settings:
            out.write("%s: settings unchanged; nothing to do\n" % (new.name,))
        for key in sorted(set(old.settings) | set(new.settings)):
            if old.settings.get(key) != new.settings.get(key):
                report["changed"][key] = {"old": old.settings.get(key),
                                          "new": new.settings.get(key)}
                out.write("%s: %s = %s (was %s)\n" % (
                    new.name, key, json.dumps(new.settings.get(key)),
                    json.dumps(old.settings.get(key))))
        nodes = yield services.deployedNodes(store, options.name)
        if new.settings == old.settings:
            pass
        elif fleet is not None:
            roll = yield services_fleet.rollSettings(store, options, options.name)
            report.update(roll=roll.id)
            out.write("rolling %s from %s to %s (%d replica(s), min healthy %d); follow it "
                      "with 'p2 roll status %s --follow'\n" % (
                          new.name, roll.old_rc, roll.new_rc, roll.desired, roll.min_healthy,
                          roll.id))
        elif nodes:
            directory, baseURL = artifactLocation(options)
            manifest = yield services.deploy(store, options.name, nodes, directory, baseURL,
                                             checkPortHere(nodes, options.no_host_check),
                                             manifestSigner(options))
            report.update(redeployed=nodes, sha=manifest.sha())
            out.write("re-deployed %s (sha %s) to %s\n"
                      % (new.name, manifest.sha()[:12], ", ".join(nodes)))
        else:
            out.write("%s is not deployed; run it with 'p2 deploy %s'\n"
                      % (new.name, new.name))
        if options.json:
            writeJSON(options.out, report)
    finally:
        yield store.close()
    return 0


@defer.inlineCallbacks
def runDeploy(options):
    from p2twisted.cli import services_fleet
    if options.replicas is not None:
        code = yield services_fleet.runDeploy(options)
        return code
    if options.selector is not None or options.min_healthy is not None:
        raise UsageError("--selector and --min-healthy go with --replicas N")
    nodes = [nodeName(n) for n in options.node] or [nodeName(None)]
    directory, baseURL = artifactLocation(options)

    @defer.inlineCallbacks
    def deploy(store):
        yield services_fleet.refuseUnderRC(store, options.name, "change its count with 'p2 "
                                           "scale %s N' or 'p2 deploy %s --replicas N'"
                                           % (options.name, options.name))
        manifest = yield services.deploy(store, options.name, nodes, directory, baseURL,
                                         checkPortHere(nodes, options.no_host_check),
                                         manifestSigner(options))
        options.out.write("deployed %s (sha %s) to %s\n"
                          % (options.name, manifest.sha()[:12], ", ".join(nodes)))
        options.out.flush()
        if options.wait:
            yield waitDeployed(store, manifest, nodes, options.timeout, options.out,
                               options.reactor, lambda: logTail(stateDir(options), manifest.id))
    yield withStore(options, deploy)
    return 0


@defer.inlineCallbacks
def runUndeploy(options):
    from p2twisted.cli import services_fleet
    nodes = [nodeName(n) for n in options.node] if options.node else None
    store = yield options.openStore()
    try:
        yield services.getService(store, options.name)
        yield services_fleet.refuseUnderRC(store, options.name, "scale it to 0 ('p2 scale %s "
                                           "0'), and once the orchestrator removed its pods "
                                           "delete the RC ('p2 rc delete ID')" % (options.name,))
        removed = yield services.undeploy(store, options.name, nodes)
        if not removed:
            where = " from " + ", ".join(nodes) if nodes else ""
            options.out.write("%s was not deployed%s; nothing to do\n" % (options.name, where))
        else:
            options.out.write("undeployed %s from %s\n" % (options.name, ", ".join(removed)))
        if options.wait and removed:
            yield waitRemoved(options, store, options.name, removed)
    finally:
        yield store.close()
    return 0


#: Seconds between two looks while C{undeploy --wait} waits.
REMOVED_INTERVAL = 0.2


@defer.inlineCallbacks
def waitRemoved(options, store, podId, nodes):
    """
    Wait until C{podId} is gone from the reality and status records of each
    of C{nodes} (its agent removed it: its status record goes last).

    @raise P2Error: when an agent holds its removals (naming the
        confirmation), or at C{options.timeout}.
    """
    from twisted.internet import task

    from p2twisted.orchestrate.snapshot import Snapshot
    reactor = options.reactor
    deadline = reactor.seconds() + options.timeout
    left = list(nodes)
    graceShown = set()
    while True:
        still = []
        snapshot = yield Snapshot.read(store, (keys.REALITY, keys.status("pods"),
                                               keys.status("agents")))
        for node in left:
            if not (snapshot.has(keys.reality(node, podId))
                    or snapshot.has(keys.status("pods", node, podId))):
                options.out.write("  %s: removed\n" % (node,))
                continue
            still.append(node)
            removals = agentRemovals(snapshot).get(node) or {}
            until = (removals.get("grace_until") or {}).get(podId)
            if isinstance(until, (int, float)) and node not in graceShown:
                graceShown.add(node)
                options.out.write("  %s: removal grace, removed in about %ds\n" % (
                    node, max(0, round(until - reactor.seconds()))))
                options.out.flush()
            if removals.get("state") == "held":
                raise P2Error("%s's agent holds its removals (%s); run '%s' to let it remove %s"
                              % (node, removals.get("hold"), removals.get("confirm") or
                                 "p2 node confirm " + node, podId))
        left = still
        if not left:
            return
        if reactor.seconds() > deadline:
            raise P2Error("%s still runs on %s after %gs (its agent removes it once the removal "
                          "grace is over; is it up? see 'p2 status')" % (
                              podId, ", ".join(left), options.timeout))
        yield task.deferLater(reactor, REMOVED_INTERVAL, lambda: None)


@defer.inlineCallbacks
def runRemove(options):
    from p2twisted.cli import services_fleet
    store = yield options.openStore()
    try:
        yield services.getService(store, options.name)
        yield services_fleet.refuseUnderRC(store, options.name, "scale it to 0 ('p2 scale %s "
                                           "0'), and once the orchestrator removed its pods "
                                           "delete the RC ('p2 rc delete ID')" % (options.name,))
        nodes = yield services.deployedNodes(store, options.name)
        if nodes and not options.undeploy:
            raise P2Error("%s is deployed to %s; undeploy it first ('p2 undeploy %s') or "
                          "use 'p2 remove %s --undeploy'" % (
                              options.name, ", ".join(nodes), options.name, options.name))
        if nodes:
            removed = yield services.undeploy(store, options.name, nodes)
            options.out.write("undeployed %s from %s\n" % (options.name, ", ".join(removed)))
        yield services.removeService(store, options.name)
    finally:
        yield store.close()
    options.out.write("removed service %s\n" % (options.name,))
    return 0


def agentState(snapshot, node):
    """
    @param snapshot: a L{Snapshot} from L{services.readPods}.
    @return: C{{"up", "since", "last_seen"}} of C{node}'s agent: up while
        its ephemeral C{machines/<node>} exists; C{since} when its process
        started (known on this host only); C{last_seen} the last sync it
        recorded (C{status/agents/<node>}).
    """
    from p2twisted.records import CorruptRecord
    info = {"up": snapshot.agentUp(node), "since": None, "last_seen": None}
    try:
        if info["up"]:
            info["since"] = _processStart(snapshot.machineFacts(node).process)
    except CorruptRecord:
        pass
    try:
        status = snapshot.agentStatus(node)
    except CorruptRecord:
        status = None
    if status is not None:
        info["last_seen"] = status.last_sync
    return info


def _processStart(process):
    """
    @return: the wall time a process of this boot started at, from its
        C{pid_start} (clock ticks after boot), or C{None} for another boot.
    """
    import os
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            if f.read().strip() != process.get("boot_id"):
                return None
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + int(process["pid_start"]) / os.sysconf("SC_CLK_TCK")
    except (OSError, KeyError, TypeError, ValueError, StopIteration):
        return None


def _ago(seconds):
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % (seconds,)


def agentText(agent, now):
    """
    @return: C{agent up 5m}, C{agent up}, C{agent DOWN (last seen 2h ago)}
        or C{agent DOWN}.
    """
    if agent["up"]:
        return "agent up" + (" " + _ago(now - agent["since"]) if agent["since"] else "")
    if agent["last_seen"]:
        return "agent DOWN (last seen %s ago)" % (_ago(now - agent["last_seen"]),)
    return "agent DOWN"


def failing(state):
    """
    @return: whether a pod's state is worth its log: a crash loop, an
        error, or a critical health of the version running.
    """
    health = state["health"]
    return bool(state.get("crash_loop") or state["error"] or (
        health is not None and health["status"] != "passing"
        and health["sha"] == state["reality"]))


@defer.inlineCallbacks
def serviceStatus(store, name=None):
    """
    @return: L{Deferred} firing with C{([{"service", "template",
        "settings", "nodes": [podState...], "fleet"}], snapshot)}, the L{Snapshot}
        the states were read from (L{services.readPods}).  A definition
        that cannot be read has C{template} and C{settings} C{None} and an
        C{error} naming its key.
    """
    unreadable = {}
    if name is not None:
        found = {name: (yield services.getService(store, name))}
    else:
        found = yield services.listServices(store, unreadable)
    from p2twisted.cli import services_fleet
    snapshot = yield services.readPods(store)
    snapshot, statuses = yield services_fleet.readFleet(store, snapshot)
    agents = {}
    result = []
    for serviceName in sorted(set(found) | set(unreadable)):
        service = found.get(serviceName)
        states = []
        for node in snapshot.deployedTo(serviceName):
            state = services.podState(snapshot, serviceName, node)
            if node not in agents:
                agents[node] = agentState(snapshot, node)
            state["agent"] = agents[node]
            states.append(state)
        fleet = services_fleet.fleetInfo(snapshot, serviceName, statuses)
        if service is None:
            result.append({"service": serviceName, "template": None, "settings": None,
                           "nodes": states, "error": str(unreadable[serviceName]),
                           "fleet": fleet})
        else:
            result.append({"service": serviceName, "template": service.template,
                           "settings": service.settings, "nodes": states, "fleet": fleet})
    return result, snapshot


@defer.inlineCallbacks
def runStatus(options):
    store = yield options.openStore()
    try:
        result, snapshot = yield serviceStatus(store, options.name)
    finally:
        yield store.close()
    unreadable = []
    removals = agentRemovals(snapshot, unreadable)
    out = options.out
    if options.json:
        return writeJSON(out, result)
    if not result:
        out.write("no services: define one with 'p2 add NAME --template T' (see 'p2 list')\n")
    import time
    now = time.time()
    here = thisHost()
    for info in result:
        name = info["service"]
        if info.get("error"):
            out.write("%s: %s\n" % (name, info["error"]))
        else:
            out.write("%s (%s)\n" % (name, info["template"]))
        if info["fleet"]:
            from p2twisted.cli.services_fleet import fleetLines
            out.write("".join(fleetLines(info["fleet"])))
        elif not info["nodes"]:
            out.write("  not deployed: run 'p2 deploy %s'\n" % (name,))
        for state in info["nodes"]:
            short = lambda sha: (sha or "-")[:12]  # noqa: E731
            synced = "in sync" if state["intent"] == state["reality"] else "converging"
            health = state["health"]
            agent = state["agent"]
            podState = state["state"] or "unknown"
            if state.get("crash_loop"):
                podState = "crash-loop"
            if state.get("restarts"):
                podState += " (%s restarts)" % (state["restarts"],)
            out.write("  %-16s %-10s intent %-12s reality %-12s %-10s health %s  [%s]\n" % (
                state["node"], podState, short(state["intent"]), short(state["reality"]),
                synced, services.healthText(health, state["reality"]), agentText(agent, now)))
            more = "see 'p2 logs %s'" % (name,)
            if not agent["up"]:
                out.write("    the agent of %s is down: what it last reported may be stale; %s\n"
                          % (state["node"], "start it with 'p2 start'" if state["node"] == here
                             else "check it on that host"))
            if health is not None and health["status"] != "passing":
                out.write("    health check: %s; %s\n" % (
                    services.oneLine(health["output"] or ""), more))
            loop = services.crashLoopLine(state)
            if loop:
                out.write("    %s; %s\n" % (loop, more))
            if state["error"]:
                out.write("    last error: %s; %s\n" % (services.oneLine(state["error"]), more))
            if failing(state) and state["node"] == here:
                writeLogTail(out, logTail(stateDir(options), name))
    out.write("".join(heldNotes(removals, snapshot.agentUp) + ["%s\n" % (line,) for line in unreadable]))
    return 0
