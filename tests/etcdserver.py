"""
A real etcd server for tests and benchmarks, from Debian's C{etcd-server}
package (etcd 3.4, with its v3 JSON gateway on the client port).

    server = EtcdServer()
    server.start()          # blocks (bounded) until it serves requests
    ... server.url("/p2") ...   # "etcd://127.0.0.1:PORT/p2"
    server.restart()        # same ports, same data
    server.stop()

A single-member cluster on 127.0.0.1 with free client and peer ports and its
data in a temporary directory (in C{/dev/shm} when there is one: etcd 3.4 has
no flag to skip fsync, and a test run does not need a disk's durability).
L{sharedServer} starts one server per test run, lazily; when etcd is missing
it skips (or, under C{P2_REQUIRE_REAL_SERVERS=1}, fails) through
L{tests.servers.requireServer}.
"""

import json
import os
import shutil
import urllib.request

from tests import servers
from tests.servers import ServerProcess, freePort

INSTALL = "apt-get install etcd-server"


def missing():
    """
    @return: why etcd cannot be started here, or C{None} if it can.
    """
    if shutil.which("etcd") is None:
        return "no 'etcd' on PATH"
    return None


class EtcdServer(ServerProcess):
    """
    One single-member etcd cluster.

    @ivar port: its client port on 127.0.0.1 (kept across restarts).
    @ivar peerPort: its peer port on 127.0.0.1.
    """

    name = "etcd"
    parent = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

    def __init__(self, port=None):
        ServerProcess.__init__(self)
        self.port = port or freePort()
        self.peerPort = freePort()
        self.base = "http://127.0.0.1:%d" % (self.port,)

    def url(self, root="/p2"):
        """
        @return: the store URL of C{root} on this server.
        """
        return "etcd://127.0.0.1:%d%s" % (self.port, root)

    def describe(self):
        return "etcd on %s" % (self.base,)

    def missing(self):
        why = missing()
        return why and "%s (%s)" % (why, INSTALL)

    def command(self):
        peer = "http://127.0.0.1:%d" % (self.peerPort,)
        return [
            "etcd", "--name", "p2test",
            "--data-dir", os.path.join(self.directory, "data"),
            "--listen-client-urls", self.base, "--advertise-client-urls", self.base,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "p2test=" + peer,
            "--initial-cluster-state", "new",
            "--log-level", "warn", "--logger", "zap"]

    def ready(self):
        try:
            with urllib.request.urlopen(self.base + "/health", timeout=0.5) as reply:
                return json.loads(reply.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def call(self, path, request):
        """
        Send one JSON request to the gateway (fixture use: compaction, raw reads).

        @return: the decoded JSON answer.
        """
        data = json.dumps(request).encode("utf-8")
        with urllib.request.urlopen(self.base + path, data=data, timeout=10) as reply:
            return json.loads(reply.read())


def sharedServer():
    """
    @return: the one L{EtcdServer} of this test run, started on first use and
        destroyed at exit (L{tests.servers.sharedServer}).
    """
    return servers.sharedServer(EtcdServer, "etcd", missing(), INSTALL)
