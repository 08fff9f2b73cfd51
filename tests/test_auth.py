"""
Tests for L{p2twisted.auth}: the verifier seam and its fake.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2twisted.auth.interfaces import ISignatureVerifier, Signer, SignatureRejected
from p2twisted.auth.testing import FakeVerifier
from p2twisted.auth.verifiers import verifierFor, verifyManifest
from p2twisted.errors import P2Error
from p2twisted.manifest import parseManifest


class FakeVerifierTests(SynchronousTestCase):

    def test_interface(self):
        """
        The fake provides L{ISignatureVerifier}.
        """
        self.assertTrue(verifyObject(ISignatureVerifier, FakeVerifier("gpg")))

    def test_knownSignature(self):
        """
        A signature the fake was given yields its signer.
        """
        alice = Signer("ssh", "SHA256:abc", "alice@example.com")
        verifier = FakeVerifier("ssh", {b"sig": alice})
        self.assertEqual(self.successResultOf(verifier.verify(b"data", b"sig")), alice)
        self.assertEqual(verifier.calls, [(b"data", b"sig")])

    def test_unknownSignature(self):
        """
        Any other signature, or none, is rejected with a one-line reason.
        """
        verifier = FakeVerifier("gpg", {b"sig": Signer("gpg", "AB" * 20, "a")})
        for signature in [b"other", None]:
            failure = self.failureResultOf(verifier.verify(b"data", signature), SignatureRejected)
            self.assertIsInstance(failure.value, P2Error)
            self.assertNotIn("\n", str(failure.value))
            self.assertEqual(failure.value.reason, str(failure.value))


class VerifierForTests(SynchronousTestCase):
    """
    L{verifierFor} and L{verifyManifest} pick the verifier by the manifest's
    signature system.
    """

    TEXT = b"id: web\nlaunchables:\n  web: {launchable_type: hoist, location: /a.tar.gz}\n"
    SSH = TEXT + b"-----BEGIN SSH SIGNATURE-----\nAAA=\n-----END SSH SIGNATURE-----\n"
    GPG = (b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + TEXT
           + b"-----BEGIN PGP SIGNATURE-----\n\nBBB=\n-----END PGP SIGNATURE-----\n")

    def setUp(self):
        self.gpg = FakeVerifier("gpg")
        self.ssh = FakeVerifier("ssh")

    def test_pick(self):
        self.assertIs(verifierFor(parseManifest(self.SSH), self.gpg, self.ssh), self.ssh)
        self.assertIs(verifierFor(parseManifest(self.GPG), self.gpg, self.ssh), self.gpg)

    def test_unsigned(self):
        e = self.assertRaises(SignatureRejected, verifierFor, parseManifest(self.TEXT),
                              self.gpg, self.ssh)
        self.assertEqual(str(e), "manifest web is not signed")

    def test_unconfigured(self):
        e = self.assertRaises(SignatureRejected, verifierFor, parseManifest(self.SSH), self.gpg)
        self.assertEqual(str(e), "manifest web is ssh-signed, but no SSH allowed-signers file "
                                 "is configured")

    def test_verifyManifest(self):
        """
        The verifier sees the signed body and the signature.
        """
        alice = Signer("ssh", "SHA256:a", "alice")
        m = parseManifest(self.SSH)
        self.ssh.signers[m.signature] = alice
        self.assertEqual(self.successResultOf(verifyManifest(m, ssh=self.ssh)), alice)
        self.assertEqual(self.ssh.calls, [(self.TEXT, m.signature)])
        self.failureResultOf(verifyManifest(m, gpg=self.gpg), SignatureRejected)
