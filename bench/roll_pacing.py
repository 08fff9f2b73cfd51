"""
Roll pacing benchmark (not a test): the orchestrator's own waits in a
rolling update, on simulated time, so the figures do not depend on the
machine's load.

    .venv/bin/python bench/roll_pacing.py [--n 1000] [--agent-delay 0.5]
        [--agent-spread 0] [--latency 0.01] [--lag 0.05] [--min-healthy 0.9]

The real orchestrator service (L{Orchestrator}: the rc and roll farms, the
L{WatchedReader}, the controllers and their pacing) runs on a
L{task.Clock} over an in-memory store whose transactions answer after
C{--latency} seconds and whose watches deliver C{--lag} seconds late (a
loaded ZooKeeper: ~10 ms and ~50 ms).  N simulated agents report reality and
passing health C{--agent-delay} seconds after their watch shows a new
intent.  An RC of N replicas is placed and settled, then a roll to a new
manifest at min_healthy 90% runs to its end.

It prints the roll's length in simulated seconds beside its floor -- the
agents' share alone: ceil(N / (N - min_healthy)) waves of C{agent-delay}
plus the store's hops -- the roll's steps, the transactions, and the CPU
of the process (real seconds: the orchestrator's and the simulation's).
Run it against another tree to compare
(C{PYTHONPATH=/tmp/base .venv/bin/python bench/roll_pacing.py}).

Figures (N 1,000, min_healthy 900, agent delay 0.5 s, latency 10 ms, lag
50 ms; simulated seconds, so the machine's load does not change them):

                                             roll    steps   (floor 6.80 s)
    before, agents all 0.5 s:               11.05    10
    before, agents 0.25-0.75 s (spread 1):  11.05    10
    after,  agents all 0.5 s:                7.50    10
    after,  agents 0.25-0.75 s (spread 1):   7.59    63

Before, each wave waited for the roll's next reconcile on news or after its
last plan (1 s each); after, a changed record is answered as soon as the
snapshots show it and other news within 0.1 s (or 4x what the farm's
decisions cost), so a wave costs the agents' delay plus ~0.07 s; with agents
of uneven speed the roll moves the pods that are healthy as they become so
(63 smaller steps).

Status writes held to one a second while only their counts change
(revroll, N 300): the roll's transactions 414 -> 384 (agents all 0.5 s)
and 710 -> 586 (spread 1), its length unchanged (7.50 s, 7.79 s).
"""

import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.environ.get("PYTHONPATH") or os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

import attr  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from bench.fleet import manifest  # noqa: E402
from p2twisted.store import keys  # noqa: E402
from p2twisted.store.common import Put  # noqa: E402
from p2twisted.store.memory import MemoryStore  # noqa: E402

class SlowStore(MemoryStore):
    """
    A L{MemoryStore} whose calls answer C{latency} seconds late and whose
    watches deliver C{lag} seconds late (latest wins, in order).

    @ivar transactions: how many transactions and writes it applied.
    """

    def __init__(self, clock, latency, lag):
        MemoryStore.__init__(self, clock=clock)
        self.latency, self.lag = latency, lag
        self.transactions = 0

    def _run(self, f, *args):
        d = defer.maybeDeferred(f, *args)
        later = defer.Deferred()
        d.addBoth(lambda r: self.clock.callLater(self.latency, later.callback, r) and None)
        return later

    def transaction(self, ops):
        self.transactions += 1
        return MemoryStore.transaction(self, ops)

    def _one(self, op, owner=None):
        self.transactions += 1
        return MemoryStore._one(self, op, owner)

    def watch(self, prefix, callback):
        return MemoryStore.watch(self, prefix, lambda entries: self.clock.callLater(
            self.lag, callback, entries))


class Agents(object):
    """
    N agents: C{delay} seconds after a node's intent shows a manifest its
    reality does not hold, reality and passing health are written.
    """

    def __init__(self, store, clock, nodes, delay, spread=0.0):
        import random
        from p2twisted.manifest import parseManifest
        self.store, self.clock, self.nodes, self.delay = store, clock, nodes, delay
        self.spread = spread
        self.random = random.Random(1)
        self.sha = {manifest(v): parseManifest(manifest(v)).sha() for v in (1, 2)}
        self.running = {}
        self.pending = {}
        self.passing = {}
        self.low = None

    def start(self):
        ops = [Put(keys.machine(n), json.dumps({"node": n}).encode()) for n in self.nodes]
        for i in range(0, len(ops), 64):
            self.store.transaction(ops[i:i + 64])
        self.store.watch(keys.INTENT, self.intent)

    def intent(self, entries):
        for key, entry in entries.items():
            parts = keys.parse(key)
            if len(parts) == 3 and self.running.get(parts[1]) != entry.value \
                    and self.pending.get(parts[1]) != entry.value:
                self.pending[parts[1]] = entry.value
                self.clock.callLater(self.delay * (1 + self.spread * (self.random.random() - 0.5)),
                                     self.deploy, parts[1], entry.value)

    def deploy(self, node, value):
        if self.pending.get(node) != value:
            return
        del self.pending[node]
        self.running[node] = value
        sha = self.sha[value]
        health = json.dumps({"status": "passing", "output": "", "sha": sha,
                             "time": self.clock.seconds()}).encode()
        self.store.transaction([Put(keys.reality(node, "web"), value),
                                Put(keys.health("web", node), health)])
        self.passing[node] = value
        if self.low is not None:
            self.low = min(self.low, len(self.passing))

    def on(self, value):
        return sum(1 for v in self.running.values() if v == value)


def advanceUntil(clock, condition, limit):
    """Run the clock from event to event until C{condition()}; @return: seconds."""
    start = clock.seconds()
    while not condition():
        calls = clock.getDelayedCalls()
        if not calls or clock.seconds() - start > limit:
            raise RuntimeError("not done after %.1f simulated seconds" % (
                clock.seconds() - start,))
        clock.advance(max(min(c.getTime() for c in calls) - clock.seconds(), 0))
    return clock.seconds() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--agent-delay", type=float, default=0.5)
    parser.add_argument("--agent-spread", type=float, default=0.0,
                        help="agents take agent-delay x (1 +- spread/2), at random")
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--lag", type=float, default=0.05)
    parser.add_argument("--min-healthy", type=float, default=0.9)
    args = parser.parse_args()
    from p2twisted.orchestrate.roll import createRoll
    from p2twisted.orchestrate.plan import Planner
    from p2twisted.orchestrate.snapshot import Snapshot
    from p2twisted.orchestrate.tap import Orchestrator, orchestratorConfig
    from p2twisted.records.controllers import ReplicationController
    clock = task.Clock()
    store = SlowStore(clock, args.latency, args.lag)
    nodes = ["node%04d" % i for i in range(args.n)]
    agents = Agents(store, clock, nodes, args.agent_delay, args.agent_spread)
    agents.start()
    config = orchestratorConfig(None, {"store": "memory://", "farms": "rc,roll"}, environ={})
    # Decisions cost their real CPU (a simulated clock's default is none).
    from p2twisted.orchestrate.controllers import CPU, FARMS
    kinds = {name: attr.evolve(kind, controller=functools.partial(kind.controller, cpu=CPU))
             for name, kind in FARMS.items()}
    orchestrator = Orchestrator(config, clock, kinds=kinds, store=store)
    orchestrator.startService()
    clock.advance(1)
    v1 = ReplicationController("web-v1", manifest(1), args.n)
    store.put(v1.key, v1.toBytes())
    placed = advanceUntil(clock, lambda: agents.on(manifest(1)) == args.n, 600)
    clock.advance(5)
    v2 = ReplicationController("web-v2", manifest(2), 0, disabled=True)
    store.put(v2.key, v2.toBytes())
    clock.advance(1)
    got = []
    Snapshot.read(store).addCallback(got.append)
    clock.advance(1)
    minHealthy = int(round(args.n * args.min_healthy))
    _, plan = createRoll(got[0], "web-v1", "web-v2", minHealthy)
    transactions, cpu = store.transactions, time.process_time()
    agents.low = len(agents.passing)
    Planner(store).apply(plan)
    state = store.state.entries
    rolled = advanceUntil(clock, lambda: agents.on(manifest(2)) == args.n
                          and keys.roll("web-v2") not in state and v1.key not in state, 600)
    cpu = time.process_time() - cpu
    steps = sum(1 for k, e in state.items() if k.startswith("audit/")
                and b'"roll"' in e.value and b'step"' in e.value)
    waves = -(-args.n // max(args.n - minHealthy, 1))
    # A wave: the step's transaction, the RC seeing it, its rewrite, the
    # agents seeing that, deploying, reporting, and the roll seeing it.
    floor = waves * (args.agent_delay + 3 * args.lag + 3 * args.latency)
    print("roll pacing: %d nodes, min_healthy %d, agent delay %.2fs (spread %.1f), store "
          "latency %.3fs, watch lag %.3fs" % (args.n, minHealthy, args.agent_delay,
                                              args.agent_spread, args.latency, args.lag))
    print("  placing the RC: %.2f s simulated" % (placed,))
    print("  roll: %.2f s simulated (floor %.2f s: %d waves of the agents' delay and the "
          "store's hops); %d steps, %d transactions, %.2f s of CPU; fewest passing %d"
          % (rolled, floor, waves, steps, store.transactions - transactions, cpu, agents.low))
    orchestrator.stopService()
    clock.advance(30)


if __name__ == "__main__":
    main()
