"""
Tests for L{p2twisted.services}, against a L{MemoryStore}.
"""

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted import intent, services
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
        state = yield services.podState(self.store, "web", "n1")
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
