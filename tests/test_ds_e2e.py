"""
A daemon set end to end on a real ZooKeeper and on the local store: three real agents (C{twistd
p2-agent} processes with real runit and real HTTP pods), a real C{twistd
p2-orchestrator} running the ds farm, and a person's changes through the
real C{p2} command (L{tests.fleetprocesses}).  Every wait is on a
condition, with a generous timeout; nothing asserts on timing.
"""

import json
import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.labels import encodeLabels
from p2twisted.records.daemonset import DaemonSet
from p2twisted.store import keys, openStore
from p2twisted.store.common import Put
from tests.store_contract import waitFor
from tests.test_fleet_e2e import NODES, FleetBase
from tests.zkserver import sharedServer


class DaemonSetStoryMixin(FleetBase):

    def waitStatus(self, dsId, test, what):
        @defer.inlineCallbacks
        def check():
            status = yield self.fleetInUse.status("ds", dsId)
            return status is not None and test(status)
        return waitFor(check, timeout=180, what=what)

    @defer.inlineCallbacks
    def test_daemonSetStory(self):
        """
        A daemon set (rate 1 s) starts its pod on the three nodes one at a
        time; a node relabelled out of the selector loses it and gets it
        back when relabelled in.  A manifest whose health check fails
        replaces one node (parallel 1), times out and halts: the two others
        serve the old version all along.  Every node's labels wiped: the
        set holds, unscheduling nothing.  A second daemon set of the pod
        written behind the CLI's back is disabled, its status naming the
        first.  Deleted without --cascade, the pods run on; with it, the
        second set's (re-enabled elsewhere) are unscheduled.
        """
        fleet = self.fleetInUse = yield self.fleet(orchestrators=0)
        fleet.startOrchestrator(farms="ds")
        yield self.succeed("ds", "create", "--manifest", fleet.manifestFile("1"), "--selector",
                           "tier=web", "--rate", "1", "--parallel", "1", "--timeout", "25",
                           "--id", "web")
        yield fleet.waitFleet({"n1": "1", "n2": "1", "n3": "1"})
        self.assertEqual((yield fleet.podChanges()),
                         [("schedule", "n1"), ("schedule", "n2"), ("schedule", "n3")])
        self.assertEqual(len([e for e in (yield fleet.events("daemon_set"))
                              if e.action == "schedule"]), 3, "one node at a time")

        yield fleet.label("n1", tier="db")
        yield fleet.waitServing({"n1": None, "n2": "1", "n3": "1"})
        yield fleet.label("n1", tier="web")
        yield fleet.waitFleet({"n1": "1", "n2": "1", "n3": "1"})

        mark = len(self.history.states)
        yield self.succeed("ds", "update", "web", "--yes", "--manifest",
                           fleet.manifestFile("bad", healthy=False))
        yield self.waitStatus("web", lambda s: s.get("halted"), "the replacement to halt")
        status = yield fleet.status("ds", "web")
        self.assertIn("HALTED: the new pod on n1 is not healthy 25s after it started",
                      status["reason"])
        serving = yield fleet.serving()
        self.assertEqual((serving["n2"], serving["n3"]), ("1", "1"))
        for node in ("n2", "n3"):
            self.assertEqual(self.history.intentVersions(node, mark), ["1"], node)
        self.assertNeverBelow(mark, "1", 2)
        shown = yield self.succeed("ds", "show", "web")
        self.assertIn("HALTED", shown)

        audited = len((yield fleet.events()))
        # Every label wiped at once (node by node, the nodes leaving first
        # would lose the pod as they stop matching: that is no wipe).
        yield fleet.store.transaction([Put(keys.label("node", node), encodeLabels({}))
                                       for node in NODES])
        yield self.waitStatus("web", lambda s: s["reason"].startswith("HOLDING"),
                              "the set to hold")
        self.assertEqual(sorted((yield fleet.serving()).values(), key=str), ["1", "1", "bad"])
        self.assertEqual((yield fleet.podChanges(since=audited)), [])

        other = DaemonSet("web-again", "web", fleet.versions["1"])
        yield fleet.store.put(other.key, other.toBytes())
        yield self.waitStatus("web-again", lambda s: "contends with daemon set web"
                              in (s.get("reason") or ""), "the second set to be disabled")
        record = yield fleet.store.get(other.key)
        self.assertTrue(json.loads(record.value)["disabled"])
        self.assertIn("contends with daemon set web", fleet.output())

        yield self.succeed("ds", "delete", "web")
        yield fleet.waitKey(keys.daemonSet("web"), present=False)
        self.assertEqual(sorted((yield fleet.serving()).values(), key=str), ["1", "1", "bad"])
        for node in NODES:
            yield fleet.label(node, tier="web")
        yield self.succeed("ds", "update", "web-again", "--selector", "tier=web", "--yes")
        yield self.succeed("ds", "enable", "web-again")
        yield fleet.waitFleet({"n1": "1", "n2": "1", "n3": "1"})
        yield self.succeed("ds", "delete", "web-again", "--cascade")
        yield fleet.waitServing({"n1": None, "n2": None, "n3": None})
        for node in NODES:
            self.assertIsNone((yield fleet.store.get(keys.intent(node, "web"))), node)


class ZooKeeperDaemonSetTests(DaemonSetStoryMixin, unittest.TestCase):

    def openStore(self):
        self.url = "zk://%s/ds%s" % (sharedServer().hosts, uuid.uuid4().hex[:8])
        return openStore(self.url, reactor)


class LocalDaemonSetTests(DaemonSetStoryMixin, unittest.TestCase):
    """The same story on the embedded store (one SQLite file shared by every process)."""

    def openStore(self):
        return openStore(self.url, reactor)
