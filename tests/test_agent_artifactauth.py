"""
Tests for L{p2twisted.agent.artifactauth}: artifact signatures (build,
manifest, either) and signed digest files of installed trees, with real gpg
and ssh-keygen, a real artifact cache and installer, and a real agent.
"""

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted import intent
from p2twisted.agent.artifactauth import (
    ARTIFACT_NAMESPACE, ArtifactAuth, ArtifactAuthSettings, artifactAuthSettings,
    compareTree, fetchAndInstall, parseTreeDigest)
from p2twisted.agent.artifacts import ArtifactCache, sha256File
from p2twisted.agent.install import Installer
from p2twisted.agent.layout import PodLayout, StateLayout
from p2twisted.errors import ArtifactRejected, DigestMismatch, UsageError
from p2twisted.manifest import parseManifest
from p2twisted.store import keys, openStore
from tests.artifacts import buildHoist
from tests.signingkeys import GPGKeys, SSHKeys
from tests.store_contract import waitFor

FILES = {"bin/launch": (b"#!/bin/sh\nexec sleep 1000\n", 0o755), "lib/data.txt": b"data\n"}


def treeListing(files, changes=None):
    """
    @return: a sha256sum listing of C{files} (as L{buildHoist} takes them),
        with C{changes} (path to content, or C{None} to leave it out).
    """
    import hashlib
    files = dict(files)
    files.update(changes or {})
    lines = []
    for path, value in sorted(files.items()):
        if value is None:
            continue
        content = value[0] if isinstance(value, tuple) else value
        lines.append("%s  %s\n" % (hashlib.sha256(content).hexdigest(), path))
    return "".join(lines).encode()


class SettingsTests(unittest.SynchronousTestCase):

    def test_defaults(self):
        self.assertEqual(artifactAuthSettings(None), ArtifactAuthSettings())
        self.assertEqual(artifactAuthSettings({"type": "build", "keyring": "k"}),
                         ArtifactAuthSettings("build", os.path.abspath("k"), None))

    def test_bad(self):
        """
        Each bad setting is one line naming it.
        """
        for data, message in [
                ({"type": "sometimes"}, "agent config artifact_auth.type: expected none, build, "
                                        "manifest or either, got 'sometimes'"),
                ("either", "agent config artifact_auth: type either needs a keyring (GPG) or "
                           "allowed_signers (OpenSSH) file"),
                ({"keyrings": "x"}, "agent config artifact_auth: unknown setting keyrings "
                                    "(known: allowed_signers, keyring, type)"),
                ({"type": "build", "keyring": 3}, "agent config artifact_auth.keyring: "
                                                  "expected a file name, got 3")]:
            e = self.assertRaises(UsageError, artifactAuthSettings, data)
            self.assertEqual(str(e), message)

    def test_agentConfig(self):
        """
        The agent config reads C{artifact_auth:}.
        """
        from p2twisted.agent.config import agentConfig
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("state_dir: %s\nartifact_auth: {type: manifest, allowed_signers: /a}\n"
                    % (os.path.abspath(self.mktemp()),))
        self.assertEqual(agentConfig(path, environ={}).artifactAuth,
                         ArtifactAuthSettings("manifest", None, "/a"))


class TreeTests(unittest.SynchronousTestCase):

    def test_parse(self):
        sha = "a" * 64
        self.assertEqual(parseTreeDigest("%s  bin/launch\n%s *./lib/x\n\n# c\n" % (sha, sha), "d"),
                         {"bin/launch": sha, "lib/x": sha})
        for text, message in [
                ("nonsense\n", "digest file d line 1 is not '<sha256> <mode><path>': 'nonsense'"),
                ("%s  ../etc/passwd\n" % (sha,), "digest file d line 1: path '../etc/passwd' "
                                                 "is outside the tree"),
                ("%s  /etc/passwd\n" % (sha,), "digest file d line 1: path '/etc/passwd' is "
                                               "outside the tree"),
                ("%s  a\n%s  ./a\n" % (sha, sha), "digest file d lists a twice")]:
            e = self.assertRaises(ArtifactRejected, parseTreeDigest, text, "d")
            self.assertEqual(str(e), message)

    def test_compare(self):
        root = self.mktemp()
        os.makedirs(os.path.join(root, "bin"))
        for name, content in [("bin/a", b"a"), ("b", b"b"), ("c", b"c")]:
            with open(os.path.join(root, name), "wb") as f:
                f.write(content)
        os.symlink("bin", os.path.join(root, "link"))
        entries = {"bin/a": sha256File(os.path.join(root, "bin/a")), "b": "0" * 64,
                   "gone": "0" * 64, "link": "0" * 64}
        self.assertEqual(compareTree(root, entries), (["gone"], ["c"], ["b", "link"]))


class _Signers(object):
    """
    Real keys for a test: a GPG builder and an SSH builder, their keyring and
    allowed-signers file, and an outsider of each kind.
    """

    def __init__(self, testCase, directory):
        self.gpgKeys = GPGKeys(testCase)
        self.sshKeys = SSHKeys(testCase)
        self.builder = self.gpgKeys.newKey("Builder <build@example.com>")
        self.outsider = self.gpgKeys.newKey("Outsider <out@example.com>")
        self.sshBuilder = self.sshKeys.newKey("ci@example.com")
        self.keyring = self.gpgKeys.exportKeyring(os.path.join(directory, "artifacts.gpg"),
                                                  [self.builder])
        self.allowed = self.sshKeys.allowedSigners(os.path.join(directory, "artifact_signers"),
                                                   [self.sshBuilder])


class ArtifactAuthTests(unittest.TestCase):
    """
    L{ArtifactAuth} and L{fetchAndInstall} with a real cache and installer.
    """

    timeout = 120

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.artifactDir = os.path.join(self.dir, "art")
        os.makedirs(self.artifactDir)
        self.keys = _Signers(self, self.dir)
        self.artifact = os.path.join(self.artifactDir, "web_1.tar.gz")
        self.sha = buildHoist(self.artifact, files=FILES)
        self.cache = ArtifactCache(StateLayout(os.path.join(self.dir, "state")), reactor,
                                   retries=0)
        self.addCleanup(self.cache.close)
        self.installer = Installer(reactor)
        self.layout = PodLayout(os.path.join(self.dir, "pods"), "web")

    def auth(self, kind):
        if self.cache.auth is not None:
            self.addCleanup(self.cache.auth.close)
        auth = ArtifactAuth.fromSettings(
            ArtifactAuthSettings(kind, self.keys.keyring, self.keys.allowed), self.cache, reactor)
        self.addCleanup(auth.close)  # the cache closes only the last one's
        self.cache.auth = auth
        return auth

    def write(self, path, data):
        with open(path, "wb") as f:
            f.write(data)

    def artifactBytes(self):
        with open(self.artifact, "rb") as f:
            return f.read()

    def signBuild(self, key=None):
        self.write(self.artifact + ".sig",
                   self.keys.gpgKeys.detachSign(key or self.keys.builder, self.artifactBytes()))

    def signManifest(self, sha=None, key=None):
        text = ("artifact_sha: %s\n" % (sha or self.sha,)).encode()
        self.write(self.artifact + ".manifest", text)
        self.write(self.artifact + ".manifest.sig",
                   self.keys.gpgKeys.detachSign(key or self.keys.builder, text))

    def check(self, kind):
        return self.auth(kind).checkArtifact(self.artifact, self.artifact, self.sha)

    @defer.inlineCallbacks
    def rejected(self, d):
        e = yield self.assertFailure(d, ArtifactRejected)
        self.assertIsInstance(e, DigestMismatch)
        self.assertNotIn("\n", str(e))
        return str(e)

    @defer.inlineCallbacks
    def test_none(self):
        self.assertIsNone((yield self.check("none")))

    @defer.inlineCallbacks
    def test_build(self):
        """
        C{build}: a detached GPG signature at C{<artifact>.sig} by a keyring
        key; missing, by another key, or over other bytes: refused.
        """
        reason = yield self.rejected(self.check("build"))
        self.assertTrue(reason.startswith("no build signature %s.sig: " % (self.artifact,)),
                        reason)
        self.signBuild()
        signer = yield self.check("build")
        self.assertEqual(signer.fingerprint, self.keys.builder)
        self.signBuild(self.keys.outsider)
        reason = yield self.rejected(self.check("build"))
        self.assertIn("the build signature of %s refused: gpg: the signature was made by a key "
                      "not in the keyring" % (self.artifact,), reason)
        self.signBuild()
        buildHoist(self.artifact, files=dict(FILES, extra=b"x"))
        reason = yield self.rejected(self.check("build"))
        self.assertIn("gpg: bad signature", reason)

    @defer.inlineCallbacks
    def test_buildSSH(self):
        """
        An OpenSSH signature made in namespace p2-artifact counts; one made
        for manifests does not.
        """
        self.write(self.artifact + ".sig", self.keys.sshKeys.signature(
            self.keys.sshBuilder, self.artifactBytes(), namespace=ARTIFACT_NAMESPACE))
        signer = yield self.check("build")
        self.assertEqual(signer.identity, "ci@example.com")
        self.write(self.artifact + ".sig", self.keys.sshKeys.signature(
            self.keys.sshBuilder, self.artifactBytes()))
        reason = yield self.rejected(self.check("build"))
        self.assertIn("ssh: the signature was not made for namespace 'p2-artifact'", reason)

    @defer.inlineCallbacks
    def test_manifest(self):
        """
        C{manifest}: a signed C{<artifact>.manifest} naming the artifact's
        SHA-256; a signed one naming another SHA is refused.
        """
        reason = yield self.rejected(self.check("manifest"))
        self.assertTrue(reason.startswith("no artifact manifest"), reason)
        self.signManifest()
        self.assertEqual((yield self.check("manifest")).fingerprint, self.keys.builder)
        self.signManifest(sha="0" * 64)
        reason = yield self.rejected(self.check("manifest"))
        self.assertEqual(reason, "artifact manifest %s.manifest says artifact_sha %s, but %s has "
                         "sha256 %s" % (self.artifact, "0" * 64, self.artifact, self.sha))

    @defer.inlineCallbacks
    def test_either(self):
        """
        C{either}: the manifest will do without a build signature; neither
        is refused with both reasons.
        """
        reason = yield self.rejected(self.check("either"))
        self.assertIn("no build signature", reason)
        self.assertIn("; and no artifact manifest", reason)
        self.signManifest()
        self.assertEqual((yield self.check("either")).fingerprint, self.keys.builder)

    def launchable(self, listing, signer=None):
        """
        @return: a launchable of this artifact with a digest file holding
            C{listing}, signed by C{signer} (default: the builder).
        """
        digest = os.path.join(self.artifactDir, "web_1.sha256sums")
        self.write(digest, listing)
        self.write(digest + ".sig", self.keys.gpgKeys.detachSign(
            signer or self.keys.builder, listing))
        manifest = parseManifest(
            b"id: web\nlaunchables:\n  web:\n    launchable_type: hoist\n    location: %s\n"
            b"    digest_location: %s\n    digest_signature_location: %s.sig\n"
            % (self.artifact.encode(), digest.encode(), digest.encode()))
        return manifest.launchables["web"]

    @defer.inlineCallbacks
    def test_tree(self):
        """
        A signed digest file matching the installed tree installs; one with
        a file missing, extra or changed fails, naming them, and leaves no
        install behind.
        """
        self.auth("build")
        self.signBuild()
        installDir = yield fetchAndInstall(self.cache, self.installer, self.layout, "web",
                                           self.launchable(treeListing(FILES)))
        self.assertTrue(os.path.isfile(os.path.join(installDir, "lib", "data.txt")))
        yield self.installer.prune(self.layout, "web")
        import shutil
        shutil.rmtree(installDir)
        listing = treeListing(FILES, {"lib/data.txt": b"other\n", "lib/new": b"n",
                                      "bin/launch": None})
        reason = yield self.rejected(fetchAndInstall(
            self.cache, self.installer, self.layout, "web", self.launchable(listing)))
        self.assertIn("does not match digest file", reason)
        self.assertIn("missing lib/new; extra bin/launch; changed lib/data.txt", reason)
        self.assertFalse(os.path.exists(installDir))

    @defer.inlineCallbacks
    def test_treeLinkToDevice(self):
        """
        A symbolic link to something that is not a regular file -- here
        C{/dev/null}, listed with the digest of its (empty) content -- is no
        file of the tree: the install fails naming it.  (Reading a link to
        C{/dev/zero} or to a FIFO would never end.)
        """
        import hashlib
        self.sha = buildHoist(self.artifact, files=FILES, symlinks={"bin/null": "/dev/null"})
        self.auth("build")
        self.signBuild()
        listing = treeListing(FILES) + ("%s  bin/null\n" % (hashlib.sha256(b"").hexdigest(),)
                                        ).encode()
        reason = yield self.rejected(fetchAndInstall(
            self.cache, self.installer, self.layout, "web", self.launchable(listing)))
        self.assertIn("changed bin/null", reason)

    @defer.inlineCallbacks
    def test_treeOfRunningInstall(self):
        """
        A refused listing for the install that runs (the same version
        deployed again) fails without removing that install.
        """
        self.auth("build")
        self.signBuild()
        installDir = yield fetchAndInstall(self.cache, self.installer, self.layout, "web",
                                           self.launchable(treeListing(FILES)))
        yield self.installer.activate(self.layout, "web", installDir)
        yield self.rejected(fetchAndInstall(
            self.cache, self.installer, self.layout, "web",
            self.launchable(treeListing(FILES, {"lib/data.txt": b"other\n"}))))
        self.assertTrue(os.path.isfile(os.path.join(installDir, "lib", "data.txt")))

    @defer.inlineCallbacks
    def test_treeSignature(self):
        """
        A digest file signed by a key not in the keyring is refused before
        the tree is compared.
        """
        self.auth("build")
        self.signBuild()
        reason = yield self.rejected(fetchAndInstall(
            self.cache, self.installer, self.layout, "web",
            self.launchable(treeListing(FILES), signer=self.keys.outsider)))
        self.assertIn("digest file %s refused: gpg: the signature was made by a key not in "
                      "the keyring" % (os.path.join(self.artifactDir, "web_1.sha256sums"),),
                      reason)

    @defer.inlineCallbacks
    def test_rotation(self):
        """
        A builder key added to the keyring counts from the next check, with
        no restart.
        """
        self.signBuild(self.keys.outsider)
        auth = self.auth("build")
        yield self.rejected(auth.checkArtifact(self.artifact, self.artifact, self.sha))
        self.keys.gpgKeys.exportKeyring(self.keys.keyring, [self.keys.builder, self.keys.outsider])
        signer = yield auth.checkArtifact(self.artifact, self.artifact, self.sha)
        self.assertEqual(signer.fingerprint, self.keys.outsider)


class AgentArtifactAuthTests(unittest.TestCase):
    """
    A real agent under C{artifact_auth: build}: a refused artifact is never
    activated, the old version keeps running, C{after_auth_fail} hooks run.
    """

    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        from tests.test_agent_e2e import requireRunit
        requireRunit()
        from tests.agentharness import AgentHarness
        from tests.test_agent_hooks import writeScript
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.artifacts = os.path.join(self.base, "art")
        os.makedirs(self.artifacts)
        self.keys = _Signers(self, self.base)
        self.store = yield openStore("local://%s/state.db" % (self.base,))
        self.addCleanup(self.store.close)
        self.record = os.path.join(self.base, "record")
        writeScript(os.path.join(self.base, "hooks.d", "after_auth_fail", "mark"),
                    '#!/bin/sh\necho "$HOOK_EVENT $HOOKED_POD_ID" >> %s\n' % (self.record,))
        self.harness = AgentHarness(
            self, "local://%s/state.db" % (self.base,),
            hooksRoot=os.path.join(self.base, "hooksroot"),
            hooksDirectory=os.path.join(self.base, "hooks.d"),
            artifactAuth=ArtifactAuthSettings("build", self.keys.keyring))

    def recorded(self):
        try:
            with open(self.record) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def build(self, version, signer=None):
        from tests.agentharness import buildWebArtifact
        url, sha = buildWebArtifact(self.artifacts, "hello", version)
        if signer is not None:
            path = url[len("file://"):]
            with open(path, "rb") as f:
                data = f.read()
            with open(path + ".sig", "wb") as f:
                f.write(self.keys.gpgKeys.detachSign(signer, data))
        return url, sha

    @defer.inlineCallbacks
    def podStatus(self):
        import json
        entry = yield self.store.get(keys.status("pods", "n1", "hello"))
        return json.loads(entry.value) if entry else None

    @defer.inlineCallbacks
    def test_refusedArtifactKeepsOldVersion(self):
        from tests.agentharness import freePort, httpGet, waitForVersion, webManifest
        port = freePort()
        self.harness.start()
        url1, sha1 = self.build("1", self.keys.builder)
        yield intent.schedule(self.store, "n1", parseManifest(webManifest("hello", url1, port,
                                                                          sha1)))
        yield waitForVersion(port, "1")
        yield self.harness.whenConverged()
        pid = self.harness.servicePid("hello")
        reality = (yield self.store.get(keys.reality("n1", "hello"))).value
        for version, signer, word in [("2", None, "no build signature"),
                                      ("3", self.keys.outsider, "not in the keyring")]:
            url, sha = self.build(version, signer)
            yield intent.schedule(self.store, "n1", parseManifest(
                webManifest("hello", url, port, sha)))
            status = yield waitFor(lambda: self.podStatus().addCallback(
                lambda s: s if s and s.get("error") and word in s["error"] else None),
                what="version %s to be refused" % (version,))
            self.assertIn(url[len("file://"):], status["error"])
            yield waitFor(lambda: "after_auth_fail hello" in self.recorded(),
                          what="after_auth_fail hook")
            self.assertEqual((yield httpGet("http://127.0.0.1:%d/version" % (port,))),
                             (200, b"1"))
            self.assertEqual(self.harness.servicePid("hello"), pid)
            self.assertEqual((yield self.store.get(keys.reality("n1", "hello"))).value, reality)
            installs = os.listdir(self.harness.layout("hello").installsDir("web"))
            self.assertNotIn("web_%s" % (version,), installs)
        # Signed by the builder: it deploys.
        url4, sha4 = self.build("4", self.keys.builder)
        yield intent.schedule(self.store, "n1", parseManifest(webManifest("hello", url4, port,
                                                                          sha4)))
        yield waitForVersion(port, "4")


class HookPodArtifactAuthTests(unittest.TestCase):
    """
    Hook pods' artifacts are held to C{artifact_auth} too.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_unsignedHookPod(self):
        """
        A hook pod whose artifact has no build signature is not installed
        (its status says why); once signed, it is.
        """
        import json

        from p2twisted.store.memory import MemoryState, MemoryStore
        from tests.test_agent_hookpods import Agent, hookArtifact
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        signers = _Signers(self, base)
        agent = Agent(self, MemoryStore(MemoryState(), clock=reactor), "n1")
        agent.artifacts.auth = ArtifactAuth.fromSettings(
            ArtifactAuthSettings("build", signers.keyring), agent.artifacts, reactor)
        directory = os.path.join(base, "art")
        manifest = hookArtifact(directory, "mark", "#!/bin/sh\ntrue\n")
        yield agent.store.put(keys.hook("before_install", "mark"), manifest)
        agent.start()
        yield agent.sync.whenSynced()
        status = json.loads((yield agent.store.get(
            keys.status("hooks", "n1", "before_install", "mark"))).value)
        self.assertEqual(status["state"], "failed")
        self.assertIn("no build signature", status["error"])
        self.assertEqual(agent.links("before_install"), [])
        artifact = os.path.join(directory, "mark_1.tar.gz")
        with open(artifact, "rb") as f:
            signature = signers.gpgKeys.detachSign(signers.builder, f.read())
        with open(artifact + ".sig", "wb") as f:
            f.write(signature)
        yield agent.sync.whenSynced()
        self.assertEqual(agent.links("before_install"), ["mark_mark_launch"])
