"""
The fleet verbs' tests: C{p2} runs as a real process on a C{local://} store
while the test plays the orchestrator (L{rc.decide} and L{roll.step} applied
through a L{RecordingPlanner}) and the agents (L{settleAgents}) on the same
store, round by round, until nothing changes: no orchestrator process, no
waiting on time.
"""

import json
import os
import sys
import time

from twisted.internet import defer, protocol, reactor

from p2twisted.errors import KeyExists, VersionConflict
from p2twisted.labels import encodeLabels
from p2twisted.orchestrate import audit, harness, rc as rcmodule, roll as rollmodule
from p2twisted.orchestrate.plan import Plan
from p2twisted.store import keys, openStore
from p2twisted.store.common import Check

from tests.cli import ROOT, P2CommandMixin
from tests.orchfleet import POD



class FleetCommandMixin(P2CommandMixin):
    """
    L{P2CommandMixin} plus a fleet of nodes to play the farms and agents of.

    @ivar now: the orchestrator's clock (seconds), moved on a round at a time.
    @ivar bad: manifest SHAs whose pods report critical health.
    """

    def setUp(self):
        P2CommandMixin.setUp(self)
        self.now = 1000.0
        self.bad = set()
        self.manifests = {}

    def manifest(self, version):
        """@return: the path of a manifest file of pod C{web}, version C{version}."""
        path = os.path.abspath(self.mktemp() + ".yaml")
        with open(path, "wb") as f:
            f.write(POD % (version,))
        return path

    @defer.inlineCallbacks
    def withStore(self, use):
        store = yield openStore(self.url, reactor)
        try:
            result = yield use(store)
        finally:
            yield store.close()
        return result

    def nodes(self, nodes):
        """
        Register C{nodes} (C{{node: labels}}) with running agents.
        """
        @defer.inlineCallbacks
        def write(store):
            for node, labels in sorted(nodes.items()):
                yield store.put(keys.label("node", node), encodeLabels(labels))
                yield store.put(keys.machine(node), json.dumps({"node": node}).encode())
        return self.withStore(write)

    def health(self, node, podId, sha):
        return harness.CRITICAL if sha in self.bad else harness.PASSING

    def readSnapshot(self, store):
        """@return: L{Deferred} firing with the snapshot a round decides over."""
        return harness.RecordingPlanner(store).snapshot()

    def decisions(self, snapshot, rolling):
        """
        @return: C{[(record, plan)]}: every RC's decision (C{rolling}: every
            roll's step) over C{snapshot}, as the farms make them.
        """
        if rolling:
            return [(roll, rollmodule.step(roll, snapshot, self.now))
                    for rollId, roll in sorted(snapshot.rolls().items())]
        return [(rc, rcmodule.decide(rc, snapshot)) for rcId, rc in sorted(snapshot.rcs().items())]

    @defer.inlineCallbacks
    def round(self, store, rolls=True):
        """
        @return: L{Deferred} firing with whether anything was written.
        """
        planner = harness.RecordingPlanner(store)
        wrote = False
        for rolling in ((False, True) if rolls else (False,)):
            snapshot = yield self.readSnapshot(store)
            for thing, plan in self.decisions(snapshot, rolling):
                fence = [Check(thing.key, snapshot.version(thing.key))]
                try:
                    yield planner.apply(plan, fence)
                except (VersionConflict, KeyExists):
                    continue
                if isinstance(plan, Plan) and plan.events:
                    # As the farms' controllers do.
                    yield audit.append(store, plan.events, "test-farm", time.time())
                wrote = wrote or bool(isinstance(plan, Plan) and plan.changes)
        settled = yield harness.settleAgents(store, self.health)
        return wrote or bool(settled)

    def converge(self, rounds=40, rolls=True):
        """
        Play the farms and the agents until a round changes nothing.
        """
        @defer.inlineCallbacks
        def play(store):
            yield harness.settleAgents(store, self.health)
            for n in range(rounds):
                if not (yield self.round(store, rolls)):
                    return n
                self.now += 1
            self.fail("no convergence in %d rounds" % (rounds,))
        return self.withStore(play)

    def spawn(self, *args, store=None):
        """
        Start C{p2 ARGS...} and leave it running.

        @param store: its C{--store} (default: this test's).
        @return: C{(lines, ended)}: a L{DeferredQueue} of its output lines
            (its C{errors} attribute another, of its standard error's) and a
            L{Deferred} firing with its exit code (its C{transport}
            attribute the process's, to signal it).
        """
        lines, ended = defer.DeferredQueue(), defer.Deferred()
        lines.errors = defer.DeferredQueue()

        class Lines(protocol.ProcessProtocol):
            buffer = errBuffer = b""

            def outReceived(self, data):
                self.buffer += data
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    lines.put(line.decode("utf-8"))

            def errReceived(self, data):
                self.errBuffer += data
                while b"\n" in self.errBuffer:
                    line, self.errBuffer = self.errBuffer.split(b"\n", 1)
                    lines.errors.put(line.decode("utf-8"))

            def processEnded(self, reason):
                ended.callback(reason.value.exitCode)

        argv = [sys.executable, "-m", "p2twisted.cli", "--store", store or self.url] + list(args)
        ended.transport = reactor.spawnProcess(Lines(), sys.executable, argv, env=self.env,
                                               path=ROOT)
        return lines, ended

    @defer.inlineCallbacks
    def p2json(self, *args):
        """@return: L{Deferred} firing with the JSON C{p2 ARGS... --json} prints."""
        out = yield self.succeed(*(args + ("--json",)))
        return json.loads(out)

    @defer.inlineCallbacks
    def dump(self):
        """@return: L{Deferred} firing with C{{key: value}} of the whole store but audit/."""
        entries = yield self.withStore(lambda store: store.list(""))
        return {k: e.value for k, e in entries.items() if not k.startswith("audit")}
