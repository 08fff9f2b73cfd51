"""
The agent end to end: real runit, real artifacts, a real local store, real
HTTP to the pods it runs.
"""

import json
import os
import signal

from twisted.internet import defer
from twisted.trial import unittest

from p2twisted import intent
from p2twisted.agent.layout import StateLayout
from p2twisted.agent.supervisors import listServiceDirs
from p2twisted.manifest import parseManifest
from p2twisted.store import keys, openStore
from p2twisted.store.common import Delete
from tests.agentharness import (
    AgentHarness, buildWebArtifact, freePort, httpGet, waitForVersion, webManifest)
from tests.reachable import reachableDirectory
from tests.servers import requireServer
from tests.store_contract import waitFor


def requireRunit():
    import shutil
    if not all(shutil.which(p) for p in ("runsv", "sv", "svlogd")):
        requireServer("runit", "runsv/sv not on PATH (apt-get install runit)")
    if os.getuid() != 0:
        raise unittest.SkipTest("the agent end-to-end tests run pods as 'nobody', which needs root")


def runsvPids(service):
    """
    @return: the pids of the runsv processes supervising C{service}.
    """
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % (entry,), "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if argv[0].endswith(b"runsv") and service.encode() in argv:
            pids.append(int(entry))
    return pids


class LocalStoreCase(unittest.TestCase):
    """
    A local store and an artifact directory of the test's own (runit needed).
    """

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        requireRunit()
        self.artifacts = os.path.abspath(self.mktemp())
        os.makedirs(self.artifacts)
        self.url = "local://%s/state.db" % (os.path.abspath(self.mktemp()),)
        self.store = yield openStore(self.url)
        self.addCleanup(self.store.close)

    def schedule(self, raw, node="n1"):
        return intent.schedule(self.store, node, parseManifest(raw))

    @defer.inlineCallbacks
    def podStatus(self, podId, node="n1"):
        entry = yield self.store.get(keys.status("pods", node, podId))
        return json.loads(entry.value) if entry else None


class AgentEndToEndTests(LocalStoreCase):
    """
    One agent on the local store under runit.
    """

    @defer.inlineCallbacks
    def setUp(self):
        yield LocalStoreCase.setUp(self)
        self.harness = AgentHarness(self, self.url).start()

    def servicePid(self, podId="hello"):
        return self.harness.servicePid(podId)

    @defer.inlineCallbacks
    def test_installUpgradeUninstall(self):
        """
        A scheduled pod is installed and answers; reality is written; an
        upgrade serves the new version; unscheduling stops it, deletes its
        home and its reality.
        """
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        yield self.schedule(webManifest("hello", url1, port, sha1))
        yield waitForVersion(port, "1")
        yield self.harness.whenConverged()
        reality = yield self.store.get(keys.reality("n1", "hello"))
        self.assertIn(b"hello_1.tar.gz", reality.value)
        status = yield self.podStatus("hello")
        self.assertEqual(status["state"], "running")
        current = os.readlink(self.harness.layout("hello").current("web"))
        self.assertTrue(current.endswith("web_1"), current)

        url2, sha2 = buildWebArtifact(self.artifacts, "hello", "2")
        yield self.schedule(webManifest("hello", url2, port, sha2))
        yield waitForVersion(port, "2")
        last = os.readlink(self.harness.layout("hello").last("web"))
        self.assertTrue(last.endswith("web_1"), last)

        yield intent.unschedule(self.store, "n1", "hello")
        yield waitForVersion(port, None)
        yield waitFor(lambda: self.store.get(keys.reality("n1", "hello")).addCallback(
            lambda e: e is None), what="reality to be deleted")
        self.assertFalse(os.path.exists(self.harness.layout("hello").home))

    @defer.inlineCallbacks
    def test_killedRunsvStartedAgain(self):
        """
        A pod whose runsv was killed (so nothing keeps its service up) is
        started again at the next resync from its install: without its
        artifact (gone from the cache and the server), and without running
        its one-shot job again.
        """
        from tests.artifacts import buildHoist
        marks = reachableDirectory(self, "p2-marks-")
        os.chmod(marks, 0o777)  # the job runs as nobody
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        job = os.path.join(self.artifacts, "job_1.tar.gz")
        buildHoist(job, files={"bin/launch": (b"#!/bin/sh\necho ran >> %s/runs\n"
                                              % (marks.encode(),), 0o755)})
        raw = webManifest("hello", url1, port, sha1) + (
            b"  job:\n    launchable_type: hoist\n    location: file://%s\n"
            b"    restart_policy: never\n" % (job.encode(),))
        yield self.schedule(raw)
        yield waitForVersion(port, "1")
        yield self.harness.whenConverged()

        def runs():
            try:
                with open(os.path.join(marks, "runs")) as f:
                    return f.read().count("ran")
            except OSError:
                return 0
        yield waitFor(lambda: runs() == 1, what="the job to run once")
        os.unlink(url1[len("file://"):])
        for name in os.listdir(self.harness.config.stateDir + "/artifacts"):
            os.unlink(os.path.join(self.harness.config.stateDir, "artifacts", name))
        service = os.path.join(self.harness.config.stateDir, "service", "hello__web__bin__launch")
        pid = self.servicePid()
        for runsv in runsvPids(service):
            os.kill(runsv, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        yield waitForVersion(port, None)
        yield waitFor(lambda: self.servicePid() not in (0, pid), timeout=30,
                      what="the service to be started again")
        yield waitForVersion(port, "1")
        self.assertEqual(runs(), 1)
        status = yield self.podStatus("hello")
        self.assertEqual((status["state"], status["error"]), ("running", None))

    @defer.inlineCallbacks
    def test_podStartedWithUserEnvAndLimits(self):
        """
        A pod that joins no cgroup is started without p2-exec (by chpst) and
        still gets what p2-exec gives: its C{run_as} user and groups, its env
        dirs and C{ENTRY_POINT}, umask 022, soft limits raised to the hard
        ones, and a session of its own.
        """
        port = freePort()
        launch = (b"#!/bin/sh\n"
                  b"echo \"report uid=$(id -u) groups=$(id -G | tr ' ' ,) umask=$(umask) "
                  b"nofile=$(ulimit -Sn):$(ulimit -Hn) pod=$POD_ID entry=$ENTRY_POINT "
                  b"greeting=$GREETING root=$LAUNCHABLE_ROOT pid=$$ "
                  b"stat=$(cut -d' ' -f5,6 /proc/$$/stat)\"\n"
                  b"exec /usr/bin/python3 -m http.server \"$PORT\" --bind 127.0.0.1 "
                  b"--directory \"$LAUNCHABLE_ROOT/www\"\n")
        url, sha = buildWebArtifact(self.artifacts, "started", "1",
                                    files={"bin/launch": (launch, 0o755)})
        yield self.schedule(webManifest("started", url, port, sha,
                                        extra=b"      GREETING: hi\n"))
        yield waitForVersion(port, "1")
        service = os.path.join(self.harness.config.stateDir, "service",
                               "started__web__bin__launch")
        with open(os.path.join(service, "run")) as f:
            run = f.read()
        if not self.harness.pods.chpst:
            raise unittest.SkipTest("chpst is not installed: pods start through p2-exec")
        self.assertIn("chpst", run)
        self.assertNotIn("p2exec", run)
        current = os.path.join(service, "log", "main", "current")

        def report():
            try:
                with open(current) as f:
                    lines = [l for l in f if " report " in l]
            except FileNotFoundError:
                return None
            return lines[-1].split(" report ", 1)[1].split() if lines else None
        yield waitFor(lambda: report() is not None, what="the pod's report in its log")
        fields = report()
        values = dict(field.split("=", 1) for field in fields if "=" in field)
        import pwd
        nobody = pwd.getpwnam("nobody")
        self.assertEqual(values["uid"], str(nobody.pw_uid))
        self.assertEqual(sorted(int(g) for g in values["groups"].split(",")),
                         sorted(set(os.getgrouplist("nobody", nobody.pw_gid))))
        self.assertEqual(values["greeting"], "hi")
        self.assertEqual(values["umask"], "0022")
        soft, hard = values["nofile"].split(":")
        self.assertEqual(soft, hard)
        self.assertEqual(values["pod"], "started")
        self.assertEqual(values["entry"], "bin/launch")
        self.assertEqual(values["root"], self.harness.layout("started").current("web"))
        pid = values["pid"]
        # /proc/<pid>/stat fields 5 and 6: process group and session.
        self.assertEqual(fields[fields.index("stat=" + pid):][:2], ["stat=" + pid, pid])

    @defer.inlineCallbacks
    def test_uninstallRemovesCgroup(self):
        """
        A pod with cgroup limits runs in C{p2/<pod>@<launchable>}; removing
        the pod removes that cgroup too.
        """
        from p2twisted.agent import p2exec
        from tests.test_agent_p2exec import _memoryCgroupUsable
        usable, why = _memoryCgroupUsable()
        if not usable:
            raise unittest.SkipTest("cannot create memory cgroups here: %s" % (why,))
        port = freePort()
        url, sha = buildWebArtifact(self.artifacts, "limited", "1")
        yield self.schedule(webManifest("limited", url, port, sha,
                                        extra=b"    cgroup:\n      memory: 268435456\n"))
        yield waitForVersion(port, "1")
        dirs = [d for d in p2exec.cgroupDirs("limited@web") if os.path.isdir(d)]
        self.assertTrue(dirs, "no cgroup p2/limited@web was made")
        # Joining a cgroup is p2-exec's: the pod started through it, and runs there.
        pid = self.servicePid("limited")
        for d in dirs:
            with open(os.path.join(d, "cgroup.procs")) as f:
                self.assertIn(str(pid), f.read().split(), d)
        yield intent.unschedule(self.store, "n1", "limited")
        yield waitFor(lambda: not os.path.exists(self.harness.layout("limited").home),
                      what="the pod to be removed")
        self.assertEqual([d for d in dirs if os.path.isdir(d)], [])

    @defer.inlineCallbacks
    def test_upgradeKeepsOldServingUntilInstalled(self):
        """
        While the new version's artifact is still being fetched (here: cannot
        be, it is missing), the old version keeps serving, reality keeps the
        old manifest, and the status names the problem; once the artifact
        appears, the upgrade completes.
        """
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        yield self.schedule(webManifest("hello", url1, port, sha1))
        yield waitForVersion(port, "1")
        pid = self.servicePid()
        missing = "file://%s/hello_2.tar.gz" % (self.artifacts,)
        yield self.schedule(webManifest("hello", missing, port))
        status = yield waitFor(lambda: self.podStatus("hello").addCallback(
            lambda s: s if s and s["state"] == "failed" else None), what="failed status")
        self.assertIn("hello_2.tar.gz", status["error"])
        self.assertEqual((yield httpGet("http://127.0.0.1:%d/version" % (port,))), (200, b"1"))
        self.assertEqual(self.servicePid(), pid)
        reality = yield self.store.get(keys.reality("n1", "hello"))
        self.assertIn(b"hello_1.tar.gz", reality.value)
        # The new version's runtime files, staged while it installed, are
        # gone, and the old version's are as they were.
        layout = self.harness.layout("hello")
        with open(os.path.join(layout.envDir, "CONFIG_PATH")) as f:
            self.assertEqual(f.read(), layout.configPath(parseManifest(reality.value).sha()) + "\n")
        for directory in (layout.envDir, layout.launchableEnvDir("web"), layout.configDir):
            self.assertEqual([n for n in os.listdir(directory) if n.startswith(".")], [])
        self.assertEqual(len(os.listdir(layout.configDir)), 1)
        # (So is the runsv prepared for its restart.)
        serviceDir = StateLayout(self.harness.config.stateDir).serviceDir
        yield waitFor(lambda: not [n for n in os.listdir(serviceDir) if ".new-" in n],
                      what="the prepared service directory to go")
        self.assertEqual(self.servicePid(), pid)
        buildWebArtifact(self.artifacts, "hello", "2")
        yield waitForVersion(port, "2", timeout=60)

    @defer.inlineCallbacks
    def test_failedInstallKeepsServicesRunningWithoutReality(self):
        """
        A version that runs while reality names none (its agent stopped
        after starting it, before recording it) keeps running when the
        deploy that finds it fails to install: the services it would have
        prepared were there before it, and are not removed.
        """
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        yield self.schedule(webManifest("hello", url1, port, sha1))
        yield waitForVersion(port, "1")
        pid = self.servicePid()
        reality = yield self.store.get(keys.reality("n1", "hello"))
        yield self.store.delete(keys.reality("n1", "hello"), reality.version)
        missing = "file://%s/hello_2.tar.gz" % (self.artifacts,)
        yield self.schedule(webManifest("hello", missing, port))
        yield waitFor(lambda: self.podStatus("hello").addCallback(
            lambda s: s if s and s["state"] == "failed" else None), what="failed status")
        self.assertEqual((yield httpGet("http://127.0.0.1:%d/version" % (port,))), (200, b"1"))
        self.assertEqual(self.servicePid(), pid)

    @defer.inlineCallbacks
    def test_crashedProcessRestarted(self):
        """
        A pod process killed with SIGKILL is restarted by the supervisor.
        """
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        yield self.schedule(webManifest("hello", url1, port, sha1))
        yield waitForVersion(port, "1")
        pid = self.servicePid()
        os.kill(pid, signal.SIGKILL)
        yield waitFor(lambda: self.servicePid() not in (0, pid), what="a new pid")
        yield waitForVersion(port, "1")

    @defer.inlineCallbacks
    def test_crashLoopInPodStatus(self):
        """
        A pod whose C{bin/launch} exits at once is reported crash-looping in
        C{status/pods/<node>/<pod>}, with its restarts and last exit, beside
        the worker's fields.
        """
        url, sha = buildWebArtifact(self.artifacts, "crashy", "1", files={
            "bin/launch": (b"#!/bin/sh\necho crashing\nexit 3\n", 0o755)})
        yield self.schedule(webManifest("crashy", url, freePort(), sha))

        @defer.inlineCallbacks
        def looping():
            status = yield self.podStatus("crashy")
            return status is not None and bool(status.get("crash_loop"))

        yield waitFor(looping, timeout=60, what="the crash loop to be reported")
        status = yield self.podStatus("crashy")
        loop = status["crash_loop"]
        self.assertEqual(loop["service"], "crashy__web__bin__launch")
        self.assertEqual(loop["last_exit"], "exit 3")
        self.assertGreaterEqual(loop["restarts"], 3)
        self.assertGreaterEqual(status["restarts"], loop["restarts"])
        self.assertIn("crash-looping (", loop["text"])
        self.assertIn(status["state"], ("running", "failed", "deploying"))
        self.assertEqual((status["pod"], status["node"]), ("crashy", "n1"))

    @defer.inlineCallbacks
    def test_agentRestartKeepsPods(self):
        """
        Stopping the agent leaves runit pods running; a new agent adopts them
        without restarting them (same pid) and still converges.
        """
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        yield self.schedule(webManifest("hello", url1, port, sha1))
        yield waitForVersion(port, "1")
        yield self.harness.whenConverged()
        pid = self.servicePid()
        yield self.harness.stop()
        yield waitForVersion(port, "1")
        self.harness.start()
        yield self.harness.whenConverged()
        yield self.harness.agent.resync()
        yield self.harness.whenConverged()
        self.assertEqual(self.servicePid(), pid)

    @defer.inlineCallbacks
    def test_wipedIntentRemovesNothing(self):
        """
        Deleting a node's whole intent (marker included) removes nothing: the
        pod keeps running and reality stays.
        """
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        yield self.schedule(webManifest("hello", url1, port, sha1))
        yield waitForVersion(port, "1")
        pid = self.servicePid()
        # A wipe (or a restore from an empty backup) takes everything at once.
        yield self.store.transaction([Delete(keys.intent("n1", "hello")),
                                      Delete(keys.intentNode("n1"))])
        yield self.harness.agent.resync()
        yield waitFor(lambda: self.harness.agent.markerPresent is False, what="marker noticed")
        self.assertEqual((yield httpGet("http://127.0.0.1:%d/version" % (port,))), (200, b"1"))
        self.assertEqual(self.servicePid(), pid)
        self.assertIsNotNone((yield self.store.get(keys.reality("n1", "hello"))))

    @defer.inlineCallbacks
    def test_badInputsDoNotSpread(self):
        """
        An invalid manifest, a digest mismatch, a malicious tarball and a
        non-executable entry point each end in a status error naming the
        problem, while another pod deploys and runs normally.
        """
        from tests.artifacts import buildHoist, member
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "good", "1")
        evil = os.path.join(self.artifacts, "evil_1.tar.gz")
        buildHoist(evil, files={"bin/launch": (b"#!/bin/sh\n", 0o755)},
                   extra=[member("../../escape", "file", b"x")])
        noexec = os.path.join(self.artifacts, "noexec_1.tar.gz")
        buildHoist(noexec, files={"bin/launch": (b"#!/bin/sh\n", 0o644)})
        bad = {
            "mismatch": (webManifest("mismatch", url1, freePort(), "0" * 64), "sha256 mismatch"),
            "evil": (webManifest("evil", "file://" + evil, freePort()), "escape"),
            "noexec": (webManifest("noexec", "file://" + noexec, freePort()), "not executable"),
        }
        for podId, (raw, _) in sorted(bad.items()):
            yield self.schedule(raw)
        yield self.store.put(keys.intent("n1", "broken"), b"id: broken\nlaunchables: 7\n")
        yield self.schedule(webManifest("good", url1, port, sha1))
        yield waitForVersion(port, "1")
        for podId, (_, word) in sorted(bad.items()):
            status = yield waitFor(lambda: self.podStatus(podId).addCallback(
                lambda s: s if s and s["state"] == "failed" else None),
                what="%s to fail" % (podId,))
            self.assertIn(word, status["error"])
            self.assertIsNone((yield self.store.get(keys.reality("n1", podId))))
        status = yield waitFor(lambda: self.podStatus("broken"), what="broken's status")
        self.assertEqual(status["state"], "invalid")
        # (The services prepared while they installed are gone.)
        services = listServiceDirs(StateLayout(self.harness.config.stateDir).serviceDir)
        self.assertEqual([s for s in services if not s.startswith("good__")], [])
        self.assertFalse(os.path.exists(os.path.join(self.harness.config.podRoot, "..", "escape")))

    @defer.inlineCallbacks
    def test_keyNamesItsPod(self):
        """
        An intent written under another pod's key (C{intent/n1/garb3} holding
        C{id: web}, another version on another port) takes nothing over: web
        keeps its process and content, garb3's status says invalid, garb3 has
        no reality and nothing listens on the other port; deleting garb3
        changes nothing either.
        """
        port, otherPort = freePort(), freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "web", "1")
        url2, sha2 = buildWebArtifact(self.artifacts, "web", "2")
        yield self.schedule(webManifest("web", url1, port, sha1))
        yield waitForVersion(port, "1")
        yield self.harness.whenConverged()
        pid = self.servicePid("web")
        webReality = yield self.store.get(keys.reality("n1", "web"))

        @defer.inlineCallbacks
        def unchanged():
            yield self.harness.agent.resync()
            yield self.harness.whenConverged()
            self.assertEqual(self.servicePid("web"), pid)
            self.assertEqual((yield httpGet("http://127.0.0.1:%d/version" % (port,))),
                             (200, b"1"))
            self.assertIsNone((yield httpGet("http://127.0.0.1:%d/version" % (otherPort,))))
            self.assertEqual((yield self.store.get(keys.reality("n1", "web"))).value,
                             webReality.value)
            self.assertIsNone((yield self.store.get(keys.reality("n1", "garb3"))))
            self.assertFalse(os.path.exists(self.harness.layout("garb3").home))
            with open(self.harness.layout("web").currentManifest, "rb") as f:
                self.assertIn(b"web_1.tar.gz", f.read())

        yield self.store.put(keys.intent("n1", "garb3"), webManifest("web", url2, otherPort, sha2))
        status = yield waitFor(lambda: self.podStatus("garb3"), what="garb3's status")
        self.assertEqual(status["state"], "invalid")
        self.assertIn("garb3", status["error"])
        yield unchanged()

        yield self.store.delete(keys.intent("n1", "garb3"))
        yield waitFor(lambda: self.podStatus("garb3").addCallback(lambda s: s is None),
                      what="garb3's status to go")
        yield unchanged()


class HijackedPodTests(LocalStoreCase):
    """
    A pod taken over behind the agent's back is repaired at the agent's next
    resync: here only the one the test asks for.  (A periodic resync, every
    2 s in the other tests, can repair the pod before a test slowed by a
    loaded machine has seen it taken over: it would then wait in vain.)
    """

    @defer.inlineCallbacks
    def setUp(self):
        yield LocalStoreCase.setUp(self)
        self.harness = AgentHarness(self, self.url, resyncInterval=3600.0).start()

    @defer.inlineCallbacks
    def test_hijackedPodRepaired(self):
        """
        A pod taken over by an older agent (web's directory and service
        running the manifest of C{intent/n1/garb3}, C{reality/n1/garb3}
        holding C{id: web}) is repaired: web's reality is not what runs, so
        web is deployed again and serves its own version on its own port,
        and garb3's record removes nothing of web's.
        """
        port, otherPort = freePort(), freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "web", "1")
        url2, sha2 = buildWebArtifact(self.artifacts, "web", "2")
        yield self.schedule(webManifest("web", url1, port, sha1))
        yield waitForVersion(port, "1")
        yield self.harness.whenConverged()
        # What the agent of 8e22d01 did with intent/n1/garb3 holding id: web.
        hijack = webManifest("web", url2, otherPort, sha2)
        yield self.harness.pods.deploy(parseManifest(hijack), None)
        yield self.store.put(keys.reality("n1", "garb3"), hijack)
        yield waitForVersion(otherPort, "2")
        yield waitForVersion(port, None)

        yield self.harness.agent.resync()
        yield waitForVersion(port, "1")
        yield waitForVersion(otherPort, None)
        # garb3's reality (no intent) goes once the removal grace has passed.
        yield waitFor(lambda: self.store.get(keys.reality("n1", "garb3")).addCallback(
            lambda entry: entry is None), timeout=30, what="reality/n1/garb3 to go")
        yield self.harness.whenConverged()
        self.assertIn(b"web_1.tar.gz", (yield self.store.get(keys.reality("n1", "web"))).value)
        status = yield self.podStatus("web")
        self.assertEqual(status["state"], "running")


class TwoAgentsTests(unittest.TestCase):
    """
    Two agents on one machine, with different node names and pod roots.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_eachConvergesOwnIntent(self):
        """
        Each agent runs only the pods scheduled for its node.
        """
        requireRunit()
        artifacts = os.path.abspath(self.mktemp())
        os.makedirs(artifacts)
        url = "local://%s/state.db" % (os.path.abspath(self.mktemp()),)
        store = yield openStore(url)
        self.addCleanup(store.close)
        a = AgentHarness(self, url, node="a").start()
        b = AgentHarness(self, url, node="b").start()
        portA, portB = freePort(), freePort()
        artifact, sha = buildWebArtifact(artifacts, "web", "1")
        yield intent.schedule(store, "a", parseManifest(webManifest("web-a", artifact, portA, sha)))
        yield intent.schedule(store, "b", parseManifest(webManifest("web-b", artifact, portB, sha)))
        yield waitForVersion(portA, "1")
        yield waitForVersion(portB, "1")
        self.assertEqual(os.listdir(a.config.podRoot), ["web-a"])
        self.assertEqual(os.listdir(b.config.podRoot), ["web-b"])
        machines = yield store.list("machines")
        self.assertEqual(sorted(machines), ["machines/a", "machines/b"])


class BuiltinSupervisorEndToEndTests(unittest.TestCase):
    """
    The agent with the builtin supervisor (machines without runit).
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_installUpgradeAndStopWithAgent(self):
        """
        Pods install, upgrade and run under the builtin supervisor, and stop
        with the agent, as the README says.
        """
        if os.getuid() != 0:
            raise unittest.SkipTest("pods run as 'nobody', which needs root")
        artifacts = os.path.abspath(self.mktemp())
        os.makedirs(artifacts)
        url = "local://%s/state.db" % (os.path.abspath(self.mktemp()),)
        store = yield openStore(url)
        self.addCleanup(store.close)
        harness = AgentHarness(self, url, supervisor="builtin").start()
        port = freePort()
        url1, sha1 = buildWebArtifact(artifacts, "hello", "1")
        yield intent.schedule(store, "n1", parseManifest(webManifest("hello", url1, port, sha1)))
        yield waitForVersion(port, "1")
        url2, sha2 = buildWebArtifact(artifacts, "hello", "2")
        yield intent.schedule(store, "n1", parseManifest(webManifest("hello", url2, port, sha2)))
        yield waitForVersion(port, "2")
        yield harness.stop()
        yield waitForVersion(port, None)


class LifecycleScriptsTests(LocalStoreCase):
    """
    C{bin/enable}, C{bin/disable} and C{run_as} users, through a real agent.
    """

    @defer.inlineCallbacks
    def test_enableAndDisable(self):
        """
        C{bin/enable} runs after the pod starts and C{bin/disable} before it
        stops, each as the pod's user with the pod's environment.
        """
        harness = AgentHarness(self, self.url).start()
        marks = os.path.join(harness.base, "marks")
        os.makedirs(marks)
        os.chmod(marks, 0o777)
        script = b'#!/bin/sh\necho "$POD_ID $(id -un)" > %s/%%s\n' % marks.encode()
        port = freePort()
        url, sha = buildWebArtifact(self.artifacts, "hello", "1", files={
            "bin/enable": (script.replace(b"%s", b"enabled"), 0o755),
            "bin/disable": (script.replace(b"%s", b"disabled"), 0o755)})
        yield intent.schedule(self.store, "n1", parseManifest(webManifest("hello", url, port, sha)))
        yield waitForVersion(port, "1")
        yield waitFor(lambda: os.path.exists(os.path.join(marks, "enabled")), what="bin/enable")
        with open(os.path.join(marks, "enabled")) as f:
            self.assertEqual(f.read(), "hello nobody\n")
        self.assertFalse(os.path.exists(os.path.join(marks, "disabled")))
        yield intent.unschedule(self.store, "n1", "hello")
        yield waitForVersion(port, None)
        yield waitFor(lambda: os.path.exists(os.path.join(marks, "disabled")), what="bin/disable")

    @defer.inlineCallbacks
    def test_missingUserWithoutCreateUsers(self):
        """
        With C{create_users: false}, a pod whose C{run_as} user does not exist
        fails with a status error naming the user, and is not installed.
        """
        AgentHarness(self, self.url, createUsers=False).start()
        port = freePort()
        url, sha = buildWebArtifact(self.artifacts, "hello", "1")
        raw = webManifest("hello", url, port, sha, runAs="p2-no-such-user")
        yield intent.schedule(self.store, "n1", parseManifest(raw))
        status = yield waitFor(lambda: self.store.get(keys.status("pods", "n1", "hello")).addCallback(
            lambda e: json.loads(e.value) if e and json.loads(e.value)["state"] == "failed" else None),
            what="a failed status")
        self.assertIn("p2-no-such-user", status["error"])
        self.assertIn("create_users", status["error"])
        self.assertIsNone((yield self.store.get(keys.reality("n1", "hello"))))

    @defer.inlineCallbacks
    def test_rootByPodIdRefused(self):
        """
        A pod C{id: root} without C{run_as} is refused: its status says why,
        nothing is installed, nothing runs, reality stays empty.
        """
        harness = AgentHarness(self, self.url, allowedRunAs=["nobody", "root"]).start()
        port = freePort()
        url, sha = buildWebArtifact(self.artifacts, "root", "1")
        raw = webManifest("root", url, port, sha).replace(b"run_as: nobody\n", b"")
        yield intent.schedule(self.store, "n1", parseManifest(raw))
        status = yield waitFor(lambda: self.store.get(keys.status("pods", "n1", "root")).addCallback(
            lambda e: json.loads(e.value) if e and json.loads(e.value)["state"] == "failed" else None),
            what="a failed status")
        self.assertIn("pod root has no run_as, and its id names the existing account root",
                      status["error"])
        self.assertIsNone((yield self.store.get(keys.reality("n1", "root"))))
        self.assertFalse(os.path.exists(harness.layout("root").home))
        self.assertEqual((yield harness.pods.supervisor.services()), [])
        self.assertIsNone((yield httpGet("http://127.0.0.1:%d/version" % (port,))))

    @defer.inlineCallbacks
    def test_createdAccountsDeletedWhenUnused(self):
        """
        Pods without C{run_as} run as accounts named by their ids, which the
        agent creates; each is deleted once its pod is unscheduled.
        """
        import pwd
        import uuid
        harness = AgentHarness(self, self.url).start()
        ids = ["p2t%s" % (uuid.uuid4().hex[:8],) for _ in range(2)]
        ports = {}
        for podId in ids:
            ports[podId] = freePort()
            url, sha = buildWebArtifact(self.artifacts, podId, "1")
            raw = webManifest(podId, url, ports[podId], sha).replace(b"run_as: nobody\n", b"")
            yield intent.schedule(self.store, "n1", parseManifest(raw))
        for podId in ids:
            yield waitForVersion(ports[podId], "1")
            self.assertEqual(pwd.getpwnam(podId).pw_dir, harness.layout(podId).home)

        def account(name):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                return None

        yield intent.unschedule(self.store, "n1", ids[0])
        yield waitFor(lambda: account(ids[0]) is None, what="account %s deleted" % (ids[0],))
        self.assertIsNotNone(account(ids[1]))
        yield waitForVersion(ports[ids[1]], "1")
        yield intent.unschedule(self.store, "n1", ids[1])
        yield waitFor(lambda: account(ids[1]) is None, what="account %s deleted" % (ids[1],))

class CountingPool(object):
    """
    A thread pool counting the calls given to it, handing them to the real
    reactor's pool.
    """

    def __init__(self, pool):
        self.pool = pool
        self.calls = 0

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        self.calls += 1
        return self.pool.callInThreadWithCallback(onResult, f, *args, **kwargs)


class PoolReactor(object):
    """
    The real reactor, but for the thread pool it hands out.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self.pool = CountingPool(reactor.getThreadPool())

    def getThreadPool(self):
        return self.pool

    def __getattr__(self, name):
        return getattr(self._reactor, name)


class ThreadPoolTests(unittest.TestCase):
    """
    The pod operations run their blocking work in the injected reactor's
    thread pool, never the global reactor's.
    """

    @defer.inlineCallbacks
    def test_removeUsesInjectedPool(self):
        from twisted.internet import reactor
        from p2twisted.agent.pods import PodOperations
        from p2twisted.agent.testing import FakeSupervisor
        from tests.test_agent_hooks import makeConfig
        base = os.path.abspath(self.mktemp())
        config = makeConfig(base)
        home = os.path.join(config.podRoot, "web")
        os.makedirs(home)
        injected = PoolReactor(reactor)
        ops = PodOperations(config, injected, FakeSupervisor(), None, None, p2exec=["true"],
                            isRoot=False)
        yield ops.remove(None, "web")
        self.assertFalse(os.path.exists(home))
        self.assertGreater(injected.pool.calls, 0)
