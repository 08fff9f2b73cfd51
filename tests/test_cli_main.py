"""
The C{p2} command's dispatch (L{p2twisted.cli.main}): only the verb's
module is imported, misspelled verbs get a suggestion, global options are
accepted after the verb, usage errors exit 2.
"""

import argparse
import json
import os
import subprocess
import sys

from twisted.internet import defer
from twisted.trial import unittest

from p2twisted.cli import main
from tests.cli import ROOT, P2CommandMixin

EXAMPLE = os.path.join(ROOT, "conf", "examples", "hello.yaml")


def importedModules(*argv):
    """
    Run C{p2 ARGV} in a fresh Python and list the modules it imported.

    @return: C{(set of module names, p2's exit code)}.
    """
    code = ("import sys, json\n"
            "from p2twisted.cli.main import main\n"
            "try:\n"
            "    main(%r)\n"
            "except SystemExit as e:\n"
            "    code = e.code\n"
            "sys.stderr.write('\\nMODULES ' + json.dumps([sorted(sys.modules), code]))\n"
            % (list(argv),))
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    modules, exitCode = json.loads(result.stderr.decode().rpartition("\nMODULES ")[2])
    return set(modules), exitCode


class VerbTableTests(unittest.TestCase):

    def test_tableMatchesModules(self):
        """
        L{main.VERBS} (what C{p2 --help} shows without importing the verb
        modules) has every verb the modules register, with their help.
        """
        parser = main.buildParser(everything=True)
        action = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
        registered = [(a.dest, a.help) for a in action._choices_actions]
        self.assertEqual(sorted(registered),
                         sorted((name, helpText) for name, module, helpText in main.VERBS))

    def test_helpImportsNoTwisted(self):
        """
        C{p2 --help} and C{p2 manifest sha FILE} (no store involved) import
        nothing of Twisted and no other verb's module.
        """
        for argv in (["--help"], ["manifest", "sha", EXAMPLE]):
            modules, code = importedModules(*argv)
            self.assertEqual(code, 0, argv)
            self.assertEqual([m for m in modules if m.split(".")[0] == "twisted"], [], argv)
            self.assertNotIn("p2twisted.cli.service", modules, argv)

    def test_storeVerbSkipsTLS(self):
        """
        A verb reading the store imports only its own verb module, and not
        pyOpenSSL (the reactor is built without TLS).
        """
        store = "local://" + os.path.abspath(os.path.join(self.mktemp(), "state.db"))
        modules, code = importedModules("--store", store, "nodes")
        self.assertEqual(code, 0)
        self.assertNotIn("OpenSSL", modules)
        self.assertNotIn("p2twisted.cli.service", modules)
        self.assertIn("p2twisted.cli.node", modules)


    def lazyLoaded(self, *argv, **kwargs):
        """
        Run C{p2 ARGV} in a fresh Python, then the code C{after} (a keyword
        argument) if given.

        @return: C{(names of L{main.LAZY_MODULES} it loaded, its exit code,
            its standard error)}.
        """
        code = ("import sys, json\n"
                "from p2twisted.cli.main import LAZY_MODULES, main\n"
                "try:\n"
                "    main(%r)\n"
                "except SystemExit as e:\n"
                "    code = e.code\n" % (list(argv),)) + kwargs.get("after", "") + (
                "loaded = [n for n in LAZY_MODULES if n in sys.modules\n"
                "          and type(sys.modules[n]).__name__ != '_LazyModule']\n"
                "sys.stderr.write('\\nLOADED ' + json.dumps([loaded, code]))\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err, _, report = result.stderr.decode().rpartition("\nLOADED ")
        loaded, exitCode = json.loads(report)
        return loaded, exitCode, err

    def test_storeVerbLoadsLessOfTwisted(self):
        """
        A verb on the local store does not load the modules Twisted imports
        for what it does not use (L{main.LAZY_MODULES}: cookies, TCP, UDP,
        Unix sockets), a fifth of its import time.
        """
        store = "local://" + os.path.abspath(os.path.join(self.mktemp(), "state.db"))
        loaded, code, err = self.lazyLoaded("--store", store, "schedule", EXAMPLE,
                                            "--node", "n1")
        self.assertEqual((code, loaded), (0, []), err)

    def test_lazyModulesLoadOnUse(self):
        """
        The modules a verb did not load are loaded when used: the reactor
        listens on TCP, cookies and pickles work.
        """
        store = "local://" + os.path.abspath(os.path.join(self.mktemp(), "state.db"))
        after = ("from twisted.internet import protocol, reactor\n"
                 "reactor.listenTCP(0, protocol.Factory(), interface='127.0.0.1')"
                 ".stopListening()\n"
                 "import http.cookiejar\n"
                 "http.cookiejar.CookieJar()\n"
                 "from twisted.python import reflect\n"
                 "assert reflect.fullFuncName(reflect.qual) == 'twisted.python.reflect.qual'\n")
        loaded, code, err = self.lazyLoaded("--store", store, "nodes", after=after)
        self.assertEqual(code, 0, err)
        # random: for tempfile, imported by http.cookiejar's urllib.request.
        self.assertEqual(sorted(loaded), ["http.cookiejar", "pickle", "random",
                                          "twisted.internet.tcp"])

    def test_zookeeperStore(self):
        """
        Verbs on a ZooKeeper store work with those modules not loaded.
        """
        from tests.zkserver import sharedServer
        store = "zk://%s/p2cli%s" % (sharedServer().hosts, os.getpid())
        loaded, code, err = self.lazyLoaded("--store", store, "schedule", EXAMPLE,
                                            "--node", "n1")
        self.assertEqual(code, 0, err)
        loaded, code, err = self.lazyLoaded("--store", store, "dump")
        self.assertEqual(code, 0, err)

    def test_readersImportNoAgent(self):
        """
        The verbs that read what agents write (status, inspect, nodes,
        label select, hook list) parse it through L{p2twisted.records},
        importing nothing of the agent.
        """
        store = "local://" + os.path.abspath(os.path.join(self.mktemp(), "state.db"))
        for argv in (["status"], ["inspect"], ["nodes"], ["label", "select", "node", ""],
                     ["hook", "list"]):
            modules, code = importedModules("--store", store, *argv)
            self.assertEqual(code, 0, argv)
            self.assertIn("p2twisted.records", modules, argv)
            self.assertEqual(sorted(m for m in modules if m.startswith("p2twisted.agent")), [],
                             argv)

    def test_storeVerbsImportWhatTheyUse(self):
        """
        The store verbs load no asyncio (nor its ssl and concurrent.futures:
        Deferreds are imported beside a stand-in), and C{p2 status} with no
        service deployed loads no YAML and no manifest parser.
        """
        store = "local://" + os.path.abspath(os.path.join(self.mktemp(), "state.db"))
        modules, code = importedModules("--store", store, "schedule", EXAMPLE, "--node", "n1")
        self.assertEqual(code, 0)
        self.assertIn("twisted.internet.defer", modules)
        self.assertEqual([m for m in modules if m.split(".")[0] in ("asyncio", "ssl")], [])
        modules, code = importedModules("--store", store, "status")
        self.assertEqual(code, 0)
        self.assertEqual([m for m in modules if m.split(".")[0] in ("asyncio", "ssl", "yaml")
                          or m.startswith("p2twisted.manifest")], [])

    def test_deferredsMeetAsyncio(self):
        """
        After a store verb, Deferreds (imported without asyncio) still run
        coroutines and generators, and meet the real asyncio's futures.
        """
        store = "local://" + os.path.abspath(os.path.join(self.mktemp(), "state.db"))
        code = """
import sys
from p2twisted.cli.main import main
try:
    main(["--store", %r, "nodes"])
except SystemExit as e:
    assert not e.code, e.code
assert "asyncio" not in sys.modules
from twisted.internet import defer
async def three():
    return 3
assert defer.ensureDeferred(three()).result == 3
def generator():
    yield
assert defer.Deferred.fromCoroutine(generator()) is not None
import asyncio
assert type(asyncio).__name__ == "module" and hasattr(asyncio, "get_event_loop")
loop = asyncio.new_event_loop()
future = loop.create_future()
d = defer.Deferred.fromFuture(future)
future.set_result(4)
assert loop.run_until_complete(d.asFuture(loop)) == 4
d = defer.succeed(5)
assert loop.run_until_complete(d.asFuture(loop)) == 5
loop.close()
assert defer.ensureDeferred(three()).result == 3
print("ok")
""" % (store,)
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual((result.stdout, result.returncode), (b"ok\n", 0),
                         result.stderr.decode())

    def test_placeholderParsed(self):
        """
        A verb whose module was not imported (a placeholder in C{p2
        --help}) is still parsed if argparse comes to it: its module is
        loaded then.
        """
        parser = main.buildParser()
        options = parser.parse_args(["manifest", "sha", EXAMPLE])
        from p2twisted.cli import manifest
        self.assertEqual((options.run, options.file), (manifest.runSHA, EXAMPLE))
        self.assertEqual(main.buildParser().parse_args(["status", "web"]).name, "web")



class MixinTests(P2CommandMixin, unittest.TestCase):

    def test_assertionsStillFail(self):
        """
        The mixin leaves C{TestCase.fail} alone: C{assertEqual} of lists,
        tuples and strings reports through it, and used to pass whatever
        they held (it ran C{p2} with the message instead), so C{succeed}
        never saw a failing C{p2}.
        """
        for first, second in ((["a"], []), ((1, "x"), (0, "")), ("a", "b")):
            self.assertRaises(self.failureException, self.assertEqual, first, second)


class DispatchTests(P2CommandMixin, unittest.TestCase):

    @defer.inlineCallbacks
    def test_unknownVerb(self):
        """
        A misspelled verb gets the closest one, exit 2.
        """
        line, code = yield self.p2Fails("statsu")
        self.assertEqual(code, 2)
        self.assertIn("unknown verb 'statsu'; did you mean 'status'?", line)
        line, code = yield self.p2Fails("node", "remov", "n1")
        self.assertEqual(code, 2)
        self.assertIn("did you mean 'remove'?", line)
        line, code = yield self.p2Fails("start", "--supervisor", "runitt")
        self.assertEqual(code, 2)
        self.assertIn("invalid --supervisor 'runitt'; did you mean 'runit'?", line)

    @defer.inlineCallbacks
    def test_globalOptionsAfterTheVerb(self):
        """
        C{--store}, C{-v} and C{--json} are accepted after the verb too.
        """
        other = "local://" + os.path.abspath(os.path.join(self.mktemp(), "other.db"))
        yield self.succeed("schedule", EXAMPLE, "--node", "n1", "--store", other, "-v")
        out = yield self.succeed("nodes", "--store", other, "--json")
        self.assertIn("n1", json.loads(out))
        out = yield self.succeed("--json", "nodes")
        self.assertEqual(json.loads(out), {})

    @defer.inlineCallbacks
    def test_jsonWhereThereIsNone(self):
        """
        C{--json} on a verb without JSON output is a usage error.
        """
        line, code = yield self.p2Fails("init", "--json")
        self.assertEqual(code, 2)
        self.assertIn("p2 init has no JSON output", line)

    @defer.inlineCallbacks
    def test_offlineVerbErrors(self):
        """
        A verb run without the reactor still reports its errors on one line
        with its exit code.
        """
        line, code = yield self.p2Fails("manifest", "sha", os.path.abspath(self.mktemp()))
        self.assertEqual(code, 1)
        self.assertIn("p2: ", line)
        line, code = yield self.p2Fails("describe", "statik")
        self.assertEqual(code, 2)
        self.assertIn("static", line)


class ReactorWithoutTLSTests(unittest.TestCase):

    def test_tlsStillWorks(self):
        """
        The reactor C{p2} builds without pyOpenSSL still makes TLS
        connections: C{listenSSL}/C{connectSSL} (they failed with "SSL
        support is not present" for the rest of the process) and an HTTPS
        request with C{twisted.web.client.Agent}, as a verb checking an
        https artifact location or a treq-based store would.
        """
        import twisted.test
        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        code = """
import argparse, sys
from p2twisted.cli import main
main._importReactor(argparse.Namespace())
assert "OpenSSL" not in sys.modules
from twisted.internet import defer, reactor, ssl, task
from twisted.internet.interfaces import IReactorSSL
from twisted.web import client, resource, server, static
assert IReactorSSL.providedBy(reactor)

class Trusting(client.BrowserLikePolicyForHTTPS):
    def creatorForNetloc(self, host, port):
        return ssl.CertificateOptions(verify=False)

@defer.inlineCallbacks
def run(reactor):
    with open(%r, "rb") as f:
        cert = ssl.PrivateCertificate.loadPEM(f.read())
    root = resource.Resource()
    root.putChild(b"", static.Data(b"over tls", "text/plain"))
    port = reactor.listenSSL(0, server.Site(root), cert.options(), interface="127.0.0.1")
    agent = client.Agent(reactor, contextFactory=Trusting())
    response = yield agent.request(b"GET", b"https://127.0.0.1:%%d/" %% port.getHost().port)
    body = yield client.readBody(response)
    yield port.stopListening()
    print(body.decode())
task.react(run)
""" % (pem,)
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual((result.returncode, result.stdout.decode().strip()), (0, "over tls"),
                         result.stderr.decode())


class ParserErrorTests(unittest.TestCase):

    def test_choicesQuotedOrNot(self):
        """
        The closest choice is suggested whether argparse quotes the choices
        in its message or not (Python 3.12.9, 3.13.2 and later).
        """
        for listed in ("'runit', 'builtin', 'auto'", "runit, builtin, auto"):
            parser = main.Parser(prog="p2 start")
            written = []
            parser.exit = lambda status, message: written.append((status, message))
            parser.error("argument --supervisor: invalid choice: 'runitt' (choose from %s)"
                         % (listed,))
            [(status, message)] = written
            self.assertEqual(status, 2)
            self.assertIn("invalid --supervisor 'runitt'; did you mean 'runit'?", message)
