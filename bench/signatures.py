"""
Signature verification benchmark (not a test): how long the agent's
verifiers take to check one signed manifest, beside the floor of running the
same tool by hand in the same run: C{gpg --verify} on a prepared GNUPGHOME
for L{GPGVerifier}, one C{ssh-keygen -Y verify} for L{SSHVerifier} (which
runs two: C{find-principals}, since C{verify} needs the principal, then
C{verify}; a refusal runs C{check-novalidate} too, to say why).

    .venv/bin/python bench/signatures.py [--runs N]

Keys are made in a temporary directory (ed25519), removed at the end.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from p2twisted.auth.gpg import GPGVerifier  # noqa: E402
from p2twisted.auth.ssh import SSHVerifier  # noqa: E402
from p2twisted.manifest import parseManifest  # noqa: E402

MANIFEST = (b"id: web\nlaunchables:\n  web: {launchable_type: hoist, location: /a.tar.gz}\n"
            b"config: {a: 1}\n")


def run(argv, data=None, env=None):
    return subprocess.run(argv, input=data, env=env, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE).stdout


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


@defer.inlineCallbacks
def timed(runs, f):
    """
    @return: the median seconds of C{runs} calls of C{f} (a Deferred or not).
    """
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        yield defer.maybeDeferred(f)
        samples.append(time.perf_counter() - started)
    return median(samples)


@defer.inlineCallbacks
def main(reactor, runs):
    work = tempfile.mkdtemp(prefix="p2-bench-sig-")
    home = os.path.join(work, "gnupg")
    os.mkdir(home, 0o700)
    env = dict(os.environ, GNUPGHOME=home, LC_ALL="C")
    gpg = ["gpg", "--batch", "--no-tty", "--homedir", home]
    try:
        run(gpg + ["--passphrase", "", "--quick-gen-key", "Bench <b@x>", "ed25519", "sign",
                   "1y"], env=env)
        signed = parseManifest(run(gpg + ["--clearsign"], MANIFEST, env))
        keyring = os.path.join(work, "keyring.gpg")
        with open(keyring, "wb") as f:
            f.write(run(gpg + ["--export"], env=env))
        body, sig = os.path.join(work, "body"), os.path.join(work, "sig")
        with open(body, "wb") as f:
            f.write(signed.signedBody)
        with open(sig, "wb") as f:
            f.write(signed.signature)
        verifier = GPGVerifier(keyring, reactor=reactor)
        yield verifier.verify(signed.signedBody, signed.signature)  # imports the keyring
        ours = yield timed(runs, lambda: verifier.verify(signed.signedBody, signed.signature))
        floor = yield timed(runs, lambda: run(gpg + ["--no-autostart", "--verify", sig, body],
                                              env=env))
        yield verifier.close()
        print("gpg  verify: %6.1f ms   (floor: gpg --verify by hand %6.1f ms; %.2fx)"
              % (ours * 1000, floor * 1000, ours / floor))

        key = os.path.join(work, "id")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "b@x", "-f", key])
        with open(key + ".pub") as f:
            public = f.read().strip()
        allowed = os.path.join(work, "allowed")
        with open(allowed, "w") as f:
            f.write("b@x %s\n" % (public,))
        sshSigned = parseManifest(MANIFEST + run(
            ["ssh-keygen", "-q", "-Y", "sign", "-f", key, "-n", "p2-manifest"], MANIFEST))
        with open(sig, "wb") as f:
            f.write(sshSigned.signature)
        verifier = SSHVerifier(allowed, reactor=reactor)
        ours = yield timed(runs, lambda: verifier.verify(sshSigned.signedBody,
                                                         sshSigned.signature))
        floor = yield timed(runs, lambda: run(
            ["ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "b@x", "-n", "p2-manifest",
             "-s", sig], MANIFEST))
        print("ssh  verify: %6.1f ms   (floor: ssh-keygen -Y verify by hand %6.1f ms; %.2fx)"
              % (ours * 1000, floor * 1000, ours / floor))
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    task.react(main, [args.runs])
