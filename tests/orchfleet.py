"""
A simulated fleet for table-driven tests of the pure orchestration logic:
labelled nodes, agents played by L{harness.settleAgents}, RC and roll records
in a L{MemoryStore}, and a loop that runs decide/step -> apply -> settle ->
fresh snapshot until nothing changes, checking invariants after every round.
"""

import json

from p2twisted.errors import KeyExists, VersionConflict

from p2twisted.labels import encodeLabels
from p2twisted.orchestrate import harness, rc as rcmodule, roll as rollmodule
from p2twisted.orchestrate.plan import Plan, Wait
from p2twisted.records.controllers import ReplicationController
from p2twisted.store import keys
from p2twisted.store.common import Check

POD = b"""\
id: web
launchables:
  app:
    launchable_type: hoist
    location: file:///artifacts/web_%d.tar.gz
"""


def manifest(version):
    return POD % (version,)


class Fleet(object):
    """
    @ivar health: C{health(node, podId, sha) -> status} the agents report.
    @ivar down: nodes whose agents are down.
    @ivar checks: callables C{check(fleet, snapshot)} run after every round.
    """

    def __init__(self, test, nodes, down=(), agents=True):
        """
        @param nodes: C{{node: {label: value}}}.
        @param agents: whether the nodes' agents run at all.
        """
        self.test = test
        self.planner = harness.RecordingPlanner()
        self.store = self.planner.store
        self.down = set(down)
        self.agents = agents
        self.bad = set()
        self.warmup = False
        self.seen = {}
        self.health = self.defaultHealth
        self.checks = []
        #: C{drop(plan)}: whether the process dies before applying C{plan}.
        self.drop = None
        #: Plans that lost a compare-and-set race (retried next round).
        self.conflicts = []
        self.now = 1000.0
        for node, labels in nodes.items():
            self.run(self.store.put(keys.label("node", node), encodeLabels(labels)))
            if agents and node not in self.down:
                self.run(self.store.put(keys.machine(node), json.dumps({"node": node}).encode()))

    def defaultHealth(self, node, podId, sha):
        """
        Critical for a version in L{bad}; with L{warmup}, a pod is critical
        the first time agents settle after it starts (it is restarting), and
        passing after.
        """
        if sha in self.bad:
            return "critical"
        if self.warmup and self.seen.get((node, podId)) != sha:
            self.seen[node, podId] = sha
            return "critical"
        return "passing"

    def run(self, d):
        return self.test.successResultOf(d)

    def sha(self, version):
        return ReplicationController("x", manifest(version), 0).sha

    def markBad(self, version):
        self.bad.add(self.sha(version))

    def putRC(self, rcId, version=1, replicas=0, selector="", disabled=False, **kw):
        rc = ReplicationController(rcId, manifest(version), replicas, selector,
                                   disabled=disabled, **kw)
        self.run(self.store.put(rc.key, rc.toBytes()))
        return rc

    def setLabels(self, node, labels):
        self.run(self.store.put(keys.label("node", node), encodeLabels(labels)))

    def snapshot(self):
        return self.run(self.planner.snapshot())

    def settle(self):
        """
        @return: whether the agents changed anything.
        """
        if self.agents:
            return bool(self.run(harness.settleAgents(self.store, self.health, self.down)))
        return False

    def decideAll(self, snapshot):
        plans = []
        for rcId, rc in sorted(snapshot.rcs().items()):
            fence = [Check(rc.key, snapshot.version(rc.key))]
            plans.append((rcmodule.decide(rc, snapshot), fence))
        return plans

    def stepRolls(self, snapshot):
        plans = []
        for rollId, roll in sorted(snapshot.rolls().items()):
            fence = [Check(roll.key, snapshot.version(roll.key))]
            plans.append((rollmodule.step(roll, snapshot, self.now), fence))
        return plans

    def round(self, rolls=True):
        """
        One round: every RC decides over one snapshot and each plan is
        applied; then every roll steps over a fresh snapshot; then agents
        settle and the invariants are checked.

        @return: whether the plans or the agents wrote anything.
        """
        wrote = False
        sources = [self.decideAll, self.stepRolls] if rolls else [self.decideAll]
        for source in sources:
            snapshot = self.snapshot()
            for plan, fence in source(snapshot):
                if self.drop is not None and isinstance(plan, Plan) and plan.changes \
                        and self.drop(plan):
                    wrote = True
                    continue
                d = self.planner.apply(plan, fence)
                d.addErrback(lambda f: self.conflicts.append(f.trap(VersionConflict, KeyExists)))
                self.run(d)
                wrote = wrote or bool(isinstance(plan, Plan) and plan.changes)
        settled = self.settle()
        after = self.snapshot()
        for check in self.checks:
            check(self, after)
        return wrote or settled

    def converge(self, rounds=50, rolls=True):
        """
        Run rounds until one changes nothing; fail if that takes over
        C{rounds}.

        @return: how many rounds wrote.
        """
        self.settle()
        for n in range(rounds):
            if not self.round(rolls):
                return n
            self.now += 1
        self.test.fail("no convergence in %d rounds" % (rounds,))

    def play(self, waits=50):
        """
        Converge; while a roll waits for a time (roll_delay, rollback_after),
        move the clock there and converge again.
        """
        for _ in range(waits):
            self.converge()
            snapshot = self.snapshot()
            times = [plan.at for plan, fence in self.stepRolls(snapshot)
                     if isinstance(plan, Wait) and plan.at is not None]
            if not times:
                return
            self.now = max(self.now, min(times))
        self.test.fail("still waiting after %d waits" % (waits,))


def checkPodInvariants(fleet, snapshot):
    """
    Every RC's pods are one per node, carry both reserved labels, and have
    intent; no node holds the pod id labelled for two RCs (the key allows
    one label map).
    """
    for rcId, rc in snapshot.rcs().items():
        nodes = [n for n, pod in snapshot.podsOf(rcId)]
        fleet.test.assertEqual(len(nodes), len(set(nodes)))
        for node in nodes:
            labels = snapshot.podLabels(node, rc.podId)
            fleet.test.assertEqual(labels.get("pod_id"), rc.podId)
            fleet.test.assertIsNotNone(snapshot.intent(node, rc.podId),
                                       "%s labelled on %s without intent" % (rcId, node))
            fleet.test.assertIsNotNone(snapshot.marker(node))


def healthyCount(snapshot, podId="web"):
    """
    @return: how many nodes report the pod passing on the version they intend.
    """
    total = 0
    for node in snapshot.nodes():
        health = snapshot.health(podId, node)
        if health is not None and health.status == "passing":
            total += 1
    return total
