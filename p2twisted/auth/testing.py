# -*- test-case-name: tests.test_auth -*-
"""
A public fake L{ISignatureVerifier} for tests of code that uses signatures.
"""

from twisted.internet import defer
from zope.interface import implementer

from p2twisted.auth.interfaces import ISignatureVerifier, SignatureRejected


@implementer(ISignatureVerifier)
class FakeVerifier(object):
    """
    Accepts exactly the signatures it was given, whatever the data.

    @ivar signers: C{{signatureBytes: Signer}}; change it to rotate keys.
    @ivar calls: C{[(data, signature)]} in the order verified.
    """

    def __init__(self, system, signers=None):
        self.system = system
        self.signers = dict(signers or {})
        self.calls = []

    def verify(self, data, signature):
        self.calls.append((data, signature))
        if signature is None:
            return defer.fail(SignatureRejected("%s: not signed" % (self.system,)))
        signer = self.signers.get(signature)
        if signer is None:
            return defer.fail(SignatureRejected(
                "%s: signature not made by a trusted key" % (self.system,)))
        return defer.succeed(signer)
