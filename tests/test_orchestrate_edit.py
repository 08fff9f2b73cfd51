"""
L{p2twisted.orchestrate.edit}: a person's changes to RCs and rolls as
compare-and-set plans with their audit events, over a L{MemoryStore} and a
clock (no reactor).
"""

from twisted.internet import task
from twisted.trial import unittest

from p2twisted.errors import UsageError, VersionConflict
from p2twisted.orchestrate import audit, edit
from p2twisted.orchestrate.harness import RecordingPlanner
from p2twisted.records.controllers import ReplicationController
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore

from tests.orchfleet import POD


class EditTests(unittest.TestCase):

    def setUp(self):
        self.store = MemoryStore(clock=task.Clock())
        self.planner = RecordingPlanner(self.store)
        self.put(ReplicationController("v1", POD % (1,), 2))

    def put(self, rc):
        self.successResultOf(self.store.put(rc.key, rc.toBytes()))

    def snapshot(self):
        return self.successResultOf(self.planner.snapshot())

    def change(self, build):
        return self.successResultOf(edit.change(self.store, build, 1000.0, author="me"))

    def events(self):
        events, corrupt = self.successResultOf(audit.read(self.store))
        return [(e.kind, e.id, e.action, e.who) for e in events]

    def test_writesWithItsAudit(self):
        """
        A change and its audit event are one transaction: a scale writes
        the RC by compare-and-set and an event naming who did it.
        """
        self.change(lambda s: edit.scaleRC(s, "v1", 3))
        self.assertEqual(self.snapshot().rc("v1").replicas_desired, 3)
        self.assertEqual(self.events(), [("replication_controller", "v1", "scale", "me")])

    def test_noOpWritesNothing(self):
        plan = self.change(lambda s: edit.scaleRC(s, "v1", 2))
        self.assertFalse(plan)
        plan = self.change(lambda s: edit.setDisabled(s, "v1", False))
        self.assertFalse(plan)
        self.assertEqual(self.events(), [])

    def test_decidesAgainOnConflict(self):
        """
        When the record changed between the read and the write, the plan is
        built again over a fresh read instead of overwriting the change.
        """
        calls = []

        def build(snapshot):
            calls.append(snapshot.rc("v1").replicas_desired)
            if len(calls) == 1:
                # Someone else scales it meanwhile.
                self.put(snapshot.rc("v1").withReplicas(5))
            return edit.scaleRC(snapshot, "v1", 3)
        self.change(build)
        self.assertEqual(calls, [2, 5])
        self.assertEqual(self.snapshot().rc("v1").replicas_desired, 3)

    def test_givesUp(self):
        def build(snapshot):
            self.put(snapshot.rc("v1").withReplicas(snapshot.rc("v1").replicas_desired + 1))
            return edit.scaleRC(snapshot, "v1", 1)
        self.failureResultOf(edit.change(self.store, build, 1000.0), VersionConflict)
        self.assertEqual(self.events(), [])

    def test_refusals(self):
        snapshot = self.snapshot()
        for call, expected in [
                (lambda: edit.scaleRC(snapshot, "v11", 1), "no replication controller 'v11'; "
                                                           "did you mean 'v1'?"),
                (lambda: edit.scaleRC(snapshot, "v1", -1), "whole number"),
                (lambda: edit.deleteRC(snapshot, "v1"), "still wants 2 replicas"),
                (lambda: edit.createRC(snapshot, ReplicationController("v1", POD % (2,), 1)),
                 "already exists"),
                (lambda: edit.startRoll(snapshot, "v1", 1, manifest=POD % (1,)),
                 "already runs that manifest"),
                (lambda: edit.requireRoll(snapshot, "v1"), "no roll 'v1'")]:
            e = self.assertRaises(UsageError, call)
            self.assertIn(expected, str(e))

    def test_deleteWaitsForPods(self):
        """
        An RC at 0 replicas whose pods are still there is deleted only with
        force (its pods would run on unmanaged).
        """
        self.put(ReplicationController("v1", POD % (1,), 0))
        self.successResultOf(self.store.put(keys.label("pod", "n1/web"),
                                            b'{"replication_controller_id":"v1","pod_id":"web"}'))
        e = self.assertRaises(UsageError, edit.deleteRC, self.snapshot(), "v1")
        self.assertIn("still has 1 pod(s) (on n1)", str(e))
        plan = self.change(lambda s: edit.deleteRC(s, "v1", force=True))
        self.assertEqual(plan.events[0].details["pods_left"], ["n1"])
        self.assertIsNone(self.snapshot().rc("v1"))

    def test_rollToManifest(self):
        """
        A roll to a manifest creates its RC (the old one's selector and pod
        labels, no replicas) and the roll in one transaction; the roll then
        holds both RCs.
        """
        self.put(ReplicationController("v1", POD % (1,), 2, "tier=web", {"app": "web"}))
        roll, plan = self.change(lambda s: edit.startRoll(s, "v1", 1, manifest=POD % (2,)))
        self.assertEqual(len(edit.transactions(plan, plan.events, "me", 1.0)), 1)
        snapshot = self.snapshot()
        new = snapshot.rc(roll.new_rc)
        self.assertEqual((new.id, new.replicas_desired, new.node_selector, new.pod_labels),
                         (edit.defaultId(POD % (2,)), 0, "tier=web", {"app": "web"}))
        self.assertEqual(snapshot.roll(roll.id).old_rc, "v1")
        self.assertEqual([a for k, i, a, w in self.events()], ["create", "start"])
        for call in (lambda: edit.scaleRC(snapshot, "v1", 3),
                     lambda: edit.setDisabled(snapshot, roll.new_rc, True),
                     lambda: edit.deleteRC(snapshot, roll.new_rc, force=True),
                     lambda: edit.startRoll(snapshot, "v1", 1, manifest=POD % (3,))):
            e = self.assertRaises(UsageError, call)
            self.assertIn(roll.id, str(e))

    def test_auditInTheLastTransaction(self):
        """
        The audit creates join the plan's last transaction when they fit.
        """
        plan = edit.scaleRC(self.snapshot(), "v1", 4)
        [ops] = edit.transactions(plan, plan.events, "me", 1.0)
        self.assertEqual([type(op).__name__ for op in ops], ["Put", "Create"])
        self.assertTrue(ops[1].key.startswith(keys.tree(keys.AUDIT)))
