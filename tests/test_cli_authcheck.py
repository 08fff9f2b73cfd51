"""
C{p2 verify MANIFEST --agent-config FILE}, run as the real command with real
gpg keys: would that agent's auth policy deploy the manifest?
"""

import json
import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.cli import P2CommandMixin
from tests.signingkeys import GPGKeys

MANIFEST = (b"id: web\nrun_as: web\nlaunchables:\n  web: {launchable_type: hoist, "
            b"location: /a.tar.gz}\n")


class AgentPolicyCheckTests(P2CommandMixin, TestCase):

    timeout = 120

    def setUp(self):
        P2CommandMixin.setUp(self)
        self.keys = GPGKeys(self)
        self.dir = os.path.abspath(self.mktemp())
        os.mkdir(self.dir)
        self.alice = self.keys.newKey("Alice <alice@example.com>")
        self.bob = self.keys.newKey("Bob <bob@example.com>")
        keyring = self.keys.exportKeyring(self.path("keyring.gpg"), [self.alice, self.bob])
        policy = self.path("policy.yaml")
        with open(policy, "wb") as f:
            f.write(b"groups: {web: [alice@example.com]}\napps: {web: [web]}\n")
        self.config = self.path("agent.yaml")
        with open(self.config, "w") as f:
            f.write("auth:\n  type: user\n  keyring: %s\n  deploy_policy: %s\n"
                    % (keyring, policy))

    def path(self, name):
        return os.path.join(self.dir, name)

    def signed(self, key):
        path = self.path("web-%s.yaml" % (key[:8],))
        with open(path, "wb") as f:
            f.write(self.keys.clearSign(key, MANIFEST))
        return path

    @defer.inlineCallbacks
    def test_allowedAndRefused(self):
        out = yield self.succeed("verify", "--agent-config", self.config, self.signed(self.alice))
        self.assertIn("allowed by auth policy user: deploy policy apps.web allows group web; "
                      "signer: Alice <alice@example.com> (gpg %s)" % (self.alice,), out)
        out, err, code = yield self.p2("verify", "--agent-config", self.config,
                                       self.signed(self.bob))
        self.assertEqual(code, 1, (out, err))
        self.assertIn("refused by auth policy user: deploy policy apps.web allows groups web; "
                      "the signer is in none of them; signer: Bob <bob@example.com>", err)
        out, err, code = yield self.p2("verify", "--json", "--agent-config", self.config,
                                       self.signed(self.bob))
        decision = json.loads(out)["decision"]
        self.assertEqual((code, decision["allowed"], decision["signer"]["fingerprint"]),
                         (1, False, self.bob))

    @defer.inlineCallbacks
    def test_agentNotRoot(self):
        """
        With C{--agent-user}, the manifest is judged as the user that agent
        (not root) runs every pod as, whatever its C{run_as}: Alice, allowed
        for web only, is refused for an agent running as p2agent.
        """
        out, err, code = yield self.p2("verify", "--agent-config", self.config, "--agent-user",
                                       "p2agent", self.signed(self.alice))
        self.assertEqual(code, 1, (out, err))
        self.assertIn("refused by auth policy user: deploy policy: run_as p2agent is not in "
                      "apps", err)
        out = yield self.succeed("verify", "--agent-config", self.config, "--agent-user", "root",
                                 self.signed(self.alice))
        self.assertIn("allowed by auth policy user: deploy policy apps.web allows group web", out)

    @defer.inlineCallbacks
    def test_agentUserNeedsAgentConfig(self):
        out, err, code = yield self.p2("verify", "--agent-user", "p2agent",
                                       self.signed(self.alice))
        self.assertNotEqual(code, 0)
        self.assertIn("--agent-user needs --agent-config", err)
