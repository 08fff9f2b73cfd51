"""
The generic farm claims objects by session lock, runs one controller per
claimed object, and hands everything over when its session is lost.
"""

import json

from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from p2twisted.errors import StoreUnavailable
from p2twisted.orchestrate.farm import PACE, Farm, IController
from p2twisted.orchestrate.testing import FakeController, FakeControllerFactory
from p2twisted.records.controllers import Deletion
from p2twisted.store import keys
from p2twisted.store.common import Delete, Put
from p2twisted.store.memory import MemoryState, MemoryStore

TTL = 6.0
KIND = "rc"
TREE = keys.REPLICATION_CONTROLLERS


def capture(testCase, level):
    """
    @return: a list receiving the log events of C{level} ("critical"...).
    """
    events = []

    def observer(event):
        if event.get("log_level") is not None and event["log_level"].name == level:
            events.append(event)
    globalLogPublisher.addObserver(observer)
    testCase.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class FarmTestCase(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.state = MemoryState()
        self.admin = MemoryStore(self.state, self.clock)

    def farm(self, manual=False, store=None, start=True):
        store = store or MemoryStore(self.state, self.clock)
        factory = FakeControllerFactory(manual)
        farm = Farm(store, KIND, TREE, factory, self.clock, ttl=TTL, resyncInterval=30.0,
                    jitter=lambda: 0)
        farm.factory = factory
        if start:
            farm.startService()
        self.addCleanup(lambda: farm.running and farm.stopService())
        return farm

    def put(self, objectId, value=b"{}"):
        return self.successResultOf(self.admin.put(keys.replicationController(objectId), value))

    def delete(self, objectId):
        self.successResultOf(self.admin.delete(keys.replicationController(objectId)))

    def lockOwner(self, objectId):
        entry = self.successResultOf(self.admin.get(keys.lock(KIND, objectId)))
        return entry.owner if entry is not None else None


class FakeTests(unittest.TestCase):

    def test_verify(self):
        """
        The public fake controller provides L{IController}.
        """
        self.assertTrue(verifyObject(IController, FakeController("web", None)))


class ClaimTests(FarmTestCase):

    def test_claimsEveryObject(self):
        """
        A farm claims each object with a session lock holding who it is, and
        starts one controller per object, which reconciles at once.
        """
        self.put("web")
        self.put("db")
        farm = self.farm()
        running = farm.factory.running()
        self.assertEqual(sorted(running), ["db", "web"])
        self.assertEqual([c.reconciles for c in running.values()], [1, 1])
        self.assertEqual(self.lockOwner("web"), farm.session.id)
        holder = json.loads(self.successResultOf(self.admin.get(keys.lock(KIND, "web"))).value)
        self.assertEqual((holder["kind"], holder["session"]), (KIND, farm.session.id))
        self.assertEqual(running["web"].lock.key, keys.lock(KIND, "web"))

    def test_lockHolder(self):
        """
        A lock says which farm holds it, and since when by the farm's clock.
        """
        self.clock.advance(1800000000)
        self.put("web")
        farm = self.farm()
        entry = self.successResultOf(self.admin.get(keys.lock(KIND, "web")))
        holder = json.loads(entry.value)
        self.assertEqual((holder["kind"], holder["session"], holder["since"]),
                         (KIND, farm.session.id, "2027-01-15T08:00:00Z"))

    def test_newAndChanged(self):
        """
        A new object is claimed; a changed one's controller reconciles
        again, the others' do not.
        """
        self.put("web")
        farm = self.farm()
        self.put("db")
        self.assertEqual(sorted(farm.factory.running()), ["db", "web"])
        self.put("web", b'{"replicas_desired": 2}')
        running = farm.factory.running()
        self.assertEqual((running["web"].reconciles, running["db"].reconciles), (2, 1))

    def test_deeperKeysAreNotObjects(self):
        """
        Only keys one segment below the tree are objects.
        """
        self.successResultOf(self.admin.put(TREE + "/web/extra", b"x"))
        farm = self.farm()
        self.assertEqual(farm.factory.running(), {})

    def test_reconcileNeverOverlaps(self):
        """
        News arriving while a reconcile runs is coalesced into one more
        reconcile after it, never a second one at the same time.
        """
        self.put("web")
        farm = self.farm(manual=True)
        web = farm.factory.running()["web"]
        self.put("web", b"1")
        self.put("web", b"2")
        self.clock.advance(30)
        self.assertEqual(web.reconciles, 1)
        web.finish()
        self.assertEqual(web.reconciles, 2)
        web.finish()
        self.assertEqual((web.reconciles, web.overlaps), (2, 0))

    def test_failingReconcileIsRetried(self):
        """
        A reconcile that fails is logged and retried with growing delays
        (and at the resync); a success resets the delay.
        """
        self.put("web")
        farm = self.farm(manual=True)
        web = farm.factory.running()["web"]

        def fail():
            web.pending[-1].errback(StoreUnavailable("status/rc/web", "memory"))
        fail()
        self.clock.advance(0.9)
        self.assertEqual(web.reconciles, 1)
        self.clock.advance(0.1)
        self.assertEqual(web.reconciles, 2)
        fail()
        self.clock.advance(1.9)
        self.assertEqual(web.reconciles, 2)
        self.clock.advance(0.1)
        self.assertEqual(web.reconciles, 3)
        web.finish()  # a success: nothing until the resync at 30 s
        self.clock.advance(26.9)
        self.assertEqual(web.reconciles, 3)
        self.clock.advance(0.1)
        self.assertEqual(web.reconciles, 4)

    def test_reconcileAsksForAnotherAt(self):
        """
        A reconcile firing with a delay (a roll waiting out its
        C{roll_delay}) is followed by another after that delay, without news.
        """
        self.put("web")
        farm = self.farm(manual=True)
        web = farm.factory.running()["web"]
        web.pending[-1].callback(5.0)
        self.clock.advance(4.9)
        self.assertEqual(web.reconciles, 1)
        self.clock.advance(0.1)
        self.assertEqual(web.reconciles, 2)
        web.finish()

    def test_stoppedClaimRetriesNothing(self):
        """
        A released object's retry timer is cancelled with it.
        """
        self.put("web")
        farm = self.farm(manual=True)
        web = farm.factory.running()["web"]
        web.pending[-1].errback(StoreUnavailable(None, "memory"))
        self.put("db")
        self.delete("web")
        self.clock.advance(60)
        self.assertEqual(web.reconciles, 1)

    def test_resync(self):
        """
        Every resync interval each controller reconciles, news or not.
        """
        self.put("web")
        farm = self.farm()
        self.clock.advance(30)
        self.clock.advance(30)
        self.assertEqual(farm.factory.running()["web"].reconciles, 3)

    def test_vanishedReleased(self):
        """
        An object whose record is deleted is released: its controller stops
        and its lock goes.
        """
        self.put("web")
        self.put("db")
        farm = self.farm()
        web = farm.factory.running()["web"]
        self.delete("web")
        self.assertTrue(web.stopped)
        self.assertIsNone(self.lockOwner("web"))
        self.assertEqual(sorted(farm.claims), ["db"])

    def test_factoryFails(self):
        """
        When the controller cannot be made the object's lock is released
        (another farm may do better) and the others are claimed.
        """
        self.put("web")
        self.put("db")
        factory = FakeControllerFactory()

        def make(objectId, lock):
            if objectId == "db":
                raise ValueError("no controller for db")
            return factory(objectId, lock)
        farm = Farm(MemoryStore(self.state, self.clock), KIND, TREE, make, self.clock, ttl=TTL)
        farm.startService()
        self.addCleanup(farm.stopService)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(sorted(factory.running()), ["web"])
        self.assertIsNone(self.lockOwner("db"))

    def test_brokenLock(self):
        """
        A lock deleted behind the farm's back (a person breaking it) stops
        the controller it protected; the object is claimed again under a
        fresh lock.
        """
        self.put("web")
        farm = self.farm()
        first = farm.factory.running()["web"]
        self.successResultOf(self.admin.delete(keys.lock(KIND, "web")))
        self.assertTrue(first.stopped)
        second = farm.factory.running()["web"]
        self.assertNotEqual(second.lock.version, first.lock.version)
        self.assertEqual(self.lockOwner("web"), farm.session.id)

    def test_stopReleasesAtOnce(self):
        """
        Stopping the farm stops its controllers and closes its session: the
        locks go now, not a TTL later, and a waiting farm takes over.
        """
        self.put("web")
        first = self.farm()
        second = self.farm()
        self.assertEqual(second.factory.running(), {})
        web = first.factory.running()["web"]
        self.successResultOf(first.stopService())
        self.assertTrue(web.stopped)
        self.assertEqual(sorted(second.factory.running()), ["web"])
        self.assertEqual(first.state, "stopped")


class FailsafeTests(FarmTestCase):

    def test_emptyTreeChangesNothing(self):
        """
        When every object vanishes at once the farm releases nothing, asks
        nothing, and logs critically; once objects reappear it works on
        again (releasing the ones still gone).
        """
        critical = capture(self, "critical")
        self.put("web")
        self.put("db")
        farm = self.farm()
        running = farm.factory.running()
        self.successResultOf(self.admin.transaction(
            [Delete(keys.replicationController(i)) for i in ("web", "db")]))
        self.clock.advance(30)
        self.assertTrue(farm.failsafe)
        self.assertEqual(len(critical), 1)
        self.assertIn("FAILSAFE", critical[0]["log_format"])
        self.assertEqual(farm.factory.running(), running)
        self.assertEqual([c.reconciles for c in running.values()], [1, 1])
        self.assertEqual(self.lockOwner("web"), farm.session.id)
        self.put("db")
        self.assertFalse(farm.failsafe)
        self.assertEqual(sorted(farm.factory.running()), ["db"])

    def deletion(self, objectId, version):
        self.successResultOf(self.admin.put(keys.deleted(TREE),
                                            Deletion(objectId, version).toBytes()))

    def test_deletedLastCarriesOn(self):
        """
        The last object deleted with a deletion naming it at the version the
        farm saw (a person's delete): the farm releases it, calmly.
        """
        critical = capture(self, "critical")
        version = self.put("web").version
        farm = self.farm()
        web = farm.factory.running()["web"]
        self.successResultOf(self.admin.transaction(
            [Delete(keys.replicationController("web")),
             Put(keys.deleted(TREE), Deletion("web", version).toBytes())]))
        self.assertEqual((farm.claims, farm.failsafe, critical), ({}, False, []))
        self.assertTrue(web.stopped)
        self.assertIsNone(self.lockOwner("web"))
        self.clock.advance(30)
        self.assertEqual(critical, [])
        self.put("web")
        self.assertEqual(sorted(farm.factory.running()), ["web"])

    def test_deletionNamingOtherHolds(self):
        """
        The failsafe holds when the deletion names another version of the
        object (an older one: it was created again since), only one of
        several objects gone at once, or is unreadable.
        """
        # (objects held, the deletion: id and version offset from its record's)
        for held, deletion in [(["web"], ("web", -1)), (["web", "db"], ("web", 0)),
                               (["web"], None)]:
            self.state = MemoryState()
            self.admin = MemoryStore(self.state, self.clock)
            critical = capture(self, "critical")
            versions = {i: self.put(i).version for i in held}
            farm = self.farm()
            if deletion is None:
                self.successResultOf(self.admin.put(keys.deleted(TREE), b"{oops"))
            else:
                self.deletion(deletion[0], versions[deletion[0]] + deletion[1])
            self.successResultOf(self.admin.transaction(
                [Delete(keys.replicationController(i)) for i in held]))
            self.assertTrue(farm.failsafe)
            self.assertEqual(sorted(farm.factory.running()), sorted(held))
            self.assertEqual(len(critical), 1)
            self.assertIn("FAILSAFE", critical[0]["log_format"])
            farm.stopService()

    def test_emptyIsTheEnd(self):
        """
        A farm told its tree empties as the normal end of work (rolls)
        releases the last objects like any other.
        """
        critical = capture(self, "critical")
        self.put("web")
        farm = Farm(MemoryStore(self.state, self.clock), "roll", TREE, FakeControllerFactory(),
                    self.clock, ttl=TTL, holdWhenEmpty=False)
        farm.startService()
        self.addCleanup(farm.stopService)
        self.delete("web")
        self.assertEqual((farm.claims, farm.failsafe, critical), ({}, False, []))

    def test_emptyAtStart(self):
        """
        A farm that never saw an object has nothing to do and no failsafe.
        """
        farm = self.farm()
        self.clock.advance(30)
        self.assertFalse(farm.failsafe)
        self.put("web")
        self.assertEqual(sorted(farm.factory.running()), ["web"])


class SessionTests(FarmTestCase):

    def test_lostSessionStopsEverything(self):
        """
        The moment the session is lost every controller stops; the farm
        opens a new session and claims the objects again.
        """
        self.put("web")
        self.put("db")
        store = MemoryStore(self.state, self.clock)
        farm = self.farm(store=store)
        trace = []
        farm.tracer = lambda *t: trace.append(t)
        before = dict(farm.factory.running())
        oldSession = farm.session
        store.crash()  # its sessions stop heartbeating
        self.clock.advance(TTL)
        self.assertTrue(oldSession.lost)
        self.assertTrue(all(c.stopped for c in before.values()))
        self.assertEqual(trace[0], ("serving", "lost", "opening"))
        self.assertEqual(farm.state, "serving")
        self.assertIsNot(farm.session, oldSession)
        after = farm.factory.running()
        self.assertEqual(sorted(after), ["db", "web"])
        self.assertFalse(set(after.values()) & set(before.values()))
        self.assertEqual(self.lockOwner("web"), farm.session.id)

    def test_openFailsBackOff(self):
        """
        A store that cannot open a session is retried with growing delays;
        the farm claims once it can.
        """
        self.put("web")
        failures = [StoreUnavailable(None, "memory")] * 3

        class Flaky(MemoryStore):
            def session(self, ttl):
                if failures:
                    return defer.fail(failures.pop())
                return MemoryStore.session(self, ttl)
        farm = self.farm(store=Flaky(self.state, self.clock))
        self.assertEqual(farm.state, "waiting")
        self.clock.advance(1)   # retry 1, fails: next in 2
        self.clock.advance(1.9)
        self.assertEqual(len(failures), 1)
        self.clock.advance(0.1)  # retry 2 fails: next in 4
        self.clock.advance(4)
        self.assertEqual(farm.state, "serving")
        self.assertEqual(sorted(farm.factory.running()), ["web"])

    def test_stopWhileOpening(self):
        """
        A session opened after the farm stopped is closed at once.
        """
        opened = defer.Deferred()

        class Slow(MemoryStore):
            def session(self, ttl):
                return opened
        store = Slow(self.state, self.clock)
        farm = self.farm(store=store)
        self.successResultOf(farm.stopService())
        session = self.successResultOf(MemoryStore.session(store, TTL))
        opened.callback(session)
        self.assertTrue(session.lost)
        self.assertEqual(farm.state, "stopped")


class TwoFarmTests(FarmTestCase):

    def claimedBy(self, *farms):
        """
        @return: the objects each farm runs a controller for, checking no
            object is claimed twice and each claim's lock is its session's.
        """
        seen = []
        for farm in farms:
            running = sorted(farm.factory.running())
            for objectId in running:
                self.assertEqual(self.lockOwner(objectId), farm.session.id)
            seen.append(running)
        every = sum(seen, [])
        self.assertEqual(len(every), len(set(every)))
        return seen

    def test_neverBothClaim(self):
        """
        Two farms on one store never claim the same object; objects created
        while both run are each claimed once.
        """
        for i in range(4):
            self.put("rc%d" % i)
        a, b = self.farm(), self.farm()
        self.assertEqual(self.claimedBy(a, b), [["rc0", "rc1", "rc2", "rc3"], []])
        self.put("rc4")
        self.clock.advance(30)
        self.assertEqual(sum(map(len, self.claimedBy(a, b))), 5)

    def test_lostSessionHandsOver(self):
        """
        A farm whose process dies loses its objects to the other farm within
        the session TTL, not before; the dead one's controllers stopped.
        """
        for i in range(3):
            self.put("rc%d" % i)

        class Mortal(MemoryStore):
            dead = False

            def session(self, ttl):
                if self.dead:
                    return defer.Deferred()  # never answers
                return MemoryStore.session(self, ttl)
        storeA = Mortal(self.state, self.clock)
        a = self.farm(store=storeA)
        b = self.farm()
        self.assertEqual(self.claimedBy(a, b), [["rc0", "rc1", "rc2"], []])
        oldA = a.factory.running()
        storeA.crash()
        storeA.dead = True
        self.clock.advance(TTL - 1)
        self.assertEqual(self.claimedBy(b), [[]])
        self.clock.advance(1)
        self.assertTrue(all(c.stopped for c in oldA.values()))
        self.assertEqual(a.factory.running(), {})
        self.assertEqual(self.claimedBy(b), [["rc0", "rc1", "rc2"]])

    def test_partitionedFarmDoesNotReclaim(self):
        """
        A farm whose session expired while it lived (a long pause) opens a
        new session but finds the objects taken by the other farm.
        """
        self.put("web")
        storeA = MemoryStore(self.state, self.clock)
        a = self.farm(store=storeA)
        b = self.farm()
        storeA.crash()
        self.clock.advance(TTL)
        self.assertEqual(a.state, "serving")
        self.assertEqual(self.claimedBy(a, b), [[], ["web"]])

    def test_lockFreedWhileClaimRefused(self):
        """
        A claim refused because another farm held the lock, where that lock
        went away before the refusal arrived, is tried again at once: the
        object does not wait for the next resync.
        """

        class SlowLocks(MemoryStore):
            """Lock requests wait until the test runs them."""

            def __init__(self, *a, **kw):
                MemoryStore.__init__(self, *a, **kw)
                self.held = []

            def session(self, ttl):
                def wrap(session):
                    real = session.lock

                    def lock(key, value=b""):
                        d = defer.Deferred()
                        self.held.append((lambda: real(key, value), d))
                        return d
                    session.lock = lock
                    return session
                return MemoryStore.session(self, ttl).addCallback(wrap)
        self.put("web")
        slow = SlowLocks(self.state, self.clock)
        b = self.farm(store=slow)
        attempt, answer = slow.held.pop(0)
        other = self.successResultOf(self.admin.session(TTL))
        lock = self.successResultOf(other.lock(keys.lock(KIND, "web"), b"other"))
        refused = []
        attempt().addErrback(refused.append)
        self.successResultOf(lock.release())
        answer.errback(refused[0])
        self.assertEqual(len(slow.held), 1, "claimed again")
        attempt, answer = slow.held.pop(0)
        attempt().chainDeferred(answer)
        self.assertEqual(list(b.factory.running()), ["web"])


class NewsTests(FarmTestCase):

    def test_newsCoalescedOverInterval(self):
        """
        With C{newsInterval}, a stream of news (a fleet's health changes)
        has each controller reconcile at most once per interval: the first
        news at once, the rest together once the interval is over; a change
        to the object's own record does not wait.
        """
        self.put("web")
        farm = Farm(MemoryStore(self.state, self.clock), KIND, TREE, FakeControllerFactory(),
                    self.clock, ttl=TTL, jitter=lambda: 0, newsInterval=1.0)
        farm.startService()
        self.addCleanup(farm.stopService)
        web = farm.controllerFactory.running()["web"]
        self.clock.advance(5)
        start = web.reconciles
        for _ in range(100):
            farm.nudge()
        self.assertEqual(web.reconciles, start + 1)
        self.clock.advance(0.5)
        farm.nudge()
        self.assertEqual(web.reconciles, start + 1)
        self.clock.advance(0.5)
        self.assertEqual(web.reconciles, start + 2)
        self.clock.advance(5)
        self.assertEqual(web.reconciles, start + 2, "nothing new, nothing more")
        self.put("web", b'{"changed": 1}')
        farm.nudge()
        self.assertEqual(web.reconciles, start + 3)


    def newsFarm(self, newsInterval):
        farm = Farm(MemoryStore(self.state, self.clock), KIND, TREE, FakeControllerFactory(),
                    self.clock, ttl=TTL, jitter=lambda: 0, newsInterval=newsInterval)
        farm.startService()
        self.addCleanup(farm.stopService)
        return farm

    def test_recordShownReconcilesAtOnce(self):
        """
        When the controllers' snapshots show an object's record changed
        (L{Farm.recordsShown}), its controller reconciles at once -- the
        farm's own watch may have poked it before the snapshots had the
        change -- and the other objects take it as news.
        """
        self.put("web")
        self.put("api")
        farm = self.newsFarm(1.0)
        web, api = farm.controllerFactory.running()["web"], farm.controllerFactory.running()["api"]
        farm.recordsShown(self.successResultOf(self.admin.list(TREE)))
        self.clock.advance(5)
        before = web.reconciles, api.reconciles
        farm.nudge()  # news: the next waits its interval
        self.put("web", b'{"changed": 1}')  # the farm's own watch pokes web at once
        after = web.reconciles, api.reconciles
        self.assertEqual(after, (before[0] + 2, before[1] + 1))
        farm.recordsShown(self.successResultOf(self.admin.list(TREE)))
        self.assertEqual((web.reconciles, api.reconciles), (after[0] + 1, after[1]),
                         "web at once, over snapshots showing its record; api waits")
        farm.recordsShown(self.successResultOf(self.admin.list(TREE)))
        self.assertEqual(web.reconciles, after[0] + 1, "nothing newer shown: news")
        self.clock.advance(1.0)
        self.assertEqual((web.reconciles, api.reconciles), (after[0] + 2, after[1] + 1))

    def test_newObjectReconcilesAtOnce(self):
        """
        An object written while the farm paces its news (a fleet's health
        stream) is claimed and reconciled at once -- its first reconcile
        waits for no news interval -- and the snapshots then showing its
        record reconcile it again at once, over them.
        """
        self.put("web")
        farm = self.newsFarm(10.0)
        self.clock.advance(1)
        farm.nudge()
        farm.nudge()  # the news pace runs: web's next reconcile waits
        self.put("api")
        api = farm.controllerFactory.running()["api"]
        self.assertEqual(api.reconciles, 1)
        farm.recordsShown(self.successResultOf(self.admin.list(TREE)))
        self.assertEqual(api.reconciles, 2)

    def test_newsKeepsTheBackoff(self):
        """
        News does not cut short the backoff of a reconcile that failed (a
        store refusing its writes): a stream of health news every
        C{newsInterval} retried it ten times a second instead of after 1,
        2, 4... seconds; its own record changing still reconciles at once.
        """
        self.put("web")
        factory = FakeControllerFactory(manual=True)
        farm = Farm(MemoryStore(self.state, self.clock), KIND, TREE, factory, self.clock,
                    ttl=TTL, jitter=lambda: 0, newsInterval=0.1)
        farm.startService()
        self.addCleanup(farm.stopService)
        web = factory.running()["web"]
        web.pending[-1].errback(StoreUnavailable("status/rc/web", "memory"))
        for _ in range(9):
            farm.nudge()
            self.clock.advance(0.1)
        self.assertEqual(web.reconciles, 1)
        self.clock.advance(0.2)
        self.assertEqual(web.reconciles, 2, "the retry, after its delay")
        web.pending[-1].errback(StoreUnavailable("status/rc/web", "memory"))
        farm.nudge()
        self.clock.advance(0.5)
        self.assertEqual(web.reconciles, 2)
        self.put("web", b'{"changed": 1}')
        self.assertEqual(web.reconciles, 3)

    def test_dearDecisionsWaitLonger(self):
        """
        News waits L{PACE} times as long as the last decisions of the farm's
        controllers took together, if that is longer than C{newsInterval}:
        two controllers whose decisions cost 0.0625 s of CPU each answer
        news at most every 0.5 s; cheap again, every C{newsInterval}.
        """
        self.put("web")
        self.put("api")
        farm = self.newsFarm(0.0625)
        running = farm.controllerFactory.running()
        web, api = running["web"], running["api"]
        self.clock.advance(5)
        web.cost = api.cost = 0.0625
        start = web.reconciles
        farm.nudge()
        self.assertEqual(web.reconciles, start + 1)
        farm.nudge()
        self.clock.advance(PACE * 0.125 / 2)
        self.assertEqual(web.reconciles, start + 1)
        self.clock.advance(PACE * 0.125 / 2)
        self.assertEqual(web.reconciles, start + 2)
        web.cost = api.cost = 0.0
        farm.nudge()
        self.clock.advance(0.0625)
        self.assertEqual(web.reconciles, start + 3)


class TraceTests(FarmTestCase):
    """
    The farm's session lifecycle is an explicit state machine: its traces.
    """

    def traced(self, store):
        farm = self.farm(store=store, start=False)
        trace = []
        farm.tracer = lambda old, event, new: trace.append((old, event, new))
        farm.startService()
        return farm, trace

    def test_lostAndStopped(self):
        store = MemoryStore(self.state, self.clock)
        farm, trace = self.traced(store)
        store.crash()
        self.clock.advance(TTL)
        self.successResultOf(farm.stopService())
        self.assertEqual(trace, [("idle", "start", "opening"), ("opening", "opened", "serving"),
                                 ("serving", "lost", "opening"), ("opening", "opened", "serving"),
                                 ("serving", "stop", "stopped")])

    def test_failedThenStoppedWhileWaiting(self):
        """
        A farm stopped while waiting to retry cancels the retry.
        """
        class Down(MemoryStore):
            def session(self, ttl):
                return defer.fail(StoreUnavailable(None, "memory"))
        farm, trace = self.traced(Down(self.state, self.clock))
        self.successResultOf(farm.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(trace, [("idle", "start", "opening"), ("opening", "openFailed", "waiting"),
                                 ("waiting", "stop", "stopped")])
