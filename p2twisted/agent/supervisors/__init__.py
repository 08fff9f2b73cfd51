# -*- test-case-name: tests.test_supervisors -*-
"""
Process supervision, pluggable (L{ISupervisor}).

    - C{runit}: one C{runsv} per service directory under
      C{<state_dir>/service/}, started directly in its own session so pods
      outlive the agent and are found again when it restarts
      (L{p2twisted.agent.supervisors.runit}).
    - C{builtin}: in-agent supervision with Twisted process protocols, for
      machines without runit; pods stop with the agent
      (L{p2twisted.agent.supervisors.builtin}).

The config's C{supervisor: auto|runit|builtin} picks one through
L{makeSupervisor}; C{auto} is runit when its programs are on C{PATH}.

Both implementations stop a service with TERM, then KILL after the timeout,
sent to the service's whole process group when the service leads its own group
(C{p2-exec} makes it so); otherwise only to its process.  This module holds the
process-group and waiting helpers they share.
"""

import os
import re
import shutil
import signal

from twisted.internet import defer

from p2twisted.errors import SupervisorError, UsageError

#: The values the config's C{supervisor:} accepts.
KINDS = ("auto", "runit", "builtin")

#: The programs C{auto} needs on C{PATH} to pick runit.
RUNIT_PROGRAMS = ("runsvdir", "runsv", "sv")

#: The environment every supervised service starts from (plus C{spec.env}):
#: the same whichever supervisor and whenever it was started, so a service
#: does not depend on the environment of the agent that first launched it.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Seconds allowed for a process group to vanish after SIGKILL.
KILL_GRACE = 5.0

#: Seconds between two looks at a condition being waited for.
POLL_INTERVAL = 0.002

#: A run of a service shorter than this many seconds is a quick exit: its
#: restart waits L{MIN_RESTART_DELAY}, doubling at each quick exit in a row
#: up to L{MAX_RESTART_DELAY}.  A run this long resets the delay.
MIN_UPTIME = 10.0
MIN_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0

#: Quick exits in a row that make a service crash-looping.
CRASH_LOOP_EXITS = 3

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def describeExit(code, sig):
    """
    @param code: an exit status, or C{None} (or -1) when a signal ended it.
    @param sig: the signal, or C{None}.
    @return: e.g. C{"exit 3"}, C{"killed by SIGSEGV"}.
    """
    if code is not None and code >= 0:
        return "exit %d" % (code,)
    try:
        return "killed by %s" % (signal.Signals(sig).name,)
    except (ValueError, TypeError):
        return "killed by signal %s" % (sig,)


def crashLoop(status, now=None):
    """
    @param status: a L{ServiceStatus<p2twisted.agent.interfaces.ServiceStatus>}.
    @return: C{None} unless the service is crash-looping (at least
        L{CRASH_LOOP_EXITS} quick exits in a row, and not up for
        L{MIN_UPTIME} seconds since), else C{{"restarts",
        "seconds", "last_exit", "delay"}}: the quick exits in a row, the
        seconds since the first of them started, the last exit, and the
        seconds the next restart waits.
    """
    if status.quickExits < CRASH_LOOP_EXITS:
        return None
    if status.running and status.uptime is not None and status.uptime >= MIN_UPTIME:
        return None  # it has been up long enough since: over
    seconds = None
    if status.loopingSince is not None and now is not None:
        seconds = max(0, int(round(now - status.loopingSince)))
    return {"restarts": status.quickExits, "seconds": seconds,
            "last_exit": status.lastExit, "delay": status.restartDelay}


def crashLoopText(loop):
    """
    @param loop: what L{crashLoop} returns (not C{None}).
    @return: e.g. C{"crash-looping (7 restarts in 63 s, last exit 3)"}.
    """
    within = " in %d s" % (loop["seconds"],) if loop.get("seconds") is not None else ""
    last = loop.get("last_exit") or "unknown"
    last = "last " + last if last.startswith("exit ") else "last exit: " + last
    return "crash-looping (%d restarts%s, %s)" % (loop["restarts"], within, last)


def chooseKind(kind, which=shutil.which):
    """
    Resolve the config's C{supervisor:} setting.

    @param kind: C{"auto"}, C{"runit"} or C{"builtin"} (C{None} means auto).
    @param which: L{shutil.which}, for tests.
    @return: C{"runit"} or C{"builtin"}.
    @raise UsageError: for any other value.
    """
    kind = "auto" if kind is None else kind
    if kind not in KINDS:
        raise UsageError(
            "unknown supervisor %r in the config's supervisor: setting; "
            "use one of %s" % (kind, ", ".join(KINDS)))
    if kind == "auto":
        if all(which(program) for program in RUNIT_PROGRAMS):
            return "runit"
        return "builtin"
    return kind


#: The file in the service directory naming the supervisor of its services.
KIND_FILE = ".p2-supervisor"


def kindForState(kind, stateLayout, which=shutil.which):
    """
    Resolve the config's C{supervisor:} setting for an agent state directory,
    and record the result there: its services must stay with the supervisor
    that runs them (the builtin one would start second copies of runit's).

    @return: C{"runit"} or C{"builtin"}: with C{auto}, the recorded kind
        while services exist, else L{chooseKind}'s.
    @raise SupervisorError: for an explicit kind other than the recorded one
        while services exist, saying how to switch.
    """
    path = os.path.join(stateLayout.serviceDir, KIND_FILE)
    try:
        with open(path) as f:
            recorded = f.read().strip() or None
    except OSError:
        recorded = None
    services = listServiceDirs(stateLayout.serviceDir)
    if recorded in ("runit", "builtin") and services:
        if kind not in (None, "auto", recorded):
            raise SupervisorError(
                "the pods in %s are supervised by %s (%d services); start the agent with "
                "--supervisor %s, or undeploy them before switching to %s (if their "
                "processes are gone already, delete %s to switch anyway)"
                % (stateLayout.serviceDir, recorded, len(services), recorded, kind, path))
        chosen = recorded  # makeSupervisor says if runit is missing
    else:
        chosen = chooseKind(kind, which)
    if chosen != recorded:
        try:
            os.makedirs(stateLayout.serviceDir, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                f.write(chosen + "\n")
            os.replace(path + ".tmp", path)
        except OSError as e:
            raise SupervisorError("cannot record the supervisor in %s: %s"
                                  % (path, e.strerror or e))
    return chosen


def makeSupervisor(kind, stateLayout, reactor, logDir=None, which=shutil.which):
    """
    Build the supervisor the config asks for.

    @param kind: the config's C{supervisor:} value (L{chooseKind}).
    @param stateLayout: the agent's L{StateLayout}; services live under
        C{stateLayout.serviceDir}.
    @param reactor: the reactor to run processes and timers with.
    @param logDir: where the builtin supervisor appends each service's output
        (C{<logDir>/<name>.log}); default C{<service dir>/current.log}.  runit
        services always log through C{svlogd} into C{<service>/log/main/}.
    @return: an L{ISupervisor} provider.
    @raise UsageError: for an unknown kind.
    @raise SupervisorError: when runit is asked for but missing.
    """
    chosen = chooseKind(kind, which)
    if chosen == "runit":
        from p2twisted.agent.supervisors.runit import RunitSupervisor
        return RunitSupervisor(stateLayout, reactor, which=which)
    from p2twisted.agent.supervisors.builtin import BuiltinSupervisor
    return BuiltinSupervisor(stateLayout, reactor, logDir=logDir)


def findProgram(name, which=shutil.which):
    """
    @return: the absolute path of C{name} on C{PATH} (or the standard
        directories).
    @raise SupervisorError: if it is nowhere.
    """
    found = which(name) or which(name, path=DEFAULT_PATH)
    if not found:
        raise SupervisorError(
            "%s not found on PATH; install runit (e.g. apt-get install runit) "
            "or set supervisor: builtin" % (name,))
    return found


def checkSpec(spec):
    """
    Reject a L{ServiceSpec} no supervisor can run.

    @raise SupervisorError: naming the problem.
    """
    checkName(spec.name)
    if not spec.argv:
        raise SupervisorError("service %s has an empty command" % (spec.name,))
    if spec.restartPolicy not in ("always", "never"):
        raise SupervisorError(
            "service %s: restart policy %r is not 'always' or 'never'"
            % (spec.name, spec.restartPolicy))
    for key in spec.env:
        if not _ENV_NAME.fullmatch(key):
            raise SupervisorError(
                "service %s: environment variable name %r is invalid"
                % (spec.name, key))


def checkName(name):
    """
    @raise SupervisorError: unless C{name} can name a service directory.
    """
    if (not name or not isinstance(name, str) or "/" in name
            or name.startswith(".") or "\0" in name):
        raise SupervisorError("invalid service name %r" % (name,))


def serviceEnvironment(spec):
    """
    @return: the environment a service of C{spec} runs with.
    """
    env = {"PATH": DEFAULT_PATH}
    env.update(spec.env)
    return env


def listServiceDirs(serviceDir):
    """
    @return: the sorted names of the service directories in C{serviceDir}
        (names starting with C{.} are work in progress and skipped).
    """
    try:
        names = os.listdir(serviceDir)
    except FileNotFoundError:
        return []
    return sorted(
        name for name in names
        if not name.startswith(".")
        and os.path.isdir(os.path.join(serviceDir, name)))


def _stat(pid):
    """
    @return: the fields of C{/proc/<pid>/stat} after the command name
        (C{[state, ppid, pgrp, ...]}), or C{None} if there is no such process.
    """
    try:
        with open("/proc/%d/stat" % (pid,), "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(b")") + 2:].split()


def processAlive(pid):
    """
    @return: whether process C{pid} exists and is not a zombie.
    """
    fields = _stat(pid)
    return fields is not None and fields[0] != b"Z"


def processStartedAt(pid):
    """
    @return: when C{pid} started, in Unix time (to within about a second:
        the kernel gives boot time in whole seconds), or C{None}.
    """
    ticks = processStartTime(pid)
    if ticks is None:
        return None
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    return None


def processStartTime(pid):
    """
    @return: the start time of C{pid} in clock ticks since boot (to tell a
        process from a later one that reused its pid), or C{None}.
    """
    fields = _stat(pid)
    if fields is None or fields[0] == b"Z":
        return None
    return int(fields[19])


def groupMembers(pgid):
    """
    @return: the pids of the live (non-zombie) processes in process group
        C{pgid}.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    wanted = str(pgid).encode("ascii")
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields and fields[2] == wanted and fields[0] != b"Z":
            members.append(int(entry))
    return members


def leadsGroup(pid):
    """
    @return: whether C{pid} leads its own process group (so the whole group
        can be signalled without touching its supervisor).
    """
    try:
        return os.getpgid(pid) == pid
    except (ProcessLookupError, PermissionError):
        return False


def signalService(pid, signum, group):
    """
    Send C{signum} to C{pid}, or to its process group when C{group}; after
    TERM also send CONT so a stopped process sees the TERM.  A vanished target
    is not an error.
    """
    send = os.killpg if group else os.kill
    for sig in ((signum, signal.SIGCONT) if signum == signal.SIGTERM else (signum,)):
        try:
            send(pid, sig)
        except ProcessLookupError:
            pass


def serviceGone(pid, group):
    """
    @return: whether nothing of a service remains: its process (or, when
        C{group}, every process of its group) is gone or a zombie.
    """
    if group:
        return not groupMembers(pid)
    return not processAlive(pid)


def waitUntil(reactor, predicate, timeout, interval=POLL_INTERVAL, first=None):
    """
    Look at C{predicate()} now and every C{interval} seconds (with C{first}:
    after C{first} seconds, then twice as long each time up to C{interval},
    for what is usually over in a few milliseconds).

    @return: L{Deferred} firing with C{True} once C{predicate()} is true, or
        with C{False} when C{timeout} seconds pass first; failing with what
        C{predicate} raises.
    """
    d = defer.Deferred()
    deadline = reactor.seconds() + timeout
    delay = [interval if first is None else min(first, interval)]

    def check():
        try:
            done = predicate()
        except BaseException:
            d.errback()
            return
        if done:
            d.callback(True)
        elif reactor.seconds() >= deadline:
            d.callback(False)
        else:
            reactor.callLater(delay[0], check)
            delay[0] = min(delay[0] * 2, interval)

    check()
    return d


@defer.inlineCallbacks
def terminate(reactor, pid, group, timeout, isDown=lambda: True, what="service"):
    """
    TERM a service (its group when C{group}), wait up to C{timeout} seconds for
    it to go, then KILL it and wait up to L{KILL_GRACE} more.

    @param isDown: an extra condition for "gone" (e.g. its supervisor saw it
        exit).
    @return: L{Deferred} firing with C{None} once nothing of it remains, or
        failing with L{SupervisorError}.
    """
    def gone():
        # isDown first: it is a file read, where looking for the group's
        # last members may read every process's /proc/<pid>/stat (while
        # the leader is a zombie its supervisor has not reaped yet).
        return isDown() and serviceGone(pid, group)

    signalService(pid, signal.SIGTERM, group)
    if (yield waitUntil(reactor, gone, timeout, first=0.001)):
        return
    signalService(pid, signal.SIGKILL, group)
    if not (yield waitUntil(reactor, gone, KILL_GRACE)):
        raise SupervisorError(
            "%s (pid %d) is still there %.0fs after SIGKILL; look at "
            "/proc/%d/status" % (what, pid, KILL_GRACE, pid))


class SupervisorBase(object):
    """
    What both supervisors share: every verb checks the service name, then
    runs the implementation's C{_stop}, C{_remove} (or reads C{_status})
    under that service's own lock, so operations on one service never
    interleave.  Subclasses set C{self._locks = {}}.
    """

    def _lock(self, name):
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = defer.DeferredLock()
        return lock

    def _locked(self, name, f, *args):
        try:
            checkName(name)
        except SupervisorError:
            return defer.fail()
        return self._lock(name).run(f, name, *args)

    def stop(self, name, timeout):
        """
        See L{ISupervisor.stop}: TERM the service's process group, KILL it
        after C{timeout} seconds, and keep it down.
        """
        return self._locked(name, self._stop, timeout)

    def remove(self, name, timeout):
        """
        See L{ISupervisor.remove}: stop the service and delete its definition
        and logs.
        """
        return self._locked(name, self._remove, timeout)

    def status(self, name):
        """
        See L{ISupervisor.status}: fires with the L{ServiceStatus}, or C{None}
        for an unknown service.
        """
        try:
            checkName(name)
        except SupervisorError:
            return defer.fail()
        return defer.succeed(self._status(name))
