# -*- test-case-name: tests.test_auth -*-
"""
The seam between signature systems (GPG, OpenSSH) and the policies that use
them.
"""

import attr
from zope.interface import Attribute, Interface

from p2twisted.errors import P2Error


class ISignatureVerifier(Interface):
    """
    Checks one signature system's signatures against the keys it trusts.
    """

    system = Attribute("'gpg' or 'ssh': the signature system this verifier checks.")

    def verify(data, signature):
        """
        Check C{signature} over C{data}.

        @param data: the signed bytes.
        @param signature: the signature bytes (armored).
        @return: a Deferred firing with a L{Signer}, or failing with
            L{SignatureRejected} (one-line reason).
        """


@attr.s(frozen=True)
class Signer(object):
    """
    Who made a good signature.

    @ivar system: C{"gpg"} or C{"ssh"}.
    @ivar fingerprint: gpg: the signing key's full uppercase hex fingerprint
        (of the primary key); ssh: C{"SHA256:..."}.
    @ivar identity: gpg: the key's user id; ssh: the principal.
    """
    system = attr.ib()
    fingerprint = attr.ib()
    identity = attr.ib()


class SignatureRejected(P2Error):
    """
    A signature is missing, malformed, bad, or made by a key not trusted.

    @ivar reason: the one-line reason, also C{str()}.
    """

    def __init__(self, reason):
        self.reason = reason
        P2Error.__init__(self, reason)

    def __str__(self):
        return self.reason
