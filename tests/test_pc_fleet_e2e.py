"""
A pod cluster behind a real HAProxy in front of a real fleet: three real
agents (C{twistd p2-agent}, runit, real HTTP pods on their own loopback pod
addresses, which they publish), a real C{twistd p2-orchestrator} running the
rc, roll and pc farms, and the person's changes through the real C{p2}
command; on the local store and on a real ZooKeeper.  Requests through the
proxy reach the pods an RC placed, and keep being answered while a rolling
update replaces every pod.
"""

import json
import os
import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.records.podcluster import PodCluster
from p2twisted.store import keys, openStore
from p2twisted.syncers.haproxy import render
from tests.haproxyserver import HAProxyServer, requireHAProxy
from tests.store_contract import waitFor
from tests.test_fleet_e2e import FleetBase
from tests.zkserver import sharedServer

PC = PodCluster("web-az1-prod", "web", "az1", "prod")


class PodClusterFleetMixin(FleetBase):

    timeout = 600

    def reaches(self, proxy, expected):
        @defer.inlineCallbacks
        def check():
            return (yield proxy.reached(path="/version")) == expected
        return waitFor(check, timeout=240, interval=0.2,
                       what="requests through HAProxy to reach versions %r" % (expected,))

    @defer.inlineCallbacks
    def keepAsking(self, proxy, answers, done):
        """
        Request /version through the proxy until C{done}, recording answers.
        Each request waits as curl would (30 s, not 2 s): during a roll on a
        loaded machine HAProxy may take seconds to retry a halted member, and
        a slow answer is still an answer; only none (or an error) fails.
        """
        while not done:
            result = yield proxy.get("/version", timeout=30.0)
            answers.append(None if result is None else
                           result[1] if result[0] == 200 else "<%d>" % (result[0],))

    @defer.inlineCallbacks
    def test_rollBehindHAProxy(self):
        """
        An RC's pods, labelled into a pod cluster, are reached through
        HAProxy at the addresses their agents publish; a rolling update to
        version 2 keeping two pods healthy is followed by the proxy to the
        end, and every request made meanwhile is answered by a pod (of
        version 1 or 2).
        """
        requireHAProxy()
        proxy = HAProxyServer(PC.id)
        proxy.prepare(os.path.abspath(self.mktemp()))
        with open(os.path.join(proxy.backends, PC.id + ".cfg"), "w") as f:
            f.write(render(PC, []))
        proxy.start()
        self.addCleanup(proxy.stopGracefully)
        fleet = yield self.fleet(orchestrators=0)
        settings = proxy.settings()
        fleet.startOrchestrator("rc,roll,pc", "syncers:\n  haproxy: {directory: '%s', configs: "
                                "['%s', '%s'], pid_file: '%s', haproxy: '%s'}\n" % (
                                    settings["directory"], settings["configs"][0],
                                    settings["configs"][1], settings["pid_file"],
                                    settings["haproxy"]))
        yield self.succeed("rc", "create", "--manifest", fleet.manifestFile("1"), "--selector",
                           "tier=web", "--replicas", "3", "--id", "web", "--pod-label",
                           "availability_zone=az1", "--pod-label", "cluster_name=prod")
        yield self.succeed("pc", "create", "--pod", "web", "--az", "az1", "--name", "prod")
        yield fleet.waitFleet({"n1": "1", "n2": "1", "n3": "1"}, timeout=240)
        yield self.reaches(proxy, {"1"})

        @defer.inlineCallbacks
        def allThree():
            entry = yield fleet.store.get(keys.status(keys.POD_CLUSTERS, PC.id, "haproxy"))
            status = json.loads(entry.value) if entry is not None else {}
            return status.get("synced") == ["%s:%d" % (fleet.nodes[n], fleet.port)
                                                    for n in sorted(fleet.nodes)]
        yield waitFor(allThree, timeout=120, interval=0.2, what="all three pods synced")

        answers, done = [], []
        asking = self.keepAsking(proxy, answers, done)
        yield self.succeed("roll", "start", "--from", "web", "--manifest",
                           fleet.manifestFile("2"), "--min-healthy", "2")
        yield fleet.waitFleet({"n1": "2", "n2": "2", "n3": "2"}, timeout=300)
        yield fleet.waitKey(keys.replicationController("web"), present=False, timeout=120)
        yield self.reaches(proxy, {"2"})
        done.append(True)
        yield asking
        self.assertEqual(sorted(set(answers)), ["1", "2"])
        self.assertEqual([a for a in answers if a not in ("1", "2")], [])


class LocalPodClusterFleetTests(PodClusterFleetMixin, unittest.TestCase):
    """On the embedded store."""

    def openStore(self):
        return openStore(self.url, reactor)


class ZooKeeperPodClusterFleetTests(PodClusterFleetMixin, unittest.TestCase):
    """On a real ZooKeeper."""

    def openStore(self):
        self.url = "zk://%s/pcfleet%s" % (sharedServer().hosts, uuid.uuid4().hex[:8])
        return openStore(self.url, reactor)
