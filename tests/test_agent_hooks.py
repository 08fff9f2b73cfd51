"""
Tests for L{p2twisted.agent.hooks}: hooks run as real processes, in order,
with the documented environment and hard time limits; failures are recorded
and block only when required.

L{HookEventsEndToEnd} runs a real agent.
"""

import json
import os
import signal

from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from p2twisted.agent.config import AgentConfig
from p2twisted.agent.hooks import (
    BLOCKING_EVENTS, EVENTS, HOOK_PATH, HookContext, HookFailed, HookRunner, podContext)
from p2twisted.agent.layout import PodLayout
from p2twisted.agent.supervisors import processAlive as alive
from p2twisted.agent.worker import PodWorker
from p2twisted.manifest import parseManifest
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore
from tests.store_contract import waitFor

#: The variables every hook gets, and nothing else.
DOCUMENTED_ENV = {"HOOK", "HOOK_EVENT", "HOOKED_NODE", "HOOKED_POD_ID", "HOOKED_POD_HOME",
                  "HOOKED_POD_MANIFEST", "HOOKED_CONFIG_PATH", "HOOKED_ENV_PATH",
                  "HOOKED_POD_UNIQUE_KEY", "PATH", "P2_RUN_ID"}

MANIFEST = b"""id: web
run_as: nobody
launchables:
  app:
    launchable_type: hoist
    location: file:///nowhere/web_1.tar.gz
"""

#: A hook recording "HOOK HOOK_EVENT HOOKED_POD_ID" to the file named in it.
RECORDER = """#!/bin/sh
echo "$HOOK $HOOK_EVENT $HOOKED_POD_ID" >> %s
"""


def writeScript(path, text, mode=0o755):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def makeConfig(base, **settings):
    values = dict(node="n1", store="memory://", podRoot=os.path.join(base, "pods"),
                  stateDir=os.path.join(base, "state"), hooksRoot=os.path.join(base, "hooks"),
                  hooksDirectory=os.path.join(base, "hooks.d"), hookTermAfter=5.0,
                  hookKillAfter=10.0)
    values.update(settings)
    return AgentConfig(**values)


class RunnerTestMixin(object):

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.store = MemoryStore(clock=reactor)
        self.record = os.path.join(self.base, "record")
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def runner(self, **settings):
        self.config = makeConfig(self.base, **settings)
        return HookRunner(self.config, reactor, self.store)

    def local(self, name, text, event=None, mode=0o755):
        """
        Write a hook into the local hooks directory (into its C{event}
        subdirectory when given).
        """
        parts = [self.base, "hooks.d"] + ([event] if event else []) + [name]
        return writeScript(os.path.join(*parts), text, mode)

    def recorder(self, name, event=None):
        return self.local(name, RECORDER % (self.record,), event)

    def recorded(self):
        try:
            with open(self.record) as f:
                return [tuple(line.split(" ")) for line in f.read().splitlines()]
        except FileNotFoundError:
            return []

    @defer.inlineCallbacks
    def status(self, event, hook):
        entry = yield self.store.get(keys.status("hooks", "n1", event, hook))
        return json.loads(entry.value) if entry else None


class HookRunnerTests(RunnerTestMixin, unittest.TestCase):
    """
    L{HookRunner.run} with real hook processes.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_documentedEnvironment(self):
        """
        A hook gets exactly the documented variables; HOOKED_POD_MANIFEST is
        a copy of the manifest, deleted when the hook has ended.
        """
        dump = os.path.join(self.base, "env")
        self.local("dump", "#!/bin/sh\ncat /proc/$$/environ > %s\ncp \"$HOOKED_POD_MANIFEST\" "
                           "%s.manifest\n" % (dump, dump), "before_install")
        runner = self.runner()
        layout = PodLayout(self.config.podRoot, "web")
        manifest = parseManifest(MANIFEST)
        yield runner.run("before_install", podContext(layout, manifest))
        with open(dump, "rb") as f:
            env = dict(item.decode().split("=", 1) for item in f.read().split(b"\0") if item)
        self.assertEqual(set(env), DOCUMENTED_ENV)
        self.assertEqual(env["HOOK"], "dump")
        self.assertEqual(env["HOOK_EVENT"], "before_install")
        self.assertEqual(env["HOOKED_NODE"], "n1")
        self.assertEqual(env["HOOKED_POD_ID"], "web")
        self.assertEqual(env["HOOKED_POD_HOME"], layout.home)
        self.assertEqual(env["HOOKED_CONFIG_PATH"], layout.configPath(manifest.sha()))
        self.assertEqual(env["HOOKED_ENV_PATH"], layout.envDir)
        self.assertEqual(env["HOOKED_POD_UNIQUE_KEY"], "web")
        self.assertEqual(env["PATH"], HOOK_PATH)
        with open(dump + ".manifest", "rb") as f:
            self.assertEqual(f.read(), MANIFEST)
        self.assertFalse(os.path.exists(env["HOOKED_POD_MANIFEST"]))

    @defer.inlineCallbacks
    def test_agentInitWithoutPod(self):
        """
        Without a pod (C{agent_init}) the pod variables are present and empty.
        """
        dump = os.path.join(self.base, "env")
        self.local("dump", "#!/bin/sh\ncat /proc/$$/environ > %s\n" % (dump,), "agent_init")
        yield self.runner().run("agent_init")
        with open(dump, "rb") as f:
            env = dict(item.decode().split("=", 1) for item in f.read().split(b"\0") if item)
        self.assertEqual(set(env), DOCUMENTED_ENV)
        for name in ("HOOKED_POD_ID", "HOOKED_POD_HOME", "HOOKED_POD_MANIFEST",
                     "HOOKED_CONFIG_PATH", "HOOKED_ENV_PATH", "HOOKED_POD_UNIQUE_KEY"):
            self.assertEqual(env[name], "", name)

    @defer.inlineCallbacks
    def test_nameOrderAcrossSources(self):
        """
        Hooks of the event directory, the top-level directory (P2 style, run
        for every event) and hook pods' links run in name order; other
        events' hooks and dotfiles do not run.
        """
        self.recorder("b-local", "after_install")
        self.recorder("d-toplevel")
        self.recorder("x-other-event", "before_install")
        self.recorder(".hidden", "after_install")
        runner = self.runner()
        target = writeScript(os.path.join(self.base, "pod", "launch"), RECORDER % (self.record,))
        os.makedirs(os.path.join(self.config.hooksRoot, "exec", "after_install"))
        for name in ("a_pod_launch", "c_pod_launch"):
            os.symlink(target, os.path.join(self.config.hooksRoot, "exec", "after_install", name))
        yield runner.run("after_install", HookContext(podId="web"))
        self.assertEqual(self.recorded(), [
            ("a_pod_launch", "after_install", "web"), ("b-local", "after_install", "web"),
            ("c_pod_launch", "after_install", "web"), ("d-toplevel", "after_install", "web")])

    @defer.inlineCallbacks
    def test_newHooksTakeEffectAtOnce(self):
        """
        Hooks are looked up at each run: one added between two runs runs in
        the second.
        """
        runner = self.runner()
        yield runner.run("after_launch")
        self.assertEqual(self.recorded(), [])
        self.recorder("late", "after_launch")
        yield runner.run("after_launch")
        self.assertEqual(self.recorded(), [("late", "after_launch", "")])

    @defer.inlineCallbacks
    def test_noHooks(self):
        """
        Without a local directory or hook pods, running an event does nothing.
        """
        yield self.runner(hooksDirectory=None).run("before_install")
        self.assertEqual(self.store.state.entries, {})

    def test_unknownEvent(self):
        """
        An unknown event fails with ValueError naming the events.
        """
        e = self.failureResultOf(self.runner().run("before_lunch")).value
        self.assertIsInstance(e, ValueError)
        self.assertIn("before_install", str(e))

    @defer.inlineCallbacks
    def test_outputLoggedWithHookName(self):
        """
        Each line a hook writes (stdout and stderr) is logged prefixed with
        the hook's name.
        """
        self.local("talker", "#!/bin/sh\necho hello\necho oops >&2\n", "after_launch")
        yield self.runner().run("after_launch")
        from twisted.logger import formatEvent
        lines = [formatEvent(e) for e in self.logged if e.get("event") == "hook-output"]
        self.assertEqual(sorted(lines), ["[talker] hello", "[talker] oops"])

    @defer.inlineCallbacks
    def test_failureRecordedAndIgnored(self):
        """
        A failing hook does not stop the run or the later hooks; its exit
        code, duration and last lines are recorded in status.
        """
        self.local("a-fails", "#!/bin/sh\necho first\necho broken >&2\nexit 3\n", "before_install")
        self.recorder("b-next", "before_install")
        result = yield self.runner().run("before_install", HookContext(podId="web"))
        self.assertIsNone(result)
        self.assertEqual(self.recorded(), [("b-next", "before_install", "web")])
        status = yield self.status("before_install", "a-fails")
        self.assertEqual((status["state"], status["exit_code"], status["signal"]), ("failed", 3, None))
        self.assertEqual(status["outcome"], "exit 3")
        self.assertEqual(status["output"], "first\nbroken")
        self.assertEqual((status["pod"], status["required"]), ("web", False))
        self.assertGreaterEqual(status["duration"], 0)
        ok = yield self.status("before_install", "b-next")
        self.assertEqual(ok["state"], "ok")

    @defer.inlineCallbacks
    def test_missingAndNotExecutable(self):
        """
        A dangling link and a non-executable file are recorded and not run;
        the others still run.
        """
        self.local("a-plain", "#!/bin/sh\necho ran >> %s\n" % (self.record,), "after_launch",
                   mode=0o644)
        os.symlink("/nonexistent/hook", os.path.join(self.base, "hooks.d", "after_launch", "b-gone"))
        self.recorder("c-ok", "after_launch")
        yield self.runner().run("after_launch")
        self.assertEqual(self.recorded(), [("c-ok", "after_launch", "")])
        self.assertEqual((yield self.status("after_launch", "a-plain"))["state"], "not_executable")
        self.assertEqual((yield self.status("after_launch", "b-gone"))["state"], "missing")

    @defer.inlineCallbacks
    def test_hungHookKilledWithItsChild(self):
        """
        A hook that ignores SIGTERM and forks a child that does too is
        SIGKILLed at hook_kill_after; neither process survives, the run
        continues and the kill is recorded.
        """
        pidfile = os.path.join(self.base, "pids")
        self.local("a-hangs", "#!/bin/sh\ntrap '' TERM\n(trap '' TERM; while :; do sleep 0.05; "
                              "done) &\necho $$ $! > %s\nwhile :; do sleep 0.05; done\n"
                              % (pidfile,), "before_launch")
        self.recorder("b-after", "before_launch")
        yield self.runner(hookTermAfter=0.3, hookKillAfter=0.8).run("before_launch")
        with open(pidfile) as f:
            pids = [int(p) for p in f.read().split()]
        self.assertEqual(len(pids), 2)
        for pid in pids:
            self.assertFalse(alive(pid), "process %d survived" % (pid,))
        status = yield self.status("before_launch", "a-hangs")
        self.assertEqual(status["state"], "timeout")
        self.assertEqual(status["signal"], signal.SIGKILL)
        self.assertEqual(status["outcome"], "killed by SIGKILL after timeout")
        self.assertGreaterEqual(status["duration"], 0.8)
        self.assertLess(status["duration"], 30)  # the configured limits, not the defaults
        self.assertEqual(self.recorded(), [("b-after", "before_launch", "")])

    @defer.inlineCallbacks
    def test_escapedGrandchildKilled(self):
        """
        A hook whose grandchild leaves its session with C{setsid} and ignores
        SIGTERM does not hold the run up: at hook_kill_after the run ends as
        a timeout, the escaped process is killed with it, and nothing of the
        hook remains.
        """
        pidfile = os.path.join(self.base, "escaped")
        self.local("escapes", "#!/bin/sh\ntrap '' TERM\n"
                              "setsid sh -c 'trap \"\" TERM; echo $$ > %s; exec sleep 1000' &\n"
                              "while [ ! -s %s ]; do sleep 0.01; done\n"
                              "echo hook $$ >> %s\n"
                              "while :; do sleep 0.05; done\n" % (pidfile, pidfile, pidfile),
                   "before_launch")
        self.recorder("later", "before_launch")
        yield self.runner(hookTermAfter=0.3, hookKillAfter=0.8).run("before_launch")
        status = yield self.status("before_launch", "escapes")
        self.assertEqual((status["state"], status["signal"]), ("timeout", signal.SIGKILL))
        with open(pidfile) as f:
            escaped, _, hook = f.read().split()
        for pid in (int(escaped), int(hook)):
            self.assertFalse(alive(pid), "process %d survived" % (pid,))
        self.assertEqual(self.recorded(), [("later", "before_launch", "")])

    @defer.inlineCallbacks
    def test_politeHookTerminated(self):
        """
        A hook that honours SIGTERM ends at hook_term_after.
        """
        self.local("sleeper", "#!/bin/sh\nexec sleep 100\n", "after_launch")
        yield self.runner(hookTermAfter=0.2, hookKillAfter=20).run("after_launch")
        status = yield self.status("after_launch", "sleeper")
        self.assertEqual((status["state"], status["signal"]), ("timeout", signal.SIGTERM))

    @defer.inlineCallbacks
    def test_runsCounted(self):
        """
        The agent's metrics count hook runs by event and outcome, and the
        timeouts apart.
        """
        from prometheus_client import generate_latest
        from p2twisted.metrics import AgentMetrics
        from tests.test_metrics import samples, value
        self.local("a-sleeps", "#!/bin/sh\nexec sleep 100\n", "after_launch")
        self.local("b-fails", "#!/bin/sh\nexit 3\n", "before_launch")
        self.recorder("c-ok", "before_launch")
        metrics = AgentMetrics()
        # A short limit for the sleeper only: the others may take longer to
        # start on a loaded machine.
        for event, termAfter in (("after_launch", 0.2), ("before_launch", 5.0)):
            self.runner(hookTermAfter=termAfter, hookKillAfter=20)
            yield HookRunner(self.config, reactor, self.store, metrics=metrics).run(event)
        found = samples(generate_latest(metrics.registry).decode())
        self.assertEqual([value(found, "p2_hook_runs_total", event=e, outcome=o)
                          for e, o in (("after_launch", "timeout"), ("before_launch", "failed"),
                                       ("before_launch", "ok"))], [1.0, 1.0, 1.0])
        self.assertEqual(value(found, "p2_hook_timeouts_total", event="after_launch"), 1.0)

    @defer.inlineCallbacks
    def test_requiredFailureBlocks(self):
        """
        A required hook failing at a blocking event fails the run with
        HookFailed, and the later hooks do not run; once fixed, the run
        succeeds.
        """
        path = self.local("a-gate", "#!/bin/sh\necho 'no user yet' >&2\nexit 1\n", "before_install")
        self.recorder("b-next", "before_install")
        runner = self.runner(hooksRequired=["a-gate"])
        failure = yield self.assertFailure(runner.run("before_install", HookContext(podId="web")),
                                           HookFailed)
        self.assertEqual((failure.event, failure.hook, failure.outcome),
                         ("before_install", "a-gate", "exit 1"))
        self.assertIn("no user yet", str(failure))
        self.assertIn("web", str(failure))
        self.assertEqual(self.recorded(), [])
        self.assertTrue((yield self.status("before_install", "a-gate"))["required"])
        writeScript(path, "#!/bin/sh\nexit 0\n")
        yield runner.run("before_install", HookContext(podId="web"))
        self.assertEqual(self.recorded(), [("b-next", "before_install", "web")])

    @defer.inlineCallbacks
    def test_requiredFailureDoesNotBlockOtherEvents(self):
        """
        Outside L{BLOCKING_EVENTS}, a required hook's failure is only logged.
        """
        for event in EVENTS:
            self.local("gate", "#!/bin/sh\nexit 1\n", event)
        runner = self.runner(hooksRequired=["gate"])
        for event in EVENTS:
            d = runner.run(event)
            if event in BLOCKING_EVENTS:
                yield self.assertFailure(d, HookFailed)
            else:
                yield d

    @defer.inlineCallbacks
    def test_storeErrorsIgnored(self):
        """
        A status record that cannot be written is logged; the hooks still run.
        """
        class Broken(object):
            def put(self, key, value):
                return defer.fail(RuntimeError("store down"))
        self.recorder("a", "after_launch")
        runner = self.runner()
        runner.store = Broken()
        yield runner.run("after_launch")
        self.assertEqual(self.recorded(), [("a", "after_launch", "")])
        self.assertTrue([e for e in self.logged if "store down" in str(e.get("error"))])

    @defer.inlineCallbacks
    def test_eventSequence(self):
        """
        Across a simulated install, upgrade and uninstall, every event fires
        once, in order, for a P2-style hook filtering on HOOK_EVENT.
        """
        self.local("p2style", '#!/bin/sh\ncase "$HOOK_EVENT" in\n  *) echo "$HOOK_EVENT '
                              '$HOOKED_POD_ID" >> %s;;\nesac\n' % (self.record,))
        runner = self.runner()
        layout = PodLayout(self.config.podRoot, "web")
        v1 = parseManifest(MANIFEST)
        v2 = parseManifest(MANIFEST.replace(b"web_1", b"web_2"))
        install = ["before_install", "after_install", "before_launch", "after_launch"]
        yield runner.run("agent_init")
        for manifest in (v1, v2):
            for event in install:
                yield runner.run(event, podContext(layout, manifest))
        context = podContext(layout)
        for event in ("before_uninstall", "after_uninstall"):
            yield runner.run(event, context)
        yield runner.run("after_auth_fail", podContext(layout, v2))
        expected = ([("agent_init", "")] + [(e, "web") for e in install] * 2
                    + [("before_uninstall", "web"), ("after_uninstall", "web"),
                       ("after_auth_fail", "web")])
        self.assertEqual(self.recorded(), expected)
        self.assertEqual(sorted(set(e for e, _ in expected)), sorted(EVENTS))


class RequiredHookRetryTests(RunnerTestMixin, unittest.TestCase):
    """
    A required hook failing in a deploy makes the pod's worker retry with its
    backoff; the deploy proceeds once the hook is fixed.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_retriedUntilFixed(self):
        path = self.local("gate", "#!/bin/sh\nexit 1\n", "before_install")
        runner = self.runner(hooksRequired=["gate"])
        deployed = []

        class Pods(object):
            @defer.inlineCallbacks
            def deploy(self, manifest, old):
                layout = PodLayout("/pods", manifest.id)
                yield runner.run("before_install", podContext(layout, manifest))
                deployed.append(manifest.id)

        entry = yield self.store.put(keys.intent("n1", "web"), MANIFEST)
        worker = PodWorker(Pods(), self.store, "n1", "web", reactor, backoff=lambda n: 0.05)
        worker.update(entry)

        @defer.inlineCallbacks
        def failedTwice():
            status = yield self.store.get(keys.status("pods", "n1", "web"))
            return worker.attempts >= 2 and status and b"required hook gate" in status.value
        yield waitFor(failedTwice, timeout=20, what="two failed attempts")
        self.assertEqual(deployed, [])
        writeScript(path, "#!/bin/sh\nexit 0\n")
        yield waitFor(lambda: worker.state == "idle", timeout=20, what="the deploy")
        self.assertEqual(deployed, ["web"])
        reality = yield self.store.get(keys.reality("n1", "web"))
        self.assertEqual(reality.value, MANIFEST)
        yield worker.stop()




class HookEventsEndToEnd(unittest.TestCase):
    """
    A real agent (runit, local store) runs every event once and in order
    across install, upgrade and uninstall, and runs a hook pod scheduled in
    the store.
    """

    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        from tests.test_agent_e2e import requireRunit
        requireRunit()
        from p2twisted.store import openStore
        from tests.agentharness import AgentHarness
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.url = "local://%s/state.db" % (self.base,)
        self.store = yield openStore(self.url)
        self.addCleanup(self.store.close)
        self.record = os.path.join(self.base, "record")
        writeScript(os.path.join(self.base, "hooks.d", "p2style"),
                    '#!/bin/sh\necho "$HOOK_EVENT $HOOKED_POD_ID" >> %s\n' % (self.record,))
        self.harness = AgentHarness(self, self.url, hooksRoot=os.path.join(self.base, "hooksroot"),
                                    hooksDirectory=os.path.join(self.base, "hooks.d"),
                                    hookTermAfter=5.0, hookKillAfter=10.0)

    def recorded(self):
        try:
            with open(self.record) as f:
                return [tuple(line.split(" ")) for line in f.read().splitlines()]
        except FileNotFoundError:
            return []

    @defer.inlineCallbacks
    def test_eventsAcrossInstallUpgradeUninstall(self):
        from p2twisted import intent
        from tests.agentharness import buildWebArtifact, freePort, waitForVersion, webManifest
        from tests.test_agent_hookpods import hookArtifact
        # A hook pod, scheduled in the store, marks before_install of 'hello'.
        podMarks = os.path.join(self.base, "podmarks")
        manifest = hookArtifact(os.path.join(self.base, "art"), "mark",
                                "#!/bin/sh\necho \"$HOOK $HOOKED_POD_ID\" >> %s\n" % (podMarks,))
        yield self.store.put(keys.hook("before_install", "mark"), manifest)
        self.harness.start()
        yield waitFor(lambda: ("agent_init", "") in self.recorded(), what="agent_init")
        artifacts = os.path.join(self.base, "art")
        port = freePort()
        for version in ("1", "2"):
            url, sha = buildWebArtifact(artifacts, "hello", version)
            yield intent.schedule(self.store, "n1", parseManifest(
                webManifest("hello", url, port, sha)))
            yield waitForVersion(port, version)
            yield self.harness.whenConverged()
        yield intent.unschedule(self.store, "n1", "hello")
        yield waitFor(lambda: ("after_uninstall", "hello") in self.recorded(),
                      what="after_uninstall")
        install = [(e, "hello") for e in ("before_install", "after_install", "before_launch",
                                          "after_launch")]
        self.assertEqual(self.recorded(), [("agent_init", "")] + install * 2 + [
            ("before_uninstall", "hello"), ("after_uninstall", "hello")])
        with open(podMarks) as f:
            self.assertEqual(f.read().splitlines(), ["mark_mark_launch hello"] * 2)
