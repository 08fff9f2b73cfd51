# -*- test-case-name: tests.test_auth_gpg -*-
"""
L{GPGVerifier}: OpenPGP signatures checked by the real C{gpg} binary.

The verifier keeps a GNUPGHOME of its own (a temporary directory) holding
exactly the public keys of the configured keyring file, and rebuilds it when
that file's contents change (key rotation without a restart).  C{gpg --verify} runs
with C{--status-fd}; its machine-readable status lines are parsed strictly:
a signature is good only when there is exactly one, C{gpg} exits 0, reports
C{VALIDSIG} and the signing key's primary fingerprint is one of the
keyring's, and nothing reports it bad, expired or revoked.
"""

import hashlib
import os
import shutil
import tempfile

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import implementer

from p2twisted.auth.files import signatureFiles
from p2twisted.auth.interfaces import ISignatureVerifier, Signer, SignatureRejected

GPG = "gpg"
GPGCONF = "gpgconf"

_STATUS = b"[GNUPG:] "

#: ERRSIG return codes (gpg's doc/DETAILS) and what they mean to a user.
_ERRSIG_REASONS = {
    "4": "uses an unsupported algorithm",
    "9": "was made by a key not in the keyring",
}


def _commonArgs(home):
    return ["--batch", "--no-tty", "--no-options", "--homedir", home,
            "--no-autostart", "--no-auto-key-retrieve", "--no-auto-key-locate",
            "--trust-model", "always"]


def _environ(home):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
           "GNUPGHOME": home}
    return env


def parseStatus(output):
    """
    @param output: C{gpg --status-fd} output, bytes.
    @return: C{[(keyword, [argument, ...])]} in order, text.
    """
    lines = []
    for line in output.splitlines():
        if line.startswith(_STATUS):
            words = line[len(_STATUS):].decode("utf-8", "replace").split(" ")
            lines.append((words[0], words[1:]))
    return lines


def judge(status, exitCode, fingerprints):
    """
    Decide what a C{gpg --verify} run says, strictly.

    @param status: L{parseStatus} output.
    @param exitCode: gpg's exit status.
    @param fingerprints: the keyring's primary fingerprints, upper-case hex.
    @return: a L{Signer}.
    @raise SignatureRejected: naming why the signature is not good.
    """
    keywords = [keyword for keyword, _ in status]
    found = dict((keyword, args) for keyword, args in reversed(status))

    def who(args):
        keyId = args[0] if args else "?"
        uid = " ".join(args[1:])
        return "key %s%s" % (keyId, " (%s)" % (uid,) if uid else "")
    if keywords.count("NEWSIG") > 1:
        raise SignatureRejected("gpg: %d signatures where exactly one is expected"
                                % (keywords.count("NEWSIG"),))
    if "NEWSIG" not in keywords or "NODATA" in keywords:
        raise SignatureRejected("gpg: no OpenPGP signature found")
    if "BADSIG" in found:
        raise SignatureRejected("gpg: bad signature by %s: the signed data was changed"
                                % (who(found["BADSIG"]),))
    if "REVKEYSIG" in found:
        raise SignatureRejected("gpg: signed by revoked %s" % (who(found["REVKEYSIG"]),))
    if "EXPKEYSIG" in found:
        raise SignatureRejected("gpg: signed by expired %s" % (who(found["EXPKEYSIG"]),))
    if "EXPSIG" in found:
        raise SignatureRejected("gpg: the signature by %s has expired" % (who(found["EXPSIG"]),))
    if "ERRSIG" in found:
        args = found["ERRSIG"]
        code = args[5] if len(args) > 5 else "?"
        keyName = args[6] if len(args) > 6 and args[6] != "-" else args[0] if args else "?"
        raise SignatureRejected("gpg: the signature %s (key %s)" % (
            _ERRSIG_REASONS.get(code, "could not be checked (error %s)" % (code,)), keyName))
    if "VALIDSIG" not in found or "GOODSIG" not in found or exitCode != 0:
        raise SignatureRejected("gpg: no valid signature (gpg exited %s)" % (exitCode,))
    valid = found["VALIDSIG"]
    primary = (valid[9] if len(valid) > 9 else valid[0]).upper()
    if primary not in fingerprints:
        raise SignatureRejected("gpg: signed by key %s, which is not in the keyring" % (primary,))
    return Signer(system="gpg", fingerprint=primary, identity=" ".join(found["GOODSIG"][1:]))


def keyringFingerprints(colons):
    """
    @param colons: C{gpg --with-colons --list-keys --fingerprint} output.
    @return: the set of primary-key fingerprints listed, upper-case hex.
    """
    fingerprints, primary = set(), False
    for line in colons.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub"):
            primary = fields[0] == "pub"
        elif fields[0] == "fpr" and primary and len(fields) > 9:
            fingerprints.add(fields[9].upper())
            primary = False
    return fingerprints


@implementer(ISignatureVerifier)
class GPGVerifier(object):
    """
    Checks OpenPGP signatures against the public keys in one keyring file.

    @ivar keyring: the keyring file (binary or armored exported public keys).
    """

    system = "gpg"
    _log = Logger()

    def __init__(self, keyring, reactor=None, gpg=GPG, tempDir=None):
        """
        @param keyring: path of the keyring file, text or a L{FilePath}.
        @param reactor: runs C{gpg}; the global reactor by default.
        @param tempDir: where its private GNUPGHOME is made; the system's
            temporary directory by default.
        """
        if reactor is None:
            from twisted.internet import reactor
        self.keyring = keyring if isinstance(keyring, FilePath) else FilePath(keyring)
        self._reactor = reactor
        self._gpg = gpg
        self._tempDir = tempDir
        self._lock = defer.DeferredLock()
        self._home = None
        self._stamp = None
        self._fingerprints = frozenset()
        self._problem = None

    def _run(self, home, args):
        """
        @return: L{Deferred} firing with C{(out, err, exit code)}; failing
            with L{SignatureRejected} when gpg is killed by a signal.
        """
        def killed(f):
            # getProcessOutputAndValue fails with a bare (out, err, signal)
            # tuple, which would reach users as that tuple.
            if isinstance(f.value, tuple) and len(f.value) == 3:
                raise SignatureRejected("gpg: gpg was killed by signal %s" % (f.value[2],))
            return f
        return getProcessOutputAndValue(
            self._gpg, _commonArgs(home) + args, env=_environ(home), reactor=self._reactor
        ).addErrback(killed)

    def _keyringStamp(self):
        """
        @return: the SHA-256 of the keyring file's contents (a rewrite within
            one mtime tick still counts), or C{None} when it is missing.
        """
        try:
            with open(self.keyring.path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return None

    @defer.inlineCallbacks
    def _refresh(self):
        """
        Make the private GNUPGHOME match the keyring file, if it changed.
        """
        stamp = self._keyringStamp()
        if self._home is not None and stamp == self._stamp:
            return
        home = tempfile.mkdtemp(prefix="p2-gpg-", dir=self._tempDir)
        problem, fingerprints = None, frozenset()
        if stamp is None:
            problem = "gpg: keyring %s is missing" % (self.keyring.path,)
        else:
            # gpg exits 2 after a good import when it cannot reach an agent
            # (--no-autostart): the keys it then lists are what counts.
            try:
                _, err, _ = yield self._run(home, ["--import", self.keyring.path])
                out, _, _ = yield self._run(
                    home, ["--with-colons", "--fingerprint", "--list-keys"])
            except Exception:
                shutil.rmtree(home, ignore_errors=True)
                raise
            fingerprints = frozenset(keyringFingerprints(out))
            if not fingerprints:
                problem = "gpg: keyring %s holds no keys (%s)" % (self.keyring.path, _lastLine(err))
        old, self._home, self._stamp = self._home, home, stamp
        self._fingerprints, self._problem = fingerprints, problem
        self._log.info("gpg keyring {keyring} loaded: {count} keys",
                       keyring=self.keyring.path, count=len(fingerprints))
        if old is not None:
            yield self._removeHome(old)

    @property
    def fingerprints(self):
        """
        The keyring's primary fingerprints as last loaded (upper-case hex).
        """
        return self._fingerprints

    def verify(self, data, signature):
        """
        Check a detached or clear-text signature over C{data}.

        @param data: the signed bytes (for a clear-signed text, its
            L{PodManifest.signedBody}), or a L{FilePath} to read them from.
        @param signature: the armored or binary OpenPGP signature, bytes.
        @return: a Deferred firing with a L{Signer}, or failing with
            L{SignatureRejected}.
        """
        if not signature:
            return defer.fail(SignatureRejected("gpg: not signed"))
        return self._lock.run(self._verify, data, signature)

    @defer.inlineCallbacks
    def _verify(self, data, signature):
        yield self._refresh()
        if self._problem:
            raise SignatureRejected(self._problem)
        with signatureFiles(data, signature, self._home) as (sigPath, dataPath):
            out, err, code = yield self._run(
                self._home, ["--status-fd", "1", "--verify", sigPath, dataPath])
        signer = judge(parseStatus(out), code, self._fingerprints)
        defer.returnValue(signer)

    @defer.inlineCallbacks
    def _removeHome(self, home):
        yield getProcessOutputAndValue(GPGCONF, ["--homedir", home, "--kill", "all"],
                                       env=_environ(home), reactor=self._reactor)
        shutil.rmtree(home, ignore_errors=True)

    def close(self):
        """
        Stop any gpg-agent started for the private GNUPGHOME and remove it.

        @return: a Deferred firing with C{None} when done.
        """
        def close():
            home, self._home, self._stamp = self._home, None, None
            if home is not None:
                return self._removeHome(home)
        return self._lock.run(close)


def _lastLine(err):
    lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
