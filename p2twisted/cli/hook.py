# -*- test-case-name: tests.test_cli_hook -*-
"""
C{p2 hook}: schedule, list and remove hook pods (C{hooks/<event>/<pod_id>}).

Every agent installs each hook pod scheduled for an event and runs its
launch script(s) at that event (see L{p2twisted.agent.hooks} for the events
and the environment hooks get).
"""

from twisted.internet import defer

from p2twisted.cli.main import writeJSON
from p2twisted.records import EVENTS
from p2twisted.cli.manifest import readManifest
from p2twisted.errors import ManifestError, P2Error, UsageError
from p2twisted.manifest import parseManifest
from p2twisted.store import keys


def register(subparsers):
    hook = subparsers.add_parser(
        "hook", help="schedule, list and remove hook pods",
        description="Hook pods run on every agent at an event of its workflow: %s. "
                    "A hook pod is an ordinary pod manifest (see 'p2 bin2pod'); each agent "
                    "installs it and runs its launch script at the event, with HOOK_EVENT, "
                    "HOOKED_POD_ID, HOOKED_POD_HOME, HOOKED_POD_MANIFEST, ... set."
                    % (", ".join(EVENTS),))
    hook.set_defaults(run=runMissing)
    commands = hook.add_subparsers(dest="hook_command", metavar="COMMAND")

    schedule = commands.add_parser(
        "schedule", help="run a hook pod on every agent at an event",
        description="Validate a hook pod manifest and write it to hooks/<event>/<pod_id>; "
                    "every agent installs it and runs it at EVENT.")
    schedule.add_argument("--event", required=True, help="one of: " + ", ".join(EVENTS))
    schedule.add_argument("manifest", metavar="MANIFEST",
                          help="pod manifest (YAML, may be signed: p2 sign); - reads stdin")
    schedule.set_defaults(run=runSchedule, writes=True)

    listing = commands.add_parser(
        "list", help="list the scheduled hook pods",
        description="List hooks/: one line per hook pod, 'EVENT POD_ID SHA'.")
    listing.add_argument("--json", action="store_true",
                         help="print a JSON list of {event, pod_id, sha, error}")
    listing.set_defaults(run=runList)

    remove = commands.add_parser(
        "remove", help="remove a hook pod from every agent",
        description="Delete hooks/<event>/<pod_id>; every agent removes the hook pod.")
    remove.add_argument("--event", required=True, help="one of: " + ", ".join(EVENTS))
    remove.add_argument("pod", metavar="POD_ID")
    remove.set_defaults(run=runRemove, writes=True)


def runMissing(options):
    raise UsageError("'p2 hook' needs a command: schedule, list or remove "
                     "(see 'p2 hook --help')")


def checkEvent(event):
    """
    @return: C{event}.
    @raise UsageError: naming the events, if it is not one.
    """
    if event not in EVENTS:
        raise UsageError("unknown hook event %r; expected one of %s" % (event, ", ".join(EVENTS)))
    return event


@defer.inlineCallbacks
def runSchedule(options):
    event = checkEvent(options.event)
    manifest = readManifest(options.manifest)
    store = yield options.openStore()
    try:
        yield store.put(keys.hook(event, manifest.id), manifest.raw)
    finally:
        yield store.close()
    options.out.write("scheduled hook %s (sha %s) at %s\n" % (manifest.id, manifest.sha(), event))
    return 0


@defer.inlineCallbacks
def runList(options):
    store = yield options.openStore()
    try:
        entries = yield store.list(keys.HOOKS)
    finally:
        yield store.close()
    rows = []
    for key, entry in entries.items():
        parts = key.split("/")
        if len(parts) != 3:
            continue
        event, podId = parts[1], parts[2]
        sha = error = None
        try:
            sha = parseManifest(entry.value, source=key).sha()
        except ManifestError as e:
            error = str(e)
        rows.append({"event": event, "pod_id": podId, "sha": sha, "error": error})
    order = {event: index for index, event in enumerate(EVENTS)}
    rows.sort(key=lambda r: (order.get(r["event"], len(EVENTS)), r["event"], r["pod_id"]))
    if options.json:
        writeJSON(options.out, rows)
        return 0
    for row in rows:
        options.out.write("%s %s %s\n" % (row["event"], row["pod_id"],
                                          row["sha"] or "invalid: " + row["error"]))
    return 0


@defer.inlineCallbacks
def runRemove(options):
    event = checkEvent(options.event)
    try:
        key = keys.hook(event, options.pod)
    except P2Error as e:
        raise UsageError("invalid pod id %r: %s" % (options.pod, e))
    store = yield options.openStore()
    try:
        removed = yield store.delete(key)
    finally:
        yield store.close()
    if not removed:
        raise P2Error("no hook %s at %s (%s is absent); nothing removed"
                      % (options.pod, event, key))
    options.out.write("removed hook %s at %s\n" % (options.pod, event))
    return 0
