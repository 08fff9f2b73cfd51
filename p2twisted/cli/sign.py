# -*- test-case-name: tests.test_cli_sign -*-
"""
C{p2 sign} and C{p2 verify}: sign a pod manifest (GPG clear-signature or
OpenSSH signature) without changing its SHA, and say who signed one.
"""

import os
import subprocess
import tempfile

from p2twisted.errors import ManifestError, P2Error, UsageError

_SSH_HELP = ("sign with this OpenSSH private key instead of GPG (ssh-keygen -Y sign, namespace "
             "p2-manifest)")


def register(subparsers):
    sign = subparsers.add_parser(
        "sign", help="sign a pod manifest (GPG or SSH); its SHA stays the same",
        description="Sign a pod manifest: a GPG clear-signature made by your gpg (its default "
                    "key, or --key), or with --ssh-key the manifest followed by an OpenSSH "
                    "signature block. The manifest's SHA does not change. An already signed "
                    "manifest is signed afresh (its old signature is dropped). Nothing is "
                    "read from or written to the coordination store.")
    sign.add_argument("file", metavar="MANIFEST", help="the pod manifest; - reads standard input")
    sign.add_argument("--key", metavar="ID", help="the GPG key to sign with (gpg --local-user)")
    sign.add_argument("--ssh-key", metavar="FILE", help=_SSH_HELP)
    sign.add_argument("-o", "--output", metavar="OUT",
                      help="write the signed manifest to OUT (else standard output)")
    sign.set_defaults(run=runSign, offline=True)

    verify = subparsers.add_parser(
        "verify", help="say who signed a pod manifest",
        description="Check a signed manifest's signature and print who signed it: its "
                    "signature system, the key's fingerprint and identity (GPG user id or SSH "
                    "principal), and the manifest's id and SHA. Exit 0 when the signature is "
                    "good, 1 when it is missing or refused (the reason on one line).")
    verify.add_argument("file", metavar="MANIFEST", help="the pod manifest; - reads standard input")
    verify.add_argument("--keyring", metavar="FILE",
                        help="GPG keyring of the allowed keys (else your gpg's public keys)")
    verify.add_argument("--allowed-signers", metavar="FILE",
                        help="OpenSSH allowed-signers file (needed for SSH signatures)")
    verify.add_argument("--agent-config", metavar="FILE",
                        help="say whether the auth policy of this agent config accepts it (its "
                             "keyring, allowed signers and deploy policy); exit 1 if refused")
    verify.add_argument("--agent-user", metavar="USER",
                        help="with --agent-config: the user that agent runs as, if not root; it "
                             "runs every pod as that user, whatever run_as says, so the "
                             "manifest is judged as that user (default: root, judged as its "
                             "run_as)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(run=runVerify)


def _read(path):
    import sys
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise P2Error("cannot read %s: %s" % ("<stdin>" if path == "-" else path,
                                              e.strerror or e))


def _tool(argv, data, what):
    """
    Run a signing tool with C{data} on its standard input.

    @return: its standard output, bytes.
    @raise P2Error: it is missing or fails (its last line of errors).
    """
    try:
        done = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise P2Error("cannot run %s: %s" % (argv[0], e.strerror or e))
    if done.returncode != 0:
        lines = [line for line in done.stderr.decode("utf-8", "replace").splitlines()
                 if line.strip()]
        raise P2Error("%s failed: %s" % (what, lines[-1].strip() if lines else
                                         "exit status %d" % (done.returncode,)))
    return done.stdout


def signManifest(data, key=None, sshKey=None, source=None):
    """
    Sign manifest bytes.

    @return: C{(signed bytes, parsed signed manifest)}.
    @raise ManifestError: C{data} is no valid manifest.
    @raise P2Error: signing failed, or changed the SHA.
    """
    from p2twisted.auth.ssh import MANIFEST_NAMESPACE
    from p2twisted.manifest import parseManifest
    from p2twisted.manifest.signed import unwrapSigned
    before = parseManifest(data, source)
    body = unwrapSigned(data, source).body
    if not body.endswith(b"\n"):
        body += b"\n"
    if sshKey is not None:
        signed = body + _tool(["ssh-keygen", "-q", "-Y", "sign", "-f", sshKey,
                               "-n", MANIFEST_NAMESPACE], body, "ssh-keygen -Y sign")
    else:
        signed = _tool(["gpg", "--clearsign"] + (["--local-user", key] if key else []),
                       body, "gpg --clearsign")
    after = parseManifest(signed, source)
    if after.sha() != before.sha():
        raise P2Error("signing changed the manifest's SHA from %s to %s; nothing written"
                      % (before.sha(), after.sha()))
    return signed, after


def _writeAtomically(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".p2-sign-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def runSign(options):
    if options.key and options.ssh_key:
        raise UsageError("give --key (GPG) or --ssh-key (SSH), not both")
    source = "<stdin>" if options.file == "-" else options.file
    try:
        signed, manifest = signManifest(_read(options.file), options.key, options.ssh_key, source)
    except ManifestError as e:
        for problem in e.problems:
            options.err.write("%s: %s\n" % (source, problem))
        return 1
    if options.output:
        try:
            _writeAtomically(options.output, signed)
        except OSError as e:
            raise P2Error("cannot write %s: %s" % (options.output, e.strerror or e))
        options.err.write("signed (%s): %s %s -> %s\n" % (
            manifest.signatureSystem, manifest.id, manifest.sha(), options.output))
    else:
        options.out.flush()
        options.out.buffer.write(signed)
    return 0


def _userKeyring(directory):
    """
    Export the user's gpg public keys to a keyring file in C{directory}.
    """
    path = os.path.join(directory, "keyring.gpg")
    with open(path, "wb") as f:
        f.write(_tool(["gpg", "--batch", "--export"], b"", "gpg --export"))
    return path


def runVerify(options):
    from twisted.internet import defer

    from p2twisted.auth.gpg import GPGVerifier
    from p2twisted.auth.interfaces import SignatureRejected
    from p2twisted.auth.ssh import SSHVerifier
    from p2twisted.auth.verifiers import verifyManifest
    from p2twisted.manifest import parseManifest
    if getattr(options, "agent_user", None) and not getattr(options, "agent_config", None):
        raise UsageError("--agent-user needs --agent-config")
    source = "<stdin>" if options.file == "-" else options.file
    manifest = parseManifest(_read(options.file), source)
    if getattr(options, "agent_config", None):
        from p2twisted.cli.authcheck import runPolicyCheck
        return runPolicyCheck(options, manifest)
    if manifest.signatureSystem == "ssh" and not options.allowed_signers:
        raise UsageError("%s is SSH-signed: give --allowed-signers FILE" % (source,))

    def report(result):
        value = {"id": manifest.id, "sha": manifest.sha(),
                 "system": manifest.signatureSystem, "good": result is not None}
        if isinstance(result, SignatureRejected):
            value.update(good=False, reason=str(result))
        else:
            value.update(signer={"fingerprint": result.fingerprint, "identity": result.identity})
        if options.json:
            from p2twisted.cli.main import writeJSON
            writeJSON(options.out, value)
        elif value["good"]:
            options.out.write("good %s signature by %s (%s)\n%s %s\n" % (
                manifest.signatureSystem, result.identity, result.fingerprint,
                manifest.id, manifest.sha()))
        else:
            options.err.write("p2: %s: %s\n" % (source, value["reason"]))
        return 0 if value["good"] else 1

    @defer.inlineCallbacks
    def check():
        gpg = ssh = None
        work = tempfile.mkdtemp(prefix="p2-verify-")
        try:
            if manifest.signatureSystem == "gpg":
                gpg = GPGVerifier(options.keyring or _userKeyring(work), tempDir=work)
            elif manifest.signatureSystem == "ssh":
                ssh = SSHVerifier(options.allowed_signers, tempDir=work)
            try:
                signer = yield verifyManifest(manifest, gpg=gpg, ssh=ssh)
            except SignatureRejected as e:
                return report(e)
            return report(signer)
        finally:
            if gpg is not None:
                yield gpg.close()
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    return check()
