# -*- test-case-name: tests.test_web_api -*-
"""
The HTTP API of C{twistd p2-api} (L{p2twisted.web.app}) over real HTTP on
loopback, read with treq.
"""

import json

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web.server import Site

from p2twisted.labels import encodeLabels
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore
from p2twisted.web.app import API


class ServedMixin(object):
    """
    Serve an L{API} of C{self.store} on a free loopback port.
    """

    def serve(self, api):
        port = reactor.listenTCP(0, Site(api.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = "http://127.0.0.1:%d" % (port.getHost().port,)
        return self.base

    @defer.inlineCallbacks
    def get(self, path, **kw):
        response = yield treq.get(self.base + path, persistent=False, **kw)
        body = yield response.content()
        return response, body


class ReadTests(ServedMixin, unittest.TestCase):

    def setUp(self):
        self.store = MemoryStore()
        self.serve(API(self.store))

    @defer.inlineCallbacks
    def test_nodes(self):
        """
        A labelled node shows in C{/api/v1/nodes}, with its labels, agent
        down; an unknown node is a 404 JSON error.
        """
        yield self.store.put(keys.label("node", "n1"), encodeLabels({"tier": "web"}))
        response, body = yield self.get("/api/v1/nodes")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        found = json.loads(body)["nodes"]
        self.assertEqual([(n["node"], n["agent"], n["labels"]) for n in found],
                         [("n1", "down", {"tier": "web"})])
        response, body = yield self.get("/api/v1/nodes/n2")
        self.assertEqual(response.code, 404)
        self.assertIn("n2", json.loads(body)["error"])

    @defer.inlineCallbacks
    def test_dashboardMounted(self):
        """
        C{/} serves the dashboard page.
        """
        response, body = yield self.get("/")
        self.assertEqual(response.code, 200)
        self.assertIn(b"<html", body)
