# -*- test-case-name: tests.test_web_tap -*-
"""
C{twistd p2-api} (L{p2twisted.web.tap}) and C{p2 ui} (L{p2twisted.cli.ui}):
their settings (loopback by default, the token file), the service in this
process, and both as real processes on a local store.
"""

import os
import signal
import socket
import sys

import treq
from twisted.internet import defer, reactor
from twisted.python import usage
from twisted.trial import unittest

from p2twisted.errors import UsageError
from p2twisted.web import tap
from tests.agentharness import freePort
from tests.fleetcli import FleetCommandMixin
from tests.store_contract import waitFor
from tests.test_agent_process_e2e import AgentProcess

TOKEN = "a-t0ken-nobody-guesses"


def tokenFile(test, content=TOKEN + "\n"):
    path = os.path.abspath(test.mktemp())
    with open(path, "w") as f:
        f.write(content)
    return path


@defer.inlineCallbacks
def request(method, url, token=None, body=b'{"replicas": 1}'):
    """
    @return: L{Deferred} firing with C{(code, body)}, or C{None} when
        nothing answers.
    """
    headers = {b"Authorization": [b"Bearer " + token.encode()]} if token else {}
    try:
        response = yield treq.request(method.decode("ascii"), url, headers=headers, data=body,
                                      persistent=False, timeout=5)
        body = yield response.content()
    except Exception:
        return None
    return response.code, body


class OptionsTests(unittest.TestCase):

    def test_loopbackByDefault(self):
        """
        Without C{--listen}, p2-api listens on loopback port 8080; without
        C{--token-file}, it has no token.
        """
        options = tap.Options()
        options.parseOptions(["--store", "local:///tmp/x/state.db"])
        self.assertEqual(options.settings.listen, "tcp:8080:interface=127.0.0.1")
        self.assertTrue(tap.isLoopback(options.settings.listen))
        self.assertIsNone(options.settings.token)

    def test_isLoopback(self):
        """
        Only a loopback interface or a UNIX socket counts as loopback.
        """
        self.assertEqual([tap.isLoopback(d) for d in (
            "tcp:80:interface=127.0.0.1", "tcp6:80:interface=\\:\\:1", "unix:/tmp/s",
            "tcp:80", "tcp:80:interface=0.0.0.0", "tcp:80:interface=10.0.0.1",
            "tcp:80:interface=127.0.0.2")],
            [True, True, True, False, False, False, True])

    def test_token(self):
        """
        The token file's content, whitespace stripped, is the token; it is
        in no repr of the settings.
        """
        options = tap.Options()
        options.parseOptions(["--store", "local:///tmp/x/state.db", "--token-file",
                              tokenFile(self)])
        self.assertEqual(options.settings.token, TOKEN.encode())
        self.assertNotIn(TOKEN, repr(options.settings))

    def test_badTokenFile(self):
        """
        A missing, empty or multi-word token file is a one-line usage error
        naming the file and never its content.
        """
        for path, message in ((self.mktemp(), "cannot read"),
                              (tokenFile(self, " \n"), "is empty"),
                              (tokenFile(self, "one two\n"), "one token")):
            options = tap.Options()
            error = self.assertRaises(usage.UsageError, options.parseOptions,
                                      ["--store", "local:///tmp/x/state.db", "--token-file",
                                       path])
            self.assertIn(message, str(error))
            self.assertIn(path, str(error))
            self.assertNotIn("two", str(error))
        self.assertRaises(UsageError, tap.readToken, self.mktemp())

    def test_badListen(self):
        """
        A C{--listen} that is no endpoint is a one-line usage error naming
        it.
        """
        missing = os.path.abspath(self.mktemp())
        for listen in ("garbage", "tcp:http", "tcp:80:colour=red",
                       "ssl:8443:privateKey=%s" % (missing,)):
            error = self.assertRaises(usage.UsageError, tap.Options().parseOptions,
                                      ["--store", "local:///tmp/x/state.db", "--listen", listen])
            self.assertIn("--listen %s:" % (listen,), str(error))


class ServiceTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_servesOnceStoreOpen(self):
        """
        The service listens where told and serves the store once open;
        stopped, it closes both.
        """
        url = "local://" + os.path.abspath(os.path.join(self.mktemp(), "state.db"))
        os.makedirs(os.path.dirname(url[len("local://"):]))
        service = tap.APIService(tap.APIConfig(url, "tcp:0:interface=127.0.0.1"), reactor)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        port = yield service.listening
        base = tap.url(port.getHost())
        self.assertTrue(base.startswith("http://127.0.0.1:"))
        code, body = yield waitFor(
            lambda: request(b"GET", base + "api/v1/nodes").addCallback(
                lambda r: r if r and r[0] == 200 else None), timeout=30, what="the API")
        rebound = yield treq.get(base + "api/v1/nodes", headers={b"Host": [b"evil.example"]},
                                 persistent=False)
        yield rebound.content()
        self.assertEqual(rebound.code, 403, "on loopback, only loopback names are answered")
        yield service.stopService()
        self.assertIsNone(service.api.store)
        self.assertIsNone((yield request(b"GET", base + "api/v1/nodes")))

    @defer.inlineCallbacks
    def test_unavailableStore(self):
        """
        While its store cannot be opened, the API answers 503 (and keeps
        retrying).
        """
        url = "local://" + os.path.abspath(__file__) + "/not-a-dir/state.db"
        service = tap.APIService(tap.APIConfig(url, "tcp:0:interface=127.0.0.1"), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = yield service.listening
        code, body = yield request(b"GET", tap.url(port.getHost()) + "api/v1/rcs")
        self.assertEqual(code, 503)
        yield service.stopService()


    @defer.inlineCallbacks
    def test_largeBodyRefusedAtOnce(self):
        """
        A request saying or sending a body larger than the API takes is
        answered 413 at once, before it is received and stored (no token is
        needed to send one, so it must not fill the memory or the disk).
        """
        url = "local://" + os.path.abspath(__file__) + "/not-a-dir/state.db"
        service = tap.APIService(tap.APIConfig(url, "tcp:0:interface=127.0.0.1"), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = (yield service.listening).getHost().port
        for head in (b"Content-Length: %d\r\n" % (2 ** 40,), b"Transfer-Encoding: chunked\r\n"):
            client = socket.create_connection(("127.0.0.1", port))
            self.addCleanup(client.close)
            client.sendall(b"POST /api/v1/rolls HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"\r\n")
            chunk = b"x" * (256 * 1024)
            if b"chunked" in head:
                chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
            client.setblocking(False)
            answer = []

            def answered():
                try:
                    client.send(chunk)
                except (BlockingIOError, ConnectionError):
                    pass
                try:
                    answer.append(client.recv(65536))
                except BlockingIOError:
                    return False
                except ConnectionError:
                    return True
                return b"\r\n\r\n" in b"".join(answer)
            yield waitFor(answered, timeout=30, what="the 413")
            self.assertTrue(b"".join(answer).startswith(b"HTTP/1.1 413 "), answer)


class APIProcess(AgentProcess):
    """
    A C{twistd -n p2-api} subprocess.
    """

    def __init__(self, testCase, store, port, *more):
        self.testCase = testCase
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.argv = [sys.executable, twistd, "-n", "--pidfile=", "p2-api", "--store", store,
                     "--listen", "tcp:%d:interface=127.0.0.1" % (port,)] + list(more)
        self.proto = None

    def report(self):
        from twisted.python import log
        log.msg("p2-api output:\n" + self.proto.output.decode("utf-8", "replace"))


class ProcessTests(FleetCommandMixin, unittest.TestCase):
    """
    (L{FleetCommandMixin} for its local store and C{spawn} of C{p2}.)
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_twistdPlugin(self):
        """
        C{twistd -n p2-api} serves the API on loopback: reads answer, a
        write with a wrong token is a 401, one with the token goes through
        (a 404 for an RC that is not there); the token is in none of its
        output; SIGTERM stops it.
        """
        port = freePort()
        process = APIProcess(self, self.url, port, "--token-file", tokenFile(self)).start()
        base = "http://127.0.0.1:%d/" % (port,)
        yield waitFor(lambda: request(b"GET", base + "api/v1/nodes").addCallback(
            lambda r: r and r[0] == 200), timeout=60, what="p2-api to answer")
        scale = base + "api/v1/rcs/web/scale"
        self.assertEqual((yield request(b"POST", scale, token="wrong"))[0], 401)
        self.assertEqual((yield request(b"POST", scale))[0], 401)
        self.assertEqual((yield request(b"POST", scale, token=TOKEN))[0], 404)
        yield process.kill(signal.SIGTERM)
        output = process.proto.output.decode("utf-8", "replace")
        self.assertIn("p2-api serving at %s" % (base,), output)
        self.assertIn("POST /api/v1/rcs/web/scale", output)
        self.assertNotIn(TOKEN, output)

    @defer.inlineCallbacks
    def test_portTaken(self):
        """
        When its port is taken, C{twistd -n p2-api} exits non-zero at once
        with one line saying why, rather than keep running serving nothing.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        process = APIProcess(self, self.url, taken.getsockname()[1]).start()
        yield waitFor(lambda: process.proto.ended.called, timeout=60, what="p2-api to exit")
        output = process.proto.output.decode("utf-8", "replace")
        self.assertEqual(process.proto.reason.value.exitCode, 1, output)
        self.assertIn("p2-api cannot listen at tcp:%d:interface=127.0.0.1: "
                      % (taken.getsockname()[1],), output)
        self.assertIn("Address already in use", output)
        self.assertNotIn("Traceback", output)

    @defer.inlineCallbacks
    def test_ui(self):
        """
        C{p2 ui --port 0} prints the URL it serves on loopback and serves
        the API and the page there until interrupted.
        """
        lines, ended = self.spawn("ui", "--port", "0")
        self.addCleanup(lambda: ended.called or ended.transport.signalProcess(signal.SIGKILL)
                        or ended)
        line = yield lines.get()
        self.assertIn("read-only", line)
        url = line.split(" is at ", 1)[1].split(" ", 1)[0]
        self.assertTrue(url.startswith("http://127.0.0.1:"), line)
        code, body = yield waitFor(lambda: request(b"GET", url + "api/v1/nodes").addCallback(
            lambda r: r if r and r[0] == 200 else None), timeout=30, what="p2 ui's API")
        self.assertEqual((yield request(b"GET", url))[0], 200)
        ended.transport.signalProcess(signal.SIGINT)
        self.assertEqual((yield ended), 130)

    @defer.inlineCallbacks
    def test_uiSaysWhileStoreUnreachable(self):
        """
        While its store cannot be reached, C{p2 ui} says so on standard
        error once (the store URL without its password, and that it
        retries), and once more when it gets through -- not a line per
        retry.
        """
        port = freePort()
        lines, ended = self.spawn("ui", "--port", "0",
                                  store="zk://p2:secret@127.0.0.1:%d/p2" % (port,))
        self.addCleanup(lambda: ended.called or ended.transport.signalProcess(signal.SIGKILL)
                        or ended)
        self.assertIn("the dashboard is at http://127.0.0.1:", (yield lines.get()))
        said = yield lines.errors.get()
        self.assertIn("p2 ui: cannot reach the store zk://", said)
        self.assertIn("127.0.0.1:%d/p2" % (port,), said)
        self.assertIn("retrying every 1 s", said)
        self.assertNotIn("secret", said)
        ended.transport.signalProcess(signal.SIGINT)
        yield ended

    @defer.inlineCallbacks
    def test_uiSaysWhenConnected(self):
        """
        Once the store C{p2 ui} could not open can be opened, it says so
        on standard error, after the one line saying it could not.
        """
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass  # a file where the store's directory should be
        store = "local://" + os.path.abspath(os.path.join(blocker, "state.db"))
        lines, ended = self.spawn("ui", "--port", "0", store=store)
        self.addCleanup(lambda: ended.called or ended.transport.signalProcess(signal.SIGKILL)
                        or ended)
        url = (yield lines.get()).split(" is at ", 1)[1].split(" ", 1)[0]
        said = yield lines.errors.get()
        self.assertIn("cannot reach the store %s" % (store,), said)
        self.assertEqual((yield request(b"GET", url + "api/v1/nodes"))[0], 503)
        os.remove(blocker)
        os.mkdir(blocker)
        self.assertEqual((yield lines.errors.get()), "p2 ui: connected to the store %s" % (store,))
        self.assertEqual((yield request(b"GET", url + "api/v1/nodes"))[0], 200)
        ended.transport.signalProcess(signal.SIGINT)
        self.assertEqual((yield ended), 130)
        self.assertEqual(lines.errors.pending, [])
