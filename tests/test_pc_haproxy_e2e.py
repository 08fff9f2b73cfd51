"""
A pod cluster behind a real HAProxy, end to end: the C{p2} command creates
and changes the cluster, a real C{twistd p2-orchestrator --farms pc} process
on a C{local://} store syncs it to HAProxy (master-worker, reloaded
gracefully) and to a JSON file, and requests through the proxy reach real
HTTP servers playing the pods (the test plays their agents: the pods'
intent, labels, health and the agents' pod addresses).

A request through the proxy reaches a healthy member; follows membership
changes (health, labels, the selector); and survives an empty read: the
pods' labels wiped at once leave HAProxy serving the last members while the
failsafe holds.
"""

import json
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.labels import encodeLabels
from p2twisted.records.podcluster import PodCluster
from p2twisted.store import keys, openStore
from p2twisted.store.common import Delete, Put
from p2twisted.syncers.haproxy import render
from tests.fleetcli import FleetCommandMixin
from tests.haproxyserver import HAProxyServer, requireHAProxy, servePod
from tests.servers import freePort
from tests.store_contract import waitFor
from tests.test_orchestrate_process import OrchestratorProcess

NODES = {"n1": "127.0.0.11", "n2": "127.0.0.12", "n3": "127.0.0.13"}
LABELS = {"pod_id": "web", "availability_zone": "az1", "cluster_name": "prod"}
PC = PodCluster("web-az1-prod", "web", "az1", "prod")


class PodClusterBehindHAProxyTests(FleetCommandMixin, unittest.TestCase):

    timeout = 240

    @defer.inlineCallbacks
    def setUp(self):
        requireHAProxy()
        FleetCommandMixin.setUp(self)
        self.store = yield openStore(self.url, reactor)
        self.addCleanup(self.store.close)
        self.port = freePort()
        manifest = (b"id: web\nlaunchables:\n  app:\n    launchable_type: hoist\n"
                    b"    location: file:///web_1.tar.gz\nstatus:\n  port: %d\n  http: true\n"
                    % (self.port,))
        for node, address in sorted(NODES.items()):
            servePod(self, reactor, node, address, self.port)
            yield self.store.put(keys.machine(node), json.dumps(
                {"node": node, "pod_address": address}).encode())
            yield self.store.put(keys.intent(node, "web"), manifest)
            yield self.store.put(keys.label("pod", node + "/web"), encodeLabels(LABELS))
            yield self.setHealth(node, "passing")
        base = os.path.abspath(self.mktemp())
        self.proxy = HAProxyServer(PC.id)
        self.proxy.prepare(base)
        with open(os.path.join(self.proxy.backends, PC.id + ".cfg"), "w") as f:
            f.write(render(PC, []))
        self.proxy.start()
        self.addCleanup(self.proxy.stopGracefully)
        self.sd = os.path.join(base, "sd")
        config = {"session_ttl": 5, "resync_interval": 2, "news_interval": 0.2,
                  "confirm_delay": 600,
                  "syncers": {"haproxy": self.proxy.settings(), "json": {"directory": self.sd}}}
        self.orchestrator = OrchestratorProcess(self, self.url, json.dumps(config), farms="pc")
        self.orchestrator.start()

    def setHealth(self, node, status):
        return self.store.put(keys.health("web", node), json.dumps(
            {"status": status, "output": "", "sha": None, "time": 1.0}).encode())

    def reaches(self, expected, timeout=90):
        @defer.inlineCallbacks
        def check():
            return (yield self.proxy.reached()) == expected
        return waitFor(check, timeout=timeout, interval=0.1,
                       what="requests through HAProxy to reach %r (orchestrator said: %s)"
                       % (expected, self.orchestrator.proto.output[-2000:]))

    def syncerState(self, syncer, state):
        @defer.inlineCallbacks
        def check():
            entry = yield self.store.get(keys.status(keys.POD_CLUSTERS, PC.id, syncer))
            return entry is not None and json.loads(entry.value)["state"] == state
        return waitFor(check, timeout=90, interval=0.1,
                       what="syncer %s to say %s" % (syncer, state))

    @defer.inlineCallbacks
    def test_proxyFollowsTheCluster(self):
        """
        Once C{p2 pc create} made the cluster, requests through HAProxy
        reach every healthy member; a member turning unhealthy stops getting
        requests, and gets them again once passing; C{p2 pc update-selector}
        shows the member it drops, changes nothing when not confirmed, and
        drops it with C{--yes}; the JSON file lists the same members and
        C{p2 pc show} says both syncers are synced.
        """
        yield self.proxy.reached()  # HAProxy answers (503: no servers yet)
        out = yield self.succeed("pc", "create", "--pod", "web", "--az", "az1", "--name", "prod")
        self.assertIn("created pod cluster web-az1-prod", out)
        self.assertIn("(3 now, 3 healthy)", out)
        yield self.reaches({"n1", "n2", "n3"})
        yield self.setHealth("n2", "critical")
        yield self.reaches({"n1", "n3"})
        yield self.setHealth("n2", "passing")
        yield self.reaches({"n1", "n2", "n3"})

        yield self.store.put(keys.label("pod", "n3/web"), encodeLabels(dict(LABELS, canary="1")))
        out, err, code = yield self.p2("pc", "update-selector", PC.id,
                                       PC.pod_selector + ",!canary", stdin=b"n\n")
        self.assertEqual((code, err), (1, ""))
        self.assertIn("  - n3               127.0.0.13:%d" % (self.port,), out)
        self.assertIn("apply? [y/N] not changed", out)
        out = yield self.succeed("pc", "update-selector", PC.id, PC.pod_selector + ",!canary",
                                 "--yes")
        self.assertIn("(0 member(s) added, 1 removed)", out)
        yield self.reaches({"n1", "n2"})
        yield self.syncerState("json", "synced")

        @defer.inlineCallbacks
        def jsonSynced():
            info = yield self.p2json("pc", "show", PC.id)
            return info["syncers"]["json"]["synced"] == ["127.0.0.11:%d" % (self.port,),
                                                         "127.0.0.12:%d" % (self.port,)]
        yield waitFor(jsonSynced, timeout=60, interval=0.1, what="the json syncer's status")
        with open(os.path.join(self.sd, PC.id + ".json")) as f:
            self.assertEqual(json.load(f)["healthy"], ["127.0.0.11:%d" % (self.port,),
                                                       "127.0.0.12:%d" % (self.port,)])
        info = yield self.p2json("pc", "show", PC.id)
        self.assertEqual({name: s["state"] for name, s in info["syncers"].items()},
                         {"haproxy": "synced", "json": "synced"})

    @defer.inlineCallbacks
    def test_survivesEmptyRead(self):
        """
        Every pod label wiped at once (an empty read): the failsafe holds the
        last membership -- the status says so, and every request through
        HAProxy still reaches a member -- and when the labels come back
        the cluster is synced again, never having been emptied.
        """
        yield self.succeed("pc", "create", "--pod", "web", "--az", "az1", "--name", "prod")
        yield self.reaches({"n1", "n2", "n3"})
        yield self.store.transaction([Delete(keys.label("pod", n + "/web")) for n in NODES])
        yield self.syncerState("haproxy", "held")
        info = yield self.p2json("pc", "show", PC.id)
        self.assertEqual((info["members"], info["healthy"]), (0, 0))
        self.assertIn("FAILSAFE", info["syncers"]["haproxy"]["reason"])
        for _ in range(3):
            self.assertEqual((yield self.proxy.reached()), {"n1", "n2", "n3"})
        with open(os.path.join(self.proxy.backends, PC.id + ".cfg")) as f:
            self.assertEqual(f.read().count("    server "), 3)
        yield self.store.transaction([Put(keys.label("pod", n + "/web"), encodeLabels(LABELS))
                                      for n in NODES])
        yield self.syncerState("haproxy", "synced")
        self.assertEqual((yield self.proxy.reached()), {"n1", "n2", "n3"})
