# -*- test-case-name: tests.test_web_api -*-
"""
The HTTP API of C{twistd p2-api} (L{p2twisted.web.app}) over real HTTP on
loopback, read with treq, over a simulated fleet in a memory store
(L{tests.orchfleet}): what it answers, the token on writes, and what it
never gives away.  L{tests.test_web_e2e} runs it against real agents and an
orchestrator.
"""

import json

import treq
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.web.server import Site

from p2twisted.orchestrate import audit, edit
from p2twisted.records import AgentStatus, MachineFacts, PodStatus
from p2twisted.store import keys
from p2twisted.web.app import API
from tests.orchfleet import Fleet, manifest

TOKEN = b"t0ken-of-the-test"


class ServedMixin(object):
    """
    Serve an L{API} on a free loopback port, and ask it with treq.
    """

    def serve(self, api):
        site = Site(api.resource())
        site.displayTracebacks = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = "http://127.0.0.1:%d" % (port.getHost().port,)
        return self.base

    @defer.inlineCallbacks
    def ask(self, method, path, body=None, token=None, headers=None, code=None):
        """
        @param body: a JSON-able value, or bytes as they are.
        @param token: the bearer token to send, or C{None}.
        @param code: the status expected, if any.
        @return: L{Deferred} firing with C{(response, decoded JSON body)}.
        """
        headers = dict(headers or {})
        if token is not None:
            headers[b"Authorization"] = [b"Bearer " + token]
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        response = yield treq.request(method.decode("ascii"), self.base + path, data=body, headers=headers,
                                      persistent=False)
        content = yield response.content()
        if code is not None:
            self.assertEqual(response.code, code, content)
        if response.headers.getRawHeaders(b"content-type") == [b"application/json"]:
            return response, json.loads(content)
        return response, content

    def get(self, path, code=200, **kw):
        return self.ask(b"GET", path, code=code, **kw).addCallback(lambda r: r[1])


class FleetMixin(ServedMixin):
    """
    Nodes n1..n3 (n3's agent down) in a memory store, an RC C{web} of 2
    converged on them, and the API serving it with L{TOKEN}.
    """

    def setUp(self):
        self.fleet = Fleet(self, {"n1": {"tier": "web"}, "n2": {"tier": "web"},
                                  "n3": {"tier": "db"}}, down=["n3"])
        self.store = self.fleet.store
        self.fleet.putRC("web", version=1, replicas=2, selector="tier=web")
        self.fleet.converge()
        self.sha1 = self.fleet.sha(1)
        self.api = API(self.store, token=TOKEN, author="tester")
        self.serve(self.api)

    def put(self, key, value):
        self.fleet.run(self.store.put(key, value))

    def snapshot(self):
        return self.fleet.snapshot()


class ReadTests(FleetMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_nodes(self):
        """
        C{/api/v1/nodes} lists every node with its agent up or down, its
        labels and its pods.
        """
        found = (yield self.get("/api/v1/nodes"))["nodes"]
        self.assertEqual([(n["node"], n["agent"], n["labels"], n["pods"], n["marker"])
                          for n in found],
                         [("n1", "up", {"tier": "web"}, ["web"], True),
                          ("n2", "up", {"tier": "web"}, ["web"], True),
                          ("n3", "down", {"tier": "db"}, [], False)])

    @defer.inlineCallbacks
    def test_node(self):
        """
        C{/api/v1/nodes/<node>} adds the agent's facts and status and the
        node's pods in full; an unknown node is a 404 with a JSON error.
        """
        self.put(keys.machine("n1"), MachineFacts("n1", {"node": "n1", "hostname": "h1",
                                                         "cores": 4}).toBytes())
        self.put(keys.status("agents", "n1"), AgentStatus(
            "n1", store="local:///var/lib/p2/state.db", connected=True, converged=True,
            last_sync=5.0).toBytes())
        found = yield self.get("/api/v1/nodes/n1")
        self.assertEqual((found["agent"], found["facts"]["hostname"], found["facts"]["cores"]),
                         ("up", "h1", 4))
        self.assertEqual((found["status"]["converged"], found["status"]["last_sync"]),
                         (True, 5.0))
        self.assertEqual([(p["pod_id"], p["intent_sha"], p["health"]) for p in found["pods"]],
                         [("web", self.sha1, "passing")])
        down = yield self.get("/api/v1/nodes/n3")
        self.assertEqual((down["agent"], down["facts"], down["status"]), ("down", None, None))
        missing = yield self.get("/api/v1/nodes/n9", code=404)
        self.assertEqual(missing, {"error": "there is no node n9"})

    @defer.inlineCallbacks
    def test_pods(self):
        """
        C{/api/v1/pods} has every pod: intent and reality SHA, health, the
        agent's state and last error; C{?node=} keeps one node's.
        """
        self.put(keys.status("pods", "n2", "web"), PodStatus(
            "web", "n2", state="failed", sha=self.sha1, error="launch failed: exit 1",
            attempts=3).toBytes())
        found = (yield self.get("/api/v1/pods"))["pods"]
        self.assertEqual(
            [(p["node"], p["pod_id"], p["intent_sha"], p["reality_sha"], p["health"],
              p["state"], p["last_error"], p["attempts"]) for p in found],
            [("n1", "web", self.sha1, self.sha1, "passing", None, None, 0),
             ("n2", "web", self.sha1, self.sha1, "passing", "failed", "launch failed: exit 1",
              3)])
        self.assertEqual(found[0]["labels"]["replication_controller_id"], "web")
        one = (yield self.get("/api/v1/pods?node=n2"))["pods"]
        self.assertEqual([p["node"] for p in one], ["n2"])

    @defer.inlineCallbacks
    def test_rcs(self):
        """
        C{/api/v1/rcs} has each RC's counts as C{p2 rc list --json} does;
        C{/api/v1/rcs/<id>} its pods; an unknown RC is a 404.
        """
        found = (yield self.get("/api/v1/rcs"))["rcs"]
        self.assertEqual([(r["id"], r["desired"], r["current"], r["healthy"], r["selector"])
                          for r in found], [("web", 2, 2, 2, "tier=web")])
        one = yield self.get("/api/v1/rcs/web")
        self.assertEqual(sorted(p["node"] for p in one["pods"]), ["n1", "n2"])
        yield self.get("/api/v1/rcs/nope", code=404)

    @defer.inlineCallbacks
    def test_roll(self):
        """
        A roll shows in C{/api/v1/rolls} and C{/api/v1/rolls/<id>} with its
        old and new RCs' counts and its target, moving as it goes; once
        done it is a 404.
        """
        roll, plan = self.fleet.run(edit.change(
            self.store, lambda s: edit.startRoll(s, "web", 1, manifest=manifest(2)), 1000.0))
        found = (yield self.get("/api/v1/rolls"))["rolls"]
        self.assertEqual([r["id"] for r in found], [roll.id])
        one = yield self.get("/api/v1/rolls/" + roll.id)
        self.assertEqual((one["old"]["id"], one["old"]["current"], one["new"]["current"],
                          one["desired"], one["min_healthy"]), ("web", 2, 0, 2, 1))
        for _ in range(3):
            self.fleet.round()
        one = yield self.get("/api/v1/rolls/" + roll.id)
        self.assertEqual((one["old"]["current"], one["new"]["current"]), (1, 1))
        self.fleet.play()
        missing = yield self.get("/api/v1/rolls/" + roll.id, code=404)
        self.assertIn("no roll", missing["error"])

    @defer.inlineCallbacks
    def test_podClusters(self):
        """
        C{/api/v1/pod_clusters} has each pod cluster as C{p2 pc list
        --json} does, with its syncers' statuses; C{/api/v1/pod_clusters/<id>}
        its members; an unknown one is a 404.
        """
        from p2twisted.records.podcluster import PodCluster, SyncerStatus
        pc = PodCluster("web-a-main", "web", "a", "main", "pod_id=web")
        self.put(pc.key, pc.toBytes())
        self.put(keys.status(keys.POD_CLUSTERS, pc.id, "json"),
                 SyncerStatus("synced", members=2, healthy=2).toBytes())
        found = (yield self.get("/api/v1/pod_clusters"))["pod_clusters"]
        # (No member has an address: the test's manifest has no status port.)
        self.assertEqual([(p["id"], p["members"], p["healthy"], p["syncers"]["json"]["state"])
                          for p in found], [("web-a-main", 2, 0, "synced")])
        self.assertEqual(found[0]["farm"], found[0]["syncers"])
        one = yield self.get("/api/v1/pod_clusters/web-a-main")
        self.assertEqual(sorted(m["node"] for m in one["member_list"]), ["n1", "n2"])
        yield self.get("/api/v1/pod_clusters/nope", code=404)

    @defer.inlineCallbacks
    def test_audit(self):
        """
        C{/api/v1/audit?limit=N} has the last N events, oldest first;
        C{since=} keeps those since a time or a duration back; a bad limit
        or time is a 400.
        """
        from twisted.internet.task import Clock

        from p2twisted.records.controllers import AuditEvent
        self.fleet.run(audit.append(self.store, [AuditEvent("rc", "web", "scale", {"to": n})
                                                 for n in range(5)], "someone", 2000.0))
        found = (yield self.get("/api/v1/audit?limit=2"))["events"]
        self.assertEqual([(e["who"], e["action"], e["details"]) for e in found],
                         [("someone", "scale", {"to": 3}), ("someone", "scale", {"to": 4})])
        bad = yield self.get("/api/v1/audit?limit=zero", code=400)
        self.assertIn("limit", bad["error"])
        self.fleet.run(audit.append(self.store, [AuditEvent("rc", "web", "enable", {})],
                                    "later", 3000.0))
        self.api._clock = Clock()
        self.api._clock.advance(3030.0)
        found = (yield self.get("/api/v1/audit?since=1m"))["events"]
        self.assertEqual([e["who"] for e in found], ["later"])
        found = (yield self.get("/api/v1/audit?since=1970-01-01T00:40:00Z"))["events"]
        self.assertEqual([e["who"] for e in found], ["later"])
        yield self.get("/api/v1/audit?since=yesterday", code=400)

    @defer.inlineCallbacks
    def test_emptyControllers(self):
        """
        Daemon sets and pod clusters are lists, empty without any;
        services too.
        """
        self.assertEqual((yield self.get("/api/v1/daemon_sets")), {"daemon_sets": []})
        self.assertEqual((yield self.get("/api/v1/pod_clusters")), {"pod_clusters": []})
        self.assertEqual((yield self.get("/api/v1/services")), {"services": []})

    @defer.inlineCallbacks
    def test_services(self):
        """
        C{/api/v1/services} has each service's template, settings and pods,
        as C{p2 status --json} does.
        """
        from p2twisted import services
        yield services.addService(self.store, "site", "static", {"directory": "/srv"})
        found = (yield self.get("/api/v1/services"))["services"]
        self.assertEqual([(s["service"], s["template"], s["settings"]["directory"], s["nodes"])
                          for s in found], [("site", "static", "/srv", [])])

    @defer.inlineCallbacks
    def test_unknownPath(self):
        """
        An unknown path under C{/api/} is a 404 JSON error, whatever the
        method; C{/} serves the dashboard page.
        """
        for method in (b"GET", b"POST", b"DELETE"):
            for path in ("/api/v1/nothing", "/api"):
                response, body = yield self.ask(method, path, code=404)
                self.assertIn("no such API path", body["error"])
        response, body = yield self.ask(b"GET", "/", code=200)
        self.assertIn(b"<html", body.lower())

    @defer.inlineCallbacks
    def test_pathNotUTF8(self):
        """
        A path that is not UTF-8 once unquoted is a 400 JSON error like
        every other, not klein's text.
        """
        for path in ("/api/v1/nodes/%ff", "/%c3%28"):
            response, body = yield self.ask(b"GET", path, code=400)
            self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                             [b"application/json"])
            self.assertIn("not UTF-8", body["error"])

    @defer.inlineCallbacks
    def test_corruptRecords(self):
        """
        An unreadable RC record is left out of the list and is a 500 naming
        its key when asked for; a node with unreadable labels is listed
        with the error.
        """
        self.put(keys.replicationController("broken"), b"{not json")
        self.put(keys.label("node", "n2"), b"[]")
        found = (yield self.get("/api/v1/rcs"))["rcs"]
        self.assertEqual([r["id"] for r in found], ["web"])
        broken = yield self.get("/api/v1/rcs/broken", code=500)
        self.assertIn("replication_controllers/broken", broken["error"])
        nodes = {n["node"]: n for n in (yield self.get("/api/v1/nodes"))["nodes"]}
        self.assertEqual(nodes["n2"]["labels"], {})
        self.assertIn("labels/node/n2", nodes["n2"]["error"])

    @defer.inlineCallbacks
    def test_storeNotOpen(self):
        """
        Before its store is open, the API answers 503 with a JSON error.
        """
        self.api.store = None
        found = yield self.get("/api/v1/nodes", code=503)
        self.assertIn("not open", found["error"])


class SafetyTests(FleetMixin, unittest.TestCase):
    """
    Writes need the token; nothing gives away credentials; no other origin
    is allowed.
    """

    @defer.inlineCallbacks
    def assertRefused(self, message="Authorization: Bearer", **kw):
        """
        A scale of RC C{web} to 5 is a 401 JSON error saying C{message} and
        changes nothing.
        """
        before = self.snapshot().version(keys.replicationController("web"))
        response, body = yield self.ask(b"POST", "/api/v1/rcs/web/scale", {"replicas": 5},
                                        code=401, **kw)
        self.assertIn(message, body["error"])
        self.assertEqual(response.headers.getRawHeaders(b"www-authenticate"),
                         [b'Bearer realm="p2-api"'])
        self.assertEqual(self.snapshot().version(keys.replicationController("web")), before)
        return body

    @defer.inlineCallbacks
    def test_noToken(self):
        """
        A write without a token, with another, with a prefix of it, or
        with it under another scheme is a 401 and changes nothing.
        """
        yield self.assertRefused()
        yield self.assertRefused(token=b"wrong")
        yield self.assertRefused(token=TOKEN[:-1])
        yield self.assertRefused(token=TOKEN + b"x")
        yield self.assertRefused(headers={b"Authorization": [b"Basic " + TOKEN]})

    @defer.inlineCallbacks
    def test_everyWriteGuarded(self):
        """
        Every write endpoint answers 401 without the token.
        """
        from p2twisted.web.openapi import OPERATIONS
        for method, path, operationId, summary, query, body in OPERATIONS:
            if method == "get":
                continue
            path = path.replace("{kind}", "node").replace("{", "").replace("}", "")
            yield self.ask(method.upper().encode(), path, b"{}", code=401)

    @defer.inlineCallbacks
    def test_writesOffWithoutTokenFile(self):
        """
        Without a token, writes are refused whatever is sent.
        """
        self.api._token = None
        yield self.assertRefused("without --token-file", token=b"")
        yield self.assertRefused("without --token-file", token=TOKEN)

    @defer.inlineCallbacks
    def test_tokenNeverLogged(self):
        """
        Neither a refused nor an accepted token appears in any log event.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield self.ask(b"POST", "/api/v1/rcs/web/scale", {"replicas": 3}, token=b"guess",
                       code=401)
        yield self.ask(b"POST", "/api/v1/rcs/web/scale", {"replicas": 3}, token=TOKEN,
                       code=200)
        self.assertTrue(events)
        text = repr(events)
        self.assertNotIn(TOKEN.decode(), text)
        self.assertNotIn("guess", text)

    @defer.inlineCallbacks
    def test_noStoreCredentials(self):
        """
        The store URL an agent reports is shown without its password.
        """
        self.put(keys.status("agents", "n1"), AgentStatus(
            "n1", store="zk://p2:sekrit@zk1:2181/p2", connected=True).toBytes())
        response, body = yield self.ask(b"GET", "/api/v1/nodes/n1", code=200)
        self.assertEqual(body["status"]["store"], "zk://p2:***@zk1:2181/p2")
        for path in ("/api/v1/nodes", "/api/v1/pods", "/api/v1/rcs", "/api/v1/services"):
            response, body = yield self.ask(b"GET", path, code=200)
            self.assertNotIn("sekrit", json.dumps(body))

    @defer.inlineCallbacks
    def test_noCORS(self):
        """
        No answer allows another origin: a preflight is refused and a
        request from another origin gets no C{Access-Control-*} header.
        """
        origin = {b"Origin": [b"http://evil.example"]}
        response, body = yield self.ask(b"GET", "/api/v1/nodes", headers=origin, code=200)
        preflight, _ = yield self.ask(b"OPTIONS", "/api/v1/rcs/web/scale", headers={
            b"Origin": [b"http://evil.example"], b"Access-Control-Request-Method": [b"POST"]})
        self.assertGreaterEqual(preflight.code, 400)
        for answer in (response, preflight):
            self.assertFalse([name for name, values in answer.headers.getAllRawHeaders()
                              if name.lower().startswith(b"access-control-")])


class LoopbackHostTests(ServedMixin, unittest.TestCase):
    """
    An API listening on loopback (as C{p2-api} does by default) answers
    only requests for a loopback name.
    """

    @defer.inlineCallbacks
    def test_rebindingRefused(self):
        """
        A page of another site whose name resolves to 127.0.0.1 (DNS
        rebinding: the browser then takes the API for that site's own and
        lets the page read it) sends that name in C{Host}: it is a 403 JSON
        error, for reads, the page and the event stream alike; requests for
        localhost, 127.0.0.1 and [::1] are served.
        """
        from p2twisted.store.memory import MemoryStore
        self.serve(API(MemoryStore(), loopbackOnly=True))
        for host in (b"evil.example:8080", b"evil.example", b"127.0.0.1.evil.example:80",
                     b"[::1].evil.example", b""):
            for path in ("/api/v1/nodes", "/", "/api/v1/events"):
                response, body = yield self.ask(b"GET", path, headers={b"Host": [host]},
                                                code=403)
                self.assertIn("loopback", body["error"])
        for host in (b"127.0.0.1:8080", b"localhost", b"LOCALHOST:80", b"[::1]:8080",
                     b"127.0.0.2"):
            yield self.ask(b"GET", "/api/v1/nodes", headers={b"Host": [host]}, code=200)


class BoundedRequestTests(unittest.TestCase):

    def test_cutBodyNeverHandled(self):
        """
        A request whose body went past L{MAX_BODY} is answered 413 and never
        handled, even when its last chunk arrived with the rest (its body,
        cut short, might otherwise parse as a smaller manifest).
        """
        from twisted.web.resource import Resource
        from twisted.web.test.requesthelper import DummyChannel
        from p2twisted.web.app import MAX_BODY, BoundedRequest
        handled = []

        class Recording(Resource):
            isLeaf = True

            def render(self, request):
                handled.append(request)
                return b""
        channel = DummyChannel()
        channel.site = Site(Recording())
        request = BoundedRequest(channel)
        request.gotLength(None)
        request.handleContentChunk(b"x" * MAX_BODY)
        request.handleContentChunk(b"x")
        request.requestReceived(b"PUT", b"/api/v1/nodes/n1/pods/web", b"HTTP/1.1")
        self.assertEqual(handled, [])
        self.assertTrue(channel.transport.written.getvalue().startswith(b"HTTP/1.1 413 "))
        self.assertTrue(channel.transport.disconnected)


class WriteTests(FleetMixin, unittest.TestCase):
    """
    With the token, writes go through the CLI's paths (intent, labels, the
    audited edit plans).
    """

    def write(self, method, path, body=None, code=200):
        return self.ask(method, path, body, token=TOKEN, code=code).addCallback(lambda r: r[1])

    @defer.inlineCallbacks
    def test_scheduleUnschedule(self):
        """
        PUT of a manifest schedules it on the node (its marker made too);
        DELETE removes it, and a second DELETE is a 404.
        """
        pod = b"id: extra\nlaunchables:\n  app:\n    launchable_type: hoist\n" \
              b"    location: file:///artifacts/extra.tar.gz\n"
        found = yield self.write(b"PUT", "/api/v1/nodes/n3/pods/extra", pod)
        snapshot = self.snapshot()
        self.assertEqual(snapshot.intent("n3", "extra").value, pod)
        self.assertIsNotNone(snapshot.marker("n3"))
        self.assertEqual(found["intent_sha"], snapshot.intentSha("n3", "extra"))
        yield self.write(b"DELETE", "/api/v1/nodes/n3/pods/extra")
        self.assertIsNone(self.snapshot().intent("n3", "extra"))
        missing = yield self.write(b"DELETE", "/api/v1/nodes/n3/pods/extra", code=404)
        self.assertIn("not scheduled", missing["error"])

    @defer.inlineCallbacks
    def test_scheduleBadManifest(self):
        """
        An invalid manifest, or one whose id is not the path's pod, is a
        400 saying why, and nothing is written.
        """
        before = dict(self.snapshot().entries)
        bad = yield self.write(b"PUT", "/api/v1/nodes/n3/pods/extra", b"id: [", code=400)
        self.assertTrue(bad["error"])
        other = yield self.write(b"PUT", "/api/v1/nodes/n3/pods/extra", manifest(3), code=400)
        self.assertIn("not extra", other["error"])
        yield self.write(b"PUT", "/api/v1/nodes/bad%20node/pods/web", manifest(3), code=400)
        self.assertEqual(dict(self.snapshot().entries), before)

    @defer.inlineCallbacks
    def test_bodyTooLarge(self):
        """
        A body over 1 MiB is a 413, and nothing is written.
        """
        before = dict(self.snapshot().entries)
        pod = b"id: extra\n#" + b"x" * (1024 * 1024)
        yield self.write(b"PUT", "/api/v1/nodes/n3/pods/extra", pod, code=413)
        self.assertEqual(dict(self.snapshot().entries), before)

    @defer.inlineCallbacks
    def test_labels(self):
        """
        PATCH sets and removes labels, GET shows them, for nodes and pods
        (C{NODE/POD_ID}); a malformed change is a 400 and changes nothing.
        """
        found = yield self.write(b"PATCH", "/api/v1/labels/node/n1",
                                 {"set": {"zone": "a"}, "remove": ["tier"]})
        self.assertEqual(found["labels"], {"zone": "a"})
        self.assertEqual(self.snapshot().nodeLabels("n1"), {"zone": "a"})
        yield self.write(b"PATCH", "/api/v1/labels/pod/n1/web", {"set": {"canary": "yes"}})
        shown = yield self.get("/api/v1/labels/pod/n1/web")
        self.assertEqual(shown["labels"]["canary"], "yes")
        bad = yield self.write(b"PATCH", "/api/v1/labels/node/n1", {"set": {"bad key": "x"}},
                               code=400)
        self.assertTrue(bad["error"])
        yield self.write(b"PATCH", "/api/v1/labels/node/n1", [1], code=400)
        badId = yield self.write(b"PATCH", "/api/v1/labels/node/bad%20node",
                                 {"set": {"a": "b"}}, code=400)
        self.assertIn("bad node", badId["error"])
        yield self.write(b"PATCH", "/api/v1/labels/nothing/n1", {"set": {}}, code=404)
        self.assertEqual(self.snapshot().nodeLabels("n1"), {"zone": "a"})

    @defer.inlineCallbacks
    def test_scale(self):
        """
        Scaling an RC writes its record and an audit event by the API's
        author; an unknown RC is a 404, a bad count a 400.
        """
        found = yield self.write(b"POST", "/api/v1/rcs/web/scale", {"replicas": 3})
        self.assertEqual((found["desired"], found["changed"]), (3, True))
        self.assertEqual(self.snapshot().rc("web").replicas_desired, 3)
        events, corrupt = self.fleet.run(audit.read(self.store))
        self.assertEqual([(e.who, e.action, e.details) for e in events],
                         [("tester", "scale", {"from": 2, "to": 3})])
        yield self.write(b"POST", "/api/v1/rcs/nope/scale", {"replicas": 1}, code=404)
        for bad in ({"replicas": -1}, {"replicas": "3"}, {}, b"not json"):
            yield self.write(b"POST", "/api/v1/rcs/web/scale", bad, code=400)
        self.assertEqual(self.snapshot().rc("web").replicas_desired, 3)

    @defer.inlineCallbacks
    def test_rollStartAbort(self):
        """
        POST C{/api/v1/rolls} starts a roll to a new manifest (201, its
        progress); scaling an RC in a roll is refused; POST
        C{.../abort} ends it where it stands.
        """
        response, found = yield self.ask(
            b"POST", "/api/v1/rolls", {"from": "web", "manifest": manifest(2).decode(),
                                       "min_healthy": 1}, token=TOKEN, code=201)
        rollId = found["id"]
        from p2twisted.web.openapi import document
        self.assertEqual(sorted(c for c in document()["paths"]["/api/v1/rolls"]["post"][
            "responses"] if c.startswith("2")), ["201"], "/openapi.json says what it answers")
        self.assertEqual(response.headers.getRawHeaders(b"location"),
                         [("/api/v1/rolls/%s" % (rollId,)).encode()])
        self.assertEqual((found["old_rc"], found["new"]["desired"], found["min_healthy"]),
                         ("web", 0, 1))
        self.assertIsNotNone(self.snapshot().roll(rollId))
        refused = yield self.write(b"POST", "/api/v1/rcs/web/scale", {"replicas": 1}, code=400)
        self.assertIn("roll", refused["error"])
        again = yield self.write(b"POST", "/api/v1/rolls",
                                 {"from": "web", "manifest": manifest(3).decode(),
                                  "min_healthy": 1}, code=400)
        self.assertIn("already in roll", again["error"])
        yield self.write(b"POST", "/api/v1/rolls/%s/abort" % (rollId,))
        self.assertIsNone(self.snapshot().roll(rollId))
        yield self.write(b"POST", "/api/v1/rolls/%s/abort" % (rollId,), code=404)
        events, corrupt = self.fleet.run(audit.read(self.store))
        self.assertEqual([e.action for e in events if e.kind == "roll"], ["start", "abort"])

    @defer.inlineCallbacks
    def test_rollBadRequest(self):
        """
        A roll request missing its target or naming an unknown RC is
        refused and starts nothing.
        """
        yield self.write(b"POST", "/api/v1/rolls", {"from": "web", "min_healthy": 1}, code=400)
        yield self.write(b"POST", "/api/v1/rolls", {"from": "web", "to": "nope",
                                                    "min_healthy": 1}, code=404)
        yield self.write(b"POST", "/api/v1/rolls", {"from": "web", "to": "web",
                                                    "min_healthy": 1, "speed": 9}, code=400)
        self.assertEqual(self.snapshot().rolls(), {})


class ViewTests(unittest.TestCase):
    """
    The pure views of L{p2twisted.web.views}.
    """

    def test_safeURL(self):
        """
        A URL's password is hidden; URLs without one, and not URLs, are
        left as they are.
        """
        from p2twisted.web.views import safeURL
        self.assertEqual([safeURL(u) for u in (
            "zk://p2:pw@h1:2181,h2:2181/p2", "etcd://user:p%40ss@h:2379/p2",
            "local:///var/lib/p2/state.db", "consul://h:8500/p2?token_file=/etc/t", None,
            "not a url")],
            ["zk://p2:***@h1:2181,h2:2181/p2", "etcd://user:***@h:2379/p2",
             "local:///var/lib/p2/state.db", "consul://h:8500/p2?token_file=/etc/t", None,
             "not a url"])

    def test_daemonSets(self):
        """
        Daemon sets are shown from the read model's records once it has
        them: their fields, the manifest as its SHA, and their farm's last
        status.
        """
        import attr

        from p2twisted.orchestrate.snapshot import Snapshot, manifestSha
        from p2twisted.store.common import Entry
        from p2twisted.web import views

        @attr.s(frozen=True)
        class Record(object):
            id = attr.ib()
            manifest = attr.ib()
            node_selector = attr.ib(default="")

        class Later(Snapshot):
            def daemonSets(self):
                return {"ds1": Record("ds1", manifest(1))}

        key = keys.status("ds", "ds1")
        snapshot = Later({key: Entry(key, b'{"reason": "all placed"}', 1)})
        self.assertEqual(views.daemonSets(snapshot), [{
            "id": "ds1", "manifest_sha": manifestSha(manifest(1)), "node_selector": "",
            "farm": {"reason": "all placed"}}])
        self.assertEqual(views.daemonSets(Snapshot({})), [])
