"""
The whole product on the Consul backend (issue 12, item 6): a machine agent
and the real C{p2} command against the Consul test server
(L{tests.consulserver}): schedule, health, C{p2 inspect}, unschedule; add,
deploy, C{p2 status}, undeploy; the agent's presence vanishing with its
session.
"""

import json
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.store import keys, openStore
from tests.agentharness import (
    AgentHarness, buildWebArtifact, freePort, waitForVersion, webManifest)
from tests.consulserver import ConsulServer
from tests.reachable import reachableDirectory
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit
from tests.test_cli_service import ServiceCommandMixin


class ConsulEndToEndTests(ServiceCommandMixin, unittest.TestCase):

    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        requireRunit()
        ServiceCommandMixin.setUp(self)
        self.server = ConsulServer(reactor, sessionTTLMin=0.5)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.url = "consul://%s/p2" % (self.server.address,)
        self.store = yield openStore(self.url, reactor)
        self.addCleanup(self.store.close)
        self.artifacts = os.path.abspath(self.mktemp())
        os.makedirs(self.artifacts)

    @defer.inlineCallbacks
    def test_scheduleHealthStatusUnschedule(self):
        """
        A pod scheduled with C{p2 schedule} is installed and answers, its
        health passes and C{p2 inspect} shows it; C{p2 unschedule} removes
        it and its reality; a stopped agent's presence goes with its
        session.
        """
        harness = AgentHarness(self, self.url).start()
        port = freePort()
        url, sha = buildWebArtifact(self.artifacts, "hello", "1")
        manifest = os.path.join(self.artifacts, "hello.yaml")
        with open(manifest, "wb") as f:
            f.write(webManifest("hello", url, port, sha)
                    + b"status:\n  port: %d\n  http: true\n" % (port,))
        yield self.succeed("schedule", manifest, "--node", "n1")
        yield waitForVersion(port, "1", timeout=60)
        yield harness.whenConverged(timeout=60)

        def health():
            d = self.store.get(keys.health("hello", "n1"))
            return d.addCallback(lambda e: e is not None and
                                 json.loads(e.value)["status"] == "passing")
        yield waitFor(health, timeout=60, what="a passing health check")
        self.assertIsNotNone((yield self.store.get(keys.reality("n1", "hello"))))

        pods = json.loads((yield self.succeed("inspect", "--json")))
        self.assertEqual([(p["pod"], p["node"]) for p in pods], [("hello", "n1")])
        self.assertIn("passing", json.dumps(pods))

        yield self.succeed("unschedule", "hello", "--node", "n1")
        yield waitForVersion(port, None, timeout=60)
        yield waitFor(lambda: self.store.get(keys.reality("n1", "hello")).addCallback(
            lambda e: e is None), timeout=60, what="reality to be deleted")

        self.assertIsNotNone((yield self.store.get(keys.machine("n1"))))
        yield harness.stop()
        yield waitFor(lambda: self.store.get(keys.machine("n1")).addCallback(
            lambda e: e is None), timeout=30, what="the agent's presence to go")

    @defer.inlineCallbacks
    def test_serviceDeployStatusUndeploy(self):
        """
        The pop-style verbs on Consul: C{p2 add}, C{p2 deploy --wait} (until
        the agent reports the pod's health passing), C{p2 status} showing
        the agent up and the pod healthy, C{p2 undeploy --wait}.
        """
        AgentHarness(self, self.url).start()
        www = reachableDirectory(self, "p2-www-")
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write("on consul\n")
        os.chmod(www, 0o755)
        port = freePort()
        yield self.succeed("add", "web", "-t", "static", "--directory", www, "--port", str(port),
                           "--run-as", "nobody")
        yield self.succeed("deploy", "web", "--node", "n1", "--wait", "--timeout", "120")
        out = yield self.succeed("status", "web")
        self.assertIn("[agent up", out)
        self.assertIn("in sync    health passing", out)
        yield self.succeed("undeploy", "web", "--wait", "--timeout", "120")
        out = yield self.succeed("status", "web")
        self.assertNotIn("passing", out)
