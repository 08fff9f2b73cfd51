# -*- test-case-name: tests.test_cli_manifest -*-
"""
C{p2 manifest}: check, hash and normalize pod manifests, without a store.
"""

import sys

from p2twisted.errors import ManifestError, P2Error, UsageError

_FILE_HELP = "a pod manifest (YAML, may be signed: p2 sign); - reads standard input"


def register(subparsers):
    manifest = subparsers.add_parser(
        "manifest", help="check, hash and normalize pod manifests",
        description="Check, hash and normalize pod manifests. Nothing is read from or written "
                    "to the coordination store.",
        epilog="Exit codes: 0 valid, 1 invalid or unreadable, 2 usage error.")
    manifest.set_defaults(run=runMissing, offline=True)
    commands = manifest.add_subparsers(dest="manifest_command", metavar="COMMAND")

    check = commands.add_parser(
        "check", help="validate a manifest and print its id and SHA",
        description="Validate a manifest. If it is valid, print 'ok: ID SHA' (warnings about "
                    "unknown fields go to standard error) and exit 0; otherwise print every "
                    "problem on standard error, one a line, as 'FILE: field.path: problem', and "
                    "exit 1.")
    check.add_argument("file", metavar="FILE", help=_FILE_HELP)
    check.set_defaults(run=runCheck)

    sha = commands.add_parser(
        "sha", help="print a manifest's SHA-256",
        description="Print the SHA-256 of a valid manifest: the hash of its canonical form, "
                    "which comments, key order, quoting, defaults written out and a "
                    "signature (p2 sign) do not change.")
    sha.add_argument("file", metavar="FILE", help=_FILE_HELP)
    sha.set_defaults(run=runSHA)

    normalize = commands.add_parser(
        "normalize", help="print a manifest in canonical form",
        description="Print a valid manifest in canonical form: YAML with sorted keys, every "
                    "default written out, durations in seconds and memory in bytes. It has "
                    "the same SHA as the original.")
    normalize.add_argument("file", metavar="FILE", help=_FILE_HELP)
    normalize.set_defaults(run=runNormalize)


def runMissing(options):
    raise UsageError("'p2 manifest' needs a command: check, sha or normalize "
                     "(see 'p2 manifest --help')")


def _displayName(path):
    return "<stdin>" if path == "-" else path


def readManifest(path):
    """
    @param path: a file name, or C{-} for standard input.
    @return: the parsed L{PodManifest}.
    @raise P2Error: if the file cannot be read.
    @raise ManifestError: if it is not a valid manifest.
    """
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as e:
        raise P2Error("cannot read %s: %s" % (_displayName(path), e.strerror or e))
    # Imported here: the verbs importing this module for another reason
    # (p2 status, through p2twisted.cli.schedule) need no manifest parser.
    from p2twisted.manifest import parseManifest
    return parseManifest(data, source=_displayName(path))


def runCheck(options):
    name = _displayName(options.file)
    try:
        manifest = readManifest(options.file)
    except ManifestError as e:
        for problem in e.problems:
            options.err.write("%s: %s\n" % (name, problem))
        return 1
    for warning in manifest.warnings:
        options.err.write("warning: %s: %s\n" % (name, warning))
    options.out.write("ok: %s %s\n" % (manifest.id, manifest.sha()))
    return 0


def runSHA(options):
    options.out.write(readManifest(options.file).sha() + "\n")
    return 0


def runNormalize(options):
    options.out.write(readManifest(options.file).canonicalYAML().decode("utf-8"))
    return 0
