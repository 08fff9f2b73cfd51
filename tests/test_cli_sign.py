"""
Tests for C{p2 sign} and C{p2 verify}, run as the real command with real gpg
and ssh-keygen keys made here.
"""

import json
import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from p2twisted.manifest import parseManifest
from tests.cli import P2CommandMixin
from tests.signingkeys import GPGKeys, SSHKeys

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
