"""
Real signing keys for tests: GPG keys in a temporary GNUPGHOME and OpenSSH
keys, made with the real C{gpg} and C{ssh-keygen} (missing tools skip the
test, or fail it under C{P2_REQUIRE_REAL_SERVERS=1}).

    keys = GPGKeys(self)                  # cleaned up (gpg-agent killed) with the test
    alice = keys.newKey("Alice <alice@example.com>")
    keys.exportKeyring("keyring.gpg", [alice])
    signed = keys.clearSign(alice, manifestBytes)

    ssh = SSHKeys(self)
    bob = ssh.newKey("bob@example.com")
    ssh.allowedSigners("allowed_signers", [bob])
    signed = ssh.sign(bob, manifestBytes)     # manifest + armored SSH SIGNATURE
"""

import os
import shutil
import subprocess
import tempfile

from tests.servers import requireServer

GPG_BATCH = ["--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]


def rejection(testCase, d):
    """
    @param d: a verifier's Deferred.
    @return: a Deferred firing with the reason it failed with
        L{SignatureRejected} (failing C{testCase} if it succeeded).
    """
    from p2twisted.auth.interfaces import SignatureRejected
    return d.addCallbacks(lambda signer: testCase.fail("accepted: %r" % (signer,)),
                          lambda f: f.trap(SignatureRejected) and str(f.value))


def _require(tool, package):
    if shutil.which(tool) is None:
        requireServer(tool, "no %s on PATH" % (tool,), "apt-get install %s" % (package,))


class GPGKeys(object):
    """
    A GNUPGHOME of secret keys for one test, removed (and its gpg-agent
    killed) when the test ends.
    """

    def __init__(self, testCase):
        _require("gpg", "gnupg")
        self.home = tempfile.mkdtemp(prefix="p2-test-gpg-")
        testCase.addCleanup(self.destroy)

    def gpg(self, *args, **kwargs):
        """
        Run gpg on this home; return its stdout, bytes.
        """
        env = dict(os.environ, GNUPGHOME=self.home, LC_ALL="C")
        return subprocess.run(
            ["gpg", "--homedir", self.home] + GPG_BATCH + list(args), env=env, check=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs).stdout

    def newKey(self, uid, expire="1y", at=None):
        """
        Make an ed25519 signing key.

        @param expire: its expiry (C{"1y"}, C{"never"}, C{"seconds=N"}).
        @param at: make it as if the time were C{at} (C{"20200101T000000"}),
            e.g. for a key that has expired since.
        @return: its fingerprint, upper-case hex.
        """
        before = self.fingerprints()
        self.gpg(*(self._at(at) + ["--quick-gen-key", uid, "ed25519", "sign", expire]))
        (fingerprint,) = self.fingerprints() - before
        return fingerprint

    def _at(self, at):
        return ["--faked-system-time", at + "!", "--ignore-time-conflict"] if at else []

    def fingerprints(self):
        out = self.gpg("--with-colons", "--fingerprint", "--list-secret-keys")
        fprs, primary = set(), False
        for line in out.decode().splitlines():
            fields = line.split(":")
            if fields[0] in ("sec", "ssb"):
                primary = fields[0] == "sec"
            elif fields[0] == "fpr" and primary:
                fprs.add(fields[9])
                primary = False
        return fprs

    def revoke(self, fingerprint):
        """
        Import the revocation certificate gpg made with the key.
        """
        path = os.path.join(self.home, "openpgp-revocs.d", fingerprint + ".rev")
        with open(path, "rb") as f:
            text = f.read().replace(b":-----BEGIN", b"-----BEGIN")
        self.gpg("--import", input=text)

    def exportKeyring(self, path, fingerprints, armor=False):
        """
        Write the public keys C{fingerprints} to C{path}, a keyring file.
        """
        data = self.gpg(*((["--armor"] if armor else []) + ["--export"] + list(fingerprints)))
        with open(path, "wb") as f:
            f.write(data)
        return path

    def clearSign(self, fingerprint, data, at=None):
        """
        @return: C{data} clear-signed by the key C{fingerprint}.
        """
        return self.gpg(*(self._at(at) + ["--local-user", fingerprint + "!", "--clearsign"]),
                        input=data)

    def detachSign(self, fingerprint, data, armor=True):
        """
        @return: a detached signature over C{data} by C{fingerprint}.
        """
        return self.gpg("--local-user", fingerprint + "!", "--detach-sign",
                        *(["--armor"] if armor else []), input=data)

    def destroy(self):
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.home, ignore_errors=True)


class SSHKey(object):
    """
    An ed25519 key pair made by ssh-keygen.

    @ivar path: the private key file (the public key is C{path + ".pub"}).
    @ivar principal: its identity in an allowed-signers file.
    @ivar fingerprint: C{"SHA256:..."}.
    """

    def __init__(self, path, principal, fingerprint):
        self.path = path
        self.principal = principal
        self.fingerprint = fingerprint

    def publicKey(self):
        with open(self.path + ".pub") as f:
            return f.read().strip()


class SSHKeys(object):
    """
    OpenSSH keys for one test, in a temporary directory.
    """

    def __init__(self, testCase):
        _require("ssh-keygen", "openssh-client")
        self.dir = tempfile.mkdtemp(prefix="p2-test-ssh-")
        testCase.addCleanup(shutil.rmtree, self.dir, True)
        self._count = 0

    def newKey(self, principal):
        self._count += 1
        path = os.path.join(self.dir, "key%d" % (self._count,))
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", principal,
                        "-f", path], check=True, stdout=subprocess.PIPE)
        out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", path + ".pub"],
                             check=True, stdout=subprocess.PIPE).stdout.decode()
        return SSHKey(path, principal, out.split()[1])

    def allowedSigners(self, path, keys, options=""):
        """
        Write an allowed-signers file naming C{keys} (each as its principal,
        with C{options} such as C{'valid-before="20200101"'}).
        """
        with open(path, "w") as f:
            for key in keys:
                f.write("%s %s%s\n" % (key.principal, options + " " if options else "",
                                       key.publicKey()))
        return path

    def sign(self, key, data, namespace="p2-manifest"):
        """
        @return: C{data} followed by an armored SSH signature over it (the
            signed manifest format); C{data} must end with a newline.
        """
        return data + self.signature(key, data, namespace)

    def signature(self, key, data, namespace="p2-manifest"):
        """
        @return: the armored SSH signature over C{data}.
        """
        return subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", key.path, "-n", namespace],
                              input=data, check=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE).stdout
