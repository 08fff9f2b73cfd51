"""
Bounded commands: hard time limits on the whole process group.
"""

import os
import signal

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.agent.process import runBounded
from p2twisted.agent.supervisors import processAlive as alive


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
