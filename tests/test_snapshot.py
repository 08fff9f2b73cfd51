"""
The read model's L{Snapshot}: built from a few C{list()} calls, answering
the node universe, selectors, pods, health and versions.
"""

import json

from twisted.internet import defer
from twisted.trial import unittest

from p2twisted import records
from p2twisted.errors import SelectorError
from p2twisted.labels import encodeLabels, parseSelector
from p2twisted.manifest import parseManifest
from p2twisted.orchestrate.snapshot import INVALID, TREES, Snapshot
from p2twisted.store import keys
from p2twisted.store.common import Entry, Put
from p2twisted.store.memory import MemoryStore

WEB = b"id: web\nlaunchables:\n  app:\n    launchable_type: hoist\n    location: file:///a_1.tar.gz\n"
WEB2 = WEB.replace(b"a_1", b"a_2")
SHA, SHA2 = parseManifest(WEB).sha(), parseManifest(WEB2).sha()


def marker(node):
    return records.NodeMarker.new(node, now=0).toBytes()


def health(status, sha):
    return json.dumps({"status": status, "output": "", "sha": sha, "time": 1.0}).encode()


#: A store: n1 (marker, labelled tier=web, runs web of rc1, agent up),
#: n2 (marker only: unlabelled), n3 (agent up only, labelled tier=db),
#: n4 (labels only), n5 (intent without a marker: not in the universe).
STORE = {
    keys.intentNode("n1"): marker("n1"),
    keys.intent("n1", "web"): WEB,
    keys.reality("n1", "web"): WEB2,
    keys.machine("n1"): b'{"node": "n1"}',
    keys.label("node", "n1"): encodeLabels({"tier": "web"}),
    keys.label("pod", "n1/web"): encodeLabels({"replication_controller_id": "rc1",
                                               "pod_id": "web"}),
    keys.health("web", "n1"): health("passing", SHA2),
    keys.intentNode("n2"): marker("n2"),
    keys.intent("n2", "db"): b"not: [a manifest",
    keys.label("pod", "n2/db"): encodeLabels({"replication_controller_id": "rc2"}),
    keys.health("db", "n2"): b"junk",
    keys.machine("n3"): b'{"node": "n3"}',
    keys.label("node", "n3"): encodeLabels({"tier": "db"}),
    keys.label("node", "n4"): encodeLabels({"tier": "web", "zone": "a"}),
    keys.intent("n5", "web"): WEB,
    keys.status("pods", "n1", "web"): json.dumps(
        {"pod": "web", "node": "n1", "state": "idle", "attempts": 0}).encode(),
    keys.status("agents", "n1"): json.dumps({"node": "n1", "connected": True}).encode(),
    keys.service("web"): b"{}",  # a tree the snapshot does not read
}

#: (query, arguments, answer)
QUERIES = [
    ("nodes", (), ["n1", "n2", "n3", "n4"]),
    ("eligible", ("",), ["n1", "n2", "n3", "n4"]),
    ("eligible", ("!tier",), ["n2"]),
    ("eligible", ("tier=web",), ["n1", "n4"]),
    ("eligible", ("tier!=web",), ["n2", "n3"]),
    ("eligible", (parseSelector("tier in (web,db),!zone"),), ["n1", "n3"]),
    ("nodeLabels", ("n1",), {"tier": "web"}),
    ("nodeLabels", ("n2",), {}),
    ("agentUp", ("n1",), True),
    ("agentUp", ("n2",), False),
    ("podsOnNode", ("n1",), ["web"]),
    ("podsOnNode", ("n3",), []),
    ("podsInReality", ("n1",), ["web"]),
    ("deployedTo", ("web",), ["n1", "n5"]),
    ("deployedTo", ("db",), ["n2"]),
    ("intentNodes", (), ["n1", "n2", "n5"]),
    ("pods", (), [("n1", "web"), ("n2", "db"), ("n5", "web")]),
    ("has", (keys.intent("n5", "web"),), True),
    ("has", (keys.intent("n4", "web"),), False),
    ("intentSha", ("n1", "web"), SHA),
    ("realitySha", ("n1", "web"), SHA2),
    ("intentSha", ("n2", "db"), INVALID),
    ("intentSha", ("n3", "web"), None),
    ("realitySha", ("n2", "db"), None),
    ("podLabels", ("n1", "web"), {"replication_controller_id": "rc1", "pod_id": "web"}),
    ("podLabels", ("n3", "web"), {}),
    ("podsOf", ("rc1",), [("n1", "web")]),
    ("podsOf", ("rc2",), [("n2", "db")]),
    ("podsOf", ("rc3",), []),
    ("health", ("web", "n1"), records.Health("web", "n1", "passing", "", 1.0, SHA2)),
    ("health", ("db", "n2"), None),  # unreadable: never healthy
    ("health", ("web", "n2"), None),
    ("version", (keys.service("web"),), None),
]


class CountingStore(object):
    """
    A store that counts the reads made through it.
    """

    def __init__(self, store):
        self.store = store
        self.lists = []
        self.gets = []

    def list(self, prefix):
        self.lists.append(prefix)
        return self.store.list(prefix)

    def get(self, key):
        self.gets.append(key)
        return self.store.get(key)


NODES, PODS, RCS = ("n1", "n2", "n3"), ("web", "db"), ("rc1", "rc2")


def randomWrite(rnd):
    """
    @return: C{(key, value)}: a random write to one of the trees a
        controller's snapshot reads, over L{NODES}, L{PODS} and L{RCS}.
    """
    n, p = rnd.choice(NODES), rnd.choice(PODS)
    rc = {"id": "rc1", "manifest": WEB.decode(), "node_selector": "tier=web",
          "pod_labels": {}, "replicas_desired": rnd.randint(0, 3)}
    return rnd.choice([
        (keys.intentNode(n), marker(n)),
        (keys.intent(n, p), rnd.choice([WEB, WEB2, b"not: [a manifest"])),
        (keys.reality(n, p), rnd.choice([WEB, WEB2])),
        (keys.machine(n), b'{"node": "%s"}' % (n.encode(),)),
        (keys.label("node", n), rnd.choice([encodeLabels({"tier": "web"}),
                                            encodeLabels({"tier": "db"}), b"junk"])),
        (keys.label("pod", "%s/%s" % (n, p)), rnd.choice(
            [encodeLabels({"replication_controller_id": r, "pod_id": p}) for r in RCS]
            + [b"junk"])),
        (keys.health(p, n), rnd.choice([health("passing", SHA), health("critical", SHA),
                                        b"junk"])),
        (keys.replicationController(rnd.choice(RCS)), json.dumps(rc).encode())])


def everyAnswer(snapshot):
    """
    @return: what C{snapshot} answers to every query about L{NODES},
        L{PODS} and L{RCS} (an unreadable record's error as text).
    """
    found = []

    def ask(query, *args):
        try:
            found.append(getattr(snapshot, query)(*args))
        except records.CorruptRecord as e:
            found.append(str(e))
    for query in ("nodes", "intentNodes", "pods", "rcs"):
        ask(query)
    for selector in ("", "tier=web", "!tier"):
        ask("eligible", selector)
        ask("podsMatching", selector)
    for n in NODES:
        for query in ("nodeLabels", "agentUp", "marker", "podsOnNode", "podsInReality"):
            ask(query, n)
        for p in PODS:
            for query in ("podLabels", "intentSha", "realitySha", "intent", "reality",
                          "podLabelsVersion"):
                ask(query, n, p)
            ask("health", p, n)
    for r in RCS:
        ask("podsOf", r)
        ask("rc", r)
    return found


class SnapshotTests(unittest.TestCase):

    def setUp(self):
        self.store = MemoryStore()
        self.successResultOf(self.store.transaction(
            [Put(k, v) for k, v in sorted(STORE.items())]))
        self.counting = CountingStore(self.store)
        self.snapshot = self.successResultOf(Snapshot.read(self.counting))

    def test_readListsEachTreeOnce(self):
        """
        L{Snapshot.read} makes one C{list()} per tree it reads and no other
        read, whatever the number of nodes.
        """
        self.assertEqual(sorted(self.counting.lists), sorted(TREES))
        self.assertEqual(len(self.counting.lists), 7)
        self.assertEqual(self.counting.gets, [])

    def test_queries(self):
        """
        Each query gives its answer (table-driven).
        """
        for name, args, expected in QUERIES:
            self.assertEqual(getattr(self.snapshot, name)(*args), expected, (name, args))

    def test_fromEntriesIsRead(self):
        """
        A snapshot built from entries in hand answers as one read from the
        store holding them.
        """
        listing = self.successResultOf(self.store.list(""))
        snapshot = Snapshot.fromEntries(listing)
        for name, args, expected in QUERIES:
            if name != "version":
                self.assertEqual(getattr(snapshot, name)(*args), expected, (name, args))

    def test_versionsAndEntries(self):
        """
        Every entry read is there with its version, for compare-and-set
        writes; the snapshot cannot be changed.
        """
        entry = self.successResultOf(self.store.get(keys.intent("n1", "web")))
        self.assertEqual(self.snapshot.version(keys.intent("n1", "web")), entry.version)
        self.assertEqual(self.snapshot.intent("n1", "web"), entry)
        self.assertEqual(self.snapshot.marker("n1").key, keys.intentNode("n1"))
        self.assertIsNone(self.snapshot.marker("n3"))
        self.assertEqual(self.snapshot.podLabelsVersion("n1", "web"),
                         self.snapshot.version(keys.label("pod", "n1/web")))
        self.assertIsNone(self.snapshot.podLabelsVersion("n3", "web"))
        with self.assertRaises(TypeError):
            self.snapshot.entries["x"] = entry

    def test_statusTrees(self):
        """
        Asked to, the snapshot reads the agents' status trees too and answers
        with their records.
        """
        snapshot = self.successResultOf(Snapshot.read(self.store, TREES + (
            keys.status("pods"), keys.status("agents"))))
        self.assertEqual(snapshot.podStatus("n1", "web").state, "idle")
        self.assertIsNone(snapshot.podStatus("n2", "db"))
        self.assertTrue(snapshot.agentStatus("n1").connected)
        self.assertIsNone(snapshot.agentStatus("n2"))
        self.assertIsNone(self.snapshot.podStatus("n1", "web"))  # not read by default
        self.assertEqual(snapshot.machineFacts("n1").facts, {"node": "n1"})
        self.assertIsNone(snapshot.machineFacts("n2"))

    def test_corruptNodeLabels(self):
        """
        A node whose labels are unreadable is in the universe but matches
        no selector, not even the empty one; asking for its labels says
        what is wrong.
        """
        snapshot = Snapshot.fromEntries({
            keys.intentNode("n1"): Entry(keys.intentNode("n1"), marker("n1"), 1),
            keys.label("node", "n1"): Entry(keys.label("node", "n1"), b"[1]", 2),
            keys.intentNode("n2"): Entry(keys.intentNode("n2"), marker("n2"), 3)})
        self.assertEqual(snapshot.nodes(), ["n1", "n2"])
        self.assertEqual(snapshot.eligible(""), ["n2"])
        self.assertEqual(snapshot.eligible("!tier"), ["n2"])
        e = self.assertRaises(Exception, snapshot.nodeLabels, "n1")
        self.assertIn("labels/node/n1", str(e))

    def test_badSelector(self):
        """
        A malformed selector text is a L{SelectorError}.
        """
        self.assertRaises(SelectorError, self.snapshot.eligible, "tier in (")

    def test_emptyStore(self):
        """
        An empty store is an empty universe.
        """
        snapshot = self.successResultOf(Snapshot.read(MemoryStore()))
        self.assertEqual((snapshot.nodes(), snapshot.eligible("")), ([], []))

    def test_readFails(self):
        """
        A listing that fails fails the read with the store's error.
        """
        from p2twisted.errors import StoreUnavailable

        class Broken(CountingStore):
            def list(self, prefix):
                if prefix == keys.HEALTH:
                    return defer.fail(StoreUnavailable(prefix, "memory"))
                return CountingStore.list(self, prefix)
        self.failureResultOf(Snapshot.read(Broken(self.store)), StoreUnavailable)


class PreviousTests(unittest.TestCase):
    """
    A snapshot built with the one before it (a watch's next delivery) takes
    over what that one decoded of the entries that did not change, and
    answers exactly as one built afresh.
    """

    def entries(self, changes=()):
        found = {k: Entry(k, v, 1) for k, v in sorted(STORE.items())}
        for key, value, version in changes:
            found[key] = Entry(key, value, version)
        return found

    def answers(self, snapshot):
        return [snapshot.health("web", "n1"), snapshot.podLabels("n1", "web"),
                snapshot.nodeLabels("n1"), snapshot.intentSha("n1", "web"),
                snapshot.realitySha("n1", "web"), snapshot.podsOf("rc1")]

    def test_sameAnswersAsAfresh(self):
        first = Snapshot(self.entries())
        self.answers(first)
        # A new version; the same version with other bytes (a key deleted
        # and created again: ZooKeeper starts its version over).
        for changes in [[], [(keys.health("web", "n1"), health("critical", SHA), 2)],
                        [(keys.label("pod", "n1/web"), encodeLabels(
                            {"replication_controller_id": "rc9"}), 1),
                         (keys.reality("n1", "web"), WEB, 1),
                         (keys.label("node", "n1"), encodeLabels({"tier": "db"}), 1)]]:
            entries = self.entries(changes)
            self.assertEqual(self.answers(Snapshot(entries, first)),
                             self.answers(Snapshot(entries)))

    def byTree(self, entries):
        trees = {}
        for key, entry in entries.items():
            parts = keys.parse(key)
            tree = "/".join(parts[:2]) if parts[0] in (keys.LABELS, keys.STATUS) else parts[0]
            trees.setdefault(tree, {})[key] = entry
        return trees

    def test_keptTreesSameAnswers(self):
        """
        Built from the watches' trees, a snapshot re-indexes only the trees
        delivered since the one before, and answers as one built afresh.
        """
        first = Snapshot(self.entries(), trees=self.byTree(self.entries()))
        self.answers(first)
        for changes in [[], [(keys.health("web", "n1"), health("critical", SHA), 2)],
                        [(keys.label("pod", "n1/web"), encodeLabels(
                            {"replication_controller_id": "rc9"}), 2)],
                        [(keys.reality("n1", "web"), WEB, 2),
                         (keys.label("node", "n1"), encodeLabels({"tier": "db"}), 2)]]:
            entries = self.entries(changes)
            changed = {keys.HEALTH if k.startswith("health") else "/".join(keys.parse(k)[:2])
                       if k.startswith("labels") else keys.parse(k)[0] for k, _, _ in changes}
            again = Snapshot(entries, first, trees=self.byTree(entries), changed=changed)
            self.assertEqual(self.answers(again), self.answers(Snapshot(entries)))
            self.assertEqual(again.eligible("tier=web"), Snapshot(entries).eligible("tier=web"))

    def test_unchangedNotDecodedAgain(self):
        first = Snapshot(self.entries())
        record = first.health("web", "n1")
        self.assertIs(Snapshot(self.entries(), first).health("web", "n1"), record)
        changed = Snapshot(self.entries([(keys.health("web", "n1"), health("passing", SHA2), 2)]),
                           first)
        self.assertIsNot(changed.health("web", "n1"), record)
        self.assertEqual(changed.health("web", "n1"), record)

    def test_overlappingTrees(self):
        """
        Of trees that overlap (a reader watching C{labels} and
        C{labels/node}, which deliver independently), none keeps the earlier
        snapshot's index: the other's entries went into that shared index,
        and changed what the earlier snapshot -- a decision's -- answered.
        """
        key = keys.label("node", "n1")
        web = Entry(key, encodeLabels({"tier": "web"}), 1)
        db = Entry(key, encodeLabels({"tier": "db"}), 2)
        first = Snapshot({key: web}, trees={keys.LABELS: {key: web}, "labels/node": {key: web}})
        trees = {keys.LABELS: {key: db}, "labels/node": {key: web}}
        later = Snapshot({key: db}, first, trees=trees, changed={keys.LABELS})
        self.assertEqual(first.eligible("tier=web"), ["n1"])
        self.assertEqual(later.eligible("tier=db"), Snapshot({key: db}).eligible("tier=db"))

    def test_randomHistoriesSameAnswers(self):
        """
        Over random histories of writes, deletes, and deletes followed by a
        create at the same version (ZooKeeper starts it over) with the same
        or other bytes, each tree delivered or not (a delivery may repeat an
        unchanged tree in full), a snapshot built from the one before
        answers every query as one built afresh, and building it changes
        no answer of the earlier snapshots (a decision may still hold one).
        """
        import random
        from p2twisted.orchestrate.controllers import WATCHED

        def treeOf(key):
            return [t for t in WATCHED if key.startswith(t + "/")][0]

        for seed in range(6):
            rnd = random.Random(seed)
            store = {tree: {} for tree in WATCHED}
            delivered = {tree: {} for tree in WATCHED}
            version, previous, held = 0, None, []
            for step in range(60):
                for _ in range(rnd.randint(0, 4)):
                    key, value = randomWrite(rnd)
                    tree, roll = store[treeOf(key)], rnd.random()
                    if roll < 0.25 and key in tree:
                        del tree[key]
                    elif roll < 0.4 and key in tree:
                        tree[key] = Entry(key, rnd.choice([tree[key].value, value]),
                                          tree[key].version)
                    else:
                        version += 1
                        tree[key] = Entry(key, value, version)
                changed = {tree for tree in WATCHED if rnd.random() < 0.5}
                for tree in changed:
                    delivered[tree] = dict(store[tree])
                entries = {k: e for tree in WATCHED for k, e in delivered[tree].items()}
                snapshot = Snapshot(entries, previous, trees=dict(delivered), changed=changed)
                if rnd.random() < 0.7:  # some snapshots are never asked anything
                    found = everyAnswer(snapshot)
                    self.assertEqual(found, everyAnswer(Snapshot(entries)),
                                     "seed %d, step %d" % (seed, step))
                    held.append((snapshot, found))
                for earlier, found in held[-4:]:
                    self.assertEqual(everyAnswer(earlier), found, "seed %d, step %d" % (seed, step))
                previous = snapshot


class ControllerTests(unittest.TestCase):
    """
    Replication controllers and rolls, read through
    L{p2twisted.records.controllers}.
    """

    def setUp(self):
        from p2twisted.records.controllers import ReplicationController, Roll
        self.rc1 = ReplicationController("rc1", WEB, 2, "tier=web")
        self.rc2 = ReplicationController("rc2", WEB2, 0)
        self.roll = Roll("rc1", "rc2", 2, 1)
        self.entries = {}
        for key, record in ((keys.replicationController("rc1"), self.rc1),
                            (keys.replicationController("rc2"), self.rc2),
                            (keys.roll("rc2"), self.roll)):
            self.entries[key] = Entry(key, record.toBytes(), len(self.entries) + 1)

    def test_read(self):
        """
        The RCs and rolls read are there as records, by id.
        """
        store = MemoryStore()
        self.successResultOf(store.transaction(
            [Put(k, e.value) for k, e in sorted(self.entries.items())]))
        snapshot = self.successResultOf(Snapshot.read(store))
        self.assertEqual(snapshot.rc("rc1"), self.rc1)
        self.assertEqual(snapshot.rcs(), {"rc1": self.rc1, "rc2": self.rc2})
        self.assertEqual(snapshot.roll("rc2"), self.roll)
        self.assertEqual(snapshot.rolls(), {"rc2": self.roll})
        self.assertIsNotNone(snapshot.version(keys.replicationController("rc1")))

    def test_corrupt(self):
        """
        An unreadable RC record: asked for by id, its error names the key;
        among all RCs, it is left out (and logged) rather than hiding the
        others.
        """
        key = keys.replicationController("rc3")
        self.entries[key] = Entry(key, b'{"manifest": "id: x"}', 9)
        snapshot = Snapshot.fromEntries(self.entries)
        e = self.assertRaises(records.CorruptRecord, snapshot.rc, "rc3")
        self.assertIn("replication_controllers/rc3", str(e))
        self.assertEqual(sorted(snapshot.rcs()), ["rc1", "rc2"])

    def test_none(self):
        snapshot = Snapshot.fromEntries({})
        self.assertEqual((snapshot.rc("rc1"), snapshot.rcs(), snapshot.roll("r"),
                          snapshot.rolls()), (None, {}, None, {}))
