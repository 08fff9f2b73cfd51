"""
The pod worker converges one pod by canonical SHA, retries with backoff and
records every attempt's outcome.
"""

import json

from twisted.internet import defer, task
from twisted.trial import unittest

from p2twisted.agent.testing import FakePods
from p2twisted.agent.worker import BACKOFF, IDLE, WORKING, PodWorker, retryPolicy
from p2twisted.errors import AgentError, ArtifactError
from p2twisted.manifest import parseManifest
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore

V1 = b"""id: web
launchables:
  app: {launchable_type: hoist, location: "file:///a/app_1.tar.gz"}
"""
V1_REFORMATTED = b"""# same meaning, other bytes
id: 'web'
launchables:
  app:
    location: "file:///a/app_1.tar.gz"
    launchable_type: hoist
"""
V2 = V1.replace(b"app_1", b"app_2")


class _SlowStatusReads(object):
    """
    A store whose answers to reads of one key arrive only when the test says
    (as over a slow network): the value is read when asked.
    """

    def __init__(self, store, key):
        self._store = store
        self._key = key
        self.held = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def get(self, key):
        d = self._store.get(key)
        if key != self._key:
            return d
        answer = defer.Deferred()
        d.addCallback(lambda entry: self.held.append((answer, entry)))
        return answer

    def answerLatest(self):
        """
        Answer the latest read held.
        """
        answer, entry = self.held.pop()
        answer.callback(entry)


def patchStatusWrites(store, wrap):
    """
    Route every write of a C{status/} key through C{wrap(write, key, *args)}
    (the worker writes its status with C{create} or C{cas}, keeping the
    crash-loop fields, or C{put}).

    @return: a function that undoes it.
    """
    originals = {name: getattr(store, name) for name in ("put", "create", "cas")}

    def patched(write):
        def call(key, *args):
            if key.startswith("status/"):
                return wrap(write, key, *args)
            return write(key, *args)
        return call
    for name, write in originals.items():
        setattr(store, name, patched(write))

    def restore():
        for name, write in originals.items():
            setattr(store, name, write)
    return restore

class WorkerTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(clock=self.clock)
        self.pods = FakePods()
        self.worker = PodWorker(self.pods, self.store, "n1", "web", self.clock,
                                backoff=retryPolicy(jitter=lambda: 0))

    def put(self, key, value):
        return self.successResultOf(self.store.put(key, value))

    def reality(self):
        entry = self.successResultOf(self.store.get(keys.reality("n1", "web")))
        return entry.value if entry else None

    def status(self):
        entry = self.successResultOf(self.store.get(keys.status("pods", "n1", "web")))
        return json.loads(entry.value)

    def test_installWritesReality(self):
        """
        Intent without reality deploys; reality is then the intent's original
        bytes, and the status says running with the SHA.
        """
        intent = self.put(keys.intent("n1", "web"), V1)
        self.worker.update(intent)
        self.assertEqual(self.worker.state, IDLE)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])
        self.assertEqual(self.reality(), V1)
        status = self.status()
        self.assertEqual((status["state"], status["error"]), ("running", None))

    def test_deployingOnlyWhenItTakesAWhile(self):
        """
        A deploy that takes a while says so in the pod's status ("deploying",
        with the SHA) once it has run for L{DEPLOYING_NOTE_DELAY}; a quicker
        one writes no such status (its store write would compete with the
        deploy), only "running" at its end.
        """
        from p2twisted.agent.worker import DEPLOYING_NOTE_DELAY
        writes = []

        def recording(write):
            def record(key, value, *args, **kwargs):
                if key == keys.status("pods", "n1", "web"):
                    writes.append(json.loads(value)["state"])
                return write(key, value, *args, **kwargs)
            return record
        for name in ("put", "create", "cas"):
            self.patch(self.store, name, recording(getattr(self.store, name)))
        gate = self.pods.gate = defer.Deferred()
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        self.clock.advance(DEPLOYING_NOTE_DELAY * 0.9)
        self.assertEqual(writes, [])
        self.clock.advance(DEPLOYING_NOTE_DELAY * 0.2)
        status = self.status()
        self.assertEqual((status["state"], status["sha"]), ("deploying", parseManifest(V1).sha()))
        gate.callback(None)
        self.assertEqual(self.status()["state"], "running")
        del writes[:]
        self.worker.update(self.put(keys.intent("n1", "web"), V2))
        self.clock.advance(DEPLOYING_NOTE_DELAY * 2)
        self.assertEqual(writes, ["running"])

    def test_sameSHANothing(self):
        """
        Reality with the same canonical SHA as intent (other bytes) is left
        alone.
        """
        self.put(keys.reality("n1", "web"), V1_REFORMATTED)
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        self.assertEqual(self.pods.calls, [])
        self.assertEqual(self.reality(), V1_REFORMATTED)

    def test_sameSHANotSupervisedStartsAgain(self):
        """
        Reality equal to intent, but some of the pod's services are not
        kept up here (the builtin supervisor's die with the agent): those
        are started again from the installs (no deploy); once supervised, a
        resync leaves the pod alone.
        """
        self.pods.down = ["web__app__launch"]
        self.put(keys.reality("n1", "web"), V1)
        intent = self.put(keys.intent("n1", "web"), V1)
        self.worker.update(intent)
        sha = parseManifest(V1).sha()
        self.assertEqual(self.pods.calls, [("relaunch", sha, ["web__app__launch"])])
        self.assertEqual(self.status()["state"], "running")
        self.pods.down = []
        self.worker.update(intent, resync=True)
        self.assertEqual(len(self.pods.calls), 1)

    def test_relaunchImpossibleDeploys(self):
        """
        When the installs to start again from are gone, the pod is deployed
        afresh.
        """
        self.pods.down = ["*"]
        self.pods.relaunch = lambda manifest, names: defer.fail(
            AgentError("pod web has no current install of app to start again"))
        self.put(keys.reality("n1", "web"), V1)
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        sha = parseManifest(V1).sha()
        self.assertEqual(self.pods.calls, [("deploy", sha, sha)])
        self.assertEqual(self.status()["state"], "running")

    def test_upgradeGivesOldManifest(self):
        """
        A different SHA deploys the new manifest with the old one, so the
        operations can install before halting.
        """
        self.put(keys.reality("n1", "web"), V1)
        self.worker.update(self.put(keys.intent("n1", "web"), V2))
        from p2twisted.manifest import parseManifest
        self.assertEqual(self.pods.calls,
                         [("deploy", parseManifest(V2).sha(), parseManifest(V1).sha())])
        self.assertEqual(self.reality(), V2)

    def countRealityReads(self):
        reads = []
        get = self.store.get

        def counting(key):
            if key == keys.reality("n1", "web"):
                reads.append(key)
            return get(key)
        self.patch(self.store, "get", counting)
        return reads

    def test_realityAsReadWithIntent(self):
        """
        An update giving reality as read with intent (the agent's sync
        reads both at once) deploys on it without reading it again; its
        version guards the write.
        """
        old = self.put(keys.reality("n1", "web"), V1)
        reads = self.countRealityReads()
        self.clock.advance(1)
        self.worker.update(self.put(keys.intent("n1", "web"), V2), reality=old,
                           readAt=self.clock.seconds())
        self.assertEqual(reads, [])
        self.assertEqual(self.pods.calls,
                         [("deploy", parseManifest(V2).sha(), parseManifest(V1).sha())])
        self.assertEqual(self.reality(), V2)

    def test_realityReadBeforeOwnWriteReadAgain(self):
        """
        Reality as read before this worker's own last write of it (not
        after it on the clock) is read again.
        """
        self.put(keys.reality("n1", "web"), V1)
        stale = self.successResultOf(self.store.get(keys.reality("n1", "web")))
        self.worker.update(self.put(keys.intent("n1", "web"), V2))
        self.assertEqual(self.reality(), V2)
        # (Taken as it was read, reality would equal this intent: nothing done.)
        self.worker.update(self.put(keys.intent("n1", "web"), V1), reality=stale,
                           readAt=self.clock.seconds())
        self.assertEqual(self.pods.calls[-1],
                         ("deploy", parseManifest(V1).sha(), parseManifest(V2).sha()))
        self.assertEqual(self.reality(), V1)

    def test_realityCreatedSinceReadWithIntent(self):
        """
        Reality read absent with intent but written by another since (a
        second agent, a person) is not overwritten: the attempt fails on it,
        and the next reads it and upgrades from what it names.
        """
        self.clock.advance(1)
        readAt = self.clock.seconds()
        self.put(keys.reality("n1", "web"), V1)
        self.worker.update(self.put(keys.intent("n1", "web"), V2), reality=None,
                           readAt=readAt)
        self.clock.advance(1)
        self.assertEqual(self.pods.calls[-1],
                         ("deploy", parseManifest(V2).sha(), parseManifest(V1).sha()))
        self.assertEqual(self.reality(), V2)

    def test_removeDeletesReality(self):
        """
        Reality without intent removes the pod, then deletes reality.
        """
        self.put(keys.reality("n1", "web"), V1)
        self.worker.update(None)
        self.assertEqual(self.pods.calls[0][0], "remove")
        self.assertIsNone(self.reality())
        self.assertIsNone(self.successResultOf(
            self.store.get(keys.status("pods", "n1", "web"))))

    def test_failureBacksOffAndKeepsReality(self):
        """
        A failed deploy leaves reality as it was, records the error and the
        attempt count, and retries after 1 s, then 2 s.
        """
        self.put(keys.reality("n1", "web"), V1)
        self.pods.fail = ArtifactError("fetching file:///a/app_2.tar.gz: 404 Not Found")
        self.worker.update(self.put(keys.intent("n1", "web"), V2))
        self.assertEqual(self.worker.state, BACKOFF)
        self.assertEqual(self.reality(), V1)
        status = self.status()
        self.assertEqual(status["state"], "failed")
        self.assertIn("404", status["error"])
        self.assertEqual(status["attempts"], 1)
        self.clock.advance(0.99)
        self.assertEqual(len(self.pods.calls), 1)
        self.clock.advance(0.02)
        self.assertEqual(len(self.pods.calls), 2)
        self.clock.advance(1.99)
        self.assertEqual(len(self.pods.calls), 2)
        self.pods.fail = None
        self.clock.advance(0.02)
        self.assertEqual(len(self.pods.calls), 3)
        self.assertEqual(self.worker.state, IDLE)
        self.assertEqual(self.reality(), V2)

    def test_backoffCapped(self):
        """
        The backoff doubles from 1 s and is capped at 60 s, plus jitter; no
        number of failures overflows it.
        """
        delay = retryPolicy(jitter=lambda: 0.5)
        self.assertEqual(delay(0), 1.5)
        self.assertEqual(delay(3), 8.5)
        self.assertEqual(delay(20), 60.5)
        self.assertEqual(delay(5000), 60.5)

    def test_manyFailuresKeepWorking(self):
        """
        After 2,000 consecutive failures (each retried after its backoff) the
        worker still takes new intent at once and stops cleanly.
        """
        worker = PodWorker(self.pods, self.store, "n1", "web", self.clock)
        self.pods.fail = ArtifactError("404 Not Found")
        worker.update(self.put(keys.intent("n1", "web"), V1))
        for _ in range(1999):
            self.assertEqual(worker.state, BACKOFF)
            self.clock.advance(61)
        self.assertEqual(len(self.pods.calls), 2000)
        self.assertEqual(self.status()["attempts"], 2000)
        self.pods.fail = None
        worker.update(self.put(keys.intent("n1", "web"), V2))
        self.assertEqual(worker.state, IDLE)
        self.assertEqual(self.reality(), V2)
        self.successResultOf(worker.stop())

    def test_latestWinsDuringWork(self):
        """
        News arriving during an attempt is acted on when it ends: the latest
        intent wins, intermediate ones are skipped.
        """
        gate = defer.Deferred()
        self.pods.gate = gate
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        self.assertEqual(self.worker.state, WORKING)
        self.worker.update(self.put(keys.intent("n1", "web"), V2))
        self.worker.update(self.put(keys.intent("n1", "web"), V1.replace(b"app_1", b"app_3")))
        gate.callback(None)
        self.assertEqual(self.worker.state, IDLE)
        self.assertEqual(len(self.pods.calls), 2)
        self.assertIn(b"app_3", self.reality())

    def test_newsResetsBackoff(self):
        """
        New intent during a backoff is tried at once.
        """
        self.pods.fail = ArtifactError("boom")
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        self.clock.advance(1.1)
        self.clock.advance(2.2)
        self.assertEqual(len(self.pods.calls), 3)
        self.pods.fail = None
        self.worker.update(self.put(keys.intent("n1", "web"), V2))
        self.assertEqual(len(self.pods.calls), 4)
        self.assertEqual(self.worker.state, IDLE)

    def test_invalidIntentNotRetried(self):
        """
        An intent that is not a valid manifest is recorded as invalid and not
        retried until it changes; nothing is deployed or removed.
        """
        self.put(keys.reality("n1", "web"), V1)
        bad = self.put(keys.intent("n1", "web"), b"id: web\nlaunchables: 7\n")
        self.worker.update(bad)
        self.assertEqual(self.pods.calls, [])
        self.assertEqual(self.status()["state"], "invalid")
        self.assertIn("launchables", self.status()["error"])
        self.worker.update(bad, resync=True)
        self.clock.advance(120)
        self.assertEqual(self.pods.calls, [])
        self.assertEqual(self.reality(), V1)

    def test_cannotActFreezes(self):
        """
        While the agent cannot act (store unreachable, session lost) nothing
        is deployed or removed; the worker retries later.
        """
        allowed = [False]
        worker = PodWorker(self.pods, self.store, "n1", "web", self.clock,
                           canAct=lambda: allowed[0], backoff=retryPolicy(jitter=lambda: 0))
        self.put(keys.reality("n1", "web"), V1)
        worker.update(None)
        self.clock.advance(10)
        self.assertEqual(self.pods.calls, [])
        self.assertEqual(self.reality(), V1)
        allowed[0] = True
        self.clock.advance(60)
        self.assertEqual(self.pods.calls[0][0], "remove")

    def test_statusWritesInOrder(self):
        """
        The status written last is the pod's latest, even when the answer to
        an earlier write's read comes late: "deploying" (written without
        waiting) never lands after "running".
        """
        store = _SlowStatusReads(self.store, keys.status("pods", "n1", "web"))
        worker = PodWorker(self.pods, store, "n1", "web", self.clock,
                           backoff=retryPolicy(jitter=lambda: 0))
        worker.update(self.put(keys.intent("n1", "web"), V1))
        self.assertEqual(self.reality(), V1)
        while store.held:
            store.answerLatest()
        self.assertEqual(self.status()["state"], "running")

    def test_stopWaitsForAttempt(self):
        """
        C{stop} fires only after the attempt in progress ends, and no retry
        follows.
        """
        gate = defer.Deferred()
        self.pods.gate = gate
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        stopped = self.worker.stop()
        self.assertNoResult(stopped)
        gate.errback(ArtifactError("late failure"))
        self.successResultOf(stopped)
        self.clock.advance(100)
        self.assertEqual(len(self.pods.calls), 1)


class KeyNamesPodTests(unittest.TestCase):
    """
    A key names its pod: a manifest under another pod's key changes nothing.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(clock=self.clock)
        self.pods = FakePods()

    def worker(self, podId):
        return PodWorker(self.pods, self.store, "n1", podId, self.clock,
                         backoff=retryPolicy(jitter=lambda: 0))

    def put(self, key, value):
        return self.successResultOf(self.store.put(key, value))

    def get(self, key):
        entry = self.successResultOf(self.store.get(key))
        return entry.value if entry else None

    def test_intentUnderAnotherKeyInvalid(self):
        """
        C{intent/n1/garb3} holding C{id: web} installs nothing, is recorded
        as invalid in C{status/pods/n1/garb3} with an error naming both, and
        is not retried; web's reality is untouched.
        """
        self.put(keys.reality("n1", "web"), V1)
        worker = self.worker("garb3")
        worker.update(self.put(keys.intent("n1", "garb3"), V2))
        self.assertEqual(self.pods.calls, [])
        self.assertIsNone(self.get(keys.reality("n1", "garb3")))
        self.assertEqual(self.get(keys.reality("n1", "web")), V1)
        status = json.loads(self.get(keys.status("pods", "n1", "garb3")))
        self.assertEqual(status["state"], "invalid")
        self.assertIn("intent/n1/garb3", status["error"])
        self.assertIn("web", status["error"])
        self.clock.advance(600)
        worker.update(self.successResultOf(self.store.get(keys.intent("n1", "garb3"))),
                      resync=True)
        self.assertEqual(self.pods.calls, [])

    def test_realityUnderAnotherKeyNotTrusted(self):
        """
        C{reality/n1/garb3} holding C{id: web} (left by an older agent) is
        not acted on as web: removing garb3 removes garb3 only, with no
        manifest (so nothing of web's, not its cgroups nor bin/disable).
        """
        self.put(keys.reality("n1", "garb3"), V1)
        self.worker("garb3").update(None)
        self.assertEqual(self.pods.calls, [("remove", None, "garb3")])
        self.assertIsNone(self.get(keys.reality("n1", "garb3")))

    def test_realityUnderAnotherKeyNotOld(self):
        """
        Deploying garb3 over a reality whose manifest names web deploys it
        fresh: web's manifest is not handed over as the old version.
        """
        garb3 = V1.replace(b"id: web", b"id: garb3")
        self.put(keys.reality("n1", "garb3"), V2)
        self.worker("garb3").update(self.put(keys.intent("n1", "garb3"), garb3))
        self.assertEqual(self.pods.calls, [("deploy", parseManifest(garb3).sha(), None)])
        self.assertEqual(self.get(keys.reality("n1", "garb3")), garb3)


class StatusLifetimeTests(unittest.TestCase):
    """
    C{status/pods/<node>/<pod>} lives as long as the pod.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(clock=self.clock)
        self.pods = FakePods()
        self.worker = PodWorker(self.pods, self.store, "n1", "web", self.clock,
                                backoff=retryPolicy(jitter=lambda: 0))
        self.key = keys.status("pods", "n1", "web")

    def put(self, key, value):
        return self.successResultOf(self.store.put(key, value))

    def test_removedWithThePod(self):
        """
        Once the pod is removed (its intent deleted), its status key is gone.
        """
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        self.assertIsNotNone(self.successResultOf(self.store.get(self.key)))
        self.successResultOf(self.store.delete(keys.intent("n1", "web")))
        self.worker.update(None)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy", "remove"])
        self.assertIsNone(self.successResultOf(self.store.get(self.key)))

    def test_invalidIntentDeleted(self):
        """
        The status of an invalid intent that never installed anything goes
        when that intent is deleted.
        """
        self.worker.update(self.put(keys.intent("n1", "web"), b"id: web\nlaunchables: 7\n"))
        self.assertIsNotNone(self.successResultOf(self.store.get(self.key)))
        self.worker.update(None)
        self.assertIsNone(self.successResultOf(self.store.get(self.key)))
        self.assertEqual(self.pods.calls, [])


class TraceTests(unittest.TestCase):
    """
    The worker is an explicit state machine: its event traces.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(clock=self.clock)
        self.pods = FakePods()
        self.worker = PodWorker(self.pods, self.store, "n1", "web", self.clock,
                                backoff=retryPolicy(jitter=lambda: 0))
        self.trace = []
        self.worker.tracer = lambda *transition: self.trace.append(transition)

    def put(self, key, value):
        return self.successResultOf(self.store.put(key, value))

    def test_failThenSucceed(self):
        self.pods.fail = ArtifactError("404")
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        self.pods.fail = None
        self.clock.advance(1)
        self.assertEqual(self.trace, [
            ("idle", "news", "working"),
            ("working", "failedAttempt", "backoff"),
            ("backoff", "timer", "working"),
            ("working", "succeeded", "idle"),
        ])

    def test_newsDuringAttempt(self):
        self.pods.gate = defer.Deferred()
        gate = self.pods.gate
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        self.worker.update(self.put(keys.intent("n1", "web"), V2))
        gate.callback(None)
        self.assertEqual(self.trace, [
            ("idle", "news", "working"),
            ("working", "news", "working"),
            ("working", "rerun", "working"),
            ("working", "succeeded", "idle"),
        ])

    def test_stopDuringAttempt(self):
        self.pods.gate = defer.Deferred()
        gate = self.pods.gate
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        stopped = self.worker.stop()
        self.assertEqual(self.worker.state, "stopping")
        gate.errback(ArtifactError("late"))
        self.successResultOf(stopped)
        self.worker.update(self.put(keys.intent("n1", "web"), V2))
        self.worker.kick()
        self.assertEqual(self.trace, [
            ("idle", "news", "working"),
            ("working", "stop", "stopping"),
            ("stopping", "failedAttempt", "stopped"),
            ("stopped", "kick", "stopped"),
        ])

    def test_resyncInBackoffWaits(self):
        """
        A resync during a backoff waits for it; a kick (the store is back)
        retries at once.
        """
        self.pods.fail = ArtifactError("404")
        intent = self.put(keys.intent("n1", "web"), V1)
        self.worker.update(intent)
        self.worker.update(intent, resync=True)
        self.worker.kick()
        self.assertEqual(self.trace, [
            ("idle", "news", "working"),
            ("working", "failedAttempt", "backoff"),
            ("backoff", "resync", "backoff"),
            ("backoff", "kick", "working"),
            ("working", "failedAttempt", "backoff"),
        ])

    def test_stopDuringBackoffFiresIdleWaiters(self):
        """
        Whoever waits for the worker to be idle hears of it when it is
        stopped during a backoff.
        """
        self.pods.fail = ArtifactError("404")
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        waiting = self.worker.whenIdle()
        self.assertNoResult(waiting)
        self.successResultOf(self.worker.stop())
        self.assertEqual(self.successResultOf(waiting), "stopped")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_kickDuringFailingAttempt(self):
        """
        A kick (the store is back) while a failing attempt is still
        recording its failure is not lost: the worker retries at once
        rather than waiting out its backoff.
        """
        acting = [False]
        worker = PodWorker(self.pods, self.store, "n1", "web", self.clock,
                           canAct=lambda: acting[0], backoff=retryPolicy(jitter=lambda: 0))
        trace = []
        worker.tracer = lambda *transition: trace.append(transition)
        intent = self.put(keys.intent("n1", "web"), V1)
        written = defer.Deferred()
        restore = patchStatusWrites(
            self.store, lambda write, key, *args: written.addCallback(lambda _: write(key, *args)))
        worker.update(intent)
        restore()
        self.assertEqual(worker.state, WORKING)
        acting[0] = True
        worker.kick()
        written.callback(None)
        self.assertEqual(worker.state, IDLE)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])
        self.assertEqual(trace, [
            ("idle", "news", "working"),
            ("working", "kick", "working"),
            ("working", "rerun", "working"),
            ("working", "succeeded", "idle"),
        ])

    def test_kickDuringSucceedingAttempt(self):
        """
        A kick during an attempt that succeeds asks for nothing more.
        """
        self.pods.gate = defer.Deferred()
        gate = self.pods.gate
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        self.worker.kick()
        gate.callback(None)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])
        self.assertEqual(self.trace[-1], ("working", "succeeded", "idle"))


class StatusTruthTests(unittest.TestCase):
    """
    C{status/pods/<node>/<pod>} ends up saying what the worker last found,
    even when a write of it failed or the same invalid intent returns.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(clock=self.clock)
        self.pods = FakePods()
        self.worker = PodWorker(self.pods, self.store, "n1", "web", self.clock,
                                backoff=retryPolicy(jitter=lambda: 0))

    def put(self, key, value):
        return self.successResultOf(self.store.put(key, value))

    def status(self):
        entry = self.successResultOf(self.store.get(keys.status("pods", "n1", "web")))
        return json.loads(entry.value)

    def test_sameInvalidIntentAgain(self):
        """
        An invalid intent, then a valid one (deployed), then the same
        invalid bytes again: the status says invalid again, not running.
        """
        bad = b"id: web\nlaunchables: 7\n"
        self.worker.update(self.put(keys.intent("n1", "web"), bad))
        self.assertEqual(self.status()["state"], "invalid")
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        self.assertEqual(self.status()["state"], "running")
        self.worker.update(self.put(keys.intent("n1", "web"), bad))
        self.assertEqual(self.status()["state"], "invalid")
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])

    def test_failedStatusWriteWrittenAgain(self):
        """
        A status write that failed (a store outage) is made again at the
        next resync, though the pod's state did not change.
        """
        from p2twisted.errors import StoreUnavailable
        intent = self.put(keys.intent("n1", "web"), V1)
        restore = patchStatusWrites(
            self.store, lambda write, key, *args: defer.fail(StoreUnavailable(None, "memory",
                                                                              "down")))
        self.worker.update(intent)
        restore()
        self.assertIsNone(self.successResultOf(self.store.get(keys.status("pods", "n1", "web"))))
        self.worker.update(intent, resync=True)
        self.assertEqual(self.status()["state"], "running")

    def test_statusWriteBugLogged(self):
        """
        A status write failing with something other than a store error is
        logged with its traceback.
        """
        patchStatusWrites(self.store, lambda write, key, *args: defer.fail(TypeError("a bug")))
        self.worker.update(self.successResultOf(MemoryStore(clock=self.clock).put(
            keys.intent("n1", "web"), b"id: web\nlaunchables: 7\n")))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_failedStatusDeleteRetried(self):
        """
        When deleting the status of a removed pod fails (a store outage),
        the worker tries again after its backoff, and the status goes.
        """
        from p2twisted.errors import StoreUnavailable
        self.worker.update(self.put(keys.intent("n1", "web"), V1))
        self.successResultOf(self.store.delete(keys.intent("n1", "web")))
        delete = self.store.delete
        failures = []

        def failing(key, version=None):
            if key.startswith("status/") and not failures:
                failures.append(key)
                return defer.fail(StoreUnavailable(None, "memory", "down"))
            return delete(key, version)
        self.store.delete = failing
        self.worker.update(None)
        self.assertEqual(failures, [keys.status("pods", "n1", "web")])
        self.assertEqual(self.worker.state, BACKOFF)
        self.clock.advance(2)
        self.assertIsNone(self.successResultOf(self.store.get(keys.status("pods", "n1", "web"))))
        self.assertTrue(self.worker.absent())
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy", "remove"])
