# -*- test-case-name: tests.test_agent_process -*-
"""
Running a short-lived command with hard time limits: C{bin/enable},
C{bin/disable}, hooks.

The command runs in a new session (its own process group).  After
C{termAfter} seconds the whole group gets SIGTERM, after C{killAfter} SIGKILL;
when the command ends, whatever it left behind in its group is killed too, so
none of its processes remain and the caller never waits past C{killAfter}.
"""

import os
import shutil
import signal

import attr
from twisted.internet import defer, error, protocol

from p2twisted.agent.supervisors import processStartTime


@attr.s
class Result(object):
    """
    How a bounded command ended.

    @ivar exitCode: its exit status, or C{None} when killed by a signal.
    @ivar signal: the signal that ended it, or C{None}.
    @ivar output: its stdout and stderr, interleaved (bytes).
    @ivar timedOut: whether it was still running at C{termAfter}.
    @ivar duration: seconds it ran.
    """

    exitCode = attr.ib()
    signal = attr.ib()
    output = attr.ib()
    timedOut = attr.ib()
    duration = attr.ib()

    @property
    def failed(self):
        return self.exitCode != 0

    def describe(self):
        """
        @return: e.g. C{"exit 3"}, C{"killed by SIGKILL after timeout"}.
        """
        if self.exitCode is not None:
            text = "exit %d" % (self.exitCode,)
        else:
            try:
                text = "killed by %s" % (signal.Signals(self.signal).name,)
            except ValueError:
                text = "killed by signal %s" % (self.signal,)
        if self.timedOut:
            text += " after timeout"
        return text

    def tail(self, lines=10):
        """
        @return: the last C{lines} lines of output, as text.
        """
        return "\n".join(self.output.decode("utf-8", "replace").splitlines()[-lines:])


#: Seconds between TERM and KILL when a caller cancels a bounded command.
CANCEL_GRACE = 5.0


def _killGroup(pid, sig):
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


class _Bounded(protocol.ProcessProtocol):

    def __init__(self, reactor, termAfter, killAfter, maxOutput):
        self.reactor = reactor
        self.termAfter = termAfter
        self.killAfter = killAfter
        self.maxOutput = maxOutput
        self.output = bytearray()
        self.timedOut = False
        self.pid = None
        self.ended = defer.Deferred(self._cancel)
        self._timers = []

    def _cancel(self, ended):
        # The caller gave up (the Deferred fails with CancelledError at
        # once): TERM the whole group now, KILL it CANCEL_GRACE seconds later.
        if self.pid is not None:
            _killGroup(self.pid, signal.SIGTERM)
            self._timers.append(
                self.reactor.callLater(CANCEL_GRACE, _killGroup, self.pid, signal.SIGKILL))

    def connectionMade(self):
        self.started = self.reactor.seconds()
        self.pid = self.transport.pid
        self._timers = [self.reactor.callLater(self.termAfter, self._timeout, signal.SIGTERM),
                        self.reactor.callLater(self.killAfter, self._timeout, signal.SIGKILL)]

    def _timeout(self, sig):
        self.timedOut = True
        _killGroup(self.pid, sig)

    def outReceived(self, data):
        self.output += data
        del self.output[:-self.maxOutput]

    errReceived = outReceived

    def processExited(self, reason):
        # What it left behind still holds our pipes open: end it now.
        _killGroup(self.pid, signal.SIGKILL)

    def processEnded(self, reason):
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        if self.ended.called:  # cancelled
            return
        code = sig = None
        if reason.check(error.ProcessDone):
            code = 0
        else:
            code, sig = reason.value.exitCode, reason.value.signal
        self.ended.callback(Result(code, sig, bytes(self.output), self.timedOut,
                                   self.reactor.seconds() - self.started))


def processIdentity():
    """
    @return: what tells this process apart from any other, on this boot and
        in this pid namespace: C{{"pid", "pid_start", "boot_id", "pid_ns"}}
        (a value is C{None} where /proc does not say).
    """
    def read(path):
        try:
            with open(path) as f:
                return f.read().strip() or None
        except OSError:
            return None
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = None
    pid = os.getpid()
    return {"pid": pid, "pid_start": processStartTime(pid),
            "boot_id": read("/proc/sys/kernel/random/boot_id"), "pid_ns": namespace}


def runBounded(reactor, argv, termAfter=30.0, killAfter=60.0, env=None, path=None,
               maxOutput=64 * 1024):
    """
    Run C{argv} in its own session with hard time limits.

    @param env: the environment (default: the agent's own).
    @param maxOutput: keep at most this many bytes of output (the last ones).
    @return: L{Deferred} firing with a L{Result} once the command has ended
        and none of its process group remains; never later than about
        C{killAfter} seconds.  Cancelling it TERMs the group at once and KILLs
        it L{CANCEL_GRACE} seconds later.
    """
    setsid = shutil.which("setsid")
    if setsid:
        argv = [setsid] + list(argv)
    proto = _Bounded(reactor, termAfter, killAfter, maxOutput)
    try:
        reactor.spawnProcess(proto, argv[0], list(argv), env=os.environ.copy() if env is None else env,
                             path=path)
    except OSError as e:
        return defer.succeed(Result(127, None, str(e).encode(), False, 0.0))
    return proto.ended
