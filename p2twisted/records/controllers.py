# -*- test-case-name: tests.test_records_controllers -*-
"""
The records the orchestrators act on: replication controllers
(C{replication_controllers/<id>}), rolling updates (C{rolls/<new_rc>}) and
audit events (C{audit/<time>-<uuid>}).

Each is a frozen attrs class whose constructor validates it (raising
L{UsageError}, a one-line message, for a record a person is building) and
whose C{fromEntry(key, entry)} reads the stored JSON, raising
L{CorruptRecord} naming the key for anything else.  A required field is
never defaulted: an RC without C{replicas_desired} is corrupt, not an RC of
zero replicas (P2's failsafe, reference/p2.md section 10 item 6).
"""

import calendar
import functools
import json
import math
import time

import attr

from p2twisted.errors import ManifestError, SelectorError, UsageError
from p2twisted.labels import parseSelector, validateLabels
from p2twisted.manifest import parseManifest
from p2twisted.records.base import CorruptRecord, loadObject
from p2twisted.store import keys
from p2twisted.store.common import checkKey

#: The pod labels every pod an RC schedules carries.
RC_ID_LABEL = "replication_controller_id"
POD_ID_LABEL = "pod_id"
#: The pod label naming the daemon set a pod belongs to (P2's C{DSIDLabel}).
DS_ID_LABEL = "daemon_set_id"
#: Labels an RC's C{pod_labels} may not set: an RC pod labelled with a
#: daemon set's id would be that set's to replace and to unschedule (its
#: C{--cascade}, or the farm's orphan cleanup when no such set exists).
RESERVED_POD_LABELS = (RC_ID_LABEL, POD_ID_LABEL, DS_ID_LABEL)

#: Roll states: moving replicas to the new RC, or back to the old one.
ROLLING = "rolling"
ROLLING_BACK = "rolling_back"

#: Seconds a roll's new pods may stay unhealthy before C{auto_rollback}.
DEFAULT_ROLLBACK_AFTER = 300


@functools.lru_cache(maxsize=256)
def _parsed(manifest):
    return parseManifest(manifest)


@functools.lru_cache(maxsize=256)
def _sha(manifest):
    return _parsed(manifest).sha()


def _segment(what):
    def check(instance, attribute, value):
        if not isinstance(value, str) or "/" in value:
            raise UsageError("%s must be one key segment, got %r" % (what, value))
        try:
            checkKey(value)
        except Exception:
            raise UsageError("%s %r is not a valid key segment ([A-Za-z0-9._:-]+)"
                             % (what, value))
    return check


def _count(what):
    def check(instance, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError("%s must be a whole number >= 0, got %r" % (what, value))
    return check


def _seconds(what, optional=False):
    def check(instance, attribute, value):
        if optional and value is None:
            return
        # NaN and infinity pass "< 0" but are no JSON: the record written
        # would be unreadable by everyone after.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                or not math.isfinite(value):
            raise UsageError("%s must be a number of seconds >= 0, got %r" % (what, value))
    return check


def _flag(what):
    def check(instance, attribute, value):
        if not isinstance(value, bool):
            raise UsageError("%s must be true or false, got %r" % (what, value))
    return check


def _load(cls, key, entry, required, fields):
    """
    Read the JSON object in C{entry} and build C{cls} from its C{fields}.

    @param required: fields that must be present (never defaulted).
    @raise CorruptRecord: naming C{key}.
    """
    data = loadObject(key, entry.value)
    missing = [name for name in required if name not in data]
    if missing:
        raise CorruptRecord(key, "required field(s) missing: %s" % (", ".join(missing),))
    try:
        return cls(**{name: data[name] for name in fields if name in data})
    except (UsageError, ManifestError, SelectorError) as e:
        raise CorruptRecord(key, str(e))


def _dump(record, names):
    data = {name: getattr(record, name) for name in names}
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def checkManifest(instance, attribute, value):
    """An attrs validator: C{value} is a valid manifest's UTF-8 bytes."""
    if not isinstance(value, bytes):
        raise UsageError("manifest must be bytes, got %s" % (type(value).__name__,))
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("manifest is not UTF-8 text")
    _parsed(value)


def checkSelector(instance, attribute, value):
    """An attrs validator: C{value} is a label selector's text."""
    if not isinstance(value, str):
        raise UsageError("%s must be text, got %r" % (attribute.name, value))
    parseSelector(value)


@attr.s(frozen=True)
class ReplicationController(object):
    """
    Keep C{replicas_desired} copies of a pod on the nodes C{node_selector}
    picks, one per node.

    @ivar id: the RC's id (its key's last segment).
    @ivar manifest: the pod manifest's bytes as written (perhaps signed).
    @ivar node_selector: label selector text over node labels; empty is
        every node.
    @ivar pod_labels: extra labels for every pod it schedules.
    @ivar replicas_desired: how many copies.
    @ivar disabled: make no change at all.
    """

    id = attr.ib(validator=_segment("replication controller id"))
    manifest = attr.ib(validator=checkManifest)
    replicas_desired = attr.ib(validator=_count("replicas_desired"))
    node_selector = attr.ib(default="", validator=checkSelector)
    pod_labels = attr.ib(factory=dict, hash=False)
    disabled = attr.ib(default=False, validator=_flag("disabled"))

    FIELDS = ("id", "manifest", "node_selector", "pod_labels", "replicas_desired", "disabled")

    @pod_labels.validator
    def _checkPodLabels(self, attribute, value):
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise UsageError("pod_labels must be a map of text to text, got %r" % (value,))
        reserved = sorted(set(value) & set(RESERVED_POD_LABELS))
        if reserved:
            raise UsageError("pod_labels may not set %s: the RC sets it" % (", ".join(reserved),))
        validateLabels(value)

    @property
    def key(self):
        return keys.replicationController(self.id)

    def podManifest(self):
        """@return: the parsed L{PodManifest} (parsed once per distinct manifest)."""
        return _parsed(self.manifest)

    @property
    def podId(self):
        return self.podManifest().id

    @property
    def sha(self):
        """The canonical SHA of the manifest (computed once per manifest)."""
        return _sha(self.manifest)

    def selector(self):
        """@return: the L{labels.Selector} of C{node_selector}."""
        return parseSelector(self.node_selector)

    def labelsForPods(self):
        """@return: the label map of every pod this RC schedules."""
        labels = dict(self.pod_labels)
        labels[RC_ID_LABEL] = self.id
        labels[POD_ID_LABEL] = self.podId
        return labels

    def withReplicas(self, count):
        return attr.evolve(self, replicas_desired=count)

    def withDisabled(self, disabled):
        return attr.evolve(self, disabled=disabled)

    @classmethod
    def fromEntry(cls, key, entry):
        """
        @raise CorruptRecord: for anything but a valid RC's JSON, including
            one without C{replicas_desired} or whose C{id} is not its key's.
        """
        return loadWithManifest(cls, key, entry, ("manifest", "replicas_desired"))

    def toBytes(self):
        return dumpWithManifest(self)


def loadWithManifest(cls, key, entry, required):
    """
    Read a controller record holding a manifest as text, whose C{id} (if
    given) must be its key's last segment.

    @raise CorruptRecord: naming C{key}.
    """
    keyId = keys.parse(key)[-1]

    def build(manifest, id=keyId, **fields):
        if not isinstance(manifest, str):
            raise UsageError("manifest must be the manifest's text, got %r" % (manifest,))
        return cls(id=id, manifest=manifest.encode("utf-8"), **fields)
    record = _load(build, key, entry, required, cls.FIELDS)
    if record.id != keyId:
        raise CorruptRecord(key, "its id %r is not the key's" % (record.id,))
    return record


def dumpWithManifest(record):
    """@return: the stored JSON of an attrs record with a C{manifest} (bytes)."""
    data = attr.asdict(record, recurse=False)
    data["manifest"] = record.manifest.decode("utf-8")
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


@attr.s(frozen=True)
class Roll(object):
    """
    A rolling update from C{old_rc} to C{new_rc} (P2's RU), stored at
    C{rolls/<new_rc>}.  Everything a resumed roll needs is here or in the
    two RC records: a killed orchestrator's successor picks up where it was.

    @ivar desired: the new RC's final replica count.
    @ivar min_healthy: healthy pods (old and new together) never fall
        below this.
    @ivar roll_delay: seconds to wait, once a batch could go, before it
        goes (not before the first).
    @ivar leave_old: keep the old RC when done.
    @ivar auto_rollback: reverse the roll when its new pods stay unhealthy
        for C{rollback_after} seconds.
    @ivar old_desired: the old RC's count when the roll began (a rollback
        restores it); C{None} means C{desired}.
    @ivar state: L{ROLLING} or L{ROLLING_BACK}.
    @ivar reason: why it is rolling back, or C{None}.
    @ivar unhealthy_since: when the roll was first seen blocked by
        unhealthy new pods (for C{auto_rollback}), or C{None}.
    @ivar ready_since: when a batch was first seen ready to go (for
        C{roll_delay}), or C{None}.
    """

    old_rc = attr.ib(validator=_segment("old_rc"))
    new_rc = attr.ib(validator=_segment("new_rc"))
    desired = attr.ib(validator=_count("desired"))
    min_healthy = attr.ib(validator=_count("min_healthy"))
    roll_delay = attr.ib(default=0, validator=_seconds("roll_delay"))
    leave_old = attr.ib(default=False, validator=_flag("leave_old"))
    auto_rollback = attr.ib(default=False, validator=_flag("auto_rollback"))
    rollback_after = attr.ib(default=DEFAULT_ROLLBACK_AFTER, validator=_seconds("rollback_after"))
    old_desired = attr.ib(default=None)
    state = attr.ib(default=ROLLING)
    reason = attr.ib(default=None)
    unhealthy_since = attr.ib(default=None, validator=_seconds("unhealthy_since", True))
    ready_since = attr.ib(default=None, validator=_seconds("ready_since", True))

    FIELDS = ("id", "old_rc", "new_rc", "desired", "min_healthy", "roll_delay", "leave_old",
              "auto_rollback", "rollback_after", "old_desired", "state", "reason",
              "unhealthy_since", "ready_since")

    def __attrs_post_init__(self):
        if self.old_rc == self.new_rc:
            raise UsageError("a roll needs two different RCs, got %r twice" % (self.old_rc,))
        if self.old_desired is not None:
            _count("old_desired")(self, None, self.old_desired)
        if self.state not in (ROLLING, ROLLING_BACK):
            raise UsageError("state must be %r or %r, got %r" % (ROLLING, ROLLING_BACK, self.state))
        if self.reason is not None and not isinstance(self.reason, str):
            raise UsageError("reason must be text, got %r" % (self.reason,))

    @property
    def id(self):
        return self.new_rc

    @property
    def key(self):
        return keys.roll(self.id)

    @property
    def rollingBack(self):
        return self.state == ROLLING_BACK

    @classmethod
    def fromEntry(cls, key, entry):
        """
        @raise CorruptRecord: for anything but a valid roll's JSON, or one
            whose C{new_rc} is not its key's id.
        """

        def build(id=None, **fields):
            return cls(**fields)
        record = _load(build, key, entry, ("old_rc", "new_rc", "desired", "min_healthy"),
                       cls.FIELDS)
        if keys.parse(key)[-1] != record.id:
            raise CorruptRecord(key, "its new_rc %r is not the key's" % (record.id,))
        return record

    def toBytes(self):
        return _dump(self, self.FIELDS)


def _utc(when, form):
    """
    @return: C{when} in C{form} (C{strftime}) with microseconds, rounded
        (.9999997 is the next second, not this one's start).
    """
    seconds, micros = divmod(int(round(when * 1e6)), 1000000)
    return time.strftime(form, time.gmtime(seconds)) + ".%06dZ" % (micros,)


def _stamp(when):
    return _utc(when, "%Y%m%dT%H%M%S")


def _iso(when):
    return _utc(when, "%Y-%m-%dT%H:%M:%S")


def _parseIso(text):
    if not isinstance(text, str):
        raise UsageError("when must be ISO-8601 UTC text, got %r" % (text,))
    try:
        whole, fraction = text.rstrip("Z").split(".") if "." in text else (text.rstrip("Z"), "0")
        return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + fraction)
    except ValueError:
        raise UsageError("when must be ISO-8601 UTC text, got %r" % (text,))


@attr.s(frozen=True)
class AuditEvent(object):
    """
    One audited change: C{who} did C{action} to the C{kind} object C{id} at
    C{when} (seconds since the epoch), with C{details}.

    Controllers' plans carry events with C{who}/C{when} unset; whoever
    applies the plan fills them in (L{stamped}) and appends the event.
    """

    kind = attr.ib()
    id = attr.ib()
    action = attr.ib()
    details = attr.ib(factory=dict, hash=False)
    who = attr.ib(default=None)
    when = attr.ib(default=None, validator=_seconds("when", True))

    FIELDS = ("who", "when", "kind", "id", "action", "details")

    def __attrs_post_init__(self):
        for name in ("kind", "id", "action"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise UsageError("%s must be non-empty text, got %r" % (name, getattr(self, name)))
        if not isinstance(self.details, dict):
            raise UsageError("details must be a map, got %r" % (self.details,))

    def stamped(self, who, when):
        return attr.evolve(self, who=who, when=when)

    def key(self, unique):
        """
        @param unique: a unique suffix (a uuid's hex).
        @return: C{audit/<time>-<unique>}, sorting by time.
        """
        if self.when is None:
            raise UsageError("an audit event needs its time before it is written")
        return keys.audit(_stamp(self.when), unique)

    @classmethod
    def fromEntry(cls, key, entry):
        def build(when=None, **fields):
            return cls(when=None if when is None else _parseIso(when), **fields)
        return _load(build, key, entry, ("kind", "id", "action", "when"), cls.FIELDS)

    def toBytes(self):
        data = {name: getattr(self, name) for name in self.FIELDS}
        if self.when is not None:
            data["when"] = _iso(self.when)
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


@attr.s(frozen=True)
class Deletion(object):
    """
    The object a person deleted last from one tree (C{status/deleted/<tree>},
    written in the delete's own transaction): the id and the version of the
    record deleted.  Versions never repeat (a global revision in every
    backend), so a farm that sees its tree empty can tell this delete of
    the last object it held from a wiped tree (the failsafe): only the
    former leaves a deletion naming exactly that object at that version.
    """

    id = attr.ib(validator=_segment("id"))
    version = attr.ib(validator=_count("version"))
    FIELDS = ("id", "version")

    @classmethod
    def fromEntry(cls, key, entry):
        """@raise CorruptRecord: for anything but a deletion's JSON."""
        return _load(cls, key, entry, cls.FIELDS, cls.FIELDS)

    def toBytes(self):
        return _dump(self, self.FIELDS)

    def names(self, objects):
        """
        @param objects: C{{id: version}} of the objects a farm last saw.
        @return: whether they are exactly this deleted object.
        """
        return objects == {self.id: self.version}
