"""
C{p2 rc}, run as a real C{p2} process against a C{local://} store, with the
test playing the RC farm and the agents (L{tests.fleetcli}).
"""

from twisted.internet import defer
from twisted.trial import unittest

from p2twisted.orchestrate import audit
from p2twisted.records.controllers import Deletion
from p2twisted.store import keys
from tests.fleetcli import FleetCommandMixin


class RCCommandTests(FleetCommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        FleetCommandMixin.setUp(self)
        yield self.nodes({"n1": {"tier": "web"}, "n2": {"tier": "web"}, "n3": {}})
        out = yield self.succeed("rc", "create", "--manifest", self.manifest(1), "--selector",
                                 "tier=web", "--replicas", "2", "--pod-label", "app=web",
                                 "--id", "web1")
        self.assertIn("created RC web1: pod web", out)
        self.assertIn("2 eligible now", out)

    @defer.inlineCallbacks
    def test_createScaleAndShow(self):
        """
        The RC farm schedules what C{p2 rc create} asked for, on the nodes
        its selector picks, with the pod labels given; C{p2 rc show} and
        C{p2 rc list} count desired, current and healthy pods; C{p2 rc scale}
        changes the count and the audit log names who did what.
        """
        yield self.converge()
        info = yield self.p2json("rc", "show", "web1")
        self.assertEqual((info["desired"], info["current"], info["healthy"]), (2, 2, 2))
        self.assertEqual([p["node"] for p in info["pods"]], ["n1", "n2"])
        self.assertEqual(info["pod_labels"], {"app": "web"})
        labels = yield self.succeed("label", "show", "pod", "n1/web")
        self.assertIn("app=web", labels)
        self.assertIn("replication_controller_id=web1", labels)
        out = yield self.succeed("rc", "list")
        self.assertEqual(out.splitlines()[1].split(),
                         ["web1", "web", "2", "2", "2", "tier=web", "enabled"])
        out = yield self.succeed("rc", "scale", "web1", "1")
        self.assertEqual(out, "RC web1: 2 -> 1 replica(s)\n")
        yield self.converge()
        info = yield self.p2json("rc", "show", "web1")
        self.assertEqual((info["desired"], info["current"], info["healthy"]), (1, 1, 1))
        events, corrupt = yield self.withStore(audit.read)
        self.assertEqual([(e.kind, e.id, e.action) for e in events
                          if e.who.endswith("(p2)")],
                         [("replication_controller", "web1", "create"),
                          ("replication_controller", "web1", "scale")])
        self.assertEqual([e for e in events if e.action == "scale"][0].details,
                         {"from": 2, "to": 1})

    @defer.inlineCallbacks
    def test_scaleUnchanged(self):
        """
        Scaling to the count it has writes nothing, not even an audit event.
        """
        before = yield self.withStore(audit.read)
        out = yield self.succeed("rc", "scale", "web1", "2")
        self.assertIn("nothing to do", out)
        after = yield self.withStore(audit.read)
        self.assertEqual(len(after[0]), len(before[0]))

    @defer.inlineCallbacks
    def test_disable(self):
        """
        A disabled RC changes nothing: scaling it up schedules nothing until
        it is enabled again.
        """
        out = yield self.succeed("rc", "disable", "web1")
        self.assertEqual(out, "disable RC web1\n")
        yield self.succeed("rc", "scale", "web1", "1")
        yield self.converge()
        info = yield self.p2json("rc", "show", "web1")
        self.assertEqual((info["desired"], info["current"], info["disabled"]), (1, 0, True))
        self.assertIn("disabled", (yield self.succeed("rc", "list")))
        yield self.succeed("rc", "enable", "web1")
        yield self.converge()
        info = yield self.p2json("rc", "show", "web1")
        self.assertEqual((info["current"], info["disabled"]), (1, False))

    @defer.inlineCallbacks
    def test_deleteNeedsNoReplicas(self):
        """
        Deleting an RC that wants replicas, or still has pods, is refused and
        changes nothing; once scaled to 0 and its pods gone it goes; with
        C{--force} it goes at once and its pods run on, unmanaged.
        """
        yield self.converge()
        before = yield self.dump()
        line, code = yield self.p2Fails("rc", "delete", "web1")
        self.assertEqual(code, 2)
        self.assertIn("still wants 2 replicas", line)
        self.assertEqual((yield self.dump()), before)
        yield self.succeed("rc", "scale", "web1", "0")
        line, code = yield self.p2Fails("rc", "delete", "web1")
        self.assertIn("still has 2 pod(s) (on n1, n2)", line)
        yield self.converge()
        record = yield self.withStore(lambda store: store.get(keys.replicationController("web1")))
        out = yield self.succeed("rc", "delete", "web1")
        self.assertEqual(out, "deleted RC web1\n")
        self.assertEqual((yield self.p2json("rc", "list")), [])
        # The farms tell this delete of the last RC from a wiped tree by:
        key = keys.deleted(keys.REPLICATION_CONTROLLERS)
        marker = yield self.withStore(lambda store: store.get(key))
        self.assertEqual(Deletion.fromEntry(key, marker), Deletion("web1", record.version))

    @defer.inlineCallbacks
    def test_deleteForce(self):
        yield self.converge()
        out = yield self.succeed("rc", "delete", "web1", "--force")
        self.assertIn("its pods on n1, n2 keep running, unmanaged", out)
        yield self.converge()
        dump = yield self.dump()
        self.assertIn("intent/n1/web", dump)
        self.assertNotIn("replication_controllers/web1", dump)

    @defer.inlineCallbacks
    def test_badInput(self):
        """
        Bad input is one line (exit 2 for usage) and loses nothing.
        """
        before = yield self.dump()
        manifest = self.manifest(2)
        for args, expected in [
                (("rc", "create", "--manifest", manifest, "--selector", "tier=web"),
                 "--replicas"),
                (("rc", "create", "--manifest", manifest, "--replicas", "-1"), "whole number"),
                (("rc", "create", "--manifest", manifest, "--replicas", "1", "--selector",
                  "tier in (a"), "selector"),
                (("rc", "create", "--manifest", manifest, "--replicas", "1", "--pod-label",
                  "replication_controller_id=x"), "pod_labels may not set"),
                (("rc", "create", "--manifest", manifest, "--replicas", "1", "--pod-label",
                  "daemon_set_id=x"), "pod_labels may not set daemon_set_id"),
                (("rc", "create", "--manifest", manifest, "--replicas", "1", "--id", "web1"),
                 "already exists"),
                (("rc", "create", "--manifest", manifest, "--replicas", "1", "--id", "a/b"),
                 "key segment"),
                (("rc", "scale", "web2", "3"), "no replication controller 'web2'; did you mean "
                                               "'web1'?"),
                (("rc", "scale", "web1", "many"), "whole number"),
                (("rc", "show", "nope"), "no replication controller 'nope'"),
                (("rc", "delete", "nope"), "no replication controller 'nope'"),
                (("rc", "scael", "web1", "1"), "did you mean 'scale'?")]:
            line, code = yield self.p2Fails(*args)
            self.assertEqual(code, 2, line)
            self.assertIn(expected, line)
        line, code = yield self.p2Fails("rc", "create", "--manifest", "/nonexistent.yaml",
                                        "--replicas", "1")
        self.assertEqual(code, 1)
        self.assertIn("cannot read /nonexistent.yaml", line)
        self.assertEqual((yield self.dump()), before)

    @defer.inlineCallbacks
    def test_farmStatus(self):
        """
        C{p2 rc show} tells what the RC farm last reported of it.
        """
        from p2twisted.records.base import dumpObject
        from p2twisted.store import keys
        yield self.withStore(lambda store: store.put(keys.status("rc", "web1"), dumpObject({
            "reason": "schedule on n1, n2", "shortfall": 1, "error": None,
            "holder": "p2-orchestrator@h:7", "since": "2026-12-07T03:00:00Z"})))
        out = yield self.succeed("rc", "show", "web1")
        self.assertIn("  farm: schedule on n1, n2 (by p2-orchestrator@h:7 since "
                      "2026-12-07T03:00:00Z)\n    shortfall: 1 replica(s) found no eligible "
                      "node\n", out)
        info = yield self.p2json("rc", "list")
        self.assertEqual(info[0]["farm"]["shortfall"], 1)

    @defer.inlineCallbacks
    def test_shortfallWarning(self):
        """
        Creating an RC wanting more nodes than its selector matches says so.
        """
        out = yield self.succeed("rc", "create", "--manifest", self.manifest(2), "--replicas",
                                 "4")
        self.assertIn("created RC web-", out)
        self.assertIn("3 eligible now", out)
        self.assertIn("shortfall of 1", out)
