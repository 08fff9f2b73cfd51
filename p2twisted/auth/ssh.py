# -*- test-case-name: tests.test_auth_ssh -*-
"""
L{SSHVerifier}: OpenSSH signatures (C{ssh-keygen -Y sign}) checked by the
real C{ssh-keygen -Y verify} against an allowed-signers file (see
ssh-keygen(1), "ALLOWED SIGNERS"), for people who would rather not use GPG.

A signature is good only when it is well formed, made in the verifier's
namespace over exactly the data, by a key that the allowed-signers file
lists for some principal (and that is not expired there, nor in the
optional revoked-keys file).  The file is read by C{ssh-keygen} on every
check, so a changed file takes effect at once.
"""

import os
import re

from twisted.internet import defer, protocol
from twisted.python.filepath import FilePath
from zope.interface import implementer

from p2twisted.auth.files import signatureFiles
from p2twisted.auth.interfaces import ISignatureVerifier, Signer, SignatureRejected

SSH_KEYGEN = "ssh-keygen"

#: The namespace manifests are signed in (C{ssh-keygen -Y sign -n}).
MANIFEST_NAMESPACE = "p2-manifest"

_GOOD = re.compile(r'^Good "[^"]*" signature (?:for (?P<principal>.+) )?'
                   r'with \S+ key (?P<fpr>SHA256:\S+)$')


class _Collect(protocol.ProcessProtocol):

    def __init__(self, done):
        self.done = done
        self.out, self.err = [], []

    def childDataReceived(self, fd, data):
        (self.out if fd == 1 else self.err).append(data)

    def processEnded(self, reason):
        self.done.callback((b"".join(self.out).decode("utf-8", "replace"),
                            b"".join(self.err).decode("utf-8", "replace"),
                            reason.value.exitCode))


def runWithInput(reactor, executable, args, inputPath):
    """
    Run C{executable} with C{inputPath} as its standard input.

    @return: a Deferred firing with C{(stdout, stderr, exitCode)}, text.
    """
    done = defer.Deferred()
    fd = os.open(inputPath, os.O_RDONLY)
    try:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        reactor.spawnProcess(_Collect(done), executable, [executable] + list(args), env=env,
                             childFDs={0: fd, 1: "r", 2: "r"})
    finally:
        os.close(fd)
    return done


def _lines(text):
    return [line.strip() for line in text.splitlines() if line.strip()]


@implementer(ISignatureVerifier)
class SSHVerifier(object):
    """
    Checks OpenSSH signatures against an allowed-signers file.

    @ivar allowedSigners: the allowed-signers file, a L{FilePath}.
    @ivar namespace: the signature namespace required.
    @ivar revokedKeys: a revoked-keys file (KRL or public keys), or C{None}.
    """

    system = "ssh"

    def __init__(self, allowedSignersFile, namespace=MANIFEST_NAMESPACE, revokedKeys=None,
                 reactor=None, sshKeygen=SSH_KEYGEN, tempDir=None):
        if reactor is None:
            from twisted.internet import reactor
        self.allowedSigners = (allowedSignersFile if isinstance(allowedSignersFile, FilePath)
                               else FilePath(allowedSignersFile))
        self.namespace = namespace
        self.revokedKeys = revokedKeys
        self._reactor = reactor
        self._sshKeygen = sshKeygen
        self._tempDir = tempDir

    def verify(self, data, signature):
        """
        Check an armored SSH signature over C{data}.

        @param data: the signed bytes, or a L{FilePath} to read them from.
        @param signature: the armored C{-----BEGIN SSH SIGNATURE-----} block.
        @return: a Deferred firing with a L{Signer} (C{identity}: the
            principal), or failing with L{SignatureRejected}.
        """
        if not signature:
            return defer.fail(SignatureRejected("ssh: not signed"))
        if not os.path.exists(self.allowedSigners.path):
            return defer.fail(SignatureRejected(
                "ssh: allowed signers file %s is missing" % (self.allowedSigners.path,)))
        return self._verify(data, signature)

    def _run(self, args, dataPath):
        return runWithInput(self._reactor, self._sshKeygen, args, dataPath)

    @defer.inlineCallbacks
    def _verify(self, data, signature):
        with signatureFiles(data, signature, self._tempDir) as (sigPath, dataPath):
            signer = yield self._check(sigPath, dataPath)
        defer.returnValue(signer)

    @defer.inlineCallbacks
    def _check(self, sigPath, dataPath):
        # 1. Which principals does the allowed-signers file give the key?
        out, findErr, code = yield self._run(
            ["-Y", "find-principals", "-f", self.allowedSigners.path, "-s", sigPath], "/dev/null")
        principals = _lines(out) if code == 0 else []
        if principals:
            # 2. The real check: principal, namespace, validity, revocation.
            args = ["-Y", "verify", "-f", self.allowedSigners.path, "-I", principals[0],
                    "-n", self.namespace, "-s", sigPath]
            if self.revokedKeys is not None:
                args += ["-r", self.revokedKeys]
            out, verifyErr, code = yield self._run(args, dataPath)
            good = [m for m in map(_GOOD.match, _lines(out)) if m]
            if code == 0 and len(good) == 1:
                defer.returnValue(Signer(system="ssh", fingerprint=good[0].group("fpr"),
                                         identity=good[0].group("principal") or principals[0]))
        # Refused: say why.  Is it a good signature over this data at all,
        # and by which key?
        out, err, code = yield self._run(
            ["-Y", "check-novalidate", "-n", self.namespace, "-s", sigPath], dataPath)
        good = [m for m in map(_GOOD.match, _lines(out)) if m]
        if code != 0 or len(good) != 1:
            raise SignatureRejected(_badReason(err, self.namespace))
        fingerprint = good[0].group("fpr")
        if not principals:
            prefix = self.allowedSigners.path + ":"
            why = [line[len(prefix):] for line in _lines(findErr) if line.startswith(prefix)]
            raise SignatureRejected(
                "ssh: signed by key %s, which no principal in %s allows%s"
                % (fingerprint, self.allowedSigners.path, " (%s)" % (why[0],) if why else ""))
        if self.revokedKeys is not None and not _lines(verifyErr):
            raise SignatureRejected("ssh: signed by revoked key %s (%s)"
                                    % (fingerprint, principals[0]))
        raise SignatureRejected("ssh: signature by key %s (%s) rejected: %s" % (
            fingerprint, principals[0],
            (_lines(verifyErr) or ["ssh-keygen exited %s" % (code,)])[-1]))


def _badReason(err, namespace):
    text = " ".join(_lines(err))
    if "incorrect signature" in text:
        return "ssh: bad signature: the signed data was changed"
    if "namespace" in text:
        return "ssh: the signature was not made for namespace %r" % (namespace,)
    if "parse" in text or "armor" in text:
        return "ssh: no SSH signature found"
    return "ssh: the signature could not be checked: %s" % (text or "no output",)
