# -*- test-case-name: tests.test_orchestrate_plan -*-
"""
A public test harness for orchestration logic, like Nomad's scheduler
C{Harness}: L{RecordingPlanner} records every plan it is given and applies
it to a store (a L{MemoryStore} by default), and L{settleAgents} plays every
node's agent (reality follows intent, health as told), so table-driven tests
run C{decide}/C{step} -> apply -> fresh snapshot to convergence without a
reactor.
"""

import functools
import json

from twisted.internet import defer, task
from zope.interface import implementer

from p2twisted.manifest import ManifestError, parseManifest
from p2twisted.orchestrate.plan import IPlanner, Planner, batches
from p2twisted.store import keys
from p2twisted.store.common import Delete, Put
from p2twisted.store.memory import MemoryStore

PASSING = "passing"
CRITICAL = "critical"


@implementer(IPlanner)
class RecordingPlanner(Planner):
    """
    An L{IPlanner} that remembers what it was asked to do.

    @ivar plans: every plan, L{Wait} and L{Done} given to L{apply}, in order.
    @ivar transactions: every transaction applied (lists of ops), in order.
    @ivar failures: the store errors of transactions that failed.
    """

    def __init__(self, store=None):
        Planner.__init__(self, MemoryStore(clock=task.Clock()) if store is None else store)
        self.plans = []
        self.transactions = []
        self.failures = []

    @defer.inlineCallbacks
    def apply(self, plan, fence=(), audit=None):
        self.plans.append(plan)
        results, applied = [], []
        for changes, ops in batches(plan, fence=fence, audit=audit):
            try:
                results.append((yield self.store.transaction(ops)))
            except Exception as e:
                e.applied = tuple(applied)
                self.failures.append(e)
                raise
            self.transactions.append(ops)
            applied.extend(changes)
        return results

    def changes(self, kind=None):
        """
        @return: every change of the plans given so far (of type C{kind}).
        """
        return [c for p in self.plans for c in getattr(p, "changes", ())
                if kind is None or isinstance(c, kind)]


@functools.lru_cache(maxsize=64)
def _sha(manifest):
    return parseManifest(manifest).sha()


def _healthValue(status, sha, now):
    return json.dumps({"status": status, "output": "", "sha": sha, "time": now},
                      sort_keys=True).encode("utf-8")


@defer.inlineCallbacks
def settleAgents(store, health=None, down=(), now=0):
    """
    Play every node's agent once: on nodes whose agent is up, reality becomes
    intent (pods without intent leave reality), each pod's health is
    C{health(node, podId, sha)} (default passing) and C{machines/<node>} is
    present; a node in C{down} loses its machine and health keys (they are
    ephemeral) and keeps its reality.

    @return: L{Deferred} firing with the number of keys written or deleted.
    """
    if health is None:
        def health(node, podId, sha):
            return PASSING
    intent = yield store.list(keys.INTENT)
    reality = yield store.list(keys.REALITY)
    healthKeys = yield store.list(keys.HEALTH)
    machines = yield store.list(keys.MACHINES)
    byNode = {}
    for tree in (intent, reality):
        for key, entry in tree.items():
            parts = keys.parse(key)
            if len(parts) == 3:
                byNode.setdefault(parts[1], ({}, {}))[tree is reality][parts[2]] = entry
    healthOf = {}
    for key in healthKeys:
        parts = keys.parse(key)
        healthOf.setdefault(parts[2], []).append(key)
    nodes = sorted({keys.parse(k)[1] for k in intent} | {keys.parse(k)[1] for k in machines})
    ops = []
    for node in nodes:
        wanted, real = byNode.get(node, ({}, {}))
        machineKey = keys.machine(node)
        if node in down:
            if machineKey in machines:
                ops.append(Delete(machineKey))
            ops.extend(Delete(k) for k in healthOf.get(node, ()))
            continue
        if machineKey not in machines:
            ops.append(Put(machineKey, json.dumps({"node": node}).encode("utf-8")))
        for podId in sorted(set(real) - set(wanted)):
            ops.append(Delete(keys.reality(node, podId)))
            if keys.health(podId, node) in healthKeys:
                ops.append(Delete(keys.health(podId, node)))
        for podId, entry in sorted(wanted.items()):
            try:
                sha = _sha(entry.value)
            except ManifestError:
                continue
            if podId not in real or real[podId].value != entry.value:
                ops.append(Put(keys.reality(node, podId), entry.value))
            value = _healthValue(health(node, podId, sha), sha, now)
            healthKey = keys.health(podId, node)
            if healthKey not in healthKeys or healthKeys[healthKey].value != value:
                ops.append(Put(healthKey, value))
    for start in range(0, len(ops), 64):
        yield store.transaction(ops[start:start + 64])
    return len(ops)
