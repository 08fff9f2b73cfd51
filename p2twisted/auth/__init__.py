# -*- test-case-name: tests.test_auth -*-
"""
Deployment authorization: who signed a manifest, artifact or request.

L{p2twisted.auth.interfaces} holds the seam (L{ISignatureVerifier},
L{Signer}, L{SignatureRejected}); L{p2twisted.auth.testing} a verified fake.
"""
