# -*- test-case-name: tests.test_snapshot -*-
"""
A L{Snapshot}: the store as read by a few C{list()} calls, indexed and
answered through typed records -- the one read model of the CLI and the
orchestrators.  Every query is pure and returns sorted results.

The node universe (DESIGN.md): every node the store knows -- holding a node
marker C{intent/<node>}, present in C{machines/}, or labelled at
C{labels/node/<node>} -- labelled or not, so the empty selector and
C{!tier} match unlabelled nodes (Kubernetes' semantics).
"""

import functools
import types

from twisted.internet import defer
from twisted.logger import Logger

from p2twisted import records
from p2twisted.labels import decodeLabels, parseSelector
from p2twisted.store import keys

log = Logger()

#: The trees L{Snapshot.read} lists by default.
TREES = (keys.INTENT, keys.REALITY, keys.MACHINES, keys.LABELS, keys.HEALTH,
         keys.REPLICATION_CONTROLLERS, keys.ROLLS)

#: The SHA queries' answer for an entry that is not a valid manifest.
INVALID = "invalid"


def _firstError(failure):
    failure.trap(defer.FirstError)
    return failure.value.subFailure


@functools.lru_cache(maxsize=128)
def manifestSha(value):
    """
    @return: the canonical SHA of the manifest in the bytes C{value}, or
        L{INVALID}.  Remembered for the last few values: the pods of one
        controller share their manifest, and a farm reads it again at every
        look.
    """
    from p2twisted.errors import P2Error
    from p2twisted.manifest import parseManifest
    try:
        return parseManifest(value).sha()
    except P2Error:
        return INVALID


def _controllers():
    """
    L{p2twisted.records.controllers}, imported when first asked about a
    controller or roll (the CLI's pod views need neither).
    """
    from p2twisted.records import controllers
    return controllers


def _daemonsets():
    """L{p2twisted.records.daemonset}, imported when first asked about one."""
    from p2twisted.records import daemonset
    return daemonset


_NODE_LABELS, _POD_LABELS = keys.labelTree("node"), keys.labelTree("pod")

#: The indexes each tree's entries fill (a tree a watch delivers; see
#: L{Snapshot}'s C{trees}).
_INDEXES = {
    keys.INTENT: ("_markers", "_intent"),
    keys.REALITY: ("_reality",),
    keys.MACHINES: ("_machines",),
    _NODE_LABELS: ("_nodeLabels",),
    _POD_LABELS: ("_podLabels",),
    keys.HEALTH: ("_health",),
    keys.REPLICATION_CONTROLLERS: ("_rcs",),
    keys.ROLLS: ("_rolls",),
    keys.DAEMON_SETS: ("_dss",),
    keys.POD_CLUSTERS: ("_podClusters",),
}


def _overlap(tree, other):
    """@return: whether one of the trees C{tree} and C{other} holds the other."""
    if other is None:
        return True
    return tree.startswith(other + "/") or other.startswith(tree + "/")


class Snapshot(object):
    """
    An immutable view of some trees of the store.

    @ivar entries: C{{key: Entry}} of everything read (read-only).
    """

    def __init__(self, entries, previous=None, trees=None, changed=None):
        """
        @param previous: an earlier L{Snapshot} (of watches that delivered
            these entries since): what it decoded of entries that did not
            change is taken over, not done again.
        @param trees: C{{tree: {key: Entry}}}, the entries as the watches of
            those trees delivered them (C{entries} is then their union); with
            C{changed}, the trees of C{previous} not in C{changed} keep its
            indexes as they are.
        @param changed: the trees delivered since C{previous}, or C{None}
            (all).
        """
        self.entries = types.MappingProxyType(dict(entries))
        self._markers, self._machines, self._nodeLabels = {}, {}, {}
        self._intent, self._reality = {}, {}
        self._podLabels, self._health = {}, {}
        self._rcs, self._rolls, self._dss = {}, {}, {}
        self._podClusters = {}
        self._podStatus, self._agentStatus = {}, {}
        self._shas = {}
        # Decoded once per snapshot: a decision asks about every pod's labels
        # and health several times over (it is immutable, so they stay true).
        self._labels, self._healthRecords, self._byRC = {}, {}, None
        self._byDS = None
        if trees is None:
            trees = {None: self.entries}
        #: C{{tree: {key: parts}}}: the keys of each tree, parsed.
        self._parsed = {}
        kept = set()
        if previous is not None and changed is not None:
            # A tree another one overlaps is indexed again: that one's
            # entries go into the same index, which is the earlier
            # snapshot's when kept.
            kept = {tree for tree in trees
                    if tree not in changed and tree in previous._parsed and tree in _INDEXES
                    and not any(_overlap(tree, other) for other in trees if other != tree)}
        for tree, found in trees.items():
            if tree in kept:
                self._parsed[tree] = previous._parsed[tree]
                for name in _INDEXES[tree]:
                    setattr(self, name, getattr(previous, name))
                continue
            before = {} if previous is None else previous._parsed.get(tree, {})
            parsed = self._parsed[tree] = {}
            for key in found:
                parts = before.get(key)
                if parts is None:
                    parts = keys.parse(key)
                parsed[key] = parts
                # The entry of C{entries}: of overlapping trees, the one
                # there, whichever tree comes last here.
                self._index(parts, self.entries[key])
        if previous is not None:
            self._inherit(previous, kept)

    def _inherit(self, previous, kept):
        """
        Take over C{previous}'s decoded labels, health, SHAs and owners of
        the entries that are the same here (all of those of the C{kept}
        trees).
        """
        def same(key):
            old, new = previous.entries.get(key), self.entries.get(key)
            return old is not None and new is not None and (
                old is new or (old.version == new.version and old.value == new.value))

        def carried(cache, trees):
            if trees <= kept:
                return dict(cache)
            return {k: v for k, v in cache.items() if same(k)}
        self._labels = carried(previous._labels, {_NODE_LABELS, _POD_LABELS})
        self._shas = carried(previous._shas, {keys.INTENT, keys.REALITY})
        if keys.HEALTH in kept:
            self._healthRecords = dict(previous._healthRecords)
        else:
            for pair, record in previous._healthRecords.items():
                entry = previous._health.get(pair)
                if entry is not None and same(entry.key):
                    self._healthRecords[pair] = record
        if _POD_LABELS in kept:
            self._byRC, self._byDS = previous._byRC, previous._byDS

    def _index(self, parts, entry):
        tree, n = parts[0], len(parts)
        if tree == keys.INTENT:
            if n == 2:
                self._markers[parts[1]] = entry
            elif n == 3:
                self._intent.setdefault(parts[1], {})[parts[2]] = entry
        elif tree == keys.REALITY and n == 3:
            self._reality.setdefault(parts[1], {})[parts[2]] = entry
        elif tree == keys.MACHINES and n == 2:
            self._machines[parts[1]] = entry
        elif tree == keys.LABELS and n == 3 and parts[1] == "node":
            self._nodeLabels[parts[2]] = entry
        elif tree == keys.LABELS and n == 4 and parts[1] == "pod":
            self._podLabels[(parts[2], parts[3])] = entry
        elif tree == keys.HEALTH and n == 3:
            self._health[(parts[1], parts[2])] = entry
        elif tree == keys.REPLICATION_CONTROLLERS and n == 2:
            self._rcs[parts[1]] = entry
        elif tree == keys.ROLLS and n == 2:
            self._rolls[parts[1]] = entry
        elif tree == keys.DAEMON_SETS and n == 2:
            self._dss[parts[1]] = entry
        elif tree == keys.POD_CLUSTERS and n == 2:
            self._podClusters[parts[1]] = entry
        elif tree == keys.STATUS and n == 4 and parts[1] == "pods":
            self._podStatus[(parts[2], parts[3])] = entry
        elif tree == keys.STATUS and n == 3 and parts[1] == "agents":
            self._agentStatus[parts[2]] = entry

    # -- building ------------------------------------------------------------

    @classmethod
    def fromEntries(cls, entries):
        """
        @param entries: C{{key: Entry}}, e.g. what C{store.list()} gave.
        @return: the L{Snapshot} of C{entries}.
        """
        return cls(entries)

    @classmethod
    def read(cls, store, trees=TREES):
        """
        List C{trees} (store prefixes; default L{TREES}) at once, one
        C{list()} each.

        @return: L{Deferred} firing with the L{Snapshot}; fails with the
            store's error if a listing fails.
        """
        d = defer.gatherResults([store.list(tree) for tree in trees], consumeErrors=True)

        def merge(listings):
            entries = {}
            for listing in listings:
                entries.update(listing)
            return cls(entries)
        return d.addCallbacks(merge, _firstError)

    # -- nodes ---------------------------------------------------------------

    def nodes(self):
        """
        @return: the node universe, sorted: nodes with a marker, a present
            agent or labels.
        """
        return sorted(set(self._markers) | set(self._machines) | set(self._nodeLabels))

    def nodeLabels(self, node):
        """
        @return: C{node}'s labels (C{{}} without any).
        @raise records.CorruptRecord: when its label entry is unreadable.
        """
        return self._decodedLabels(self._nodeLabels.get(node))

    def _decodedLabels(self, entry):
        """
        @return: a copy of the labels in C{entry} (C{{}} for C{None}),
            decoded once.
        @raise records.CorruptRecord: when unreadable (not remembered).
        """
        if entry is None:
            return {}
        labels = self._labels.get(entry.key)
        if labels is None:
            labels = self._labels[entry.key] = decodeLabels(entry)
        return dict(labels)

    def eligible(self, selector):
        """
        @param selector: a L{p2twisted.labels.Selector} or its text.
        @return: the nodes of the universe whose labels match C{selector},
            sorted.  A node whose labels are unreadable matches nothing.
        @raise SelectorError: for a malformed selector text.
        """
        if isinstance(selector, str):
            selector = parseSelector(selector)
        found = []
        for node in self.nodes():
            try:
                labels = self.nodeLabels(node)
            except records.CorruptRecord as e:
                log.warn("node {node} matches no selector: {error}", node=node, error=str(e))
                continue
            if selector.matches(labels):
                found.append(node)
        return found

    def marker(self, node):
        """@return: the node marker's L{Entry}, or C{None}."""
        return self._markers.get(node)

    def agentUp(self, node):
        """@return: whether C{node}'s agent is present (C{machines/<node>})."""
        return node in self._machines

    def machineFacts(self, node):
        """
        @return: the L{records.MachineFacts} of C{node}'s agent, or C{None}
            when it is absent.
        @raise records.CorruptRecord: when unreadable.
        """
        entry = self._machines.get(node)
        return None if entry is None else records.MachineFacts.fromEntry(entry.key, entry)

    def agentStatus(self, node):
        """
        @return: the L{records.AgentStatus} of C{node}, or C{None} when absent
            or not read (C{status/agents} is not among the default trees).
        @raise records.CorruptRecord: when unreadable.
        """
        entry = self._agentStatus.get(node)
        return None if entry is None else records.AgentStatus.fromEntry(entry.key, entry)

    def agentStatusNodes(self):
        """@return: the nodes whose agent status was read, sorted."""
        return sorted(self._agentStatus)

    # -- pods ----------------------------------------------------------------

    def intent(self, node, podId):
        """@return: the L{Entry} of C{intent/<node>/<podId>}, or C{None}."""
        return self._intent.get(node, {}).get(podId)

    def reality(self, node, podId):
        """@return: the L{Entry} of C{reality/<node>/<podId>}, or C{None}."""
        return self._reality.get(node, {}).get(podId)

    def _sha(self, entry):
        if entry is None:
            return None
        if entry.key not in self._shas:
            self._shas[entry.key] = manifestSha(entry.value)
        return self._shas[entry.key]

    def intentSha(self, node, podId):
        """
        @return: the canonical SHA of the manifest in C{node}'s intent for
            C{podId}, L{INVALID} when it is not a valid manifest, or C{None}
            when there is none.
        """
        return self._sha(self.intent(node, podId))

    def realitySha(self, node, podId):
        """
        @return: like L{intentSha}, of the manifest in reality.
        """
        return self._sha(self.reality(node, podId))

    def podsOnNode(self, node):
        """@return: the pods in C{node}'s intent, sorted."""
        return sorted(self._intent.get(node, ()))

    def podsInReality(self, node):
        """@return: the pods in C{node}'s reality, sorted."""
        return sorted(self._reality.get(node, ()))

    def deployedTo(self, podId):
        """
        @return: the nodes whose intent has C{podId}, sorted.
        """
        return sorted(node for node, pods in self._intent.items() if podId in pods)

    def intentNodes(self):
        """
        @return: the nodes with a marker or pods in intent, sorted (a node
            with pods but no marker is not in the universe: its agent acts
            on nothing).
        """
        return sorted(set(self._markers) | set(self._intent))

    def pods(self):
        """
        @return: every C{(node, podId)} with intent, reality, health or a
            status, sorted.
        """
        found = {(node, podId) for tree in (self._intent, self._reality)
                 for node, pods in tree.items() for podId in pods}
        found.update((node, podId) for podId, node in self._health)
        found.update(self._podStatus)
        return sorted(found)

    def has(self, key):
        """@return: whether C{key} was read (present)."""
        return key in self.entries

    def podLabels(self, node, podId):
        """
        @return: the labels of pod C{podId} on C{node} (C{{}} without any).
        @raise records.CorruptRecord: when its label entry is unreadable.
        """
        return self._decodedLabels(self._podLabels.get((node, podId)))

    def podLabelsVersion(self, node, podId):
        """@return: the version of the pod's label entry, or C{None}."""
        entry = self._podLabels.get((node, podId))
        return None if entry is None else entry.version

    def podsOf(self, rcId):
        """
        @return: C{[(node, podId)]}, sorted, of the pods whose labels say
            they belong to replication controller C{rcId}.  Pods with
            unreadable labels belong to none.
        """
        if self._byRC is None:
            label = _controllers().RC_ID_LABEL
            self._byRC = {}
            for node, podId in sorted(self._podLabels):
                try:
                    owner = self.podLabels(node, podId).get(label)
                except records.CorruptRecord:
                    continue
                self._byRC.setdefault(owner, []).append((node, podId))
        return list(self._byRC.get(rcId, ()))

    def podsOfDaemonSet(self, dsId):
        """
        @return: C{[(node, podId)]}, sorted, of the pods whose labels say
            they belong to daemon set C{dsId} (C{daemon_set_id}).  Pods with
            unreadable labels belong to none.
        """
        if self._byDS is None:
            self._byDS = self._owners(_daemonsets().DS_ID_LABEL)
        return list(self._byDS.get(dsId, ()))

    def daemonSetOwners(self):
        """
        @return: the daemon set ids some pod's labels name, sorted (the
            records of some may be gone); an empty label names none (a pod
            disowned by hand: C{daemon_set_id=}).
        """
        self.podsOfDaemonSet(None)
        return sorted(k for k in self._byDS if k)

    def _owners(self, label):
        found = {}
        for node, podId in sorted(self._podLabels):
            try:
                owner = self.podLabels(node, podId).get(label)
            except records.CorruptRecord:
                continue
            found.setdefault(owner, []).append((node, podId))
        return found

    def health(self, podId, node):
        """
        @return: the L{records.Health} of C{podId} on C{node}, or C{None}
            when there is none or it is unreadable (never healthy).
        """
        if (podId, node) not in self._healthRecords:
            self._healthRecords[podId, node] = records.readable(
                records.Health, self._health.get((podId, node)))
        return self._healthRecords[podId, node]

    def podStatus(self, node, podId):
        """
        @return: the L{records.PodStatus} of C{podId} on C{node}, or C{None}
            when absent or not read (C{status/pods} is not among the default
            trees).
        @raise records.CorruptRecord: when unreadable.
        """
        entry = self._podStatus.get((node, podId))
        return None if entry is None else records.PodStatus.fromEntry(entry.key, entry)

    # -- controllers ---------------------------------------------------------

    def rc(self, rcId):
        """
        @return: the replication controller C{rcId}, or C{None}.
        @raise records.CorruptRecord: when its record is unreadable.
        """
        return self._one(self._rcs, rcId, _controllers().ReplicationController)

    def rcs(self):
        """
        @return: C{{id: ReplicationController}} of the readable records (an
            unreadable one is logged; L{rc} raises its error).
        """
        return self._all(self._rcs, _controllers().ReplicationController)

    def roll(self, rollId):
        """
        @return: the rolling update C{rollId} (its new RC's id), or C{None}.
        @raise records.CorruptRecord: when its record is unreadable.
        """
        return self._one(self._rolls, rollId, _controllers().Roll)

    def rolls(self):
        """
        @return: C{{id: Roll}} of the readable roll records.
        """
        return self._all(self._rolls, _controllers().Roll)

    def daemonSet(self, dsId):
        """
        @return: the daemon set C{dsId}, or C{None}.
        @raise records.CorruptRecord: when its record is unreadable.
        """
        return self._one(self._dss, dsId, _daemonsets().DaemonSet)

    def daemonSets(self):
        """
        @return: C{{id: DaemonSet}} of the readable daemon set records.
        """
        return self._all(self._dss, _daemonsets().DaemonSet)

    def daemonSetIds(self):
        """@return: the ids of every daemon set record read, readable or not."""
        return sorted(self._dss)

    def podCluster(self, pcId):
        """
        @return: the L{PodCluster} C{pcId}, or C{None} (C{pod_clusters} is not
            among the default trees).
        @raise records.CorruptRecord: when its record is unreadable.
        """
        from p2twisted.records.podcluster import PodCluster
        return self._one(self._podClusters, pcId, PodCluster)

    def podClusters(self):
        """
        @return: C{{id: PodCluster}} of the readable pod cluster records.
        """
        from p2twisted.records.podcluster import PodCluster
        return self._all(self._podClusters, PodCluster)

    def podsMatching(self, selector):
        """
        @param selector: a L{p2twisted.labels.Selector} or its text.
        @return: C{[(node, podId)]}, sorted, of the pods with intent whose
            pod labels match C{selector} (unlabelled pods have C{{}}).  Pods
            with unreadable labels match nothing.
        @raise SelectorError: for a malformed selector text.
        """
        if isinstance(selector, str):
            selector = parseSelector(selector)
        found = []
        for node, pods in sorted(self._intent.items()):
            for podId in sorted(pods):
                try:
                    labels = self.podLabels(node, podId)
                except records.CorruptRecord as e:
                    log.warn("pod {pod} on {node} matches no selector: {error}", pod=podId,
                             node=node, error=str(e))
                    continue
                if selector.matches(labels):
                    found.append((node, podId))
        return found

    def _one(self, found, objectId, recordType):
        entry = found.get(objectId)
        return None if entry is None else recordType.fromEntry(entry.key, entry)

    def _all(self, found, recordType):
        result = {}
        for objectId, entry in sorted(found.items()):
            try:
                result[objectId] = recordType.fromEntry(entry.key, entry)
            except records.CorruptRecord as e:
                log.warn("skipping {key}: {error}", key=entry.key, error=str(e))
        return result

    # -- versions ------------------------------------------------------------

    def version(self, key):
        """
        @return: the version of C{key} as read, or C{None} when it was absent
            (or in no tree read).
        """
        entry = self.entries.get(key)
        return None if entry is None else entry.version
