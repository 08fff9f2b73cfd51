"""
Tests for L{p2twisted.auth}: the verifier seam and its fake.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2twisted.auth.interfaces import ISignatureVerifier, Signer, SignatureRejected
from p2twisted.auth.testing import FakeVerifier
from p2twisted.errors import P2Error


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
