# -*- test-case-name: tests.test_cli_audit -*-
"""
C{p2 audit}: the audit log (C{audit/}), in time order.
"""

import json
import time

from twisted.internet import defer

from p2twisted.cli.main import withStore


def register(subparsers):
    verb = subparsers.add_parser(
        "audit", help="show the audit log: what orchestrators and people changed",
        description="Print the events of the audit log (replication controllers scheduling and "
                    "unscheduling pods, rolling update steps ...) in time order.")
    verb.add_argument("--since", metavar="DURATION|TIME", default=None,
                      help="only events since then: a duration back from now (30m, 2h, 7d) or "
                           "a UTC time (2026-12-07T03:00:00Z, 2026-12-07)")
    verb.add_argument("--json", action="store_true", help="print JSON")
    verb.set_defaults(run=runAudit)


def _details(details):
    parts = []
    for name, value in sorted(details.items()):
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        parts.append("%s=%s" % (name, value))
    return " ".join(parts)


@defer.inlineCallbacks
def runAudit(options):
    from p2twisted.orchestrate import audit
    since = None if options.since is None else audit.parseSince(options.since, time.time())
    events, corrupt = yield withStore(options, lambda store: audit.read(store, since))
    for error in corrupt:
        options.err.write("p2: skipping %s\n" % (error,))
    if options.json:
        json.dump([json.loads(e.toBytes()) for e in events], options.out, indent=2,
                  sort_keys=True)
        options.out.write("\n")
        return 0
    if not events:
        options.out.write("no audit events%s\n" % (" since %s" % (options.since,)
                                                    if options.since else "",))
    for event in events:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.when))
        options.out.write("%s  %s %s  %s  %s  (by %s)\n" % (
            stamp, event.kind, event.id, event.action, _details(event.details), event.who))
    return 0
