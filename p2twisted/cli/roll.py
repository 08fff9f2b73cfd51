# -*- test-case-name: tests.test_cli_roll -*-
"""
C{p2 roll}: start, follow and abort rolling updates (C{rolls/<new_rc>});
C{twistd p2-orchestrator}'s roll farm moves them on.
"""

import json
import time

from twisted.internet import defer

from p2twisted.cli.main import withStore, writeJSON
from p2twisted.cli.rc import number
from p2twisted.errors import UsageError

#: Seconds between two looks at the store while C{--follow} follows.
INTERVAL = 1.0


def register(subparsers):
    roll = subparsers.add_parser(
        "roll", help="start, follow and abort rolling updates",
        description="A rolling update moves a replication controller's replicas to another "
                    "(or to a new one running a new manifest) a batch at a time, never letting "
                    "healthy pods fall below a minimum; 'twistd p2-orchestrator' runs it.")
    commands = roll.add_subparsers(dest="roll_command", metavar="COMMAND")

    start = commands.add_parser(
        "start", help="start a rolling update",
        description="Start a rolling update from the RC OLD_RC to the RC NEW_RC, or to a new RC "
                    "running the manifest FILE (same selector and pod labels as OLD_RC). Both "
                    "RCs are locked by the roll: an RC already in a roll is refused.")
    start.add_argument("--from", dest="old", required=True, metavar="OLD_RC")
    target = start.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", dest="new", metavar="NEW_RC", help="an existing RC to roll to")
    target.add_argument("--manifest", metavar="FILE",
                        help="a pod manifest: a new RC of it is created to roll to")
    start.add_argument("--min-healthy", required=True, type=number(int, "a whole number"), metavar="N",
                       help="healthy pods (old and new) never fall below N")
    start.add_argument("--delay", type=number(float), default=0, metavar="SECONDS",
                       help="wait this long between batches (default 0)")
    start.add_argument("--leave-old", action="store_true",
                       help="keep the old RC when done (default: delete it)")
    start.add_argument("--auto-rollback", action="store_true",
                       help="roll back when the new pods stay unhealthy (for --rollback-after)")
    start.add_argument("--rollback-after", type=number(float), default=None, metavar="SECONDS",
                       help="with --auto-rollback: how long new pods may stay unhealthy "
                            "(default 300)")
    start.set_defaults(run=runStart, writes=True)

    status = commands.add_parser(
        "status", help="show a rolling update's progress",
        description="Show a rolling update's old and new pod counts and what its farm last "
                    "said; --follow shows it live (one line updated in place on a terminal, "
                    "a line per change otherwise) until the roll ends, then how it ended (also "
                    "for a roll already over), exiting 1 unless it finished.")
    status.add_argument("id", metavar="ID", help="the roll's id (its new RC's)")
    status.add_argument("--follow", "-f", action="store_true",
                        help="follow it until it ends (a finished roll: until the new RC's pods "
                        "are all healthy)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=runStatus)

    abort = commands.add_parser(
        "abort", help="stop a rolling update where it stands",
        description="Delete the roll: both RCs keep their current counts (nothing is "
                    "unscheduled); the old RC stays disabled once the roll has begun.")
    abort.add_argument("id", metavar="ID")
    abort.set_defaults(run=runAbort, writes=True)
    roll.set_defaults(run=lambda options: roll.print_help(options.err) or 2)


@defer.inlineCallbacks
def runStart(options):
    from p2twisted.orchestrate import edit
    from p2twisted.store import keys
    manifest = None
    if options.manifest:
        from p2twisted.cli.manifest import readManifest
        manifest = readManifest(options.manifest).raw

    more = {}
    if options.rollback_after is not None:
        if not options.auto_rollback:
            raise UsageError("--rollback-after goes with --auto-rollback")
        more["rollback_after"] = options.rollback_after

    def build(snapshot):
        return edit.startRoll(snapshot, options.old, options.min_healthy, newId=options.new,
                              manifest=manifest, roll_delay=options.delay,
                              leave_old=options.leave_old, auto_rollback=options.auto_rollback,
                              **more)
    roll, plan = yield withStore(options, lambda store: edit.change(
        store, build, time.time(), (keys.REPLICATION_CONTROLLERS, keys.ROLLS)))
    if roll is None:
        options.out.write("same manifest, now signed: replaced RC %s's manifest bytes; its "
                          "pods' intent is rewritten without a restart\n" % (options.old,))
        return 0
    options.out.write("started roll %s: %s -> %s, %d replica(s), min healthy %d%s\n"
                      "follow it with 'p2 roll status %s --follow'\n" % (
                          roll.id, roll.old_rc, roll.new_rc, roll.desired, roll.min_healthy,
                          ", new RC %s created" % (roll.new_rc,) if manifest else "",
                          roll.id))
    return 0


def progress(roll, snapshot, farm=None):
    """
    @param farm: the roll farm's last status of it (C{status/roll/<id>}).
    @return: the JSON-able progress of C{roll}: its fields, both RCs'
        desired/current/healthy (L{controllers.podCounts}) and the farm's last word.
    """
    from p2twisted.orchestrate.controllers import podCounts
    found = json.loads(roll.toBytes())
    found["id"] = roll.id
    for name, rcId in (("old", roll.old_rc), ("new", roll.new_rc)):
        rc = snapshot.rc(rcId)
        found[name] = None if rc is None else dict(podCounts(rc, snapshot), id=rcId,
                                                   disabled=rc.disabled)
    found["farm"] = farm
    return found


def _eta(seconds):
    if seconds is None:
        return "ETA -"
    seconds = int(seconds + 0.5)
    return "ETA %dm%02ds" % divmod(seconds, 60) if seconds >= 60 else "ETA %ds" % (seconds,)


def progressLine(info, eta=None):
    """
    @param eta: seconds until done, or C{None} when unknown.
    @return: one line: old and new counts, healthy, minimum, ETA, the
        farm's reason.
    """
    def side(name):
        rc = info[name]
        if rc is None:
            return "%s gone" % (info[name + "_rc"],)
        return "%s %d/%d (%d healthy)" % (rc["id"], rc["current"], rc["desired"], rc["healthy"])
    healthy = sum(info[n]["healthy"] for n in ("old", "new") if info[n])
    line = "%s: old %s -> new %s of %d; %d healthy (min %d); %s" % (
        "rolling back" if info["state"] == "rolling_back" else "rolling",
        side("old"), side("new"), info["desired"], healthy, info["min_healthy"], _eta(eta))
    farm = info.get("farm") or {}
    if farm.get("reason"):
        line += "; " + farm["reason"]
    if farm.get("error"):
        line += "; error: " + farm["error"]
    return line


@defer.inlineCallbacks
def _read(store, rollId):
    from p2twisted.orchestrate.snapshot import Snapshot
    from p2twisted.store import keys
    from p2twisted.cli.rc import farmStatus
    snapshot = yield Snapshot.read(store)
    entry = yield store.get(keys.status("roll", rollId))
    return snapshot, farmStatus(entry)


class Rate(object):
    """
    An ETA from the new RC's healthy pods seen over time.
    """

    def __init__(self):
        self.first = self.latest = None

    def eta(self, info, now):
        """
        @return: seconds until every new pod is healthy, or C{None}: the pace
            from the first look to the latest new healthy pod, counted down
            from that pod (so it does not grow while the roll waits), and
            while pods are left at least the roll's C{roll_delay} after it.
        """
        if not info["new"] or info["state"] != "rolling":
            return None
        done = info["new"]["healthy"]
        if self.first is None:
            self.first = self.latest = (now, done)
            return None
        if done > self.latest[1]:
            self.latest = (now, done)
        (then, before), (at, count) = self.first, self.latest
        if count <= before or at <= then:
            return None
        left = max(info["desired"] - count, 0)
        finish = at + left * (at - then) / (count - before)
        if left and info.get("roll_delay"):
            # The next batch waits roll_delay once it could go: the pace of
            # batches that went without it (the first) would say 0s meanwhile.
            finish = max(finish, at + info["roll_delay"])
        return max(finish - now, 0)


@defer.inlineCallbacks
def _ending(store, rollId):
    """
    @return: the last audit event of roll C{rollId}, or C{None}.
    """
    from p2twisted.orchestrate import audit
    events, corrupt = yield audit.read(store)
    mine = [e for e in events if e.kind == "roll" and e.id == rollId]
    return mine[-1] if mine else None


@defer.inlineCallbacks
def runStatus(options):
    from p2twisted.orchestrate.edit import requireRoll

    @defer.inlineCallbacks
    def once(store):
        snapshot, farm = yield _read(store, options.id)
        return progress(requireRoll(snapshot, options.id), snapshot, farm)
    if not options.follow:
        info = yield withStore(options, once)
        if options.json:
            return writeJSON(options.out, info)
        options.out.write("roll %s: %s -> %s\n  %s\n" % (
            info["id"], info["old_rc"], info["new_rc"], progressLine(info)))
        if info.get("reason"):
            options.out.write("  rolling back because: %s\n" % (info["reason"],))
        return 0
    code = yield withStore(options, lambda store: follow(options, store))
    return code


@defer.inlineCallbacks
def follow(options, store):
    """
    Print the roll's progress until its record is gone (and, for a roll
    that finished, until the new RC's pods are all healthy: see
    L{_untilHealthy}): on a terminal one line rewritten in place, else a
    line whenever it changes (C{--json}: a JSON object a line).
    """
    from twisted.internet import task

    from p2twisted.cli.progress import Progress
    from p2twisted.orchestrate.edit import requireRoll
    reactor = options.reactor
    shown = Progress(options.out, live=not options.json)
    rate, seen = Rate(), False
    while True:
        snapshot, farm = yield _read(store, options.id)
        roll = snapshot.roll(options.id)
        if roll is None:
            break
        seen = True
        info = progress(roll, snapshot, farm)
        if options.json:
            line = change = json.dumps(info, sort_keys=True)
        else:
            line = progressLine(info, rate.eta(info, reactor.seconds()))
            change = progressLine(info)  # a new ETA alone is no change to print a line for
        shown.show(line, change)
        yield task.deferLater(reactor, INTERVAL, lambda: None)
    event = yield _ending(store, options.id)
    if not seen and event is None:
        requireRoll(snapshot, options.id)
    if event is not None and event.action == "finish":
        yield _untilHealthy(options, store, event.details.get("to"), shown)
    ending = event and [event.action] + ["%s=%s" % kv for kv in sorted(event.details.items())]
    text = "roll %s ended%s" % (options.id, ": " + " ".join(ending) if ending else "")
    if options.json:
        text = json.dumps({"id": options.id, "ended": ending and ending[0],
                           "details": ending and ending[1:]})
    shown.end(text)
    # A roll that finished is a success; aborted or rolled back, not.
    return 0 if ending is None or ending[0] == "finish" else 1


@defer.inlineCallbacks
def _untilHealthy(options, store, rcId, shown):
    """
    Like P2, a roll finishes once the new RC has all its replicas placed,
    healthy or not (so a known-bad version at min_healthy 0 does not hang
    the roll), keeping only min_healthy healthy on the way.  A person who
    follows a roll wants the fleet on the new version, so following goes
    on, saying so, until every replica of the new RC C{rcId} is healthy
    (or the RC is gone).
    """
    from twisted.internet import task

    from p2twisted.orchestrate.controllers import podCounts
    from p2twisted.orchestrate.snapshot import Snapshot
    while rcId is not None:
        snapshot = yield Snapshot.read(store)
        rc = snapshot.rc(rcId)
        if rc is None:
            break
        counts = podCounts(rc, snapshot)
        if counts["healthy"] >= counts["desired"]:
            break
        if options.json:
            line = json.dumps({"id": options.id, "finished": True, "waiting": "healthy",
                               "new": dict(counts, id=rcId)}, sort_keys=True)
        else:
            line = ("roll %s finished; waiting for %s's pods to be healthy: %d/%d placed, "
                    "%d healthy" % (options.id, rcId, counts["current"], counts["desired"],
                                    counts["healthy"]))
        shown.show(line)
        yield task.deferLater(options.reactor, INTERVAL, lambda: None)


@defer.inlineCallbacks
def runAbort(options):
    from p2twisted.orchestrate import edit, roll as rollmodule
    from p2twisted.store import keys

    def build(snapshot):
        return snapshot, rollmodule.abortRoll(snapshot, options.id)
    snapshot, plan = yield withStore(options, lambda store: edit.change(
        store, build, time.time(), (keys.REPLICATION_CONTROLLERS, keys.ROLLS)))
    roll = snapshot.roll(options.id)
    counts = []
    for rcId in (roll.old_rc, roll.new_rc):
        rc = snapshot.rc(rcId)
        if rc is not None:
            counts.append("%s keeps %d replica(s)%s" % (rcId, rc.replicas_desired,
                                                        " (disabled)" if rc.disabled else ""))
    options.out.write("aborted roll %s where it stood: %s\nresume it with 'p2 roll start --from "
                      "%s --to %s --min-healthy N', or roll back with '--from %s --to %s'\n"
                      % (options.id, "; ".join(counts), roll.old_rc, roll.new_rc, roll.new_rc,
                         roll.old_rc))
    return 0
