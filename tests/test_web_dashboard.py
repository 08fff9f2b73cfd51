# -*- test-case-name: tests.test_web_dashboard -*-
"""
The dashboard (L{p2twisted.web.dashboard}): the documents its event stream
carries, the page as served, and the page itself in real headless Chromium
(L{tests.chromium}) moving live -- a node and a pod turning healthy, a
rolling update's counts moving, a dropped connection resumed -- while it
stays open, never reloaded.
"""

import json
import os
import re

import attr
import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from p2twisted.labels import encodeLabels
from p2twisted.manifest import parseManifest
from p2twisted.orchestrate import audit
from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.records import Health, PodStatus
from p2twisted.records.controllers import AuditEvent, ReplicationController, Roll
from p2twisted.store import keys, openStore
from p2twisted.store.common import Delete, Put
from p2twisted.store.memory import MemoryStore
from p2twisted.web import dashboard
from p2twisted.web.app import API
from p2twisted.web.events import EventStream
from tests.chromium import Chromium
from tests.cli import P2CommandMixin
from tests.fleetprocesses import Fleet
from tests.orchfleet import manifest
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit

#: Where a test saves what the page showed (in trial's working directory,
#: C{_trial_temp}).
SCREENSHOT = "dashboard-rolling-update.png"


def sha(text):
    return parseManifest(text).sha()


def machine(node):
    return json.dumps({"node": node}).encode()


class DocumentsTests(unittest.TestCase):
    """
    L{dashboard.documents}: what the page is told, from a snapshot.
    """

    def setUp(self):
        self.store = MemoryStore()

    def put(self, key, value):
        self.successResultOf(self.store.put(key, value))

    def documents(self, **kw):
        snapshot = self.successResultOf(Snapshot.read(self.store, dashboard.TREES))
        return dashboard.documents(snapshot, **kw)

    def test_nodeRow(self):
        """
        A node's document is the API's node with its pods: intent and
        reality SHAs, health, the agent's state and last error.
        """
        v1, v2 = manifest(1), manifest(2)
        self.put(keys.label("node", "n1"), encodeLabels({"tier": "web"}))
        self.put(keys.machine("n1"), machine("n1"))
        self.put(keys.intent("n1", "web"), v2)
        self.put(keys.reality("n1", "web"), v1)
        self.put(keys.health("web", "n1"), Health("web", "n1", "passing", "ok", 1.0,
                                                  sha(v1)).toBytes())
        self.put(keys.status("pods", "n1", "web"),
                 PodStatus("web", "n1", "failed", sha(v2), "fetch failed: 404", 2).toBytes())
        self.put(keys.label("node", "n2"), encodeLabels({}))
        found = self.documents()
        self.assertEqual(sorted(found), [("node", "n1"), ("node", "n2")])
        row = found["node", "n1"]
        self.assertEqual((row["node"], row["agent"], row["labels"]), ("n1", "up", {"tier": "web"}))
        (pod,) = row["pods"]
        self.assertEqual((pod["pod_id"], pod["intent_sha"], pod["reality_sha"], pod["health"],
                          pod["health_sha"], pod["state"], pod["last_error"]),
                         ("web", sha(v2), sha(v1), "passing", sha(v1), "failed",
                          "fetch failed: 404"))
        self.assertEqual((found["node", "n2"]["agent"], found["node", "n2"]["pods"]), ("down", []))

    def test_roll(self):
        """
        A roll's document has both RCs' desired, current and healthy counts
        and its target, and the roll farm's last word.
        """
        old = ReplicationController("web", manifest(1), 1, "tier=web")
        new = ReplicationController("web-2", manifest(2), 1, "tier=web")
        self.put(old.key, old.toBytes())
        self.put(new.key, new.toBytes())
        roll = Roll("web", "web-2", desired=2, min_healthy=1)
        self.put(roll.key, roll.toBytes())
        self.put(keys.status("roll", "web-2"),
                 json.dumps({"reason": "waiting for health"}).encode())
        for node, rc in (("n1", old), ("n2", new)):
            self.put(keys.machine(node), machine(node))
            self.put(keys.intent(node, "web"), rc.manifest)
            self.put(keys.reality(node, "web"), rc.manifest)
            self.put(keys.label("pod", node + "/web"), encodeLabels(rc.labelsForPods()))
        self.put(keys.health("web", "n1"), Health("web", "n1", "passing", "", 1.0,
                                                  old.sha).toBytes())
        found = self.documents()["roll", "web-2"]
        self.assertEqual((found["id"], found["old_rc"], found["new_rc"], found["desired"],
                          found["min_healthy"]), ("web-2", "web", "web-2", 2, 1))
        self.assertEqual({k: found["old"][k] for k in ("desired", "current", "healthy")},
                         {"desired": 1, "current": 1, "healthy": 1})
        self.assertEqual({k: found["new"][k] for k in ("desired", "current", "healthy")},
                         {"desired": 1, "current": 1, "healthy": 0})
        self.assertEqual(found["farm"], {"reason": "waiting for health"})

    def test_controllers(self):
        """
        Replication controllers are listed with their pods' counts, and
        daemon sets and pod clusters when the read model has them.
        """
        rc = ReplicationController("web", manifest(1), 2, "tier=web")
        self.put(rc.key, rc.toBytes())
        found = self.documents()["rc", "web"]
        self.assertEqual((found["id"], found["selector"], found["desired"], found["current"],
                          found["disabled"]), ("web", "tier=web", 2, 0, False))

        @attr.s
        class DaemonSet(object):
            pod_id = attr.ib()
            node_selector = attr.ib()

        class Later(Snapshot):
            def daemonSets(self):
                return {"agents": DaemonSet("agent", "")}

            def podClusters(self):
                return {}
        snapshot = self.successResultOf(Later.read(self.store, dashboard.TREES))
        found = dashboard.documents(snapshot)
        self.assertEqual(found["daemon_set", "agents"],
                         {"id": "agents", "pod_id": "agent", "node_selector": "", "farm": None})
        self.assertNotIn("pod_cluster", [kind for kind, _ in found])

    def test_auditLatest(self):
        """
        The audit timeline gets the latest events only, an unreadable one
        left out.
        """
        self.successResultOf(audit.append(self.store, [
            AuditEvent("rc", "web", "scale", {"replicas": n}) for n in range(5)], "alice", 100.0))
        self.put(keys.audit("20991231T000000.000000Z", "x"), b"not json")
        found = self.documents(auditLimit=3)
        events = [found[k] for k in sorted(k for k in found if k[0] == "audit")]
        self.assertEqual([(e["who"], e["action"], e["details"]) for e in events],
                         [("alice", "scale", {"replicas": n}) for n in (2, 3, 4)])


class ServedTests(unittest.TestCase):
    """
    The page as the API serves it: its files, and nothing from elsewhere.
    """

    def setUp(self):
        port = reactor.listenTCP(0, Site(API(MemoryStore()).resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = "http://127.0.0.1:%d" % (port.getHost().port,)

    @defer.inlineCallbacks
    def get(self, path):
        response = yield treq.get(self.base + path, persistent=False)
        body = yield response.content()
        return response, body

    @defer.inlineCallbacks
    def test_files(self):
        """
        C{/} is the page, its script and style are under C{/static/}, each
        with its type and a policy that lets the page load nothing from
        anywhere else; an unknown file is a 404 with a JSON error, as under
        C{/api/} (and C{/static/} lists nothing).
        """
        for path, kind in (("/", b"text/html; charset=utf-8"),
                           ("/static/dashboard.js", b"text/javascript; charset=utf-8"),
                           ("/static/dashboard.css", b"text/css; charset=utf-8")):
            response, body = yield self.get(path)
            self.assertEqual((response.code, response.headers.getRawHeaders(b"content-type")),
                             (200, [kind]), path)
            policy = response.headers.getRawHeaders(b"content-security-policy")[0]
            self.assertIn(b"default-src 'none'", policy)
            self.assertIn(b"script-src 'self'", policy)
        for path in ("/static/nothing.js", "/nothing", "/openapi.json/", "/static/"):
            response, body = yield self.get(path)
            self.assertEqual((response.code, response.headers.getRawHeaders(b"content-type")),
                             (404, [b"application/json"]), path)
            self.assertIn("error", json.loads(body))

    def test_offline(self):
        """
        The page's files name no other host (no CDN: it works offline) and
        use no inline script the policy would block.
        """
        for name in os.listdir(dashboard.STATIC):
            with open(os.path.join(dashboard.STATIC, name), encoding="utf-8") as f:
                text = f.read()
            self.assertEqual(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), [], name)
            if name.endswith(".html"):
                self.assertEqual(re.findall(r"<script(?![^>]*\bsrc=)", text), [], name)
                self.assertNotIn(" style=", text)


class _RecordingEvents(Resource):
    """
    C{/api/v1/events} of a test's app: the stream, remembering each
    request (and so the C{Last-Event-ID} it came with).
    """

    isLeaf = True

    def __init__(self, stream):
        Resource.__init__(self)
        self.stream = stream
        self.requests = []
        self.times = []  # when each request came
        #: A Deferred the next requests wait for before they are answered.
        self.held = None
        #: How many of the next requests to answer 503 (as p2-api does
        #: before its store is open).
        self.refuse = 0

    def render_GET(self, request):
        self.requests.append(request)
        self.times.append(reactor.seconds())
        if self.refuse:
            self.refuse -= 1
            request.setResponseCode(503)
            request.setHeader(b"Content-Type", b"application/json")
            return b'{"error": "the coordination store is not open yet; retry shortly"}\n'
        if self.held is None:
            self.stream.render(request)
        else:
            self.held.addCallback(lambda _: self.stream.render(request))
        return NOT_DONE_YET


#: Record in the page, on every change of its DOM, each new state of the
#: fleet grid's cells and node headers and of the rolls' counts, in
#: C{window.seen} -- what a person watching would have seen, in order.
RECORDER = """(() => {
  window.seen = {cells: {}, nodes: {}, rolls: {}};
  window.marker = "loaded once";
  const note = (history, key, value) => {
    const list = history[key] = history[key] || [];
    if (list[list.length - 1] !== value) list.push(value);
  };
  const look = () => {
    for (const td of document.querySelectorAll("td.pod[data-pod]"))
      note(seen.cells, td.dataset.node + "/" + td.dataset.pod, td.dataset.phase);
    for (const th of document.querySelectorAll("th.node"))
      note(seen.nodes, th.dataset.node, th.dataset.health);
    for (const roll of document.querySelectorAll(".roll"))
      note(seen.rolls, roll.dataset.roll, [roll.dataset.old, roll.dataset.new,
           roll.dataset.healthy, roll.dataset.target].join(" "));
  };
  new MutationObserver(look).observe(document, {subtree: true, childList: true,
                                                attributes: true});
  look();
  return true;
})()"""


class BrowserMixin(object):
    """
    The page in a real headless Chromium.
    """

    @defer.inlineCallbacks
    def openPage(self, resource, width=1100, height=720):
        """
        Serve C{resource} on loopback and open it in a new browser.

        @return: L{Deferred} firing with the L{tests.chromium.Page}, its
            recorder (L{RECORDER}) running.
        """
        browser = yield Chromium.launch(self)
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        page = yield browser.newPage(width, height)
        yield page.navigate("http://127.0.0.1:%d/" % (port.getHost().port,))
        yield page.evaluate(RECORDER)
        yield page.waitFor('document.getElementById("connection").dataset.state === "live" '
                           '&& p2dash.resets === 1', "the page to connect")
        return page

    def phase(self, node, pod, phase):
        return ('document.querySelector(\'td[data-node="%s"][data-pod="%s"]\')'
                '?.dataset.phase === "%s"' % (node, pod, phase))

    def nodeHealth(self, node, health):
        return ('document.querySelector(\'th.node[data-node="%s"]\')?.dataset.health === "%s"'
                % (node, health))

    @defer.inlineCallbacks
    def assertNeverReloaded(self, page):
        """
        The page is the one loaded at first, told everything once (one
        reset) and changes since.
        """
        state = yield page.evaluate("({marker: window.marker, resets: p2dash.resets, "
                                    "changes: p2dash.changes})")
        self.assertEqual((state["marker"], state["resets"]), ("loaded once", 1))
        self.assertGreater(state["changes"], 0)


class LivePageTests(BrowserMixin, unittest.TestCase):
    """
    The page over a store the test writes to as agents would: every change
    shows without a reload, and a dropped connection resumes where it was.
    """

    timeout = 300

    @defer.inlineCallbacks
    def served(self):
        """
        The page and its event stream (a L{_RecordingEvents}) over a memory
        store, open in a browser.

        @return: L{Deferred} firing with C{(store, stream, events, page)}.
        """
        store = MemoryStore()
        stream = EventStream(store)
        self.addCleanup(stream.stop)
        root, apiV1 = dashboard.resource(), Resource()
        root.putChild(b"api", Resource())
        root.children[b"api"].putChild(b"v1", apiV1)
        events = _RecordingEvents(stream)
        apiV1.putChild(b"events", events)
        page = yield self.openPage(root)
        return store, stream, events, page

    @defer.inlineCallbacks
    def test_liveAndResumed(self):
        """
        A node appears (agent down), its agent comes up and it turns
        healthy; a pod scheduled there shows converging, then checked,
        then healthy with its SHA prefix, and its last error on hover
        while a new version fails to install.  The event stream's
        connection drops; what changed meanwhile shows once the page
        reconnects, which it does with the last id it saw, and is sent
        only what it missed (no reset, no reload).  The new version fails
        its health check, is unscheduled and leaves the grid.
        """
        store, stream, events, page = yield self.served()
        yield page.waitFor('document.getElementById("no-nodes").hidden === false', "no nodes")

        yield store.put(keys.label("node", "n1"), encodeLabels({"tier": "web"}))
        yield page.waitFor(self.nodeHealth("n1", "down"), "n1 listed, agent down")
        yield store.put(keys.machine("n1"), machine("n1"))
        yield page.waitFor(self.nodeHealth("n1", "healthy"), "n1's agent up")

        v1, v2 = manifest(1), manifest(2)
        yield store.put(keys.intent("n1", "web"), v1)
        yield page.waitFor(self.phase("n1", "web", "converging"), "web converging on n1")
        yield page.waitFor(self.nodeHealth("n1", "degraded"), "n1 degraded while web converges")
        yield store.put(keys.reality("n1", "web"), v1)
        yield page.waitFor(self.phase("n1", "web", "pending"), "web installed, not yet checked")
        yield store.put(keys.health("web", "n1"),
                        Health("web", "n1", "passing", "HTTP 200", 1.0, sha(v1)).toBytes())
        cell = 'document.querySelector(\'td[data-node="n1"][data-pod="web"]\')'
        shown = yield page.waitFor(self.phase("n1", "web", "healthy") + " && " + cell
                                   + ".textContent", "web healthy on n1")
        self.assertEqual(shown, sha(v1)[:7])
        yield page.waitFor(self.nodeHealth("n1", "healthy"), "n1 healthy again")

        yield store.transaction([Put(keys.intent("n1", "web"), v2), Put(
            keys.status("pods", "n1", "web"),
            PodStatus("web", "n1", "failed", sha(v2), "fetch web_2.tar.gz: 404 Not Found",
                      3).toBytes())])
        hover = yield page.waitFor(self.phase("n1", "web", "failing") + " && " + cell + ".title",
                                   "the failing install on n1")
        self.assertIn("last error: fetch web_2.tar.gz: 404 Not Found", hover)
        self.assertIn("intent  " + sha(v2), hover)
        self.assertIn("reality " + sha(v1), hover)
        seen = yield page.evaluate("seen")
        self.assertEqual(seen["nodes"]["n1"], ["down", "healthy", "degraded", "healthy",
                                                "degraded"])
        self.assertEqual(seen["cells"]["n1/web"], ["converging", "pending", "healthy", "failing"])

        # The connection drops; the page's reconnection is held until the
        # pod has changed and the stream has sent that on (to nobody).
        lastId = yield page.evaluate("p2dash.lastId")
        (request,) = events.requests
        events.held = defer.Deferred()
        request.channel.transport.loseConnection()
        yield waitFor(lambda: len(events.requests) == 2, timeout=60, what="the page to reconnect")
        self.assertEqual(events.requests[1].args, {b"last": [lastId.encode()]})
        state = yield page.evaluate('document.getElementById("connection").dataset.state')
        self.assertEqual(state, "reconnecting")
        position = stream.position
        yield store.put(keys.reality("n1", "web"), v2)
        yield store.delete(keys.status("pods", "n1", "web"))
        yield waitFor(lambda: stream.position == position + 1, timeout=60,
                      what="the stream to send the change")
        events.held.callback(None)
        yield page.waitFor(self.phase("n1", "web", "pending"), "v2 installed, after reconnecting")
        self.assertEqual(len(events.requests), 2)

        yield store.put(keys.health("web", "n1"),
                        Health("web", "n1", "critical", "HTTP 500", 2.0, sha(v2)).toBytes())
        yield page.waitFor(self.phase("n1", "web", "unhealthy"), "v2 failing its check")
        yield store.delete(keys.intent("n1", "web"))
        yield page.waitFor(self.phase("n1", "web", "removing"), "web unscheduled from n1")
        yield store.transaction([Delete(keys.reality("n1", "web")),
                                 Delete(keys.health("web", "n1"))])
        yield page.waitFor("!document.querySelector('td[data-pod]') && "
                           + self.nodeHealth("n1", "healthy"), "web gone from n1")
        state = yield page.evaluate("({connections: p2dash.connections, "
                                    "live: document.getElementById('connection').dataset.state})")
        self.assertEqual(state, {"connections": 2, "live": "live"})
        yield self.assertNeverReloaded(page)

    @defer.inlineCallbacks
    def test_serverRestarted(self):
        """
        When the server's stream ends (C{p2-api} stopping), the page
        reconnects; answered 503 (a C{p2-api} whose store is not open yet),
        it tries again, saying in the query where it was.  The new stream
        never saw what the page saw, so it sends a reset, which the page
        takes in place of what it had -- without a reload.
        """
        store, stream, events, page = yield self.served()
        yield store.put(keys.label("node", "n1"), encodeLabels({"tier": "web"}))
        yield page.waitFor(self.nodeHealth("n1", "down"), "n1 listed")
        lastId = yield page.evaluate("p2dash.lastId")
        events.held = defer.Deferred()
        events.refuse = 1
        stream.stop()
        yield waitFor(lambda: len(events.requests) == 3, timeout=60, what="the page to retry")
        self.assertEqual(events.requests[1].args, {b"last": [lastId.encode()]})
        self.assertEqual(events.requests[2].args, {b"last": [lastId.encode()]})
        yield store.put(keys.machine("n1"), machine("n1"))
        yield store.put(keys.label("node", "n2"), encodeLabels({}))
        events.held.callback(None)
        yield page.waitFor(self.nodeHealth("n1", "healthy") + " && "
                           + self.nodeHealth("n2", "down"), "the fleet as the new stream has it")
        state = yield page.evaluate("({marker: window.marker, resets: p2dash.resets})")
        self.assertEqual(state, {"marker": "loaded once", "resets": 2})


    @defer.inlineCallbacks
    def test_backoff(self):
        """
        While the server keeps failing, the page waits longer before each
        attempt (1 s doubling, +-20%), so many pages open through an outage
        do not hammer it in step; once a stream is live it starts from 1 s
        again.  It resumes without a reload.
        """
        store, stream, events, page = yield self.served()
        yield store.put(keys.label("node", "n1"), encodeLabels({"tier": "web"}))
        yield page.waitFor(self.nodeHealth("n1", "down"), "n1 listed")
        events.refuse = 2
        stream.stop()
        yield page.waitFor('p2dash.connections === 2 && document.getElementById('
                           '"connection").dataset.state === "live"', "the page to come back")
        delays = yield page.evaluate("p2dash.delays")
        self.assertEqual(len(delays), 3)
        self.assertEqual(len(events.requests), 4)
        for k, delay in enumerate(delays):
            self.assertTrue(0.8 * 1000 * 2 ** k <= delay <= 1.2 * 1000 * 2 ** k, delays)
            # (never sooner than the page said; later on a slow machine)
            self.assertGreaterEqual(events.times[k + 1] - events.times[k] + 0.05, delay / 1000.0)
        shown = yield page.evaluate('document.getElementById("connection").dataset.retryMs')
        self.assertEqual(shown, str(delays[-1]))
        self.assertEqual((yield page.evaluate("p2dash.failures")), 0)

        stream.stop()
        yield page.waitFor("p2dash.connections === 3", "the page to come back again")
        delays = yield page.evaluate("p2dash.delays")
        self.assertTrue(800 <= delays[3] <= 1200, delays)
        yield store.put(keys.machine("n1"), machine("n1"))
        yield page.waitFor(self.nodeHealth("n1", "healthy"), "n1 up, after reconnecting")
        self.assertEqual((yield page.evaluate("window.marker")), "loaded once")


class RollingUpdatePageTests(BrowserMixin, P2CommandMixin, unittest.TestCase):
    """
    The page served by the API over a real fleet: two real agents
    (C{twistd p2-agent}, runit, HTTP pods), a real orchestrator, and a
    person's C{p2} commands.
    """

    timeout = 600

    @defer.inlineCallbacks
    def test_fleetAndRollingUpdate(self):
        """
        With the page open from the start: the nodes' agents come up and
        the nodes turn healthy; an RC of two places its pods, which turn
        healthy; a rolling update to version 2 moves the counts, one pod at
        a time, from old to new (a screenshot of it is saved in
        C{_trial_temp}); when it is done the roll leaves the page, both
        pods are healthy on version 2 and the audit timeline tells it.
        """
        requireRunit()
        store = yield openStore(self.url, reactor)
        self.addCleanup(store.close)
        fleet = Fleet(self, self.url, store, ("n1", "n2"))
        for node in fleet.nodes:
            yield fleet.label(node, tier="web")
        api = API(store)
        self.addCleanup(api.stop)
        page = yield self.openPage(api.resource(), 960, 700)
        for node in fleet.nodes:
            yield page.waitFor(self.nodeHealth(node, "down"), "%s listed, agent down" % (node,))

        fleet.startAgents()
        fleet.startOrchestrator()
        for node in fleet.nodes:
            yield page.waitFor(self.nodeHealth(node, "healthy"), "%s's agent up" % (node,))
        yield self.succeed("rc", "create", "--manifest", fleet.manifestFile("1"), "--selector",
                           "tier=web", "--replicas", "2", "--id", "web")
        for node in fleet.nodes:
            yield page.waitFor(self.phase(node, "web", "healthy"), "web healthy on %s" % (node,))
        yield page.waitFor("document.querySelector('tr[data-controller=\"rc/web\"]')"
                           "?.dataset.pods === '2/2 (2 healthy)'", "the RC's counts")

        path = fleet.manifestFile("2")
        target = sha(fleet.versions["2"])
        yield self.succeed("roll", "start", "--from", "web", "--manifest", path,
                           "--min-healthy", "1", "--delay", "2")
        roll = "document.querySelector('.roll')"
        yield page.waitFor(roll + "?.dataset.new === '1'", "the roll's first new pod")
        yield page.screenshot(SCREENSHOT)
        yield page.waitFor("!document.querySelector('.roll') && " + " && ".join(
            self.phase(node, "web", "healthy") + " && document.querySelector("
            "'td[data-node=\"%s\"]').dataset.sha === '%s'" % (node, target)
            for node in fleet.nodes), "the roll to finish, both pods healthy on version 2",
            timeout=300)
        yield page.waitFor("document.querySelector('#timeline li[data-kind=\"roll\"]')",
                           "the roll in the audit timeline")

        seen = yield page.evaluate("seen")
        for node in fleet.nodes:
            self.assertEqual(seen["nodes"][node][:2], ["down", "healthy"], node)
            self.assertEqual(seen["cells"][node + "/web"][-1], "healthy", node)
            self.assertIn("converging", seen["cells"][node + "/web"], node)
        (counts,) = seen["rolls"].values()
        counts = [[int(n) for n in line.split()] for line in counts]
        news = [new for old, new, healthy, desired in counts]
        olds = [old for old, new, healthy, desired in counts]
        self.assertEqual(news, sorted(news), "new pods only ever grew: %r" % (counts,))
        self.assertEqual(olds, sorted(olds, reverse=True),
                         "old pods only ever went: %r" % (counts,))
        self.assertGreaterEqual(len(set(news)), 2, counts)
        self.assertIn(1, news, counts)
        self.assertEqual({desired for old, new, healthy, desired in counts}, {2})
        self.assertTrue(all(healthy >= 1 for old, new, healthy, desired in counts), counts)
        yield self.assertNeverReloaded(page)
