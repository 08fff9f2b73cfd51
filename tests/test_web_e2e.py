# -*- test-case-name: tests.test_web_e2e -*-
"""
The API's contract against a real fleet: two real agents (C{twistd
p2-agent}, runit, real HTTP pods) and a real C{twistd p2-orchestrator} on
the local store, the API (L{p2twisted.web.tap.APIService}) asked over real
HTTP with treq: nodes and their agents, an RC scaled through the API
turning healthy, a roll started through the API moving its counts to the
target, and the audit log naming the API as the author.
"""

import json
import os
import time

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.orchestrate import edit
from p2twisted.records.controllers import ReplicationController
from p2twisted.store import openStore
from p2twisted.web import tap
from tests.fleetprocesses import Fleet
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit

TOKEN = b"e2e-token"


class APIFleetTests(unittest.TestCase):

    timeout = 600

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.url = "local://" + os.path.join(directory, "state.db")

    @defer.inlineCallbacks
    def call(self, method, path, body=None, token=None):
        """
        @return: L{Deferred} firing with C{(code, JSON body)}.
        """
        headers = {b"Authorization": [b"Bearer " + token]} if token else {}
        response = yield treq.request(method, self.base + path, headers=headers,
                                      data=None if body is None else json.dumps(body).encode(),
                                      persistent=False)
        return response.code, json.loads((yield response.content()))

    @defer.inlineCallbacks
    def get(self, path):
        code, body = yield self.call("GET", path)
        self.assertEqual(code, 200, body)
        return body

    def until(self, path, predicate, what):
        """
        Wait until C{predicate(GET path)} is true.

        @return: L{Deferred} firing with that answer.
        """
        @defer.inlineCallbacks
        def check():
            code, body = yield self.call("GET", path)
            return body if code == 200 and predicate(body) else None
        return waitFor(check, timeout=180, interval=0.3, what=what)

    @defer.inlineCallbacks
    def test_fleetThroughTheAPI(self):
        """
        Both agents show up with their facts; an RC scaled to two through
        the API (401 without the token) turns healthy in its counts and its
        pods' intent, reality and health; a roll started through the API
        moves its new RC's count up to the target and ends with the new
        version served; the audit log names p2-api as the author.
        """
        requireRunit()
        store = yield openStore(self.url, reactor)
        self.addCleanup(store.close)
        fleet = Fleet(self, self.url, store, ("n1", "n2"))
        for node in fleet.nodes:
            yield fleet.label(node, tier="web")
        fleet.startAgents()
        fleet.startOrchestrator()
        service = tap.APIService(tap.APIConfig(self.url, "tcp:0:interface=127.0.0.1", TOKEN),
                                 reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = yield service.listening
        self.base = "http://127.0.0.1:%d" % (port.getHost().port,)

        # The nodes' agents come up, with their facts and status.
        nodes = yield self.until("/api/v1/nodes", lambda b: [
            (n["node"], n["agent"]) for n in b["nodes"]] == [("n1", "up"), ("n2", "up")],
            "both agents up")
        self.assertEqual([n["labels"] for n in nodes["nodes"]], [{"tier": "web"}] * 2)
        n1 = yield self.until("/api/v1/nodes/n1", lambda b: b["status"] is not None,
                              "n1's agent status")
        self.assertEqual((n1["facts"]["node"], n1["status"]["connected"]), ("n1", True))

        # An RC of none, scaled to two through the API (the token needed).
        yield edit.change(store, lambda s: edit.createRC(s, ReplicationController(
            "web", fleet.manifest("1"), 0, "tier=web")), time.time())
        code, refused = yield self.call("POST", "/api/v1/rcs/web/scale", {"replicas": 2})
        self.assertEqual(code, 401)
        code, scaled = yield self.call("POST", "/api/v1/rcs/web/scale", {"replicas": 2}, TOKEN)
        self.assertEqual((code, scaled["desired"]), (200, 2))
        rc = yield self.until("/api/v1/rcs/web", lambda b: b["healthy"] == 2,
                              "RC web's two pods healthy")
        self.assertEqual(sorted(p["node"] for p in rc["pods"]), ["n1", "n2"])
        pods = yield self.until("/api/v1/pods", lambda b: all(
            p["state"] == "running" for p in b["pods"]), "the pods running")
        sha1 = rc["sha"]
        self.assertEqual([(p["node"], p["pod_id"], p["intent_sha"], p["reality_sha"],
                           p["health"], p["health_sha"], p["last_error"]) for p in pods["pods"]],
                         [(n, "web", sha1, sha1, "passing", sha1, None) for n in ("n1", "n2")])
        yield fleet.waitServing({"n1": "1", "n2": "1"})

        # A roll to version 2 through the API: its counts move to the target.
        code, started = yield self.call("POST", "/api/v1/rolls", {
            "from": "web", "manifest": fleet.manifest("2").decode(), "min_healthy": 1}, TOKEN)
        self.assertEqual(code, 201, started)
        rollId = started["id"]
        seen = []

        @defer.inlineCallbacks
        def done():
            code, roll = yield self.call("GET", "/api/v1/rolls/" + rollId)
            if code == 404:
                return True
            self.assertEqual(code, 200, roll)
            if roll["old"] and roll["new"]:
                counts = (roll["old"]["current"], roll["new"]["current"], roll["new"]["healthy"])
                if not seen or seen[-1] != counts:
                    seen.append(counts)
            return False
        yield waitFor(done, timeout=300, interval=0.3, what="the roll to finish")
        self.assertEqual(seen[0][:2], (2, 0))
        news = [new for old, new, healthy in seen]
        self.assertEqual(news, sorted(news), seen)
        self.assertIn(2, [new for old, new, healthy in seen] + [
            (yield self.get("/api/v1/rcs/" + rollId))["current"]])
        new = yield self.until("/api/v1/rcs/" + rollId, lambda b: b["healthy"] == 2,
                               "the new RC's two pods healthy")
        self.assertEqual(new["desired"], 2)
        code, gone = yield self.call("GET", "/api/v1/rcs/web")
        self.assertEqual(code, 404)
        yield fleet.waitServing({"n1": "2", "n2": "2"})

        # The audit log names the API as the author of its changes.
        events = (yield self.get("/api/v1/audit?limit=1000"))["events"]
        byAPI = [(e["kind"], e["action"]) for e in events if e["who"].startswith("p2-api@")]
        self.assertIn(("replication_controller", "scale"), byAPI)
        self.assertIn(("roll", "start"), byAPI)
        self.assertIn("finish", [e["action"] for e in events if e["kind"] == "roll"])
