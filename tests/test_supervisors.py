"""
Both supervisors provide L{ISupervisor}; the config's C{supervisor:} picks
one; the helpers they share behave.  Also the process helpers the runit and
builtin integration tests use (no test case classes are imported from here).
"""

import os
import signal
import subprocess

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from p2twisted.agent.interfaces import ISupervisor, ServiceSpec
from p2twisted.agent.layout import StateLayout
from p2twisted.agent import supervisors
from p2twisted.agent.supervisors import (
    KIND_FILE, chooseKind, kindForState, makeSupervisor, waitUntil)
from p2twisted.agent.supervisors.builtin import BuiltinSupervisor
from p2twisted.agent.supervisors.runit import RunitSupervisor
from p2twisted.errors import SupervisorError, UsageError

# -- helpers for the integration tests ---------------------------------------

def alive(pid):
    """
    @return: whether C{pid} is a live (non-zombie) process.
    """
    return supervisors.processAlive(pid)


def _link(path):
    try:
        return os.readlink(path)
    except OSError:
        return ""


def processesUnder(root):
    """
    @return: the live processes (other than this one) that belong to a test
        rooted at directory C{root}: their working directory is under it, or
        their command line or environment names it (runsv, services,
        grandchildren; L{ProcessTestMixin.shell} puts it in C{P2_TEST_ROOT}).
    """
    root = os.path.abspath(root)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        cwd = _link("/proc/%d/cwd" % (pid,))
        try:
            with open("/proc/%d/cmdline" % (pid,), "rb") as f:
                cmdline = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        try:
            with open("/proc/%d/environ" % (pid,), "rb") as f:
                environ = f.read().decode("utf-8", "replace")
        except OSError:
            environ = ""
        if (cwd == root or cwd.startswith(root + "/") or root in cmdline
                or root in environ) and alive(pid):
            found.append(pid)
    return found


def runsvFor(path):
    """
    @return: the pids of live C{runsv} processes supervising C{path}, sorted.
    """
    pids = []
    for pid in processesUnder(path):
        try:
            with open("/proc/%d/cmdline" % (pid,), "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) != b"runsv":
            continue
        # Started on a directory built under a dot name: "runsv ." there.
        if argv[1:2] == [path.encode()] or (
                argv[1:2] == [b"."] and _link("/proc/%d/cwd" % (pid,)) == os.path.abspath(path)):
            pids.append(pid)
    # A runsv's child is a copy of it for a moment, between fork and exec.
    return [pid for pid in pids if _parent(pid) not in pids]


def _parent(pid):
    try:
        with open("/proc/%d/stat" % (pid,), "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def waitFor(predicate, timeout=15.0, what="condition"):
    """
    @return: L{Deferred} firing once C{predicate()} is true, failing with
        C{AssertionError} after C{timeout} seconds.
    """
    d = waitUntil(reactor, predicate, timeout)

    def check(ok):
        if not ok:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))

    return d.addCallback(check)


def readPids(path):
    """
    @return: the pids, one a line, in C{path} (C{[]} if it does not exist).
    """
    try:
        with open(path) as f:
            return [int(line) for line in f.read().split()]
    except FileNotFoundError:
        return []


def sweep(root):
    """
    SIGKILL every process of the test rooted at C{root} and wait until they
    are gone.

    @return: L{Deferred} firing with the pids that were still there.
    """
    left = processesUnder(root)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    d = waitFor(lambda: not processesUnder(root), 10, "processes under %s to go" % (root,))
    return d.addCallback(lambda _: left)


class ProcessTestMixin(object):
    """
    A fresh state directory per test, and every process started under it
    gone at the end.
    """

    def makeStateDir(self):
        """
        Make C{self.root} and C{self.layout}.  At the end of the test (after
        the cleanups added later, which stop the test's services) every
        process of it must be gone: leftovers are killed and fail the test.
        """
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.layout = StateLayout(os.path.join(self.root, "state"))
        self.addCleanup(self._sweep)
        return self.layout

    @defer.inlineCallbacks
    def _sweep(self):
        left = yield sweep(self.root)
        if left:
            raise AssertionError("processes left behind: %s" % (left,))

    def shell(self, script, name="svc", **kwargs):
        """
        @return: a L{ServiceSpec} running C{sh -c script} as the leader of
            its own session and process group (as C{p2-exec} would).
        """
        kwargs.setdefault("restartTimeout", 10.0)
        kwargs.setdefault("env", {"P2_TEST_ROOT": self.root})
        return ServiceSpec(name, ["setsid", "sh", "-c", script], **kwargs)

    def pidFile(self, name="pids"):
        return os.path.join(self.root, name)

    @defer.inlineCallbacks
    def waitPids(self, count, name="pids"):
        """
        Wait until the pid file C{name} holds C{count} pids (services write
        theirs a moment after their supervisor reports them running).

        @return: L{Deferred} firing with the pids.
        """
        path = self.pidFile(name)
        yield waitFor(lambda: len(readPids(path)) >= count, 10,
                      "%d pids in %s" % (count, path))
        return readPids(path)

    @defer.inlineCallbacks
    def waitGone(self, *pids):
        yield waitFor(lambda: not any(alive(pid) for pid in pids), 10,
                      "pids %s to go" % (pids,))


# -- the tests -----------------------------------------------------------------

def _fakeWhich(present):
    def which(name, path=None):
        if name in present:
            return "/usr/bin/" + name
        return None
    return which


ALL_RUNIT = ("runsvdir", "runsv", "sv", "svlogd", "setsid")


class InterfaceTests(unittest.TestCase):
    """
    Every supervisor provides L{ISupervisor}.
    """

    def test_runit(self):
        """
        L{RunitSupervisor} provides L{ISupervisor} and is named C{runit}.
        """
        sup = RunitSupervisor(StateLayout(self.mktemp()), reactor,
                              which=_fakeWhich(ALL_RUNIT))
        self.assertTrue(verifyObject(ISupervisor, sup))
        self.assertEqual(sup.name, "runit")

    def test_builtin(self):
        """
        L{BuiltinSupervisor} provides L{ISupervisor} and is named C{builtin}.
        """
        sup = BuiltinSupervisor(StateLayout(self.mktemp()), reactor)
        self.assertTrue(verifyObject(ISupervisor, sup))
        self.assertEqual(sup.name, "builtin")

    def test_runitMissing(self):
        """
        Asking for runit where it is not installed says what to install.
        """
        e = self.assertRaises(SupervisorError, RunitSupervisor,
                              StateLayout(self.mktemp()), reactor,
                              which=_fakeWhich(("setsid",)))
        self.assertIn("install runit", str(e))


class ChooseTests(unittest.TestCase):
    """
    The config's C{supervisor: auto|runit|builtin}.
    """

    def test_autoPicksRunit(self):
        """
        C{auto} (and no setting) picks runit when C{runsvdir}, C{runsv} and
        C{sv} are on C{PATH}.
        """
        which = _fakeWhich(ALL_RUNIT)
        self.assertEqual(chooseKind("auto", which), "runit")
        self.assertEqual(chooseKind(None, which), "runit")
        sup = makeSupervisor("auto", StateLayout(self.mktemp()), reactor, which=which)
        self.assertIsInstance(sup, RunitSupervisor)

    def test_autoFallsBack(self):
        """
        Without C{runsvdir}, C{auto} picks the builtin supervisor.
        """
        which = _fakeWhich(("runsv", "sv", "svlogd", "setsid"))
        self.assertEqual(chooseKind("auto", which), "builtin")
        sup = makeSupervisor("auto", StateLayout(self.mktemp()), reactor, which=which)
        self.assertIsInstance(sup, BuiltinSupervisor)

    def test_explicit(self):
        """
        C{runit} and C{builtin} are taken as asked, whatever is installed.
        """
        which = _fakeWhich(())
        self.assertEqual(chooseKind("builtin", _fakeWhich(ALL_RUNIT)), "builtin")
        self.assertEqual(chooseKind("runit", which), "runit")
        logDir = self.mktemp()
        sup = makeSupervisor("builtin", StateLayout(self.mktemp()), reactor,
                             logDir=logDir)
        self.assertIsInstance(sup, BuiltinSupervisor)
        self.assertEqual(sup._logPath("x"), os.path.join(logDir, "x.log"))

    def test_stateKeepsItsSupervisor(self):
        """
        A state directory records its supervisor; while it has services,
        C{auto} keeps that one (even where C{auto} alone would choose the
        other) and an explicit other one is refused, saying how to switch;
        without services, switching is allowed and recorded.
        """
        layout = StateLayout(os.path.abspath(self.mktemp()))
        withRunit, withoutRunit = _fakeWhich(ALL_RUNIT), _fakeWhich(())
        self.assertEqual(kindForState("builtin", layout, withRunit), "builtin")
        os.makedirs(os.path.join(layout.serviceDir, "web__app__launch"))
        self.assertEqual(kindForState("auto", layout, withRunit), "builtin")
        self.assertEqual(kindForState(None, layout, withRunit), "builtin")
        e = self.assertRaises(SupervisorError, kindForState, "runit", layout, withRunit)
        self.assertEqual(str(e), "the pods in %s are supervised by builtin (1 services); "
                                 "start the agent with --supervisor builtin, or undeploy them "
                                 "before switching to runit (if their processes are gone "
                                 "already, delete %s to switch anyway)"
                         % (layout.serviceDir, os.path.join(layout.serviceDir, KIND_FILE)))
        os.rmdir(os.path.join(layout.serviceDir, "web__app__launch"))
        self.assertEqual(kindForState("runit", layout, withRunit), "runit")
        os.makedirs(os.path.join(layout.serviceDir, "web__app__launch"))
        self.assertEqual(kindForState("auto", layout, withRunit), "runit")
        # Recorded runit, now missing: kept, and makeSupervisor says it is missing.
        self.assertEqual(kindForState("auto", layout, withoutRunit), "runit")
        self.assertRaises(SupervisorError, makeSupervisor, "runit", layout, reactor,
                          which=withoutRunit)

    def test_unknown(self):
        """
        An unknown kind is a one-line L{UsageError} naming the valid ones.
        """
        e = self.assertRaises(UsageError, makeSupervisor, "systemd",
                              StateLayout(self.mktemp()), reactor)
        self.assertEqual(
            str(e), "unknown supervisor 'systemd' in the config's supervisor: "
            "setting; use one of auto, runit, builtin")


class HelperTests(unittest.TestCase):
    """
    The process and spec helpers both supervisors use.
    """

    def test_checkSpec(self):
        """
        Bad names, empty commands, unknown policies and bad environment names
        are refused with L{SupervisorError}: also a name with a trailing
        newline, which runit's run script (run as root) would run as a
        command before its assignment.
        """
        for spec in [ServiceSpec("../x", ["a"]), ServiceSpec(".x", ["a"]),
                     ServiceSpec("", ["a"]), ServiceSpec("x", []),
                     ServiceSpec("x", ["a"], restartPolicy="sometimes"),
                     ServiceSpec("x", ["a"], env={"A B": "1"}),
                     ServiceSpec("x", ["a"], env={"reboot\n": "1"})]:
            self.assertRaises(SupervisorError, supervisors.checkSpec, spec)
        supervisors.checkSpec(ServiceSpec("x", ["a"], env={"PATH": "/bin"}))

    def test_serviceEnvironment(self):
        """
        Services get the standard C{PATH}, overridden by C{spec.env}.
        """
        self.assertEqual(supervisors.serviceEnvironment(ServiceSpec("x", ["a"])),
                         {"PATH": supervisors.DEFAULT_PATH})
        self.assertEqual(
            supervisors.serviceEnvironment(ServiceSpec("x", ["a"], env={"PATH": "/p", "A": "1"})),
            {"PATH": "/p", "A": "1"})

    def test_listServiceDirs(self):
        """
        Service directories are listed sorted, without dot names or files.
        """
        base = self.mktemp()
        self.assertEqual(supervisors.listServiceDirs(base), [])
        for name in ["b", "a", ".a.new-1"]:
            os.makedirs(os.path.join(base, name))
        open(os.path.join(base, "file"), "w").close()
        self.assertEqual(supervisors.listServiceDirs(base), ["a", "b"])

    def test_processHelpers(self):
        """
        A process leading its own group is seen as such, its group lists it,
        and once it is killed (even as an unreaped zombie) it counts as gone.
        """
        child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        self.assertTrue(supervisors.processAlive(child.pid))
        self.assertTrue(supervisors.leadsGroup(child.pid))
        self.assertEqual(supervisors.groupMembers(child.pid), [child.pid])
        self.assertIsNotNone(supervisors.processStartTime(child.pid))
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # a zombie now
        self.assertFalse(supervisors.processAlive(child.pid))
        self.assertTrue(supervisors.serviceGone(child.pid, True))
        self.assertTrue(supervisors.serviceGone(child.pid, False))

    def test_waitUntil(self):
        """
        L{waitUntil} fires C{True} once the condition holds, C{False} on
        timeout, and fails with what the condition raises.
        """
        from twisted.internet.task import Clock
        clock = Clock()
        box = []
        d = waitUntil(clock, lambda: bool(box), 1.0, interval=0.1)
        clock.advance(0.5)
        box.append(1)
        clock.advance(0.1)
        self.assertTrue(self.successResultOf(d))
        d = waitUntil(clock, lambda: False, 1.0, interval=0.1)
        clock.pump([0.1] * 11)
        self.assertFalse(self.successResultOf(d))
        d = waitUntil(clock, lambda: 1 / 0, 1.0)
        self.failureResultOf(d, ZeroDivisionError)

    def test_waitUntilFirst(self):
        """
        With C{first}, L{waitUntil} looks after C{first} seconds, then twice
        as long each time up to C{interval}.
        """
        from twisted.internet.task import Clock
        clock = Clock()
        looks = []
        d = waitUntil(clock, lambda: looks.append(clock.seconds()), 1.0, interval=0.01,
                      first=0.001)
        clock.pump([0.001] * 40)
        self.assertEqual([round(t, 3) for t in looks[:7]],
                         [0.0, 0.001, 0.003, 0.007, 0.015, 0.025, 0.035])
        clock.pump([0.01] * 100)
        self.assertFalse(self.successResultOf(d))
