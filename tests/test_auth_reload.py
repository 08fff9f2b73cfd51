"""
The policy reloaded when its files change, on an injected clock.
"""

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2twisted.auth.interfaces import Signer
from p2twisted.auth.policy import IAuthPolicy
from p2twisted.auth.reload import PolicyReloader
from p2twisted.auth.settings import authSettings, buildPolicy
from p2twisted.auth.testing import FakeVerifier

ALICE = Signer("gpg", "A" * 40, "Alice <alice@example.com>")


class Manifest(object):
    id = runAs = "web"
    signature = b"sig-alice"
    signedBody = b"body"
    signatureSystem = "gpg"


def result(d):
    out = []
    d.addBoth(out.append)
    return out[0]


class ReloaderTests(SynchronousTestCase):

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.keyring = self.write("keyring", b"alice")
        self.policyFile = self.write("policy.yaml",
                                     b"groups: {g: [alice@example.com]}\napps: {web: [g]}\n")
        self.clock = Clock()
        self.built = []

        def makeGPG(path):
            with open(path, "rb") as f:
                trusted = f.read()
            return FakeVerifier("gpg", {b"sig-alice": ALICE} if trusted == b"alice" else {})
        self.settings = authSettings({"type": "user", "keyring": self.keyring,
                                      "deploy_policy": self.policyFile, "reload_interval": 5})

        def build(settings):
            policy = buildPolicy(settings, makeGPG, lambda p, n: None)
            self.built.append(policy)
            return policy
        self.reloader = PolicyReloader(self.settings, self.clock, build)
        self.changes = []
        self.reloader.subscribe(lambda: self.changes.append(self.reloader.generation))
        self.reloader.startService()
        self.addCleanup(self.reloader.stopService)

    def write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_interface(self):
        self.assertTrue(verifyObject(IAuthPolicy, self.reloader))

    def test_keyRotation(self):
        """
        A keyring that no longer holds a key refuses its signatures after
        the next check, without a restart; subscribers are told once.
        """
        self.assertTrue(result(self.reloader.authorize(Manifest())).allowed)
        self.clock.advance(5)
        self.assertEqual((self.changes, len(self.built)), ([], 1))
        self.write("keyring", b"bob")
        self.assertTrue(result(self.reloader.authorize(Manifest())).allowed)
        self.clock.advance(5)
        self.assertEqual(self.changes, [2])
        decision = result(self.reloader.authorize(Manifest()))
        self.assertFalse(decision.allowed)
        self.clock.advance(5)
        self.assertEqual(self.changes, [2])

    def test_policyChange(self):
        self.write("policy.yaml", b"groups: {g: [bob@example.com]}\napps: {web: [g]}\n")
        self.clock.advance(5)
        decision = result(self.reloader.authorize(Manifest()))
        self.assertFalse(decision.allowed)
        self.assertIn("the signer is in none of them", decision.rule)

    def test_brokenFileRefusesAll(self):
        """
        A deploy policy that does not parse refuses everything (logged
        once) until it is fixed.
        """
        self.write("policy.yaml", b"groups: [")
        self.clock.advance(5)
        decision = result(self.reloader.authorize(Manifest()))
        self.assertFalse(decision.allowed)
        self.assertIn("the policy cannot be loaded", decision.rule)
        self.assertIn("not valid YAML", decision.rule)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        os.unlink(self.policyFile)
        self.clock.advance(5)
        self.assertIn("cannot read the deploy policy",
                      result(self.reloader.authorize(Manifest())).rule)
        self.write("policy.yaml", b"groups: {g: [alice@example.com]}\napps: {web: [g]}\n")
        self.clock.advance(5)
        self.assertTrue(result(self.reloader.authorize(Manifest())).allowed)
        self.assertEqual(self.changes, [2, 3, 4])

    def test_stopped(self):
        self.reloader.stopService()
        self.write("keyring", b"bob")
        self.clock.advance(10)
        self.assertEqual(self.changes, [])


class WarningTests(SynchronousTestCase):

    def test_noneWarnsAtStart(self):
        """
        An agent without a policy says at start that it deploys anything.
        """
        from twisted.logger import LogLevel, capturedLogs
        reloader = PolicyReloader(authSettings(None), Clock())
        with capturedLogs() as events:
            reloader.startService()
        reloader.stopService()
        warnings = [e for e in events if e.get("event") == "auth-none"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["log_level"], LogLevel.warn)
        self.assertIsNone(reloader._loop)

    def test_keyringDoesNotWarn(self):
        from twisted.logger import capturedLogs
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"k")
        reloader = PolicyReloader(authSettings({"type": "keyring", "keyring": path}), Clock(),
                                  lambda s: buildPolicy(s, lambda p: None, lambda p, n: None))
        with capturedLogs() as events:
            reloader.startService()
        reloader.stopService()
        self.assertEqual([e for e in events if e.get("event") == "auth-none"], [])
