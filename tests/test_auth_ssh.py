"""
Tests for L{p2twisted.auth.ssh}, with the real ssh-keygen and keys made here.
"""

import os
import subprocess

from twisted.internet import defer
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from p2twisted.auth.interfaces import ISignatureVerifier, Signer
from p2twisted.auth.ssh import SSHVerifier
from p2twisted.manifest import parseManifest
from tests.signingkeys import SSHKeys, rejection

MANIFEST = b"id: web\nlaunchables:\n  web: {launchable_type: hoist, location: /a.tar.gz}\n"


class SSHVerifierTests(TestCase):
    """
    L{SSHVerifier} against real ssh-keygen.
    """

    timeout = 60

    def setUp(self):
        self.keys = SSHKeys(self)
        self.alice = self.keys.newKey("alice@example.com")
        self.dir = os.path.abspath(self.mktemp())
        os.mkdir(self.dir)
        self.allowed = self.keys.allowedSigners(os.path.join(self.dir, "allowed"), [self.alice])
        self.verifier = SSHVerifier(self.allowed)

    def rejected(self, data, signature, verifier=None):
        return rejection(self, (verifier or self.verifier).verify(data, signature))

    def test_interface(self):
        self.assertTrue(verifyObject(ISignatureVerifier, self.verifier))

    @defer.inlineCallbacks
    def test_signedManifest(self):
        """
        A manifest signed by an allowed key is good, naming the key and its
        principal.
        """
        m = parseManifest(self.keys.sign(self.alice, MANIFEST))
        self.assertEqual(m.signatureSystem, "ssh")
        signer = yield self.verifier.verify(m.signedBody, m.signature)
        self.assertEqual(signer, Signer("ssh", self.alice.fingerprint, "alice@example.com"))

    @defer.inlineCallbacks
    def test_file(self):
        """
        The data may be a file (an artifact).
        """
        path = FilePath(self.dir).child("artifact")
        path.setContent(b"\x00" * 10000)
        signer = yield self.verifier.verify(
            path, self.keys.signature(self.alice, path.getContent()))
        self.assertEqual(signer.identity, "alice@example.com")

    @defer.inlineCallbacks
    def test_tampered(self):
        signed = self.keys.sign(self.alice, MANIFEST).replace(b"id: web", b"id: wex")
        m = parseManifest(signed)
        self.assertEqual((yield self.rejected(m.signedBody, m.signature)),
                         "ssh: bad signature: the signed data was changed")

    @defer.inlineCallbacks
    def test_unknownKey(self):
        mallory = self.keys.newKey("mallory@example.com")
        m = parseManifest(self.keys.sign(mallory, MANIFEST))
        self.assertEqual((yield self.rejected(m.signedBody, m.signature)),
                         "ssh: signed by key %s, which no principal in %s allows"
                         % (mallory.fingerprint, self.allowed))

    @defer.inlineCallbacks
    def test_otherNamespace(self):
        """
        A signature made for another purpose (namespace) is not accepted.
        """
        signature = self.keys.signature(self.alice, MANIFEST, namespace="file")
        self.assertEqual((yield self.rejected(MANIFEST, signature)),
                         "ssh: the signature was not made for namespace 'p2-manifest'")

    @defer.inlineCallbacks
    def test_expiredKey(self):
        """
        A key past its C{valid-before} in the allowed-signers file is refused.
        """
        self.keys.allowedSigners(self.allowed, [self.alice], options='valid-before="20200101"')
        m = parseManifest(self.keys.sign(self.alice, MANIFEST))
        reason = yield self.rejected(m.signedBody, m.signature)
        self.assertIn("ssh: signed by key %s, which no principal" % (self.alice.fingerprint,),
                      reason)
        self.assertIn("key has expired", reason)

    @defer.inlineCallbacks
    def test_revokedKey(self):
        """
        A key in the revoked-keys file is refused.
        """
        krl = os.path.join(self.dir, "revoked")
        subprocess.run(["ssh-keygen", "-q", "-k", "-f", krl, self.alice.path + ".pub"],
                       check=True, stderr=subprocess.PIPE)
        verifier = SSHVerifier(self.allowed, revokedKeys=krl)
        m = parseManifest(self.keys.sign(self.alice, MANIFEST))
        self.assertEqual((yield self.rejected(m.signedBody, m.signature, verifier)),
                         "ssh: signed by revoked key %s (alice@example.com)"
                         % (self.alice.fingerprint,))

    @defer.inlineCallbacks
    def test_rotation(self):
        """
        A changed allowed-signers file counts from the next check.
        """
        bob = self.keys.newKey("bob@example.com")
        m = parseManifest(self.keys.sign(bob, MANIFEST))
        yield self.rejected(m.signedBody, m.signature)
        self.keys.allowedSigners(self.allowed, [bob])
        signer = yield self.verifier.verify(m.signedBody, m.signature)
        self.assertEqual(signer.identity, "bob@example.com")

    @defer.inlineCallbacks
    def test_garbageOrMissing(self):
        self.assertEqual((yield self.rejected(MANIFEST, None)), "ssh: not signed")
        self.assertEqual((yield self.rejected(
            MANIFEST, b"-----BEGIN SSH SIGNATURE-----\nxx\n-----END SSH SIGNATURE-----\n")),
            "ssh: no SSH signature found")
        os.remove(self.allowed)
        self.assertEqual((yield self.rejected(MANIFEST, b"x")),
                         "ssh: allowed signers file %s is missing" % (self.allowed,))
