"""
Tests for C{p2 label}, run as a real C{p2} process against a C{local://}
store.
"""

import json

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.store import keys, openStore
from tests.cli import P2CommandMixin



class LabelCommandTests(P2CommandMixin, unittest.TestCase):
    """
    C{p2 label apply}, C{show} and C{select}.
    """

    @defer.inlineCallbacks
    def test_applyThenShow(self):
        """
        C{apply} prints the resulting labels as sorted C{k=v} lines;
        C{show} prints them again, or as a JSON object with C{--json}.
        """
        out = yield self.succeed("label", "apply", "node", "n1", "tier=web", "env=prod")
        self.assertEqual(out, "env=prod\ntier=web\n")
        out = yield self.succeed("label", "show", "node", "n1")
        self.assertEqual(out, "env=prod\ntier=web\n")
        out = yield self.succeed("label", "show", "node", "n1", "--json")
        self.assertEqual(json.loads(out), {"env": "prod", "tier": "web"})
        out = yield self.succeed("label", "apply", "node", "n1", "az=a", "--json")
        self.assertEqual(json.loads(out), {"az": "a", "env": "prod", "tier": "web"})

    @defer.inlineCallbacks
    def test_remove(self):
        """
        C{k-} removes a label; removing the last one leaves no labels.
        """
        yield self.succeed("label", "apply", "pod", "n1/web", "env=prod", "tier=web")
        out = yield self.succeed("label", "apply", "pod", "n1/web", "tier-")
        self.assertEqual(out, "env=prod\n")
        out = yield self.succeed("label", "apply", "pod", "n1/web", "env-", "--json")
        self.assertEqual(json.loads(out), {})
        self.assertEqual((yield self.succeed("label", "show", "pod", "n1/web")), "")

    @defer.inlineCallbacks
    def test_select(self):
        """
        C{select} prints the matching ids, one a line, or a JSON list with
        C{--json}.
        """
        yield self.succeed("label", "apply", "node", "n2", "env=prod", "az=a")
        yield self.succeed("label", "apply", "node", "n1", "env=prod", "az=b")
        yield self.succeed("label", "apply", "node", "n3", "env=dev")
        yield self.succeed("label", "apply", "pod", "n1/web", "env=prod")
        out = yield self.succeed("label", "select", "node", "env = prod, az notin (a)")
        self.assertEqual(out, "n1\n")
        out = yield self.succeed("label", "select", "node", "env in (prod,dev)")
        self.assertEqual(out, "n1\nn2\nn3\n")
        out = yield self.succeed("label", "select", "node", "env=prod", "--json")
        self.assertEqual(json.loads(out), [{"id": "n1", "labels": {"env": "prod", "az": "b"}},
                                           {"id": "n2", "labels": {"env": "prod", "az": "a"}}])
        self.assertEqual((yield self.succeed("label", "select", "pod", "")), "n1/web\n")

    @defer.inlineCallbacks
    def test_selectNodeUniverse(self):
        """
        Nodes are selected among every node known -- added with C{p2 node
        add}, running an agent (C{machines/<node>}) or labelled -- so the
        empty selector and C{!k} list unlabelled nodes too (Kubernetes'
        semantics); pods stay selected among labelled pods.
        """
        yield self.succeed("node", "add", "bare")
        yield self.succeed("node", "add", "web1", "--label", "tier=web")
        yield self.succeed("label", "apply", "node", "db1", "tier=db")
        store = yield openStore(self.url, reactor)
        try:
            yield store.put(keys.machine("agent1"), b'{"node": "agent1"}')
        finally:
            yield store.close()
        out = yield self.succeed("label", "select", "node", "")
        self.assertEqual(out, "agent1\nbare\ndb1\nweb1\n")
        out = yield self.succeed("label", "select", "node", "!tier")
        self.assertEqual(out, "agent1\nbare\n")
        out = yield self.succeed("label", "select", "node", "tier!=web", "--json")
        self.assertEqual(json.loads(out), [{"id": "agent1", "labels": {}},
                                           {"id": "bare", "labels": {}},
                                           {"id": "db1", "labels": {"tier": "db"}}])
        out = yield self.succeed("label", "select", "pod", "")
        self.assertEqual(out, "")

    @defer.inlineCallbacks
    def test_badSelector(self):
        """
        A malformed selector is reported on one line naming the column, with
        a non-zero exit code and no traceback.
        """
        line, _ = yield self.p2Fails("label", "select", "node", "env in (a,b")
        self.assertEqual(line, "p2: expected ')' at column 12 of 'env in (a,b'")

    @defer.inlineCallbacks
    def test_invalidValue(self):
        """
        An invalid label value is refused, naming it, and nothing is
        written.
        """
        line, _ = yield self.p2Fails("label", "apply", "node", "n1", "env=prod", "tier=no good")
        self.assertIn("invalid value 'no good' for label 'tier'", line)
        self.assertEqual((yield self.succeed("label", "show", "node", "n1")), "")

    @defer.inlineCallbacks
    def test_unknownType(self):
        """
        An unknown type is a usage error listing the valid types.
        """
        line, code = yield self.p2Fails("label", "show", "host", "n1")
        self.assertEqual(code, 2)
        self.assertIn("unknown label type 'host'; expected one of daemon_set, node, pod, "
                      "pod_cluster, replication_controller, roll", line)
