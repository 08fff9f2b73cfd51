"""
C{p2 init}, C{dump}, C{schedule}, C{unschedule}, C{node add}, C{node confirm}
and C{nodes}, run as a user would.
"""

import json
import os

from twisted.internet import defer
from twisted.trial import unittest

from tests.cli import ROOT, P2CommandMixin

EXAMPLE = os.path.join(ROOT, "conf", "examples", "hello.yaml")


class NamespaceCommandTests(P2CommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_initRefusesToClobber(self):
        """
        C{init} creates the namespace; again it refuses with one line naming
        the store and C{--force}; with C{--force} it deletes what was there.
        """
        out = yield self.succeed("init")
        self.assertIn("initialised a p2 namespace", out)
        yield self.succeed("node", "add", "web1")
        line, code = yield self.p2Fails("init")
        self.assertEqual(code, 1)
        self.assertIn("already holds a p2 namespace", line)
        self.assertIn("--force", line)
        out = yield self.succeed("dump", "--json")
        self.assertIn("intent/web1", json.loads(out))
        out = yield self.succeed("init", "--force")
        self.assertIn("deleted 2 existing keys", out)
        self.assertNotIn("intent/web1", json.loads((yield self.succeed("dump", "--json"))))

    @defer.inlineCallbacks
    def test_scheduleAndDump(self):
        """
        C{schedule} writes the node marker and the manifest's original bytes;
        C{dump} shows both, and C{--json} gives values and versions.
        """
        yield self.succeed("init")
        out = yield self.succeed("schedule", EXAMPLE, "--node", "web1")
        self.assertIn("scheduled hello", out)
        out = yield self.succeed("dump")
        self.assertIn("intent/web1\n", out)
        self.assertIn("intent/web1/hello\n", out)
        self.assertIn("    # A pod manifest in P2's format.", out)
        tree = json.loads((yield self.succeed("dump", "--json")))
        with open(EXAMPLE) as f:
            self.assertEqual(tree["intent/web1/hello"]["value"], f.read())
        self.assertEqual(json.loads(tree["intent/web1"]["value"])["node"], "web1")
        out = yield self.succeed("unschedule", "hello", "--node", "web1")
        self.assertIn("unscheduled hello from web1", out)
        tree = json.loads((yield self.succeed("dump", "--json")))
        self.assertNotIn("intent/web1/hello", tree)
        self.assertIn("intent/web1", tree)
        line, code = yield self.p2Fails("unschedule", "hello", "--node", "web1")
        self.assertIn("not scheduled", line)

    @defer.inlineCallbacks
    def test_scheduleInvalidWritesNothing(self):
        """
        Scheduling an invalid manifest fails with the problem and writes
        nothing.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("id: web\nlaunchables:\n  app: {launchable_type: hoist}\n")
        out, err, code = yield self.p2("schedule", path, "--node", "web1")
        self.assertEqual(code, 1)
        self.assertIn("launchables.app", err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(json.loads((yield self.succeed("dump", "--json"))), {})

    @defer.inlineCallbacks
    def test_nodes(self):
        """
        C{node add} writes the marker and labels; C{nodes} lists it with its
        pods, as text and JSON, and every other node known: labelled only,
        or with pods in intent but no marker.
        """
        out = yield self.succeed("node", "add", "web1", "--label", "role=web")
        self.assertIn("added node web1", out)
        self.assertIn("role=web", out)
        yield self.succeed("schedule", EXAMPLE, "--node", "web2")
        yield self.succeed("label", "apply", "node", "db1", "role=db")
        out = yield self.succeed("nodes")
        self.assertIn("web1", out)
        self.assertRegex(out, r"web2 +yes +down +hello")
        self.assertRegex(out, r"db1 +NO +down +-")
        nodes = json.loads((yield self.succeed("nodes", "--json")))
        self.assertEqual(nodes["web2"]["pods"], ["hello"])
        self.assertIsNone(nodes["web1"]["agent"])
        self.assertEqual((nodes["web1"]["labels"], nodes["web2"]["labels"]),
                         ({"role": "web"}, {}))
        labels = yield self.succeed("label", "show", "node", "web1")
        self.assertEqual(labels, "role=web\n")

    @defer.inlineCallbacks
    def test_nodeConfirm(self):
        """
        C{node confirm} without a marker says there is nothing to confirm;
        with one, it writes C{confirmations/<node>} naming that marker (its
        store version), which is how the agent tells it from a later one, and
        says when no agent of the node is running to act on it.
        """
        line, code = yield self.p2Fails("node", "confirm", "web1")
        self.assertEqual(code, 1)
        self.assertIn("intent/web1 holds no node marker", line)
        yield self.succeed("node", "add", "web1")
        out = yield self.succeed("node", "confirm", "web1")
        self.assertIn("confirmed the node marker of web1", out)
        self.assertIn("no agent of web1 is running (machines/web1 is absent): it acts on the "
                      "confirmation when it starts", out)
        tree = json.loads((yield self.succeed("dump", "--json")))
        confirmation = json.loads(tree["confirmations/web1"]["value"])
        self.assertEqual(confirmation["marker"]["version"], tree["intent/web1"]["version"])
        self.assertEqual(confirmation["marker"]["created"],
                         json.loads(tree["intent/web1"]["value"])["created"])

    @defer.inlineCallbacks
    def test_unreachableStore(self):
        """
        An unreachable store is one line naming it, exit code 3.
        """
        out, err, code = yield self.p2("--store", "zk://127.0.0.1:1/p2", "dump")
        self.assertEqual(code, 3)
        self.assertIn("127.0.0.1:1", err)
        self.assertNotIn("Traceback", err)

    @defer.inlineCallbacks
    def test_unknownStoreURL(self):
        """
        An unknown store URL says which forms are known, exit code 2.
        """
        out, err, code = yield self.p2("--store", "consol://x", "dump")
        self.assertEqual(code, 2)
        self.assertIn("local:///path/state.db", err)
