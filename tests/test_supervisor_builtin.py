"""
The builtin supervisor: procmon's backoff (as a pure function and on a fake
reactor), and real processes started, restarted, stopped with their whole
process group, and stopped with the agent.
"""

import os
import signal

from twisted.internet import defer, error, reactor
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from p2twisted.agent.supervisors import crashLoop

from p2twisted.agent.interfaces import ServiceSpec
from p2twisted.agent.layout import StateLayout
from p2twisted.agent.supervisors.builtin import BuiltinSupervisor, nextRestartDelay
from p2twisted.errors import SupervisorError
from tests.test_supervisors import ProcessTestMixin, alive, readPids, waitFor


class BackoffTests(unittest.SynchronousTestCase):
    """
    L{nextRestartDelay} is Twisted procmon's policy.
    """

    def test_quickDeathDoubles(self):
        """
        A death within the threshold waits the current delay and doubles it,
        up to the cap.
        """
        delay, waits = 1.0, []
        for _ in range(8):
            wait, delay = nextRestartDelay(0.2, delay)
            waits.append(wait)
        self.assertEqual(waits, [1, 2, 4, 8, 16, 32, 60, 60])
        self.assertEqual(delay, 60)

    def test_longRunResets(self):
        """
        A run at least as long as the threshold restarts at once and resets
        the delay to the minimum.
        """
        self.assertEqual(nextRestartDelay(1.0, 32.0), (0.0, 1.0))
        self.assertEqual(nextRestartDelay(500, 60.0, minRestartDelay=0.5), (0.0, 0.5))


class FakeProcess(object):
    """
    The transport L{FakeProcessReactor.spawnProcess} returns; its pid is
    above any real pid, so signals to it reach no real process.
    """

    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, name):
        self.signals.append(name)


class FakeProcessReactor(Clock):
    """
    A L{Clock} that records spawned processes instead of running them.
    """

    def __init__(self):
        Clock.__init__(self)
        self.spawned = []

    def spawnProcess(self, processProtocol, executable, args=(), env={},
                     path=None, uid=None, gid=None, usePTY=0, childFDs=None):
        process = FakeProcess(10 ** 8 + len(self.spawned))
        self.spawned.append((processProtocol, executable, list(args), env, path, childFDs))
        processProtocol.makeConnection(process)
        return process

    def end(self, code=0):
        """
        End the most recently spawned process.
        """
        proto = self.spawned[-1][0]
        proto.processEnded(Failure(error.ProcessTerminated(exitCode=code)))


class ScheduleTests(unittest.TestCase):
    """
    The builtin supervisor's restart scheduling, on a fake reactor.
    """

    def setUp(self):
        self.clock = FakeProcessReactor()
        self.layout = StateLayout(os.path.abspath(self.mktemp()))
        self.sup = BuiltinSupervisor(self.layout, self.clock)

    def test_spawn(self):
        """
        A service runs its argv with the standard environment plus
        C{spec.env}, stdin from C{/dev/null}, its output to its log.
        """
        status = self.successResultOf(self.sup.start(
            ServiceSpec("svc", ["/bin/prog", "a"], env={"X": "1"})))
        self.assertTrue(status.running)
        self.assertEqual(status.pid, 10 ** 8)
        _, executable, args, env, path, childFDs = self.clock.spawned[0]
        self.assertEqual((executable, args), ("/bin/prog", ["/bin/prog", "a"]))
        self.assertEqual(env["X"], "1")
        self.assertIn("/usr/bin", env["PATH"])
        self.assertIsNone(path)
        self.assertEqual(sorted(childFDs), [0, 1, 2])
        self.assertTrue(os.path.exists(
            os.path.join(self.layout.service("svc"), "current.log")))

    def test_backoff(self):
        """
        Quick deaths are restarted after 1, 2, 4 ... seconds; a long run is
        restarted at once and resets the delay.
        """
        self.successResultOf(self.sup.start(ServiceSpec("svc", ["/bin/prog"])))
        for delay in (1, 2, 4, 8):
            count = len(self.clock.spawned)
            self.clock.advance(0.5)
            self.clock.end(1)
            self.clock.advance(delay - 0.01)
            self.assertEqual(len(self.clock.spawned), count)
            self.clock.advance(0.01)
            self.assertEqual(len(self.clock.spawned), count + 1)
        self.clock.advance(30)
        self.clock.end(1)
        self.clock.advance(0)
        self.assertEqual(len(self.clock.spawned), 6)
        self.clock.advance(0.1)
        self.clock.end(1)
        self.clock.advance(1)
        self.assertEqual(len(self.clock.spawned), 7)

    def test_never(self):
        """
        Policy C{never} runs once: nothing is scheduled when it ends.
        """
        self.successResultOf(self.sup.start(
            ServiceSpec("svc", ["/bin/prog"], restartPolicy="never")))
        self.clock.end(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        status = self.successResultOf(self.sup.status("svc"))
        self.assertFalse(status.running)
        self.assertFalse(status.wantUp)

    def test_startCancelsBackoff(self):
        """
        Starting a service that waits out a backoff starts it at once.
        """
        self.successResultOf(self.sup.start(ServiceSpec("svc", ["/bin/prog"])))
        self.clock.end(1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(self.sup.start(ServiceSpec("svc", ["/bin/prog"])))
        self.assertEqual(len(self.clock.spawned), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_missingProgram(self):
        """
        A command not found on the service's C{PATH} fails the start.
        """
        f = self.failureResultOf(self.sup.start(
            ServiceSpec("svc", ["no-such-program-p2"])), SupervisorError)
        self.assertIn("not found on PATH", str(f.value))

    def test_statusAndServices(self):
        """
        An unknown service has no status; services are listed sorted, those
        left on disk by an earlier agent included (not running).
        """
        self.assertIsNone(self.successResultOf(self.sup.status("nope")))
        os.makedirs(self.layout.service("old"))
        self.successResultOf(self.sup.start(ServiceSpec("new", ["/bin/prog"])))
        self.assertEqual(self.successResultOf(self.sup.services()), ["new", "old"])
        old = self.successResultOf(self.sup.status("old"))
        self.assertFalse(old.running)


class BuiltinTests(ProcessTestMixin, unittest.TestCase):
    """
    L{BuiltinSupervisor} with real processes.
    """

    def setUp(self):
        self.makeStateDir()
        self.sup = self.makeSupervisor()

    def makeSupervisor(self, **kwargs):
        kwargs.setdefault("minRestartDelay", 0.05)
        sup = BuiltinSupervisor(self.layout, reactor, **kwargs)
        self.addCleanup(sup.close)
        return sup

    def sleeper(self, **kwargs):
        return self.shell("echo $$ >> %s; echo hello from $$; exec sleep 1000"
                          % (self.pidFile(),), **kwargs)

    @defer.inlineCallbacks
    def test_start(self):
        """
        A started service runs with its pid reported; its output is appended
        to C{current.log}; starting it again leaves it alone.
        """
        status = yield self.sup.start(self.sleeper())
        self.assertTrue(status.running)
        self.assertTrue(status.wantUp)
        self.assertEqual((yield self.waitPids(1)), [status.pid])
        again = yield self.sup.start(self.sleeper())
        self.assertEqual(again.pid, status.pid)
        logPath = os.path.join(self.layout.service("svc"), "current.log")
        yield waitFor(lambda: os.path.exists(logPath)
                      and "hello from %d" % (status.pid,) in open(logPath).read(),
                      what="output in the log")
        self.assertEqual((yield self.sup.services()), ["svc"])

    @defer.inlineCallbacks
    def test_restart(self):
        """
        C{restart=True} replaces the running process with a new one.
        """
        first = yield self.sup.start(self.sleeper())
        yield self.waitPids(1)
        second = yield self.sup.start(self.sleeper(), restart=True)
        self.assertNotEqual(first.pid, second.pid)
        self.assertFalse(alive(first.pid))
        self.assertEqual((yield self.waitPids(2)), [first.pid, second.pid])

    @defer.inlineCallbacks
    def test_signature(self):
        """
        A running service started from a spec of another signature is
        restarted by C{start}; the same signature leaves it alone, and so
        does a spec without signature.
        """
        first = yield self.sup.start(self.sleeper(signature="sha-1"))
        yield self.waitPids(1)
        same = yield self.sup.start(self.sleeper(signature="sha-1"))
        self.assertEqual(same.pid, first.pid)
        second = yield self.sup.start(self.sleeper(signature="sha-2"))
        self.assertNotEqual(second.pid, first.pid)
        yield self.waitGone(first.pid)
        unsigned = yield self.sup.start(self.sleeper())
        self.assertEqual(unsigned.pid, second.pid)
        self.assertEqual((yield self.waitPids(2)), [first.pid, second.pid])

    @defer.inlineCallbacks
    def test_crashRestarted(self):
        """
        A crashed service is started again, after the backoff delay.
        """
        first = yield self.sup.start(self.sleeper())
        yield self.waitPids(1)
        os.kill(first.pid, signal.SIGKILL)
        pids = yield self.waitPids(2)
        status = yield self.sup.status("svc")
        self.assertEqual(status.pid, pids[1])
        self.assertTrue(status.running)

    @defer.inlineCallbacks
    def test_crashLoopBacksOff(self):
        """
        A service that keeps dying at once is restarted with growing delays.
        """
        yield self.sup.start(self.shell("echo $$ >> %s; exit 1" % (self.pidFile(),)))
        yield self.waitPids(4)
        service = self.sup._services["svc"]
        self.assertGreaterEqual(service.delay, 0.05 * 2 ** 3)

    @defer.inlineCallbacks
    def test_crashLoopReported(self):
        """
        A service that keeps exiting at once is reported crash-looping: its
        restarts, quick exits in a row, last exit and the growing delay; a
        new definition starts the counts afresh.
        """
        yield self.sup.start(self.shell("echo $$ >> %s; exit 3" % (self.pidFile(),)))
        yield waitFor(lambda: self.sup._status("svc").quickExits >= 3, what="three quick exits")
        status = yield self.sup.status("svc")
        self.assertEqual(status.lastExit, "exit 3")
        self.assertEqual(status.restarts, status.quickExits)
        self.assertEqual(status.restartDelay, 0.05 * 2 ** (status.quickExits - 1))
        loop = crashLoop(status, reactor.seconds())
        self.assertEqual(loop["restarts"], status.quickExits)
        self.assertEqual(loop["last_exit"], "exit 3")
        yield self.sup.start(self.sleeper(), restart=True)
        status = yield self.sup.status("svc")
        self.assertEqual((status.restarts, status.quickExits, status.lastExit), (0, 0, None))
        self.assertIsNone(crashLoop(status, reactor.seconds()))

    @defer.inlineCallbacks
    def test_never(self):
        """
        Policy C{never} runs the service once.
        """
        spec = self.shell("echo $$ >> %s; exit 0" % (self.pidFile(),),
                          restartPolicy="never")
        yield self.sup.start(spec)
        yield waitFor(lambda: not self.sup._status("svc").running, what="the run to end")
        self.assertEqual(len(readPids(self.pidFile())), 1)
        self.assertIsNone(self.sup._services["svc"].restartCall)
        self.assertFalse((yield self.sup.status("svc")).wantUp)

    @defer.inlineCallbacks
    def test_stopKillsGroup(self):
        """
        A service ignoring TERM and the grandchild it forked are KILLed after
        the timeout; stopping again is a no-op.
        """
        status = yield self.sup.start(self.shell(
            "trap '' TERM; sleep 1000 & echo $! > %s; wait" % (self.pidFile("grandchild"),)))
        yield waitFor(lambda: readPids(self.pidFile("grandchild")), what="the grandchild")
        grandchild, = readPids(self.pidFile("grandchild"))
        began = reactor.seconds()
        yield self.sup.stop("svc", 0.5)
        self.assertGreaterEqual(reactor.seconds() - began, 0.5)
        self.assertFalse(alive(status.pid))
        self.assertFalse(alive(grandchild))
        stopped = yield self.sup.status("svc")
        self.assertFalse(stopped.running)
        self.assertFalse(stopped.wantUp)
        yield self.sup.stop("svc", 0.5)
        yield self.sup.stop("unknown", 0.5)

    @defer.inlineCallbacks
    def test_close(self):
        """
        Closing the supervisor (the agent stopping) stops every service, and
        refuses later starts.
        """
        a = yield self.sup.start(self.sleeper(name="a"))
        b = yield self.sup.start(self.sleeper(name="b"))
        yield self.sup.close()
        self.assertFalse(alive(a.pid))
        self.assertFalse(alive(b.pid))
        self.failureResultOf(self.sup.start(self.sleeper()), SupervisorError)

    @defer.inlineCallbacks
    def test_leftoverStopped(self):
        """
        A service left running by an agent that died is stopped (its group
        too) before the next agent starts it, so it never runs twice.
        """
        first = yield self.sup.start(self.sleeper())
        yield self.waitPids(1)
        self.sup._closed = True  # the first agent "died": it restarts nothing
        again = self.makeSupervisor()
        second = yield again.start(self.sleeper())
        self.assertNotEqual(first.pid, second.pid)
        self.assertFalse(alive(first.pid))

    @defer.inlineCallbacks
    def test_remove(self):
        """
        Removing a service stops it and deletes its directory and log.
        """
        status = yield self.sup.start(self.sleeper())
        yield self.sup.remove("svc", 5)
        self.assertFalse(alive(status.pid))
        self.assertFalse(os.path.exists(self.layout.service("svc")))
        self.assertEqual((yield self.sup.services()), [])
        self.assertIsNone((yield self.sup.status("svc")))
        yield self.sup.remove("svc", 5)
