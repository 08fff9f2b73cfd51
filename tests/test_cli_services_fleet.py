"""
pop services across a fleet (C{p2 deploy NAME --replicas N}, C{p2 config}
as a rolling update, C{p2 scale}, C{p2 status}), run as real C{p2} processes
on a C{local://} store with the test playing the orchestrator and the agents
(L{tests.fleetcli}).
"""

import os

from twisted.internet import defer
from twisted.trial import unittest

from p2twisted.orchestrate import audit
from tests.fleetcli import FleetCommandMixin


class FleetServiceTests(FleetCommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        FleetCommandMixin.setUp(self)
        self.env["P2_STATE_DIR"] = os.path.abspath(self.mktemp())
        www = os.path.abspath(self.mktemp())
        os.makedirs(www)
        yield self.nodes({"n1": {"tier": "web"}, "n2": {"tier": "web"}, "n3": {"tier": "web"},
                          "db1": {"tier": "db"}})
        yield self.succeed("add", "web", "--template", "static", "--directory", www,
                           "--port", "18080", "--no-host-check")

    @defer.inlineCallbacks
    def deployed(self):
        out = yield self.succeed("deploy", "web", "--replicas", "3", "--selector", "tier=web",
                                 "--min-healthy", "2")
        self.assertIn("under replication controller web-", out)
        yield self.converge()

    def fleet(self):
        return self.p2json("status", "web").addCallback(lambda found: found[0]["fleet"])

    @defer.inlineCallbacks
    def test_deployReplicas(self):
        """
        C{p2 deploy NAME --replicas N --selector S} puts the service under a
        replication controller: the orchestrator runs it on N of the nodes S
        matches, and C{p2 status} shows desired, current and healthy.
        """
        yield self.deployed()
        fleet = yield self.fleet()
        [rc] = fleet["replication_controllers"]
        self.assertEqual((rc["desired"], rc["current"], rc["healthy"], rc["selector"]),
                         (3, 3, 3, "tier=web"))
        self.assertIsNone(fleet["roll"])
        status = yield self.p2json("status", "web")
        self.assertEqual([s["node"] for s in status[0]["nodes"]], ["n1", "n2", "n3"])
        out = yield self.succeed("status", "web")
        self.assertIn("replication controller %s: 3 desired, 3 current, 3 healthy; nodes "
                      "'tier=web'" % (rc["id"],), out)

    @defer.inlineCallbacks
    def test_deployWait(self):
        """
        C{p2 deploy NAME --replicas N --wait} shows the RC's counts as they
        change and returns once every replica is healthy.
        """
        lines, ended = self.spawn("deploy", "web", "--replicas", "2", "--wait")
        first = yield lines.get()
        self.assertIn("under replication controller web-", first)
        second = yield lines.get()
        self.assertIn("2 desired, 0 current, 0 healthy", second)
        yield self.converge()
        self.assertEqual((yield ended), 0)
        seen = []
        while lines.pending:
            seen.append((yield lines.get()))
        self.assertEqual(seen[-1], "web: 2 of 2 replica(s) healthy")

    @defer.inlineCallbacks
    def test_scale(self):
        """
        C{p2 scale NAME N} changes the count; the audit log names it.
        """
        yield self.deployed()
        out = yield self.succeed("scale", "web", "2")
        self.assertEqual(out, "web: 3 -> 2 replica(s)\n")
        yield self.converge()
        [rc] = (yield self.fleet())["replication_controllers"]
        self.assertEqual((rc["desired"], rc["current"]), (2, 2))
        out = yield self.succeed("deploy", "web", "--replicas", "3")
        self.assertEqual(out, "web: 2 -> 3 replica(s)\n")
        events, corrupt = yield self.withStore(audit.read)
        self.assertEqual([(e.action, e.details) for e in events if e.action == "scale"],
                         [("scale", {"from": 3, "to": 2}), ("scale", {"from": 2, "to": 3})])

    @defer.inlineCallbacks
    def test_configRolls(self):
        """
        C{p2 config NAME KEY=VALUE} on a service under an RC starts a
        rolling update to the re-rendered manifest, keeping the minimum
        given at deploy; C{p2 status} shows the roll; played to the end,
        every pod runs the new settings and one RC is left.
        """
        yield self.deployed()
        [before] = (yield self.fleet())["replication_controllers"]
        out = yield self.succeed("config", "web", "port=18081", "--no-host-check")
        self.assertIn("web: port = 18081 (was 18080)", out)
        self.assertIn("rolling web from %s to web-" % (before["id"],), out)
        self.assertIn("(3 replica(s), min healthy 2)", out)
        fleet = yield self.fleet()
        rollId = fleet["roll"]["id"]
        self.assertEqual(fleet["roll"]["old_rc"], before["id"])
        self.assertEqual(fleet["roll"]["min_healthy"], 2)
        out = yield self.succeed("status", "web")
        self.assertIn("roll %s rolling: old %s 3/3" % (fleet["roll"]["id"], before["id"]), out)
        # No second change while it rolls: the settings stay as they are.
        line, code = yield self.p2Fails("config", "web", "port=18082", "--no-host-check")
        self.assertEqual(code, 2)
        self.assertIn("web is being rolled from %s" % (before["id"],), line)
        line, code = yield self.p2Fails("scale", "web", "5")
        self.assertIn("before you scale it", line)
        settings = yield self.p2json("config", "web")
        self.assertEqual(settings["settings"]["port"], 18081)
        yield self.converge()
        fleet = yield self.fleet()
        [after] = fleet["replication_controllers"]
        self.assertIsNone(fleet["roll"])
        self.assertEqual((after["id"], after["desired"], after["healthy"]),
                         (rollId, 3, 3))
        self.assertNotEqual(after["sha"], before["sha"])
        status = yield self.p2json("status", "web")
        self.assertEqual({s["intent"] for s in status[0]["nodes"]}, {after["sha"]})

    @defer.inlineCallbacks
    def test_abortedRoll(self):
        """
        A service whose roll was aborted runs under two RCs: changing it is
        refused with the way out, which works.
        """
        yield self.deployed()
        [old] = (yield self.fleet())["replication_controllers"]
        yield self.succeed("config", "web", "port=18081", "--no-host-check")
        rollId = (yield self.fleet())["roll"]["id"]
        yield self.withStore(lambda store: self.round(store))
        yield self.succeed("roll", "abort", rollId)
        line, code = yield self.p2Fails("scale", "web", "2")
        self.assertIn("resume the roll ('p2 roll start --from %s --to %s --min-healthy N')"
                      % (old["id"], rollId), line)
        yield self.succeed("roll", "start", "--from", old["id"], "--to", rollId,
                           "--min-healthy", "2")
        yield self.converge()
        fleet = yield self.fleet()
        self.assertEqual([(rc["id"], rc["healthy"]) for rc in fleet["replication_controllers"]],
                         [(rollId, 3)])

    @defer.inlineCallbacks
    def test_refusals(self):
        """
        What an RC would undo is refused, in one line, changing nothing:
        deploying by node, undeploying or removing a service under an RC;
        scaling one under none; putting one deployed by node under an RC.
        """
        yield self.deployed()
        before = yield self.dump()
        for args, expected in [
                (("deploy", "web", "--node", "n1"), "runs under replication controller"),
                (("deploy", "web", "--replicas", "2", "--node", "n1"), "not both"),
                (("deploy", "web", "--selector", "tier=web"), "go with --replicas"),
                (("deploy", "web", "--replicas", "1", "--min-healthy", "2"), "is over"),
                (("deploy", "web", "--replicas", "1", "--selector", "tier in ("), "--selector"),
                (("undeploy", "web"), "p2 scale web 0"),
                (("remove", "web", "--undeploy"), "p2 scale web 0"),
                (("scale", "nope", "1"), "there is no service nope"),
                (("scale", "web", "-1"), ">= 0")]:
            line, code = yield self.p2Fails(*args)
            self.assertIn(expected, line)
        self.assertEqual((yield self.dump()), before)

    @defer.inlineCallbacks
    def test_byNode(self):
        """
        A service deployed by node keeps working as before and cannot be
        scaled; C{deploy --replicas} puts it under an RC only when the RC
        can adopt its pods as they are (same version, eligible nodes), and
        then restarts none of them.
        """
        out = yield self.succeed("deploy", "web", "--node", "db1", "--no-host-check")
        self.assertIn("deployed web (sha", out)
        line, code = yield self.p2Fails("scale", "web", "2")
        self.assertIn("runs under no replication controller", line)
        line, code = yield self.p2Fails("deploy", "web", "--replicas", "2", "--selector",
                                        "tier=web")
        self.assertIn("deployed by node (to db1)", line)
        status = yield self.p2json("status", "web")
        self.assertEqual(([s["node"] for s in status[0]["nodes"]], status[0]["fleet"]),
                         (["db1"], None))
        sha = status[0]["nodes"][0]["intent"]
        yield self.succeed("deploy", "web", "--replicas", "2")
        yield self.converge()
        status = yield self.p2json("status", "web")
        [rc] = status[0]["fleet"]["replication_controllers"]
        self.assertEqual((rc["desired"], rc["current"], rc["healthy"]), (2, 2, 2))
        self.assertEqual(len(status[0]["nodes"]), 2)
        self.assertIn("db1", [s["node"] for s in status[0]["nodes"]])
        self.assertEqual({s["intent"] for s in status[0]["nodes"]}, {sha})
