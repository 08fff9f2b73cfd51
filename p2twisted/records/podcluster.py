# -*- test-case-name: tests.test_orchestrate_podcluster -*-
"""
The pod cluster record (C{pod_clusters/<id>}): a named group of pods -- P2's
C{(pod_id, availability_zone, cluster_name)}, unique together -- whose
membership the pod-cluster farm hands to its syncers (a load balancer, a
service-discovery file).

The triple's uniqueness is kept by a create-only index key,
C{pod_cluster_names/<pod_id>/<az>/<cluster_name>} holding the id, created in
the same transaction as the record (P2 took a lock, then looked: two
creators racing between its look and its write both won).
"""

import json

import attr

from p2twisted.errors import SelectorError, UsageError
from p2twisted.labels import parseSelector
from p2twisted.records.base import CorruptRecord, loadObject
from p2twisted.records.controllers import _segment
from p2twisted.store import keys

#: The pod labels the default selector of a pod cluster matches.
POD_ID_LABEL = "pod_id"
AZ_LABEL = "availability_zone"
CLUSTER_NAME_LABEL = "cluster_name"


#: The annotation giving the members' port.
PORT_ANNOTATION = "port"


def defaultSelector(podId, availabilityZone, clusterName):
    """
    @return: the selector text matching the pods labelled with the triple.
    """
    return "%s=%s,%s=%s,%s=%s" % (POD_ID_LABEL, podId, AZ_LABEL, availabilityZone,
                                  CLUSTER_NAME_LABEL, clusterName)


def defaultId(podId, availabilityZone, clusterName):
    """@return: the id a pod cluster gets when none is given."""
    return "%s-%s-%s" % (podId, availabilityZone, clusterName)


@attr.s(frozen=True)
class PodCluster(object):
    """
    @ivar id: its id (the key's last segment).
    @ivar pod_id: the id of its pods.
    @ivar availability_zone: where its pods run (a name p2 only groups by).
    @ivar cluster_name: its name, unique for one pod id and zone.
    @ivar pod_selector: selector text over pod labels; C{None} gives
        L{defaultSelector} of the triple.
    @ivar annotations: free-form JSON for the syncers (e.g. C{port},
        C{haproxy_backend}).
    """

    id = attr.ib(validator=_segment("pod cluster id"))
    pod_id = attr.ib(validator=_segment("pod_id"))
    availability_zone = attr.ib(validator=_segment("availability_zone"))
    cluster_name = attr.ib(validator=_segment("cluster_name"))
    pod_selector = attr.ib(default=None)
    annotations = attr.ib(factory=dict, hash=False)

    FIELDS = ("id", "pod_id", "availability_zone", "cluster_name", "pod_selector",
              "annotations")

    def __attrs_post_init__(self):
        if self.pod_selector is None:
            object.__setattr__(self, "pod_selector", defaultSelector(
                self.pod_id, self.availability_zone, self.cluster_name))
        if not isinstance(self.pod_selector, str):
            raise UsageError("pod_selector must be text, got %r" % (self.pod_selector,))
        parseSelector(self.pod_selector)
        if not isinstance(self.annotations, dict):
            raise UsageError("annotations must be a JSON object, got %r" % (self.annotations,))
        if self.id.startswith("."):
            # The syncers' files are named by the id, and HAProxy skips
            # hidden files of its directories.
            raise UsageError("pod cluster id %r must not begin with '.'" % (self.id,))
        self.port()

    def port(self):
        """
        @return: the C{port} annotation as a number, or C{None} when there
            is none (the members' manifests give theirs).
        @raise UsageError: for one that is no port number.
        """
        port = self.annotations.get(PORT_ANNOTATION)
        if port is None:
            return None
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise UsageError("annotation %s must be a port number (1-65535), got %r"
                             % (PORT_ANNOTATION, port))
        return port

    @property
    def key(self):
        return keys.podCluster(self.id)

    @property
    def nameKey(self):
        """The create-only index key of its triple."""
        return keys.podClusterName(self.pod_id, self.availability_zone, self.cluster_name)

    def selector(self):
        """@return: the L{labels.Selector} of C{pod_selector}."""
        return parseSelector(self.pod_selector)

    def withSelector(self, text):
        return attr.evolve(self, pod_selector=text)

    def withAnnotations(self, annotations):
        return attr.evolve(self, annotations=annotations)

    def toDict(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def fromEntry(cls, key, entry):
        """
        @raise CorruptRecord: for anything but a valid pod cluster's JSON,
            or one whose id is not its key's.
        """
        data = loadObject(key, entry.value)
        missing = [n for n in ("pod_id", "availability_zone", "cluster_name", "pod_selector")
                   if n not in data]
        if missing:
            raise CorruptRecord(key, "required field(s) missing: %s" % (", ".join(missing),))
        keyId = keys.parse(key)[-1]
        try:
            record = cls(**dict({n: data[n] for n in cls.FIELDS if n in data}, id=keyId))
        except (UsageError, SelectorError, TypeError) as e:
            raise CorruptRecord(key, str(e))
        if data.get("id", keyId) != keyId:
            raise CorruptRecord(key, "its id %r is not the key's" % (data.get("id"),))
        return record

    def toBytes(self):
        return json.dumps(self.toDict(), sort_keys=True, separators=(",", ":")).encode("utf-8")


#: A syncer's states in its status.
SYNCED, HELD, FAILED, ERROR = "synced", "held", "failed", "error"


@attr.s(frozen=True)
class SyncerStatus(object):
    """
    C{status/pod_clusters/<id>/<syncer>}: what the pc farm last did with a
    pod cluster for one syncer.

    @ivar state: L{SYNCED}, L{HELD} (the failsafe holds a sudden drop),
        L{FAILED} (the last sync failed; retried) or L{ERROR} (the record is
        unreadable).
    @ivar synced: the healthy addresses last synced, or C{None}.
    @ivar held: the addresses the failsafe holds back, or C{None}.
    @ivar members: how many members the last read found; C{healthy}: how
        many of them with an address are healthy.
    """

    state = attr.ib()
    reason = attr.ib(default=None)
    synced = attr.ib(default=None)
    held = attr.ib(default=None)
    members = attr.ib(default=None)
    healthy = attr.ib(default=None)
    error = attr.ib(default=None)
    attempts = attr.ib(default=None)
    since = attr.ib(default=None)
    holder = attr.ib(default=None)

    FIELDS = ("state", "reason", "synced", "held", "members", "healthy", "error", "attempts",
              "since", "holder")

    @classmethod
    def fromEntry(cls, key, entry):
        """
        @raise CorruptRecord: naming C{key}, for anything but a status.
        """
        data = loadObject(key, entry.value)
        if not isinstance(data.get("state"), str):
            raise CorruptRecord(key, "'state' is missing")
        for name in ("synced", "held"):
            value = data.get(name)
            if value is not None and not (isinstance(value, list) and all(
                    isinstance(a, str) for a in value)):
                raise CorruptRecord(key, "%r is %r, not a list of addresses" % (name, value))
        return cls(**{name: data.get(name) for name in cls.FIELDS})

    def toDict(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    def toBytes(self):
        return json.dumps(self.toDict(), sort_keys=True, separators=(",", ":")).encode("utf-8")
