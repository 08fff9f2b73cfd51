"""
The orchestrator as a real process (C{twistd -n p2-orchestrator}), on the
local store and on a real ZooKeeper: it claims a replication controller
(its lock appears, naming the process), releases it at once on SIGTERM, and
when SIGKILLed another orchestrator takes it over once the dead one's
session expires.
"""

import json
import os
import signal
import sys
import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.records.controllers import ReplicationController
from p2twisted.store import keys, openStore
from tests.store_contract import waitFor
from tests.test_agent_process_e2e import AgentProcess
from tests.test_orchestrate_plan import MANIFEST
from tests.zkserver import sharedServer


class OrchestratorProcess(AgentProcess):
    """
    A C{twistd -n p2-orchestrator} subprocess (started, reported and killed
    as the agent's).
    """

    def __init__(self, testCase, store, config, farms="rc"):
        self.testCase = testCase
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        path = os.path.abspath(testCase.mktemp())
        with open(path, "w") as f:
            f.write(config)
        self.argv = [sys.executable, twistd, "-n", "--pidfile=", "p2-orchestrator",
                     "--store", store, "--config", path, "--farms", farms]
        self.proto = None

    def start(self):
        AgentProcess.start(self)
        self.pid = self.transport.pid
        return self


class ProcessMixin(object):

    timeout = 120

    @defer.inlineCallbacks
    def prepared(self):
        """
        @return: L{Deferred} firing with a store client holding one RC.
        """
        store = yield self.openStore()
        self.addCleanup(store.close)
        rc = ReplicationController(id="web", manifest=MANIFEST, replicas_desired=0)
        yield store.put(rc.key, rc.toBytes())
        return store

    def holder(self, store):
        """
        @return: L{Deferred} firing with the pid holding the RC's lock, or
            C{None}.
        """
        d = store.get(keys.lock("rc", "web"))
        return d.addCallback(lambda e: None if e is None else json.loads(e.value)["pid"])

    @defer.inlineCallbacks
    def test_claimThenReleaseOnSigterm(self):
        """
        The orchestrator claims the RC under a lock naming its process,
        reconciles it (its status appears), and on SIGTERM releases it at
        once (long before its session's TTL).
        """
        store = yield self.prepared()
        process = OrchestratorProcess(self, self.url, "session_ttl: 18\n").start()
        pid = yield waitFor(lambda: self.holder(store), timeout=60, what="the RC to be claimed")
        self.assertEqual(pid, process.pid)
        status = yield waitFor(lambda: store.get(keys.status("rc", "web")), timeout=60,
                               what="the RC's status")
        self.assertEqual({k: v for k, v in json.loads(status.value).items()
                          if k in ("desired", "current", "error")},
                         {"desired": 0, "current": 0, "error": None})
        yield process.kill(signal.SIGTERM)
        self.assertIsNone((yield self.holder(store)))

    @defer.inlineCallbacks
    def test_sigkillHandsOver(self):
        """
        Of two orchestrators one claims the RC; SIGKILLed, the other takes it
        over once the dead one's session expires.
        """
        store = yield self.prepared()
        config = "session_ttl: 2\n"
        processes = {p.pid: p for p in (OrchestratorProcess(self, self.url, config).start(),
                                        OrchestratorProcess(self, self.url, config).start())}
        first = yield waitFor(lambda: self.holder(store), timeout=60, what="the RC to be claimed")
        self.assertIn(first, processes)
        yield processes.pop(first).kill(signal.SIGKILL)
        (other,) = processes

        @defer.inlineCallbacks
        def takenOver():
            return (yield self.holder(store)) == other
        yield waitFor(takenOver, timeout=60, what="the other orchestrator to take over")


class LocalProcessTests(ProcessMixin, unittest.TestCase):

    def openStore(self):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        self.url = "local://" + os.path.join(path, "state.db")
        return openStore(self.url, reactor)


class ZooKeeperProcessTests(ProcessMixin, unittest.TestCase):

    def openStore(self):
        self.url = "zk://%s/orch%s" % (sharedServer().hosts, uuid.uuid4().hex[:8])
        return openStore(self.url, reactor)


class RealAgentTests(unittest.TestCase):
    """
    An orchestrator process and a machine agent process (runit, pods as
    'nobody') on one local store.
    """

    timeout = 180

    @defer.inlineCallbacks
    def test_rcAndRollOnAnAgent(self):
        """
        An RC of one over the labelled node runs its pod there; a roll to a
        new version replaces it in place; scaling the new RC to 0 stops it.
        The audit log tells each step.
        """
        from p2twisted.labels import encodeLabels
        from p2twisted.orchestrate import audit, roll
        from p2twisted.orchestrate.plan import Planner
        from p2twisted.orchestrate.snapshot import Snapshot
        from tests.agentharness import buildWebArtifact, freePort, waitForVersion, webManifest
        from tests.test_agent_e2e import requireRunit
        from tests.test_agent_process_e2e import base
        requireRunit()
        root = base(self)
        url = "local://%s/state.db" % (root,)
        store = yield openStore(url)
        self.addCleanup(store.close)
        artifacts = os.path.join(root, "artifacts")
        os.makedirs(artifacts)
        port = freePort()

        def rc(rcId, version, replicas, disabled=False):
            artifact, sha = buildWebArtifact(artifacts, "web", version)
            return ReplicationController(id=rcId, manifest=webManifest("web", artifact, port, sha),
                                         node_selector="tier=web", replicas_desired=replicas,
                                         disabled=disabled)
        yield store.put(keys.label("node", "n1"), encodeLabels({"tier": "web"}))
        AgentProcess(self, root, url).start()
        OrchestratorProcess(self, url, "resync_interval: 2\n").start()
        old = rc("old", "1", 1)
        yield store.put(old.key, old.toBytes())
        yield waitForVersion(port, "1", timeout=90)

        new = rc("new", "2", 0, disabled=True)
        yield store.put(new.key, new.toBytes())
        _, plan = roll.createRoll((yield Snapshot.read(store)), "old", "new", 0)
        yield Planner(store).apply(plan)
        OrchestratorProcess(self, url, "", farms="roll").start()
        yield waitForVersion(port, "2", timeout=90)

        @defer.inlineCallbacks
        def ended():
            return (yield store.get(keys.roll("new"))) is None
        yield waitFor(ended, timeout=60, what="the roll to end")
        yield store.put(new.key, new.withDisabled(False).withReplicas(0).toBytes())
        yield waitForVersion(port, None, timeout=60)
        events, _ = yield audit.read(store)
        actions = [(e.kind, e.action) for e in events]
        for expected in [("replication_controller", "schedule"), ("roll", "finish"),
                         ("replication_controller", "unschedule")]:
            self.assertIn(expected, actions)
