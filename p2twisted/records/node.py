# -*- test-case-name: tests.test_records -*-
"""
The records about a node: its marker (C{intent/<node>}), its agent's facts
(C{machines/<node>}) and status (C{status/agents/<node>}), and a person's
confirmation of its held removals (C{confirmations/<node>}).
"""

import time

import attr

from p2twisted.records.base import CorruptRecord, dumpObject, field, loadObject, segments


def _stamp(now=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


@attr.s(frozen=True)
class NodeMarker(object):
    """
    C{intent/<node>}: the node marker; an agent acts on its node's intent
    only while it exists (DESIGN.md, "The node-marker failsafe").

    @ivar created: when it was created, C{YYYY-MM-DDTHH:MM:SSZ}, or C{None}.
    """

    node = attr.ib()
    created = attr.ib(default=None)

    @classmethod
    def new(cls, node, now=None):
        """
        @return: the marker of C{node} created at C{now} (default: now).
        """
        return cls(node, _stamp(now))

    @classmethod
    def fromEntry(cls, key, entry):
        node, = segments(key, 1, "intent")
        record = loadObject(key, entry.value)
        return cls(field(key, record, "node", str, default=node),
                   field(key, record, "created", str))

    def toBytes(self):
        return dumpObject({"node": self.node, "created": self.created})


def markerIdentity(entry):
    """
    Which creation of a node marker C{entry} is: its C{created} field and its
    store version.  A marker is only ever created, never rewritten, and store
    versions never repeat across a delete and re-create, so a marker created
    afresh (after a wipe, say) never has the identity of the one before.  An
    unreadable marker is still a marker: its C{created} is C{None}.

    @param entry: the marker's L{Entry}.
    @return: a JSON-able C{{"created": str or None, "version": ...}}.
    """
    try:
        created = NodeMarker.fromEntry(entry.key, entry).created
    except CorruptRecord:
        created = None
    return {"created": created, "version": entry.version}


@attr.s(frozen=True)
class MachineFacts(object):
    """
    C{machines/<node>}: an agent's presence (the key is ephemeral, held by
    its session) and the facts it publishes: C{node}, C{hostname},
    C{machine_id}, C{cores}, C{memory}, C{agent_version}, C{labels},
    C{supervisor}, and C{process} (C{pid}, C{pid_start}, C{boot_id},
    C{pid_ns}: enough to tell whether that process still lives).

    @ivar facts: the whole JSON object, as the agent wrote it.
    """

    node = attr.ib()
    facts = attr.ib(factory=dict)

    @classmethod
    def fromEntry(cls, key, entry):
        return cls.fromBytes(key, entry.value)

    @classmethod
    def fromBytes(cls, key, value):
        node, = segments(key, 1, "machines")
        facts = loadObject(key, value)
        field(key, facts, "process", dict)
        field(key, facts, "machine_id", str)
        return cls(node, facts)

    @property
    def machineId(self):
        return self.facts.get("machine_id")

    @property
    def process(self):
        """
        @return: the agent process's identity: C{{"pid", "pid_start",
            "boot_id", "pid_ns"}} (C{{}} when not published).
        """
        return self.facts.get("process") or {}

    @property
    def pid(self):
        pid = self.process.get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) else None

    def toBytes(self):
        return dumpObject(self.facts)


@attr.s(frozen=True)
class AgentStatus(object):
    """
    C{status/agents/<node>}: what a node's agent last reported.

    @ivar connected: whether it could act (present in the store).
    @ivar converged: every pod worker idle, no invalid intent.
    @ivar node_marker: whether it saw its node marker (C{None}: not yet read).
    @ivar removals: the removals it holds back
        (L{p2twisted.agent.failsafe.describe}): a dict with C{state} (C{none},
        C{grace}, C{held}, C{no-marker}), C{held}, C{orphans},
        C{grace_until}, C{hold}, C{hold_until}, C{confirm}; or C{None}.
    @ivar last_sync: epoch seconds of its last sync, or C{None}.
    @ivar pods: C{{pod_id: {"state", "attempts", "error"}}} of its workers.
    """

    node = attr.ib()
    store = attr.ib(default=None)
    connected = attr.ib(default=False)
    converged = attr.ib(default=False)
    node_marker = attr.ib(default=None)
    removals = attr.ib(default=None)
    last_sync = attr.ib(default=None)
    pods = attr.ib(factory=dict)

    @classmethod
    def fromEntry(cls, key, entry):
        node, = segments(key, 1, "status/agents")
        record = loadObject(key, entry.value)
        return cls(node, field(key, record, "store", str),
                   field(key, record, "connected", bool, default=False),
                   field(key, record, "converged", bool, default=False),
                   field(key, record, "node_marker", bool),
                   _removals(key, field(key, record, "removals", dict)),
                   field(key, record, "last_sync", float),
                   field(key, record, "pods", dict, default={}))

    def heldRemovals(self):
        """
        @return: the C{removals} record when its state is C{held}, else
            C{None}.
        """
        removals = self.removals or {}
        return removals if removals.get("state") == "held" else None

    def toBytes(self):
        return dumpObject(attr.asdict(self, recurse=False))


def _removals(key, removals):
    """
    @return: C{removals} (of an L{AgentStatus}), checked field by field:
        the views iterate its pod lists and times.
    @raise CorruptRecord: when a field has another shape.
    """
    if removals is None:
        return None
    for name in ("state", "hold", "confirm"):
        field(key, removals, name, str)
    field(key, removals, "hold_until", float)
    for name in ("held", "orphans"):
        pods = field(key, removals, name, list, default=[])
        if not all(isinstance(pod, str) for pod in pods):
            raise CorruptRecord(key, "removals %r is %r, not a list of pod ids" % (name, pods))
    until = field(key, removals, "grace_until", dict, default={})
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in until.values()):
        raise CorruptRecord(key, "removals 'grace_until' is %r, not pod ids and times" % (until,))
    return removals


@attr.s(frozen=True)
class Confirmation(object):
    """
    C{confirmations/<node>}: a person's go-ahead (C{p2 node confirm}) for
    the removals the node's agent holds, bound to one node marker.

    @ivar marker: the L{markerIdentity} confirmed.
    @ivar by: C{user@host} of who confirmed, or C{None}.
    @ivar time: when, C{YYYY-MM-DDTHH:MM:SSZ}.
    """

    node = attr.ib()
    marker = attr.ib()
    by = attr.ib(default=None)
    time = attr.ib(default=None)

    @classmethod
    def new(cls, node, marker, by, now=None):
        return cls(node, marker, by, _stamp(now))

    @classmethod
    def fromEntry(cls, key, entry):
        node, = segments(key, 1, "confirmations")
        record = loadObject(key, entry.value)
        return cls(field(key, record, "node", str, default=node),
                   field(key, record, "marker", dict, required=True),
                   field(key, record, "by", str), field(key, record, "time", str))

    def toBytes(self):
        return dumpObject(attr.asdict(self, recurse=False))
