# -*- test-case-name: tests.test_orchestrate_plan -*-
"""
An immutable view of the store that orchestration decides over.

STAND-IN: the minimal subset of /work/FLEET.md's C{Snapshot} API that the
orchestration logic uses, written so it can be tested before the read-model
branch lands; that branch's C{snapshot.py} replaces this file at merge.
"""

import attr
from twisted.internet import defer

from p2twisted.labels import Selector, decodeLabels, parseSelector
from p2twisted.manifest import ManifestError, parseManifest
from p2twisted.store import keys
from p2twisted.store.common import jsonRecord

TREES = (keys.INTENT, keys.REALITY, keys.MACHINES, keys.LABELS, keys.HEALTH,
         keys.REPLICATION_CONTROLLERS, keys.ROLLS)


@attr.s(frozen=True)
class _Health(object):
    pod_id = attr.ib()
    node = attr.ib()
    status = attr.ib()
    output = attr.ib(default="")
    time = attr.ib(default=None)
    sha = attr.ib(default=None)


def _sha(entry):
    if entry is None:
        return None
    try:
        return parseManifest(entry.value).sha()
    except ManifestError:
        return None


class Snapshot(object):
    """
    The store's entries under L{TREES} at one moment, with queries.
    """

    def __init__(self, entries):
        self.entries = dict(entries)
        self._shas = {}
        self._byTree = {}
        for key in sorted(self.entries):
            self._byTree.setdefault(keys.parse(key)[0], []).append(key)

    @classmethod
    def fromEntries(cls, entries):
        return cls(entries)

    @classmethod
    def read(cls, store):
        """
        @return: L{Deferred} firing with a L{Snapshot} of C{store}.
        """
        d = defer.gatherResults([store.list(tree) for tree in TREES], consumeErrors=True)

        def build(listings):
            entries = {}
            for listing in listings:
                entries.update(listing)
            return cls(entries)
        return d.addCallback(build)

    def _tree(self, name):
        return self._byTree.get(name, [])

    def version(self, key):
        entry = self.entries.get(key)
        return None if entry is None else entry.version

    # nodes

    def nodes(self):
        found = set()
        for key in self._tree(keys.INTENT) + self._tree(keys.MACHINES):
            found.add(keys.parse(key)[1])
        for key in self._tree(keys.LABELS):
            parts = keys.parse(key)
            if parts[1] == "node" and len(parts) == 3:
                found.add(parts[2])
        return sorted(found)

    def nodeLabels(self, node):
        entry = self.entries.get(keys.label("node", node))
        return {} if entry is None else decodeLabels(entry)

    def eligible(self, selector):
        if not isinstance(selector, Selector):
            selector = parseSelector(selector)
        return [n for n in self.nodes() if selector.matches(self.nodeLabels(n))]

    def agentUp(self, node):
        return keys.machine(node) in self.entries

    # pods

    def marker(self, node):
        return self.entries.get(keys.intentNode(node))

    def intent(self, node, podId):
        return self.entries.get(keys.intent(node, podId))

    def reality(self, node, podId):
        return self.entries.get(keys.reality(node, podId))

    def _cachedSha(self, key):
        if key not in self._shas:
            self._shas[key] = _sha(self.entries.get(key))
        return self._shas[key]

    def intentSha(self, node, podId):
        return self._cachedSha(keys.intent(node, podId))

    def realitySha(self, node, podId):
        return self._cachedSha(keys.reality(node, podId))

    def podsOnNode(self, node):
        prefix = keys.intentNode(node)
        return sorted(keys.child(prefix, k) for k in self.entries
                      if k.startswith(prefix + "/"))

    def podLabels(self, node, podId):
        entry = self.entries.get(keys.label("pod", "%s/%s" % (node, podId)))
        return {} if entry is None else decodeLabels(entry)

    def podLabelsVersion(self, node, podId):
        return self.version(keys.label("pod", "%s/%s" % (node, podId)))

    def podsOf(self, rcId):
        found = []
        for key in self._tree(keys.LABELS):
            parts = keys.parse(key)
            if parts[1] == "pod" and len(parts) == 4:
                if decodeLabels(self.entries[key]).get("replication_controller_id") == rcId:
                    found.append((parts[2], parts[3]))
        return sorted(found)

    def health(self, podId, node):
        entry = self.entries.get(keys.health(podId, node))
        record = None if entry is None else jsonRecord(entry.value)
        if record is None:
            return None
        return _Health(podId, node, record.get("status"), record.get("output", ""),
                       record.get("time"), record.get("sha"))

    # controllers

    def rc(self, rcId):
        from p2twisted.records import ReplicationController
        key = keys.replicationController(rcId)
        entry = self.entries.get(key)
        return None if entry is None else ReplicationController.fromEntry(key, entry)

    def rcs(self):
        return {keys.parse(k)[1]: self.rc(keys.parse(k)[1])
                for k in self._tree(keys.REPLICATION_CONTROLLERS)}

    def roll(self, rollId):
        from p2twisted.records import Roll
        key = keys.roll(rollId)
        entry = self.entries.get(key)
        return None if entry is None else Roll.fromEntry(key, entry)

    def rolls(self):
        return {keys.parse(k)[1]: self.roll(keys.parse(k)[1]) for k in self._tree(keys.ROLLS)}
