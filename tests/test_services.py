"""
Tests for L{p2twisted.services}, against a L{MemoryStore}.
"""

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted import intent, services
from p2twisted.manifest import parseManifest
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore
from p2twisted.templates import SettingsError, UnknownTemplate


class ServicesTests(unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore(clock=reactor)
        self.artifacts = os.path.abspath(self.mktemp())
        self.url = "file://" + self.artifacts

    @defer.inlineCallbacks
    def test_addGet(self):
        added = yield services.addService(self.store, "web", "static",
                                          {"directory": "/srv", "port": "9000"})
        got = yield services.getService(self.store, "web")
        self.assertEqual((got.template, got.settings["port"]), ("static", 9000))
        self.assertEqual(got.settings, added.settings)
        entry = yield self.store.get(keys.service("web"))
        self.assertIn(b'"template": "static"', entry.value)

    @defer.inlineCallbacks
    def test_addExisting(self):
        yield services.addService(self.store, "web", "static", {"directory": "/srv"})
        yield self.assertFailure(
            services.addService(self.store, "web", "static", {"directory": "/x"}),
            services.ServiceExists)
        yield services.addService(self.store, "web", "static", {"directory": "/x"},
                                  replace=True)
        got = yield services.getService(self.store, "web")
        self.assertEqual(got.settings["directory"], "/x")

    @defer.inlineCallbacks
    def test_addBad(self):
        yield self.assertFailure(services.addService(self.store, "web", "nope", {}),
                                 UnknownTemplate)
        yield self.assertFailure(services.addService(self.store, "web", "static", {}),
                                 SettingsError)
        self.assertIsNone((yield self.store.get(keys.service("web"))))

    @defer.inlineCallbacks
    def test_missing(self):
        e = yield self.assertFailure(services.getService(self.store, "nope"),
                                     services.ServiceNotFound)
        self.assertIn("there is no service nope", str(e))

    @defer.inlineCallbacks
    def test_listUpdateRemove(self):
        yield services.addService(self.store, "a", "static", {"directory": "/srv"})
        yield services.addService(self.store, "b", "command", {"command": "true"})
        self.assertEqual(sorted((yield services.listServices(self.store))), ["a", "b"])
        old, new = yield services.updateSettings(self.store, "a", {"port": "81"})
        self.assertEqual((old.settings["port"], new.settings["port"]), (8080, 81))
        old, new = yield services.updateSettings(self.store, "a", {}, remove=["port"])
        self.assertEqual(new.settings["port"], 8080)
        yield self.assertFailure(services.updateSettings(self.store, "a", {"prot": "1"}),
                                 SettingsError)
        self.assertTrue((yield services.removeService(self.store, "a")))
        self.assertFalse((yield services.removeService(self.store, "a")))
        self.assertEqual(sorted((yield services.listServices(self.store))), ["b"])

    @defer.inlineCallbacks
    def test_deploy(self):
        """
        Deploying writes the rendered manifest into each node's intent;
        deploying again unchanged writes the same SHA; changed settings
        another.
        """
        yield services.addService(self.store, "web", "static", {"directory": "/srv"})
        manifest = yield services.deploy(self.store, "web", ["n1", "n2"], self.artifacts,
                                         self.url)
        for node in ("n1", "n2"):
            marker, pods = yield intent.listIntent(self.store, node)
            self.assertIsNotNone(marker)
            self.assertEqual(pods["web"].value, manifest.raw)
        self.assertEqual((yield services.deployedNodes(self.store, "web")), ["n1", "n2"])
        again = yield services.deploy(self.store, "web", ["n1"], self.artifacts, self.url)
        self.assertEqual(again.sha(), manifest.sha())
        yield services.updateSettings(self.store, "web", {"port": "8181"})
        changed = yield services.deploy(self.store, "web", ["n1"], self.artifacts, self.url)
        self.assertNotEqual(changed.sha(), manifest.sha())
        state = services.podState((yield services.readPods(self.store)), "web", "n1")
        self.assertEqual((state["intent"], state["reality"]), (changed.sha(), None))

    @defer.inlineCallbacks
    def test_deployMissing(self):
        yield self.assertFailure(
            services.deploy(self.store, "web", ["n1"], self.artifacts, self.url),
            services.ServiceNotFound)

    @defer.inlineCallbacks
    def test_undeploy(self):
        yield services.addService(self.store, "web", "command", {"command": "true"})
        yield services.deploy(self.store, "web", ["n1", "n2"], self.artifacts, self.url)
        self.assertEqual((yield services.undeploy(self.store, "web", ["n2"])), ["n2"])
        self.assertEqual((yield services.undeploy(self.store, "web")), ["n1"])
        self.assertEqual((yield services.deployedNodes(self.store, "web")), [])


class PodStateTests(unittest.TestCase):
    """
    L{services.podState}: a pod's state on a node, from one read of the
    store whatever the number of nodes.
    """

    def setUp(self):
        self.store = MemoryStore()

    def state(self, node="n1"):
        return services.podState(self.successResultOf(services.readPods(self.store)), "web",
                                 node)

    def test_fromRecords(self):
        """
        The agent's records give the pod's state, health and restart counts.
        """
        self.successResultOf(self.store.put(keys.status("pods", "n1", "web"), (
            b'{"pod": "web", "node": "n1", "state": "failed", "error": "boom", '
            b'"attempts": 2, "time": "t", "restarts": 3, "crash_loop": null}')))
        self.successResultOf(self.store.put(keys.health("web", "n1"), (
            b'{"status": "critical", "output": "GET /: 500", "sha": "abc", "time": 5}')))
        state = self.state()
        self.assertEqual({k: state[k] for k in ("state", "error", "attempts", "restarts")},
                         {"state": "failed", "error": "boom", "attempts": 2, "restarts": 3})
        self.assertEqual(state["health"], {"status": "critical", "output": "GET /: 500",
                                           "sha": "abc", "time": 5})
        self.assertEqual((state["intent"], state["reality"]), (None, None))

    def test_unreadableStatus(self):
        """
        An unreadable status record is shown as the pod's error, naming its
        key, rather than as nothing.
        """
        self.successResultOf(self.store.put(keys.status("pods", "n1", "web"), b"[1, 2]"))
        state = self.state()
        self.assertIsNone(state["state"])
        self.assertIn("'status/pods/n1/web'", state["error"])
        self.assertIn("not an object", state["error"])

    def test_unreadableAgentStatus(self):
        """
        C{p2 inspect} and C{p2 status} show the removals of the agents whose
        status they can read, and one line naming the key of each they
        cannot (a value of the wrong shape inside it too), rather than
        failing or saying nothing.
        """
        from p2twisted.cli.services_inspect import agentRemovals, clusterView, heldNotes
        self.successResultOf(self.store.put(keys.status("agents", "n1"), (
            b'{"removals": {"state": "held", "hold": "orphans", "held": 5, "orphans": 7}}')))
        self.successResultOf(self.store.put(keys.status("agents", "n2"), b"[1]"))
        self.successResultOf(self.store.put(keys.status("agents", "n3"), (
            b'{"removals": {"state": "held", "hold": "orphans", "held": [], '
            b'"orphans": ["old"]}}')))
        snapshot = self.successResultOf(services.readPods(self.store))
        self.assertEqual([(r["node"], r["pod"], r["removal"]) for r in clusterView(snapshot)],
                         [("n3", "old", "orphan")])
        unreadable = []
        notes = heldNotes(agentRemovals(snapshot, unreadable))
        self.assertEqual(len(notes), 1)
        self.assertIn("removals on n3 are held", notes[0])
        self.assertEqual(len(unreadable), 2)
        self.assertIn("'status/agents/n1'", unreadable[0])
        self.assertIn("'held'", unreadable[0])
        self.assertIn("'status/agents/n2'", unreadable[1])

    def test_statusReadsAFewLists(self):
        """
        C{p2 status} reads the store with a few C{list()} calls, however many
        nodes the services are deployed to (it made four reads per node).
        """
        from p2twisted.cli.service import serviceStatus
        from tests.test_snapshot import WEB, CountingStore
        self.successResultOf(services.addService(self.store, "web", "command",
                                                 {"command": "true"}))
        nodes = ["n%d" % (i,) for i in range(20)]
        for node in nodes:
            self.successResultOf(intent.schedule(self.store, node, parseManifest(WEB)))
        counting = CountingStore(self.store)
        result, _ = self.successResultOf(serviceStatus(counting))
        self.assertEqual([state["node"] for state in result[0]["nodes"]], sorted(nodes))
        self.assertEqual(counting.gets, [])
        from p2twisted.cli.services_fleet import fleetTrees
        self.assertEqual(len(counting.lists), 1 + len(services.POD_TREES) + len(fleetTrees()))
