"""
A real HAProxy for tests (Debian's C{haproxy}), in master-worker mode as
Debian's haproxy.service runs it (C{haproxy -W -p PIDFILE}), so the haproxy
syncer reloads it as it would in production: one frontend on a free port of
127.0.0.1 whose default backend is a pod cluster's, loaded from the
syncer's directory.  Missing, its tests skip (fail under
C{P2_REQUIRE_REAL_SERVERS=1}).

Also small in-process HTTP servers playing pods: each answers every path
with its own name.
"""

import os
import shutil
import signal
import socket

from twisted.internet import defer
from twisted.web import resource, server

from tests.agentharness import httpGet
from tests.servers import ServerProcess, freePort, requireServer


def haproxyProgram():
    """@return: the path of the haproxy program, or C{None}."""
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)


def requireHAProxy():
    if haproxyProgram() is None:
        requireServer("haproxy", "the haproxy program is not installed")


MAIN = """\
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend web
    bind 127.0.0.1:%(port)d
    default_backend %(backend)s
"""


class HAProxyServer(ServerProcess):
    """
    @ivar port: the frontend's port.
    @ivar backends: the directory of backend files (the syncer's).
    """

    name = "haproxy"

    def __init__(self, backend):
        ServerProcess.__init__(self)
        self.backend = backend
        self.port = freePort()
        self.main = None
        self.backends = None
        self.pidFile = None

    def prepare(self, parent):
        """Make the directory, main config and backend directory under C{parent}."""
        self.directory = parent
        self.main = os.path.join(parent, "haproxy.cfg")
        self.backends = os.path.join(parent, "backends")
        self.pidFile = os.path.join(parent, "haproxy.pid")
        os.makedirs(self.backends, exist_ok=True)
        with open(self.main, "w") as f:
            f.write(MAIN % {"port": self.port, "backend": self.backend})

    def settings(self):
        """@return: the haproxy syncer's settings for this server."""
        return {"directory": self.backends, "configs": [self.main, self.backends],
                "pid_file": self.pidFile, "haproxy": haproxyProgram()}

    def command(self):
        return [haproxyProgram(), "-W", "-db", "-f", self.main, "-f", self.backends,
                "-p", self.pidFile]

    def ready(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
        except OSError:
            return False
        return True

    def stopGracefully(self):
        self.stop(signal.SIGTERM)

    def get(self, path="/", timeout=2.0):
        """
        @return: L{Deferred} firing with C{(code, body text)} of a request
            through the proxy, or C{None} when nothing answered within
            C{timeout} seconds.
        """
        d = httpGet("http://127.0.0.1:%d%s" % (self.port, path), timeout=timeout)
        return d.addCallback(lambda r: None if r is None else (r[0], r[1].decode()))

    @defer.inlineCallbacks
    def reached(self, requests=9, path="/"):
        """
        @return: L{Deferred} firing with the set of bodies of C{requests}
            requests through the proxy (C{"<code>"} for a non-200 answer,
            C{None} for none).
        """
        found = set()
        for _ in range(requests):
            result = yield self.get(path)
            found.add(None if result is None else
                      result[1] if result[0] == 200 else "<%d>" % (result[0],))
        return found


class Named(resource.Resource):
    isLeaf = True

    def __init__(self, name):
        resource.Resource.__init__(self)
        self.name = name

    def render_GET(self, request):
        return self.name.encode()


def servePod(testCase, reactor, name, host, port):
    """
    Listen on C{host:port} answering C{name}; stopped at cleanup.

    @return: the listening port (C{stopListening()} to take the pod down).
    """
    site = server.Site(Named(name))
    listening = reactor.listenTCP(port, site, interface=host)
    testCase.addCleanup(listening.stopListening)
    return listening
