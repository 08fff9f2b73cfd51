"""
The runit supervisor, against real runsv and sv: services come up, survive the
agent, are adopted, restarted, stopped with their whole process group and
removed without leaving a process behind.
"""

import os
import shutil
import signal
import sys
import time

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from p2twisted.agent.interfaces import ServiceSpec
from p2twisted.agent.supervisors import MAX_RESTART_DELAY, crashLoop, crashLoopText
from p2twisted.agent.supervisors.runit import (
    DOWN, FINISH, FINISH_SCRIPT, RESTARTS_FILE, RUN, RUNSV_PAUSE, RunitSupervisor,
    RunsvStatus, inPause, keepLogs, parseStatus, readStatus, runScript, runsvAlive,
    sendControl, serviceFiles, tai64nLabel)
from p2twisted.errors import SupervisorError
from tests.servers import requireServer
from tests.test_supervisors import (
    ProcessTestMixin, alive, processesUnder, readPids, runsvFor, waitFor)

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A stand-in agent: starts one service under runit, prints its pid, waits
#: to be killed.
AGENT = """
import sys
from twisted.internet import defer, task
from p2twisted.agent.interfaces import ServiceSpec
from p2twisted.agent.layout import StateLayout
from p2twisted.agent.supervisors.runit import RunitSupervisor

@defer.inlineCallbacks
def main(reactor, stateDir, script):
    sup = RunitSupervisor(StateLayout(stateDir), reactor)
    status = yield sup.start(ServiceSpec("svc", ["setsid", "sh", "-c", script]))
    sys.stdout.write("%d\\n" % (status.pid,))
    sys.stdout.flush()
    yield defer.Deferred()

task.react(main, sys.argv[1:])
"""


def _text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _words(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


class _FirstLine(protocol.ProcessProtocol):

    def __init__(self):
        self.line = defer.Deferred()
        self.ended = defer.Deferred()
        self.out = b""
        self.err = b""

    def outReceived(self, data):
        self.out += data
        if b"\n" in self.out and not self.line.called:
            self.line.callback(self.out.split(b"\n")[0].decode())

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        if not self.line.called:
            self.line.errback(AssertionError("agent ended: %s" % (self.err.decode(),)))
        self.ended.callback(None)


class ScriptTests(unittest.SynchronousTestCase):
    """
    The service directory's scripts and runsv's status format.
    """

    def test_runScript(self):
        """
        The C{run} script joins stderr to stdout, records the spec's
        signature (C{-} for none), exports the environment (standard C{PATH}
        plus C{spec.env}) and execs the shell-quoted argv.
        """
        spec = ServiceSpec("p__l__launch", ["/bin/echo", "a b", "it's", "$HOME"],
                           env={"GREETING": "hello world"})
        self.assertEqual(runScript(spec), (
            "#!/bin/sh\n"
            "# p__l__launch: written by the p2 agent; replaced on each deploy.\n"
            "exec 2>&1\n"
            "echo - >signature\n"
            "GREETING='hello world'; export GREETING\n"
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH\n"
            "exec /bin/echo 'a b' 'it'\"'\"'s' '$HOME'\n"))

    def test_runScriptShellArgv(self):
        """
        An argv C{/bin/sh -c SCRIPT NAME ARGS...} is run by the C{run}
        script's own shell: C{ARGS} become its arguments, then C{SCRIPT}
        runs.  One that looks at C{$0} is exec'd as any other.
        """
        spec = ServiceSpec("p__l__launch", ["/bin/sh", "-c", 'umask 022 && exec "$@"',
                                            "p2-start", "/bin/echo", "a b"], env={})
        self.assertTrue(runScript(spec).endswith(
            "\nset -- /bin/echo 'a b'\n"
            'umask 022 && exec "$@"\n'))
        spec = ServiceSpec("p__l__launch", ["/bin/sh", "-c", 'echo $0 "$@"', "p2-start"])
        self.assertTrue(runScript(spec).endswith(
            "\nexec /bin/sh -c 'echo $0 \"$@\"' p2-start\n"))

    def test_runScriptSignature(self):
        """
        A spec's signature is written, quoted, to the file C{signature}.
        """
        script = runScript(ServiceSpec("x", ["true"], signature="ab c"))
        self.assertIn("\necho 'ab c' >signature\n", script)

    def test_serviceFiles(self):
        """
        A service has C{run}, a C{finish} that counts restarts and a
        C{log/run} that runs svlogd on C{./main}.
        """
        files = serviceFiles(ServiceSpec("x", ["true"]))
        self.assertEqual(sorted(files), ["finish", "log/run", "run"])
        self.assertEqual(files["finish"], FINISH_SCRIPT)
        self.assertTrue(files["log/run"].endswith("exec svlogd -tt ./main\n"))

    def runFinish(self, directory, ranFor, want="u", args=("3", "0")):
        """
        Run the C{finish} script as runsv would after a run of C{ranFor}
        seconds, with a C{sleep} that only records how long it would wait.

        @return: the seconds it would have slept, or C{None}.
        """
        import struct
        import subprocess
        import time
        from p2twisted.agent.supervisors.runit import _TAI_EPOCH
        os.makedirs(os.path.join(directory, "supervise"), exist_ok=True)
        bin = os.path.join(directory, "bin")
        if not os.path.isdir(bin):
            os.mkdir(bin)
            with open(os.path.join(bin, "sleep"), "w") as f:
                f.write("#!/bin/sh\necho $1 > slept\n")
            os.chmod(os.path.join(bin, "sleep"), 0o755)
            with open(os.path.join(directory, "finish"), "w") as f:
                f.write(FINISH_SCRIPT)
        started = int(time.time()) - ranFor
        with open(os.path.join(directory, "supervise", "status"), "wb") as f:
            f.write(struct.pack(">QL", _TAI_EPOCH + started, 0) + struct.pack("<L", 99)
                    + bytes([0, ord(want), 0, FINISH]))
        slept = os.path.join(directory, "slept")
        if os.path.exists(slept):
            os.unlink(slept)
        subprocess.check_call(["/bin/sh", "finish"] + list(args), cwd=directory,
                              env={"PATH": bin + ":/usr/bin:/bin"})
        if not os.path.exists(slept):
            return None
        with open(slept) as f:
            return int(f.read())

    def test_finishBacksOff(self):
        """
        C{finish} waits 1 s after a quick exit, doubling at each quick exit
        in a row up to 60 s; a run of C{MIN_UPTIME} resets it; an exit while
        the service is wanted down (stopped on purpose) is not a restart.
        """
        from p2twisted.agent.supervisors.runit import readRestarts
        directory = os.path.abspath(self.mktemp())
        waits = [self.runFinish(directory, 0) for _ in range(8)]
        self.assertEqual(waits, [1, 2, 4, 8, 16, 32, 60, 60])
        counts = readRestarts(directory)
        self.assertEqual((counts["restarts"], counts["quickExits"], counts["restartDelay"],
                          counts["lastExit"]), (8, 8, 60.0, "exit 3"))
        self.assertIsNone(self.runFinish(directory, 100, args=("-1", "11")))
        counts = readRestarts(directory)
        self.assertEqual((counts["restarts"], counts["quickExits"], counts["lastExit"]),
                         (9, 0, "killed by SIGSEGV"))
        self.assertIsNone(counts["loopingSince"])
        self.assertEqual(self.runFinish(directory, 0), 1)
        self.assertIsNone(self.runFinish(directory, 0, want="d", args=("-1", "15")))
        counts = readRestarts(directory)
        self.assertEqual((counts["restarts"], counts["quickExits"], counts["lastExit"]),
                         (10, 1, "killed by SIGTERM"))

    def test_parseStatus(self):
        """
        C{supervise/status} is a TAI64N stamp, a little-endian pid, paused,
        want, term and state bytes.
        """
        data = bytes.fromhex("400000006b02333310a5e4ec0b24000000750001")
        status = parseStatus(data)
        self.assertEqual(status.pid, 9227)
        self.assertEqual(status.want, "u")
        self.assertEqual(status.state, RUN)
        self.assertFalse(status.paused)
        self.assertAlmostEqual(status.stamp, 0x6b023333 - 10 + 0x10a5e4ec / 1e9)
        self.assertRaises(ValueError, parseStatus, data[:18])


class PauseTests(unittest.SynchronousTestCase):
    """
    Telling when runsv would pause, and keeping a replaced directory's logs.
    """

    def status(self, stamp, state=RUN):
        return RunsvStatus(stamp=stamp, pid=1, paused=False, want="u", term=False, state=state)

    def test_inPause(self):
        """
        Only a service running for less than L{RUNSV_PAUSE} is in the pause
        window.
        """
        self.assertTrue(inPause(self.status(100.0), 100.0 + RUNSV_PAUSE - 0.01))
        self.assertFalse(inPause(self.status(100.0), 100.0 + RUNSV_PAUSE))
        self.assertFalse(inPause(self.status(100.0, state=DOWN), 100.5))

    def test_tai64nLabel(self):
        """
        A rotated file's name is svlogd's: C{@}, 24 hex digits of TAI64N,
        C{.s}; names sort by time.
        """
        self.assertEqual(tai64nLabel(0.5), "@400000000000000a1dcd6500.s")
        self.assertLess(tai64nLabel(1000.0), tai64nLabel(1000.25))

    def test_keepLogs(self):
        """
        Rotated files move under their names, C{current} under a rotated
        name, svlogd's own files and an empty C{current} stay.
        """
        source, target = self.mktemp(), self.mktemp()
        os.makedirs(source)
        os.makedirs(target)
        for name, text in (("current", "last"), ("@400000000000000a00000000.s", "older"),
                           ("lock", ""), ("state", "x")):
            with open(os.path.join(source, name), "w") as f:
                f.write(text)
        os.utime(os.path.join(source, "current"), (0.5, 0.5))
        keepLogs(source, target)
        self.assertEqual(sorted(os.listdir(target)),
                         ["@400000000000000a00000000.s", "@400000000000000a1dcd6500.s"])
        self.assertEqual(sorted(os.listdir(source)), ["lock", "state"])
        with open(os.path.join(target, "@400000000000000a1dcd6500.s")) as f:
            self.assertEqual(f.read(), "last")


class RunitTests(ProcessTestMixin, unittest.TestCase):
    """
    L{RunitSupervisor} with real runit.
    """

    def setUp(self):
        missing = [p for p in ("runsv", "sv", "svlogd", "setsid") if not shutil.which(p)]
        if missing:
            requireServer("runit", "%s not on PATH" % (", ".join(missing),),
                          install="apt-get install runit")
        self.makeStateDir()
        self.sup = RunitSupervisor(self.layout, reactor)
        self.path = self.layout.service("svc")
        self.addCleanup(self.removeAll)

    @defer.inlineCallbacks
    def removeAll(self):
        """
        Remove every service the test left (their runsv and svlogd exit),
        and wait for the runsvs of restarts within the pause to exit.
        """
        for name in (yield self.sup.services()):
            yield self.sup.remove(name, 1.0)
        yield self.sup.close()

    def sleeper(self, **kwargs):
        """
        A service that appends its pid to C{pids}, says hello and sleeps.
        """
        return self.shell("echo $$ >> %s; echo hello from $$; exec sleep 1000"
                          % (self.pidFile(),), **kwargs)

    @defer.inlineCallbacks
    def test_start(self):
        """
        L{RunitSupervisor.start} writes the service directory, starts a runsv
        for it and fires with the running status and the service's pid.
        """
        status = yield self.sup.start(self.sleeper())
        self.assertTrue(status.running)
        self.assertTrue(status.wantUp)
        self.assertEqual([status.pid], (yield self.waitPids(1)))
        self.assertTrue(alive(status.pid))
        for rel in ("run", "finish", "log/run"):
            self.assertTrue(os.access(os.path.join(self.path, rel), os.X_OK), rel)
        self.assertTrue(os.path.isdir(os.path.join(self.path, "log", "main")))
        self.assertFalse(os.path.exists(os.path.join(self.path, "down")))
        self.assertEqual(len(runsvFor(self.path)), 1)
        self.assertEqual((yield self.sup.services()), ["svc"])
        self.assertEqual((yield self.sup.status("svc")).pid, status.pid)
        self.assertEqual(len(self.sup.startLatencies), 1)

    @defer.inlineCallbacks
    def test_prepared(self):
        """
        L{RunitSupervisor.prepare} writes the service directory and starts
        its runsv without starting the service; C{start} then brings it up
        with that runsv.  Preparing a service that exists changes nothing.
        """
        yield self.sup.prepare(self.sleeper())
        self.assertEqual(len(runsvFor(self.path)), 1)
        self.assertEqual((yield self.sup.services()), ["svc"])
        self.assertFalse((yield self.sup.status("svc")).running)
        self.assertFalse(os.path.exists(self.pidFile()))
        runsv = runsvFor(self.path)
        status = yield self.sup.start(self.sleeper())
        self.assertTrue(status.running)
        self.assertEqual([status.pid], (yield self.waitPids(1)))
        self.assertEqual(runsvFor(self.path), runsv)
        self.assertFalse(os.path.exists(os.path.join(self.path, "down")))
        yield self.sup.prepare(self.sleeper(signature="other"))
        self.assertEqual((yield self.sup.status("svc")).pid, status.pid)
        self.assertEqual((yield self.waitPids(1)), [status.pid])

    @defer.inlineCallbacks
    def test_preparedLeftByCrash(self):
        """
        A new service prepared by an agent stopped before it started it
        (killed during the install) is removed by the next agent: its runsv
        and svlogd exit and its directory goes, so a pod whose intent went
        meanwhile leaves nothing behind (a deploy still wanted prepares it
        again).  One started after its preparation is left alone.
        """
        yield self.sup.prepare(self.sleeper())
        left = processesUnder(self.path)

        def killLeft():
            for pid in left:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        self.addCleanup(killLeft)
        self.assertEqual(len(left), 2, "runsv and svlogd")
        successor = RunitSupervisor(self.layout, reactor)
        yield successor.close()
        self.assertEqual([pid for pid in left if alive(pid)], [])
        self.assertEqual((yield successor.services()), [])
        self.assertFalse(os.path.exists(self.pidFile()))

        yield successor.prepare(self.sleeper())
        status = yield successor.start(self.sleeper())
        again = RunitSupervisor(self.layout, reactor)
        yield again.close()
        self.assertEqual((yield again.status("svc")).pid, status.pid)
        self.assertEqual((yield self.waitPids(1)), [status.pid])

    @defer.inlineCallbacks
    def test_unprepareNew(self):
        """
        C{unprepare} removes a new service prepared and never started (by
        this agent or, L{test_preparedLeftByCrash}, one before it): its runsv
        and svlogd exit.  A started one stays.
        """
        yield self.sup.prepare(self.sleeper())
        left = processesUnder(self.path)
        self.assertEqual(len(left), 2, "runsv and svlogd")
        yield self.sup.unprepare("svc")
        self.assertEqual((yield self.sup.services()), [])
        self.assertEqual([pid for pid in left if alive(pid)], [])
        yield self.sup.prepare(self.sleeper())
        status = yield self.sup.start(self.sleeper())
        yield self.sup.unprepare("svc")
        self.assertEqual((yield self.sup.status("svc")).pid, status.pid)

    @defer.inlineCallbacks
    def test_preparedReplacement(self):
        """
        Preparing a new definition of a service that started less than
        runsv's pause ago makes the new directory and runsv beside it (the
        service keeps running); the restart then takes that runsv over.
        C{unprepare} discards such a preparation, leaving the service alone.
        """
        first = yield self.sup.start(self.sleeper(signature="sha-1"))
        yield self.waitPids(1)
        yield self.sup.prepare(self.sleeper(signature="sha-2"))
        prepared = [n for n in os.listdir(self.layout.serviceDir) if ".new-" in n]
        self.assertEqual(len(prepared), 1)
        runsv = runsvFor(os.path.join(self.layout.serviceDir, prepared[0]))
        self.assertEqual(len(runsv), 1)
        self.assertEqual((yield self.sup.status("svc")).pid, first.pid)
        second = yield self.sup.start(self.sleeper(signature="sha-2"))
        self.assertEqual((yield self.waitPids(2)), [first.pid, second.pid])
        self.assertEqual(runsvFor(self.path), runsv)
        yield self.sup.prepare(self.sleeper(signature="sha-3"))
        yield self.sup.unprepare("svc")
        yield self.sup.close()
        self.assertEqual([n for n in os.listdir(self.layout.serviceDir) if ".new-" in n], [])
        self.assertEqual((yield self.sup.status("svc")).pid, second.pid)
        self.assertEqual(runsvFor(self.path), runsv)

    @defer.inlineCallbacks
    def test_startAgain(self):
        """
        Starting a running service with the same spec leaves it alone.
        """
        first = yield self.sup.start(self.sleeper())
        second = yield self.sup.start(self.sleeper())
        self.assertEqual(first.pid, second.pid)
        self.assertEqual((yield self.waitPids(1)), [first.pid])
        self.assertEqual(len(runsvFor(self.path)), 1)

    @defer.inlineCallbacks
    def test_restart(self):
        """
        C{restart=True} stops the running process and starts a new one.
        """
        first = yield self.sup.start(self.sleeper())
        yield self.waitPids(1)
        second = yield self.sup.start(self.sleeper(), restart=True)
        self.assertNotEqual(first.pid, second.pid)
        self.assertTrue(second.running)
        self.assertFalse(alive(first.pid))
        self.assertEqual((yield self.waitPids(2)), [first.pid, second.pid])

    @defer.inlineCallbacks
    def test_restartWithinPause(self):
        """
        A restart less than a second after the service started (when its
        runsv would sleep out its pause before starting it again) is done by a
        new runsv in a new directory; the first run's output is kept in the
        log directory as a rotated file, and the old directory goes away.
        """
        first = yield self.sup.start(self.sleeper())
        main = os.path.join(self.path, "log", "main")
        current = os.path.join(main, "current")
        yield waitFor(lambda: "hello from %d" % (first.pid,) in _text(current),
                      what="first run's output")
        self.assertTrue(inPause(readStatus(self.path), reactor.seconds()))
        oldRunsv = runsvFor(self.path)
        second = yield self.sup.start(self.sleeper(), restart=True)
        self.assertTrue(second.running)
        self.assertFalse(alive(first.pid))
        yield waitFor(lambda: "hello from %d" % (second.pid,) in _text(current),
                      what="second run's output")
        yield self.sup.close()
        self.assertEqual(os.listdir(self.layout.serviceDir), ["svc"])
        self.assertEqual(len(runsvFor(self.path)), 1)
        self.assertNotEqual(runsvFor(self.path), oldRunsv)
        rotated = [n for n in os.listdir(main) if n.startswith("@")]
        self.assertEqual(len(rotated), 1)
        self.assertIn("hello from %d" % (first.pid,), _text(os.path.join(main, rotated[0])))
        self.assertNotIn("hello from %d" % (first.pid,), _text(current))

    @defer.inlineCallbacks
    def test_restartWithinPauseNoOverlap(self):
        """
        The new runsv of a restart within the pause starts before the old
        run is stopped, but holds its service down until the old process
        group is gone: the two versions never run at once, and the new one
        runs from then on (also across a later restart of its runsv: no
        C{down} file is left).
        """
        out, pids = self.pidFile("out"), self.pidFile()
        script = ("for pid in $(cat %s 2>/dev/null); do kill -0 $pid 2>/dev/null && "
                  "echo overlap $pid >> %s; done; echo $$ >> %s; exec sleep 1000"
                  % (pids, out, pids))
        yield self.sup.start(self.shell(script))
        yield self.waitPids(1)
        self.assertTrue(inPause(readStatus(self.path), reactor.seconds()))
        second = yield self.sup.start(self.shell(script), restart=True)
        self.assertTrue(second.running)
        yield self.waitPids(2)
        self.assertEqual(_words(out), [])
        self.assertFalse(os.path.exists(os.path.join(self.path, "down")))
        yield self.sup.close()

    @defer.inlineCallbacks
    def test_withoutEnvChdir(self):
        """
        Where C{env} cannot start a program in another directory (no GNU
        coreutils), the runsv of a new directory is started on its dot name:
        services still start, and restart within the pause.
        """
        self.sup._chdir = None
        first = yield self.sup.start(self.sleeper())
        self.assertTrue(first.running)
        second = yield self.sup.start(self.sleeper(), restart=True)
        self.assertTrue(second.running)
        self.assertFalse(alive(first.pid))
        yield self.sup.close()
        self.assertEqual(os.listdir(self.layout.serviceDir), ["svc"])

    @defer.inlineCallbacks
    def test_newRunsvLeftByCrash(self):
        """
        An agent stopped after starting the runsv of a new service directory
        but before renaming it into place (its service running there) leaves
        them running under the dot name: the next agent stops that service,
        tells the runsv to exit and deletes the directory, so the service
        it starts does not run beside a copy nobody supervises.
        """
        first = yield self.sup.start(self.sleeper())
        left = os.path.join(self.layout.serviceDir, ".svc.new-crashed")
        os.rename(self.path, left)
        processes = processesUnder(left)

        def killLeft():
            for pid in processes:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        self.addCleanup(killLeft)
        self.assertTrue(alive(first.pid))
        successor = RunitSupervisor(self.layout, reactor)
        yield successor.close()
        self.assertFalse(alive(first.pid))
        self.assertEqual([pid for pid in processes if alive(pid)], [])
        self.assertFalse(os.path.exists(left))

    @defer.inlineCallbacks
    def test_replacementRunsvGoneBeforeUp(self):
        """
        When the new runsv of a restart within the pause is gone before it
        is told C{up} (killed), the restart fails, and the replaced runsv
        (and its svlogd) still exit and their directory goes: they do not
        idle beside the service until the next agent.
        """
        first = yield self.sup.start(self.sleeper())
        self.assertTrue(inPause(readStatus(self.path), reactor.seconds()))
        oldRunsv = runsvFor(self.path)
        command = self.sup._command

        def killedFirst(name, path):
            if name == "up":
                for pid in runsvFor(path):
                    os.kill(pid, signal.SIGKILL)
                return defer.fail(SupervisorError("no runsv for %s" % (path,)))
            return command(name, path)
        self.patch(self.sup, "_command", killedFirst)
        with self.assertRaises(SupervisorError):
            yield self.sup.start(self.sleeper(), restart=True)
        self.assertFalse(alive(first.pid))
        yield self.sup.close()
        self.assertEqual([pid for pid in oldRunsv if alive(pid)], [])
        self.assertEqual(os.listdir(self.layout.serviceDir), ["svc"])

    @defer.inlineCallbacks
    def test_restartWithinPauseSkipsFinish(self):
        """
        A restart within the pause does not wait for the old run's C{finish}
        script: the new run starts once the old process group is gone, while
        the moved-aside runsv still runs C{finish}; the old directory goes
        once that ends.
        """
        from p2twisted.agent.supervisors import runit
        slow = self.pidFile("slow-finish")
        self.patch(runit, "FINISH_SCRIPT",
                   "#!/bin/sh\n[ -e %s ] && exec sleep 30\nexit 0\n" % (slow,))
        # (A start that waited for the old finish, 30 s, would still fail:
        # 10 s leaves room for a slow flush of the new directory under load.)
        first = yield self.sup.start(self.sleeper(restartTimeout=10.0))
        with open(slow, "w"):
            pass
        second = yield self.sup.start(self.sleeper(restartTimeout=10.0), restart=True)
        self.assertTrue(second.running)
        self.assertFalse(alive(first.pid))
        old = [os.path.join(self.layout.serviceDir, n) for n in os.listdir(self.layout.serviceDir)
               if n.startswith(".svc.removed-")]
        self.assertEqual(len(old), 1)
        status = readStatus(old[0])
        self.assertEqual((status.state, status.want), (FINISH, "d"))
        self.assertTrue(alive(status.pid))
        # Cut the old finish short (it would end on its own 30 s later).
        os.unlink(slow)
        os.kill(status.pid, signal.SIGTERM)
        yield self.sup.close()
        self.assertEqual(os.listdir(self.layout.serviceDir), ["svc"])

    @defer.inlineCallbacks
    def test_shellArgv(self):
        """
        A service started as C{/bin/sh -c SCRIPT NAME ARGS...} runs
        C{SCRIPT} with C{ARGS} as its arguments.
        """
        out = self.pidFile("out")
        spec = ServiceSpec("svc", [
            "/bin/sh", "-c", 'umask 027 && exec "$@"', "p2-start", "setsid", "sh", "-c",
            'umask > %s; echo "$1" >> %s; exec sleep 1000' % (out, out), "inner", "a b"],
            env={"P2_TEST_ROOT": self.root})
        yield self.sup.start(spec)
        yield waitFor(lambda: _words(out) == ["0027", "a", "b"], what="the service's output")

    @defer.inlineCallbacks
    def test_flushOutsideReactor(self):
        """
        A new service directory is flushed to disk (C{syncfs}, which waits
        for every write to the filesystem) outside the reactor's thread, for
        a new service and for one replaced within runsv's pause.
        """
        import threading
        from p2twisted.agent.supervisors import runit
        flushed = []
        original = runit.syncFilesystem

        def syncFilesystem(path):
            flushed.append(threading.current_thread() is threading.main_thread())
            return original(path)
        self.patch(runit, "syncFilesystem", syncFilesystem)
        yield self.sup.start(self.sleeper())
        self.assertTrue(inPause(readStatus(self.path), reactor.seconds()))
        yield self.sup.start(self.sleeper(), restart=True)
        yield self.sup.close()  # the replaced directory cleaned up
        self.assertEqual(flushed, [False, False])

    @defer.inlineCallbacks
    def test_restartWithinPauseKeepsCounters(self):
        """
        A restart by a new runsv keeps the service's crash-loop counters
        (C{p2-restarts}), as a restart by the same runsv does.
        """
        yield self.sup.start(self.sleeper())
        with open(os.path.join(self.path, "p2-restarts"), "w") as f:
            f.write("5 0 0 0 3 0 0 0\n")
        self.assertTrue(inPause(readStatus(self.path), reactor.seconds()))
        oldRunsv = runsvFor(self.path)
        yield self.sup.start(self.sleeper(), restart=True)
        self.assertNotEqual(runsvFor(self.path), oldRunsv)
        status = yield self.sup.status("svc")
        self.assertEqual(status.restarts, 5)

    @defer.inlineCallbacks
    def test_restartWithinPauseRecordsLastExit(self):
        """
        After a restart by a new runsv, the service's last exit is the
        replaced run's (its TERM), as after a restart by the same runsv, once
        the old C{finish} has recorded it.
        """
        yield self.sup.start(self.sleeper())
        with open(os.path.join(self.path, "p2-restarts"), "w") as f:
            f.write("5 0 0 0 3 0 0 0\n")
        self.assertTrue(inPause(readStatus(self.path), reactor.seconds()))
        yield self.sup.start(self.sleeper(), restart=True)
        yield self.sup.close()  # the replaced directory cleaned up
        status = yield self.sup.status("svc")
        self.assertEqual((status.restarts, status.lastExit), (5, "killed by SIGTERM"))

    @defer.inlineCallbacks
    def test_replacedRunsvLeftByCrash(self):
        """
        An agent stopped after moving a replaced service directory aside but
        before its runsv exited leaves that runsv (and its svlogd) running
        there: the next agent tells it to exit, keeps its logs in the
        service's log directory and deletes the directory, however old.
        """
        first = yield self.sup.start(self.sleeper())
        main = os.path.join(self.path, "log", "main")
        yield waitFor(lambda: "hello from %d" % (first.pid,) in _text(os.path.join(main, "current")),
                      what="first run's output")
        yield self.sup.stop("svc", 5.0)
        old = os.path.join(self.layout.serviceDir, ".svc.removed-crashed")
        os.rename(self.path, old)
        past = time.time() - 3600
        os.utime(old, (past, past))
        left = processesUnder(old)

        def killLeft():
            for pid in left:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        self.addCleanup(killLeft)
        self.assertEqual(len(left), 2, "runsv and svlogd")
        yield self.sup.start(self.sleeper())
        successor = RunitSupervisor(self.layout, reactor)
        yield successor.close()
        self.assertEqual([pid for pid in left if alive(pid)], [])
        self.assertFalse(os.path.exists(old))
        rotated = [n for n in os.listdir(main) if n.startswith("@")]
        self.assertEqual(len(rotated), 1)
        self.assertIn("hello from %d" % (first.pid,), _text(os.path.join(main, rotated[0])))

    @defer.inlineCallbacks
    def test_changedDefinition(self):
        """
        A changed spec replaces the scripts without touching the running
        process; with C{restart} the new definition runs.
        """
        v1 = self.shell("echo v1 >> %s; exec sleep 1000" % (self.pidFile("v"),))
        v2 = self.shell("echo v2 >> %s; exec sleep 1000" % (self.pidFile("v"),))
        first = yield self.sup.start(v1)
        yield waitFor(lambda: _words(self.pidFile("v")) == ["v1"], what="v1 to run")
        same = yield self.sup.start(v2)
        self.assertEqual(first.pid, same.pid)
        with open(os.path.join(self.path, "run")) as f:
            self.assertIn("echo v2", f.read())
        yield self.sup.start(v2, restart=True)
        yield waitFor(lambda: _words(self.pidFile("v")) == ["v1", "v2"],
                      what="v2 to run")
        self.assertEqual([n for n in os.listdir(self.path) if ".new-" in n], [])

    @defer.inlineCallbacks
    def test_signature(self):
        """
        A running service started from a spec of another signature is
        restarted by C{start} (its scripts are otherwise the same); the same
        signature leaves it alone, and so does a spec without signature.
        """
        first = yield self.sup.start(self.sleeper(signature="sha-1"))
        # Its pid written before it is stopped (else the file never has 2).
        yield self.waitPids(1)
        same = yield self.sup.start(self.sleeper(signature="sha-1"))
        self.assertEqual(same.pid, first.pid)
        second = yield self.sup.start(self.sleeper(signature="sha-2"))
        self.assertNotEqual(second.pid, first.pid)
        self.assertFalse(alive(first.pid))
        with open(os.path.join(self.path, "signature")) as f:
            self.assertEqual(f.read(), "sha-2\n")
        unsigned = yield self.sup.start(self.sleeper())
        self.assertEqual(unsigned.pid, second.pid)
        self.assertEqual((yield self.waitPids(2)), [first.pid, second.pid])

    @defer.inlineCallbacks
    def test_signatureAfterInterruptedDeploy(self):
        """
        A definition written by an agent that died before restarting the
        service (its C{run} script already new) still restarts the process
        still running from the old one: what runs is what counts.
        """
        first = yield self.sup.start(self.sleeper(signature="sha-1"))
        yield self.waitPids(1)  # written before it is stopped
        self.sup._define(self.sleeper(signature="sha-2"))
        successor = RunitSupervisor(self.layout, reactor)
        # (Its restart within the pause retires the old runsv in the
        # background: waited for, or the test could end before it does.)
        self.addCleanup(successor.close)
        again = yield successor.start(self.sleeper(signature="sha-2"))
        self.assertNotEqual(again.pid, first.pid)
        self.assertFalse(alive(first.pid))
        self.assertEqual((yield self.waitPids(2)), [first.pid, again.pid])

    @defer.inlineCallbacks
    def test_signatureUnknownFromOlderAgent(self):
        """
        A process whose C{run} script recorded no signature (started by an
        agent older than signatures) runs a definition nobody can vouch for:
        the first C{start} with a signature restarts it, once.  (An agent
        upgrade alone calls no C{start} for pods already in reality, so it
        restarts none of them.)
        """
        first = yield self.sup.start(self.sleeper(signature="sha-1"))
        self.assertEqual((yield self.waitPids(1)), [first.pid])
        os.unlink(os.path.join(self.path, "signature"))
        successor = RunitSupervisor(self.layout, reactor)
        self.addCleanup(successor.close)  # (as in test_signatureAfterInterruptedDeploy)
        again = yield successor.start(self.sleeper(signature="sha-1"))
        self.assertNotEqual(again.pid, first.pid)
        same = yield successor.start(self.sleeper(signature="sha-1"))
        self.assertEqual(same.pid, again.pid)
        self.assertEqual((yield self.waitPids(2)), [first.pid, again.pid])

    @defer.inlineCallbacks
    def test_crashRestarted(self):
        """
        A service killed outright is restarted by runsv: a new pid runs.
        """
        first = yield self.sup.start(self.sleeper())
        yield self.waitPids(1)
        os.kill(first.pid, signal.SIGKILL)

        def restarted():
            status = self.sup._status("svc")
            return status.running and status.pid != first.pid

        yield waitFor(restarted, what="runsv to restart the service")
        self.assertEqual((yield self.waitPids(2))[1], self.sup._status("svc").pid)

    @defer.inlineCallbacks
    def test_crashLoopCountedAndSlowed(self):
        """
        A service that exits at once is restarted ever more slowly (its
        C{finish} waits 1 s, then 2 s, 4 s ...), its status counts the
        restarts and says how it last exited, and stopping it ends the wait:
        nothing runs afterwards.
        """
        spec = self.shell("echo $$ >> %s; exit 3" % (self.pidFile(),), restartTimeout=1.0)
        try:
            yield self.sup.start(spec)
        except SupervisorError:
            pass  # it may have exited before it was seen running
        yield waitFor(lambda: self.sup._status("svc").quickExits >= 3, timeout=30,
                      what="three quick exits")
        status = self.sup._status("svc")
        self.assertEqual(status.lastExit, "exit 3")
        self.assertEqual(status.restartDelay,
                         min(MAX_RESTART_DELAY, 2 ** (status.quickExits - 1)))
        self.assertGreaterEqual(status.restarts, status.quickExits)
        loop = crashLoop(status, reactor.seconds())
        self.assertEqual(loop["restarts"], status.quickExits)
        self.assertTrue(crashLoopText(loop).startswith(
            "crash-looping (%d restarts in " % (status.quickExits,)))
        self.assertTrue(crashLoopText(loop).endswith(", last exit 3)"))
        # While finish waits out the delay, every run has been counted.
        yield waitFor(lambda: readStatus(self.path).state == FINISH, what="finish to wait")
        waiting = readStatus(self.path).pid
        self.assertEqual(len(_words(self.pidFile())), self.sup._status("svc").restarts)
        yield self.sup.stop("svc", 5.0)
        self.assertEqual(readStatus(self.path).state, DOWN)
        self.assertFalse(alive(waiting))
        runs = len(_words(self.pidFile()))
        self.assertFalse((yield self.sup.status("svc")).wantUp)
        self.assertEqual(len(_words(self.pidFile())), runs)

    @defer.inlineCallbacks
    def test_newDefinitionEndsCrashLoopWait(self):
        """
        A new definition of a crash-looping service starts at once, without
        waiting out the old one's delay, and without a restart.
        """
        spec = self.shell("echo $$ >> %s; exit 3" % (self.pidFile(),), restartTimeout=1.0)
        try:
            yield self.sup.start(spec)
        except SupervisorError:
            pass
        yield waitFor(lambda: self.sup._status("svc").restartDelay >= 4, timeout=30,
                      what="a 4 s delay")
        yield waitFor(lambda: readStatus(self.path).state == FINISH, what="finish to wait")
        status = yield self.sup.start(self.sleeper(restartTimeout=2.0))
        self.assertTrue(status.running)
        self.assertEqual(status.restarts, 0)

    @defer.inlineCallbacks
    def test_sameDefinitionEndsCrashLoopWait(self):
        """
        Starting a crash-looping service again with the same definition (a
        new install behind the same C{current} link, deployed with
        C{no_halt_on_update}) does not wait out its delay, even the longest.
        """
        flag = os.path.abspath(self.mktemp())
        spec = self.shell("echo $$ >> %s; [ -e %s ] && exec sleep 1000; exit 3"
                          % (self.pidFile(), flag), restartTimeout=3.0)
        open(flag, "w").close()
        yield self.sup.start(spec)
        pid = (yield self.waitPids(1))[0]
        # Five quick exits in a row so far: the next one waits the longest.
        with open(os.path.join(self.path, RESTARTS_FILE), "w") as f:
            f.write("5 5 %d 32 3 0 %d 0\n" % (time.time(), time.time()))
        os.unlink(flag)
        os.kill(pid, signal.SIGKILL)
        yield waitFor(lambda: self.sup._status("svc").restartDelay == MAX_RESTART_DELAY
                      and readStatus(self.path).state == FINISH, what="finish to wait 60 s")
        waiting = readStatus(self.path).pid
        open(flag, "w").close()  # the fixed version
        status = yield self.sup.start(spec)
        self.assertTrue(status.running)
        self.assertFalse(alive(waiting))

    @defer.inlineCallbacks
    def test_countsResetByNewDefinition(self):
        """
        A changed definition starts its restart counts afresh.
        """
        yield self.sup.start(self.sleeper())
        pid = (yield self.waitPids(1))[0]
        os.kill(pid, signal.SIGKILL)
        yield waitFor(lambda: self.sup._status("svc").restarts == 1, what="a restart counted")
        self.assertEqual(self.sup._status("svc").lastExit, "killed by SIGKILL")
        yield self.sup.start(self.sleeper(env={"V": "2"}), restart=True)
        self.assertEqual(self.sup._status("svc").restarts, 0)

    @defer.inlineCallbacks
    def test_policyNever(self):
        """
        Restart policy C{never} writes a C{down} file and runs the service
        once (C{sv once}): when it exits it stays down.  Starting it again runs
        it again.
        """
        spec = self.shell("echo $$ >> %s; exit 3" % (self.pidFile(),),
                          restartPolicy="never")
        yield self.sup.start(spec)
        self.assertTrue(os.path.exists(os.path.join(self.path, "down")))
        yield waitFor(lambda: readStatus(self.path).state == DOWN
                      and len(readPids(self.pidFile())) == 1, what="the run to end")
        status = yield self.sup.status("svc")
        self.assertFalse(status.running)
        self.assertFalse(status.wantUp)
        self.assertEqual(readStatus(self.path).want, "d")
        yield self.sup.start(spec)
        yield waitFor(lambda: len(readPids(self.pidFile())) == 2, what="a second run")

    @defer.inlineCallbacks
    def test_stopKillsGroup(self):
        """
        A service that ignores TERM, and the grandchild it forked, are both
        KILLed once the timeout passes; it stays down; stopping again is a
        no-op.
        """
        spec = self.shell(
            "trap '' TERM; sleep 1000 & echo $! > %s; echo $$ > %s; wait"
            % (self.pidFile("grandchild"), self.pidFile("leader")))
        status = yield self.sup.start(spec)
        yield waitFor(lambda: readPids(self.pidFile("grandchild")), what="the grandchild")
        grandchild, = readPids(self.pidFile("grandchild"))
        self.assertTrue(alive(grandchild))
        began = reactor.seconds()
        yield self.sup.stop("svc", 0.5)
        self.assertGreaterEqual(reactor.seconds() - began, 0.5)
        self.assertFalse(alive(status.pid))
        self.assertFalse(alive(grandchild))
        status = yield self.sup.status("svc")
        self.assertFalse(status.running)
        self.assertFalse(status.wantUp)
        yield self.sup.stop("svc", 0.5)
        yield self.sup.stop("unknown", 0.5)
        self.assertEqual(len(runsvFor(self.path)), 1)

    @defer.inlineCallbacks
    def test_stopThenStart(self):
        """
        A stopped service comes back up on L{RunitSupervisor.start}.
        """
        first = yield self.sup.start(self.sleeper())
        yield self.sup.stop("svc", 5)
        self.assertFalse(alive(first.pid))
        second = yield self.sup.start(self.sleeper())
        self.assertTrue(second.running)
        self.assertNotEqual(first.pid, second.pid)

    @defer.inlineCallbacks
    def test_adopt(self):
        """
        A new supervisor on the same state directory (an agent restart) finds
        the running service: same pid, no second runsv, and C{start} with the
        same spec does not restart it.
        """
        first = yield self.sup.start(self.sleeper())
        runsv = runsvFor(self.path)
        again = RunitSupervisor(self.layout, reactor)
        self.assertEqual((yield again.services()), ["svc"])
        self.assertEqual((yield again.status("svc")).pid, first.pid)
        status = yield again.start(self.sleeper())
        self.assertEqual(status.pid, first.pid)
        self.assertEqual(runsvFor(self.path), runsv)
        self.assertEqual((yield self.waitPids(1)), [first.pid])

    @defer.inlineCallbacks
    def test_survivesAgentKill(self):
        """
        A service started by an agent that is then SIGKILLed keeps running
        under its runsv, and the next agent adopts it without a restart.
        """
        script = "echo $$ >> %s; exec sleep 1000" % (self.pidFile(),)
        proto = _FirstLine()
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": HERE}
        agent = reactor.spawnProcess(
            proto, sys.executable,
            [sys.executable, "-c", AGENT, self.layout.stateDir, script], env=env)
        pid = int((yield proto.line))
        agent.signalProcess("KILL")
        yield proto.ended
        self.assertTrue(alive(pid))
        self.assertTrue(runsvAlive(self.path))
        runsv = runsvFor(self.path)
        self.assertEqual(len(runsv), 1)
        status = yield self.sup.start(ServiceSpec("svc", ["setsid", "sh", "-c", script]))
        self.assertEqual(status.pid, pid)
        self.assertEqual(runsvFor(self.path), runsv)
        yield self.sup.remove("svc", 5)
        self.assertFalse(alive(pid))
        self.assertEqual(runsvFor(self.path), [])

    @defer.inlineCallbacks
    def test_runsvKilled(self):
        """
        When a service's runsv is killed outright, the service reads as not
        running, and the next start stops the orphaned process before a new
        runsv starts one copy.
        """
        first = yield self.sup.start(self.sleeper())
        yield self.waitPids(1)
        runsv, = runsvFor(self.path)
        os.kill(runsv, signal.SIGKILL)
        yield waitFor(lambda: not runsvAlive(self.path), what="runsv to die")
        status = yield self.sup.status("svc")
        self.assertFalse(status.running)
        self.assertFalse(status.wantUp)
        second = yield self.sup.start(self.sleeper())
        self.assertNotEqual(second.pid, first.pid)
        self.assertFalse(alive(first.pid))
        self.assertEqual(len(runsvFor(self.path)), 1)

    @defer.inlineCallbacks
    def test_remove(self):
        """
        L{RunitSupervisor.remove} stops the service, ends its runsv and svlogd
        and deletes its directory; removing again is a no-op.
        """
        first = yield self.sup.start(self.sleeper())
        yield self.sup.remove("svc", 5)
        self.assertFalse(os.path.exists(self.path))
        self.assertFalse(alive(first.pid))
        self.assertEqual(runsvFor(self.path), [])
        yield waitFor(lambda: not os.listdir(self.layout.serviceDir),
                      what="the service directory to go")
        self.assertEqual((yield self.sup.services()), [])
        self.assertIsNone((yield self.sup.status("svc")))
        yield self.sup.remove("svc", 5)

    @defer.inlineCallbacks
    def test_log(self):
        """
        The service's stdout and stderr reach C{log/main/current} through
        svlogd, timestamped.
        """
        yield self.sup.start(self.shell(
            "echo to-stdout; echo to-stderr >&2; exec sleep 1000"))
        current = os.path.join(self.path, "log", "main", "current")

        def logged():
            try:
                with open(current) as f:
                    text = f.read()
            except FileNotFoundError:
                return False
            return "to-stdout" in text and "to-stderr" in text

        yield waitFor(logged, what="output in %s" % (current,))
        with open(current) as f:
            self.assertRegex(f.readline(), r"^\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\.\d+ to-")

    def test_commandWithoutRunsv(self):
        """
        A command for a directory no runsv reads fails with a
        L{SupervisorError} saying so (as sv would), without blocking.
        """
        os.makedirs(os.path.join(self.path, "supervise"))
        os.mkfifo(os.path.join(self.path, "supervise", "control"))
        self.assertRaises(OSError, sendControl, self.path, b"u")
        failure = self.failureResultOf(self.sup._command("up", self.path), SupervisorError)
        self.assertIn("supervise/control", str(failure.value))
        shutil.rmtree(self.path)

    def test_badSpec(self):
        """
        An invalid spec fails at once, before anything is written.
        """
        self.failureResultOf(self.sup.start(ServiceSpec("../x", ["true"])),
                             SupervisorError)
        self.failureResultOf(self.sup.stop("a/b", 1), SupervisorError)
        self.assertFalse(os.path.exists(self.layout.serviceDir))
