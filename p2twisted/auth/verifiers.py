# -*- test-case-name: tests.test_auth -*-
"""
Picking the verifier for a signed manifest by its signature system.
"""

from twisted.internet import defer

from p2twisted.auth.interfaces import SignatureRejected

_CONFIG = {"gpg": "GPG keyring", "ssh": "SSH allowed-signers file"}


def verifierFor(manifest, gpg=None, ssh=None):
    """
    @param manifest: a L{PodManifest<p2twisted.manifest.PodManifest>}.
    @param gpg: the L{ISignatureVerifier} for GPG signatures, or C{None}.
    @param ssh: the L{ISignatureVerifier} for SSH signatures, or C{None}.
    @return: the verifier for C{manifest}'s signature.
    @raise SignatureRejected: it is unsigned, or signed with a system no
        verifier is given for.
    """
    system = manifest.signatureSystem
    if system is None:
        raise SignatureRejected("manifest %s is not signed" % (manifest.id,))
    verifier = {"gpg": gpg, "ssh": ssh}.get(system)
    if verifier is None:
        raise SignatureRejected("manifest %s is %s-signed, but no %s is configured"
                                % (manifest.id, system, _CONFIG.get(system, system)))
    return verifier


def verifyManifest(manifest, gpg=None, ssh=None):
    """
    Check C{manifest}'s signature with the verifier for its system.

    @return: a Deferred firing with the L{Signer}, or failing with
        L{SignatureRejected}.
    """
    try:
        verifier = verifierFor(manifest, gpg=gpg, ssh=ssh)
    except SignatureRejected:
        return defer.fail()
    return verifier.verify(manifest.signedBody, manifest.signature)
