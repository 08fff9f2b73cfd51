"""
Crash loops in C{status/pods/<node>/<pod>}: the supervisor's restart counts
merged into the worker's record, on the injected clock, with a version check.
"""

import json

from twisted.internet import defer, task
from twisted.trial import unittest

from p2twisted.agent.crashloop import CrashLoopMonitor, podCounts, preservingWrite
from p2twisted.agent.interfaces import ServiceStatus
from p2twisted.agent.worker import PodWorker
from p2twisted.records import PodStatus
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore
from tests.test_agent_worker import V1, FakePods

KEY = keys.status("pods", "n1", "web")


class FakeSupervisor(object):
    """
    Just the reading half of an L{ISupervisor}: C{services} and C{status}
    from C{self.statuses}.
    """

    name = "fake"

    def __init__(self):
        self.statuses = {}

    def services(self):
        return defer.succeed(sorted(self.statuses))

    def status(self, name):
        return defer.succeed(self.statuses.get(name))


def looping(name, quick, since=100.0, last="exit 3", delay=4.0, restarts=None):
    return ServiceStatus(name=name, running=False, wantUp=True,
                         restarts=quick if restarts is None else restarts,
                         quickExits=quick, loopingSince=since, lastExit=last,
                         restartDelay=delay)


class PodCountsTests(unittest.SynchronousTestCase):

    def test_summed(self):
        """
        A pod's restarts are its services' sum; its crash loop is that of its
        worst crash-looping service, with the text users see.
        """
        counts = podCounts([looping("web__a__launch", 5, since=100.0),
                            looping("web__b__launch", 3, restarts=10)], now=163.0)
        self.assertEqual(counts["restarts"], 15)
        loop = counts["crash_loop"]
        self.assertEqual(loop["service"], "web__a__launch")
        self.assertEqual(loop["text"], "crash-looping (5 restarts in 63 s, last exit 3)")

    def test_notLooping(self):
        """
        Fewer than three quick exits in a row, or a service up for
        C{MIN_UPTIME} since, is no crash loop.
        """
        self.assertIsNone(podCounts([looping("web__a__launch", 2)], 200.0)["crash_loop"])
        recovered = ServiceStatus(name="web__a__launch", running=True, pid=7, uptime=60.0,
                                  restarts=9, quickExits=9, loopingSince=1.0,
                                  lastExit="killed by SIGSEGV")
        self.assertEqual(podCounts([recovered], 200.0), {"restarts": 9, "crash_loop": None})


class CrashLoopMonitorTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.store = MemoryStore(clock=self.clock)
        self.supervisor = FakeSupervisor()
        self.monitor = CrashLoopMonitor(self.store, "n1", self.clock, self.supervisor,
                                        interval=5.0)

    def record(self):
        entry = self.successResultOf(self.store.get(KEY))
        return json.loads(entry.value) if entry else None

    def put(self, record):
        self.successResultOf(self.store.put(KEY, json.dumps(record).encode()))

    def test_mergedIntoWorkersRecord(self):
        """
        The counts are merged into the existing record on the monitor's
        clock, the worker's fields kept; a later worker write keeps them.
        """
        self.put({"pod": "web", "node": "n1", "state": "running", "error": None})
        self.supervisor.statuses["web__app__launch"] = looping("web__app__launch", 1,
                                                                since=990.0)
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)
        record = self.record()
        self.assertEqual((record["state"], record["restarts"], record["crash_loop"]),
                         ("running", 1, None))
        self.supervisor.statuses["web__app__launch"] = looping("web__app__launch", 4,
                                                                since=990.0)
        self.clock.advance(5)
        record = self.record()
        self.assertEqual(record["state"], "running")
        self.assertEqual(record["crash_loop"]["text"],
                         "crash-looping (4 restarts in 15 s, last exit 3)")
        self.assertEqual(record["restarts"], 4)
        worker = PodWorker(FakePods(), self.store, "n1", "web", self.clock)
        self.successResultOf(worker._writeStatus("failed", error="boom"))
        record = self.record()
        self.assertEqual((record["state"], record["error"], record["restarts"]),
                         ("failed", "boom", 4))
        self.assertEqual(record["crash_loop"]["restarts"], 4)

    def test_noRecordNoWrite(self):
        """
        A pod without a status record (not yet deployed, or removed) gets
        none from the monitor.
        """
        self.supervisor.statuses["web__app__launch"] = looping("web__app__launch", 4)
        self.successResultOf(self.monitor.checkAll())
        self.assertIsNone(self.record())

    def test_lostFieldsRestored(self):
        """
        A record rewritten without the fields (by a writer that does not keep
        them) gets them back at the next round, though nothing changed.
        """
        self.put({"pod": "web", "state": "running"})
        self.supervisor.statuses["web__app__launch"] = looping("web__app__launch", 4)
        self.successResultOf(self.monitor.checkAll())
        self.put({"pod": "web", "state": "deploying"})
        self.successResultOf(self.monitor.checkAll())
        record = self.record()
        self.assertEqual((record["state"], record["restarts"]), ("deploying", 4))

    def test_versionChecked(self):
        """
        The merge is a compare-and-set: a write that lands between its read
        and its write is not lost (the merge reads again).
        """
        self.put({"pod": "web", "state": "running"})
        self.supervisor.statuses["web__app__launch"] = looping("web__app__launch", 4)
        realGet = self.store.get
        raced = []

        def get(key):
            d = realGet(key)
            if not raced:
                raced.append(True)
                d.addCallback(lambda entry: self.store.put(
                    KEY, b'{"pod": "web", "state": "removing"}').addCallback(lambda _: entry))
            return d

        self.store.get = get
        self.successResultOf(self.monitor.checkAll())
        record = self.record()
        self.assertEqual((record["state"], record["restarts"]), ("removing", 4))

    def test_mergeGivenUpRetried(self):
        """
        Counts the merge could not write (every attempt met a concurrent
        write) are written at the next round, though they did not change
        since.
        """
        from p2twisted.errors import VersionConflict
        self.put({"pod": "web", "state": "running"})
        self.supervisor.statuses["web__app__launch"] = looping("web__app__launch", 1)
        self.successResultOf(self.monitor.checkAll())
        self.supervisor.statuses["web__app__launch"] = looping("web__app__launch", 4)
        realCas = self.store.cas
        self.store.cas = lambda key, value, version: defer.fail(VersionConflict(key, "memory"))
        self.successResultOf(self.monitor.checkAll())
        self.assertEqual(self.record()["restarts"], 1)
        self.store.cas = realCas
        self.successResultOf(self.monitor.checkAll())
        self.assertEqual(self.record()["restarts"], 4)

    def test_preservingWriteCreates(self):
        """
        The worker's write creates a record that does not exist yet.
        """
        self.successResultOf(preservingWrite(self.store, KEY,
                                             PodStatus("web", "n1", "deploying")))
        self.assertEqual(self.record(), {"pod": "web", "node": "n1", "state": "deploying",
                                         "sha": None, "error": None, "attempts": 0,
                                         "time": None})


class WorkerRecordTests(unittest.TestCase):
    """
    The worker's own record keeps its usual fields (the monitor's are added,
    never replacing them).
    """

    def test_workerFields(self):
        clock = task.Clock()
        store = MemoryStore(clock=clock)
        self.successResultOf(store.put(keys.intentNode("n1"), b'{"node": "n1"}'))
        worker = PodWorker(FakePods(), store, "n1", "web", clock)
        worker.update(self.successResultOf(store.put(keys.intent("n1", "web"), V1)))
        record = json.loads(self.successResultOf(store.get(KEY)).value)
        self.assertEqual(record["state"], "running")
        self.assertTrue({"pod", "node", "state", "sha", "error", "attempts", "time"}
                        <= set(record))
