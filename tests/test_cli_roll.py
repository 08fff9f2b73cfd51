"""
C{p2 roll}, run as a real C{p2} process against a C{local://} store, with the
test playing the RC and roll farms and the agents (L{tests.fleetcli}); and
C{p2 roll status --follow}'s live line, run in-process on a L{task.Clock}.
"""

import io
import json
import os

from twisted.internet import defer, task
from twisted.trial import unittest

from p2twisted.cli import roll as rollcli
from p2twisted.orchestrate import audit, edit
from p2twisted.orchestrate import roll as rolllogic
from p2twisted.orchestrate.harness import RecordingPlanner
from p2twisted.records.controllers import ReplicationController
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore
from tests.fleetcli import POD, FleetCommandMixin


class RollCommandTests(FleetCommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        FleetCommandMixin.setUp(self)
        yield self.nodes({"n1": {"tier": "web"}, "n2": {"tier": "web"}, "n3": {"tier": "web"}})
        yield self.succeed("rc", "create", "--manifest", self.manifest(1), "--selector",
                           "tier=web", "--replicas", "3", "--id", "v1")
        yield self.converge()

    def start(self, *more):
        return self.succeed("roll", "start", "--from", "v1", "--manifest", self.manifest(2),
                            "--min-healthy", "2", *more)

    @defer.inlineCallbacks
    def test_rollToManifest(self):
        """
        C{p2 roll start --manifest} creates the new RC and the roll in one
        go; played to the end, the new RC runs every replica healthy, the
        old RC and the roll are gone, and the audit log tells the story.
        """
        out = yield self.start()
        newId = edit.defaultId(POD % (2,))
        self.assertIn("started roll %s: v1 -> %s, 3 replica(s), min healthy 2, new RC %s "
                      "created" % (newId, newId, newId), out)
        info = yield self.p2json("roll", "status", newId)
        self.assertEqual((info["old"]["desired"], info["new"]["desired"], info["min_healthy"]),
                         (3, 0, 2))
        out = yield self.succeed("roll", "status", newId)
        self.assertIn("rolling: old v1 3/3 (3 healthy) -> new %s 0/0 (0 healthy) of 3; "
                      "3 healthy (min 2)" % (newId,), out)
        yield self.converge()
        rcs = yield self.p2json("rc", "list")
        self.assertEqual([(i["id"], i["desired"], i["current"], i["healthy"]) for i in rcs],
                         [(newId, 3, 3, 3)])
        line, code = yield self.p2Fails("roll", "status", newId)
        self.assertIn("no roll %r" % (newId,), line)
        # Following a roll already over says how it ended.
        out = yield self.succeed("roll", "status", newId, "--follow")
        self.assertEqual(out, "roll %s ended: finish desired=3 to=%s\n" % (newId, newId))
        line, code = yield self.p2Fails("roll", "status", "nope", "--follow")
        self.assertIn("no roll 'nope'", line)
        events, corrupt = yield self.withStore(audit.read)
        actions = [(e.kind, e.action) for e in events if e.kind == "roll" or
                   e.who.endswith("(p2)")]
        self.assertEqual(actions[:3], [("replication_controller", "create"),
                                       ("replication_controller", "create"), ("roll", "start")])
        self.assertEqual(actions[-1], ("roll", "finish"))

    @defer.inlineCallbacks
    def test_refusals(self):
        """
        A roll from or to an unknown RC, over an RC already in a roll, or
        with a minimum it could never keep, is one line and changes nothing.
        """
        yield self.succeed("rc", "create", "--manifest", self.manifest(3), "--replicas", "0",
                           "--id", "v3")
        yield self.start("--auto-rollback", "--rollback-after", "7.5")
        info = yield self.p2json("roll", "status", edit.defaultId(POD % (2,)))
        self.assertEqual((info["auto_rollback"], info["rollback_after"]), (True, 7.5))
        before = yield self.dump()
        for args, expected in [
                (("--from", "v9", "--to", "v3", "--min-healthy", "1"),
                 "no replication controller 'v9'"),
                (("--from", "v3", "--to", "nope", "--min-healthy", "1"),
                 "no replication controller 'nope'"),
                (("--from", "v1", "--to", "v3", "--min-healthy", "1"),
                 "RC v1 is already in roll"),
                (("--from", "v3", "--to", "v1", "--min-healthy", "0"),
                 "RC v1 is already in roll"),
                (("--from", "v1", "--manifest", self.manifest(4), "--min-healthy", "1"),
                 "RC v1 is already in roll"),
                (("--from", "v3", "--manifest", self.manifest(5), "--min-healthy", "1"),
                 "min_healthy 1 is over the 0 replicas"),
                (("--from", "v1", "--to", "v3"), "--min-healthy"),
                (("--from", "v1", "--to", "v3", "--manifest", self.manifest(4),
                  "--min-healthy", "1"), "not allowed with"),
                (("--from", "v3", "--to", "v1", "--min-healthy", "-2"), "number >= 0"),
                (("--from", "v3", "--to", "v1", "--min-healthy", "0", "--rollback-after", "5"),
                 "goes with --auto-rollback")]:
            line, code = yield self.p2Fails("roll", "start", *args)
            self.assertEqual(code, 2, line)
            self.assertIn(expected, line)
        line, code = yield self.p2Fails("rc", "scale", "v1", "5")
        self.assertIn("roll %s is moving it" % (edit.defaultId(POD % (2,)),), line)
        self.assertEqual((yield self.dump()), before)

    @defer.inlineCallbacks
    def test_signSameManifest(self):
        """
        C{p2 roll start --manifest} with the RC's own manifest, now signed,
        starts no roll: the RC's record gets the signed bytes (audited), and
        its pods' intent then holds them.  The same manifest unsigned, or
        the same signed bytes again, is still refused and changes nothing.
        """
        from tests.test_manifest import sign
        signed = os.path.abspath(self.mktemp() + ".yaml")
        with open(signed, "wb") as f:
            f.write(sign(POD % (1,)))
        before = yield self.dump()
        line, code = yield self.p2Fails("roll", "start", "--from", "v1", "--manifest",
                                        self.manifest(1), "--min-healthy", "2")
        self.assertIn("RC v1 already runs that manifest", line)
        self.assertEqual((yield self.dump()), before)
        out = yield self.succeed("roll", "start", "--from", "v1", "--manifest", signed,
                                 "--min-healthy", "2")
        self.assertEqual(out, "same manifest, now signed: replaced RC v1's manifest bytes; "
                              "its pods' intent is rewritten without a restart\n")
        self.assertEqual([i["id"] for i in (yield self.p2json("rc", "list"))], ["v1"])
        self.assertEqual([k for k in (yield self.dump()) if k.startswith(keys.ROLLS)], [])
        yield self.converge()
        after = yield self.dump()
        for node in ("n1", "n2", "n3"):
            self.assertEqual(after[keys.intent(node, "web")], sign(POD % (1,)))
        events, corrupt = yield self.withStore(audit.read)
        self.assertEqual([(e.kind, e.id, e.action, e.details["signature"]) for e in events
                          if e.action == "sign"],
                         [("replication_controller", "v1", "sign", "gpg")])
        line, code = yield self.p2Fails("roll", "start", "--from", "v1", "--manifest", signed,
                                        "--min-healthy", "2")
        self.assertIn("RC v1 already runs that manifest", line)

    @defer.inlineCallbacks
    def test_abort(self):
        """
        C{p2 roll abort} deletes the roll where it stands: both RCs keep
        their counts, the old one disabled once the roll began.
        """
        yield self.start()
        newId = edit.defaultId(POD % (2,))
        yield self.withStore(lambda store: self.round(store))
        out = yield self.succeed("roll", "abort", newId)
        self.assertIn("aborted roll %s where it stood: v1 keeps" % (newId,), out)
        self.assertIn("resume it with 'p2 roll start --from v1 --to %s --min-healthy N'"
                      % (newId,), out)
        rcs = yield self.p2json("rc", "list")
        self.assertEqual([(i["id"], i["roll"]) for i in rcs], [("v1", None), (newId, None)])
        line, code = yield self.p2Fails("roll", "abort", newId)
        self.assertEqual(code, 2)
        self.assertIn("no roll", line)
        out, err, code = yield self.p2("roll", "status", newId, "--follow")
        self.assertEqual((out, code), ("roll %s ended: abort\n" % (newId,), 1))
        events, corrupt = yield self.withStore(audit.read)
        self.assertEqual([e.action for e in events if e.kind == "roll"][-1], "abort")
        # As it says: resumed, the roll ends with every pod on the new RC.
        yield self.succeed("roll", "start", "--from", "v1", "--to", newId, "--min-healthy", "2")
        yield self.converge()
        rcs = yield self.p2json("rc", "list")
        self.assertEqual([(i["id"], i["desired"], i["healthy"]) for i in rcs], [(newId, 3, 3)])

    @defer.inlineCallbacks
    def test_followToTheEnd(self):
        """
        C{p2 roll status --follow} not on a terminal prints a line per change
        of the roll's progress and a last line saying how it ended.
        """
        yield self.start()
        newId = edit.defaultId(POD % (2,))
        lines, ended = self.spawn("roll", "status", newId, "--follow")
        first = yield lines.get()
        self.assertIn("rolling: old v1 3/3", first)
        yield self.converge()
        code = yield ended
        self.assertEqual(code, 0)
        seen = [first]
        while lines.pending:
            seen.append((yield lines.get()))
        self.assertEqual(seen[-1], "roll %s ended: finish desired=3 to=%s" % (newId, newId))


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


class FollowTests(unittest.TestCase):
    """
    C{follow} on a terminal, in-process over a L{MemoryStore} and a clock.
    """

    def follow(self, replicas, minHealthy, out, asJSON=False, **rollOptions):
        """
        Start a roll of C{replicas} from RC C{v1} to a new manifest and
        follow it, writing to C{out}.

        @return: the clock, store, planner, old RC, roll, C{out} and the
            L{Deferred} of L{rollcli.follow}.
        """
        clock = task.Clock()
        store = MemoryStore(clock=clock)
        old = ReplicationController("v1", POD % (1,), replicas)
        self.successResultOf(store.put(old.key, old.toBytes()))
        planner = RecordingPlanner(store)
        snapshot = self.successResultOf(planner.snapshot())
        roll, plan = edit.startRoll(snapshot, "v1", minHealthy, manifest=POD % (2,),
                                    **rollOptions)
        self.successResultOf(planner.apply(plan))
        options = type("Options", (), dict(out=out, reactor=clock, id=roll.id, json=asJSON))()
        return clock, store, planner, old, roll, out, rollcli.follow(options, store)

    def newPod(self, store, rc, node, status):
        """Put C{rc}'s pod on C{node}, running, its health C{status}."""
        self.successResultOf(store.put(keys.label("pod", node + "/web"), json.dumps(
            {"replication_controller_id": rc.id, "pod_id": "web"}).encode()))
        self.successResultOf(store.put(keys.reality(node, "web"), rc.manifest))
        self.successResultOf(store.put(keys.health("web", node), json.dumps(
            {"status": status, "sha": rc.sha, "output": "", "time": 0}).encode()))

    def test_liveLine(self):
        """
        On a terminal the progress line is rewritten in place, with an ETA
        once new pods have turned healthy; the end is a line of its own.
        """
        clock, store, planner, old, roll, out, d = self.follow(2, 1, FakeTerminal())
        self.assertIn("\r\x1b[Jrolling: old v1 0/2", out.getvalue())
        self.assertIn("ETA -", out.getvalue())
        # The new RC gets one healthy pod within 10 s.
        new = ReplicationController(roll.new_rc, POD % (2,), 1)
        self.successResultOf(store.put(new.key, new.toBytes()))
        self.newPod(store, new, "n1", "passing")
        clock.advance(10)
        self.assertIn("new %s 1/1 (1 healthy) of 2" % (roll.new_rc,), out.getvalue())
        self.assertIn("ETA 10s", out.getvalue().rsplit("\r", 1)[-1])
        # Nothing new turns healthy for 4 s: the ETA counts down, not up.
        for _ in range(int(round(4 / rollcli.INTERVAL))):
            clock.advance(rollcli.INTERVAL)
        self.assertIn("ETA 6s", out.getvalue().rsplit("\r", 1)[-1])
        self.assertNoResult(d)
        self.successResultOf(store.delete(keys.roll(roll.id)))
        clock.advance(rollcli.INTERVAL)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertTrue(out.getvalue().endswith("\x1b[Jroll %s ended\n" % (roll.id,)))
        self.assertNotIn("\n", out.getvalue()[:-1])

    def test_narrowTerminal(self):
        """
        On a terminal narrower than the line (the farm's reason makes it
        some 250 characters), each rewrite goes back up the rows the last
        line wrapped onto, so the line stays one and is never cut.
        """
        import os
        import re
        import shutil
        self.patch(shutil, "get_terminal_size", lambda *a: os.terminal_size((40, 24)))
        clock, store, planner, old, roll, out, d = self.follow(2, 1, FakeTerminal())
        first = out.getvalue()
        new = ReplicationController(roll.new_rc, POD % (2,), 1)
        self.successResultOf(store.put(new.key, new.toBytes()))
        self.newPod(store, new, "n1", "passing")
        clock.advance(10)
        rows = -(-len(first.rsplit("\x1b[J", 1)[-1]) // 40)
        self.assertGreater(rows, 1)
        rewrite = out.getvalue()[len(first):]
        self.assertTrue(rewrite.startswith("\r\x1b[%dA\x1b[J" % (rows - 1,)), repr(rewrite[:20]))
        self.assertIn("new %s 1/1 (1 healthy) of 2" % (roll.new_rc,), rewrite)
        self.successResultOf(store.delete(keys.roll(roll.id)))
        clock.advance(rollcli.INTERVAL)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertIsNone(re.search("\n.", out.getvalue()))

    def test_etaWaitsTheRollDelay(self):
        """
        While pods are left, the ETA is at least the roll's delay after the
        latest new pod turned healthy: the roll waits it before the next
        batch, and a pace of pods that came quickly said 0s all along.
        """
        clock, store, planner, old, roll, out, d = self.follow(2, 1, FakeTerminal(),
                                                               roll_delay=30)
        new = ReplicationController(roll.new_rc, POD % (2,), 1)
        self.successResultOf(store.put(new.key, new.toBytes()))
        self.newPod(store, new, "n1", "passing")
        clock.advance(rollcli.INTERVAL)
        self.assertIn("ETA 30s", out.getvalue().rsplit("\r", 1)[-1])
        for _ in range(int(round(10 / rollcli.INTERVAL))):
            clock.advance(rollcli.INTERVAL)
        self.assertIn("ETA 20s", out.getvalue().rsplit("\r", 1)[-1])
        self.successResultOf(store.delete(keys.roll(roll.id)))
        clock.advance(rollcli.INTERVAL)
        self.assertEqual(self.successResultOf(d), 0)

    def test_notTerminalNoLinePerTick(self):
        """
        Not on a terminal, a line is printed per change of the roll, not per
        second of a changing ETA while it waits.
        """
        clock, store, planner, old, roll, out, d = self.follow(2, 1, io.StringIO())
        new = ReplicationController(roll.new_rc, POD % (2,), 1)
        self.successResultOf(store.put(new.key, new.toBytes()))
        self.newPod(store, new, "n1", "passing")
        clock.advance(10)
        lines = out.getvalue().count("\n")
        self.assertIn("ETA 10s", out.getvalue())
        for _ in range(5):
            clock.advance(rollcli.INTERVAL)
        self.assertEqual(out.getvalue().count("\n"), lines)
        self.successResultOf(store.delete(keys.roll(roll.id)))
        clock.advance(rollcli.INTERVAL)
        self.assertEqual(self.successResultOf(d), 0)

    def finishedWithOneUnhealthy(self, asJSON=False):
        """
        Follow a roll of 3 at min_healthy 2 that finishes with one of the
        new RC's pods critical.

        @return: the clock, store, new RC, roll, output and the
            L{Deferred} of L{rollcli.follow}.
        """
        clock, store, planner, old, roll, out, d = self.follow(3, 2, io.StringIO(), asJSON)
        # Every count has moved: the new RC has its 3 pods, one not healthy.
        new = ReplicationController(roll.new_rc, POD % (2,), 3)
        self.successResultOf(store.put(new.key, new.toBytes()))
        self.successResultOf(store.put(old.key, old.withReplicas(0).toBytes()))
        for node, status in (("n1", "passing"), ("n2", "passing"), ("n3", "critical")):
            self.newPod(store, new, node, status)
        snapshot = self.successResultOf(planner.snapshot())
        finish = rolllogic.step(roll, snapshot, 0)
        self.assertEqual(finish.reason, "finished: %s runs 3" % (roll.new_rc,))
        self.successResultOf(planner.apply(finish))
        self.successResultOf(audit.append(store, finish.events, "test", 0))
        clock.advance(rollcli.INTERVAL)
        return clock, store, new, roll, out, d

    def test_finishedFollowsUntilHealthy(self):
        """
        Like P2, a roll finishes once the new RC has all its replicas
        placed, healthy or not; following it goes on, saying so, until all
        of them are healthy, so a person does not take the fleet for moved
        while a new pod is still failing.
        """
        clock, store, new, roll, out, d = self.finishedWithOneUnhealthy()
        self.assertNoResult(d)
        self.assertTrue(out.getvalue().endswith(
            "roll %s finished; waiting for %s's pods to be healthy: 3/3 placed, 2 healthy\n"
            % (roll.id, roll.new_rc)))
        for _ in range(3):
            clock.advance(rollcli.INTERVAL)
        self.assertEqual(out.getvalue().count("waiting for"), 1)
        self.assertNoResult(d)
        self.newPod(store, new, "n3", "passing")
        clock.advance(rollcli.INTERVAL)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertTrue(out.getvalue().endswith("roll %s ended: finish desired=3 to=%s\n"
                                                % (roll.id, roll.new_rc)))

    def test_finishedFollowsUntilHealthyJSON(self):
        """
        With C{--json}, the wait after the finish is a JSON object a line
        too, and the last says how the roll ended.
        """
        clock, store, new, roll, out, d = self.finishedWithOneUnhealthy(asJSON=True)
        self.newPod(store, new, "n3", "passing")
        clock.advance(rollcli.INTERVAL)
        self.assertEqual(self.successResultOf(d), 0)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        waiting = lines[-2]
        self.assertEqual((waiting["finished"], waiting["waiting"], waiting["new"]["id"],
                          waiting["new"]["healthy"], waiting["new"]["desired"]),
                         (True, "healthy", roll.new_rc, 2, 3))
        self.assertEqual(lines[-1], {"id": roll.id, "ended": "finish",
                                     "details": ["desired=3", "to=%s" % (roll.new_rc,)]})

    def test_progressLine(self):
        info = {"state": "rolling_back", "desired": 3, "min_healthy": 2, "old_rc": "a",
                "new_rc": "b", "old": {"id": "a", "current": 2, "desired": 2, "healthy": 2},
                "new": None, "farm": {"reason": "waiting", "error": "boom"}}
        self.assertEqual(rollcli.progressLine(info, 75),
                         "rolling back: old a 2/2 (2 healthy) -> new b gone of 3; 2 healthy "
                         "(min 2); ETA 1m15s; waiting; error: boom")

