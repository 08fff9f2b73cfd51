# -*- test-case-name: tests.test_keys -*-
"""
The keyspace: the only module that builds or parses store key strings.

Everything else asks here for a key (C{keys.intent(node, pod)}) or for the
parts of one (C{keys.parse(key)}).  The layout is DESIGN.md's table.
"""

import functools

from p2twisted.errors import InvalidKey
from p2twisted.store.common import checkKey

INTENT = "intent"
REALITY = "reality"
MACHINES = "machines"
LABELS = "labels"
SERVICES = "services"
REPLICATION_CONTROLLERS = "replication_controllers"
ROLLS = "rolls"
DAEMON_SETS = "daemon_sets"
POD_CLUSTERS = "pod_clusters"
POD_CLUSTER_NAMES = "pod_cluster_names"
HOOKS = "hooks"
HEALTH = "health"
STATUS = "status"
LOCKS = "locks"
AUDIT = "audit"
REQUESTS = "requests"
CONFIRMATIONS = "confirmations"

#: The top-level trees, in the order C{p2 init} shows them.
TREES = (INTENT, REALITY, MACHINES, LABELS, SERVICES, REPLICATION_CONTROLLERS, ROLLS,
         DAEMON_SETS, POD_CLUSTERS, POD_CLUSTER_NAMES, HOOKS, HEALTH, STATUS, LOCKS, AUDIT,
         REQUESTS, CONFIRMATIONS)

#: Label types and how many key segments their ids have.
LABEL_TYPES = {
    "node": 1,
    "pod": 2,  # <node>/<pod_id>
    "replication_controller": 1,
    "daemon_set": 1,
    "pod_cluster": 1,
    "roll": 1,
}

#: The key marking the namespace as initialised by C{p2 init}.
NAMESPACE_MARKER = "p2"


def _join(*parts):
    return checkKey("/".join(parts))


def _names(*parts):
    """
    Join a tree and names that are one segment each (a node, a pod id, an
    event): C{intent/<node>/<pod_id>} names exactly one pod, never a key
    below another's.
    """
    for part in parts[1:]:
        if "/" in part:
            raise InvalidKey("/".join(parts), None, "%r must be one key segment, without '/'"
                             % (part,))
    return _join(*parts)


def intentNode(node):
    """The node marker: the agent acts on intent only while it exists."""
    return _names(INTENT, node)


def intent(node, podId):
    return _names(INTENT, node, podId)


def realityNode(node):
    return _names(REALITY, node)


def reality(node, podId):
    return _names(REALITY, node, podId)


def machine(node):
    return _names(MACHINES, node)


def labelTree(labelType):
    checkLabelType(labelType)
    return _join(LABELS, labelType)


def label(labelType, objectId):
    """
    @param objectId: the object's id; for pods C{"<node>/<pod_id>"}.
    """
    checkLabelType(labelType)
    key = _join(LABELS, labelType, objectId)
    if len(objectId.split("/")) != LABEL_TYPES[labelType]:
        raise InvalidKey(key, None, "a %s label id has %d part(s) separated by '/', got %r"
                         % (labelType, LABEL_TYPES[labelType], objectId))
    return key


def labelId(key):
    """
    @return: C{(labelType, objectId)} of a label key.
    """
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != LABELS:
        raise InvalidKey(key, None, "not a label key")
    return parts[1], "/".join(parts[2:])


def checkLabelType(labelType):
    if labelType not in LABEL_TYPES:
        raise InvalidKey(None, None, "unknown label type %r; expected one of %s"
                         % (labelType, ", ".join(sorted(LABEL_TYPES))))
    return labelType


def service(name):
    return _join(SERVICES, name)


def replicationController(rcId):
    return _join(REPLICATION_CONTROLLERS, rcId)


def roll(newRcId):
    return _join(ROLLS, newRcId)


def daemonSet(dsId):
    return _join(DAEMON_SETS, dsId)


def podCluster(pcId):
    return _join(POD_CLUSTERS, pcId)


def podClusterName(podId, availabilityZone, clusterName):
    """
    C{pod_cluster_names/<pod_id>/<availability_zone>/<cluster_name>}: the
    create-only index key holding the id of the one pod cluster of that
    triple, created in the transaction creating the cluster (so two creates
    racing for one triple cannot both succeed).
    """
    return _names(POD_CLUSTER_NAMES, podId, availabilityZone, clusterName)


def hook(event, podId):
    return _names(HOOKS, event, podId)


def health(podId, node):
    return _names(HEALTH, podId, node)


def status(kind, *ids):
    """C{status/<kind>/<id...>}, e.g. C{status("pods", node, podId)}."""
    return _names(STATUS, kind, *ids)


def deleted(tree):
    """
    C{status/deleted/<tree>}: the object of C{tree} a person deleted last,
    written in the delete's own transaction (see
    L{p2twisted.records.controllers.Deletion}).
    """
    return _join(STATUS, "deleted", tree)


def lock(kind, objectId):
    return _join(LOCKS, kind, objectId)


def lockTree(kind):
    """C{locks/<kind>}: every lock of one kind (a farm watches it to take over)."""
    return _names(LOCKS, kind)


def audit(stamp, unique):
    """C{audit/<time>-<uuid>}; C{stamp} should sort by time (e.g. 20261122T010203.123456Z)."""
    return _join(AUDIT, "%s-%s" % (stamp, unique))


def requestNode(node):
    """C{requests/<node>}: the requests (tasks, log reads) to C{node}'s agent."""
    return _join(REQUESTS, node)


def request(node, requestId):
    return _join(REQUESTS, node, requestId)


def confirmation(node):
    """
    C{confirmations/<node>}: a person's go-ahead (C{p2 node confirm}) for the
    removals C{node}'s agent holds back under a new node marker.
    """
    return _join(CONFIRMATIONS, node)


def tree(name):
    """The key of a top-level tree (for listing it)."""
    if name not in TREES:
        raise InvalidKey(name, None, "unknown tree; expected one of %s" % (", ".join(TREES),))
    return name


def parse(key):
    """
    @return: the key's segments, as a tuple (remembered: snapshots parse the
        same keys again and again).
    @raise InvalidKey: for an invalid key (a key that is not text, such as a
        list, is refused before the cache, which would fail to hash it).
    """
    if not isinstance(key, str):
        checkKey(key)
    return _parse(key)


@functools.lru_cache(maxsize=16384)
def _parse(key):
    return tuple(checkKey(key).split("/"))


def child(prefix, key):
    """
    @return: the first segment of C{key} below C{prefix}, e.g.
        C{child("intent/n1", "intent/n1/web")} is C{"web"}; C{None} for
        C{prefix} itself.
    """
    if key == prefix:
        return None
    rest = key[len(prefix) + 1:] if prefix else key
    return rest.split("/", 1)[0]
