"""
Tests for L{p2twisted.auth.gpg}, with the real gpg and keys made here.
"""

import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from p2twisted.auth.gpg import GPGVerifier, judge, parseStatus
from p2twisted.auth.interfaces import ISignatureVerifier, Signer, SignatureRejected
from p2twisted.manifest import parseManifest
from tests.signingkeys import GPGKeys, rejection

MANIFEST = (b"id: web\nrun_as: web\nlaunchables:\n"
            b"  web: {launchable_type: hoist, location: /a.tar.gz}\n"
            b"config:\n  note:\n  - dash\n")


class GPGVerifierTests(TestCase):
    """
    L{GPGVerifier} against real gpg.
    """

    timeout = 60

    def setUp(self):
        self.keys = GPGKeys(self)
        self.alice = self.keys.newKey("Alice <alice@example.com>")
        self.dir = os.path.abspath(self.mktemp())
        os.mkdir(self.dir)
        self.keyring = self.keys.exportKeyring(os.path.join(self.dir, "keyring.gpg"), [self.alice])
        self.verifier = GPGVerifier(self.keyring, tempDir=self.dir)
        self.addCleanup(self.verifier.close)

    def rejected(self, data, signature):
        return rejection(self, self.verifier.verify(data, signature))

    def test_interface(self):
        self.assertTrue(verifyObject(ISignatureVerifier, self.verifier))

    @defer.inlineCallbacks
    def test_clearSignedManifest(self):
        """
        A manifest clear-signed by a key in the keyring is good, naming the
        key's fingerprint and user id.
        """
        m = parseManifest(self.keys.clearSign(self.alice, MANIFEST))
        signer = yield self.verifier.verify(m.signedBody, m.signature)
        self.assertEqual(signer, Signer("gpg", self.alice, "Alice <alice@example.com>"))

    @defer.inlineCallbacks
    def test_trailingWhitespace(self):
        """
        Clear-signed text with trailing blanks on a line still verifies (the
        signature covers the text without them).
        """
        m = parseManifest(self.keys.clearSign(self.alice, MANIFEST.replace(b"web\n", b"web  \n")))
        signer = yield self.verifier.verify(m.signedBody, m.signature)
        self.assertEqual(signer.fingerprint, self.alice)

    @defer.inlineCallbacks
    def test_trailingBlanksAddedAfterSigning(self):
        """
        Trailing blanks added to a clear-signed manifest after signing still
        verify (gpg's signature does not cover them), so the manifest the
        agent parses and runs must not contain them either: here a blank
        after a shell line continuation would turn C{echo one ; echo two}
        into two different commands.
        """
        text = MANIFEST + b"  script: |\n    echo one \\\n    ; echo two\n"
        signed = self.keys.clearSign(self.alice, text)
        tampered = signed.replace(b"echo one \\\n", b"echo one \\ \n")
        self.assertNotEqual(tampered, signed)
        m = parseManifest(tampered)
        signer = yield self.verifier.verify(m.signedBody, m.signature)
        self.assertEqual(signer.fingerprint, self.alice)
        self.assertEqual(m.config["script"], parseManifest(text).config["script"])
        self.assertEqual(m.sha(), parseManifest(text).sha())

    def test_textAfterSignature(self):
        """
        Text after the signature -- here another clear-signed manifest,
        which C{gpg --decrypt} of the file would print after the first --
        is refused, not silently ignored.
        """
        from p2twisted.errors import ManifestError
        signed = self.keys.clearSign(self.alice, MANIFEST)
        other = self.keys.clearSign(self.alice, MANIFEST.replace(b"run_as: web", b"run_as: root"))
        e = self.assertRaises(ManifestError, parseManifest, signed + other)
        self.assertEqual(e.problems, ["pgp: text after the -----END PGP SIGNATURE----- line"])
        self.assertEqual(parseManifest(signed + b"\n \r\n").runAs, "web")

    @defer.inlineCallbacks
    def test_detached(self):
        """
        A detached signature over bytes (an artifact) is good.
        """
        data = b"\x00artifact bytes\xff" * 100
        signer = yield self.verifier.verify(data, self.keys.detachSign(self.alice, data))
        self.assertEqual(signer.fingerprint, self.alice)
        binary = self.keys.detachSign(self.alice, data, armor=False)
        signer = yield self.verifier.verify(data, binary)
        self.assertEqual(signer.fingerprint, self.alice)

    @defer.inlineCallbacks
    def test_tampered(self):
        """
        One changed byte makes it a bad signature.
        """
        signed = self.keys.clearSign(self.alice, MANIFEST).replace(b"run_as: web", b"run_as: wab")
        m = parseManifest(signed)
        reason = yield self.rejected(m.signedBody, m.signature)
        self.assertIn("gpg: bad signature by key", reason)
        self.assertIn("Alice <alice@example.com>", reason)

    @defer.inlineCallbacks
    def test_unknownKey(self):
        """
        A key not in the keyring is rejected, naming it.
        """
        mallory = self.keys.newKey("Mallory <m@example.com>")
        m = parseManifest(self.keys.clearSign(mallory, MANIFEST))
        reason = yield self.rejected(m.signedBody, m.signature)
        self.assertEqual(reason, "gpg: the signature was made by a key not in the keyring (key %s)"
                         % (mallory,))

    @defer.inlineCallbacks
    def test_expiredKey(self):
        """
        A signature made while the key was valid, by a key expired since, is
        rejected.
        """
        old = self.keys.newKey("Old <old@example.com>", expire="1y", at="20200101T000000")
        self.keys.exportKeyring(self.keyring, [self.alice, old])
        m = parseManifest(self.keys.clearSign(old, MANIFEST, at="20200601T000000"))
        reason = yield self.rejected(m.signedBody, m.signature)
        self.assertIn("gpg: signed by expired key", reason)
        self.assertIn("Old <old@example.com>", reason)

    @defer.inlineCallbacks
    def test_revokedKey(self):
        """
        A signature by a key whose revocation is in the keyring is rejected.
        """
        m = parseManifest(self.keys.clearSign(self.alice, MANIFEST))
        yield self.verifier.verify(m.signedBody, m.signature)
        self.keys.revoke(self.alice)
        self.keys.exportKeyring(self.keyring, [self.alice])
        reason = yield self.rejected(m.signedBody, m.signature)
        self.assertIn("gpg: signed by revoked key", reason)

    @defer.inlineCallbacks
    def test_rotation(self):
        """
        A changed keyring file is picked up by the next verification.
        """
        bob = self.keys.newKey("Bob <bob@example.com>")
        m = parseManifest(self.keys.clearSign(bob, MANIFEST))
        yield self.rejected(m.signedBody, m.signature)
        self.keys.exportKeyring(self.keyring, [bob])
        signer = yield self.verifier.verify(m.signedBody, m.signature)
        self.assertEqual(signer.identity, "Bob <bob@example.com>")
        self.assertEqual(self.verifier.fingerprints, {bob})
        m = parseManifest(self.keys.clearSign(self.alice, MANIFEST))
        yield self.rejected(m.signedBody, m.signature)

    @defer.inlineCallbacks
    def test_unsignedOrGarbage(self):
        """
        No signature, or bytes that are no signature, are rejected.
        """
        self.assertEqual((yield self.rejected(MANIFEST, None)), "gpg: not signed")
        self.assertEqual((yield self.rejected(MANIFEST, b"-----BEGIN PGP SIGNATURE-----\n\nxx\n")),
                         "gpg: no OpenPGP signature found")

    @defer.inlineCallbacks
    def test_missingOrBadKeyring(self):
        """
        A missing or unreadable keyring rejects everything, naming the file.
        """
        m = parseManifest(self.keys.clearSign(self.alice, MANIFEST))
        os.remove(self.keyring)
        self.assertEqual((yield self.rejected(m.signedBody, m.signature)),
                         "gpg: keyring %s is missing" % (self.keyring,))
        with open(self.keyring, "wb") as f:
            f.write(b"not a keyring")
        reason = yield self.rejected(m.signedBody, m.signature)
        self.assertTrue(reason.startswith("gpg: keyring %s holds no keys (" % (self.keyring,)),
                        reason)

    @defer.inlineCallbacks
    def test_gpgKilled(self):
        """
        A gpg killed by a signal (the OOM killer, say) rejects the signature
        in one line, rather than failing with gpg's raw outputs.
        """
        wrapper = os.path.join(self.dir, "gpg-killed")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\ncase " $* " in *" --verify "*) kill -9 $$;; esac\n'
                    'exec gpg "$@"\n')
        os.chmod(wrapper, 0o755)
        verifier = GPGVerifier(self.keyring, tempDir=self.dir, gpg=wrapper)
        self.addCleanup(verifier.close)
        m = parseManifest(self.keys.clearSign(self.alice, MANIFEST))
        self.verifier = verifier
        self.assertEqual((yield self.rejected(m.signedBody, m.signature)),
                         "gpg: gpg was killed by signal 9")

    @defer.inlineCallbacks
    def test_closeRemovesHome(self):
        """
        C{close} removes the private GNUPGHOME.
        """
        yield self.verifier.verify(MANIFEST, self.keys.detachSign(self.alice, MANIFEST))
        homes = [n for n in os.listdir(self.dir) if n.startswith("p2-gpg-")]
        self.assertEqual(len(homes), 1)
        yield self.verifier.close()
        self.assertEqual([n for n in os.listdir(self.dir) if n.startswith("p2-gpg-")], [])


class JudgeTests(SynchronousTestCase):
    """
    L{judge} is strict about gpg's status lines.
    """

    FPR = "AB" * 20
    GOOD = (b"[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG ABABABABABABABAB A <a@x>\n"
            b"[GNUPG:] VALIDSIG CD 2026-01-01 1 0 4 0 22 8 01 " + FPR.encode() + b"\n")

    def test_good(self):
        self.assertEqual(judge(parseStatus(self.GOOD), 0, {self.FPR}),
                         Signer("gpg", self.FPR, "A <a@x>"))

    def test_notInKeyring(self):
        """
        VALIDSIG from a key outside the keyring is not enough.
        """
        e = self.assertRaises(SignatureRejected, judge, parseStatus(self.GOOD), 0, {"CD"})
        self.assertEqual(str(e), "gpg: signed by key %s, which is not in the keyring" % (self.FPR,))

    def test_exitCode(self):
        self.assertRaises(SignatureRejected, judge, parseStatus(self.GOOD), 1, {self.FPR})

    def test_twoSignatures(self):
        e = self.assertRaises(SignatureRejected, judge,
                              parseStatus(self.GOOD + self.GOOD), 0, {self.FPR})
        self.assertEqual(str(e), "gpg: 2 signatures where exactly one is expected")

    def test_expiredWithValid(self):
        """
        EXPKEYSIG wins over a VALIDSIG in the same run.
        """
        status = self.GOOD + b"[GNUPG:] EXPKEYSIG ABABABABABABABAB A <a@x>\n"
        e = self.assertRaises(SignatureRejected, judge, parseStatus(status), 0, {self.FPR})
        self.assertEqual(str(e), "gpg: signed by expired key ABABABABABABABAB (A <a@x>)")

