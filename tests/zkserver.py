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

import os
import shutil
import socket

from tests import servers
from tests.servers import ServerProcess, freePort

JAR = "/usr/share/java/zookeeper.jar"
#: slf4j binding: "simple" logs to the server's log file (for the log tail in
#: errors); "nop" is the fallback.
LOGGERS = ["/usr/share/java/slf4j-simple.jar", "/usr/share/java/slf4j-nop.jar"]
MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
INSTALL = "apt-get install zookeeper"

__all__ = ["JAR", "LOGGERS", "ZooKeeperServer", "freePort", "fourLetterWord", "missing",
           "sharedServer"]


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


class ZooKeeperServer(ServerProcess):
    """
    One standalone ZooKeeper server in a temporary directory.

    @ivar port: its client port on 127.0.0.1 (kept across restarts).
    @ivar hosts: C{"127.0.0.1:PORT"}.
    """

    name = "ZooKeeper"
    tickTime = 250
    minSessionTimeout = 1000
    maxSessionTimeout = 20000

    def __init__(self, port=None):
        ServerProcess.__init__(self)
        self.port = port or freePort()
        self.hosts = "127.0.0.1:%d" % (self.port,)

    def describe(self):
        return "ZooKeeper on %s" % (self.hosts,)

    def missing(self):
        why = missing()
        return why and "%s (%s)" % (why, INSTALL)

    def _configure(self):
        data = os.path.join(self.directory, "data")
        os.makedirs(data, exist_ok=True)
        config = os.path.join(self.directory, "zoo.cfg")
        with open(config, "w") as f:
            f.write("\n".join([
                "tickTime=%d" % (self.tickTime,),
                "minSessionTimeout=%d" % (self.minSessionTimeout,),
                "maxSessionTimeout=%d" % (self.maxSessionTimeout,),
                "dataDir=%s" % (data,),
                "clientPort=%d" % (self.port,),
                "clientPortAddress=127.0.0.1",
                "maxClientCnxns=0",
                "admin.enableServer=false",
                "4lw.commands.whitelist=ruok,srvr,stat,mntr",
                "",
            ]))
        return config

    def command(self):
        loggers = [path for path in LOGGERS if os.path.exists(path)][:1]
        return [
            "java", "-Xmx512m", "-XX:+UseSerialGC",
            "-Dzookeeper.admin.enableServer=false",
            # A killed server still keeps every acknowledged write (it is in
            # the page cache); skipping fsync only matters to a host crash.
            "-Dzookeeper.forceSync=no",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-cp", ":".join([JAR] + loggers),
            MAIN, self._configure()]

    def ready(self):
        reply = fourLetterWord(self.port, "srvr", timeout=0.5)
        return bool(reply and "Zookeeper version" in reply)


def sharedServer():
    """
    @return: the one L{ZooKeeperServer} of this test run, started on first
        use and destroyed at exit (L{tests.servers.sharedServer}).
    """
    return servers.sharedServer(ZooKeeperServer, "ZooKeeper", missing(), INSTALL)


def expireSession(hosts, clientId):
    """
    Expire the session C{clientId} (a kazoo C{client_id}) the way ZooKeeper
    does it: close it from a second client that borrowed its id and
    password.

    @return: L{Deferred} firing once it is closed.
    """
    from kazoo.client import KazooClient
    from twisted.internet import threads

    def expire():
        twin = KazooClient(hosts=hosts, client_id=clientId)
        twin.start(15)
        twin.stop()
        twin.close()
    return threads.deferToThread(expire)
