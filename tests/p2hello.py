"""
An HTTPS server like P2's C{hoisted-hello} (C{tests/p2data/README.rst}): a
real server nobody here wrote -- GnuTLS's C{gnutls-serv} -- speaking TLS 1.2
at most and without secure renegotiation (RFC 5746), as P2's Go 1.4 server
does, with that artifact's own certificate and key.  OpenSSL 3 clients
refuse such a server by default ("unsafe legacy renegotiation disabled").

C{gnutls-serv} has no option to choose its address: it binds every
interface.  So it runs with C{tests/loopback.c} preloaded, which makes it
bind 127.0.0.1 (and ::1) instead, and says so -- the tests wait for that.
"""

import atexit
import os
import shutil
import subprocess
import tempfile

from twisted.internet import defer

from tests.agentharness import freePort
from tests.artifacts import buildHoist
from tests.processes import startUntil
from tests.servers import requireServer

HERE = os.path.dirname(os.path.abspath(__file__))
LOOPBACK_SOURCE = os.path.join(HERE, "loopback.c")
P2DATA = os.path.join(HERE, "p2data")
HELLO = os.path.join(P2DATA, "hoisted-hello")

#: GnuTLS priorities of a 2015 Go server: TLS 1.2 at most, no RFC 5746.
LEGACY_PRIORITY = "NORMAL:-VERS-TLS1.3:%DISABLE_SAFE_RENEGOTIATION"

#: The page it answers every request with.
PAGE = b'Hello, "/_status"\n'


def gnutlsServ():
    """
    @return: the path of C{gnutls-serv}.
    @raise unittest.SkipTest: it is missing (L{MissingServer} in CI).
    """
    path = shutil.which("gnutls-serv")
    if path is None:
        requireServer("gnutls-serv", "not on PATH", install="apt-get install gnutls-bin")
    return path


_loopback = []


def loopbackLibrary():
    """
    Compile C{tests/loopback.c} (once per test run).

    @return: the path of the library that, preloaded (C{LD_PRELOAD}), makes
        a server bind loopback instead of every interface.
    @raise unittest.SkipTest: there is no C compiler (L{MissingServer} in
        CI).
    """
    if not _loopback:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            requireServer("cc", "no C compiler on PATH to build tests/loopback.c, which keeps "
                          "gnutls-serv on loopback", install="apt-get install gcc")
        directory = tempfile.mkdtemp(prefix="p2-loopback-")
        atexit.register(shutil.rmtree, directory, True)
        path = os.path.join(directory, "loopback.so")
        result = subprocess.run([cc, "-shared", "-fPIC", "-o", path, LOOPBACK_SOURCE, "-ldl"],
                                capture_output=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError("cannot build %s: %s" % (
                LOOPBACK_SOURCE, result.stderr.decode("utf-8", "replace").strip()))
        _loopback.append(path)
    return _loopback[0]


#: Loopback as C{/proc/net/tcp} and C{tcp6} write it.
LOOPBACK = {"0100007F", "00000000000000000000000001000000"}


def listeningAddresses(port):
    """
    @return: the local addresses of the sockets listening on TCP C{port},
        as C{/proc/net/tcp} and C{tcp6} write them (hex; L{LOOPBACK}).
    """
    found = set()
    for name in ("tcp", "tcp6"):
        with open(os.path.join("/proc/net", name)) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                address, _, local = fields[1].partition(":")
                if fields[3] == "0A" and int(local, 16) == port:
                    found.add(address)
    return found


#: What a preloaded gnutls-serv prints once it listens on 127.0.0.1.
LISTENING = b"IPv4 0.0.0.0 port %d...bound to loopback\ndone"


def helloArguments(gnutls, port, root):
    """
    @return: the command line serving L{PAGE} over legacy TLS on C{port},
        with the certificate, key and page under C{root}.
    """
    return [gnutls, "--http", "--quiet", "--nodb", "--port", str(port),
            "--x509certfile", os.path.join(root, "cert.pem"),
            "--x509keyfile", os.path.join(root, "key.pem"),
            "--priority", LEGACY_PRIORITY, "--httpdata", os.path.join(root, "hello.txt")]


@defer.inlineCallbacks
def legacyTLSServer(testCase, timeout=10.0):
    """
    Start the legacy HTTPS server on a free port until C{testCase} ends.

    @return: L{Deferred} firing with C{(port, stop)}, C{stop()} returning a
        L{Deferred} that fires once the server has exited.
    """
    gnutls = gnutlsServ()
    root = testCase.mktemp()
    os.makedirs(root)
    for name in ("cert.pem", "key.pem"):
        shutil.copy(os.path.join(HELLO, name), root)
    with open(os.path.join(root, "hello.txt"), "wb") as f:
        f.write(PAGE)
    port = freePort()
    stop = yield startUntil(testCase, LISTENING % (port,), gnutls,
                            helloArguments(gnutls, port, root),
                            {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                             "LD_PRELOAD": loopbackLibrary()}, timeout)
    return port, stop


#: The hoisted-hello-like pod's C{bin/launch}: the port from C{$CONFIG_PATH}
#: (C{port: N}, as P2's hello reads it), the keys and page beside it, and
#: L{loopbackLibrary} in C{lib/}.
LAUNCH = """#!/bin/sh
# Like P2's hoisted-hello: an HTTPS server (GnuTLS's, not ours) whose TLS
# has no secure renegotiation, kept on loopback by lib/loopback.so.
root=$(cd "$(dirname "$0")/.." && pwd)
port=$(sed -n 's/^port: *//p' "$CONFIG_PATH")
export LD_PRELOAD="$root/lib/loopback.so"
exec %(gnutls)s --http --quiet --nodb --port "$port" --x509certfile "$root/cert.pem" \\
    --x509keyfile "$root/key.pem" --priority '%(priority)s' --httpdata "$root/hello.txt"
"""


def buildHoistedHello(path):
    """
    Write a hoist artifact like P2's C{hoisted-hello} at C{path}:
    C{bin/launch} serving L{PAGE} over legacy TLS on its config's port
    (127.0.0.1), with P2's C{cert.pem}, C{key.pem} and C{app-manifest.yaml}.

    @return: its SHA-256.
    """
    launch = LAUNCH % {"gnutls": gnutlsServ(), "priority": LEGACY_PRIORITY}
    with open(loopbackLibrary(), "rb") as f:
        library = f.read()
    files = {"bin/launch": (launch.encode("utf-8"), 0o755), "hello.txt": PAGE,
             "lib/loopback.so": (library, 0o755)}
    for name in ("cert.pem", "key.pem", "app-manifest.yaml"):
        with open(os.path.join(HELLO, name), "rb") as f:
            files[name] = f.read()
    return buildHoist(path, dirs=["bin", "lib"], files=files)
