# -*- test-case-name: tests.test_supervisor_builtin -*-
"""
In-agent supervision with Twisted process protocols, for machines without
runit.

The agent is the parent of every service, so B{services stop with the agent}:
L{BuiltinSupervisor.close} stops them all (TERM, then KILL after each
service's C{restartTimeout}).  An agent that is killed outright leaves its
services orphaned; the pid and start time of each running service are kept in
C{<service dir>/pid}, and the next L{BuiltinSupervisor.start} of that service
stops such a leftover (its whole process group) before starting a new one, so
there is never a duplicate.

Restarts follow Twisted's C{procmon}: a process that dies within C{threshold}
(C{MIN_UPTIME}, 10 s) of starting waits C{delay} before its restart and
doubles the delay for next time (1 s, 2 s, 4 s ... up to C{maxRestartDelay},
60 s); one that ran longer is restarted at once and the delay goes back to
1 s (L{nextRestartDelay}).  Each service's restarts, quick exits in a row and
last exit are counted (since its definition last changed) and reported in its
L{ServiceStatus}.

Each service's standard output and error are appended to
C{<state_dir>/service/<name>/current.log} (or C{<logDir>/<name>.log}); the
child writes to the file directly.  Services run with C{PATH} set to
L{DEFAULT_PATH<p2twisted.agent.supervisors.DEFAULT_PATH>} plus C{spec.env},
in the agent's working directory (C{p2-exec} changes to the pod's).
"""

import os
import shutil

from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted.agent.interfaces import ISupervisor, ServiceStatus
from p2twisted.agent.supervisors import (
    MAX_RESTART_DELAY, MIN_RESTART_DELAY, MIN_UPTIME, SupervisorBase, checkSpec,
    describeExit, leadsGroup, listServiceDirs, processStartTime, serviceEnvironment,
    terminate)
from p2twisted.errors import SupervisorError

log = Logger()


def nextRestartDelay(ranFor, delay, threshold=1.0, minRestartDelay=MIN_RESTART_DELAY,
                     maxRestartDelay=MAX_RESTART_DELAY):
    """
    Twisted C{procmon}'s restart policy, as a pure function.

    @param ranFor: seconds the process ran before it ended.
    @param delay: the service's current delay.
    @return: C{(wait, nextDelay)}: seconds to wait before restarting now, and
        the delay to keep for the next death.
    """
    if ranFor < threshold:
        return delay, min(delay * 2, maxRestartDelay)
    return 0.0, minRestartDelay


class _ServiceProtocol(protocol.ProcessProtocol):
    """
    Tells the supervisor when one run of a service ends.
    """

    def __init__(self, supervisor, service):
        self.supervisor = supervisor
        self.service = service

    def processEnded(self, reason):
        self.supervisor._ended(self.service, self, reason)


class _Service(object):
    """
    What the supervisor holds for one service.

    @ivar spec: the current definition.
    @ivar startedSignature: the signature of the spec its running (or last)
        process was started from.
    @ivar protocol: the running process's protocol, or C{None}.
    @ivar pid: the running process's pid, or C{None}.
    @ivar changed: when the service last started or ended.
    @ivar wantUp: whether it is restarted when it ends.
    @ivar delay: the backoff delay for its next quick death.
    @ivar restartCall: a pending restart, or C{None}.
    @ivar runs: how many times it was started.
    @ivar restarts: how many times it was restarted after ending on its own.
    @ivar quickExits: its quick exits in a row.
    @ivar loopingSince: when the first of them started, or C{None}.
    @ivar lastExit: how its last run ended, or C{None}.
    """

    def __init__(self, spec, delay):
        self.spec = spec
        self.startedSignature = None
        self.protocol = None
        self.pid = None
        self.changed = None
        self.wantUp = False
        self.delay = delay
        self.restartCall = None
        self.runs = 0
        self.resetCounts()

    def resetCounts(self):
        self.restarts = 0
        self.quickExits = 0
        self.loopingSince = None
        self.lastExit = None
        self.lastWait = 0.0

    @property
    def running(self):
        return self.protocol is not None


@implementer(ISupervisor)
class BuiltinSupervisor(SupervisorBase):
    """
    L{ISupervisor} inside the agent: C{reactor.spawnProcess} and a restart
    policy like Twisted's C{procmon}.
    """

    name = "builtin"

    def __init__(self, stateLayout, reactor, logDir=None, threshold=MIN_UPTIME,
                 minRestartDelay=MIN_RESTART_DELAY, maxRestartDelay=MAX_RESTART_DELAY):
        """
        @param stateLayout: the agent's L{StateLayout}; each service has a
            directory C{stateLayout.service(name)}.
        @param reactor: an L{IReactorProcess} and L{IReactorTime}.
        @param logDir: where output goes (C{<logDir>/<name>.log}); default
            C{<service dir>/current.log}.
        @param threshold: a run shorter than this many seconds is a quick
            death, and backs off.
        @param minRestartDelay: the first backoff delay.
        @param maxRestartDelay: the backoff cap.
        """
        self._layout = stateLayout
        self._reactor = reactor
        self._logDir = logDir
        self.threshold = threshold
        self.minRestartDelay = minRestartDelay
        self.maxRestartDelay = maxRestartDelay
        self._services = {}
        self._locks = {}
        self._closed = False

    # -- ISupervisor -----------------------------------------------------

    def prepare(self, spec):
        """
        Nothing to prepare: a service is a process of the agent's.
        """
        return defer.succeed(None)

    def unprepare(self, name):
        """
        Nothing was prepared.
        """
        return defer.succeed(None)

    def start(self, spec, restart=False):
        """
        Record C{spec} as the service's definition and make sure it runs.  A
        running service started from a spec of another signature (when
        C{spec.signature} is not C{None}), or any running service with
        C{restart}, is stopped (as L{stop}) and started again; otherwise it
        keeps running (its new definition is used at its next start).

        @return: L{Deferred} firing with the L{ServiceStatus} once the process
            is spawned, or failing with L{SupervisorError} (bad spec, the
            command cannot be run, the supervisor is closed).
        """
        try:
            checkSpec(spec)
            if self._closed:
                raise SupervisorError("the builtin supervisor is closed; "
                                      "cannot start %s" % (spec.name,))
        except SupervisorError:
            return defer.fail()
        return self._lock(spec.name).run(self._start, spec, restart)

    def services(self):
        """
        @return: L{Deferred} firing with the sorted names of the services
            defined here or on disk.
        """
        names = set(listServiceDirs(self._layout.serviceDir)) | set(self._services)
        return defer.succeed(sorted(names))

    def close(self):
        """
        Stop every service (each TERM, then KILL after its
        C{restartTimeout}); no further L{start} is accepted.

        @return: L{Deferred} firing with C{None} once all are gone.
        """
        self._closed = True
        stops = [self.stop(name, service.spec.restartTimeout)
                 for name, service in sorted(self._services.items())]
        d = defer.DeferredList(stops, consumeErrors=True)

        def report(results):
            for ok, result in results:
                if not ok:
                    log.failure("stopping a service at close failed", result)

        return d.addCallback(report)

    # -- internals -------------------------------------------------------

    def _logPath(self, name):
        if self._logDir is not None:
            return os.path.join(self._logDir, name + ".log")
        return os.path.join(self._layout.service(name), "current.log")

    def _pidPath(self, name):
        return os.path.join(self._layout.service(name), "pid")

    def _status(self, name):
        service = self._services.get(name)
        if service is None:
            if os.path.isdir(self._layout.service(name)):
                return ServiceStatus(name=name, running=False, pid=None,
                                     uptime=None, wantUp=False)
            return None
        uptime = None
        if service.changed is not None:
            uptime = max(0.0, self._reactor.seconds() - service.changed)
        return ServiceStatus(name=name, running=service.running,
                             pid=service.pid, uptime=uptime,
                             wantUp=service.wantUp, restarts=service.restarts,
                             quickExits=service.quickExits,
                             loopingSince=service.loopingSince,
                             lastExit=service.lastExit,
                             restartDelay=service.lastWait if service.quickExits else 0.0)

    @defer.inlineCallbacks
    def _start(self, spec, restart):
        service = self._services.get(spec.name)
        if service is None:
            service = _Service(spec, self.minRestartDelay)
            try:
                os.makedirs(self._layout.service(spec.name), exist_ok=True)
            except OSError as e:
                raise SupervisorError("could not create %s: %s"
                                      % (self._layout.service(spec.name), e))
            yield self._stopLeftover(spec)
            self._services[spec.name] = service
        if service.spec != spec:
            service.resetCounts()
        service.spec = spec
        stale = (service.running and spec.signature is not None
                 and service.startedSignature != spec.signature)
        if stale:
            log.info("restarting {service}: its process was started from another "
                     "definition", service=spec.name, event="service-restart")
        if (restart or stale) and service.running:
            yield self._terminate(service, spec.restartTimeout)
        service.wantUp = spec.restartPolicy == "always"
        if not service.running:
            self._cancelRestart(service)
            service.delay = self.minRestartDelay
            self._spawn(service)
        return self._status(spec.name)

    @defer.inlineCallbacks
    def _stopLeftover(self, spec):
        """
        Stop a process an earlier agent ran for this service and left behind
        (recorded in the service's C{pid} file, and still the same process).
        """
        try:
            with open(self._pidPath(spec.name)) as f:
                pid, started = (int(word) for word in f.read().split())
        except (OSError, ValueError):
            return
        if processStartTime(pid) == started:
            log.warn("stopping {service} (pid {pid}) left running by an earlier "
                     "agent", service=spec.name, pid=pid, event="orphan-stop")
            yield terminate(self._reactor, pid, leadsGroup(pid),
                            spec.restartTimeout, what="service %s" % (spec.name,))
        self._forgetPid(spec.name)

    def _forgetPid(self, name):
        try:
            os.unlink(self._pidPath(name))
        except OSError:
            pass

    def _spawn(self, service):
        """
        Start one run of C{service}: stdin C{/dev/null}, stdout and stderr
        appended to its log.

        @raise SupervisorError: if the process cannot be started.
        """
        spec = service.spec
        env = serviceEnvironment(spec)
        executable = spec.argv[0]
        if "/" not in executable:
            executable = shutil.which(executable, path=env["PATH"])
            if executable is None:
                raise SupervisorError(
                    "service %s: %r not found on PATH %s"
                    % (spec.name, spec.argv[0], env["PATH"]))
        logPath = self._logPath(spec.name)
        proto = _ServiceProtocol(self, service)
        # Running from now: Twisted may reap a quick child, and so call
        # processEnded, before spawnProcess returns.
        service.protocol = proto
        service.pid = None
        service.changed = self._reactor.seconds()
        try:
            os.makedirs(os.path.dirname(logPath), exist_ok=True)
            output = os.open(logPath, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                             | os.O_CLOEXEC, 0o644)
            try:
                devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    # No path=: Twisted then uses posix_spawn, whose child
                    # keeps signals blocked until exec, so a TERM sent at
                    # once is not lost (a forked Python child can eat it).
                    process = self._reactor.spawnProcess(
                        proto, executable, list(spec.argv), env=env,
                        childFDs={0: devnull, 1: output, 2: output})
                finally:
                    os.close(devnull)
            finally:
                os.close(output)
        except OSError as e:
            service.protocol = None
            raise SupervisorError("service %s: could not run %s: %s"
                                  % (spec.name, spec.argv[0], e))
        service.runs += 1
        service.startedSignature = spec.signature
        pid = process.pid
        if service.protocol is not proto or pid is None:
            log.info("{service} ended as it started", service=spec.name,
                     event="service-start")
            return
        service.pid = pid
        started = processStartTime(pid)
        if started is not None:
            try:
                with open(self._pidPath(spec.name), "w") as f:
                    f.write("%d %d\n" % (pid, started))
            except OSError:
                log.failure("could not record the pid of {service}",
                            service=spec.name)
        log.info("started {service} (pid {pid})", service=spec.name,
                 pid=pid, event="service-start")

    def _ended(self, service, proto, reason):
        if service.protocol is not proto:
            return
        now = self._reactor.seconds()
        started = service.changed
        ranFor = now - started
        service.protocol = None
        service.pid = None
        service.changed = now
        self._forgetPid(service.spec.name)
        log.info("{service} ended after {ranFor:.3f}s: {why}",
                 service=service.spec.name, ranFor=ranFor,
                 why=reason.getErrorMessage(), event="service-exit")
        if service.wantUp and not self._closed:
            if reason.check(error.ProcessDone):
                service.lastExit = describeExit(0, None)
            else:
                service.lastExit = describeExit(reason.value.exitCode, reason.value.signal)
            service.restarts += 1
            if ranFor < self.threshold:
                if not service.quickExits:
                    service.loopingSince = started
                service.quickExits += 1
            else:
                service.quickExits, service.loopingSince = 0, None
            self._scheduleRestart(service, ranFor)

    def _scheduleRestart(self, service, ranFor):
        wait, service.delay = nextRestartDelay(
            ranFor, service.delay, self.threshold, self.minRestartDelay,
            self.maxRestartDelay)
        service.lastWait = wait
        self._cancelRestart(service)
        service.restartCall = self._reactor.callLater(wait, self._restart, service)

    def _restart(self, service):
        service.restartCall = None
        if not service.wantUp or service.running or self._closed:
            return
        if self._services.get(service.spec.name) is not service:
            return
        try:
            self._spawn(service)
        except SupervisorError:
            log.failure("restarting {service} failed", service=service.spec.name)
            self._scheduleRestart(service, 0.0)

    def _cancelRestart(self, service):
        if service.restartCall is not None:
            if service.restartCall.active():
                service.restartCall.cancel()
            service.restartCall = None

    @defer.inlineCallbacks
    def _terminate(self, service, timeout):
        """
        TERM, then KILL, the running process of C{service} (and its group,
        when it leads one) and wait for it to end.
        """
        service.wantUp = False
        self._cancelRestart(service)
        if not service.running or service.pid is None:
            return
        pid = service.pid
        yield terminate(self._reactor, pid, leadsGroup(pid), timeout,
                        isDown=lambda: service.protocol is None,
                        what="service %s" % (service.spec.name,))

    @defer.inlineCallbacks
    def _stop(self, name, timeout):
        service = self._services.get(name)
        if service is None:
            return
        yield self._terminate(service, timeout)
        log.info("stopped {service}", service=name, event="service-stop")

    @defer.inlineCallbacks
    def _remove(self, name, timeout):
        service = self._services.get(name)
        if service is not None:
            yield self._terminate(service, timeout)
            del self._services[name]
        else:
            # An earlier agent's service: stop what it may have left behind.
            spec = _LeftoverSpec(name, timeout)
            yield self._stopLeftover(spec)
        shutil.rmtree(self._layout.service(name), ignore_errors=True)
        if self._logDir is not None:
            try:
                os.unlink(self._logPath(name))
            except OSError:
                pass
        log.info("removed {service}", service=name, event="service-remove")


class _LeftoverSpec(object):
    """
    Just enough of a spec to stop an earlier agent's process.
    """

    def __init__(self, name, restartTimeout):
        self.name = name
        self.restartTimeout = restartTimeout

