"""
A real ZooKeeper server for tests and benchmarks, from Debian's C{zookeeper}
package (C{/usr/share/java/zookeeper.jar}; its manifest's C{Class-Path} names
the jars it needs).

    server = ZooKeeperServer()
    server.start()          # blocks (bounded) until it serves requests
    ... "127.0.0.1:%d" % server.port ...
    server.restart()        # same port, same data
    server.stop()

Every server is killed and its directory removed at exit (L{destroy}).
L{sharedServer} starts one server per test run, lazily; when Java or the jar
is missing it skips (or, under C{P2_REQUIRE_REAL_SERVERS=1}, fails) through
L{tests.servers.requireServer}.

The server binds to 127.0.0.1 only.  Its C{tickTime} is 250 ms so sessions of
1 to 20 s are allowed and expire close to their timeout.  This is fixture code:
starting and stopping block, always for a bounded time.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tests.servers import requireServer

JAR = "/usr/share/java/zookeeper.jar"
#: slf4j binding: "simple" logs to the server's log file (for the log tail in
#: errors); "nop" is the fallback.
LOGGERS = ["/usr/share/java/slf4j-simple.jar", "/usr/share/java/slf4j-nop.jar"]
MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
INSTALL = "apt-get install zookeeper"


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


def fourLetterWord(port, word, timeout=1.0):
    """
    Send a four-letter command to the server on C{port}.

    @return: the reply as text, or C{None} if the server did not answer.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(word.encode("ascii"))
            chunks = []
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return None


def missing():
    """
    @return: why a server cannot be started here, or C{None} if it can.
    """
    if shutil.which("java") is None:
        return "no 'java' on PATH"
    if not os.path.exists(JAR):
        return "%s is missing" % (JAR,)
    return None


class ZooKeeperServer(object):
    """
    One standalone ZooKeeper server in a temporary directory.

    @ivar port: its client port on 127.0.0.1 (kept across restarts).
    @ivar hosts: C{"127.0.0.1:PORT"}.
    """

    tickTime = 250
    minSessionTimeout = 1000
    maxSessionTimeout = 20000
    startTimeout = 30.0

    def __init__(self, port=None):
        self.port = port or freePort()
        self.hosts = "127.0.0.1:%d" % (self.port,)
        self.directory = None
        self.process = None
        self._log = None

    def _configure(self):
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="p2-zk-")
            os.mkdir(os.path.join(self.directory, "data"))
            atexit.register(self.destroy)
        config = os.path.join(self.directory, "zoo.cfg")
        with open(config, "w") as f:
            f.write("\n".join([
                "tickTime=%d" % (self.tickTime,),
                "minSessionTimeout=%d" % (self.minSessionTimeout,),
                "maxSessionTimeout=%d" % (self.maxSessionTimeout,),
                "dataDir=%s" % (os.path.join(self.directory, "data"),),
                "clientPort=%d" % (self.port,),
                "clientPortAddress=127.0.0.1",
                "maxClientCnxns=0",
                "admin.enableServer=false",
                "4lw.commands.whitelist=ruok,srvr,stat,mntr",
                "",
            ]))
        return config

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

    def command(self, config):
        """
        @return: the command line running the server with C{config}.
        """
        loggers = [path for path in LOGGERS if os.path.exists(path)][:1]
        return [
            "java", "-Xmx512m", "-XX:+UseSerialGC",
            "-Dzookeeper.admin.enableServer=false",
            # A killed server still keeps every acknowledged write (it is in
            # the page cache); skipping fsync only matters to a host crash.
            "-Dzookeeper.forceSync=no",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-cp", ":".join([JAR] + loggers),
            MAIN, config]

    def start(self):
        """
        Start the server and wait until it serves requests.

        @raise RuntimeError: with the log tail, if it does not within
            L{startTimeout} seconds or exits.
        """
        if self.process is not None:
            return
        why = missing()
        if why:
            raise RuntimeError("cannot start ZooKeeper: %s (%s)" % (why, INSTALL))
        config = self._configure()
        self._log = open(self.logFile, "ab")
        self.process = subprocess.Popen(
            self.command(config), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT)
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
                raise RuntimeError(
                    "ZooKeeper on %s exited with status %s while starting; log tail:\n%s"
                    % (self.hosts, code, self.logTail()))
            reply = fourLetterWord(self.port, "srvr", timeout=0.5)
            if reply and "Zookeeper version" in reply:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    "ZooKeeper on %s did not serve within %.0fs; log tail:\n%s"
                    % (self.hosts, self.startTimeout, self.logTail()))

    def _reap(self):
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, sig=signal.SIGKILL):
        """
        Kill the server (by default with SIGKILL, like a crash) and wait
        for it to exit.  Its data stays for L{restart}.
        """
        if self.process is None:
            return
        try:
            self.process.send_signal(sig)
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
        Stop and start again on the same port with the same data.
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


_shared = None


def sharedServer():
    """
    @return: the one L{ZooKeeperServer} of this test run, started on first
        use and destroyed at exit.
    @raise unittest.SkipTest: if Java or ZooKeeper is missing (or
        L{tests.servers.MissingServer} under C{P2_REQUIRE_REAL_SERVERS=1}).
    """
    global _shared
    why = missing()
    if why:
        requireServer("ZooKeeper", why, install=INSTALL)
    if _shared is None:
        server = ZooKeeperServer()
        server.start()
        _shared = server
    return _shared
