"""
Tests for C{p2 sign} and C{p2 verify}, run as the real command with real gpg
and ssh-keygen keys made here.
"""

import json
import os

from twisted.internet import defer
from twisted.trial import unittest
from twisted.trial.unittest import TestCase

from p2twisted.manifest import parseManifest
from tests.cli import P2CommandMixin
from tests.signingkeys import GPGKeys, SSHKeys
from tests.test_cli_service import ServiceCommandMixin

MANIFEST = (b"# the web pod\nid: web\nlaunchables:\n  web: {launchable_type: hoist, "
            b"location: /a.tar.gz}\nconfig:\n  flags:\n  - -x\n")


class SignVerifyTests(P2CommandMixin, TestCase):

    timeout = 120

    def setUp(self):
        P2CommandMixin.setUp(self)
        self.gpgKeys = GPGKeys(self)
        self.env["GNUPGHOME"] = self.gpgKeys.home
        self.dir = os.path.abspath(self.mktemp())
        os.mkdir(self.dir)
        self.manifest = self.path("web.yaml", MANIFEST)
        self.sha = parseManifest(MANIFEST).sha()

    def path(self, name, content=None):
        path = os.path.join(self.dir, name)
        if content is not None:
            with open(path, "wb") as f:
                f.write(content)
        return path

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    @defer.inlineCallbacks
    def test_gpg(self):
        """
        C{p2 sign --key} clear-signs with that key and the SHA stays;
        C{p2 verify --keyring} names the signer.
        """
        alice = self.gpgKeys.newKey("Alice <alice@example.com>")
        self.gpgKeys.newKey("Other <other@example.com>")
        out, err, code = yield self.p2("sign", "--key", alice, self.manifest)
        self.assertEqual((code, err), (0, ""))
        signed = self.path("web.signed.yaml", out.encode())
        m = parseManifest(out.encode())
        self.assertEqual((m.signatureSystem, m.sha()), ("gpg", self.sha))
        self.assertEqual((yield self.succeed("manifest", "sha", signed)), self.sha + "\n")
        keyring = self.gpgKeys.exportKeyring(self.path("keyring.gpg"), [alice])
        out = yield self.succeed("verify", "--keyring", keyring, signed)
        self.assertEqual(out, "good gpg signature by Alice <alice@example.com> (%s)\nweb %s\n"
                         % (alice, self.sha))
        # Without --keyring: the user's own gpg keys.
        out = yield self.succeed("verify", signed, "--json")
        self.assertEqual(json.loads(out), {
            "id": "web", "sha": self.sha, "system": "gpg", "good": True,
            "signer": {"fingerprint": alice, "identity": "Alice <alice@example.com>"}})

    @defer.inlineCallbacks
    def test_ssh(self):
        """
        C{p2 sign --ssh-key -o} writes the manifest followed by an SSH
        signature; C{p2 verify --allowed-signers} names the principal.
        """
        keys = SSHKeys(self)
        bob = keys.newKey("bob@example.com")
        out = self.path("web.signed.yaml")
        _, err, code = yield self.p2("sign", "--ssh-key", bob.path, "-o", out, self.manifest)
        self.assertEqual((code, err), (0, "signed (ssh): web %s -> %s\n" % (self.sha, out)))
        self.assertTrue(self.read(out).startswith(MANIFEST + b"-----BEGIN SSH SIGNATURE-----\n"))
        allowed = keys.allowedSigners(self.path("allowed"), [bob])
        result = yield self.succeed("verify", "--allowed-signers", allowed, out)
        self.assertEqual(result, "good ssh signature by bob@example.com (%s)\nweb %s\n"
                         % (bob.fingerprint, self.sha))
        line, code = yield self.p2Fails("verify", out)
        self.assertEqual((line, code), ("p2: %s is SSH-signed: give --allowed-signers FILE"
                                        % (out,), 2))
        # Signing a signed manifest again replaces its signature.
        again = self.path("again.yaml")
        _, _, code = yield self.p2("sign", "--ssh-key", bob.path, "-o", again, out)
        self.assertEqual(code, 0)
        self.assertEqual(self.read(again).count(b"BEGIN SSH SIGNATURE"), 1)

    @defer.inlineCallbacks
    def test_refused(self):
        """
        A tampered, unsigned or unknown-key manifest fails C{p2 verify} with
        one line saying why.
        """
        alice = self.gpgKeys.newKey("Alice <alice@example.com>")
        mallory = self.gpgKeys.newKey("Mallory <m@example.com>")
        keyring = self.gpgKeys.exportKeyring(self.path("keyring.gpg"), [alice])
        tampered = self.path("t.yaml", self.gpgKeys.clearSign(alice, MANIFEST).replace(
            b"/a.tar.gz", b"/b.tar.gz"))
        line, code = yield self.p2Fails("verify", "--keyring", keyring, tampered)
        self.assertEqual(code, 1)
        self.assertIn("gpg: bad signature by key", line)
        unknown = self.path("u.yaml", self.gpgKeys.clearSign(mallory, MANIFEST))
        line, code = yield self.p2Fails("verify", "--keyring", keyring, unknown)
        self.assertIn("a key not in the keyring (key %s)" % (mallory,), line)
        line, code = yield self.p2Fails("verify", "--keyring", keyring, self.manifest)
        self.assertEqual(line, "p2: %s: manifest web is not signed" % (self.manifest,))
        out, err, code = yield self.p2("verify", "--keyring", keyring, "--json", unknown)
        self.assertEqual(code, 1)
        self.assertFalse(json.loads(out)["good"])

    @defer.inlineCallbacks
    def test_badInput(self):
        """
        An invalid manifest is not signed and nothing is written; a missing
        key fails with gpg's reason; --key with --ssh-key is a usage error.
        """
        bad = self.path("bad.yaml", b"id: web\n")
        out = self.path("out.yaml")
        line, code = yield self.p2Fails("sign", "-o", out, bad)
        self.assertEqual(code, 1)
        self.assertIn("launchables", line)
        self.assertFalse(os.path.exists(out))
        line, code = yield self.p2Fails("sign", "--key", "nobody@example.com", "-o", out,
                                        self.manifest)
        self.assertTrue(line.startswith("p2: gpg --clearsign failed: "), line)
        self.assertFalse(os.path.exists(out))
        line, code = yield self.p2Fails("sign", "--key", "x", "--ssh-key", "y", self.manifest)
        self.assertEqual(code, 2)

    @defer.inlineCallbacks
    def test_signedThroughCommands(self):
        """
        C{p2 schedule} and C{p2 rc create} store a signed manifest as signed,
        byte for byte, and it still verifies from the store.
        """
        from p2twisted.auth.ssh import SSHVerifier
        from p2twisted.auth.verifiers import verifyManifest
        from p2twisted.records.controllers import ReplicationController
        from p2twisted.store import keys, openStore
        sshKeys = SSHKeys(self)
        bob = sshKeys.newKey("bob@example.com")
        signed = self.path("signed.yaml")
        _, _, code = yield self.p2("sign", "--ssh-key", bob.path, "-o", signed, self.manifest)
        self.assertEqual(code, 0)
        yield self.succeed("schedule", "--node", "n1", signed)
        yield self.succeed("rc", "create", "--manifest", signed, "--replicas", "0", "--id", "w")
        store = yield openStore(self.url)
        try:
            scheduled = (yield store.get(keys.intent("n1", "web"))).value
            rc = ReplicationController.fromEntry(
                keys.replicationController("w"),
                (yield store.get(keys.replicationController("w"))))
        finally:
            yield store.close()
        self.assertEqual(scheduled, self.read(signed))
        self.assertEqual(rc.manifest, self.read(signed))
        verifier = SSHVerifier(sshKeys.allowedSigners(self.path("allowed"), [bob]))
        signer = yield verifyManifest(parseManifest(scheduled), ssh=verifier)
        self.assertEqual(signer.identity, "bob@example.com")


class DeploySigningTests(ServiceCommandMixin, unittest.TestCase):
    """
    C{p2 deploy} signs the manifest it renders when the config file says
    with which key (C{signing:}).
    """

    timeout = 120

    def setUp(self):
        ServiceCommandMixin.setUp(self)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "p2.yaml")
        self.env["P2_CONFIG"] = self.config

    def configure(self, text):
        with open(self.config, "w") as f:
            f.write(text)

    @defer.inlineCallbacks
    def stored(self, *path):
        from p2twisted.store import openStore
        store = yield openStore(self.url)
        try:
            entries = yield store.list(path[0])
        finally:
            yield store.close()
        return entries

    @defer.inlineCallbacks
    def test_sshSigned(self):
        """
        With C{signing: {ssh_key: FILE}}, the intent written is SSH-signed
        by that key, and verifies.
        """
        from p2twisted.auth.ssh import SSHVerifier
        from p2twisted.auth.verifiers import verifyManifest
        from p2twisted.store import keys
        sshKeys = SSHKeys(self)
        bob = sshKeys.newKey("bob@example.com")
        self.configure("signing: {ssh_key: %s}\n" % (bob.path,))
        yield self.succeed("add", "job", "--template", "command", "--command", "true")
        yield self.succeed("deploy", "job", "--node", "n1")
        raw = (yield self.stored(keys.INTENT))[keys.intent("n1", "job")].value
        manifest = parseManifest(raw)
        self.assertEqual(manifest.signatureSystem, "ssh")
        verifier = SSHVerifier(sshKeys.allowedSigners(os.path.join(self.dir, "allowed"), [bob]))
        self.assertEqual((yield verifyManifest(manifest, ssh=verifier)).identity,
                         "bob@example.com")

    @defer.inlineCallbacks
    def test_gpgSignedReplicas(self):
        """
        With C{signing: {key: ID}}, C{p2 deploy --replicas} puts a GPG
        clear-signed manifest in its replication controller.
        """
        from p2twisted.records.controllers import ReplicationController
        from p2twisted.store import keys
        gpgKeys = GPGKeys(self)
        alice = gpgKeys.newKey("Alice <alice@example.com>")
        self.env["GNUPGHOME"] = gpgKeys.home
        self.configure("signing: {key: %s}\n" % (alice,))
        yield self.succeed("add", "job", "--template", "command", "--command", "true")
        yield self.p2("deploy", "job", "--replicas", "1")
        entries = yield self.stored(keys.REPLICATION_CONTROLLERS)
        [rc] = [ReplicationController.fromEntry(k, e) for k, e in entries.items()]
        self.assertEqual(parseManifest(rc.manifest).signatureSystem, "gpg")

    @defer.inlineCallbacks
    def test_badSigning(self):
        """
        A malformed C{signing:} stops the deploy with one line.
        """
        self.configure("signing: {gpg: x}\n")
        yield self.succeed("add", "job", "--template", "command", "--command", "true")
        line, code = yield self.p2Fails("deploy", "job", "--node", "n1")
        self.assertEqual(line, "p2: config signing: expected 'key: GPG-KEY-ID' or 'ssh_key: "
                               "FILE', got {'gpg': 'x'}")
        self.assertEqual((yield self.stored("intent")), {})
