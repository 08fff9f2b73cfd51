"""
Tests for C{p2 bin2pod} and C{p2 hook}, running the real C{p2} command.

Until C{hook} and C{bin2pod} are in L{p2twisted.cli.main.VERB_MODULES}, the
command is run through a one-line wrapper adding them; afterwards the wrapper
changes nothing.
"""

import hashlib
import json
import os
import pwd
import shutil
import sys
import tarfile
import uuid

from twisted.internet import defer, reactor, utils
from twisted.trial import unittest

from p2twisted.agent.hooks import EVENTS, HookContext
from p2twisted.agent.install import Installer
from p2twisted.agent.layout import PodLayout
from p2twisted.manifest import launchableVersion, parseManifest
from p2twisted.store import keys, openStore
from tests.cli import ROOT, P2CommandMixin
from tests.store_contract import waitFor

#: Runs C{p2} with the hook verbs registered (a no-op once they are).
P2_CODE = ("import p2twisted.cli.main as m; m.VERB_MODULES += tuple(v for v in "
           "('hook', 'bin2pod') if v not in m.VERB_MODULES); m.main()")

#: The issue's example, exactly as written.
EXAMPLE = r"""printf '#!/bin/bash\nid -u "$HOOKED_POD_ID" >/dev/null 2>&1 || useradd -r -M -d "$HOOKED_POD_HOME" "$HOOKED_POD_ID"\n' > ensure_user
chmod +x ensure_user
MANIFEST=$(p2 bin2pod ensure_user | jq -r .manifest_path)
p2 hook schedule --event before_install "$MANIFEST"
"""


class HookCommandMixin(P2CommandMixin):

    def setUp(self):
        P2CommandMixin.setUp(self)
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)

    def p2(self, *args, **kwargs):
        argv = ["-c", P2_CODE, "--store", self.url] + list(args)
        d = utils.getProcessOutputAndValue(sys.executable, argv, env=self.env,
                                           path=kwargs.get("path", self.cwd))
        return d.addCallback(lambda r: (r[0].decode("utf-8"), r[1].decode("utf-8"), r[2]))

    def executable(self, name="tool", content=b"#!/bin/sh\necho hi\n", mode=0o755):
        path = os.path.join(self.cwd, name)
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)
        return path

    @defer.inlineCallbacks
    def bin2pod(self, *args, **kwargs):
        out = yield self.succeed("bin2pod", *args, **kwargs)
        return json.loads(out)

    @defer.inlineCallbacks
    def succeed(self, *args, **kwargs):
        out, err, code = yield self.p2(*args, **kwargs)
        self.assertEqual((code, err), (0, ""), "p2 %s: %s" % (" ".join(args), err))
        return out

    @defer.inlineCallbacks
    def openStore(self):
        store = yield openStore(self.url)
        self.addCleanup(store.close)
        return store


class Bin2podTests(HookCommandMixin, unittest.TestCase):

    timeout = 60

    @defer.inlineCallbacks
    def test_defaults(self):
        """
        The executable becomes C{bin/launch} of C{<id>_<sha prefix>.tar.gz}
        in the current directory; the manifest C{<id>.yaml} names it by a
        file URL with its digest; the paths printed are absolute; the
        version parses from the file name.
        """
        content = b"#!/bin/sh\necho hook\n"
        self.executable("ensure_user", content)
        result = yield self.bin2pod("ensure_user")
        tarPath, manifestPath = result["tar_path"], result["manifest_path"]
        self.assertEqual(os.path.dirname(tarPath), self.cwd)
        self.assertEqual(manifestPath, os.path.join(self.cwd, "ensure_user.yaml"))
        with open(tarPath, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(os.path.basename(tarPath), "ensure_user_%s.tar.gz" % (sha[:12],))
        with open(manifestPath, "rb") as f:
            manifest = parseManifest(f.read())
        self.assertEqual(manifest.id, "ensure_user")
        [launchable] = manifest.launchables.values()
        self.assertEqual(launchable.location, "file://" + tarPath)
        self.assertEqual(launchable.digest, sha)
        self.assertEqual(result["digest"], sha)
        self.assertEqual(launchableVersion(launchable), sha[:12])
        with tarfile.open(tarPath) as archive:
            member = archive.getmember("bin/launch")
            self.assertTrue(member.isfile())
            self.assertEqual(member.mode, 0o755)
            self.assertEqual(archive.extractfile(member).read(), content)

    @defer.inlineCallbacks
    def test_installsWithTheAgentInstaller(self):
        """
        The artifact passes the agent's safe extraction, and its entry point
        is executable.
        """
        self.executable("tool")
        result = yield self.bin2pod("tool")
        with open(result["manifest_path"], "rb") as f:
            manifest = parseManifest(f.read())
        [(launchableId, launchable)] = manifest.launchables.items()
        layout = PodLayout(os.path.abspath(self.mktemp()), manifest.id)
        installDir = yield Installer(reactor).install(
            layout, launchableId, launchableVersion(launchable), result["tar_path"],
            digest=launchable.digest)
        self.assertEqual(Installer.entryPoints(installDir, launchable.entryPoints),
                         ["bin/launch"])

    @defer.inlineCallbacks
    def test_reproducible(self):
        """
        Wrapping the same executable twice gives the same artifact.
        """
        self.executable("tool")
        first = yield self.bin2pod("tool")
        os.utime(os.path.join(self.cwd, "tool"), (1, 1))
        second = yield self.bin2pod("tool")
        self.assertEqual(first, second)

    @defer.inlineCallbacks
    def test_idArtifactDirAndLocation(self):
        """
        C{--id} names the pod; C{--artifact-dir} says where files go (the
        printed paths are absolute); C{--location} is a base URL unless it
        names a C{.tar.gz}.
        """
        self.executable("tool")
        os.makedirs(os.path.join(self.cwd, "out"))
        result = yield self.bin2pod("tool", "--id", "gate", "--artifact-dir", "out",
                                    "--location", "https://artifacts.example/hooks/")
        name = os.path.basename(result["tar_path"])
        self.assertTrue(name.startswith("gate_"), name)
        self.assertEqual(result["manifest_path"], os.path.join(self.cwd, "out", "gate.yaml"))
        self.assertEqual(result["location"], "https://artifacts.example/hooks/" + name)
        with open(result["manifest_path"], "rb") as f:
            manifest = parseManifest(f.read())
        self.assertEqual(manifest.id, "gate")
        result = yield self.bin2pod("tool", "--location", "http://a.example/x/tool_7.tar.gz")
        self.assertEqual(result["location"], "http://a.example/x/tool_7.tar.gz")

    @defer.inlineCallbacks
    def test_idSanitised(self):
        """
        The default id is the file name made a valid pod id.
        """
        self.executable("my hook!.sh")
        result = yield self.bin2pod("my hook!.sh")
        self.assertEqual(os.path.basename(result["manifest_path"]), "my-hook-.sh.yaml")
        with open(result["manifest_path"], "rb") as f:
            self.assertEqual(parseManifest(f.read()).id, "my-hook-.sh")

    @defer.inlineCallbacks
    def test_errors(self):
        """
        A missing or non-executable file, a bad id or location: one line,
        nothing written.
        """
        line, code = yield self.p2Fails("bin2pod", "nothere")
        self.assertIn("nothere", line)
        self.executable("plain", mode=0o644)
        line, code = yield self.p2Fails("bin2pod", "plain")
        self.assertIn("chmod +x", line)
        self.executable("tool")
        line, code = yield self.p2Fails("bin2pod", "tool", "--id", "a/b")
        self.assertEqual(code, 2)
        line, code = yield self.p2Fails("bin2pod", "tool", "--location", "ftp://x/")
        self.assertEqual(code, 2)
        self.assertIn("--location", line)
        self.assertEqual(sorted(os.listdir(self.cwd)), ["plain", "tool"])


class HookCommandTests(HookCommandMixin, unittest.TestCase):

    timeout = 60

    @defer.inlineCallbacks
    def manifestFile(self, name="gate"):
        self.executable(name)
        result = yield self.bin2pod(name)
        return result["manifest_path"]

    @defer.inlineCallbacks
    def test_scheduleListRemove(self):
        path = yield self.manifestFile()
        with open(path, "rb") as f:
            raw = f.read()
        sha = parseManifest(raw).sha()
        out = yield self.succeed("hook", "schedule", "--event", "before_install", path)
        self.assertIn(sha, out)
        store = yield self.openStore()
        entry = yield store.get(keys.hook("before_install", "gate"))
        self.assertEqual(entry.value, raw)
        yield self.succeed("hook", "schedule", "--event", "after_auth_fail", path)
        out = yield self.succeed("hook", "list")
        self.assertEqual(out.splitlines(), ["before_install gate %s" % (sha,),
                                            "after_auth_fail gate %s" % (sha,)])
        rows = json.loads((yield self.succeed("hook", "list", "--json")))
        self.assertEqual(rows[0], {"event": "before_install", "pod_id": "gate", "sha": sha,
                                   "error": None})
        yield self.succeed("hook", "remove", "--event", "before_install", "gate")
        self.assertIsNone((yield store.get(keys.hook("before_install", "gate"))))
        line, code = yield self.p2Fails("hook", "remove", "--event", "before_install", "gate")
        self.assertEqual(code, 1)
        self.assertIn("nothing removed", line)

    @defer.inlineCallbacks
    def test_unknownEvent(self):
        """
        An unknown event: one line listing the events, exit 2.
        """
        path = yield self.manifestFile()
        for args in (("schedule", "--event", "before_lunch", path),
                     ("remove", "--event", "before_lunch", "gate")):
            line, code = yield self.p2Fails("hook", *args)
            self.assertEqual(code, 2)
            self.assertIn("before_lunch", line)
            for event in EVENTS:
                self.assertIn(event, line)

    @defer.inlineCallbacks
    def test_invalidManifest(self):
        """
        An invalid manifest: every problem on the line, nothing written.
        """
        path = os.path.join(self.cwd, "bad.yaml")
        with open(path, "w") as f:
            f.write("id: bad\nlaunchables:\n  a:\n    launchable_type: docker\n"
                    "restart_policy: sometimes\ntermination_grace_period: -1\n")
        line, code = yield self.p2Fails("hook", "schedule", "--event", "before_install", path)
        self.assertEqual(code, 1)
        self.assertIn("launchable_type", line)
        self.assertIn("termination_grace_period", line)
        self.assertIn("location", line)
        store = yield self.openStore()
        self.assertEqual((yield store.list(keys.HOOKS)), {})


class ExampleTests(HookCommandMixin, unittest.TestCase):
    """
    The issue's example works as written, and the hook it schedules creates
    the user of a pod being installed on an agent.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_ensureUser(self):
        if not shutil.which("jq"):
            from tests.servers import requireServer
            requireServer("jq", "the README's hook example pipes through jq")
        if os.getuid() != 0 or not shutil.which("useradd"):
            raise unittest.SkipTest("the README's hook example creates a user: needs root and useradd")
        bindir = os.path.join(self.cwd, "bin")
        os.makedirs(bindir)
        with open(os.path.join(bindir, "p2"), "w") as f:
            f.write('#!/bin/sh\nexec %s -c "%s" "$@"\n' % (sys.executable, P2_CODE))
        os.chmod(os.path.join(bindir, "p2"), 0o755)
        env = dict(self.env, P2_STORE=self.url, PYTHONPATH=ROOT,
                   PATH=bindir + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
        out, err, code = yield utils.getProcessOutputAndValue(
            "/bin/bash", ["-ec", EXAMPLE], env=env, path=self.cwd)
        self.assertEqual(code, 0, err)
        self.assertIn(b"scheduled hook ensure_user", out)

        # An agent installs the hook and runs it before installing a pod.
        from tests.test_agent_hookpods import Agent
        store = yield self.openStore()
        agent = Agent(self, store, "n1")
        self.assertTrue((yield agent.sync.whenSynced()))
        self.assertEqual(agent.links("before_install"), ["ensure_user_ensure-user_launch"])
        user = "p2hook" + uuid.uuid4().hex[:8]
        self.addCleanup(lambda: utils.getProcessValue(shutil.which("userdel"), [user]))
        home = os.path.join(self.cwd, "pods", user)
        yield agent.runner.run("before_install", HookContext(podId=user, podHome=home))
        entry = pwd.getpwnam(user)
        self.assertEqual(entry.pw_dir, home)
        status = yield waitFor(lambda: store.get(keys.status(
            "hooks", "n1", "before_install", "ensure_user_ensure-user_launch")))
        self.assertEqual(json.loads(status.value)["state"], "ok")
