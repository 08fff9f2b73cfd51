"""
Moving a running single-host setup to another store, as README.rst tells:
stop the agent, C{p2 store copy} the namespace from the embedded store to
etcd, start the agent on the new URL, confirm the node.  No pod is
restarted.
"""

import os
import sys
import uuid

from twisted.internet import defer, utils
from twisted.trial import unittest

from p2twisted import intent
from p2twisted.manifest import parseManifest
from p2twisted.store import keys, openStore
from tests.agentharness import AgentHarness, buildWebArtifact, freePort, waitForVersion, webManifest
from tests.cli import ROOT
from tests.etcdserver import sharedServer
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit


class MigrateTests(unittest.TestCase):

    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        requireRunit()
        self.etcd = sharedServer()
        self.artifacts = os.path.abspath(self.mktemp())
        os.makedirs(self.artifacts)
        self.local = "local://%s/state.db" % (os.path.abspath(self.mktemp()),)
        self.store = yield openStore(self.local)
        self.addCleanup(self.store.close)

    def servicePid(self, harness, podId):
        path = os.path.join(harness.config.stateDir, "service",
                            "%s__web__bin__launch" % (podId,), "supervise", "pid")
        with open(path) as f:
            return int(f.read().strip() or 0)

    @defer.inlineCallbacks
    def test_localToEtcdKeepsPods(self):
        """
        After the copy the agent on etcd adopts the running pod (same pid),
        reports its presence and status there, and follows new intent
        written to etcd.
        """
        harness = AgentHarness(self, self.local).start()
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        yield intent.schedule(self.store, "n1", parseManifest(webManifest("hello", url1, port, sha1)))
        yield waitForVersion(port, "1")
        yield harness.whenConverged()
        pid = self.servicePid(harness, "hello")
        yield harness.stop()

        target = self.etcd.url("/p2-%s" % (uuid.uuid4().hex[:12],))
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}

        def p2(*args):
            return utils.getProcessOutputAndValue(
                sys.executable, ["-m", "p2twisted.cli"] + list(args), env=env, path=ROOT)
        out, err, code = yield p2("store", "copy", self.local, target)
        self.assertEqual((code, err), (0, b""), err)
        self.assertIn(b"verified all", out)
        self.assertIn(b"node confirm NODE (nodes: n1)", out)

        moved = AgentHarness(self, target, base=harness.base).start()
        yield moved.whenConverged()
        yield moved.agent.resync()
        yield moved.whenConverged()
        self.assertEqual(self.servicePid(moved, "hello"), pid)
        yield waitForVersion(port, "1")
        etcd = yield openStore(target)
        self.addCleanup(etcd.close)
        yield waitFor(lambda: etcd.get(keys.machine("n1")), what="the agent's presence in etcd")
        self.assertIsNotNone((yield etcd.get(keys.reality("n1", "hello"))))

        url2, sha2 = buildWebArtifact(self.artifacts, "hello", "2")
        yield intent.schedule(etcd, "n1", parseManifest(webManifest("hello", url2, port, sha2)))
        yield waitForVersion(port, "2")
        # The moved marker is new to the agent's failsafe: removals wait
        # for the node to be confirmed, as the copy said.
        out, err, code = yield p2("--store", target, "node", "confirm", "n1")
        self.assertEqual((code, err), (0, b""), err)
        yield intent.unschedule(etcd, "n1", "hello")
        yield waitForVersion(port, None)
