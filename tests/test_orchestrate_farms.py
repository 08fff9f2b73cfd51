"""
Orchestrators at work, on one in-memory store with simulated agents
(L{harness.settleAgents}): the real farms, controllers and decisions, driven
by the store's watches and a L{task.Clock}.  A replication controller
converges and moves a pod off a node that stops matching only once its
replacement is healthy; a rolling update runs to the end never below its
minimum, also when the orchestrator running it dies half-way and another
takes over.
"""

import json

from twisted.internet import defer, task
from twisted.logger import formatEvent
from twisted.trial import unittest

from p2twisted.labels import encodeLabels
from p2twisted.orchestrate import audit, edit, harness, roll as rollLogic
from p2twisted.orchestrate.plan import Planner
from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.orchestrate.tap import Orchestrator, orchestratorConfig
from p2twisted.records.controllers import ReplicationController
from p2twisted.store import keys
from p2twisted.store.memory import MemoryState, MemoryStore
from tests.orchfleet import manifest
from tests.test_orchestrate_farm import capture

TTL = 6.0


class Mortal(MemoryStore):
    """
    A store client whose process can die: its sessions stop and it never
    opens another.
    """

    dead = False

    def session(self, ttl):
        if self.dead:
            return defer.Deferred()
        return MemoryStore.session(self, ttl)

    def die(self):
        self.dead = True
        self.crash()


class FarmsTestCase(unittest.TestCase):

    #: C{health(node, podId, sha)} the agents report (default passing).
    health = None

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1800000000)
        self.state = MemoryState()
        self.admin = MemoryStore(self.state, self.clock)
        for node in ("n1", "n2", "n3"):
            self.result(self.admin.put(keys.label("node", node), encodeLabels({"tier": "web"})))
            self.result(self.admin.put(keys.machine(node), json.dumps({"node": node}).encode()))
        self.orchestrators = []

    def result(self, d):
        return self.successResultOf(d)

    def orchestrator(self):
        store = Mortal(self.state, self.clock)
        config = orchestratorConfig(None, {"store": "memory://"}, environ={})
        config.sessionTTL = TTL
        orchestrator = Orchestrator(config, self.clock, store=store)
        orchestrator.startService()
        self.addCleanup(lambda: orchestrator.running and orchestrator.stopService())
        self.orchestrators.append(orchestrator)
        return orchestrator

    def putRC(self, rcId, version, replicas, disabled=False):
        rc = ReplicationController(id=rcId, manifest=manifest(version), node_selector="tier=web",
                                   replicas_desired=replicas, disabled=disabled)
        self.result(self.admin.put(rc.key, rc.toBytes()))

    def snapshot(self):
        return self.result(Snapshot.read(self.admin))

    def settle(self, rounds=40, check=None):
        """
        Play the agents, a second a round (so waits with deadlines run out),
        until three rounds in a row change nothing; each write wakes the
        farms through their watches.  C{check(snapshot)} after each round.
        """
        quiet, before = 0, None
        for _ in range(rounds):
            self.result(harness.settleAgents(self.admin, self.health))
            snapshot = self.snapshot()
            if check is not None:
                check(snapshot)
            quiet = quiet + 1 if dict(snapshot.entries) == before else 0
            if quiet == 3:
                return
            before = dict(snapshot.entries)
            self.clock.advance(1)
        self.fail("the fleet did not settle")

    def status(self, kind, objectId):
        entry = self.result(self.admin.get(keys.status(kind, objectId)))
        return json.loads(entry.value)

    def events(self):
        return self.result(audit.read(self.admin))[0]

    def running(self, snapshot, version):
        """
        @return: the nodes whose reality runs C{version} with passing health.
        """
        from p2twisted.manifest import parseManifest
        sha = parseManifest(manifest(version)).sha()
        return [n for n in snapshot.nodes() if snapshot.realitySha(n, "web") == sha
                and snapshot.health("web", n) is not None
                and snapshot.health("web", n).status == "passing"]


class RCFarmTests(FarmsTestCase):

    def test_convergesAndMovesOffIneligibleNode(self):
        """
        An RC of 2 over three nodes runs on two; its status says so; when
        one node stops matching, the pod moves to the third, and the old
        node loses it only once the new one is healthy.
        """
        self.orchestrator()
        self.putRC("web", 1, 2)
        self.settle()
        snapshot = self.snapshot()
        self.assertEqual(self.running(snapshot, 1), ["n1", "n2"])
        status = self.status("rc", "web")
        self.assertEqual({k: status[k] for k in ("desired", "current", "healthy", "shortfall",
                                                  "error")},
                         {"desired": 2, "current": 2, "healthy": 2, "shortfall": 0,
                          "error": None})
        self.result(self.admin.put(keys.label("node", "n1"), encodeLabels({"tier": "db"})))

        def neverBelowTwo(snapshot):
            self.assertGreaterEqual(len(self.running(snapshot, 1)), 2)
        self.settle(check=neverBelowTwo)
        self.assertEqual(self.running(self.snapshot(), 1), ["n2", "n3"])
        self.assertEqual([(e.action, e.details["nodes"]) for e in self.events()],
                         [("schedule", ["n1", "n2"]), ("schedule", ["n3"]),
                          ("unschedule", ["n1"])])

    def test_twoOrchestratorsOneClaim(self):
        """
        With two orchestrators, each RC is claimed by one, and a pod is
        never scheduled twice.
        """
        self.orchestrator()
        self.orchestrator()
        self.putRC("web", 1, 3)
        self.settle()
        claims = [sorted(o.farms["rc"].claims) for o in self.orchestrators]
        self.assertEqual(sorted(claims), [[], ["web"]])
        self.assertEqual([(e.action, e.details["nodes"]) for e in self.events()],
                         [("schedule", ["n1", "n2", "n3"])])


    def test_deletingTheLastRCIsCalm(self):
        """
        A person scales the last RC to 0 and deletes it: its farm releases
        it and says so at info, with no FAILSAFE alarm.  The same RC created
        again and then wiped (deleted by no person) still trips the
        failsafe: the deletion names the old record, not the new one.
        """
        critical, info = capture(self, "critical"), capture(self, "info")
        farm = self.orchestrator().farms["rc"]
        self.putRC("web", 1, 2)
        self.settle()
        self.result(edit.change(self.admin, lambda s: edit.scaleRC(s, "web", 0), 0))
        self.settle()
        self.result(edit.change(self.admin, lambda s: edit.deleteRC(s, "web"), 0))
        self.settle()
        self.assertEqual((farm.claims, farm.failsafe, critical), ({}, False, []))
        self.assertIn("rc farm: replication_controllers is empty: web deleted by a person",
                      [formatEvent(e) for e in info])
        self.putRC("web", 1, 2)
        self.settle()
        self.assertEqual(sorted(farm.claims), ["web"])
        self.result(self.admin.delete(keys.replicationController("web")))
        self.settle()
        self.assertTrue(farm.failsafe)
        self.assertIn("FAILSAFE", critical[0]["log_format"])
        self.assertEqual(self.running(self.snapshot(), 1), ["n1", "n2"])


class RollFarmTests(FarmsTestCase):

    def startRoll(self, minHealthy):
        self.putRC("new", 2, 0, disabled=True)
        roll, plan = rollLogic.createRoll(self.snapshot(), "old", "new", minHealthy)
        self.result(Planner(self.admin).apply(plan))
        return roll

    def minimum(self, count):
        def check(snapshot):
            self.assertGreaterEqual(len(self.running(snapshot, 1) + self.running(snapshot, 2)),
                                    count)
        return check

    def test_rollToTheEnd(self):
        """
        A roll moves all three pods to the new version, never below two
        healthy, unschedules nothing, deletes the old RC and itself, and
        audits its steps; its farm then simply has nothing to do (no
        failsafe alarm).
        """
        critical = capture(self, "critical")
        roller = self.orchestrator().farms["roll"]
        self.putRC("old", 1, 3)
        self.settle()
        self.startRoll(2)
        self.settle(check=self.minimum(2))
        snapshot = self.snapshot()
        self.assertEqual(self.running(snapshot, 2), ["n1", "n2", "n3"])
        self.assertEqual((snapshot.rc("old"), snapshot.roll("new")), (None, None))
        actions = [(e.kind, e.action) for e in self.events()]
        self.assertIn(("roll", "step"), actions)
        self.assertEqual(actions[-1], ("roll", "finish"))
        self.assertNotIn(("replication_controller", "unschedule"), actions)
        self.assertEqual((roller.claims, critical), ({}, []))

    def test_orchestratorDiesMidRoll(self):
        """
        The orchestrator running a roll dies after its first step; the other
        takes the roll and its RCs over once the dead one's session expires,
        and the roll ends as it would have, never below its minimum.
        """
        first = self.orchestrator()
        self.putRC("old", 1, 3)
        self.settle()
        second = self.orchestrator()
        self.startRoll(2)
        self.assertEqual(sorted(first.farms["roll"].claims), ["new"])
        self.result(harness.settleAgents(self.admin))
        self.clock.advance(1)
        self.assertTrue(any(e.action == "step" for e in self.events()))
        first.store.die()
        self.clock.advance(TTL)
        self.assertEqual(sorted(second.farms["roll"].claims), ["new"])
        self.assertEqual(sorted(second.farms["rc"].claims), ["new", "old"])
        self.settle(check=self.minimum(2))
        snapshot = self.snapshot()
        self.assertEqual(self.running(snapshot, 2), ["n1", "n2", "n3"])
        self.assertEqual((snapshot.rc("old"), snapshot.roll("new")), (None, None))
        self.assertNotIn("unschedule", [e.action for e in self.events()])
