# -*- test-case-name: tests.test_agent_process -*-
"""
Running a short-lived command with hard time limits: C{bin/enable},
C{bin/disable}, hooks.

The command runs in a new session (its own process group) and in a
L{RunScope} of its own (a cgroup, and a C{P2_RUN_ID} environment marker), so
that a process that leaves the group with C{setsid} is still found.  After
C{termAfter} seconds every process of the run gets SIGTERM, after
C{killAfter} SIGKILL, and the runner stops reading the command's output
(closes its ends of the pipes, which an escaped process may hold open); when
the command ends, whatever it left behind is killed too.  So none of its
processes remain, and the caller never waits past C{killAfter} plus
L{END_GRACE}.
"""

import os
import shutil
import signal

import attr
from twisted.internet import defer, error, protocol
from twisted.logger import Logger

from p2twisted.agent.runscope import RunScope
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


log = Logger()

#: Seconds between TERM and KILL when a caller cancels a bounded command.
CANCEL_GRACE = 5.0

#: Seconds after the SIGKILL at C{killAfter} by which a run is reported
#: ended even if its process cannot be reaped (stuck in the kernel).
END_GRACE = 5.0

#: Seconds between the first two looks at whether the processes of an
#: ended run are gone (doubling after each look, up to half a second).
SETTLE_INTERVAL = 0.005


def _killGroup(pid, sig):
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


class _Bounded(protocol.ProcessProtocol):

    def __init__(self, reactor, termAfter, killAfter, maxOutput, scope=None):
        self.reactor = reactor
        self.scope = scope
        self.termAfter = termAfter
        self.killAfter = killAfter
        self.maxOutput = maxOutput
        self.output = bytearray()
        self.timedOut = False
        self.pid = None
        self.ended = defer.Deferred(self._cancel)
        self._timers = []
        self._finishing = False

    def _cancel(self, ended):
        # The caller gave up (the Deferred fails with CancelledError at
        # once): TERM the whole group now, KILL it CANCEL_GRACE seconds later.
        # Not once the command has ended: what is left of the run is being
        # killed already, and its pid may go to another process.
        if self.pid is not None and not self._finishing:
            self._signal(signal.SIGTERM)
            self._timers.append(
                self.reactor.callLater(CANCEL_GRACE, self._signal, signal.SIGKILL))

    def _signal(self, sig):
        # The process group at once (so the command's own process gets the
        # signal before it could see a child end of it), then every other
        # process of the run.  Before a SIGKILL the run's processes are
        # looked at, so that their end can be waited for (RunScope.dead):
        # one killed leaves the cgroup and hides its marker before it ends.
        if self.scope is not None and sig == signal.SIGKILL:
            self.scope.members()
        _killGroup(self.pid, sig)
        if self.scope is not None:
            if sig == signal.SIGKILL:
                if not self.scope.kill():
                    log.warn("processes of run {run} survive SIGKILL", run=self.scope.runId)
            else:
                self.scope.signal(sig)

    def connectionMade(self):
        self.started = self.reactor.seconds()
        self.pid = self.transport.pid
        self._timers = [self.reactor.callLater(self.termAfter, self._timeout, signal.SIGTERM),
                        self.reactor.callLater(self.killAfter, self._timeout, signal.SIGKILL)]

    def _timeout(self, sig):
        self.timedOut = True
        self._signal(sig)
        if sig == signal.SIGKILL:
            # Stop reading: a process of the run that is not dead yet (or
            # escaped every tie to it) must not hold the caller up.
            self.transport.loseConnection()
            self._timers.append(self.reactor.callLater(END_GRACE, self._giveUp))

    def _giveUp(self):
        # The command's own process could not be reaped after SIGKILL.
        if self.ended.called or self._finishing:
            return
        log.warn("process {pid} still there {grace}s after SIGKILL; not waiting for it",
                 pid=self.pid, grace=END_GRACE)
        self._finish(None, signal.SIGKILL)

    def outReceived(self, data):
        self.output += data
        del self.output[:-self.maxOutput]

    errReceived = outReceived

    def processExited(self, reason):
        # What it left behind still holds our pipes open: end it now (the
        # group's leader is gone; the rest of the group is in the run).
        if self.scope is not None and not self.scope.kill():
            log.warn("processes of run {run} survive SIGKILL", run=self.scope.runId)
        _killGroup(self.pid, signal.SIGKILL)

    def processEnded(self, reason):
        code = sig = None
        if reason.check(error.ProcessDone):
            code = 0
        else:
            code, sig = reason.value.exitCode, reason.value.signal
        self._finish(code, sig)

    def _finish(self, code, sig):
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        if self._finishing or self.ended.called:  # cancelled, or given up on
            if self.scope is not None:
                self._closeScope(3)
            return
        self._finishing = True
        now = self.reactor.seconds()
        result = Result(code, sig, bytes(self.output), self.timedOut, now - self.started)
        if self.scope is None:
            self.ended.callback(result)
            return
        self._settle(result, min(now, self.started + self.killAfter) + END_GRACE)

    def _settle(self, result, deadline, interval=SETTLE_INTERVAL):
        # Fire once every process of the run has ended, not merely been
        # sent SIGKILL (it is still there a while, releasing its memory).
        # Each look scans every process: look less often the longer it takes.
        if not (self.scope.kill(rounds=1) and self.scope.dead()):
            if self.reactor.seconds() < deadline:
                self._timers.append(self.reactor.callLater(
                    interval, self._settle, result, deadline, min(interval * 2, 0.5)))
                return
            log.warn("processes of run {run} still there {grace}s after SIGKILL; "
                     "not waiting for them", run=self.scope.runId, grace=END_GRACE)
        self._closeScope(3)
        if not self.ended.called:
            self.ended.callback(result)

    def _closeScope(self, tries):
        # Its cgroup can be removed once the kernel has let go of the
        # processes killed; try again a little later if not yet.
        self.scope.kill()
        if not self.scope.close() and tries > 1:
            self.reactor.callLater(1.0, self._closeScope, tries - 1)


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
               maxOutput=64 * 1024, scope=None):
    """
    Run C{argv} in its own session and L{RunScope} with hard time limits.

    @param env: the environment (default: the agent's own).
    @param maxOutput: keep at most this many bytes of output (the last ones).
    @param scope: the L{RunScope} to run in (default: a new one).
    @return: L{Deferred} firing with a L{Result} once the command has ended
        and none of its processes remains; never later than C{killAfter}
        plus L{END_GRACE} seconds.  Cancelling it TERMs the run at once and
        KILLs it L{CANCEL_GRACE} seconds later.
    """
    scope = RunScope() if scope is None else scope
    env = scope.environment(os.environ if env is None else env)
    argv = scope.wrap(argv, env)
    setsid = shutil.which("setsid")
    if setsid:
        argv = [setsid] + list(argv)
    proto = _Bounded(reactor, termAfter, killAfter, maxOutput, scope)
    try:
        reactor.spawnProcess(proto, argv[0], list(argv),
                             env=env,
                             path=path)
    except OSError as e:
        scope.close()
        return defer.succeed(Result(127, None, str(e).encode(), False, 0.0))
    return proto.ended
