# -*- test-case-name: tests.test_manifest -*-
"""
Unwrapping signed manifests: PGP clear-signed (RFC 4880 section 7) and
SSH-signed (the manifest's bytes followed by an armored
C{-----BEGIN SSH SIGNATURE-----} block made by C{ssh-keygen -Y sign} over
exactly those bytes).
"""

import attr

from p2twisted.errors import ManifestError

_SIGNED_MESSAGE = b"-----BEGIN PGP SIGNED MESSAGE-----"
_SIGNATURE_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_SIGNATURE_END = b"-----END PGP SIGNATURE-----"

SSH_SIGNATURE_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
SSH_SIGNATURE_END = b"-----END SSH SIGNATURE-----"


@attr.s(frozen=True)
class Unwrapped(object):
    """
    A manifest's bytes with any signature wrapper taken apart.

    @ivar body: the manifest's YAML.
    @ivar signature: the armored signature, or C{None}.
    @ivar signedBody: the bytes that signature covers, or C{None}.
    @ivar system: C{"gpg"}, C{"ssh"} or C{None}.
    """
    body = attr.ib()
    signature = attr.ib(default=None)
    signedBody = attr.ib(default=None)
    system = attr.ib(default=None)


def unwrapSigned(data, source=None):
    """
    Strip a PGP clear-signature or SSH signature wrapper, if any.

    @return: an L{Unwrapped}.
    @raise ManifestError: if the wrapper is malformed.
    """
    if data.startswith(_SIGNED_MESSAGE):
        return _unwrapClearSigned(data, source)
    at = _sshSignatureStart(data)
    if at is not None:
        return _unwrapSSH(data, at, source)
    return Unwrapped(body=data)


def _sshSignatureStart(data):
    """
    @return: the offset of the line starting an SSH signature block, or
        C{None}.
    """
    if data.startswith(SSH_SIGNATURE_BEGIN):
        return 0
    at = data.rfind(b"\n" + SSH_SIGNATURE_BEGIN)
    return None if at < 0 else at + 1


def _unwrapSSH(data, at, source):
    block = data[at:]
    lines = [line.rstrip(b"\r\t ") for line in block.split(b"\n")]
    if lines[0] != SSH_SIGNATURE_BEGIN:
        raise ManifestError(["ssh: text after %s on its line" % (SSH_SIGNATURE_BEGIN.decode(),)],
                            source)
    if SSH_SIGNATURE_END not in lines:
        raise ManifestError(["ssh: the signature has no %s line" % (SSH_SIGNATURE_END.decode(),)],
                            source)
    end = lines.index(SSH_SIGNATURE_END)
    if any(lines[end + 1:]):
        raise ManifestError(["ssh: text after the %s line" % (SSH_SIGNATURE_END.decode(),)],
                            source)
    if at == 0:
        raise ManifestError(["ssh: a signature with no manifest before it"], source)
    body = data[:at]
    return Unwrapped(body=body, signature=block, signedBody=body, system="ssh")


def _unwrapClearSigned(data, source):
    lines = data.split(b"\n")
    bare = [line.rstrip(b"\r\t ") for line in lines]

    def find(marker, start, missing):
        if marker not in bare[start:]:
            raise ManifestError(["pgp: the clear-signed message has no %s" % (missing,)], source)
        return bare.index(marker, start)
    start = find(b"", 0, "blank line after its headers") + 1
    begin = find(_SIGNATURE_BEGIN, start, _SIGNATURE_BEGIN.decode() + " line")
    end = find(_SIGNATURE_END, begin, _SIGNATURE_END.decode() + " line")
    if any(bare[end + 1:]):
        # Not signed, not parsed here -- but other readers of the file (gpg
        # --decrypt prints every clear-signed message in it) would see it.
        raise ManifestError(["pgp: text after the %s line" % (_SIGNATURE_END.decode(),)],
                            source)
    undash = [line[2:] if line.startswith(b"- ") else line for line in lines[start:begin]]
    # RFC 4880 7.1: the signature covers the text without trailing blanks
    # on each line and without the line ending before the signature.
    signedBody = b"\n".join(line.rstrip(b"\r\t ") for line in undash)
    # What is parsed (and run) is exactly what the signature covers: blanks
    # added after signing must not change a block scalar (a shell line's
    # continuation, say).  The line ending before the signature is the
    # signer's text's last one, so it is put back.
    return Unwrapped(body=signedBody + b"\n",
                     signature=b"\n".join(bare[begin:end + 1]) + b"\n",
                     signedBody=signedBody, system="gpg")


def wrapperOf(data):
    """
    @return: C{"gpg"}, C{"ssh"} or C{None}: which signature wrapper C{data}
        has, without checking it.
    """
    if data.startswith(_SIGNED_MESSAGE):
        return "gpg"
    return "ssh" if _sshSignatureStart(data) is not None else None


def isSigned(data):
    """
    @return: whether C{data} carries a signature wrapper (PGP clear-sign or
        an SSH signature block), without checking it.
    """
    return wrapperOf(data) is not None
