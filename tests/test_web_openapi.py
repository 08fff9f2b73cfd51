# -*- test-case-name: tests.test_web_openapi -*-
"""
The API's OpenAPI document (L{p2twisted.web.openapi}) agrees with its klein
handlers (L{p2twisted.web.app.API}), and is what C{/openapi.json} serves.
"""

import json
import re

import treq
from twisted.internet import defer
from twisted.trial import unittest

from p2twisted.store.memory import MemoryStore
from p2twisted.web.app import API
from p2twisted.web.openapi import UNDOCUMENTED, document
from tests.test_web_api import ServedMixin

_METHODS = ("get", "put", "post", "patch", "delete")


def routes(app):
    """
    @return: C{{(method, path): endpoint}} of C{app}'s rules, paths in
        OpenAPI's form (C{/nodes/{node}}), without the implicit HEAD and the
        L{UNDOCUMENTED} handlers.
    """
    found = {}
    for rule in app.url_map.iter_rules():
        endpoint = rule.endpoint
        if endpoint.endswith("_branch"):
            endpoint = endpoint[:-len("_branch")]
        if endpoint in UNDOCUMENTED:
            continue
        path = re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods:
            if method.lower() in _METHODS:
                found[method.lower(), path] = endpoint
    return found


def operations(doc):
    """@return: C{{(method, path): operation}} of an OpenAPI document."""
    return {(method, path): operation for path, item in doc["paths"].items()
            for method, operation in item.items()}


class AgreementTests(unittest.TestCase):

    def test_sameOperations(self):
        """
        Every route has an operation and every operation a route: same
        method, same path, and its C{operationId} names the handler.
        """
        documented = {key: op["operationId"] for key, op in operations(document()).items()}
        self.assertEqual(documented, routes(API.app))

    def test_undocumentedExist(self):
        """
        The handlers left out of the document exist (a rename would
        otherwise hide a route from the check above).
        """
        endpoints = {rule.endpoint for rule in API.app.url_map.iter_rules()}
        self.assertEqual(set(UNDOCUMENTED) - endpoints, set())

    def test_pathParameters(self):
        """
        Each operation declares exactly its path's parameters, required.
        """
        for (method, path), operation in operations(document()).items():
            declared = sorted(p["name"] for p in operation["parameters"] if p["in"] == "path")
            self.assertEqual(declared, sorted(re.findall(r"{([^}]+)}", path)), path)
            self.assertTrue(all(p["required"] for p in operation["parameters"]
                                if p["in"] == "path"))

    def test_queryParameters(self):
        """
        The query parameters the handlers read are declared: C{/pods?node=},
        C{/audit?limit=&since=}, C{/events?last=} (what the page sends to
        resume with a new C{EventSource}).
        """
        declared = {(method, path): sorted(p["name"] for p in operation["parameters"]
                                           if p["in"] == "query")
                    for (method, path), operation in operations(document()).items()}
        self.assertEqual({key: names for key, names in declared.items() if names}, {
            ("get", "/api/v1/pods"): ["node"],
            ("get", "/api/v1/audit"): ["limit", "since"],
            ("get", "/api/v1/events"): ["last"]})

    def test_writesNeedToken(self):
        """
        Every operation but a GET declares the bearer token and its 401.
        """
        doc = document()
        self.assertEqual(doc["components"]["securitySchemes"]["token"],
                         {"type": "http", "scheme": "bearer"})
        for (method, path), operation in operations(doc).items():
            if method == "get":
                self.assertNotIn("security", operation, path)
            else:
                self.assertEqual(operation["security"], [{"token": []}], path)
                self.assertIn("401", operation["responses"], path)
            self.assertIn("403", operation["responses"], path)  # (a Host not loopback)
            self.assertEqual("413" in operation["responses"], "requestBody" in operation, path)

    def test_catchesAMissingOperation(self):
        """
        A route added without its operation is told apart (the check above
        is not vacuous).
        """
        from klein import Klein
        app = Klein()
        app.route("/api/v1/extra", methods=["GET"])(lambda request: b"")
        self.assertEqual(routes(app), {("get", "/api/v1/extra"): "<lambda>"})


class ServedTests(ServedMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_served(self):
        """
        C{GET /openapi.json} serves the document, as JSON.
        """
        self.serve(API(MemoryStore()))
        response = yield treq.get(self.base + "/openapi.json", persistent=False)
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads((yield response.content())), document())
