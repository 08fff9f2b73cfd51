"""
A real agent (runit, local store, real artifacts and HTTP) under a keyring
policy with a real GPG keyring and OpenSSH allowed-signers file: a refused
manifest changes nothing that runs, its hook runs, its status says why, and
a rotated keyring takes effect without a restart.
"""

import json
import os

from twisted.internet import defer

from p2twisted import intent
from p2twisted.agent.runtime import currentUser
from p2twisted.auth.settings import authSettings
from p2twisted.manifest import parseManifest
from p2twisted.store import keys
from tests.agentharness import AgentHarness, buildWebArtifact, freePort, waitForVersion, webManifest
from tests.signingkeys import GPGKeys, SSHKeys
from tests.store_contract import waitFor
from tests.test_agent_e2e import LocalStoreCase

HOOK = b"""#!/bin/sh
echo "$HOOKED_POD_ID" >> %s
"""


class SignedAgentCase(LocalStoreCase):
    """
    A real agent under runit whose policy trusts a GPG keyring (Alice) and
    an OpenSSH allowed-signers file (Carol), with an after_auth_fail hook
    recording the pods refused.
    """

    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        yield LocalStoreCase.setUp(self)
        self.gpg = GPGKeys(self)
        self.ssh = SSHKeys(self)
        self.alice = self.gpg.newKey("Alice <alice@example.com>")
        self.bob = self.gpg.newKey("Bob <bob@example.com>")
        self.carol = self.ssh.newKey("carol@example.com")
        self.files = os.path.abspath(self.mktemp())
        os.makedirs(self.files)
        self.keyring = self.gpg.exportKeyring(os.path.join(self.files, "keyring.gpg"),
                                              [self.alice])
        self.signers = self.ssh.allowedSigners(os.path.join(self.files, "allowed_signers"),
                                               [self.carol])
        hooks = os.path.join(self.files, "hooks")
        os.makedirs(os.path.join(hooks, "after_auth_fail"))
        self.refusals = os.path.join(self.files, "refusals")
        hook = os.path.join(hooks, "after_auth_fail", "record")
        with open(hook, "wb") as f:
            f.write(HOOK % (self.refusals.encode(),))
        os.chmod(hook, 0o755)
        auth = authSettings(dict({"keyring": self.keyring, "allowed_signers": self.signers,
                                  "reload_interval": 0.2}, **self.policy()))
        self.harness = AgentHarness(self, self.url, auth=auth, hooksDirectory=hooks).start()

    def policy(self):
        return {"type": "keyring"}

    def refused(self):
        try:
            with open(self.refusals) as f:
                return f.read().split()
        except OSError:
            return []

    def waitForState(self, podId, state):
        return waitFor(lambda: self.podStatus(podId).addCallback(
            lambda s: s if s and s["state"] == state else None),
            what="%s to be %s" % (podId, state))



class SignedAgentTests(SignedAgentCase):
    """
    A real agent under a C{keyring} policy.
    """

    @defer.inlineCallbacks
    def test_refusedManifestChangesNothing(self):
        """
        A signed manifest runs; unsigned, tampered and unknown-key upgrades
        are each refused (status: signer and rule; the hook ran) while the
        old version keeps serving from the same process and reality keeps
        it; adding Bob's key to the keyring deploys his upgrade, no restart.
        """
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        url2, sha2 = buildWebArtifact(self.artifacts, "hello", "2")
        v1, v2 = webManifest("hello", url1, port, sha1), webManifest("hello", url2, port, sha2)
        yield self.schedule(self.gpg.clearSign(self.alice, v1))
        yield waitForVersion(port, "1")
        status = yield self.waitForState("hello", "running")
        self.assertEqual(status["auth"]["signer"]["fingerprint"], self.alice)
        pid = self.harness.servicePid("hello")

        tampered = self.gpg.clearSign(self.alice, v2).replace(b"PORT: '", b"PORT:  '")
        attempts = [
            (v2, "the manifest is not signed", None),
            (tampered, "bad signature", None),
            (self.gpg.clearSign(self.bob, v2), "not in the keyring", None),
        ]
        for raw, rule, signer in attempts:
            yield self.schedule(raw)
            status = yield waitFor(lambda: self.podStatus("hello").addCallback(
                lambda s: s if s and s["state"] == "refused" and rule in s["auth"]["rule"]
                else None), what="refused: " + rule)
            self.assertIsNone(status["auth"]["signer"])
            self.assertEqual(status["sha"], parseManifest(raw).sha())
        yield waitFor(lambda: len(self.refused()) == 3, what="the after_auth_fail hook, 3 times")
        self.assertEqual(self.refused(), ["hello"] * 3)
        self.assertEqual(self.harness.servicePid("hello"), pid)
        yield waitForVersion(port, "1")
        reality = yield self.store.get(keys.reality("n1", "hello"))
        self.assertEqual(parseManifest(reality.value).sha(), parseManifest(v1).sha())

        # Key rotation without a restart: Bob's key joins the keyring.
        self.gpg.exportKeyring(self.keyring, [self.alice, self.bob])
        yield waitForVersion(port, "2")
        status = yield self.waitForState("hello", "running")
        self.assertEqual(status["auth"]["signer"]["identity"], "Bob <bob@example.com>")
        self.assertEqual(self.refused(), ["hello"] * 3)

    @defer.inlineCallbacks
    def test_sshSignedAndRemovalKeptOff(self):
        """
        An OpenSSH-signed manifest runs; once Carol's key leaves the allowed
        signers, her next version is refused and the running one stays --
        and unscheduling still removes it (removal needs no signature).
        """
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "web", "1")
        url2, sha2 = buildWebArtifact(self.artifacts, "web", "2")
        yield self.schedule(self.ssh.sign(self.carol, webManifest("web", url1, port, sha1)))
        yield waitForVersion(port, "1")
        status = yield self.waitForState("web", "running")
        self.assertEqual(status["auth"]["signer"]["identity"], "carol@example.com")
        self.ssh.allowedSigners(self.signers, [])
        yield self.schedule(self.ssh.sign(self.carol, webManifest("web", url2, port, sha2)))
        status = yield self.waitForState("web", "refused")
        self.assertIn("signature not accepted", status["auth"]["rule"])
        yield waitForVersion(port, "1")
        yield intent.unschedule(self.store, "n1", "web")
        yield waitForVersion(port, None)

    @defer.inlineCallbacks
    def test_hookPodsHeldToThePolicy(self):
        """
        An unsigned hook pod is not installed (its status says refused);
        signed by Alice, it is, and it runs at the next refusal.
        """
        from tests.artifacts import buildHoist
        path = os.path.join(self.artifacts, "audit_1.tar.gz")
        marks = os.path.join(self.files, "hook-pod-ran")
        sha = buildHoist(path, files={"bin/launch": (
            b"#!/bin/sh\necho \"$HOOKED_POD_ID\" >> %s\n" % (marks.encode(),), 0o755)})
        raw = (b"id: audit\nlaunchables:\n  app:\n    launchable_type: hoist\n"
               b"    location: file://%s\n    digest: %s\n" % (path.encode(), sha.encode()))
        statusKey = keys.status("hooks", "n1", "after_auth_fail", "audit")

        def hookPodState(state):
            return waitFor(lambda: self.store.get(statusKey).addCallback(
                lambda e: e is not None and json.loads(e.value)["state"] == state),
                what="hook pod audit " + state)
        yield self.store.put(keys.hook("after_auth_fail", "audit"), raw)
        yield hookPodState("refused")
        entry = yield self.store.get(statusKey)
        self.assertIn("the manifest is not signed", json.loads(entry.value)["error"])
        from p2twisted.agent.hookpods import podsDir
        self.assertFalse(os.path.exists(os.path.join(
            podsDir(self.harness.config, "after_auth_fail"), "audit")))
        yield self.store.put(keys.hook("after_auth_fail", "audit"),
                             self.gpg.clearSign(self.alice, raw))
        yield hookPodState("installed")
        port = freePort()
        url, sha1 = buildWebArtifact(self.artifacts, "web", "1")
        yield self.schedule(webManifest("web", url, port, sha1))
        yield waitFor(lambda: os.path.exists(marks), what="the hook pod to run")
        with open(marks) as f:
            self.assertEqual(f.read(), "web\n")

    @defer.inlineCallbacks
    def test_forgedRealityRefused(self):
        """
        Someone who can write the store writes an unsigned manifest into
        both intent and reality: the agent does not take reality's word
        for what is installed -- it refuses the install, and the signed
        version keeps serving.
        """
        from p2twisted.store.common import Put
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        url2, sha2 = buildWebArtifact(self.artifacts, "hello", "2")
        yield self.schedule(self.gpg.clearSign(self.alice, webManifest("hello", url1, port, sha1)))
        yield waitForVersion(port, "1")
        yield self.waitForState("hello", "running")
        pid = self.harness.servicePid("hello")
        forged = webManifest("hello", url2, port, sha2)
        yield self.store.transaction([Put(keys.intent("n1", "hello"), forged),
                                      Put(keys.reality("n1", "hello"), forged)])
        status = yield self.waitForState("hello", "refused")
        self.assertEqual(status["auth"]["rule"], "the manifest is not signed")
        yield waitForVersion(port, "1")
        self.assertEqual(self.harness.servicePid("hello"), pid)


#: Pods run as nobody here (their run_as), or as the agent's own user when
#: it is not root: Alice's group may deploy as that user, Bob's only as
#: postgres.
POD_USER = "nobody" if os.geteuid() == 0 else currentUser()

DEPLOY_POLICY = ("""
groups:
  web: [alice@example.com]
  db: [bob@example.com]
apps:
  %s: [web]
  postgres: [db]
""" % (POD_USER,)).encode()


class UserPolicyAgentTests(SignedAgentCase):
    """
    A real agent under a C{user} policy.
    """

    def policy(self):
        self.deployPolicy = os.path.join(self.files, "deploy_policy.yaml")
        with open(self.deployPolicy, "wb") as f:
            f.write(DEPLOY_POLICY)
        return {"type": "user", "deploy_policy": self.deployPolicy}

    @defer.inlineCallbacks
    def test_signerNotAllowedForRunAs(self):
        """
        Bob's key is in the keyring, but his group may not deploy as
        nobody: his upgrade is refused, saying so, the hook runs, Alice's
        version keeps serving; once the deploy policy puts Bob in Alice's
        group (no restart), his upgrade goes through.
        """
        port = freePort()
        url1, sha1 = buildWebArtifact(self.artifacts, "hello", "1")
        url2, sha2 = buildWebArtifact(self.artifacts, "hello", "2")
        self.gpg.exportKeyring(self.keyring, [self.alice, self.bob])
        yield self.schedule(self.gpg.clearSign(self.alice, webManifest("hello", url1, port, sha1)))
        yield waitForVersion(port, "1")
        pid = self.harness.servicePid("hello")
        yield self.schedule(self.gpg.clearSign(self.bob, webManifest("hello", url2, port, sha2)))
        status = yield self.waitForState("hello", "refused")
        self.assertEqual(status["auth"]["rule"], "deploy policy apps.%s allows groups web; "
                                                 "the signer is in none of them" % (POD_USER,))
        self.assertEqual(status["auth"]["signer"]["fingerprint"], self.bob)
        yield waitFor(lambda: self.refused() == ["hello"], what="the after_auth_fail hook")
        self.assertEqual(self.harness.servicePid("hello"), pid)
        yield waitForVersion(port, "1")
        with open(self.deployPolicy, "wb") as f:
            f.write(DEPLOY_POLICY.replace(b"[alice@example.com]",
                                          b"[alice@example.com, bob@example.com]"))
        yield waitForVersion(port, "2")
