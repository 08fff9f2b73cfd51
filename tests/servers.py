"""
Real servers for integration tests: what happens when one is missing.

Locally a missing server (ZooKeeper, runit, etcd, gpg, ...) skips the tests
that need it, with the reason.  In CI (C{P2_REQUIRE_REAL_SERVERS=1}) a missing
server is an error, so a broken image cannot quietly skip a whole suite.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

#: Environment variable that turns "skip" into "fail" for missing servers.
REQUIRE_ENV = "P2_REQUIRE_REAL_SERVERS"


class MissingServer(Exception):
    """
    A real server the tests need is missing and this run requires it.
    """


def serversRequired():
    """
    @return: whether this run requires every real server (CI).
    """
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0")


def requireServer(what, reason, install=None):
    """
    Give up on a test needing the real server C{what}, which is unusable
    because of C{reason}.

    @param install: how to install it, e.g. C{"apt-get install zookeeper"};
        by default C{"apt-get install <what>"}.
    @raise unittest.SkipTest: normally.
    @raise MissingServer: when C{P2_REQUIRE_REAL_SERVERS=1}.
    """
    if serversRequired():
        raise MissingServer(
            "%s not available: %s; CI requires it (%s=1): install it with `%s`"
            % (what, reason, REQUIRE_ENV, install or "apt-get install %s" % (what,)))
    raise unittest.SkipTest("%s not available: %s" % (what, reason))


def failOnStoreWarnings(testCase, unless=lambda: False):
    """
    Make C{testCase} fail if a store module logs a warning while it runs
    (say, a watch round failing and being retried: in a test without
    outages that is a bug that retries would otherwise hide), unless
    C{unless()} is true at the end.
    """
    warnings = []

    def observe(event):
        if event.get("log_level", LogLevel.info) >= LogLevel.warn and \
                event.get("log_namespace", "").startswith("p2twisted.store"):
            warnings.append(formatEvent(event))

    def check():
        globalLogPublisher.removeObserver(observe)
        if not unless():
            testCase.assertEqual(warnings, [])
    globalLogPublisher.addObserver(observe)
    testCase.addCleanup(check)


def freePort():
    """
    @return: a TCP port on 127.0.0.1 nothing listens on right now.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class ServerProcess(object):
    """
    A real server run as a child process in a temporary directory, for
    tests and benchmarks: started (blocking, bounded by L{startTimeout})
    until L{ready} says it serves, killed like a crash by L{stop}, started
    again on the same ports with the same data by L{restart}, removed by
    L{destroy} (also at exit).

    Subclasses set L{name} and provide L{command} and L{ready}.
    """

    name = "server"
    startTimeout = 30.0
    #: Where the temporary directory goes (C{None}: the system's default).
    parent = None

    def __init__(self):
        self.directory = None
        self.process = None
        self._log = None

    def command(self):
        """
        @return: the command line (a list) starting the server; L{directory}
            exists by now.
        """
        raise NotImplementedError()

    def ready(self):
        """
        @return: whether the server answers requests (may block briefly).
        """
        raise NotImplementedError()

    def missing(self):
        """
        @return: why the server cannot be started here, or C{None}.
        """
        return None

    def describe(self):
        """
        @return: the server in words, for errors.
        """
        return self.name

    @property
    def logFile(self):
        return os.path.join(self.directory, "server.log") if self.directory else None

    def logTail(self, lines=25):
        """
        @return: the last C{lines} lines of the server's output.
        """
        try:
            with open(self.logFile, "rb") as f:
                data = f.read()
        except (OSError, TypeError):
            return "(no server log)"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def start(self):
        """
        Start the server and wait until it serves requests.

        @raise RuntimeError: with the log tail, if it does not within
            L{startTimeout} seconds or exits.
        """
        if self.process is not None:
            return
        why = self.missing()
        if why:
            raise RuntimeError("cannot start %s: %s" % (self.describe(), why))
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="p2-%s-" % (self.name.lower(),),
                                              dir=self.parent)
            atexit.register(self.destroy)
        self._log = open(self.logFile, "ab")
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=self.directory)
        deadline = time.monotonic() + self.startTimeout
        while True:
            try:
                # Wait for the process to die early, for at most a moment.
                self.process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
            if self.process.poll() is not None:
                code = self.process.returncode
                self._reap()
                raise RuntimeError("%s exited with status %s while starting; log tail:\n%s"
                                   % (self.describe(), code, self.logTail()))
            if self.ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("%s did not serve within %.0fs; log tail:\n%s"
                                   % (self.describe(), self.startTimeout, self.logTail()))

    def _reap(self):
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, sig=None):
        """
        Kill the server (by default with SIGKILL, like a crash) and wait for
        it to exit.  Its data stays for L{restart}.
        """
        if self.process is None:
            return
        try:
            self.process.send_signal(sig or signal.SIGKILL)
        except OSError:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._reap()

    def restart(self):
        """
        Stop and start again on the same ports with the same data.
        """
        self.stop()
        self.start()

    def destroy(self):
        """
        Stop and remove the server's data.
        """
        self.stop()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


_shared = {}


def sharedServer(factory, what, why, install):
    """
    @param factory: a L{ServerProcess} class.
    @param why: why it cannot run here (its C{missing()}), or C{None}.
    @return: the one server of C{factory} of this test run, started on first
        use and destroyed at exit.
    @raise unittest.SkipTest: if it cannot run here (or L{MissingServer}
        under C{P2_REQUIRE_REAL_SERVERS=1}), through L{requireServer}.
    """
    if why:
        requireServer(what, why, install=install)
    if factory not in _shared:
        server = factory()
        server.start()
        _shared[factory] = server
    return _shared[factory]
