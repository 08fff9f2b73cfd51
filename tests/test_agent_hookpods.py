"""
Tests for L{p2twisted.agent.hookpods}: hook pods scheduled in the store are
installed by every agent, linked for the hook runner, upgraded, and removed
with their key -- with real artifacts, the real installer and real hook
processes.
"""

import json
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface import implementer

from p2twisted.agent.artifacts import ArtifactCache
from p2twisted.agent.hookpods import HookSync, hookKey, linkNames
from p2twisted.agent.hooks import HookContext, HookRunner
from p2twisted.agent.install import Installer
from p2twisted.agent.layout import StateLayout
from p2twisted.errors import StoreUnavailable
from p2twisted.store import keys
from p2twisted.store.interfaces import IStore
from p2twisted.store.memory import MemoryState, MemoryStore
from tests.artifacts import buildHoist
from tests.store_contract import waitFor
from tests.test_agent_hooks import makeConfig


def hookArtifact(directory, podId, script, version="1", launchable=None, files=None,
                 entryPoints=None, digest=True):
    """
    Write C{<directory>/<podId>_<version>.tar.gz} holding C{script} as
    C{bin/launch} (unless C{files} says otherwise).

    @return: the bytes of a manifest installing it.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "%s_%s.tar.gz" % (podId, version))
    contents = {"bin/launch": (script, 0o755)} if files is None else files
    sha = buildHoist(path, files=contents)
    stanza = "    launchable_type: hoist\n    location: file://%s\n" % (path,)
    if digest:
        stanza += "    digest: %s\n" % (sha,)
    if entryPoints:
        stanza += "    entry_points: [%s]\n" % (", ".join(entryPoints),)
    return ("id: %s\nlaunchables:\n  %s:\n%s" % (podId, launchable or podId, stanza)).encode()


class Agent(object):
    """
    The hook parts of one agent: its own hooks root, artifact cache,
    installer, L{HookSync} and L{HookRunner}.
    """

    def __init__(self, testCase, store, name, resyncInterval=30.0, auth=None):
        base = os.path.abspath(testCase.mktemp())
        os.makedirs(base)
        self.config = makeConfig(base, node=name, hooksDirectory=None)
        self.store = store
        self.artifacts = ArtifactCache(StateLayout(self.config.stateDir), reactor, retries=0)
        self.installer = Installer(reactor)
        self.sync = HookSync(store, self.config, reactor, self.artifacts, self.installer,
                             resyncInterval=resyncInterval, auth=auth)
        self.runner = HookRunner(self.config, reactor, store)
        testCase.addCleanup(self.artifacts.close)
        testCase.addCleanup(self.stop)

    def start(self):
        self.sync.startService()
        return self

    def stop(self):
        if self.sync.running:
            return self.sync.stopService()

    def execDir(self, event):
        return os.path.join(self.config.hooksRoot, "exec", event)

    def links(self, event):
        try:
            return sorted(os.listdir(self.execDir(event)))
        except FileNotFoundError:
            return []

    def home(self, event, podId):
        return os.path.join(self.config.hooksRoot, "pods", event, podId)


class HookSyncTests(unittest.TestCase):

    timeout = 60

    def setUp(self):
        self.state = MemoryState()
        self.store = MemoryStore(self.state, clock=reactor)
        self.artifacts = os.path.abspath(self.mktemp())
        self.record = os.path.abspath(self.mktemp())

    def agent(self, name="n1", **kwargs):
        return Agent(self, MemoryStore(self.state, clock=reactor), name, **kwargs)

    def recorder(self, podId, version="1", tag=None, **kwargs):
        return hookArtifact(self.artifacts, podId, '#!/bin/sh\necho "%s $HOOK $HOOKED_POD_ID" '
                            '>> %s\n' % (tag or version, self.record), version, **kwargs)

    def recorded(self):
        try:
            with open(self.record) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    @defer.inlineCallbacks
    def status(self, event, podId, node="n1"):
        entry = yield self.store.get(keys.status("hooks", node, event, podId))
        return json.loads(entry.value) if entry else None

    @defer.inlineCallbacks
    def test_everyAgentInstallsAndRemoves(self):
        """
        A hook scheduled in the store appears on each of three agents (each
        runs it at its event) and disappears from all when its key is
        removed.
        """
        agents = [self.agent(name).start() for name in ("n1", "n2", "n3")]
        yield self.store.put(keys.hook("before_install", "ensure"), self.recorder("ensure"))
        for agent in agents:
            yield waitFor(lambda: agent.links("before_install") == ["ensure_ensure_launch"],
                          what="hook link on %s" % (agent.config.node,))
        for agent in agents:
            yield agent.runner.run("before_install", HookContext(podId="web"))
        self.assertEqual(self.recorded(), ["1 ensure_ensure_launch web"] * 3)
        for agent in agents:
            yield waitFor(lambda: self.status("before_install", "ensure", agent.config.node)
                          .addCallback(lambda s: s and s["state"] == "installed"),
                          what="installed status of %s" % (agent.config.node,))
        yield self.store.delete(keys.hook("before_install", "ensure"))
        for agent in agents:
            yield waitFor(lambda: not agent.links("before_install")
                          and not os.path.exists(agent.home("before_install", "ensure")),
                          what="hook removed on %s" % (agent.config.node,))
            yield waitFor(lambda: self.status("before_install", "ensure", agent.config.node)
                          .addCallback(lambda s: s is None),
                          what="status of %s deleted" % (agent.config.node,))

    @defer.inlineCallbacks
    def test_layoutAndUnchangedSkipped(self):
        """
        The hook pod is installed under pods/<event>/<pod_id> with its
        current manifest, linked through C{current}; the same manifest again
        installs nothing.
        """
        agent = self.agent()
        fetched = []
        fetch = agent.artifacts.fetch
        agent.artifacts.fetch = lambda *a: (fetched.append(a[0]), fetch(*a))[1]
        raw = self.recorder("ensure")
        yield self.store.put(keys.hook("after_launch", "ensure"), raw)
        self.assertTrue((yield agent.sync.whenSynced()))
        home = agent.home("after_launch", "ensure")
        with open(os.path.join(home, "current_manifest.yaml"), "rb") as f:
            self.assertEqual(f.read(), raw)
        link = os.path.join(agent.execDir("after_launch"), "ensure_ensure_launch")
        self.assertEqual(os.readlink(link), os.path.join(home, "ensure", "current", "bin/launch"))
        self.assertTrue(os.path.realpath(link).startswith(
            os.path.join(home, "ensure", "installs", "ensure_1") + os.sep))
        self.assertEqual(len(fetched), 1)
        yield agent.sync.whenSynced()
        yield agent.sync.whenSynced()
        self.assertEqual(len(fetched), 1)

    @defer.inlineCallbacks
    def test_repairs(self):
        """
        A deleted link, or a deleted C{current} link of the hook pod, is
        restored at the next sync.
        """
        agent = self.agent()
        yield self.store.put(keys.hook("after_launch", "ensure"), self.recorder("ensure"))
        yield agent.sync.whenSynced()
        os.unlink(os.path.join(agent.execDir("after_launch"), "ensure_ensure_launch"))
        yield agent.sync.whenSynced()
        self.assertEqual(agent.links("after_launch"), ["ensure_ensure_launch"])
        os.unlink(os.path.join(agent.home("after_launch", "ensure"), "ensure", "current"))
        yield agent.sync.whenSynced()
        yield agent.runner.run("after_launch")
        self.assertEqual(self.recorded(), ["1 ensure_ensure_launch "])

    @defer.inlineCallbacks
    def test_upgrade(self):
        """
        A new manifest under the same key is installed; the link then runs
        the new version and the previous one is C{last}.
        """
        agent = self.agent()
        yield self.store.put(keys.hook("after_launch", "ensure"), self.recorder("ensure", "1"))
        yield agent.sync.whenSynced()
        yield self.store.put(keys.hook("after_launch", "ensure"), self.recorder("ensure", "2"))
        yield agent.sync.whenSynced()
        yield agent.runner.run("after_launch")
        self.assertEqual(self.recorded(), ["2 ensure_ensure_launch "])
        last = os.readlink(os.path.join(agent.home("after_launch", "ensure"), "ensure", "last"))
        self.assertTrue(last.endswith("ensure_1"), last)
        self.assertEqual((yield self.status("after_launch", "ensure"))["state"], "installed")

    @defer.inlineCallbacks
    def test_launchDirectory(self):
        """
        A launch directory contributes one link per executable in it,
        C{<pod_id>_<launchable>_<script>}; a launchable removed from the
        manifest loses its links.
        """
        agent = self.agent()
        files = {"bin/launch/a": (b"#!/bin/sh\necho a >> %s\n" % self.record.encode(), 0o755),
                 "bin/launch/b": (b"#!/bin/sh\necho b >> %s\n" % self.record.encode(), 0o755),
                 "bin/launch/README": (b"not a hook", 0o644)}
        raw = hookArtifact(self.artifacts, "multi", None, files=files, launchable="tools")
        yield self.store.put(keys.hook("before_launch", "multi"), raw)
        yield agent.sync.whenSynced()
        self.assertEqual(agent.links("before_launch"), ["multi_tools_a", "multi_tools_b"])
        yield agent.runner.run("before_launch")
        self.assertEqual(self.recorded(), ["a", "b"])
        raw = hookArtifact(self.artifacts, "multi", "#!/bin/sh\n", version="2", launchable="other")
        yield self.store.put(keys.hook("before_launch", "multi"), raw)
        yield agent.sync.whenSynced()
        self.assertEqual(agent.links("before_launch"), ["multi_other_launch"])
        self.assertFalse(os.path.exists(os.path.join(agent.home("before_launch", "multi"),
                                                     "tools")))

    @defer.inlineCallbacks
    def test_invalidManifestRecordedThenFixed(self):
        """
        An invalid manifest (here: an id not matching the key) installs
        nothing and is recorded; other hooks are unaffected; once fixed it is
        installed.
        """
        agent = self.agent()
        yield self.store.put(keys.hook("after_install", "good"), self.recorder("good"))
        yield self.store.put(keys.hook("after_install", "bad"), self.recorder("other"))
        yield self.store.put(keys.hook("before_install", "junk"), b"id: [\n")
        yield agent.sync.whenSynced()
        self.assertEqual(agent.links("after_install"), ["good_good_launch"])
        status = yield self.status("after_install", "bad")
        self.assertEqual(status["state"], "invalid")
        self.assertIn("does not match", status["error"])
        self.assertEqual((yield self.status("before_install", "junk"))["state"], "invalid")
        yield self.store.put(keys.hook("after_install", "bad"), self.recorder("bad"))
        yield agent.sync.whenSynced()
        self.assertEqual(agent.links("after_install"), ["bad_bad_launch", "good_good_launch"])

    @defer.inlineCallbacks
    def test_failedInstallRetriedAtResync(self):
        """
        An artifact that cannot be fetched (or has the wrong digest) is
        recorded as failed and the previous version stays; the periodic
        resync installs it once it is there.
        """
        agent = self.agent(resyncInterval=0.1).start()
        yield self.store.put(keys.hook("after_launch", "ensure"), self.recorder("ensure", "1"))
        yield waitFor(lambda: agent.links("after_launch"), what="first version")
        raw = self.recorder("ensure", "2", digest=False)
        os.unlink(os.path.join(self.artifacts, "ensure_2.tar.gz"))
        yield self.store.put(keys.hook("after_launch", "ensure"), raw)
        status = yield waitFor(lambda: self.status("after_launch", "ensure").addCallback(
            lambda s: s if s and s["state"] == "failed" else None), what="failed status")
        self.assertIn("ensure_2.tar.gz", status["error"])
        yield agent.runner.run("after_launch")
        self.assertEqual(self.recorded(), ["1 ensure_ensure_launch "])
        self.recorder("ensure", "2", digest=False)
        yield waitFor(lambda: self.status("after_launch", "ensure").addCallback(
            lambda s: s and s["state"] == "installed"
            and "ensure_2" in os.readlink(os.path.join(
                agent.home("after_launch", "ensure"), "ensure", "current"))), what="installed at resync")
        yield agent.runner.run("after_launch")
        self.assertEqual(self.recorded()[-1], "2 ensure_ensure_launch ")

    @defer.inlineCallbacks
    def test_failedReadRemovesNothing(self):
        """
        When the store cannot be read, installed hooks stay.
        """
        agent = self.agent()
        yield self.store.put(keys.hook("after_launch", "ensure"), self.recorder("ensure"))
        yield agent.sync.whenSynced()

        @implementer(IStore)
        class Down(object):
            def list(self, prefix):
                return defer.fail(StoreUnavailable(prefix, "test"))
        agent.sync.store = Down()
        self.assertFalse((yield agent.sync.whenSynced()))
        self.assertEqual(agent.links("after_launch"), ["ensure_ensure_launch"])

    @defer.inlineCallbacks
    def test_emptySnapshotRemovesAll(self):
        """
        A successful read with no hooks removes every hook pod and link, but
        leaves links it does not own.
        """
        agent = self.agent()
        yield self.store.put(keys.hook("after_launch", "a"), self.recorder("a"))
        yield self.store.put(keys.hook("before_install", "b"), self.recorder("b"))
        yield agent.sync.whenSynced()
        os.symlink("/bin/true", os.path.join(agent.execDir("after_launch"), "admin_hook"))
        os.symlink(os.path.join(agent.home("before_install", "gone"), "x", "current", "bin/launch"),
                   os.path.join(agent.execDir("before_install"), "gone_x_launch"))
        yield self.store.delete(keys.hook("after_launch", "a"))
        yield self.store.delete(keys.hook("before_install", "b"))
        yield agent.sync.whenSynced()
        self.assertEqual(agent.links("after_launch"), ["admin_hook"])
        self.assertEqual(agent.links("before_install"), [])
        self.assertEqual(os.listdir(os.path.join(agent.config.hooksRoot, "pods", "after_launch")),
                         [])

    @defer.inlineCallbacks
    def test_otherKeysIgnored(self):
        """
        Legacy C{hooks/<pod_id>} keys and unknown events are ignored.
        """
        agent = self.agent()
        yield self.store.put("hooks/legacy", self.recorder("legacy"))
        yield self.store.put("hooks/before_lunch/x", self.recorder("x"))
        self.assertTrue((yield agent.sync.whenSynced()))
        self.assertFalse(os.path.exists(os.path.join(agent.config.hooksRoot, "pods")))

    @defer.inlineCallbacks
    def test_stopEndsWatching(self):
        """
        Once stopped (which waits for a sync in progress), changes in the
        store start no sync.
        """
        agent = self.agent().start()
        yield self.store.put(keys.hook("after_launch", "a"), self.recorder("a"))
        yield agent.stop()
        self.assertFalse(agent.sync._lock.locked)
        yield self.store.put(keys.hook("after_launch", "b"), self.recorder("b"))
        self.assertFalse(agent.sync._lock.locked)
        self.assertNotIn("b_b_launch", agent.links("after_launch"))

    def test_helpers(self):
        """
        L{hookKey} parses hook keys; L{linkNames} names links by file name,
        by path when names clash.
        """
        self.assertEqual(hookKey("hooks/before_install/x"), ("before_install", "x"))
        self.assertIsNone(hookKey("hooks/x"))
        self.assertIsNone(hookKey("hooks/nope/x"))
        self.assertEqual(linkNames("p", "l", ["bin/launch"]), {"p_l_launch": "bin/launch"})
        self.assertEqual(linkNames("p", "l", ["bin/x", "sbin/x"]),
                         {"p_l_bin__x": "bin/x", "p_l_sbin__x": "sbin/x"})


class HookPodAuthTests(unittest.TestCase):
    """
    Hook pods under a C{user} policy, signed with a real gpg key.
    """

    timeout = 120

    def setUp(self):
        from tests.signingkeys import GPGKeys
        self.store = MemoryStore(MemoryState(), clock=reactor)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.keys = GPGKeys(self)
        self.alice = self.keys.newKey("Alice <alice@example.com>")
        self.keyring = self.keys.exportKeyring(os.path.join(self.dir, "keyring.gpg"),
                                               [self.alice])
        self.policy = os.path.join(self.dir, "policy.yaml")

    def writePolicy(self, apps):
        with open(self.policy, "w") as f:
            f.write("groups: {ops: [alice@example.com]}\napps: %s\n" % (apps,))

    @defer.inlineCallbacks
    def status(self, event, podId):
        entry = yield self.store.get(keys.status("hooks", "n1", event, podId))
        return json.loads(entry.value) if entry else None

    @defer.inlineCallbacks
    def test_judgedAsTheAgentsUser(self):
        """
        A hook pod's scripts run as the agent's user (root, usually),
        whatever its run_as says: a signer allowed only for the run_as it
        names is refused, and nothing is installed; allowed for the agent's
        user, the hook pod is installed.
        """
        from p2twisted.agent import runtime
        from p2twisted.auth.reload import PolicyReloader
        from p2twisted.auth.settings import authSettings
        user = runtime.currentUser()
        self.writePolicy("{nobody: [ops]}")
        auth = PolicyReloader(authSettings({"type": "user", "keyring": self.keyring,
                                            "deploy_policy": self.policy}), reactor)
        self.addCleanup(auth.stopService)
        agent = Agent(self, self.store, "n1", auth=auth).start()
        raw = hookArtifact(os.path.join(self.dir, "art"), "audit", "#!/bin/sh\ntrue\n")
        yield self.store.put(keys.hook("before_install", "audit"),
                             self.keys.clearSign(self.alice, raw + b"run_as: nobody\n"))
        yield agent.sync.whenSynced()
        status = yield self.status("before_install", "audit")
        self.assertEqual(status["state"], "refused")
        self.assertIn("run_as %s " % (user,), status["error"])
        self.assertEqual(agent.links("before_install"), [])
        self.writePolicy("{nobody: [ops], %s: [ops]}" % (user,))
        auth.check()
        yield agent.sync.whenSynced()
        self.assertEqual((yield self.status("before_install", "audit"))["state"], "installed")
        self.assertEqual(agent.links("before_install"), ["audit_audit_launch"])
