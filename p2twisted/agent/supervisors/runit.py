# -*- test-case-name: tests.test_supervisor_runit -*-
"""
Supervision by runit: one C{runsv} per service directory.

Each service is a runit service directory, C{<state_dir>/service/<name>/}::

    run          #!/bin/sh / exec 2>&1 / echo <signature> >signature /
                 export ... / exec <argv>
    signature    the spec's signature its running process was started with
    finish       counts restarts and slows a crash loop (L{FINISH_SCRIPT})
    p2-restarts  finish's counters (L{readRestarts}); reset when the
                 definition changes
    down         only for restart policy "never" (runsv does not start it)
    log/run      exec svlogd -tt ./main
    log/main/    svlogd's log directory (current, rotated files)
    supervise/   runsv's own state (status, control, ok, lock)

A new directory is built under a dot name (C{.<name>.new-<random>}), flushed to
disk (one C{syncfs}) and renamed into place; a changed definition replaces its
files one by one, each by rename.  The C{run} script records the spec's
signature (L{ServiceSpec.signature<p2twisted.agent.interfaces.ServiceSpec>}) in
the file C{signature} as it starts the process: a service whose running
process was started with another signature is restarted by
L{RunitSupervisor.start}, even when its definition was written earlier by an
agent that died before restarting it.  A process that recorded no signature
(started by an agent older than signatures) runs a definition nobody can
vouch for, and is restarted too: at its pod's next deploy only, since the
agent calls C{start} for no pod that is already in reality.  Names starting
with a dot are skipped by C{runsvdir} and by L{RunitSupervisor.services}.

C{runsv <dir>} is started directly for a new service, in its own session
(C{setsid}), with C{/dev/null} as its standard streams: it does not wait for a
C{runsvdir} rescan (which happens at most about once a second), and it survives
the agent being killed.  A service already has a runsv when its
C{supervise/ok} FIFO can be opened for writing without blocking (runit's
documented test, the one C{sv} uses); runsv itself refuses to run twice on one
directory (it holds C{supervise/lock}), so a second agent cannot duplicate it.

A new pod's services are prepared while its artifacts install
(L{RunitSupervisor.prepare}): the directory is written with a C{down} file and
its runsv (and svlogd) started, so that the start after the install only
removes C{down} and says C{up}.  Such a directory is marked C{p2-prepared}
until a start takes it up: one an agent left when it stopped during the
install is removed by the next agent, and by C{unprepare}.

No C{runsvdir} watches the service directory: one would try, once a second
and forever, to start a second runsv for every directory the agent started
itself (each attempt failing on C{supervise/lock}).  The agent's periodic
resync calls L{RunitSupervisor.start}, which starts a runsv again for a service
whose runsv died.

Restarting a service that started less than a second ago (an upgrade right
after a deploy) would make its runsv sleep a second once it is down (runsv's
pause against crash loops).  Such a restart stops the service (its process
group gone is enough: the old run's C{finish} may still run), moves its
directory aside (under a C{.removed-} name; the old runsv works relative to
it), tells the old runsv to exit, and starts a fresh directory and runsv under
the name; the old directory's log files then move into the new log directory
(its C{current} as a rotated C{@<tai64n>.s} file) and it is deleted.

Commands are C{sv}'s (C{up}, C{once}, C{down}, C{exit}) without C{-w}, their
letters written to C{supervise/control} as sv does (without starting it): the
supervisor polls C{supervise/status} (20 bytes: TAI64N stamp of the last state
change, pid little-endian, paused, want C{u}/C{d}, term flag, state 0 down /
1 run / 2 finish; runsv writes it by rename) every 2 ms (the first looks
sooner) instead of sv's 420 ms.  Stopping sends TERM (and CONT) to the
service's process group when the service leads its own group (C{p2-exec} or
C{chpst -P} make it so), and KILL to the group after the timeout; runsv alone
would only signal the group's leader.
"""

import binascii
import errno
import os
import shlex
import shutil
import signal
import struct
import time

import attr
from twisted.internet import defer, protocol, threads
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted.agent.fsutil import fsyncDir, syncFilesystem
from p2twisted.agent.interfaces import ISupervisor, ServiceStatus
from p2twisted.agent.supervisors import (
    DEFAULT_PATH, KILL_GRACE, MAX_RESTART_DELAY, MIN_UPTIME, SupervisorBase, checkSpec,
    describeExit, findProgram, leadsGroup, listServiceDirs, processStartedAt,
    serviceEnvironment, signalService, terminate, waitUntil)
from p2twisted.errors import SupervisorError

log = Logger()

#: runsv's states, byte 19 of C{supervise/status}.
DOWN, RUN, FINISH = 0, 1, 2

#: TAI64 label of the Unix epoch (2**62 + 10, as runit's C{tain_now} uses).
_TAI_EPOCH = 4611686018427387914

#: runsv runs C{./finish EXIT_CODE WAIT_STATUS} (C{EXIT_CODE} -1 when a signal
#: ended C{./run}) after each run, before the next; while it runs,
#: C{supervise/status} still holds the start time of the run that ended and
#: says whether the service is wanted up.  When it is (the service ended on
#: its own), this counts a restart in C{p2-restarts} and, after a run shorter
#: than C{MIN_UPTIME}, sleeps 1 s, doubling at each quick exit in a row up to
#: C{MAX_RESTART_DELAY}; a longer run resets the delay.  Its last act is the
#: C{exec sleep}, so stopping the service ends the wait by signalling its pid
#: (L{RunitSupervisor} does; a plain C{sv down} waits for it).
#: C{p2-restarts} holds one line: restarts, quick exits in a row, start of
#: the first of them, delay, exit code, signal, time of the exit, and how long
#: the run lasted (Unix seconds).
FINISH_SCRIPT = """#!/bin/sh
# Written by the p2 agent: counts restarts and slows a crash loop.
min_uptime=%(minUptime)d max_delay=%(maxDelay)d
now=$(date +%%s)
code=${1:--1} status=${2:-0}
set -- $(od -An -tu1 -v supervise/status 2>/dev/null)
[ $# -eq 20 ] || exit 0
started=$(( ($5 << 24) + ($6 << 16) + ($7 << 8) + $8 - 10 ))
want=${18}
restarts=0 quick=0 since=0 delay=0
[ -r p2-restarts ] && read restarts quick since delay rest < p2-restarts
sig=0
[ "$code" = -1 ] && sig=$((status & 127))
wait=0
if [ "$want" = 117 ]; then
  restarts=$((restarts + 1))
  if [ $((now - started)) -lt $min_uptime ]; then
    [ "$quick" -eq 0 ] && since=$started
    quick=$((quick + 1))
    delay=$((delay * 2))
    [ $delay -lt 1 ] && delay=1
    [ $delay -gt $max_delay ] && delay=$max_delay
    wait=$delay
  else
    quick=0 since=0 delay=0
  fi
fi
echo "$restarts $quick $since $delay $code $sig $now $((now - started))" > p2-restarts.new &&
  mv -f p2-restarts.new p2-restarts
[ $wait -gt 0 ] && exec sleep $wait
exit 0
""" % {"minUptime": MIN_UPTIME, "maxDelay": MAX_RESTART_DELAY}

#: The file of C{FINISH_SCRIPT}'s counters in a service directory.
RESTARTS_FILE = "p2-restarts"
LOG_RUN_SCRIPT = (
    "#!/bin/sh\n"
    "PATH=%s; export PATH\n"
    "exec svlogd -tt ./main\n" % (shlex.quote(DEFAULT_PATH),))

#: How long runsv sleeps after a service that ran for less than this ends,
#: before it starts it again (runit's runsv.c).
RUNSV_PAUSE = 1.0

#: Seconds before the first look at a runsv or service being started (then
#: twice as long each time, up to the supervisors' poll interval).
_FIRST_LOOK = 0.001

#: The file that marks a new service directory L{RunitSupervisor.prepare}
#: wrote, held down, and no L{RunitSupervisor.start} has taken up yet: one
#: left by an agent stopped meanwhile is removed by the next
#: (L{RunitSupervisor._pruneLeftovers}); its pod's deploy, if still wanted,
#: prepares it again.
PREPARED = "p2-prepared"

#: Seconds between looks at a runsv told to exit (it takes most of a second
#: with a log service: no deploy waits for it, so it is looked at seldom).
_EXIT_POLL = 0.05

#: Seconds by which a process's start time may differ from the start runsv
#: recorded for it and still be taken for the same process (the kernel gives
#: boot time in whole seconds).
_SAME_START = 2.0

#: Dot-named leftovers of an interrupted write or remove older than this many
#: seconds are deleted when a supervisor starts.
_STALE_AGE = 60.0


#: The file of a service directory where its C{run} script records the
#: signature of the spec it runs.
SIGNATURE_FILE = "signature"


def signatureRecord(spec):
    """
    @return: what the C{run} script of C{spec} writes to L{SIGNATURE_FILE}
        (C{-} for a spec without signature), without its newline.
    """
    return "-" if spec.signature is None else str(spec.signature)


def startedSignature(path):
    """
    @return: the signature record the running process of the service
        directory C{path} was started with, or C{None} when none was written.
    """
    text = _readFile(os.path.join(path, SIGNATURE_FILE))
    return None if text is None else text.strip()


def runScript(spec):
    """
    @return: the text of the C{run} script for C{spec}: stderr joined to
        stdout (for svlogd), its signature recorded, its environment exported,
        then its argv exec'd.  An argv C{/bin/sh -c SCRIPT NAME ARGS...} (as
        L{runtime.chpstArgv} starts pods) is run by the script's own shell
        instead: C{ARGS} set as its arguments, then C{SCRIPT} (one shell fewer
        to start, a few milliseconds before the pod runs), unless C{SCRIPT}
        looks at C{$0}.
    """
    lines = ["#!/bin/sh", "# %s: written by the p2 agent; replaced on each deploy."
             % (spec.name,), "exec 2>&1",
             "echo %s >%s" % (shlex.quote(signatureRecord(spec)), SIGNATURE_FILE)]
    for key, value in sorted(serviceEnvironment(spec).items()):
        lines.append("%s=%s; export %s" % (key, shlex.quote(str(value)), key))
    argv = [str(arg) for arg in spec.argv]
    if len(argv) >= 3 and argv[:2] == ["/bin/sh", "-c"] and "$0" not in argv[2] \
            and "${0" not in argv[2]:
        lines.append(" ".join(["set", "--"] + [shlex.quote(arg) for arg in argv[4:]]))
        lines.append(argv[2])
    else:
        lines.append("exec " + " ".join(shlex.quote(arg) for arg in argv))
    return "\n".join(lines) + "\n"


def serviceFiles(spec):
    """
    @return: C{{relative path: text}} of the scripts of C{spec}'s service
        directory.
    """
    return {"run": runScript(spec), "finish": FINISH_SCRIPT,
            os.path.join("log", "run"): LOG_RUN_SCRIPT}


@attr.s(frozen=True)
class RunsvStatus(object):
    """
    The decoded C{supervise/status} of one service.

    @ivar stamp: when the current state began (Unix time, float).
    @ivar pid: the process runsv runs now (the service, or C{finish}), or 0.
    @ivar want: C{"u"} or C{"d"}.
    @ivar state: L{DOWN}, L{RUN} or L{FINISH}.
    """

    stamp = attr.ib()
    pid = attr.ib()
    paused = attr.ib()
    want = attr.ib()
    term = attr.ib()
    state = attr.ib()


def parseStatus(data):
    """
    Decode runsv's 20-byte C{supervise/status} (runit's C{runsv.c}
    C{update_status}).

    @return: a L{RunsvStatus}.
    @raise ValueError: if C{data} is not 20 bytes.
    """
    if len(data) != 20:
        raise ValueError("supervise/status is %d bytes, not 20" % (len(data),))
    seconds, nanoseconds = struct.unpack(">QL", data[:12])
    pid, = struct.unpack("<L", data[12:16])
    return RunsvStatus(
        stamp=seconds - _TAI_EPOCH + nanoseconds / 1e9, pid=pid,
        paused=bool(data[16]), want=chr(data[17]), term=bool(data[18]),
        state=data[19])


def readStatus(path):
    """
    @return: the L{RunsvStatus} of the service directory C{path}, or C{None}
        when runsv has not written one (or it is unreadable).
    """
    try:
        with open(os.path.join(path, "supervise", "status"), "rb") as f:
            return parseStatus(f.read())
    except (OSError, ValueError):
        return None


def readRestarts(path):
    """
    @return: the counters C{FINISH_SCRIPT} keeps for the service directory
        C{path}, as L{ServiceStatus} fields (C{restarts}, C{quickExits},
        C{loopingSince}, C{lastExit}, C{restartDelay}); empty when there are
        none (or they are unreadable).
    """
    try:
        with open(os.path.join(path, RESTARTS_FILE)) as f:
            fields = [int(word) for word in f.read().split()]
        restarts, quick, since, delay, code, sig = fields[:6]
    except (OSError, ValueError):
        return {}
    return {"restarts": restarts, "quickExits": quick,
            "loopingSince": float(since) if quick else None,
            "lastExit": describeExit(code, sig), "restartDelay": float(delay) if quick else 0.0}


def _readRestartsFile(path):
    """
    @return: the text of the service directory C{path}'s C{p2-restarts}, or
        C{None} when it has none.
    """
    try:
        with open(os.path.join(path, RESTARTS_FILE)) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _writeRestartsFile(path, text):
    """
    Replace the service directory C{path}'s C{p2-restarts} by C{text}, by
    rename as its C{finish} does.
    """
    temporary = os.path.join(path, ".p2-restarts.agent")
    with open(temporary, "w") as f:
        f.write(text)
    os.rename(temporary, os.path.join(path, RESTARTS_FILE))


def runsvAlive(path):
    """
    @return: whether a runsv supervises the service directory C{path}: its
        C{supervise/ok} FIFO has a reader (runit's own test).
    """
    try:
        fd = os.open(os.path.join(path, "supervise", "ok"),
                     os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True




def inPause(status, now):
    """
    @return: whether stopping the service whose status is C{status} now
        would leave its runsv sleeping out its pause (runsv sleeps
        L{RUNSV_PAUSE} after a service that ran for less than that ends,
        before it starts it again).
    """
    return status.state == RUN and now - status.stamp < RUNSV_PAUSE


def tai64nLabel(seconds):
    """
    @return: svlogd's name for a rotated log file closed at Unix time
        C{seconds}: C{@} and the TAI64N label in hex, then C{.s}.
    """
    whole = int(seconds)
    return "@%016x%08x.s" % (_TAI_EPOCH + whole, int((seconds - whole) * 1e9))


def keepLogs(source, target):
    """
    Move the log files of the svlogd directory C{source} into C{target}
    (another svlogd directory): rotated files keep their names, C{current}
    becomes a rotated file named by its last change; svlogd's own files
    (C{lock}, C{state}, C{newstate}) stay.  Nothing happens when either is
    missing.
    """
    if not (os.path.isdir(source) and os.path.isdir(target)):
        return
    for name in sorted(os.listdir(source)):
        origin = os.path.join(source, name)
        if name == "current":
            if os.path.getsize(origin) == 0:
                continue
            name = tai64nLabel(os.stat(origin).st_mtime)
        elif not (name.startswith("@") and name.endswith((".s", ".u"))):
            continue
        destination = os.path.join(target, name)
        if not os.path.exists(destination):
            os.rename(origin, destination)
    fsyncDir(target)


#: The letters runsv reads from C{supervise/control} for C{sv}'s commands.
SV_LETTERS = {"up": b"u", "down": b"d", "once": b"o", "exit": b"x"}


def sendControl(path, letter):
    """
    Write C{letter} to the C{supervise/control} FIFO of the service directory
    C{path} (runsv(8)), without blocking.

    @raise OSError: when the FIFO is missing or has no reader (no runsv), or
        is full.
    """
    fd = os.open(os.path.join(path, "supervise", "control"),
                 os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if os.write(fd, letter) != len(letter):
            raise OSError(errno.EAGAIN, "short write to supervise/control")
    finally:
        os.close(fd)


def _writeFile(path, text, mode, sync=True):
    """
    Write C{text} to C{path} (which must not exist), fsynced (unless
    C{sync} is false: the caller flushes it).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
        os.fchmod(fd, mode)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _readFile(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None


def _outdated(spec, path):
    """
    @return: the C{(relative path, text)} of the scripts of C{spec}'s service
        directory (L{serviceFiles}) that the directory C{path} does not hold
        as they should be (text, exec bit), sorted.
    """
    return [(rel, text) for rel, text in sorted(serviceFiles(spec).items())
            if not (_readFile(os.path.join(path, rel)) == text
                    and os.access(os.path.join(path, rel), os.X_OK))]


def _differs(spec, path):
    """
    @return: whether the existing service directory C{path} differs from
        what L{RunitSupervisor._define} would make it for C{spec}.
    """
    return bool(_outdated(spec, path)) or (
        (spec.restartPolicy == "never") != os.path.exists(os.path.join(path, "down")))


def _resetRestarts(path):
    try:
        os.unlink(os.path.join(path, RESTARTS_FILE))
    except FileNotFoundError:
        pass


def _endFinishWait(path):
    """
    A start (a deploy) need not wait out a crash loop's delay: end a
    C{finish} that is running (runsv then starts C{run} if the service is
    wanted up).
    """
    current = readStatus(path)
    if current is not None and current.state == FINISH and current.pid and runsvAlive(path):
        signalService(current.pid, signal.SIGTERM, False)


def _chdirPrefix(which):
    """
    @return: C{[env, "-C"]} when this host's C{env} can start a program in
        another directory (GNU coreutils 8.28 and later), else C{None}.
    """
    import subprocess
    env = which("env") or which("env", path=DEFAULT_PATH)
    if env is None:
        return None
    try:
        subprocess.run([env, "-C", "/", "true"], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={"PATH": DEFAULT_PATH}, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return [env, "-C"]


def _suffix():
    return binascii.hexlify(os.urandom(6)).decode("ascii")


class _RunsvProtocol(protocol.ProcessProtocol):
    """
    Watches a runsv this agent started (it is our child until we exit).
    """

    #: Set when the agent itself made this runsv exit.
    expected = False

    def __init__(self, supervisor, name):
        self.supervisor = supervisor
        self.name = name

    def processEnded(self, reason):
        self.supervisor._runsvEnded(self, reason)


@implementer(ISupervisor)
class RunitSupervisor(SupervisorBase):
    """
    L{ISupervisor} by runit: a service directory and a C{runsv} per service.

    @ivar startLatencies: seconds from each L{start} call until its service was
        seen running, most recent last (kept for benchmarks, at most 100).
    """

    name = "runit"

    def __init__(self, stateLayout, reactor, which=shutil.which):
        """
        @param stateLayout: the agent's L{StateLayout}; services live under
            C{stateLayout.serviceDir}.
        @param reactor: the reactor to run C{sv} and C{runsv} with and to
            time waits by.
        @raise SupervisorError: when runit or C{setsid} is missing.
        """
        self._layout = stateLayout
        self._reactor = reactor
        self._runsv = findProgram("runsv", which)
        self._sv = findProgram("sv", which)
        findProgram("svlogd", which)
        self._setsid = findProgram("setsid", which)
        self._chdir = _chdirPrefix(which)
        self._locks = {}
        self._children = {}
        self.startLatencies = []
        self._retiring = set()
        #: C{{name: (directory, spec, runsv protocol)}}: the new directories
        #: and runsvs L{prepare} made for restarts within the pause.
        self._prepared = {}
        self._pruneLeftovers()

    # -- ISupervisor -----------------------------------------------------

    def start(self, spec, restart=False):
        """
        Write C{spec}'s service directory, make sure a runsv supervises it, and
        bring the service up (C{sv up}; C{sv once} for policy C{"never"}).
        With C{restart}, a running service is stopped first (as L{stop} does).

        @return: L{Deferred} firing with the L{ServiceStatus} once the process
            runs (for policy C{"never"}: once it started, even if it already
            ended), or failing with L{SupervisorError} (bad spec, runsv or
            C{sv} failing, not up after C{spec.restartTimeout} seconds).
        """
        try:
            checkSpec(spec)
        except SupervisorError:
            return defer.fail()
        return self._lock(spec.name).run(self._start, spec, restart)

    def prepare(self, spec):
        """
        Write the new service C{spec}'s directory, holding it down (a
        C{down} file), and start its runsv (and svlogd) there: L{start}
        then only removes C{down} and tells it C{up}.  A service directory
        that exists is left alone.

        @return: L{Deferred} firing once its runsv runs, or failing with
            L{SupervisorError}.
        """
        try:
            checkSpec(spec)
        except SupervisorError:
            return defer.fail()
        return self._lock(spec.name).run(self._prepare, spec)

    @defer.inlineCallbacks
    def _prepare(self, spec):
        path = self._layout.service(spec.name)
        if not os.path.lexists(path):
            yield self._create(spec, path, held=True, prepared=True)
            return
        # A service that runs another signature and started less than
        # RUNSV_PAUSE ago: its start will replace its runsv (_replaceRunsv);
        # the new directory and runsv are made now, held down.
        before = readStatus(path) if runsvAlive(path) else None
        if (spec.signature is None or spec.name in self._prepared or before is None
                or before.state != RUN or not inPause(before, self._reactor.seconds())
                or startedSignature(path) == signatureRecord(spec)):
            return
        previous = self._children.get(spec.name)
        try:
            new = yield self._inThread(self._build, spec, False, True)
            yield self._startBuilt(spec, new)
        except OSError as e:
            raise SupervisorError("could not write service directory %s: %s" % (path, e))
        finally:
            child = self._children.get(spec.name)
            self._restoreChild(spec.name, previous)
        self._prepared[spec.name] = (new, spec, child if child is not previous else None)

    def unprepare(self, name):
        """
        Discard what L{prepare} made for the restart of the running service
        C{name}, if anything (its runsv told to exit, its directory deleted
        meanwhile); the service keeps running.  A new service L{prepare}
        wrote (even one a previous agent did, L{PREPARED}) and no start
        took up is removed.

        @return: L{Deferred} firing with C{None}.
        """
        self._discardPrepared(name)
        if not os.path.exists(os.path.join(self._layout.service(name), PREPARED)):
            return defer.succeed(None)
        return self._lock(name).run(self._removeUnstarted, name)

    def _discardPrepared(self, name):
        """
        Discard, in the background, what was prepared for C{name} (see
        L{unprepare}).
        """
        prepared = self._prepared.pop(name, None)
        if prepared is None:
            return
        tmp, _, child = prepared
        if child is not None:
            child.expected = True

        @defer.inlineCallbacks
        def discard():
            try:
                if runsvAlive(tmp):
                    yield self._command("exit", tmp)
                    yield waitUntil(self._reactor, lambda: not runsvAlive(tmp)
                                    and not runsvAlive(os.path.join(tmp, "log")), KILL_GRACE,
                                    interval=_EXIT_POLL, first=_FIRST_LOOK)
                yield self._inThread(shutil.rmtree, tmp, True)
            except Exception:
                log.failure("could not clean up {path}, prepared for {service}",
                            path=tmp, service=name)
        retiring = discard()
        self._retiring.add(retiring)
        retiring.addBoth(lambda _: self._retiring.discard(retiring))

    def services(self):
        """
        @return: L{Deferred} firing with the sorted names of the service
            directories under the state directory.
        """
        return defer.succeed(listServiceDirs(self._layout.serviceDir))

    def close(self):
        """
        Nothing to release: every runsv keeps running, and so do the services.
        Waits for the directories of replaced runsvs to be cleaned up.

        @return: L{Deferred} firing with C{None}.
        """
        return defer.DeferredList(list(self._retiring)).addCallback(lambda _: None)

    # -- internals -------------------------------------------------------

    def _pruneLeftovers(self):
        """
        Delete dot-named directories an interrupted write or remove left,
        and remove the new services prepared and never started
        (L{PREPARED}).
        """
        serviceDir = self._layout.serviceDir
        try:
            names = os.listdir(serviceDir)
        except FileNotFoundError:
            return
        now = time.time()
        for name in names:
            if not name.startswith("."):
                self._removeLeftover(name, os.path.join(serviceDir, name))
            if not (name.startswith(".") and (".new-" in name or ".removed-" in name)):
                continue
            path = os.path.join(serviceDir, name)
            if runsvAlive(path):
                # A replaced runsv an agent stopped before it was told to
                # exit (or that did not exit), or a new one started by an
                # agent stopped before it renamed its directory into place:
                # deleting its directory would leave it, its svlogd (and its
                # service) running forever.
                self._retireLeftover(name, path)
                continue
            try:
                if now - os.lstat(path).st_mtime > _STALE_AGE:
                    shutil.rmtree(path)
            except OSError:
                log.failure("could not delete leftover {path}", path=path)

    def _removeUnstarted(self, name):
        """
        Remove the service C{name} (its runsv and svlogd told to exit) if
        its directory is a new one L{prepare} wrote and no start took up:
        marked L{PREPARED}, its service never run.  (Under its lock.)

        @return: L{Deferred} firing with C{None}.
        """
        path = self._layout.service(name)
        if not os.path.exists(os.path.join(path, PREPARED)):
            return defer.succeed(None)
        status = readStatus(path)
        if status is not None and (status.state != DOWN or status.pid or status.want != "d"):
            # (It ran: a start took it up, its marker's removal lost.)
            return defer.succeed(None)
        log.info("removing service {service}, prepared and never started",
                 service=name, event="prepared-remove")
        return self._remove(name, KILL_GRACE)

    def _removeLeftover(self, name, path):
        """
        At start: remove the service C{name} if a previous agent prepared it
        and was stopped before it started it (L{_removeUnstarted}).
        """
        if not os.path.exists(os.path.join(path, PREPARED)):
            return
        removing = self._lock(name).run(self._removeUnstarted, name)
        removing.addErrback(lambda f: log.failure(
            "could not remove {service}, prepared and never started", f, service=name))
        self._retiring.add(removing)
        removing.addBoth(lambda _: self._retiring.discard(removing))

    def _retireLeftover(self, name, path):
        """
        Tell the runsv of the moved-aside directory C{path} (named C{name})
        to exit, then clean it up as L{_retire} does.
        """
        service = name[1:].rpartition(".removed-" if ".removed-" in name else ".new-")[0]
        try:
            sendControl(path, SV_LETTERS["exit"])
        except OSError as e:
            log.warn("cannot tell the runsv of {path} to exit: {error}", path=path,
                     error=e.strerror or e)
        retiring = self._retire(service, path, self._layout.service(service))
        self._retiring.add(retiring)
        retiring.addBoth(lambda _: self._retiring.discard(retiring))

    def _status(self, name):
        path = self._layout.service(name)
        if not os.path.isdir(path):
            return None
        current = readStatus(path)
        if current is None or not runsvAlive(path):
            return ServiceStatus(name=name, running=False, pid=None,
                                 uptime=None, wantUp=False)
        running = current.state == RUN and current.pid != 0
        return ServiceStatus(
            name=name, running=running, pid=current.pid if running else None,
            uptime=max(0.0, self._reactor.seconds() - current.stamp),
            wantUp=current.want == "u", **readRestarts(path))

    def _inThread(self, f, *args):
        """
        Run C{f(*args)} in the reactor's thread pool: for L{_define} and
        L{_build}, whose C{syncfs} waits for everything written to the
        filesystem (pods' files, logs), not only the service's, and must
        not block the reactor meanwhile.
        """
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    def _build(self, spec, sync=True, held=False, prepared=False):
        """
        Build C{spec}'s new service directory under a dot name
        (C{.<name>.new-<random>}), on disk (one flush for all of it).

        @param sync: whether to flush it here (else the caller does, as
            L{_create} does while its runsv starts).
        @param held: give it a C{down} file whatever the restart policy: its
            runsv, once started, holds the service down until told C{up}.
        @param prepared: mark it L{PREPARED} (with C{held}).
        @return: its path, for the caller to rename into place.
        """
        serviceDir = self._layout.serviceDir
        os.makedirs(serviceDir, exist_ok=True)
        tmp = os.path.join(serviceDir, ".%s.new-%s" % (spec.name, _suffix()))
        os.mkdir(tmp)
        try:
            os.makedirs(os.path.join(tmp, "log", "main"))
            for rel, text in sorted(serviceFiles(spec).items()):
                _writeFile(os.path.join(tmp, rel), text, 0o755, sync=False)
            if held or spec.restartPolicy == "never":
                _writeFile(os.path.join(tmp, "down"), "", 0o644, sync=False)
            if prepared:
                _writeFile(os.path.join(tmp, PREPARED), "", 0o644, sync=False)
            if sync:
                syncFilesystem(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp

    def _place(self, tmp, path):
        """
        Rename the built directory C{tmp} to C{path} (which must not exist)
        and flush the rename to disk.
        """
        os.rename(tmp, path)
        fsyncDir(self._layout.serviceDir)

    @defer.inlineCallbacks
    def _startBuilt(self, spec, tmp):
        """
        Start a runsv for the directory C{tmp} just built (not yet flushed)
        while, in a thread, it is flushed to disk: runsv and svlogd start
        meanwhile instead of after it.  (runsv works relative to its
        directory, so C{tmp} may be renamed once it runs.)  When either
        fails, its runsv (if any) is stopped and C{tmp} deleted.

        @return: L{Deferred} firing once the runsv runs and C{tmp} is on disk.
        """
        flushed = self._inThread(syncFilesystem, tmp)
        started = self._ensureRunsv(spec.name, tmp, spec.restartTimeout)
        for ok, result in (yield defer.DeferredList([flushed, started], consumeErrors=True)):
            if not ok:
                yield self._discard(spec.name, tmp, spec.restartTimeout)
                if result.check(OSError):
                    raise SupervisorError("could not write service directory %s: %s"
                                          % (tmp, result.value))
                result.raiseException()

    @defer.inlineCallbacks
    def _discard(self, name, tmp, timeout):
        """
        Undo L{_startBuilt}: stop the service and the runsv of the built
        directory C{tmp} (if one runs), then delete it.  Never fails:
        problems are logged.
        """
        try:
            if runsvAlive(tmp):
                yield self._stopRunning(name, tmp, timeout)
                if name in self._children:
                    self._children[name].expected = True
                yield self._command("exit", tmp)
                yield waitUntil(self._reactor, lambda: not runsvAlive(tmp)
                                and not runsvAlive(os.path.join(tmp, "log")), KILL_GRACE)
            shutil.rmtree(tmp, ignore_errors=True)
        except Exception:
            log.failure("could not clean up {path}, a new directory of {service}",
                        path=tmp, service=name)

    @defer.inlineCallbacks
    def _create(self, spec, path, held=False, prepared=False):
        """
        Write the new service directory of C{spec} atomically (built under a
        dot name, then renamed to C{path}), its runsv started there while it
        is flushed to disk (L{_startBuilt}).

        @param held: as L{_build}'s.
        @param prepared: as L{_build}'s.
        """
        try:
            tmp = yield self._inThread(self._build, spec, False, held, prepared)
        except OSError as e:
            raise SupervisorError("could not write service directory %s: %s" % (path, e))
        yield self._startBuilt(spec, tmp)
        try:
            yield self._inThread(self._place, tmp, path)
        except OSError as e:
            yield self._discard(spec.name, tmp, spec.restartTimeout)
            raise SupervisorError("could not write service directory %s: %s" % (path, e))

    def _define(self, spec):
        """
        Write C{spec}'s existing service directory: its changed files each
        replaced by rename.

        @return: C{"changed"} or C{"same"}.
        """
        path = self._layout.service(spec.name)
        down = spec.restartPolicy == "never"
        changed = False
        for rel, text in _outdated(spec, path):
            target = os.path.join(path, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = "%s.new-%s" % (target, _suffix())
            _writeFile(tmp, text, 0o755)
            os.rename(tmp, target)
            fsyncDir(os.path.dirname(target))
            changed = True
        os.makedirs(os.path.join(path, "log", "main"), exist_ok=True)
        # Taken up by this start: no longer a leftover of a preparation.
        # (Before its C{down} file goes: a crash in between leaves a
        # service held down, which the next start takes up.)
        try:
            os.unlink(os.path.join(path, PREPARED))
            changed = True
        except FileNotFoundError:
            pass
        downPath = os.path.join(path, "down")
        flush = changed
        if down and not os.path.exists(downPath):
            _writeFile(downPath, "", 0o644)
            changed = flush = True
        elif not down and os.path.exists(downPath):
            # (Not flushed: a C{down} file back after a crash only leaves
            # the service to the next start, which always says C{up}.)
            os.unlink(downPath)
            changed = True
        if flush:
            fsyncDir(path)
        return "changed" if changed else "same"

    def _spawnRunsv(self, name, path):
        """
        Start C{setsid runsv <path>}: its own session, C{/dev/null} for stdio,
        every other descriptor closed (Twisted closes them).  A directory
        built under a dot name (which it runs under its real name once
        renamed) gets C{setsid env -C <path> runsv .} instead, where C{env}
        can: C{ps} does not show it a name it loses.
        """
        argv = [self._setsid, self._runsv, path]
        if self._chdir and os.path.basename(path).startswith("."):
            argv = [self._setsid] + self._chdir + [path, self._runsv, "."]
        devnull = os.open(os.devnull, os.O_RDWR)
        child = self._children[name] = _RunsvProtocol(self, name)
        try:
            self._reactor.spawnProcess(
                child, self._setsid, argv,
                env={"PATH": DEFAULT_PATH},
                childFDs={0: devnull, 1: devnull, 2: devnull})
        finally:
            os.close(devnull)
        log.info("started runsv for {service}", service=name, event="runsv-start")

    def _runsvEnded(self, child, reason):
        if self._children.get(child.name) is child:
            del self._children[child.name]
        if child.expected:
            return
        log.warn("runsv for {service} exited: {why}; the next start() starts "
                 "another", service=child.name, why=reason.getErrorMessage(),
                 event="runsv-exit")

    @defer.inlineCallbacks
    def _stopOrphan(self, name, path, timeout):
        """
        A runsv that died (killed outright) leaves its service running: stop
        it before a new runsv starts another copy.  The pid comes from the
        dead runsv's status and is trusted only if that process started when
        the status says the service did (so a reused pid is left alone).
        """
        last = readStatus(path)
        if last is None or last.state != RUN or not last.pid:
            return
        started = processStartedAt(last.pid)
        if started is None or abs(started - last.stamp) > _SAME_START:
            return
        log.warn("stopping {service} (pid {pid}), left running by a runsv that "
                 "died", service=name, pid=last.pid, event="orphan-stop")
        yield terminate(self._reactor, last.pid, leadsGroup(last.pid), timeout,
                        what="service %s" % (name,))

    @defer.inlineCallbacks
    def _ensureRunsv(self, name, path, timeout):
        """
        Start a runsv for the service directory C{path} unless one runs.

        @return: L{Deferred} firing with whether a runsv was started (it
            starts the service from its current definition at once, unless
            its C{down} file exists).
        """
        if runsvAlive(path):
            return False
        yield self._stopOrphan(name, path, timeout)
        self._spawnRunsv(name, path)
        up = yield waitUntil(
            self._reactor,
            lambda: runsvAlive(path) and readStatus(path) is not None, timeout,
            first=_FIRST_LOOK)
        if not up:
            raise SupervisorError(
                "runsv for service %s did not start within %.1fs; try running "
                "'%s %s' by hand" % (name, timeout, self._runsv, path))
        return True

    def _command(self, command, path):
        """
        Send C{command} (C{up}, C{down}, C{once} or C{exit}) to the runsv of
        C{path}: what C{sv} without C{-w} does, its letter written to
        C{supervise/control}, without starting C{sv}.

        @return: L{Deferred} firing when written, or failing with
            L{SupervisorError} when no runsv reads that FIFO.
        """
        try:
            sendControl(path, SV_LETTERS[command])
        except OSError as e:
            return defer.fail(SupervisorError(
                "'sv %s %s' failed: cannot write to supervise/control (%s); is a "
                "runsv running for it?" % (command, path, e.strerror or e)))
        return defer.succeed(None)

    @defer.inlineCallbacks
    def _start(self, spec, restart):
        began = self._reactor.seconds()
        deadline = began + spec.restartTimeout
        path = self._layout.service(spec.name)
        record = signatureRecord(spec)
        spawned = replacing = False
        if spec.name in self._prepared and self._prepared[spec.name][1] != spec:
            self._discardPrepared(spec.name)
        if not os.path.isdir(path):
            yield self._create(spec, path)
            change, spawned = "new", True
        else:
            # A running service restarted within runsv's pause gets a whole
            # new directory (_replaceRunsv): no need to write this one first.
            before = readStatus(path) if runsvAlive(path) else None
            replacing = (before is not None and before.state == RUN
                         and inPause(before, self._reactor.seconds())
                         and (restart or (spec.signature is not None
                                          and startedSignature(path) != record)))
            try:
                if replacing:
                    change = "changed" if _differs(spec, path) else "same"
                else:
                    change = yield self._inThread(self._define, spec)
            except OSError as e:
                raise SupervisorError("could not write service directory %s: %s"
                                      % (path, e))
        if change == "changed":
            _resetRestarts(path)
        # A deploy does not wait out a crash loop's delay, whether its
        # definition changed or not (a new install behind the same
        # ``current`` link keeps it the same).
        _endFinishWait(path)
        spawned = (yield self._ensureRunsv(spec.name, path, spec.restartTimeout)) or spawned
        before = readStatus(path)
        # (A runsv just started runs the definition just written.)
        stale = (not spawned and spec.signature is not None and before is not None
                 and before.state == RUN and startedSignature(path) != record)
        if stale:
            log.info("restarting {service}: its process was started from another "
                     "definition", service=spec.name, event="service-restart")
        if replacing or ((restart or stale) and before is not None and before.state != DOWN):
            # (Replacing, this directory still holds the old definition:
            # replaced whatever its state is now.)
            if replacing or inPause(before, self._reactor.seconds()):
                yield self._replaceRunsv(spec, path)
                spawned = True  # a fresh runsv, running the definition just written
            else:
                yield self._stopRunning(spec.name, path, spec.restartTimeout)
            before = readStatus(path)
        self._discardPrepared(spec.name)  # (unless the replacement took it)
        running = before is not None and before.state == RUN
        fresh = spawned or not running
        if spec.restartPolicy == "never":
            if not (running and before.want == "d"):
                yield self._command("once", path)
        elif not (running and before.want == "u"):
            yield self._command("up", path)

        def started():
            now = readStatus(path)
            if now is None:
                return False
            if fresh and startedSignature(path) != record:
                return False  # a new process, not past its first line yet
            if now.state == RUN and now.pid:
                return True
            return (spec.restartPolicy == "never" and before is not None
                    and now.stamp != before.stamp)

        remaining = max(0.0, deadline - self._reactor.seconds())
        if not (yield waitUntil(self._reactor, started, remaining, first=_FIRST_LOOK)):
            raise SupervisorError(
                "service %s did not start within %.1fs; see %s"
                % (spec.name, spec.restartTimeout,
                   os.path.join(path, "log", "main", "current")))
        self._noteLatency(self._reactor.seconds() - began)
        log.info("service {service} up ({change} definition)",
                 service=spec.name, change=change, event="service-start")
        return self._status(spec.name)

    @defer.inlineCallbacks
    def _replaceRunsv(self, spec, path):
        """
        Restart a service that started less than L{RUNSV_PAUSE} ago with a
        new runsv: the old one, once its service is down, would sleep out its
        pause before starting it again.  The service is stopped as L{stop}
        does; meanwhile a fresh directory is built and its runsv (and svlogd)
        started, holding the service down (L{_build}'s C{held}).  Once the
        old process group is gone, the old directory (and its runsv, which
        works relative to it) moves aside and is told to exit, the fresh one
        takes the name and is told C{up}; the old directory's logs move into
        the new one's log directory once its runsv is gone (L{_retire}).
        """
        name = spec.name
        timeout = spec.restartTimeout
        prepared = self._prepared.get(name)
        if prepared is not None and not (prepared[1] == spec and runsvAlive(prepared[0])):
            self._discardPrepared(name)
            prepared = None
        # The stop is under way (signalled) when this returns.
        stopping = self._stopRunning(name, path, timeout, retiring=True)
        previous = self._children.get(name)
        try:
            if prepared is not None:
                del self._prepared[name]
                new, _, child = prepared
                if child is not None:
                    self._children[name] = child
            else:
                new = yield self._inThread(self._build, spec, False, True)
                yield self._startBuilt(spec, new)
        except BaseException as e:
            self._restoreChild(name, previous)
            yield stopping
            if isinstance(e, OSError):
                raise SupervisorError("could not write service directory %s: %s" % (path, e))
            raise
        try:
            yield stopping
            old = os.path.join(self._layout.serviceDir, ".%s.removed-%s" % (name, _suffix()))
            try:
                os.rename(path, old)
            except OSError as e:
                raise SupervisorError("could not move service directory %s aside: %s"
                                      % (path, e))
        except BaseException:
            yield self._discard(name, new, timeout)
            self._restoreChild(name, previous)
            raise
        if previous is not None:
            previous.expected = True
        # The crash-loop counters the finish script keeps stay with the
        # service, as across any other restart; the old finish may still be
        # recording this stop's exit: L{_retire} carries that over.
        kept = None
        try:
            kept = _readRestartsFile(old)
            if kept is not None:
                _writeRestartsFile(new, kept)
        except OSError:
            log.failure("could not keep the restart counters of {service}", service=name)
        try:
            self._place(new, path)
        except OSError as e:
            yield self._discard(name, new, timeout)
            raise SupervisorError("could not write service directory %s: %s" % (path, e))
        try:
            if spec.restartPolicy != "never":
                yield self._command("up", path)
                try:
                    os.unlink(os.path.join(path, "down"))
                except FileNotFoundError:
                    pass
            log.info("replacing runsv for {service}: it started less than {pause}s ago, and "
                     "runsv would pause that long before starting it again", service=name,
                     pause=RUNSV_PAUSE, event="runsv-replace")
        finally:
            # Whether the new runsv took the service up or not, the old one
            # (its service down) has nothing left to do.
            try:
                yield self._command("exit", old)
            except SupervisorError:
                log.failure("could not tell the replaced runsv of {service} to exit",
                            service=name)
            retiring = self._retire(name, old, path, kept)
            self._retiring.add(retiring)
            retiring.addBoth(lambda _: self._retiring.discard(retiring))

    def _restoreChild(self, name, previous):
        """
        After a new runsv for C{name} failed to take over: the one started
        before (C{previous}, or none) is again the one supervising it.
        """
        if previous is None:
            self._children.pop(name, None)
        else:
            self._children[name] = previous

    @defer.inlineCallbacks
    def _retire(self, name, old, path, kept=None):
        """
        Once the runsv (and svlogd) of the moved-aside directory C{old} have
        exited, move its log files into C{path}'s log directory (its
        C{current} as a rotated file, named by its last change) and delete it.
        Never fails: problems are logged.

        @param kept: the C{p2-restarts} text copied into C{path} (C{None}:
            none was): when the old C{finish} recorded the stop's exit after
            that copy, its record replaces the copy, unless the new run's
            own C{finish} has written one since.
        """
        try:
            gone = yield waitUntil(
                self._reactor,
                lambda: not runsvAlive(old) and not runsvAlive(os.path.join(old, "log")),
                RUNSV_PAUSE + KILL_GRACE, interval=_EXIT_POLL, first=_FIRST_LOOK)
            if not gone:
                log.warn("replaced runsv of {service} did not exit; left in {path}",
                         service=name, path=old, event="runsv-replace-stuck")
                return
            final = _readRestartsFile(old)
            if final is not None and final != kept and _readRestartsFile(path) == kept \
                    and os.path.isdir(path):  # (not removed meanwhile)
                _writeRestartsFile(path, final)
            yield self._inThread(self._clean, old, path)
        except FileNotFoundError:
            pass  # removed meanwhile (the state directory with it): nothing left to clean
        except Exception:
            log.failure("could not clean up {path}, the replaced directory of {service}",
                        path=old, service=name)

    @staticmethod
    def _clean(old, path):
        """
        In a thread: move the logs of the replaced directory C{old} into
        C{path}'s, then delete it.
        """
        keepLogs(os.path.join(old, "log", "main"), os.path.join(path, "log", "main"))
        shutil.rmtree(old)

    def _noteLatency(self, seconds):
        self.startLatencies.append(seconds)
        del self.startLatencies[:-100]

    @defer.inlineCallbacks
    def _stop(self, name, timeout):
        self._discardPrepared(name)
        path = self._layout.service(name)
        if not os.path.isdir(path) or not runsvAlive(path):
            return
        yield self._stopRunning(name, path, timeout)
        log.info("service {service} stopped", service=name, event="service-stop")

    @defer.inlineCallbacks
    def _stopRunning(self, name, path, timeout, retiring=False):
        """
        C{sv down}, then TERM/KILL the process group of the pid runsv ran
        before and after the command, until runsv reports it down.

        @param retiring: this runsv is about to be told to exit (its
            directory moves aside): the service counts as down once its
            process group is gone and runsv has reaped it (state C{finish}),
            without waiting for the C{finish} script, which runs on in the
            moved-aside directory (and, the service wanted down, only
            records the exit).
        """
        def isDown():
            now = readStatus(path)
            return (now is None or now.state == DOWN or not runsvAlive(path)
                    or (retiring and now.state == FINISH))

        def wantsDown():
            now = readStatus(path)
            return now is None or now.want == "d" or not runsvAlive(path)

        before = readStatus(path)
        yield self._command("down", path)
        # sv does not wait for runsv to read the command: a process that ends
        # before then would be counted a restart (and finish would wait).
        yield waitUntil(self._reactor, wantsDown, timeout, first=_FIRST_LOOK)
        after = readStatus(path)
        pids = []
        for st in (before, after):
            if st is not None and st.state == RUN and st.pid and st.pid not in pids:
                pids.append(st.pid)
        for pid in pids:
            yield terminate(self._reactor, pid, leadsGroup(pid), timeout,
                            isDown, what="service %s" % (name,))
        now = readStatus(path)
        if now is not None and now.state == FINISH and now.pid and not (retiring and pids):
            # finish waiting out a crash loop's delay: end the wait.  (Not
            # after this stop when retiring: that finish, run after the
            # service was wanted down, only records the exit.)
            yield terminate(self._reactor, now.pid, False, timeout, isDown,
                            what="finish of service %s" % (name,))
        if not pids and not (yield waitUntil(self._reactor, isDown, timeout + KILL_GRACE)):
            raise SupervisorError("service %s did not go down within %.1fs"
                                  % (name, timeout + KILL_GRACE))

    @defer.inlineCallbacks
    def _remove(self, name, timeout):
        self._discardPrepared(name)
        path = self._layout.service(name)
        if not os.path.isdir(path):
            return
        if runsvAlive(path):
            yield self._stopRunning(name, path, timeout)
            if name in self._children:
                self._children[name].expected = True
            yield self._command("exit", path)
            logPath = os.path.join(path, "log")
            gone = yield waitUntil(
                self._reactor,
                lambda: not runsvAlive(path) and not runsvAlive(logPath),
                KILL_GRACE, interval=_EXIT_POLL, first=_FIRST_LOOK)
            if not gone:
                raise SupervisorError(
                    "runsv for service %s did not exit within %.0fs of "
                    "'sv exit'" % (name, KILL_GRACE))
        trash = os.path.join(self._layout.serviceDir,
                             ".%s.removed-%s" % (name, _suffix()))
        os.rename(path, trash)
        yield self._inThread(shutil.rmtree, trash)
        log.info("service {service} removed", service=name, event="service-remove")
