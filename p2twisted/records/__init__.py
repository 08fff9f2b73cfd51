# -*- test-case-name: tests.test_records -*-
"""
The read model: typed records of every store value more than one process
reads (DESIGN.md, "Orchestrators").  Each is a frozen C{attrs} class with
C{fromEntry(key, entry)}, which raises L{CorruptRecord} naming the key when
the value is not that record, and C{toBytes()}, the value to store.

The agent writes them, the CLI and the orchestrators read them, through
here; nobody else parses these values.  Only C{attrs} and C{json} are
imported: every store verb of the CLI loads this.

The replication controller and roll records live in
L{p2twisted.records.controllers}, the daemon set record in
L{p2twisted.records.daemonset} (imported on first use: see L{__getattr__}).
"""

from p2twisted.records.base import CorruptRecord, readable
from p2twisted.records.node import AgentStatus, Confirmation, MachineFacts, NodeMarker, markerIdentity
from p2twisted.records.pod import (
    CRITICAL, DEFAULT_TIMEOUT, DONE, ENDED, EVENTS, EXPIRED, FAILED, KILL_GRACE, PASSING, PENDING,
    RUNNING, Health, HookPodStatus, HookStatus, PodStatus, Request)

__all__ = [
    "CorruptRecord", "readable", "NodeMarker", "markerIdentity", "MachineFacts", "AgentStatus",
    "Confirmation", "Health", "PodStatus", "HookStatus", "HookPodStatus", "Request",
    "PASSING", "CRITICAL", "PENDING", "RUNNING", "DONE", "FAILED", "EXPIRED", "ENDED",
    "DEFAULT_TIMEOUT", "KILL_GRACE", "EVENTS",
]


def __getattr__(name):
    # DaemonSet pulls in the manifest parser: loaded only when asked for.
    if name in ("DaemonSet", "DS_ID_LABEL"):
        from p2twisted.records import daemonset
        return getattr(daemonset, name)
    raise AttributeError(name)
