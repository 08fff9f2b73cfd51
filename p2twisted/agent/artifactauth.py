# -*- test-case-name: tests.test_agent_artifactauth -*-
"""
Artifact verification: who built an artifact, and whether its installed tree
is exactly what was signed (reference/p2.md section 5).

The agent config's C{artifact_auth:} section::

    artifact_auth:
      type: either                    # none (default) | build | manifest | either
      keyring: /etc/p2/artifacts.gpg  # GPG public keys of the builders
      allowed_signers: /etc/p2/artifact_signers   # or OpenSSH signers (namespace p2-artifact)

C{build}: a detached signature of the artifact at C{<location>.sig} (C{gpg
--detach-sign}, or C{ssh-keygen -Y sign -n p2-artifact}, which writes
C{<file>.sig}).  C{manifest}: a small YAML file at C{<location>.manifest},
C{artifact_sha: <sha256 of the artifact>}, signed at
C{<location>.manifest.sig}.  C{either}: one of the two.

Digest files: a launchable with C{digest_signature_location} has, at
C{digest_location}, a listing of every file of its installed tree in
sha256sum format (C{<sha256> <mode><path>}, mode C{' '} or C{'*'}), and at
C{digest_signature_location} a signature of that listing.  After
extraction, the tree must match the listing exactly: a missing, extra or
changed file fails the install (the new install is removed; what runs
keeps running).  Under any C{type} but C{none} the listing's signature must
be good; under C{none} the tree is still checked against it.  (Without
C{digest_signature_location}, C{digest_location} keeps its meaning of a
sha256sum file giving the artifact's own digest.)

Refusals are L{ArtifactRejected} (a L{DigestMismatch}): C{after_auth_fail}
hooks run.  A signature that cannot be fetched for a reason that may pass
(timeout, HTTP 5xx) is a L{FetchError} to retry, not a refusal.
"""

import os
import re
import shutil
import stat

import attr
import yaml
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from p2twisted.agent.artifacts import sha256File
from p2twisted.auth.interfaces import SignatureRejected
from p2twisted.auth.section import signerFiles, typedSection
from p2twisted.errors import ArtifactError, ArtifactRejected, FetchError
from p2twisted.manifest import launchableVersion

NONE, BUILD, MANIFEST, EITHER = "none", "build", "manifest", "either"
TYPES = (NONE, BUILD, MANIFEST, EITHER)

#: The OpenSSH signature namespace of artifacts, their manifests and digest
#: files (a manifest's signature cannot pass for an artifact's).
ARTIFACT_NAMESPACE = "p2-artifact"

_SSH_ARMOR = b"-----BEGIN SSH SIGNATURE-----"
_TREE_LINE = re.compile(r"^([0-9a-fA-F]{64}) ([ *])(.+)$")

log = Logger()


@attr.s(frozen=True)
class ArtifactAuthSettings(object):
    """
    The C{artifact_auth:} section, paths made absolute.
    """
    type = attr.ib(default=NONE)
    keyring = attr.ib(default=None)
    allowedSigners = attr.ib(default=None)


def artifactAuthSettings(data, name="artifact_auth"):
    """
    @param data: the C{artifact_auth:} mapping (or just its type), or C{None}.
    @return: an L{ArtifactAuthSettings}.
    @raise UsageError: naming the bad setting.
    """
    data, kind = typedSection(data, name, ("type", "keyring", "allowed_signers"), TYPES)
    return ArtifactAuthSettings(kind, *signerFiles(data, name, kind))


def parseTreeDigest(text, source):
    """
    @param text: a sha256sum-format listing of a tree.
    @return: C{{relative path: sha256}}.
    @raise ArtifactRejected: a malformed line, an absolute path or one
        leading out of the tree, or a path listed twice.
    """
    entries = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _TREE_LINE.match(line)
        if not match:
            raise ArtifactRejected("digest file %s line %d is not '<sha256> <mode><path>': %r"
                                   % (source, number, line[:100]))
        path = os.path.normpath(match.group(3))
        if os.path.isabs(path) or path == ".." or path.startswith("../"):
            raise ArtifactRejected("digest file %s line %d: path %r is outside the tree"
                                   % (source, number, match.group(3)))
        if path in entries:
            raise ArtifactRejected("digest file %s lists %s twice" % (source, path))
        entries[path] = match.group(1).lower()
    return entries


def compareTree(root, entries):
    """
    Compare the files under C{root} (symlinks count as files; their target's
    content is hashed, if it is a regular file) with C{entries}.  Blocking.

    @return: C{(missing, extra, changed)}: sorted lists of relative paths.
    """
    found = set()
    changed = []
    for directory, dirnames, filenames in os.walk(root):
        links = [d for d in dirnames if os.path.islink(os.path.join(directory, d))]
        for name in sorted(filenames + links):
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            found.add(rel)
            if rel in entries:
                if _fileSHA(path) != entries[rel]:
                    changed.append(rel)
    return sorted(set(entries) - found), sorted(found - set(entries)), sorted(changed)


def _fileSHA(path):
    """
    @return: the SHA-256 of the regular file at C{path} (through symbolic
        links), or C{None} for anything else: a directory, a device or a
        FIFO is no file of the tree (and reading C{/dev/zero} or a FIFO
        would never end).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        return sha256File(path)
    except OSError:
        return None


def _listed(paths, limit=5):
    shown = ", ".join(paths[:limit])
    return shown + (" and %d more" % (len(paths) - limit,) if len(paths) > limit else "")


class ArtifactAuth(object):
    """
    Applies an L{ArtifactAuthSettings} to artifacts as they are installed.

    @param fetchSmall: C{location -> Deferred[bytes]}, e.g.
        L{ArtifactCache.fetchSmall<p2twisted.agent.artifacts.ArtifactCache.fetchSmall>}.
    @param gpg: the L{ISignatureVerifier} of the GPG keyring, or C{None}.
    @param ssh: the L{ISignatureVerifier} of the allowed signers, or C{None}.
    """

    def __init__(self, settings, fetchSmall, reactor, gpg=None, ssh=None):
        self.settings = settings
        self.type = settings.type
        self._fetchSmall = fetchSmall
        self._reactor = reactor
        self.gpg = gpg
        self.ssh = ssh

    @classmethod
    def fromSettings(cls, settings, artifacts, reactor):
        """
        @param artifacts: an L{ArtifactCache} (fetches signatures).
        @return: an L{ArtifactAuth} with the real verifiers C{settings} name.
        """
        gpg = ssh = None
        if settings.keyring:
            from p2twisted.auth.gpg import GPGVerifier
            gpg = GPGVerifier(settings.keyring, reactor=reactor)
        if settings.allowedSigners:
            from p2twisted.auth.ssh import SSHVerifier
            ssh = SSHVerifier(settings.allowedSigners, namespace=ARTIFACT_NAMESPACE,
                              reactor=reactor)
        if settings.type == NONE:
            log.info("artifact_auth is none: artifacts are installed without checking who "
                     "built them")
        return cls(settings, artifacts.fetchSmall, reactor, gpg, ssh)

    def close(self):
        """
        Release the verifiers' resources (the GPG verifier's GNUPGHOME).
        """
        if self.gpg is not None and hasattr(self.gpg, "close"):
            return self.gpg.close()
        return defer.succeed(None)

    @defer.inlineCallbacks
    def _fetch(self, location, what):
        try:
            data = yield self._fetchSmall(location)
        except FetchError as e:
            if getattr(e, "retryable", False):
                raise
            raise ArtifactRejected("no %s: %s" % (what, e))
        except ArtifactError as e:
            raise ArtifactRejected("bad %s: %s" % (what, e))
        return data

    @defer.inlineCallbacks
    def _verify(self, data, signature, what):
        """
        @return: the L{Signer} of C{signature} over C{data}.
        @raise ArtifactRejected: naming C{what} and why.
        """
        system = "ssh" if signature.lstrip().startswith(_SSH_ARMOR) else "gpg"
        verifier = {"gpg": self.gpg, "ssh": self.ssh}[system]
        if verifier is None:
            raise ArtifactRejected("%s is %s-signed, but artifact_auth has no %s" % (
                what, system, "keyring" if system == "gpg" else "allowed_signers file"))
        try:
            signer = yield verifier.verify(data, signature)
        except SignatureRejected as e:
            raise ArtifactRejected("%s refused: %s" % (what, e.reason))
        return signer

    def checkArtifact(self, location, path, sha):
        """
        Check who built the artifact fetched from C{location} into C{path}
        (SHA-256 C{sha}), as the settings' type asks.

        @return: L{Deferred} firing with the L{Signer} (C{None} under
            C{none}); failing with L{ArtifactRejected}, or L{FetchError} when
            a signature could not be fetched for a reason that may pass.
        """
        if self.type == NONE:
            return defer.succeed(None)
        if self.type == BUILD:
            return self._checkBuild(location, path)
        if self.type == MANIFEST:
            return self._checkManifest(location, sha)
        return self._checkEither(location, path, sha)

    @defer.inlineCallbacks
    def _checkBuild(self, location, path):
        signature = yield self._fetch(location + ".sig", "build signature %s.sig" % (location,))
        signer = yield self._verify(FilePath(path), signature,
                                    "the build signature of %s" % (location,))
        return signer

    @defer.inlineCallbacks
    def _checkManifest(self, location, sha):
        name = location + ".manifest"
        text = yield self._fetch(name, "artifact manifest %s" % (name,))
        signature = yield self._fetch(name + ".sig", "signature %s.sig" % (name,))
        signer = yield self._verify(text, signature, "artifact manifest %s" % (name,))
        try:
            listed = yaml.load(text, Loader=yaml.BaseLoader)["artifact_sha"]
        except Exception:
            raise ArtifactRejected("artifact manifest %s has no 'artifact_sha: <sha256>'" % (name,))
        if str(listed).strip().lower() != sha:
            raise ArtifactRejected("artifact manifest %s says artifact_sha %s, but %s has sha256 "
                                   "%s" % (name, listed, location, sha))
        return signer

    @defer.inlineCallbacks
    def _checkEither(self, location, path, sha):
        try:
            signer = yield self._checkBuild(location, path)
        except ArtifactRejected as build:
            try:
                signer = yield self._checkManifest(location, sha)
            except ArtifactRejected as manifest:
                raise ArtifactRejected("%s; and %s" % (build, manifest))
        return signer

    def _inThread(self, f, *args):
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    @defer.inlineCallbacks
    def checkTree(self, launchable, layout, launchableId, installDir):
        """
        Check an installed tree against its launchable's signed digest file;
        a refused install is removed, unless it is the one running.

        @return: L{Deferred} firing with C{None} (nothing to check, or it
            matches); failing with L{ArtifactRejected} naming the missing,
            extra and changed files, or the refused signature.
        """
        if not launchable.digestSignatureLocation:
            return
        try:
            yield self._checkTree(launchable, installDir)
        except ArtifactRejected:
            if os.path.realpath(installDir) != os.path.realpath(layout.current(launchableId)):
                yield self._inThread(shutil.rmtree, installDir, True)
            raise

    @defer.inlineCallbacks
    def _checkTree(self, launchable, installDir):
        source = launchable.digestLocation
        text = yield self._fetch(source, "digest file %s" % (source,))
        if self.type != NONE:
            signature = yield self._fetch(launchable.digestSignatureLocation, "signature %s"
                                          % (launchable.digestSignatureLocation,))
            yield self._verify(text, signature, "digest file %s" % (source,))
        entries = parseTreeDigest(text.decode("utf-8", "replace"), source)
        missing, extra, changed = yield self._inThread(compareTree, installDir, entries)
        problems = ["%s %s" % (what, _listed(paths)) for what, paths in
                    (("missing", missing), ("extra", extra), ("changed", changed)) if paths]
        if problems:
            raise ArtifactRejected("installed tree %s does not match digest file %s: %s"
                                   % (installDir, source, "; ".join(problems)))


@defer.inlineCallbacks
def fetchAndInstall(artifacts, installer, layout, launchableId, launchable):
    """
    Fetch a launchable's artifact, check who built it, install it and check
    the installed tree: what a pod's and a hook pod's deploys share.

    @param artifacts: an L{IArtifactFetcher}; its C{auth} attribute, if any,
        is the L{ArtifactAuth} applied (none: no checks).
    @return: L{Deferred} firing with the install directory (not activated);
        failing as L{ArtifactCache.fetch}, L{Installer.install} or
        L{ArtifactAuth} do.
    """
    auth = getattr(artifacts, "auth", None)
    signedTree = auth is not None and launchable.digestSignatureLocation
    path, sha = yield artifacts.fetch(
        launchable.location, launchable.digest,
        None if signedTree else launchable.digestLocation)
    if auth is not None:
        signer = yield auth.checkArtifact(launchable.location, path, sha)
        if signer is not None:
            log.info("artifact {url} built by {signer}", url=launchable.location,
                     signer=signer.identity, fingerprint=signer.fingerprint, sha=sha,
                     event="artifact-verified")
    installDir = yield installer.install(layout, launchableId, launchableVersion(launchable), path)
    if signedTree:
        yield auth.checkTree(launchable, layout, launchableId, installDir)
    return installDir
