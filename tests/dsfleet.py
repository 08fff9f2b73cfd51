"""
A simulated fleet for daemon sets: L{tests.orchfleet.Fleet} whose rounds
run every daemon set's L{daemonset.decide} with the L{Progress} its
controller would keep, then let the agents settle.
"""

from p2twisted.orchestrate import daemonset
from p2twisted.orchestrate.plan import Wait
from p2twisted.records.daemonset import DaemonSet
from p2twisted.store.common import Check

from p2twisted.orchestrate.snapshot import TREES as DEFAULT
from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.store import keys
from tests.orchfleet import Fleet, manifest

#: What a daemon set's decisions read.
TREES = DEFAULT + (keys.DAEMON_SETS,)


class DSFleet(Fleet):
    """
    @ivar progress: C{{dsId: Progress}} the controllers keep.
    @ivar outcomes: C{{dsId: [outcome]}} of every decision, in order.
    """

    def __init__(self, *args, **kw):
        Fleet.__init__(self, *args, **kw)
        self.progress = {}
        self.outcomes = {}

    def putDS(self, dsId, version=1, **kw):
        ds = DaemonSet(dsId, "web", manifest(version), **kw)
        self.run(self.store.put(ds.key, ds.toBytes()))
        return ds

    def decideAll(self, snapshot):
        plans = []
        for dsId, ds in sorted(snapshot.daemonSets().items()):
            progress = self.progress.get(dsId, daemonset.Progress())
            outcome = daemonset.decide(ds, snapshot, self.now, progress)
            self.progress[dsId] = daemonset.advance(progress, ds, snapshot, outcome, self.now)
            self.outcomes.setdefault(dsId, []).append(outcome)
            plans.append((outcome, [Check(ds.key, snapshot.version(ds.key))]))
        return plans

    def snapshot(self):
        return self.run(Snapshot.read(self.store, TREES))

    def stepRolls(self, snapshot):
        return []

    def last(self, dsId):
        return self.outcomes[dsId][-1]

    def play(self, waits=50, rounds=50):
        """
        Converge; while a daemon set waits for a time (rate, a timeout),
        move the clock there and converge again.
        """
        for _ in range(waits):
            self.converge(rounds)
            times = [o.at for o in (v[-1] for v in self.outcomes.values())
                     if isinstance(o, Wait) and o.at is not None]
            if not times:
                return
            self.now = max(self.now, min(times))
        self.test.fail("still waiting after %d waits" % (waits,))
