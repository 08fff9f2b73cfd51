# -*- test-case-name: tests.test_orchestrate_audit -*-
"""
The audit log: C{audit/<time>-<uuid>} entries, one L{AuditEvent} each,
appended by the farms (and the CLI) and read by C{p2 audit}.

Keys sort by time (then, for one process, by the order it appended them), so
a listing in key order is the log in time order.
"""

import calendar
import itertools
import re
import time
import uuid

from twisted.internet import defer

from p2twisted.errors import UsageError
from p2twisted.store import keys
from p2twisted.store.common import MAX_OPS, Create

#: What makes this process's audit keys unique; then a sequence number.
_PROCESS = uuid.uuid4().hex[:16]
_SEQUENCE = itertools.count()

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TIMES = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%H:%M",
          "%Y-%m-%d")


def creates(events, who, when):
    """
    @return: the C{Create} ops appending C{events} (L{AuditEvent}s; their
        C{who} and C{when} are set here), for a caller writing them in the
        transaction that makes the change they tell of.
    """
    ops = []
    for event in events:
        event = event.stamped(who, when)
        # Events of one process stamped alike keep their order.
        ops.append(Create(event.key("%s.%012d" % (_PROCESS, next(_SEQUENCE))), event.toBytes()))
    return ops


def append(store, events, who, when):
    """
    Append C{events} (L{AuditEvent}s; their C{who} and C{when} are set
    here), in transactions of at most 64 creates.

    @return: L{Deferred} firing with the keys written.
    """
    ops = creates(events, who, when)

    @defer.inlineCallbacks
    def write():
        for start in range(0, len(ops), MAX_OPS):
            yield store.transaction(ops[start:start + MAX_OPS])
        return [op.key for op in ops]
    return write()


@defer.inlineCallbacks
def read(store, since=None):
    """
    @param since: seconds since the epoch; older events are left out.
    @return: L{Deferred} firing with C{(events, corrupt)}: the L{AuditEvent}s
        in time order, and the L{CorruptRecord} errors of unreadable
        entries (each names its key).
    """
    from p2twisted.records import CorruptRecord
    from p2twisted.records.controllers import AuditEvent
    entries = yield store.list(keys.tree(keys.AUDIT))
    events, corrupt = [], []
    for key in sorted(entries):
        if len(keys.parse(key)) != 2:
            continue
        try:
            event = AuditEvent.fromEntry(key, entries[key])
        except CorruptRecord as e:
            corrupt.append(e)
            continue
        if since is None or event.when >= since:
            events.append(event)
    return events, corrupt


def parseSince(text, now):
    """
    @param text: a duration back from C{now} (C{90s}, C{15m}, C{2h}, C{7d})
        or a UTC time (C{2026-12-07T03:00:00Z}, C{2026-12-07}).
    @return: seconds since the epoch.
    @raise UsageError: for anything else.
    """
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    for form in _TIMES:
        try:
            return float(calendar.timegm(time.strptime(text.strip(), form)))
        except ValueError:
            continue
    raise UsageError("--since %r: expected a duration like 30m, 2h or 7d, or a UTC time like "
                     "2026-12-07T03:00:00Z" % (text,))
