"""
C{p2 pc}, run as a real C{p2} process against a C{local://} store, with the
test playing the agents (pods' intent, labels and health written directly).
"""

import json

from twisted.internet import defer
from twisted.trial import unittest

from p2twisted.errors import KeyExists
from p2twisted.labels import encodeLabels
from p2twisted.orchestrate import audit, pcedit
from p2twisted.orchestrate.plan import Planner
from p2twisted.records.podcluster import PodCluster
from p2twisted.store import keys
from tests.fleetcli import FleetCommandMixin
from tests.test_orchestrate_podcluster import PROD, WEB

CREATE = ("pc", "create", "--pod", "web", "--az", "az1", "--name", "prod")


class PodClusterCommandTests(FleetCommandMixin, unittest.TestCase):

    timeout = 120

    def pods(self, pods):
        """Write pods C{{node: (labels, health)}} as their agents would."""
        @defer.inlineCallbacks
        def write(store):
            for n, (node, (labels, status)) in enumerate(sorted(pods.items())):
                yield store.put(keys.machine(node), json.dumps(
                    {"node": node, "pod_address": "10.0.0.%d" % (n + 1,)}).encode())
                yield store.put(keys.intent(node, "web"), WEB)
                yield store.put(keys.label("pod", node + "/web"), encodeLabels(labels))
                yield store.put(keys.health("web", node), json.dumps(
                    {"status": status, "output": "", "sha": None, "time": 1.0}).encode())
        return self.withStore(write)

    @defer.inlineCallbacks
    def test_createShowListDelete(self):
        """
        C{p2 pc create} makes the cluster (id POD-AZ-NAME, the default
        selector) and says how many pods it has; C{show} lists its members
        with their addresses and health, C{list} counts them; C{delete}
        removes the record and its name, and the audit log names each change.
        """
        yield self.pods({"n1": (PROD, "passing"), "n2": (PROD, "critical"),
                         "n3": (dict(PROD, cluster_name="canary"), "passing")})
        out = yield self.succeed(*CREATE + ("--annotations", '{"port": 9000}'))
        self.assertEqual(out, "created pod cluster web-az1-prod: pods matching pod_id=web,"
                              "availability_zone=az1,cluster_name=prod (2 now, 1 healthy)\n")
        info = yield self.p2json("pc", "show", "web-az1-prod")
        self.assertEqual(info["member_list"], [
            {"node": "n1", "pod_id": "web", "address": "10.0.0.1:9000", "healthy": True},
            {"node": "n2", "pod_id": "web", "address": "10.0.0.2:9000", "healthy": False}])
        self.assertEqual((info["annotations"], info["syncers"]), ({"port": 9000}, {}))
        out = yield self.succeed("pc", "show", "web-az1-prod")
        self.assertIn("    n1               10.0.0.1:9000          healthy\n", out)
        self.assertIn("syncers: no status yet", out)
        out = yield self.succeed("pc", "list")
        self.assertEqual(out.splitlines()[1].split(),
                         ["web-az1-prod", "web", "az1", "prod", "2", "1", "not", "synced", "yet"])
        out = yield self.succeed("pc", "delete", "web-az1-prod")
        self.assertEqual(out, "deleted pod cluster web-az1-prod; it was the last one: the "
                              "syncers keep it until another pod cluster exists (the failsafe "
                              "against an empty listing)\n")
        self.assertEqual((yield self.succeed("pc", "list", "--json")), "[]\n")
        dump = yield self.dump()
        self.assertEqual([k for k in dump if k.startswith("pod_cluster")], [])
        events = (yield self.withStore(audit.read))[0]
        self.assertEqual([(e.kind, e.id, e.action) for e in events],
                         [("pod_cluster", "web-az1-prod", "create"),
                          ("pod_cluster", "web-az1-prod", "delete")])

    @defer.inlineCallbacks
    def test_unique(self):
        """
        A second cluster of the same pod id, zone and name is refused (under
        another id too), naming the one there; another name is fine.
        """
        yield self.succeed(*CREATE)
        line, code = yield self.p2Fails(*CREATE + ("--id", "other"))
        self.assertEqual((line, code), (
            "p2: pod web already has a pod cluster prod in zone az1: web-az1-prod (see 'p2 pc "
            "show web-az1-prod')", 2))
        line, code = yield self.p2Fails(*CREATE[:-1] + ("canary", "--id", "web-az1-prod"))
        self.assertIn("pod cluster web-az1-prod already exists", line)
        yield self.succeed(*CREATE[:-1] + ("canary",))

    @defer.inlineCallbacks
    def test_staleName(self):
        """
        A name index key left without its cluster (the record deleted by
        other means than 'p2 pc delete') does not block creating the
        triple again.
        """
        yield self.withStore(lambda store: store.put(
            keys.podClusterName("web", "az1", "prod"), b"gone"))
        yield self.succeed(*CREATE)
        self.assertEqual([i["id"] for i in (yield self.p2json("pc", "list"))], ["web-az1-prod"])
        line, code = yield self.p2Fails(*CREATE + ("--id", "other"))
        self.assertIn("already has a pod cluster prod in zone az1: web-az1-prod", line)

    @defer.inlineCallbacks
    def test_unreadableRecord(self):
        """
        An unreadable pod cluster record is named by C{list} (on standard
        error: not 'no pod clusters') and removed by C{delete}, after which
        its triple can be created again.
        """
        yield self.succeed(*CREATE)
        yield self.withStore(lambda store: store.put(keys.podCluster("web-az1-prod"),
                                                     b'{"pod_id": 5}'))
        out, err, code = yield self.p2("pc", "list")
        self.assertEqual(code, 0)
        self.assertIn("p2: pod cluster web-az1-prod: unreadable record", err)
        self.assertIn("'p2 pc delete web-az1-prod' removes it", err)
        self.assertEqual(out, "")
        out = yield self.succeed("pc", "delete", "web-az1-prod")
        self.assertIn("deleted pod cluster web-az1-prod", out)
        yield self.succeed(*CREATE)

    @defer.inlineCallbacks
    def test_racingCreates(self):
        """
        Two creates of one triple racing (several at once, under different
        ids): exactly one wins, the others are refused naming it.
        """
        results = yield defer.gatherResults([
            self.p2(*CREATE + ("--id", "c%d" % (n,))) for n in range(4)])
        winners = [n for n, (out, err, code) in enumerate(results) if code == 0]
        self.assertEqual(len(winners), 1, results)
        for n, (out, err, code) in enumerate(results):
            if n != winners[0]:
                self.assertIn("already has a pod cluster prod in zone az1: c%d" % (winners[0],),
                              err)
        self.assertEqual(len((yield self.p2json("pc", "list"))), 1)

    @defer.inlineCallbacks
    def createOnlyIndex(self, store):
        from p2twisted.orchestrate.snapshot import Snapshot
        snapshot = yield Snapshot.read(store, pcedit.TREES)
        first = pcedit.createPC(snapshot, PodCluster("a", "web", "az1", "prod"))
        second = pcedit.createPC(snapshot, PodCluster("b", "web", "az1", "prod"))
        yield Planner(store).apply(first)
        yield self.assertFailure(Planner(store).apply(second), KeyExists)
        self.assertIsNone((yield store.get(keys.podCluster("b"))))
        self.assertEqual((yield store.get(keys.podClusterName("web", "az1", "prod"))).value, b"a")

    def test_createOnlyIndex(self):
        """
        Two creations planned over the same snapshot (neither sees the
        other): the second transaction fails on the name index key, and
        writes nothing.
        """
        return self.withStore(self.createOnlyIndex)

    @defer.inlineCallbacks
    def test_createOnlyIndexZooKeeper(self):
        """The same on a real ZooKeeper (the index's parents are made in the transaction)."""
        import uuid

        from twisted.internet import reactor

        from p2twisted.store import openStore
        from tests.zkserver import sharedServer
        store = yield openStore("zk://%s/pc%s" % (sharedServer().hosts, uuid.uuid4().hex[:8]),
                                reactor)
        try:
            yield self.createOnlyIndex(store)
        finally:
            yield store.close()

    @defer.inlineCallbacks
    def test_badInput(self):
        """Bad annotations or selector: a one-line error, nothing written."""
        before = yield self.dump()
        for args, said in (((*CREATE, "--annotations", "{"), "annotations: not JSON"),
                           ((*CREATE, "--annotations", "[1]"), "expected a JSON object"),
                           ((*CREATE, "--selector", "a in"), "--selector"),
                           ((*CREATE, "--selector", " "), "--selector: an empty selector"),
                           (("pc", "update-selector", "web-az1-prod", "", "--yes"),
                            "SELECTOR: an empty selector"),
                           ((*CREATE, "--annotations", '{"port": 70000}'),
                            "annotation port must be a port number (1-65535), got 70000"),
                           ((*CREATE, "--annotations", '{"port": "http"}'),
                            "annotation port must be a port number"),
                           ((*CREATE, "--id", ".web"), "must not begin with '.'"),
                           (("pc", "show", "nope"), "no pod cluster 'nope'")):
            line, code = yield self.p2Fails(*args)
            self.assertIn(said, line)
        self.assertEqual((yield self.dump()), before)

    @defer.inlineCallbacks
    def test_updateSelector(self):
        """
        C{update-selector} shows the members it adds and removes and asks:
        anything but yes (or the end of input) changes nothing; yes, or
        C{--yes}, applies it.
        """
        yield self.pods({"n1": (PROD, "passing"), "n2": (dict(PROD, canary="1"), "passing"),
                         "n3": (dict(PROD, cluster_name="canary"), "critical")})
        yield self.succeed(*CREATE)
        new = "pod_id=web,!canary"
        for answer in (b"", b"n\n"):
            out, err, code = yield self.p2("pc", "update-selector", "web-az1-prod", new,
                                             stdin=answer)
            self.assertEqual((code, err), (1, ""))
            self.assertEqual(out, (
                "pod cluster web-az1-prod: selector pod_id=web,availability_zone=az1,"
                "cluster_name=prod -> pod_id=web,!canary\n"
                "  + n3               10.0.0.3:8080          unhealthy\n"
                "  - n2               10.0.0.2:8080          healthy\n"
                "apply? [y/N] not changed\n"))
        info = yield self.p2json("pc", "show", "web-az1-prod")
        self.assertEqual(info["pod_selector"],
                         "pod_id=web,availability_zone=az1,cluster_name=prod")
        out, err, code = yield self.p2("pc", "update-selector", "web-az1-prod", new,
                                       stdin=b"y\n")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("selector is now pod_id=web,!canary (1 member(s) added, 1 removed)", out)
        info = yield self.p2json("pc", "show", "web-az1-prod")
        self.assertEqual([m["node"] for m in info["member_list"]], ["n1", "n3"])
        out = yield self.succeed("pc", "update-selector", "web-az1-prod", "pod_id=web", "--yes")
        self.assertIn("(1 member(s) added, 0 removed)", out)
        events = (yield self.withStore(audit.read))[0]
        self.assertEqual([e.details.get("added") for e in events if e.action == "update-selector"],
                         [["n3"], ["n2"]])

    @defer.inlineCallbacks
    def test_interruptedAtQuestion(self):
        """
        Ctrl-C at update-selector's question ends p2 at once (no Enter
        needed), changing nothing.
        """
        from twisted.internet import reactor
        yield self.pods({"n1": (PROD, "passing"), "n2": (dict(PROD, canary="1"), "passing")})
        yield self.succeed(*CREATE)
        lines, ended = self.spawn("pc", "update-selector", "web-az1-prod", "pod_id=web,!canary")
        while not (yield lines.get()).startswith("  - n2"):
            pass
        ended.transport.signalProcess("INT")

        def hung(failure):
            ended.transport.signalProcess("KILL")
            self.fail("p2 still waits for an answer after Ctrl-C")
        code = yield ended.addTimeout(30, reactor).addErrback(hung)
        self.assertNotEqual(code, 0)
        info = yield self.p2json("pc", "show", "web-az1-prod")
        self.assertEqual(info["pod_selector"],
                         "pod_id=web,availability_zone=az1,cluster_name=prod")

    @defer.inlineCallbacks
    def test_updateAnnotations(self):
        """C{update-annotations} replaces them; the audit log has both."""
        yield self.succeed(*CREATE + ("--annotations", '{"port": 80}'))
        out = yield self.succeed("pc", "update-annotations", "web-az1-prod",
                                 '{"haproxy_backend": "web"}')
        self.assertEqual(out, 'pod cluster web-az1-prod: annotations {"haproxy_backend": "web"}\n')
        info = yield self.p2json("pc", "show", "web-az1-prod")
        self.assertEqual(info["annotations"], {"haproxy_backend": "web"})
        events = (yield self.withStore(audit.read))[0]
        self.assertEqual(events[-1].details, {"from": {"port": 80},
                                              "to": {"haproxy_backend": "web"}})
