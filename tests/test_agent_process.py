"""
Bounded commands: hard time limits on the whole process group.
"""

import os
import signal

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.agent import runscope
from p2twisted.agent.process import runBounded
from p2twisted.agent.supervisors import processAlive as alive


def _readPids(path):
    with open(path) as f:
        return [int(p) for p in f.read().split()]


class RunBoundedTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_exitCodeAndOutput(self):
        """
        The exit status and the interleaved output are reported.
        """
        result = yield runBounded(reactor, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
        self.assertEqual(result.exitCode, 3)
        self.assertTrue(result.failed)
        self.assertIn(b"out", result.output)
        self.assertIn(b"err", result.output)
        self.assertEqual(result.describe(), "exit 3")

    @defer.inlineCallbacks
    def test_hungGroupKilled(self):
        """
        A command that ignores SIGTERM and forks a child that does too is
        SIGKILLed at C{killAfter}, and neither process survives.
        """
        pidfile = self.mktemp()
        script = ("trap '' TERM; (trap '' TERM; while :; do sleep 0.05; done) & "
                  "echo $$ $! > %s; while :; do sleep 0.05; done" % (pidfile,))
        result = yield runBounded(reactor, ["/bin/sh", "-c", script], termAfter=0.3, killAfter=0.8)
        self.assertTrue(result.timedOut)
        self.assertEqual(result.signal, signal.SIGKILL)
        self.assertEqual(result.describe(), "killed by SIGKILL after timeout")
        self.assertGreaterEqual(result.duration, 0.8)
        with open(pidfile) as f:
            pids = [int(p) for p in f.read().split()]
        self.assertEqual(len(pids), 2)
        for pid in pids:
            self.assertFalse(alive(pid), "process %d survived" % (pid,))

    @defer.inlineCallbacks
    def test_endsOnlyOnceItsProcessesHaveEnded(self):
        """
        The run ends only once the processes it left behind have ended, not
        when they have merely been sent SIGKILL: a process with much memory
        is still there (releasing it) after it stopped showing the run's
        marker.  Found by the marker alone here (no cgroup), as for an
        unprivileged agent.
        """
        import sys
        pidfile = os.path.abspath(self.mktemp())
        # The child waits to be killed (signal.pause), holding its memory.
        child = ("import os, signal; memory = b'x' * (512 << 20); "
                 "open(%r, 'w').write(str(os.getpid())); os.rename(%r, %r); signal.pause()"
                 % (pidfile + ".tmp", pidfile + ".tmp", pidfile))
        script = ('"$0" -c "$1" </dev/null >/dev/null 2>&1 & '
                  "while [ ! -s %s ]; do sleep 0.01; done" % (pidfile,))
        for _ in range(3):
            if os.path.exists(pidfile):
                os.unlink(pidfile)
            result = yield runBounded(reactor, ["/bin/sh", "-c", script, sys.executable, child],
                                      scope=runscope.RunScope(bases=[]))
            self.assertEqual(result.exitCode, 0)
            pid, = _readPids(pidfile)
            self.assertFalse(alive(pid), "process %d survived the run" % (pid,))

    @defer.inlineCallbacks
    def test_termEndsPoliteCommand(self):
        """
        A command that honours SIGTERM ends at C{termAfter}.
        """
        result = yield runBounded(reactor, ["/bin/sh", "-c", "sleep 30"], termAfter=0.2,
                                  killAfter=10)
        self.assertEqual(result.signal, signal.SIGTERM)
        self.assertLess(result.duration, 5)

    @defer.inlineCallbacks
    def test_leftoverChildrenKilled(self):
        """
        Children left running when the command exits are killed.
        """
        pidfile = self.mktemp()
        result = yield runBounded(
            reactor, ["/bin/sh", "-c", "sleep 30 & echo $! > %s" % (pidfile,)])
        self.assertEqual(result.exitCode, 0)
        with open(pidfile) as f:
            pid = int(f.read())
        for _ in range(100):
            if not alive(pid):
                break
            yield defer.succeed(None)
            os.sched_yield()
        self.assertFalse(alive(pid))

    @defer.inlineCallbacks
    def test_missingProgram(self):
        """
        A program that does not exist is a failed result, not an exception.
        """
        result = yield runBounded(reactor, ["/nonexistent/hook"])
        self.assertTrue(result.failed)

    @defer.inlineCallbacks
    def test_escapedSessionKilled(self):
        """
        A grandchild that left the command's session with C{setsid} and
        ignores SIGTERM is killed with the run at C{killAfter}: the run ends
        as a SIGKILL timeout and no process of it remains.
        """
        pidfile = self.mktemp()
        script = ("trap '' TERM; setsid sh -c 'trap \"\" TERM; echo $$ >> %s; "
                  "exec sleep 1000' & sleep 0.2; echo $$ >> %s; "
                  "while :; do sleep 0.05; done" % (pidfile, pidfile))
        result = yield runBounded(reactor, ["/bin/sh", "-c", script], termAfter=0.3,
                                  killAfter=0.8)
        self.assertTrue(result.timedOut)
        self.assertEqual(result.signal, signal.SIGKILL)
        pids = _readPids(pidfile)
        self.assertEqual(len(pids), 2)
        for pid in pids:
            self.assertFalse(alive(pid), "process %d survived" % (pid,))

    @defer.inlineCallbacks
    def test_escapedAfterCommandEndsKilled(self):
        """
        An escaped grandchild still holding the output pipe when the command
        exits is killed, so the run ends with the command's own exit status.
        """
        pidfile = self.mktemp()
        script = ("setsid sh -c 'trap \"\" TERM; echo $$ > %s; exec sleep 1000' & "
                  "while [ ! -s %s ]; do sleep 0.01; done; exit 4" % (pidfile, pidfile))
        result = yield runBounded(reactor, ["/bin/sh", "-c", script], termAfter=30,
                                  killAfter=60)
        self.assertEqual(result.exitCode, 4)
        self.assertFalse(result.timedOut)
        for pid in _readPids(pidfile):
            self.assertFalse(alive(pid), "process %d survived" % (pid,))

    @defer.inlineCallbacks
    def test_untraceableEscapeDoesNotHoldTheRun(self):
        """
        A process that escaped every tie to the run (its own session, a clean
        environment, another cgroup) yet holds the output pipe does not hold
        the run past C{killAfter}: the runner stops reading at the kill.
        """
        if os.geteuid() != 0:
            raise unittest.SkipTest("moving a process to another cgroup needs root")
        bases = [b for b in runscope.runCgroupBases() if os.access(b, os.W_OK)]
        if not bases:
            raise unittest.SkipTest("no writable cgroup hierarchy")
        pidfile = self.mktemp()
        procs = os.path.join(bases[0], "cgroup.procs")
        script = ("trap '' TERM; env -i setsid sh -c 'echo $$ > %s; echo $$ > %s; "
                  "exec sleep 1000' & while :; do sleep 0.05; done" % (procs, pidfile))
        result = yield runBounded(reactor, ["/bin/sh", "-c", script], termAfter=0.3,
                                  killAfter=0.8)
        pids = _readPids(pidfile)
        for pid in pids:
            self.addCleanup(os.kill, pid, signal.SIGKILL)
        self.assertTrue(result.timedOut)
        self.assertEqual(result.signal, signal.SIGKILL)
        self.assertTrue(alive(pids[0]), "the untraceable process was found after all")


class _LingeringScope(object):
    """
    A run scope whose killed processes have not ended yet.
    """

    runId = "lingering"
    cgroup = None

    def kill(self, rounds=None):
        return True

    def signal(self, sig):
        pass

    def members(self):
        return set()

    def dead(self):
        return False

    def close(self):
        return True


class BoundedProtocolTests(unittest.SynchronousTestCase):
    """
    L{process._Bounded} on a fake clock.
    """

    def test_cancelAfterEndSignalsNothing(self):
        """
        Cancelling a run whose command has ended (while the rest of it is
        being waited for) signals no process group: the command's pid may
        belong to another process by then.
        """
        from twisted.internet import task
        from p2twisted.agent import process
        signalled = []
        self.patch(process, "_killGroup", lambda pid, sig: signalled.append((pid, sig)))
        clock = task.Clock()
        proto = process._Bounded(clock, 30.0, 60.0, 1024, _LingeringScope())
        proto.pid, proto.started = 12345, 0.0
        proto._finish(0, None)
        proto.ended.addErrback(lambda f: None)
        proto.ended.cancel()
        clock.advance(process.CANCEL_GRACE + process.END_GRACE + 1)
        self.assertEqual(signalled, [])


class RunScopeTests(unittest.TestCase):
    """
    L{runscope.RunScope}: a run's processes found through its cgroup or its
    environment marker.
    """

    def test_markerWithoutCgroup(self):
        """
        Without a writable cgroup hierarchy, a run's processes are found (and
        killed) by the marker in their environment.
        """
        scope = runscope.RunScope(bases=[])
        self.assertIsNone(scope.cgroup)
        child = self.markedChild(scope, ["setsid"])
        self.assertEqual(scope.members(), {child.pid})
        self.assertTrue(scope.kill())
        child.wait()
        self.assertEqual(scope.members(), set())

    def test_seenMemberKilledWhenAScanMissesIt(self):
        """
        A process seen in the run is killed even when the scan at the kill
        misses it (in the middle of an exec it shows no environment, so no
        marker, for an instant).
        """
        scope = runscope.RunScope(bases=[])
        child = self.markedChild(scope)
        self.assertEqual(scope.members(), {child.pid})
        self.patch(runscope, "environMarked", lambda pid, marker: False)
        self.assertTrue(scope.kill())
        self.assertEqual(child.wait(timeout=30), -signal.SIGKILL)

    def markedChild(self, scope, prefix=()):
        """
        Start a process of C{scope}'s run (marked only: no cgroup) that
        stays, and return once it runs with the marker: it says so on its
        output, then waits on its input.

        @param prefix: a command to run it through (e.g. C{setsid}).
        @return: its L{subprocess.Popen}; killed and reaped at cleanup.
        """
        import subprocess
        child = subprocess.Popen(
            scope.wrap(list(prefix) + ["sh", "-c", "echo ready; read line"]),
            env=scope.environment({"PATH": os.environ["PATH"]}),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        # Cleanups run last first: killed, then reaped, then its pipes closed.
        self.addCleanup(child.stdout.close)
        self.addCleanup(child.stdin.close)
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        self.assertEqual(child.stdout.readline(), b"ready\n")
        return child

    def test_reusedPidSpared(self):
        """
        A pid seen in the run that has since gone to an unrelated process (it
        started at another time than the one seen) is not signalled.
        """
        import subprocess
        from p2twisted.agent.supervisors import processStartTime
        scope = runscope.RunScope(bases=[])
        unrelated = subprocess.Popen(["sleep", "1000"])
        self.addCleanup(unrelated.wait)
        self.addCleanup(unrelated.kill)
        scans = [set(), {unrelated.pid}, {unrelated.pid}]

        def members():
            pids = scans.pop() if scans else set()
            for pid in pids:  # seen as the process that had the pid before
                scope._seen[pid] = processStartTime(pid) - 1
            return pids
        scope.members = members
        scope.kill()
        self.assertTrue(alive(unrelated.pid))

    def test_cgroupBasesJoinable(self):
        """
        On a cgroup-v1 host, a run's cgroup is made in a hierarchy a process
        can join: not C{cpuset} (a new cpuset cgroup has no cpus), nor one
        C{p2-exec} moves processes in.
        """
        mountinfo = "".join(
            "%d 20 0:%d / /sys/fs/cgroup/%s rw,relatime - cgroup cgroup rw,%s\n"
            % (30 + i, 30 + i, name, name)
            for i, name in enumerate(["cpu,cpuacct", "cpuset", "memory", "pids", "freezer"]))
        procCgroup = ("5:freezer:/agent\n4:pids:/agent\n3:memory:/agent\n2:cpuset:/\n"
                      "1:cpu,cpuacct:/agent\n")
        self.assertEqual(runscope.runCgroupBases(mountinfo, procCgroup),
                         ["/sys/fs/cgroup/freezer/agent"])
