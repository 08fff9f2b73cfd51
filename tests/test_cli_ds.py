"""
C{p2 ds}, run as a real C{p2} process against a C{local://} store, with the
test playing the daemon set farm (L{daemonset.decide} with the progress its
controller keeps) and the agents (L{tests.fleetcli}).
"""

import os

from twisted.internet import defer
from twisted.trial import unittest

from p2twisted.orchestrate import audit, daemonset
from p2twisted.orchestrate.dsedit import TREES
from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.records.controllers import Deletion
from p2twisted.store import keys
from tests.fleetcli import FleetCommandMixin


class DSCommandTests(FleetCommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        FleetCommandMixin.setUp(self)
        self.progress = {}
        yield self.nodes({"n1": {"tier": "web"}, "n2": {"tier": "web"}, "n3": {}})
        out = yield self.succeed("ds", "create", "--manifest", self.manifest(1), "--selector",
                                 "tier=web", "--min-health", "50", "--id", "web-ds")
        self.assertIn("created daemon set web-ds: pod web", out)
        self.assertIn("on nodes matching 'tier=web' (2 now)", out)

    def readSnapshot(self, store):
        return Snapshot.read(store, TREES)

    def decisions(self, snapshot, rolling):
        """Every daemon set's decision, with the progress its controller keeps."""
        found = []
        for dsId, ds in ([] if rolling else sorted(snapshot.daemonSets().items())):
            progress = self.progress.get(dsId, daemonset.Progress())
            plan = daemonset.decide(ds, snapshot, self.now, progress)
            self.progress[dsId] = daemonset.advance(progress, ds, snapshot, plan, self.now)
            found.append((ds, plan))
        return found

    @defer.inlineCallbacks
    def intents(self):
        snapshot = yield self.withStore(lambda store: Snapshot.read(store, TREES))
        return {n: snapshot.intent(n, "web") is not None for n in ("n1", "n2", "n3")}

    @defer.inlineCallbacks
    def test_createShowList(self):
        """
        The farm places what C{p2 ds create} asked for; C{show} and C{list}
        count the pods; the audit log says who created it.
        """
        yield self.converge()
        info = yield self.p2json("ds", "show", "web-ds")
        self.assertEqual({k: info[k] for k in ("desired", "current", "updated", "healthy",
                                                "min_health", "timeout", "rate", "parallel",
                                                "selector", "disabled")},
                         {"desired": 2, "current": 2, "updated": 2, "healthy": 2,
                          "min_health": 50, "timeout": 300, "rate": 0, "parallel": 50,
                          "selector": "tier=web", "disabled": False})
        self.assertEqual([p["node"] for p in info["pods"]], ["n1", "n2"])
        out = yield self.succeed("ds", "list")
        self.assertEqual(out.splitlines()[1].split(),
                         ["web-ds", "web", "2", "2", "2", "2", "tier=web", "enabled"])
        (listed,) = yield self.p2json("ds", "list")
        self.assertEqual(listed["id"], "web-ds")
        shown = yield self.succeed("ds", "show", "web-ds")
        self.assertIn("min_health 50%, timeout 300s, rate 0s, parallel 50", shown)
        events, corrupt = yield self.withStore(audit.read)
        self.assertEqual([(e.kind, e.id, e.action) for e in events if e.who.endswith("(p2)")],
                         [("daemon_set", "web-ds", "create")])

    @defer.inlineCallbacks
    def test_refusals(self):
        """
        Bad requests are one-line errors and change nothing: a second daemon
        set of the pod over overlapping nodes, no selector (say
        --everywhere), an unknown id, another pod id's manifest.
        """
        before = yield self.dump()
        line, code = yield self.p2Fails("ds", "create", "--manifest", self.manifest(2),
                                        "--everywhere", "--id", "other")
        self.assertIn("cannot create daemon set other: daemon set web-ds already runs pod web "
                      "on overlapping nodes", line)
        line, code = yield self.p2Fails("ds", "create", "--manifest", self.manifest(2))
        self.assertIn("one of the arguments --selector --everywhere is required", line)
        for args in (["--timeout", "nan"], ["--rate", "inf"], ["--rate", "1e309"]):
            line, code = yield self.p2Fails("ds", "create", "--manifest", self.manifest(2),
                                            "--selector", "tier=db", "--id", "x", *args)
            self.assertIn("argument %s: expected a number of seconds >= 0" % (args[0],), line)
            line, code = yield self.p2Fails("ds", "update", "web-ds", *args)
            self.assertIn("argument %s: expected a number of seconds >= 0" % (args[0],), line)
        line, code = yield self.p2Fails("ds", "show", "web-dss")
        self.assertIn("no daemon set 'web-dss'; did you mean 'web-ds'?", line)
        path = os.path.abspath(self.mktemp() + ".yaml")
        with open(path, "wb") as f:
            f.write(open(self.manifest(2), "rb").read().replace(b"id: web", b"id: db"))
        line, code = yield self.p2Fails("ds", "update", "web-ds", "--manifest", path)
        self.assertIn("daemon set web-ds runs pod web; this manifest is pod db", line)
        self.assertEqual((yield self.dump()), before)

    @defer.inlineCallbacks
    def test_updateAndTestSelector(self):
        """
        C{test-selector} shows the nodes a selector would add and remove
        and changes nothing; C{update --selector} applies it and says the
        same; C{update --manifest} has the farm replace every pod.
        """
        yield self.converge()
        result = yield self.p2json("ds", "test-selector", "web-ds", "--everywhere")
        self.assertEqual((result["add"], result["remove"]), (["n3"], []))
        out = yield self.succeed("ds", "test-selector", "web-ds", "--selector", "!tier")
        self.assertIn("would add: n3\n  would remove: n1, n2", out)
        out = yield self.succeed("ds", "test-selector", "web-ds", "--selector", "tier=none")
        self.assertIn("matches no node: the farm would hold", out)
        out = yield self.succeed("ds", "update", "web-ds", "--everywhere", "--yes")
        self.assertEqual(out, "daemon set web-ds: node_selector 'tier=web' -> (every node)\n"
                              "  + n3\n"
                              "updated daemon set web-ds: node_selector 'tier=web' -> "
                              "(every node)\n")
        yield self.succeed("ds", "update", "web-ds", "--manifest", self.manifest(2),
                           "--parallel", "1", "--yes")
        yield self.converge()
        info = yield self.p2json("ds", "show", "web-ds")
        self.assertEqual((info["current"], info["updated"], info["healthy"], info["parallel"]),
                         (3, 3, 3, 1))
        self.assertIn("nothing to do",
                      (yield self.succeed("ds", "update", "web-ds", "--parallel", "1")))
        self.assertIn("warning: min_health 100 never takes a healthy pod down",
                      (yield self.succeed("ds", "update", "web-ds", "--min-health", "100")))

    @defer.inlineCallbacks
    def test_updateAsks(self):
        """
        C{update} with a selector or manifest changing what runs where
        shows the nodes it adds (+), removes (-) and replaces (~) first and
        asks: anything but yes (or the end of input) changes nothing (a
        mistyped selector must not take the pod off every other node); yes
        applies it.  Settings alone ask nothing.
        """
        yield self.converge()
        before = yield self.dump()
        for answer in (b"", b"n\n"):
            out, err, code = yield self.p2("ds", "update", "web-ds", "--selector", "!tier",
                                           stdin=answer)
            self.assertEqual((code, err), (1, ""))
            self.assertEqual(out, "daemon set web-ds: node_selector 'tier=web' -> '!tier'\n"
                                  "  + n3\n  - n1\n  - n2\n"
                                  "apply? [y/N] not changed\n")
        out, err, code = yield self.p2("ds", "update", "web-ds", "--manifest", self.manifest(2),
                                       "--selector", "tier=none", stdin=b"")
        self.assertEqual((code, err), (1, ""))
        self.assertIn("  (it matches no node: the farm would hold, removing nothing)\n"
                      "  ~ n1\n  ~ n2\napply? [y/N] not changed\n", out)
        self.assertEqual((yield self.dump()), before)
        out, err, code = yield self.p2("ds", "update", "web-ds", "--selector", "!tier",
                                       stdin=b"y\n")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("apply? [y/N] updated daemon set web-ds: node_selector 'tier=web' -> "
                      "'!tier'\n", out)
        self.assertEqual((yield self.p2json("ds", "show", "web-ds"))["selector"], "!tier")
        self.assertEqual((yield self.succeed("ds", "update", "web-ds", "--rate", "2")),
                         "updated daemon set web-ds: rate 0 -> 2.0\n")

    @defer.inlineCallbacks
    def test_unreadableRecord(self):
        """
        An unreadable daemon set record is named by C{list} (on standard
        error: not 'no daemon sets') and removed by C{delete}, which leaves
        its pods running, unlabelled; its id can be created again.
        """
        yield self.converge()
        yield self.withStore(lambda store: store.put(keys.daemonSet("web-ds"),
                                                     b'{"pod_id": 5}'))
        out, err, code = yield self.p2("ds", "list")
        self.assertEqual((out, code), ("", 0))
        self.assertIn("p2: daemon set web-ds: ", err)
        self.assertIn("('p2 ds delete web-ds' removes it)", err)
        out = yield self.succeed("ds", "delete", "web-ds")
        self.assertIn("deleted daemon set web-ds; its pods on n1, n2 keep running", out)
        self.assertEqual((yield self.p2json("ds", "list")), [])
        self.assertEqual((yield self.intents()), {"n1": True, "n2": True, "n3": False})
        entry = yield self.withStore(lambda store: store.get(keys.label("pod", "n1/web")))
        self.assertNotIn(b"daemon_set_id", entry.value)
        yield self.succeed("ds", "create", "--manifest", self.manifest(1), "--selector",
                           "tier=web", "--id", "web-ds")

    @defer.inlineCallbacks
    def test_disableEnable(self):
        """A disabled daemon set places nothing until enabled."""
        self.assertEqual((yield self.succeed("ds", "disable", "web-ds")),
                         "disable daemon set web-ds\n")
        yield self.converge()
        self.assertEqual((yield self.intents()), {"n1": False, "n2": False, "n3": False})
        self.assertIn("disabled", (yield self.succeed("ds", "list")))
        yield self.succeed("ds", "enable", "web-ds")
        yield self.converge()
        self.assertEqual((yield self.intents()), {"n1": True, "n2": True, "n3": False})

    @defer.inlineCallbacks
    def test_deleteLeavesIntent(self):
        """
        C{delete} without C{--cascade} leaves the pods running, their
        daemon_set_id label gone (no orphans for the farm to clean up, even
        with another daemon set listed).
        """
        yield self.converge()
        out = yield self.succeed("ds", "delete", "web-ds")
        self.assertIn("deleted daemon set web-ds; its pods on n1, n2 keep running, unmanaged",
                      out)
        yield self.succeed("ds", "create", "--manifest", self.manifest(1), "--selector",
                           "tier=none", "--id", "other")
        self.now += 3600
        yield self.converge()
        self.assertEqual((yield self.intents()), {"n1": True, "n2": True, "n3": False})
        entry = yield self.withStore(lambda store: store.get(keys.label("pod", "n1/web")))
        self.assertNotIn(b"daemon_set_id", entry.value)
        events, corrupt = yield self.withStore(audit.read)
        self.assertEqual([e.action for e in events if e.id == "web-ds"][-2:],
                         ["disown", "delete"])

    @defer.inlineCallbacks
    def test_deleteCascade(self):
        """C{delete --cascade} unschedules its pods with it."""
        yield self.converge()
        record = yield self.withStore(lambda store: store.get(keys.daemonSet("web-ds")))
        out = yield self.succeed("ds", "delete", "web-ds", "--cascade")
        self.assertEqual(out, "deleted daemon set web-ds; unscheduled its pods on n1, n2\n")
        key = keys.deleted(keys.DAEMON_SETS)
        marker = yield self.withStore(lambda store: store.get(key))
        self.assertEqual(Deletion.fromEntry(key, marker), Deletion("web-ds", record.version))
        yield self.converge()
        self.assertEqual((yield self.intents()), {"n1": False, "n2": False, "n3": False})
        self.assertEqual((yield self.p2json("ds", "list")), [])


class DeletePlanTests(unittest.TestCase):
    """
    L{dsedit.deleteDS} over a snapshot: only the set's own pods go with
    C{--cascade}.
    """

    def test_cascadeLeavesOtherPods(self):
        """
        A pod of another pod id that carries the set's label (put there by
        hand) is no pod the set runs: C{--cascade} takes the label off it
        and leaves it running.
        """
        from p2twisted.labels import encodeLabels
        from p2twisted.orchestrate.dsedit import deleteDS
        from p2twisted.orchestrate.plan import Schedule, Unschedule
        from p2twisted.records.daemonset import DaemonSet
        from p2twisted.store.common import Entry
        from tests.orchfleet import manifest
        ds = DaemonSet("web-ds", "web", manifest(1))
        db = manifest(1).replace(b"id: web", b"id: db")
        entries = {}
        for key, value in [
                (ds.key, ds.toBytes()),
                (keys.intent("n1", "web"), manifest(1)),
                (keys.label("pod", "n1/web"), encodeLabels(ds.labelsForPods())),
                (keys.intent("n1", "db"), db),
                (keys.label("pod", "n1/db"), encodeLabels(
                    {"pod_id": "db", "replication_controller_id": "db-rc",
                     "daemon_set_id": "web-ds"}))]:
            entries[key] = Entry(key, value, 1)
        done, plan = deleteDS(Snapshot.fromEntries(entries), "web-ds", cascade=True)
        self.assertTrue(done)
        self.assertEqual([c for c in plan.changes if isinstance(c, Unschedule)],
                         [Unschedule("n1", "web")])
        (kept,) = [c for c in plan.changes if isinstance(c, Schedule)]
        self.assertEqual((kept.node, kept.podId, kept.manifest, kept.podLabels),
                         ("n1", "db", db, {"pod_id": "db", "replication_controller_id": "db-rc"}))
        self.assertEqual(plan.events[0].details["nodes"], ["n1"])

    def test_cascadeUnreadable(self):
        """
        C{--cascade} on an unreadable record deletes it and unschedules the
        pods labelled for it whose pod_id label names their pod id (as
        the orphan cleanup would); another pod only loses the label.
        """
        from p2twisted.labels import encodeLabels
        from p2twisted.orchestrate.dsedit import deleteDS
        from p2twisted.orchestrate.plan import Schedule, Unschedule
        from p2twisted.store.common import Entry
        from tests.orchfleet import manifest
        entries = {}
        for key, value in [
                (keys.daemonSet("web-ds"), b'{"pod_id": 5}'),
                (keys.intent("n1", "web"), manifest(1)),
                (keys.label("pod", "n1/web"), encodeLabels(
                    {"pod_id": "web", "daemon_set_id": "web-ds"})),
                (keys.intent("n2", "db"), manifest(1).replace(b"id: web", b"id: db")),
                (keys.label("pod", "n2/db"), encodeLabels({"daemon_set_id": "web-ds"}))]:
            entries[key] = Entry(key, value, 1)
        done, plan = deleteDS(Snapshot.fromEntries(entries), "web-ds", cascade=True)
        self.assertTrue(done)
        self.assertEqual([c for c in plan.unscheduled()], [Unschedule("n1", "web")])
        self.assertEqual([(c.node, c.podLabels) for c in plan.changes
                          if isinstance(c, Schedule)], [("n2", {})])
        self.assertEqual(plan.events[0].details["nodes"], ["n1"])
        self.assertIn("unreadable", plan.events[0].details)
