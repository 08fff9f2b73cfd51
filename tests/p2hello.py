"""
An HTTPS server like P2's C{hoisted-hello} (C{tests/p2data/README.rst}): a
real server nobody here wrote -- GnuTLS's C{gnutls-serv} -- speaking TLS 1.2
at most and without secure renegotiation (RFC 5746), as P2's Go 1.4 server
does, with that artifact's own certificate and key.  OpenSSL 3 clients
refuse such a server by default ("unsafe legacy renegotiation disabled").

C{gnutls-serv} has no option to choose its address: it listens on every
interface, on a free port, for the few seconds of a test.
"""

import os
import shutil

from twisted.internet import defer

from tests.agentharness import freePort
from tests.artifacts import buildHoist
from tests.processes import startUntil
from tests.servers import requireServer

HERE = os.path.dirname(os.path.abspath(__file__))
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
    stop = yield startUntil(testCase, b"listening on IPv4", gnutls,
                            helloArguments(gnutls, port, root),
                            {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, timeout)
    return port, stop


#: The hoisted-hello-like pod's C{bin/launch}: the port from C{$CONFIG_PATH}
#: (C{port: N}, as P2's hello reads it), the keys and page beside it.
LAUNCH = """#!/bin/sh
# Like P2's hoisted-hello: an HTTPS server (GnuTLS's, not ours) whose TLS
# has no secure renegotiation.
root=$(cd "$(dirname "$0")/.." && pwd)
port=$(sed -n 's/^port: *//p' "$CONFIG_PATH")
exec %(gnutls)s --http --quiet --nodb --port "$port" --x509certfile "$root/cert.pem" \\
    --x509keyfile "$root/key.pem" --priority '%(priority)s' --httpdata "$root/hello.txt"
"""


def buildHoistedHello(path):
    """
    Write a hoist artifact like P2's C{hoisted-hello} at C{path}:
    C{bin/launch} serving L{PAGE} over legacy TLS on its config's port,
    with P2's C{cert.pem}, C{key.pem} and C{app-manifest.yaml}.

    @return: its SHA-256.
    """
    launch = LAUNCH % {"gnutls": gnutlsServ(), "priority": LEGACY_PRIORITY}
    files = {"bin/launch": (launch.encode("utf-8"), 0o755), "hello.txt": PAGE}
    for name in ("cert.pem", "key.pem", "app-manifest.yaml"):
        with open(os.path.join(HELLO, name), "rb") as f:
            files[name] = f.read()
    return buildHoist(path, dirs=["bin"], files=files)
