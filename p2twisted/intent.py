# -*- test-case-name: tests.test_intent -*-
"""
Writing intent: which pod manifest should run on which node.

A scheduler writes the node marker C{intent/<node>} in the same transaction
as the first pod it schedules there, and never removes it: an agent acts on
an intent listing only while the marker exists, so a wiped or mistyped store
uninstalls nothing (DESIGN.md, "The node-marker failsafe").
"""

from twisted.internet import defer

from p2twisted.errors import KeyExists, VersionConflict
from p2twisted.records import NodeMarker
from p2twisted.store import keys
from p2twisted.store.common import Check, Create, Delete, Put

#: How often a scheduling transaction is retried when it races another writer.
RETRIES = 10


def nodeMarker(node, now=None):
    """
    @return: the bytes of the node marker for C{node}.
    """
    return NodeMarker.new(node, now).toBytes()


@defer.inlineCallbacks
def schedule(store, node, manifest, extra=lambda: []):
    """
    Write C{manifest}'s original bytes to C{intent/<node>/<pod_id>}, creating
    the node marker in the same transaction when it is absent.

    @param manifest: a parsed L{p2twisted.manifest.PodManifest}.
    @param extra: a callable giving more ops for the same transaction (an
        audit record), called for each try.
    @return: L{Deferred} firing with the written L{Entry}.
    """
    markerKey = keys.intentNode(node)
    podKey = keys.intent(node, manifest.id)
    for attempt in range(RETRIES):
        marker = yield store.get(markerKey)
        if marker is None:
            ops = [Create(markerKey, nodeMarker(node)), Put(podKey, manifest.raw)]
        else:
            ops = [Check(markerKey, marker.version), Put(podKey, manifest.raw)]
        ops += extra()
        try:
            results = yield store.transaction(ops)
        except (KeyExists, VersionConflict):
            continue
        return results[1]
    raise VersionConflict(markerKey, store.backend,
                          "gave up scheduling after %d conflicting writes" % (RETRIES,))


@defer.inlineCallbacks
def unschedule(store, node, podId):
    """
    Remove C{podId} from C{node}'s intent; the node marker stays.

    @return: L{Deferred} firing with C{True} if the pod was scheduled there.
    """
    deleted = yield store.transaction([Delete(keys.intent(node, podId))])
    return deleted[0]


@defer.inlineCallbacks
def listIntent(store, node):
    """
    @return: L{Deferred} firing with C{(marker, {pod_id: Entry})}; C{marker}
        is the marker's L{Entry} or C{None}.
    """
    prefix = keys.intentNode(node)
    entries = yield store.list(prefix)
    pods = {keys.child(prefix, k): e for k, e in entries.items() if k != prefix}
    return entries.get(prefix), pods
