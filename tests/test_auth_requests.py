"""
Signed requests (C{p2 run}, C{p2 logs}) under a C{user} policy: signed by the
real gpg and ssh-keygen on the sender's side (L{RequestSigner}, as the CLI
does), checked by an agent's L{RequestRunner} with the real verifiers, run
by its real task handlers.
"""

import json
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.agent.pods import p2execCommand
from p2twisted.agent.requests import RequestRunner
from p2twisted.agent.runtime import currentUser, podUser
from p2twisted.agent.tasks import RequestHandlers
from p2twisted.auth.reload import PolicyReloader
from p2twisted.auth.requestsig import RequestSigner, SeenRequests, payload
from p2twisted.auth.settings import authSettings
from p2twisted.cli.agentrequests import ask
from p2twisted.records import PENDING, Request
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore
from tests.signingkeys import GPGKeys, SSHKeys
from tests.store_contract import waitFor
from tests.test_agent_requests import layOutPod

NODE = "n1"

#: The pod laid out on disk names run_as nobody; the agent, not root (as far
#: as it knows), runs its tasks as its own user.
USER = currentUser()

POLICY = """
groups:
  ops: [carol@example.com, alice@example.com]
  db-team: [dave@example.com]
apps:
  %s: [ops]
  postgres: [db-team]
""" % (USER,)

HELLO = {"kind": "task", "pod": "web", "task": "hello", "args": []}


class SignedRequestTests(unittest.TestCase):

    timeout = 120

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        podRoot = os.path.join(self.base, "pods")
        stateDir = os.path.join(self.base, "state")
        os.makedirs(stateDir)
        layOutPod(podRoot)
        self.ssh = SSHKeys(self)
        self.gpg = GPGKeys(self)
        self.carol = self.ssh.newKey("carol@example.com")
        self.dave = self.ssh.newKey("dave@example.com")
        self.alice = self.gpg.newKey("Alice <alice@example.com>")
        allowed = self.ssh.allowedSigners(os.path.join(self.base, "allowed_signers"),
                                          [self.carol, self.dave])
        keyring = self.gpg.exportKeyring(os.path.join(self.base, "keyring.gpg"), [self.alice])
        self.policy = os.path.join(self.base, "policy.yaml")
        self.writePolicy(POLICY)
        self.auth = PolicyReloader(authSettings({
            "type": "user", "keyring": keyring, "allowed_signers": allowed,
            "deploy_policy": self.policy}), reactor)
        self.addCleanup(self.auth.stopService)
        self.store = MemoryStore(clock=reactor)
        handlers = RequestHandlers(reactor, podRoot, stateDir, p2execCommand(), isRoot=False)
        self.newRunner = lambda: RequestRunner(
            self.store, NODE, reactor, handlers.handlers(), auth=self.auth, podRoot=podRoot,
            seenPath=os.path.join(stateDir, "seen-requests.json"),
            runsAs=lambda manifest: podUser(manifest, False))
        self.runner = self.newRunner()
        self.runner.startService()
        self.addCleanup(lambda: self.runner.stopService())
        return self.store.put(keys.machine(NODE), b"{}")

    def writePolicy(self, text):
        with open(self.policy, "w") as f:
            f.write(text)

    def ask(self, request, signer=None):
        return ask(self.store, reactor, NODE, request, 30.0,
                   signer=signer).addTimeout(60, reactor)

    @defer.inlineCallbacks
    def test_signedBySSH(self):
        answer = yield self.ask(HELLO, RequestSigner(sshKey=self.carol.path))
        self.assertEqual(answer["state"], "done", answer.get("error"))
        self.assertIn("pod=web greeting=hi there", answer["output"])
        self.assertEqual(answer["signer"]["identity"], "carol@example.com")

    @defer.inlineCallbacks
    def test_signedByGPG(self):
        answer = yield self.ask({"kind": "logs", "pod": "web", "offsets": None},
                                RequestSigner(gpgKey=self.alice, gnupgHome=self.gpg.home))
        # Allowed (the pod has no logs yet, as its answer says).
        self.assertEqual(answer["error"], "pod web has no logs on this node")
        self.assertEqual(answer["signer"]["fingerprint"], self.alice)

    @defer.inlineCallbacks
    def test_unsignedRefused(self):
        answer = yield self.ask(HELLO)
        self.assertEqual(answer["state"], "failed")
        self.assertIn("refused by auth policy user: the request is not signed", answer["error"])
        self.assertNotIn("output", answer)

    @defer.inlineCallbacks
    def test_signerNotAllowedForRunAs(self):
        """
        Dave may deploy as postgres, not as the user the pod's tasks run as.
        """
        answer = yield self.ask(HELLO, RequestSigner(sshKey=self.dave.path))
        self.assertEqual(answer["state"], "failed")
        self.assertIn("deploy policy apps.%s allows groups ops; the signer is in none" % (USER,),
                      answer["error"])
        self.assertIn("dave@example.com", answer["error"])

    @defer.inlineCallbacks
    def test_judgedAsTheAgentsUser(self):
        """
        An agent that is not root runs a pod's tasks as its own user,
        whatever the pod's run_as: a signer allowed only for that run_as
        (nobody) is refused, naming the agent's user, and nothing runs.
        """
        self.writePolicy("groups: {ops: [carol@example.com]}\napps: {nobody: [ops]}\n")
        self.auth.check()
        answer = yield self.ask(HELLO, RequestSigner(sshKey=self.carol.path))
        self.assertEqual(answer["state"], "failed")
        self.assertIn("run_as %s " % (USER,), answer["error"])
        self.assertNotIn("output", answer)

    @defer.inlineCallbacks
    def test_unsignedFieldsIgnored(self):
        """
        What runs is what was signed: a task changed beside the signature
        (someone with store access) is not what the agent runs; a changed
        signed text is refused.
        """
        key = keys.request(NODE, "r1")
        now = reactor.seconds()
        data = payload(key, HELLO, now + 60)
        signature = yield RequestSigner(sshKey=self.carol.path).sign(data)
        fields = dict(HELLO, task="fail", signed=data.decode(), signature_system="ssh",
                      signature=signature.decode())
        yield self.store.create(key, Request.new(fields, now, now + 60, "t").toBytes())
        answer = yield self.answered(key)
        self.assertEqual((answer["state"], answer["task"]), ("done", "hello"))
        self.assertIn("greeting=hi there", answer["output"])

        # The same signed request written again is not run again.
        yield self.store.delete(key)
        yield self.store.create(key, Request.new(fields, now, now + 60, "t").toBytes())
        answer = yield self.answered(key)
        self.assertEqual(answer["error"], "refused: this signed request was already carried out")

        key2 = keys.request(NODE, "r2")
        tampered = dict(fields, signed=data.decode().replace("r1", "r2"))
        yield self.store.create(key2, Request.new(tampered, now, now + 60, "t").toBytes())
        answer = yield self.answered(key2)
        self.assertEqual(answer["state"], "failed")
        self.assertIn("signature not accepted", answer["error"])

    @defer.inlineCallbacks
    def test_replayAfterRestartRefused(self):
        """
        A signed request carried out, written again (by someone with store
        access) before its deadline to an agent restarted meanwhile, is not
        carried out again.
        """
        key = keys.request(NODE, "r1")
        now = reactor.seconds()
        data = payload(key, HELLO, now + 60)
        signature = yield RequestSigner(sshKey=self.carol.path).sign(data)
        fields = dict(HELLO, signed=data.decode(), signature_system="ssh",
                      signature=signature.decode())
        yield self.store.create(key, Request.new(fields, now, now + 60, "t").toBytes())
        self.assertEqual((yield self.answered(key))["state"], "done")
        yield self.runner.stopService()
        yield self.store.delete(key)
        self.runner = self.newRunner()
        self.runner.startService()
        yield self.store.create(key, Request.new(fields, now, now + 60, "t").toBytes())
        answer = yield self.answered(key)
        self.assertEqual(answer["error"], "refused: this signed request was already carried out")

    @defer.inlineCallbacks
    def test_movedRequestRefused(self):
        """
        A signed request copied under another key (another id, or another
        node's) is refused.
        """
        key = keys.request(NODE, "r1")
        now = reactor.seconds()
        data = payload(keys.request("n2", "r1"), HELLO, now + 60)
        signature = yield RequestSigner(sshKey=self.carol.path).sign(data)
        fields = dict(HELLO, signed=data.decode(), signature_system="ssh",
                      signature=signature.decode())
        yield self.store.create(key, Request.new(fields, now, now + 60, "t").toBytes())
        answer = yield self.answered(key)
        self.assertEqual(answer["error"], "refused: the signed request is not this one "
                                          "(requests/n1/r1)")

    def answered(self, key):
        def check():
            def got(entry):
                if entry is None:
                    return None
                record = json.loads(entry.value)
                return record if record["state"] not in (PENDING, "running") else None
            return self.store.get(key).addCallback(got)
        return waitFor(check, what="the answer to %s" % (key,))


class SeenTests(unittest.SynchronousTestCase):

    def test_kept(self):
        """
        With a file, what was seen is seen by the next L{SeenRequests} of
        that file too (an agent restarted), until its deadline.
        """
        path = self.mktemp()
        self.assertTrue(SeenRequests(path).claim("k", 10.0, 0.0))
        self.assertFalse(SeenRequests(path).claim("k", 10.0, 5.0))
        self.assertTrue(SeenRequests(path).claim("k", 30.0, 11.0))

    def test_unwritable(self):
        """
        A claim that cannot be kept is no claim: the request is refused.
        """
        seen = SeenRequests(os.path.join(self.mktemp(), "missing-dir", "seen.json"))
        self.assertRaises(OSError, seen.claim, "k", 10.0, 0.0)
        self.assertRaises(OSError, seen.claim, "k", 10.0, 0.0)

    def test_forgottenAfterDeadline(self):
        seen = SeenRequests()
        self.assertTrue(seen.claim("k", 10.0, 0.0))
        self.assertFalse(seen.claim("k", 10.0, 5.0))
        self.assertTrue(seen.claim("k", 30.0, 11.0))


class SignerOptionTests(unittest.SynchronousTestCase):

    def test_options(self):
        """
        C{p2 run} and C{p2 logs} take C{--key} or C{--ssh-key}, not both.
        """
        from argparse import Namespace
        from p2twisted.cli.main import parseArguments
        from p2twisted.cli.services_tasks import requestSigner
        from p2twisted.errors import UsageError
        def parse(*argv):
            return Namespace(reactor=reactor, **vars(parseArguments(list(argv))))
        signer = requestSigner(parse("run", "--ssh-key", "/k", "web", "hello"))
        self.assertEqual((signer.system, signer.sshKey), ("ssh", "/k"))
        signer = requestSigner(parse("logs", "--key", "alice@example.com", "web"))
        self.assertEqual((signer.system, signer.gpgKey), ("gpg", "alice@example.com"))
        self.assertIsNone(requestSigner(parse("logs", "web")))
        self.assertRaises(UsageError, requestSigner,
                          parse("logs", "--key", "a", "--ssh-key", "/k", "web"))
