# -*- test-case-name: tests.test_manifest -*-
"""
Unwrapping PGP clear-signed manifests (RFC 4880 section 7).
"""

from p2twisted.errors import ManifestError

_SIGNED_MESSAGE = b"-----BEGIN PGP SIGNED MESSAGE-----"
_SIGNATURE_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_SIGNATURE_END = b"-----END PGP SIGNATURE-----"


def _unwrapClearSigned(data, source):
    """
    Strip a PGP clear-signature wrapper, if any.

    @return: C{(body, signature, signedBody)}; C{(data, None, None)} for an
        unsigned manifest.
    @raise ManifestError: if the wrapper is malformed.
    """
    if not data.startswith(_SIGNED_MESSAGE):
        return data, None, None
    lines = data.split(b"\n")
    bare = [line.rstrip(b"\r\t ") for line in lines]

    def find(marker, start, missing):
        if marker not in bare[start:]:
            raise ManifestError(["pgp: the clear-signed message has no %s" % (missing,)], source)
        return bare.index(marker, start)
    start = find(b"", 0, "blank line after its headers") + 1
    begin = find(_SIGNATURE_BEGIN, start, _SIGNATURE_BEGIN.decode() + " line")
    end = find(_SIGNATURE_END, begin, _SIGNATURE_END.decode() + " line")
    body = b"\n".join(line[2:] if line.startswith(b"- ") else line for line in lines[start:begin])
    if body.endswith(b"\r"):
        body = body[:-1]
    return body, b"\n".join(bare[begin:end + 1]) + b"\n", body
