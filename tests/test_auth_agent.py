"""
The agent under an auth policy (fake verifier, memory store, injected
clock): a refused manifest is never deployed and stops nothing that runs;
its status names the signer and the rule; it is tried again only when the
intent or the policy changes.
"""

import json
import os

from twisted.internet import defer, task
from twisted.trial import unittest

from p2twisted.agent.config import AgentConfig
from p2twisted.agent.service import AgentService
from p2twisted.agent.testing import FakePods
from p2twisted.agent.worker import PodWorker
from p2twisted.auth.interfaces import Signer
from p2twisted.auth.policy import Decision, RefuseAll
from p2twisted.auth.reload import PolicyReloader
from p2twisted.auth.settings import authSettings, buildPolicy
from p2twisted.auth.testing import FakeVerifier
from p2twisted.store import keys
from p2twisted.store.memory import MemoryState, MemoryStore
from tests.test_agent_worker import V1, V2

ALICE = Signer("gpg", "A" * 40, "Alice <alice@example.com>")
MALLORY = Signer("gpg", "F" * 40, "Mallory <mallory@example.com>")


def fakeSigned(body, who):
    """
    @return: C{body} in a PGP clear-signature wrapper whose signature the
        fake verifier knows as C{who}'s.
    """
    return (b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + body +
            b"-----BEGIN PGP SIGNATURE-----\n" + who + b"\n-----END PGP SIGNATURE-----\n")


def signature(who):
    return b"-----BEGIN PGP SIGNATURE-----\n" + who + b"\n-----END PGP SIGNATURE-----\n"


class AuthAgentTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.state = MemoryState()
        self.store = MemoryStore(self.state, self.clock)
        self.pods = FakePods()
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.keyring = os.path.join(self.dir, "keyring")
        self.setKeyring(b"alice")
        self.verifiers = []

        def makeGPG(path):
            with open(path, "rb") as f:
                names = f.read().split()
            known = {b"alice": ALICE, b"mallory": MALLORY}
            verifier = FakeVerifier("gpg", {signature(n): known[n] for n in names})
            self.verifiers.append(verifier)
            return verifier
        settings = authSettings({"type": "keyring", "keyring": self.keyring,
                                 "reload_interval": 5})
        self.auth = PolicyReloader(settings, self.clock,
                                   lambda s: buildPolicy(s, makeGPG, lambda p, n: None))

    def setKeyring(self, names):
        with open(self.keyring, "wb") as f:
            f.write(names)

    def startAgent(self):
        config = AgentConfig(node="n1", store="memory://", podRoot="/nonexistent",
                             stateDir=os.path.join(self.dir, "state"), resyncInterval=30.0,
                             sessionTTL=10.0, removalGrace=10.0)
        agent = AgentService(config, self.pods, self.clock,
                             store=MemoryStore(self.state, self.clock), auth=self.auth)
        agent.startService()
        self.addCleanup(lambda: agent.stopService() if agent.running else None)
        return agent

    def put(self, key, value):
        return self.successResultOf(self.store.put(key, value))

    def get(self, key):
        entry = self.successResultOf(self.store.get(key))
        return entry.value if entry else None

    def schedule(self, value):
        self.put(keys.intentNode("n1"), b'{"node": "n1"}')
        self.put(keys.intent("n1", "web"), value)

    def podStatus(self):
        return json.loads(self.get(keys.status("pods", "n1", "web")))

    def test_signedDeployed(self):
        self.startAgent()
        self.schedule(fakeSigned(V1, b"alice"))
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])
        status = self.podStatus()
        self.assertEqual(status["state"], "running")
        self.assertEqual(status["auth"]["signer"]["identity"], ALICE.identity)

    def test_unsignedRefused(self):
        """
        An unsigned manifest is not deployed; status and the agent's record
        say refused, with no signer and the rule; resyncs do not retry it.
        """
        agent = self.startAgent()
        self.schedule(V1)
        self.clock.advance(60)
        self.assertEqual(self.pods.calls, [])
        self.assertIsNone(self.get(keys.reality("n1", "web")))
        status = self.podStatus()
        self.assertEqual(status["state"], "refused")
        self.assertIsNone(status["auth"]["signer"])
        self.assertEqual(status["auth"]["rule"], "the manifest is not signed")
        self.assertIn("refused by auth policy keyring", status["error"])
        record = agent.statusRecord()
        self.assertEqual(record["pods"]["web"]["state"], "refused")
        self.assertFalse(record["converged"])

    def test_refusalNamesTheIntentVersion(self):
        """
        A refusal says which intent entry it refused: the same manifest
        written again otherwise signed (the same SHA) is refused again with
        the new entry's version, so that C{deploy --wait} and C{p2
        replicate} tell it from the refusal of the earlier bytes.
        """
        self.startAgent()
        self.schedule(V1)
        first = self.podStatus()
        entry = self.successResultOf(self.store.get(keys.intent("n1", "web")))
        self.assertEqual(first["intent_version"], entry.version)
        self.schedule(fakeSigned(V1, b"mallory"))
        self.clock.advance(1)
        entry = self.successResultOf(self.store.get(keys.intent("n1", "web")))
        second = self.podStatus()
        self.assertEqual((second["state"], second["sha"], second["intent_version"]),
                         ("refused", first["sha"], entry.version))
        self.assertNotEqual(second["intent_version"], first["intent_version"])

    def test_refusedUpgradeKeepsRunning(self):
        """
        An upgrade signed by a key not in the keyring changes nothing: the
        old version is neither halted nor removed, reality keeps it; the
        verifier is not asked again at resyncs; once the key is added to
        the keyring (no restart), the upgrade goes through.
        """
        self.startAgent()
        self.schedule(fakeSigned(V1, b"alice"))
        self.schedule(fakeSigned(V2, b"mallory"))
        self.clock.advance(30)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])
        self.assertIn(b"app_1", self.get(keys.reality("n1", "web")))
        status = self.podStatus()
        self.assertEqual(status["state"], "refused")
        self.assertEqual(status["auth"]["rule"],
                         "signature not accepted: gpg: signature not made by a trusted key")
        asked = len(self.verifiers[-1].calls)
        self.clock.advance(60)
        self.assertEqual(len(self.verifiers[-1].calls), asked)
        self.setKeyring(b"alice mallory")
        self.clock.advance(5)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy", "deploy"])
        self.assertIn(b"app_2", self.get(keys.reality("n1", "web")))
        self.assertEqual(self.podStatus()["auth"]["signer"]["identity"], MALLORY.identity)

    def test_rotationDoesNotTouchRunning(self):
        """
        A key removed from the keyring refuses new manifests it signed; the
        pod it deployed keeps running.
        """
        self.startAgent()
        self.schedule(fakeSigned(V1, b"alice"))
        self.setKeyring(b"mallory")
        self.clock.advance(35)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])
        self.schedule(fakeSigned(V2, b"alice"))
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])
        self.assertEqual(self.podStatus()["state"], "refused")


class WorkerRefusalTests(unittest.TestCase):
    """
    The refusal hooks run once per refused intent and policy.
    """

    def test_hooksOncePerRefusal(self):
        clock = task.Clock()
        store = MemoryStore(MemoryState(), clock)
        auth = PolicyReloader(authSettings(None), clock,
                              lambda s: RefuseAll("keyring", "test"))
        refused = []

        def hooks(manifest, decision):
            refused.append((manifest.id, decision.allowed))
            return defer.succeed(None)
        worker = PodWorker(FakePods(), store, "n1", "web", clock, auth=auth, refused=hooks)
        self.successResultOf(store.put(keys.intent("n1", "web"), V1))
        entry = self.successResultOf(store.get(keys.intent("n1", "web")))
        worker.update(entry)
        worker.update(entry, resync=True)
        self.assertEqual(refused, [("web", False)])
        auth.generation += 1
        worker.reconsider()
        self.assertEqual(refused, [("web", False), ("web", False)])
        self.assertEqual(worker.refusal().rule, "the policy cannot be loaded (test)")


class _AskedPolicy(object):
    """
    An auth policy (with a generation, as the agent's reloader has) whose
    answers the test gives: C{asked} holds C{(generation, Deferred)}.
    """

    signedRequests = True
    name = "keyring"

    def __init__(self):
        self.generation = 1
        self.asked = []

    def authorize(self, manifest):
        d = defer.Deferred()
        self.asked.append((self.generation, d))
        return d


class PolicyChangeRaceTests(unittest.TestCase):
    """
    A policy that changes while a manifest's check is under way.
    """

    def test_changedWhileAsked(self):
        """
        A refusal by the old policy that arrives after the policy changed
        (and its subscribers were told, when there was no refusal yet to try
        again) is not the last word: the new policy is asked, and the
        manifest it allows is deployed.
        """
        clock = task.Clock()
        store = MemoryStore(MemoryState(), clock)
        pods = FakePods()
        auth = _AskedPolicy()
        worker = PodWorker(pods, store, "n1", "web", clock, auth=auth,
                           refused=lambda manifest, decision: defer.succeed(None))
        self.successResultOf(store.put(keys.intent("n1", "web"), V1))
        worker.update(self.successResultOf(store.get(keys.intent("n1", "web"))))
        self.assertEqual([g for g, _ in auth.asked], [1])
        auth.generation = 2  # the reloader's rebuild, then its subscribers
        worker.reconsider()
        auth.asked[0][1].callback(Decision(False, None, "not signed", "keyring"))
        self.assertEqual([g for g, _ in auth.asked], [1, 2])
        auth.asked[1][1].callback(Decision(True, ALICE, "signed by a trusted key", "keyring"))
        self.assertEqual([c[0] for c in pods.calls], ["deploy"])
        self.assertIsNone(worker.refusal())


class NonRootAgentTests(unittest.TestCase):
    """
    An agent that is not root runs every pod as its own user, whatever its
    C{run_as}: under a C{user} policy (real gpg keys) a manifest is judged
    as that user.
    """

    timeout = 120

    def setUp(self):
        from twisted.internet import reactor
        from tests.signingkeys import GPGKeys
        self.reactor = reactor
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.keys = GPGKeys(self)
        self.alice = self.keys.newKey("Alice <alice@example.com>")
        self.carol = self.keys.newKey("Carol <carol@example.com>")
        keyring = self.keys.exportKeyring(os.path.join(self.dir, "keyring.gpg"),
                                          [self.alice, self.carol])
        policy = os.path.join(self.dir, "policy.yaml")
        with open(policy, "w") as f:
            f.write("groups: {web-team: [alice@example.com], agent-admins: [%s]}\n"
                    "apps: {web: [web-team], p2agent: [agent-admins]}\n" % (self.carol,))
        self.auth = PolicyReloader(authSettings({"type": "user", "keyring": keyring,
                                                 "deploy_policy": policy}), reactor)
        self.addCleanup(self.auth.stopService)
        self.store = MemoryStore(MemoryState(), reactor)
        self.pods = FakePods()
        self.pods.user = "p2agent"  # the agent's own user: not root

    @defer.inlineCallbacks
    def deploy(self, signer):
        """
        Schedule pod web (run_as web) signed by C{signer}.

        @return: L{Deferred} firing with the worker's refusal or C{None}.
        """
        worker = PodWorker(self.pods, self.store, "n1", "web", task.Clock(), auth=self.auth,
                           refused=lambda manifest, decision: defer.succeed(None))
        yield self.store.put(keys.intent("n1", "web"),
                             self.keys.clearSign(signer, V1 + b"run_as: web\n"))
        worker.update((yield self.store.get(keys.intent("n1", "web"))))
        yield worker.whenIdle()
        return worker.refusal()

    @defer.inlineCallbacks
    def test_judgedAsTheAgentsUser(self):
        """
        A signer allowed only for the C{run_as} the manifest names (web) is
        refused, naming the agent's user: the pod would run as it; nothing
        is deployed.
        """
        refusal = yield self.deploy(self.alice)
        self.assertIsNotNone(refusal)
        self.assertIn("deploy policy apps.p2agent allows groups agent-admins",
                      refusal.describe())
        self.assertEqual(self.pods.calls, [])

    @defer.inlineCallbacks
    def test_allowedForTheAgentsUser(self):
        """
        A signer (named by fingerprint) allowed for the agent's user
        deploys.
        """
        refusal = yield self.deploy(self.carol)
        self.assertIsNone(refusal)
        self.assertEqual([c[0] for c in self.pods.calls], ["deploy"])
