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
L{p2twisted.records.daemonset}.  Each module is imported on first use (see
L{__getattr__}).
"""

from p2twisted.records.base import CorruptRecord, readable

__all__ = [
    "CorruptRecord", "readable", "NodeMarker", "markerIdentity", "MachineFacts", "AgentStatus",
    "Confirmation", "Health", "PodStatus", "HookStatus", "HookPodStatus", "Request",
    "PASSING", "CRITICAL", "PENDING", "RUNNING", "DONE", "FAILED", "EXPIRED", "ENDED",
    "DEFAULT_TIMEOUT", "KILL_GRACE", "EVENTS",
]

#: The module of each record and constant, imported when first asked for:
#: C{p2 schedule} needs only the node marker, of the few dozen classes.
_MODULES = dict(
    [(name, "node") for name in ("NodeMarker", "markerIdentity", "MachineFacts", "AgentStatus",
                                 "Confirmation")]
    + [(name, "pod") for name in __all__[7:]]
    + [("DaemonSet", "daemonset"), ("DS_ID_LABEL", "daemonset")])


def __getattr__(name):
    # DaemonSet pulls in the manifest parser: loaded only when asked for too.
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib
    value = getattr(importlib.import_module("p2twisted.records." + module), name)
    globals()[name] = value
    return value
