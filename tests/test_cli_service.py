"""
Tests for the service verbs (C{p2 list, describe, add, config, deploy,
status}), running the real C{p2} command; one end-to-end test deploys a
C{static} service to a real agent.
"""

import json
import os
import sys

from twisted.internet import defer, utils
from twisted.trial import unittest

import p2twisted.cli.main
from tests.agentharness import AgentHarness, freePort, httpGet
from tests.cli import ROOT, P2CommandMixin
from tests.reachable import reachableDirectory
from tests.store_contract import waitFor

#: The verb modules of this feature, added to C{VERB_MODULES} when missing.
VERBS = ("service", "services_agent")


def p2Argv():
    """
    @return: the arguments running C{p2} with Python: C{-m p2twisted.cli},
        or, until C{VERB_MODULES} lists the service verbs, a wrapper adding them.
    """
    missing = [v for v in VERBS if v not in p2twisted.cli.main.VERB_MODULES]
    if not missing:
        return ["-m", "p2twisted.cli"]
    return ["-c", "import p2twisted.cli.main as m; m.VERB_MODULES += %r; m.main()"
            % (tuple(missing),)]


class ServiceCommandMixin(P2CommandMixin):
    def setUp(self):
        P2CommandMixin.setUp(self)
        self.stateDir = os.path.abspath(self.mktemp())
        self.env["P2_STATE_DIR"] = self.stateDir

    def p2(self, *args):
        argv = p2Argv() + ["--store", self.url] + list(args)
        d = utils.getProcessOutputAndValue(sys.executable, argv, env=self.env, path=ROOT)
        return d.addCallback(lambda r: (r[0].decode("utf-8"), r[1].decode("utf-8"), r[2]))


class CommandTests(ServiceCommandMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_list(self):
        out = yield self.succeed("list")
        names = [line.split()[0] for line in out.splitlines()]
        self.assertEqual(names, ["command", "python", "static"])

    @defer.inlineCallbacks
    def test_describe(self):
        out = yield self.succeed("describe", "python")
        self.assertIn("--port VALUE", out)
        self.assertIn("default 8080", out)
        self.assertIn("install ", out)
        self.assertIn("packages ", out)

    @defer.inlineCallbacks
    def test_describeUnsetDefault(self):
        """
        An option whose help says what leaving it unset means (C{--run-as}: the
        service name) is not also said to default to none.
        """
        out = yield self.succeed("describe", "static")
        [line] = [line for line in out.splitlines() if "--run-as" in line]
        self.assertIn("(default: the service name;", line)
        self.assertNotIn("default none", line)
        [line] = [line for line in out.splitlines() if "--directory" in line]
        self.assertTrue(line.endswith("(required)"), line)

    @defer.inlineCallbacks
    def test_describeColumns(self):
        """
        The options' types and help start in one column, also after a flag
        longer than the others (C{command}'s C{--status-path}).
        """
        out = yield self.succeed("describe", "command")
        lines = out.split("options:\n", 1)[1].split("\n\n", 1)[0].splitlines()
        self.assertIn("--status-path VALUE", out)
        self.assertEqual(len({line.index(" str ") if " str " in line else line.index(" int ")
                              for line in lines}), 1, out)

    @defer.inlineCallbacks
    def test_unknownTemplate(self):
        line, code = yield self.p2Fails("describe", "plone4")
        self.assertIn("known templates: command, python, static", line)
        line, code = yield self.p2Fails("add", "web", "--template", "plone4")
        self.assertIn("known templates: command, python, static", line)

    @defer.inlineCallbacks
    def test_mistypedOption(self):
        line, code = yield self.p2Fails("add", "web", "--template", "static", "--prot", "80",
                                     "--directory", self.stateDir)
        self.assertIn("did you mean --port?", line)
        self.assertEqual(code, 2)

    @defer.inlineCallbacks
    def test_addAndConfig(self):
        www = os.path.abspath(self.mktemp())
        os.makedirs(www)
        out = yield self.succeed("add", "web", "--template", "static", "--port", "9000",
                                 "--directory", www)
        self.assertIn("added service web", out)
        line, code = yield self.p2Fails("add", "web", "--template", "static", "--directory", www)
        self.assertIn("already exists", line)
        out = yield self.succeed("config", "web")
        self.assertIn("port = 9000", out)
        out = yield self.succeed("config", "web", "port=9001")
        self.assertIn("port = 9001 (was 9000)", out)
        self.assertIn("p2 deploy web", out)
        out = yield self.succeed("config", "web", "port=9001")
        self.assertIn("unchanged", out)
        line, code = yield self.p2Fails("config", "web", "prot=1")
        self.assertIn("did you mean port=?", line)
        self.assertEqual(code, 2)

    @defer.inlineCallbacks
    def test_settingsFile(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("command: sleep 100\nport: 7000\n")
        yield self.succeed("add", "job", "--template", "command", "--config", path,
                           "--port", "7001")
        out = yield self.succeed("config", "job")
        self.assertIn('command = "sleep 100"', out)
        self.assertIn("port = 7001", out)

    @defer.inlineCallbacks
    def test_deployMissing(self):
        line, code = yield self.p2Fails("deploy", "nope", "--node", "n1")
        self.assertIn("there is no service nope", line)

    @defer.inlineCallbacks
    def test_statusNotDeployed(self):
        yield self.succeed("add", "job", "--template", "command", "--command", "true")
        out = yield self.succeed("status")
        self.assertIn("job (command)", out)
        self.assertIn("not deployed", out)

    @defer.inlineCallbacks
    def test_statusUnreadableService(self):
        """
        One unreadable service definition does not hide the others from
        C{p2 status}: it gets one line naming its key (and C{--json} an
        C{error}); C{p2 status NAME} of it fails with that line.
        """
        from twisted.internet import reactor

        from p2twisted.store import keys, openStore
        yield self.succeed("add", "job", "--template", "command", "--command", "true")
        store = yield openStore(self.url, reactor)
        try:
            yield store.put(keys.service("broken"), b"{not json")
        finally:
            yield store.close()
        out = yield self.succeed("status")
        self.assertIn("job (command)", out)
        self.assertIn("broken: unreadable record", out)
        self.assertIn("'services/broken'", out)
        rows = json.loads((yield self.succeed("status", "--json")))
        self.assertEqual([(r["service"], "error" in r) for r in rows],
                         [("broken", True), ("job", False)])
        line, _ = yield self.p2Fails("status", "broken")
        self.assertIn("'services/broken'", line)

    @defer.inlineCallbacks
    def test_crashLoopShown(self):
        """
        A pod whose status record says a service is crash-looping shows it
        in C{p2 status} and C{p2 inspect} (and their JSON), beside the
        agent's state.
        """
        from p2twisted.store import keys, openStore
        yield self.succeed("add", "job", "--template", "command", "--command", "false")
        yield self.succeed("deploy", "job", "--node", "n1")
        loop = {"restarts": 7, "seconds": 63, "last_exit": "exit 1", "delay": 60.0,
                "service": "job__job__launch",
                "text": "crash-looping (7 restarts in 63 s, last exit 1)"}
        store = yield openStore(self.url)
        try:
            yield store.put(keys.status("pods", "n1", "job"), json.dumps(
                {"pod": "job", "node": "n1", "state": "running", "error": None,
                 "restarts": 7, "crash_loop": loop}).encode())
        finally:
            yield store.close()
        line = "job__job__launch: crash-looping (7 restarts in 63 s, last exit 1)"
        out = yield self.succeed("status")
        self.assertIn(line, out)
        out = yield self.succeed("inspect")
        self.assertIn(line, out)
        rows = json.loads((yield self.succeed("inspect", "--json")))
        self.assertEqual((rows[0]["restarts"], rows[0]["crash_loop"]), (7, loop))
        info = json.loads((yield self.succeed("status", "--json")))
        self.assertEqual(info[0]["nodes"][0]["crash_loop"], loop)

    def deployWhile(self, write):
        """
        Run C{p2 deploy job --node n1 --wait} while C{write()} plays the
        agent, every half second.

        @return: L{Deferred} firing with the command's C{(out, err, code)}.
        """
        from twisted.internet import reactor, task
        writer = task.LoopingCall(write)
        writer.clock = reactor
        writer.start(0.5, now=False)
        self.addCleanup(lambda: writer.running and writer.stop())
        return self.p2("deploy", "job", "--node", "n1", "--wait", "--timeout", "120")

    @defer.inlineCallbacks
    def test_waitGivesUpOnRepeatedFailures(self):
        """
        C{deploy --wait} stops, long before its timeout, once the node's
        agent has failed the deploy three times in a row while it watched,
        and says why with the agent's error.
        """
        from p2twisted.store import keys, openStore
        yield self.succeed("add", "job", "--template", "command", "--command", "true")
        store = yield openStore(self.url)
        self.addCleanup(store.close)
        attempts = [0]

        def fail():
            attempts[0] += 1
            return store.put(keys.status("pods", "n1", "job"), json.dumps(
                {"pod": "job", "node": "n1", "state": "failed", "attempts": attempts[0],
                 "error": "run_as job is refused"}).encode())
        out, err, code = yield self.deployWhile(fail)
        self.assertEqual(code, 1, (out, err))
        self.assertIn("job failed on n1 3 times in a row while waiting: run_as job is "
                      "refused", err)
        self.assertNotIn("after 120s", err)

    @defer.inlineCallbacks
    def test_waitStopsAtRefusal(self):
        """
        C{deploy --wait} stops at once when the node's agent refused the
        manifest it deployed (its auth policy), saying why; a refusal of an
        earlier manifest does not stop it.
        """
        from p2twisted.store import keys, openStore
        from p2twisted.manifest import parseManifest
        yield self.succeed("add", "job", "--template", "command", "--command", "true")
        store = yield openStore(self.url)
        self.addCleanup(store.close)
        status = keys.status("pods", "n1", "job")
        yield store.put(status, json.dumps(
            {"pod": "job", "node": "n1", "state": "refused", "sha": "0" * 64,
             "error": "an older one"}).encode())

        @defer.inlineCallbacks
        def refuse():
            entry = yield store.get(keys.intent("n1", "job"))
            if entry is not None:
                yield store.put(status, json.dumps(
                    {"pod": "job", "node": "n1", "state": "refused",
                     "sha": parseManifest(entry.value).sha(),
                     "error": "refused by auth policy keyring: the manifest is not signed; "
                              "signer: no accepted signature"}).encode())
        out, err, code = yield self.deployWhile(refuse)
        self.assertEqual(code, 1, (out, err))
        self.assertIn("the agent of n1 refused job: refused by auth policy keyring: the "
                      "manifest is not signed", err)

    @defer.inlineCallbacks
    def test_waitIgnoresRefusalOfEarlierBytes(self):
        """
        A refusal of the same SHA written before (the manifest unsigned, now
        deployed signed: a signature changes the bytes, not the SHA) does not
        stop C{deploy --wait}; the agent's refusal of the intent as deployed
        does.
        """
        from p2twisted.store import keys, openStore
        from p2twisted.manifest import parseManifest
        from p2twisted.records import PodStatus
        yield self.succeed("add", "job", "--template", "command", "--command", "true")
        yield self.succeed("deploy", "job", "--node", "n1")
        store = yield openStore(self.url)
        self.addCleanup(store.close)
        before = yield store.get(keys.intent("n1", "job"))
        sha = parseManifest(before.value).sha()
        status = keys.status("pods", "n1", "job")
        yield store.put(status, PodStatus("job", "n1", "refused", sha, "not signed",
                                          intent_version=before.version).toBytes())
        out, err, code = yield self.p2("deploy", "job", "--node", "n1", "--wait",
                                       "--timeout", "1")
        self.assertEqual(code, 1, (out, err))
        self.assertNotIn("the agent of n1 refused", err)
        self.assertIn("job is not running on n1 after 1s", err)

        @defer.inlineCallbacks
        def refuse():
            entry = yield store.get(keys.intent("n1", "job"))
            yield store.put(status, PodStatus("job", "n1", "refused", sha, "still not signed",
                                              intent_version=entry.version).toBytes())
        out, err, code = yield self.deployWhile(refuse)
        self.assertEqual(code, 1, (out, err))
        self.assertIn("the agent of n1 refused job: still not signed", err)

    @defer.inlineCallbacks
    def test_waitTimeout(self):
        """
        With no agent, C{deploy --wait} fails at its timeout saying so.
        """
        yield self.succeed("add", "job", "--template", "command", "--command", "true")
        out, err, code = yield self.p2("deploy", "job", "--node", "n9", "--wait",
                                       "--timeout", "0.5")
        self.assertEqual(code, 1)
        self.assertIn("no agent has registered", out)
        self.assertIn("job is not running on n9 after 0.5s", err)
        self.assertIn("p2 start", err)


    @defer.inlineCallbacks
    def test_waitNamesThisHostsAgent(self):
        """
        Deployed to this host's node name, without an agent, while this
        host's agent runs under another node name (the demo's agent is node
        C{demo}), C{deploy --wait} names that node: C{p2 start} would only
        say it runs.
        """
        import socket

        from p2twisted.store import keys, openStore
        store = yield openStore(self.url)
        self.addCleanup(store.close)
        yield store.put(keys.machine("demo"), json.dumps(
            {"node": "demo", "hostname": socket.gethostname(), "machine_id": "m",
             "process": {}}).encode())
        yield store.put(keys.machine("elsewhere"), json.dumps(
            {"node": "elsewhere", "hostname": "not-" + socket.gethostname(),
             "machine_id": "m2", "process": {}}).encode())
        yield self.succeed("add", "job", "--template", "command", "--command", "true")
        out, err, code = yield self.p2("deploy", "job", "--wait", "--timeout", "0.5")
        self.assertEqual(code, 1)
        self.assertIn(": no agent has registered there yet (start one with 'p2 start'; "
                      "this host's agent runs as node demo: deploy with --node demo)", out)
        # Another node's missing agent is no business of this host's.
        out, err, code = yield self.p2("deploy", "job", "--node", "n9", "--wait",
                                       "--timeout", "0.5")
        self.assertIn("n9: no agent has registered there yet (start one with 'p2 start')\n",
                      out)

class EndToEndTests(ServiceCommandMixin, unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_staticService(self):
        """
        C{p2 add} + C{p2 deploy --wait} run a static service on a real
        agent; C{p2 config port=...} moves it; an unchanged config restarts
        nothing.
        """
        www = reachableDirectory(self, "p2-www-")  # the pod runs as nobody
        with open(os.path.join(www, "hello.txt"), "w") as f:
            f.write("hello\n")
        os.chmod(os.path.join(www, "hello.txt"), 0o644)
        harness = AgentHarness(self, self.url, node="n1").start()
        port, port2 = freePort(), freePort()
        yield self.succeed("add", "web", "--template", "static", "--port", str(port),
                           "--directory", www, "--run-as", "nobody")
        out = yield self.succeed("deploy", "web", "--node", "n1", "--wait", "--timeout", "60")
        self.assertIn("web is running on n1", out)
        result = yield httpGet("http://127.0.0.1:%d/_status" % (port,))
        self.assertEqual(result[0], 200)
        self.assertEqual((yield httpGet("http://127.0.0.1:%d/hello.txt" % (port,))),
                         (200, b"hello\n"))
        status = yield self.succeed("status", "web")
        self.assertIn("in sync", status)
        sha = status.split("intent ")[1].split()[0]

        out = yield self.succeed("config", "web", "port=%d" % (port2,))
        self.assertIn("re-deployed web", out)
        yield waitFor(lambda: httpGet("http://127.0.0.1:%d/hello.txt" % (port2,)).addCallback(
            lambda r: r == (200, b"hello\n")), timeout=60, what="web on its new port")
        yield harness.whenConverged()
        status = yield self.succeed("status", "web")
        newSha = status.split("intent ")[1].split()[0]
        self.assertNotEqual(newSha, sha)
        self.assertIsNone((yield httpGet("http://127.0.0.1:%d/_status" % (port,))))

        # Unchanged: same SHA, nothing restarts.
        out = yield self.succeed("config", "web", "port=%d" % (port2,))
        self.assertIn("unchanged", out)
        out = yield self.succeed("deploy", "web", "--node", "n1", "--wait")
        self.assertIn(newSha, out)
        self.assertNotIn("deploying", out)

    @defer.inlineCallbacks
    def test_waitForUptimeWithoutStatusCheck(self):
        """
        A pod without a status check is running for C{deploy --wait} once its
        health passes -- its service up the agent's C{min_uptime} -- and one
        whose command keeps exiting never is: the wait says health critical
        and why, and times out.
        """
        AgentHarness(self, self.url, node="n1", minUptime=1.0).start()
        yield self.succeed("add", "sleeper", "--template", "command", "--command",
                           "exec sleep 1000", "--run-as", "nobody")
        out = yield self.succeed("deploy", "sleeper", "--node", "n1", "--wait", "--timeout", "60")
        self.assertIn("health passing (1 service up for 1 s or more)", out)
        self.assertIn("sleeper is running on n1", out)
        yield self.succeed("add", "crashy", "--template", "command", "--command", "exit 3",
                           "--run-as", "nobody")
        out, err, code = yield self.p2("deploy", "crashy", "--node", "n1", "--wait",
                                       "--timeout", "10")
        self.assertEqual(code, 1, (out, err))
        self.assertIn("health critical (crashy__", out)
        self.assertIn("crashy is not running on n1 after 10s", err)

    @defer.inlineCallbacks
    def test_healthGatesWait(self):
        """
        A pod that runs but fails its status check is not 'running' for
        C{deploy --wait}: it says health critical and why, and times out;
        fixed, it passes.  The health disappears with the agent.
        """
        harness = AgentHarness(self, self.url, node="n1").start()
        port = freePort()
        # http.server answers 404 on /_status, 200 on /.
        yield self.succeed("add", "files", "--template", "command", "--port", str(port),
                           "--command", "exec python3 -m http.server --bind 127.0.0.1 $PORT",
                           "--run-as", "nobody")
        out, err, code = yield self.p2("deploy", "files", "--node", "n1", "--wait",
                                       "--timeout", "20")
        self.assertEqual(code, 1, out)
        self.assertIn("health critical (GET http://127.0.0.1:%d/_status: HTTP 404" % (port,), out)
        self.assertIn("files is not running on n1 after 20s", err)
        status = json.loads((yield self.succeed("status", "files", "--json")))
        health = status[0]["nodes"][0]["health"]
        self.assertEqual(health["status"], "critical")
        self.assertEqual(health["sha"], status[0]["nodes"][0]["reality"])
        self.assertIn("health critical", (yield self.succeed("status", "files")))

        yield self.succeed("config", "files", "status_path=/")
        out = yield self.succeed("deploy", "files", "--node", "n1", "--wait", "--timeout", "60")
        self.assertIn("health passing (GET http://127.0.0.1:%d/: HTTP 200" % (port,), out)
        self.assertIn("passing", (yield self.succeed("inspect")))

        yield harness.stop()
        status = json.loads((yield self.succeed("status", "files", "--json")))
        self.assertIsNone(status[0]["nodes"][0]["health"])
