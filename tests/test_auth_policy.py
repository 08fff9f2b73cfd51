"""
The agent's auth policies (none, keyring, user) and their settings: table
tests over a verified fake verifier, then the real gpg and ssh-keygen.
"""

import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from p2twisted.auth.interfaces import Signer
from p2twisted.auth.policy import (
    DeployPolicy, IAuthPolicy, KeyringPolicy, NonePolicy, PolicyError, RefuseAll, UserPolicy)
from p2twisted.auth.settings import AuthSettings, authSettings, buildPolicy
from p2twisted.auth.testing import FakeVerifier
from p2twisted.errors import UsageError
from p2twisted.manifest import parseManifest

ALICE = Signer("gpg", "A" * 40, "Alice <alice@example.com>")
BOB = Signer("gpg", "B" * 40, "Bob <bob@example.com>")
CAROL = Signer("ssh", "SHA256:carolcarol", "carol@example.com")

POLICY = b"""
groups:
  web-team: [alice@example.com]
  admins: [carol@example.com, "%s"]
apps:
  web: [web-team, admins]
  "*": [admins]
""" % (BOB.fingerprint.encode(),)


class FakeManifest(object):
    """
    Just what a policy reads of a manifest.
    """

    def __init__(self, signature, podId="web", runAs="web", system="gpg"):
        self.id = podId
        self.runAs = runAs
        self.signature = signature
        self.signedBody = b"body" if signature else None
        self.signatureSystem = system if signature else None


def decide(policy, *args, **kwargs):
    d = policy.authorize(FakeManifest(*args, **kwargs))
    results = []
    d.addCallback(results.append)
    return results[0]


def verifiers():
    return {"gpg": FakeVerifier("gpg", {b"sig-alice": ALICE, b"sig-bob": BOB}),
            "ssh": FakeVerifier("ssh", {b"sig-carol": CAROL})}


class PolicyTests(SynchronousTestCase):
    """
    What each policy decides, and the rule it names.
    """

    def test_interfaces(self):
        for policy in (NonePolicy(), RefuseAll("user", "x"), KeyringPolicy(verifiers()),
                       UserPolicy(verifiers(), DeployPolicy.fromBytes(POLICY))):
            self.assertTrue(verifyObject(IAuthPolicy, policy))

    def test_none(self):
        decision = decide(NonePolicy(), None)
        self.assertTrue(decision.allowed)
        self.assertIsNone(decision.signer)

    def test_keyring(self):
        policy = KeyringPolicy(verifiers())
        self.assertEqual(decide(policy, b"sig-alice").signer, ALICE)
        self.assertTrue(decide(policy, b"sig-alice").allowed)
        self.assertTrue(decide(policy, b"sig-carol", system="ssh").allowed)
        unsigned = decide(policy, None)
        self.assertFalse(unsigned.allowed)
        self.assertIn("not signed", unsigned.rule)
        self.assertIn("refused by auth policy keyring", unsigned.describe())
        self.assertIn("no accepted signature", unsigned.describe())
        unknown = decide(policy, b"sig-mallory")
        self.assertFalse(unknown.allowed)
        self.assertIn("signature not accepted: gpg: signature not made by a trusted key",
                      unknown.rule)

    def test_keyringWithoutThatSystem(self):
        policy = KeyringPolicy({"gpg": verifiers()["gpg"]})
        decision = decide(policy, b"sig-carol", system="ssh")
        self.assertFalse(decision.allowed)
        self.assertIn("signed with ssh, which this agent does not check (it trusts: gpg)",
                      decision.rule)

    def test_agentPod(self):
        """
        Only authorized_deployers may deploy the agent's own pod; others'
        pods are anyone's on the keyring.
        """
        policy = KeyringPolicy(verifiers(), [BOB.fingerprint.lower()], agentPod="p2-agent")
        self.assertTrue(decide(policy, b"sig-bob", podId="p2-agent").allowed)
        refused = decide(policy, b"sig-alice", podId="p2-agent")
        self.assertFalse(refused.allowed)
        self.assertEqual(refused.signer, ALICE)
        self.assertIn("only authorized_deployers may deploy the agent's own pod p2-agent",
                      refused.rule)
        self.assertIn(ALICE.fingerprint, refused.describe())
        self.assertTrue(decide(policy, b"sig-alice", podId="web").allowed)

    def test_user(self):
        policy = UserPolicy(verifiers(), DeployPolicy.fromBytes(POLICY))
        # By e-mail in the uid, by principal, by fingerprint.
        self.assertTrue(decide(policy, b"sig-alice", runAs="web").allowed)
        self.assertTrue(decide(policy, b"sig-carol", runAs="web", system="ssh").allowed)
        self.assertTrue(decide(policy, b"sig-bob", runAs="db").allowed)
        refused = decide(policy, b"sig-alice", runAs="db")
        self.assertFalse(refused.allowed)
        self.assertEqual(refused.rule, "deploy policy apps.* allows groups admins; the signer "
                                       "is in none of them")
        self.assertFalse(decide(policy, None, runAs="web").allowed)

    def test_rootOnlyWhenNamed(self):
        policy = UserPolicy(verifiers(), DeployPolicy.fromBytes(POLICY))
        refused = decide(policy, b"sig-bob", runAs="root")
        self.assertFalse(refused.allowed)
        self.assertIn("run_as root is not named in apps (root is never covered by '*')",
                      refused.rule)
        named = UserPolicy(verifiers(), DeployPolicy.fromBytes(POLICY + b"  root: [admins]\n"))
        self.assertTrue(decide(named, b"sig-bob", runAs="root").allowed)

    def test_unknownRunAs(self):
        policy = UserPolicy(verifiers(), DeployPolicy.fromBytes(
            b"groups: {a: [alice@example.com]}\napps: {web: [a]}\n"))
        refused = decide(policy, b"sig-alice", runAs="db")
        self.assertIn("run_as db is not in apps, and there is no '*' entry", refused.rule)

    def test_refuseAll(self):
        decision = decide(RefuseAll("user", "deploy policy p.yaml: not valid YAML"), b"sig-bob")
        self.assertFalse(decision.allowed)
        self.assertIn("the policy cannot be loaded (deploy policy p.yaml: not valid YAML)",
                      decision.rule)

    def test_badDeployPolicies(self):
        for text, problem in [
                (b"groups: [", "not valid YAML"),
                (b"- a\n", "expected a mapping"),
                (b"groups: {}\nusers: {}\n", "unknown key users"),
                (b"groups: {a: alice}\n", "groups.a: expected a list"),
                (b"groups: {a: [x]}\napps: {web: [b]}\n", "apps.web: no group named b")]:
            e = self.assertRaises(PolicyError, DeployPolicy.fromBytes, text, "/etc/p.yaml")
            self.assertIn("/etc/p.yaml: " + problem, str(e))

    def test_decisionDict(self):
        decision = decide(KeyringPolicy(verifiers()), b"sig-alice")
        self.assertEqual(decision.toDict(), {
            "allowed": True, "policy": "keyring", "rule": "signed by a trusted key",
            "signer": {"system": "gpg", "fingerprint": ALICE.fingerprint,
                       "identity": ALICE.identity}})


class SettingsTests(SynchronousTestCase):
    """
    The agent config's C{auth:} section.
    """

    def test_default(self):
        self.assertEqual(authSettings(None), AuthSettings())
        self.assertIsInstance(buildPolicy(AuthSettings()), NonePolicy)

    def test_paths(self):
        settings = authSettings({"type": "user", "keyring": "k.gpg", "deploy_policy": "p.yaml",
                                 "authorized_deployers": ["AB CD"], "reload_interval": 1})
        self.assertEqual(settings.keyring, os.path.abspath("k.gpg"))
        self.assertEqual(settings.files(), (os.path.abspath("k.gpg"), os.path.abspath("p.yaml")))
        self.assertEqual(settings.reloadInterval, 1.0)

    def test_errors(self):
        for data, problem in [
                ({"type": "pgp"}, "auth.type: expected none, keyring or user"),
                ({"type": "keyring"}, "needs a keyring (GPG) or allowed_signers"),
                ({"type": "user", "keyring": "k"}, "type user needs a deploy_policy file"),
                ({"typ": "none"}, "unknown setting typ"),
                ({"type": "keyring", "keyring": "k", "reload_interval": 0}, "reload_interval"),
                ({"type": "keyring", "keyring": "k", "authorized_deployers": "AB"},
                 "authorized_deployers: expected a list")]:
            e = self.assertRaises(UsageError, authSettings, data)
            self.assertIn(problem, str(e))

    def test_buildMissingFile(self):
        settings = authSettings({"type": "keyring", "keyring": self.mktemp()})
        e = self.assertRaises(PolicyError, buildPolicy, settings, lambda p: None,
                              lambda p, n: None)
        self.assertIn("cannot read the keyring", str(e))

    def test_buildUser(self):
        keyring, policy = self.mktemp(), self.mktemp()
        for path, data in ((keyring, b"keys"), (policy, POLICY)):
            with open(path, "wb") as f:
                f.write(data)
        made = []
        built = buildPolicy(
            authSettings({"type": "user", "allowed_signers": keyring, "deploy_policy": policy}),
            lambda p: made.append(("gpg", p)), lambda p, n: made.append(("ssh", n)) or n)
        self.assertIsInstance(built, UserPolicy)
        # Manifests and requests are checked in namespaces of their own.
        self.assertEqual(built.verifiers, {"ssh": "p2-manifest"})
        self.assertEqual(built.requestVerifiers, {"ssh": "p2-request"})


class RealSignatureTests(TestCase):
    """
    The policies with the real gpg and ssh-keygen: keys made in the test.
    """

    timeout = 120

    def setUp(self):
        from tests.signingkeys import GPGKeys, SSHKeys
        self.gpg = GPGKeys(self)
        self.ssh = SSHKeys(self)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def policy(self, **settings):
        built = buildPolicy(authSettings(settings))
        self.addCleanup(lambda: defer.gatherResults(
            [v.close() for v in built.verifiers.values() if hasattr(v, "close")]))
        return built

    @defer.inlineCallbacks
    def test_userPolicyWithGPG(self):
        """
        A key allowed for the manifest's run_as deploys; an unknown, an
        expired or a revoked key, a tampered manifest, and a key of another
        group are refused, each saying why.
        """
        alice = self.gpg.newKey("Alice <alice@example.com>")
        mallory = self.gpg.newKey("Mallory <mallory@example.com>")
        old = self.gpg.newKey("Old <old@example.com>", expire="1y", at="20200101T000000")
        gone = self.gpg.newKey("Gone <gone@example.com>")
        self.write("policy.yaml", b"groups: {web: [alice@example.com, old@example.com, "
                                  b"gone@example.com]}\napps: {web: [web]}\n")
        body = (b"id: web\nrun_as: web\nlaunchables:\n  app:\n    launchable_type: hoist\n"
                b"    location: https://example.com/app_1.tar.gz\n")

        def signed(key, data=body, **kw):
            return parseManifest(self.gpg.clearSign(key, data, **kw))

        byGone = signed(gone)  # signed before its key was revoked
        self.gpg.revoke(gone)
        self.gpg.exportKeyring(self.path("keyring.gpg"), [alice, old, gone])
        policy = self.policy(type="user", keyring=self.path("keyring.gpg"),
                             deploy_policy=self.path("policy.yaml"))
        good = yield policy.authorize(signed(alice))
        self.assertTrue(good.allowed, good.describe())
        self.assertEqual(good.signer.fingerprint, alice)
        self.assertEqual(good.signer.identity, "Alice <alice@example.com>")
        refusals = {
            "unsigned": parseManifest(body),
            "tampered": parseManifest(self.gpg.clearSign(alice, body).replace(
                b"run_as: web", b"run_as: weB")),
            "unknown": signed(mallory),
            "expired": signed(old, at="20200601T000000"),
            "revoked": byGone,
            "other run_as": signed(alice, body.replace(b"run_as: web", b"run_as: db")),
        }
        expected = {"unsigned": "the manifest is not signed",
                    "tampered": "bad signature",
                    "unknown": "not in the keyring",
                    "expired": "expired",
                    "revoked": "revoked",
                    "other run_as": "run_as db is not in apps"}
        for name, manifest in sorted(refusals.items()):
            decision = yield policy.authorize(manifest)
            self.assertFalse(decision.allowed, name)
            self.assertIn(expected[name], decision.rule, name)

    @defer.inlineCallbacks
    def test_requestsWithSSH(self):
        """
        An OpenSSH-signed request is allowed for a principal allowed to
        deploy the pod's run_as; a manifest signature (another namespace)
        is not a request signature.
        """
        carol = self.ssh.newKey("carol@example.com")
        self.ssh.allowedSigners(self.path("allowed_signers"), [carol])
        self.write("policy.yaml", b"groups: {ops: [carol@example.com]}\napps: {web: [ops]}\n")
        policy = self.policy(type="user", allowed_signers=self.path("allowed_signers"),
                             deploy_policy=self.path("policy.yaml"))
        data = b'{"key":"requests/n1/x","pod":"web"}'
        ok = yield policy.authorizeRequest(
            data, self.ssh.signature(carol, data, "p2-request"), "ssh", "web", "web")
        self.assertTrue(ok.allowed, ok.describe())
        self.assertEqual(ok.signer.identity, "carol@example.com")
        other = yield policy.authorizeRequest(
            data, self.ssh.signature(carol, data, "p2-request"), "ssh", "db", "db")
        self.assertFalse(other.allowed)
        wrongNamespace = yield policy.authorizeRequest(
            data, self.ssh.signature(carol, data, "p2-manifest"), "ssh", "web", "web")
        self.assertFalse(wrongNamespace.allowed)
