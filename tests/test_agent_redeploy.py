"""
Every change of a pod's manifest reaches its running processes, under runit
and under the builtin supervisor: a changed SHA restarts the pod's services
with the new env, config, user, cgroup, restart policy and entry points, and
reality records the SHA only once they run it; an unchanged SHA (the same
manifest scheduled again, a resync, an agent restart) restarts nothing.
"""

import json
import os
import pwd
import shutil
import subprocess
import uuid

from twisted.internet import defer
from twisted.trial import unittest

from p2twisted import intent
from p2twisted.agent.p2exec import cgroupDirs
from p2twisted.agent.users import processesOf
from p2twisted.manifest import parseManifest
from p2twisted.store import keys, openStore
from tests.agentharness import AgentHarness, freePort, httpGet
from tests.artifacts import buildHoist
from tests.servers import requireServer
from tests.store_contract import waitFor
from tests.test_agent_p2exec import _memoryCgroupUsable

#: Records what reached the process in C{$MARKS/<pid>}, then serves
#: C{$PORT} (the pid stays the service's: everything execs).
LAUNCH = b"""#!/bin/sh
{ echo "port=$PORT"; echo "user=$(id -un)"; echo "config=$(tr '\\n' ' ' < "$CONFIG_PATH")"
  echo "entry=$ENTRY_POINT"; echo "cgroup=$(grep -c '/p2/' /proc/self/cgroup)"; } > "$MARKS/.$$"
mv "$MARKS/.$$" "$MARKS/$$"
exec /usr/bin/python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$LAUNCHABLE_ROOT"
"""

OTHER = b"""#!/bin/sh
echo "entry=$ENTRY_POINT" > "$MARKS/.$$" && mv "$MARKS/.$$" "$MARKS/$$"
exec sleep 1000
"""


def memoryLimit(name):
    """
    @return: the memory limit of the cgroup C{p2/<name>}, in bytes, or C{None}.
    """
    for directory in cgroupDirs(name):
        for fileName in ("memory.max", "memory.limit_in_bytes"):
            try:
                with open(os.path.join(directory, fileName)) as f:
                    return int(f.read())
            except (OSError, ValueError):
                continue
    return None


def manifestBytes(url, sha, marks, port, greeting="one", runAs="nobody", extra=""):
    """
    @return: the bytes of the pod C{redeploy}'s manifest.
    """
    return ("id: redeploy\nrun_as: %s\nlaunchables:\n  web:\n    launchable_type: hoist\n"
            "    location: %s\n    digest: %s\n    env:\n      PORT: '%d'\n      MARKS: %s\n%s"
            "config:\n  greeting: %s\n" % (runAs, url, sha, port, marks, extra, greeting)).encode()


class RedeployMixin(object):
    """
    One pod taken through a change of every field that reaches its process.
    """

    timeout = 180
    supervisor = None

    @defer.inlineCallbacks
    def setUp(self):
        if os.getuid() != 0:
            raise unittest.SkipTest("pods run as 'nobody' and as a user the agent creates, "
                                    "which needs root")
        self.artifacts = os.path.abspath(self.mktemp())
        os.makedirs(self.artifacts)
        self.url = "local://%s/state.db" % (os.path.abspath(self.mktemp()),)
        self.store = yield openStore(self.url)
        self.addCleanup(self.store.close)
        self.harness = AgentHarness(self, self.url, supervisor=self.supervisor).start()
        self.marks = os.path.join(self.harness.base, "marks")
        os.makedirs(self.marks)
        os.chmod(self.marks, 0o777)
        path = os.path.join(self.artifacts, "redeploy_1.tar.gz")
        self.sha = buildHoist(path, files={"bin/launch": (LAUNCH, 0o755),
                                           "bin/other": (OTHER, 0o755),
                                           "_status": (b"ok\n", 0o644)})
        self.artifact = "file://" + path
        self.account = "p2t" + uuid.uuid4().hex[:8]

    @defer.inlineCallbacks
    def deploy(self, **fields):
        """
        Schedule the pod with C{fields} and wait until reality records it.

        @return: L{Deferred} firing with the facts the now running
            C{bin/launch} process recorded (a dict, with its C{pid}).
        """
        manifest = parseManifest(manifestBytes(self.artifact, self.sha, self.marks, **fields))
        yield intent.schedule(self.store, "n1", manifest)

        @defer.inlineCallbacks
        def recorded():
            entry = yield self.store.get(keys.reality("n1", "redeploy"))
            return entry is not None and parseManifest(entry.value).sha() == manifest.sha()
        yield waitFor(recorded, timeout=60, what="reality to record %s" % (manifest.sha(),))
        yield self.harness.whenConverged()
        facts = yield self.running()
        return facts

    @defer.inlineCallbacks
    def running(self, service="redeploy__web__bin__launch"):
        """
        @return: L{Deferred} firing with the facts recorded by the process
            C{service} runs now.
        """
        status = yield self.harness.pods.supervisor.status(service)
        self.assertTrue(status is not None and status.running, status)
        path = os.path.join(self.marks, str(status.pid))
        yield waitFor(lambda: os.path.exists(path),
                      what="%s (pid %d) to record its facts" % (service, status.pid))
        facts = {"pid": status.pid}
        with open(path) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("=")
                facts[key] = value.strip()
        return facts

    @defer.inlineCallbacks
    def test_everyFieldReachesTheProcess(self):
        """
        Each change of env, config, run_as, cgroup, restart policy and entry
        points starts a new process that sees it; reality then records the
        new SHA.  The same manifest again, a resync, and (runit) an agent
        restart keep the process.
        """
        port1, port2 = freePort(), freePort()
        first = yield self.deploy(port=port1)
        self.assertEqual((first["port"], first["user"]), (str(port1), "nobody"))
        self.assertIn("greeting: one", first["config"])

        env = yield self.deploy(port=port2)
        self.assertNotEqual(env["pid"], first["pid"])
        self.assertEqual(env["port"], str(port2))
        yield waitFor(lambda: httpGet("http://127.0.0.1:%d/_status" % (port2,)).addCallback(
            lambda r: r == (200, b"ok\n")), what="the new port to answer")
        self.assertIsNone((yield httpGet("http://127.0.0.1:%d/_status" % (port1,))))

        config = yield self.deploy(port=port2, greeting="two")
        self.assertNotEqual(config["pid"], env["pid"])
        self.assertIn("greeting: two", config["config"])

        user = yield self.deploy(port=port2, greeting="two", runAs=self.account)
        self.assertNotEqual(user["pid"], config["pid"])
        self.assertEqual(user["user"], self.account)

        common = dict(port=port2, greeting="two", runAs=self.account)
        cgroup = yield self.deploy(extra="    cgroup: {memory: 256M}\n", **common)
        self.assertNotEqual(cgroup["pid"], user["pid"])
        limited = yield self.deploy(extra="    cgroup: {memory: 128M}\n", **common)
        self.assertNotEqual(limited["pid"], cgroup["pid"])
        usable, why = _memoryCgroupUsable()
        if usable:
            self.assertEqual((user["cgroup"], cgroup["cgroup"]), ("0", "1"))
            self.assertEqual(memoryLimit("redeploy@web"), 128 * 2 ** 20)

        policy = yield self.deploy(
            extra="    cgroup: {memory: 128M}\n    restart_policy: never\n", **common)
        self.assertNotEqual(policy["pid"], limited["pid"])

        extra = ("    cgroup: {memory: 128M}\n    restart_policy: never\n"
                 "    entry_points: [bin/launch, bin/other]\n")
        entries = yield self.deploy(extra=extra, **common)
        self.assertNotEqual(entries["pid"], policy["pid"])
        other = yield self.running("redeploy__web__bin__other")
        self.assertEqual(other["entry"], "bin/other")

        # Unchanged: the same manifest again, then a resync.
        again = yield self.deploy(extra=extra, **common)
        self.assertEqual(again["pid"], entries["pid"])
        yield self.harness.agent.resync()
        yield self.harness.whenConverged()
        self.assertEqual((yield self.running())["pid"], entries["pid"])
        if self.supervisor == "runit":
            yield self.harness.stop()
            self.harness = AgentHarness(self, self.url, supervisor=self.supervisor,
                                        base=self.harness.base).start()
            yield self.harness.whenConverged()
            yield self.harness.agent.resync()
            yield self.harness.whenConverged()
            self.assertEqual((yield self.running())["pid"], entries["pid"])
        status = yield self.store.get(keys.status("pods", "n1", "redeploy"))
        self.assertEqual(json.loads(status.value)["state"], "running")

        # The account the agent created for the pod goes with it.
        yield intent.unschedule(self.store, "n1", "redeploy")

        def deleted():
            try:
                pwd.getpwnam(self.account)
            except KeyError:
                return True
        yield waitFor(deleted, what="the account %s to be deleted" % (self.account,))


    @defer.inlineCallbacks
    def test_noHaltOnUpdate(self):
        """
        A launchable with C{no_halt_on_update} keeps its process through an
        update (it reloads itself); its next start sees the new definition.
        """
        port = freePort()
        first = yield self.deploy(port=port, extra="    no_halt_on_update: true\n")
        kept = yield self.deploy(port=port, greeting="two",
                                 extra="    no_halt_on_update: true\n")
        self.assertEqual(kept["pid"], first["pid"])
        self.assertIn("greeting: one", kept["config"])

        # It cannot reload itself into another account, though: a change of
        # run_as restarts it (and the deploy does not wait for the old
        # account's processes to end).
        moved = yield self.deploy(port=port, greeting="two", runAs=self.account,
                                  extra="    no_halt_on_update: true\n")
        self.assertNotEqual(moved["pid"], first["pid"])
        self.assertEqual(moved["user"], self.account)
        self.assertIn("greeting: two", moved["config"])
        yield intent.unschedule(self.store, "n1", "redeploy")

        def deleted():
            try:
                pwd.getpwnam(self.account)
            except KeyError:
                return True
        yield waitFor(deleted, what="the account %s to be deleted" % (self.account,))


    @defer.inlineCallbacks
    def test_createdAccountReplaced(self):
        """
        A pod moved from one account the agent created to another runs as
        the new one, and the old one is deleted once its processes are gone,
        before reality records the move.
        """
        port = freePort()
        other = "p2t" + uuid.uuid4().hex[:8]
        self.addCleanup(subprocess.call, ["userdel", other],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(subprocess.call, ["userdel", self.account],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = yield self.deploy(port=port, runAs=self.account)
        self.assertEqual(first["user"], self.account)
        uid = pwd.getpwnam(self.account).pw_uid
        moved = yield self.deploy(port=port, runAs=other)
        self.assertEqual(moved["user"], other)
        self.assertEqual(processesOf(uid), [])
        self.assertRaises(KeyError, pwd.getpwnam, self.account)
        self.assertIsNotNone(pwd.getpwnam(other))

    @defer.inlineCallbacks
    def test_failedMoveKeepsHome(self):
        """
        An upgrade to another account whose artifact cannot be installed
        leaves the running version as it was: its pod home still its
        account's, its own config and env.
        """
        port = freePort()
        other = "p2t" + uuid.uuid4().hex[:8]
        self.addCleanup(subprocess.call, ["userdel", other],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(subprocess.call, ["userdel", self.account],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = yield self.deploy(port=port, runAs=self.account)
        home = os.path.join(self.harness.config.podRoot, "redeploy")
        owner = os.stat(home).st_uid
        self.assertEqual(owner, pwd.getpwnam(self.account).pw_uid)
        broken = manifestBytes(self.artifact, "0" * 64, self.marks, port=port,
                               greeting="two", runAs=other)
        yield intent.schedule(self.store, "n1", parseManifest(broken))

        @defer.inlineCallbacks
        def failed():
            entry = yield self.store.get(keys.status("pods", "n1", "redeploy"))
            return entry is not None and json.loads(entry.value)["state"] == "failed"
        yield waitFor(failed, timeout=60, what="the upgrade to fail")
        self.assertEqual(os.stat(home).st_uid, owner)
        still = yield self.running()
        self.assertEqual(still["pid"], first["pid"])
        with open(os.path.join(home, "env", "CONFIG_PATH")) as f:
            with open(f.read().strip()) as config:
                self.assertIn("greeting: one", config.read())


class RunitRedeployTests(RedeployMixin, unittest.TestCase):
    supervisor = "runit"

    def setUp(self):
        if not all(shutil.which(p) for p in ("runsv", "sv", "svlogd")):
            requireServer("runit", "runsv/sv not on PATH (apt-get install runit)")
        return RedeployMixin.setUp(self)


class BuiltinRedeployTests(RedeployMixin, unittest.TestCase):
    supervisor = "builtin"
