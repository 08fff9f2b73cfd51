# -*- test-case-name: tests.test_manifest -*-
"""
The parsed pod manifest: L{PodManifest} and its parts, their canonical form
and its SHA-256, and L{launchableVersion}.
"""

import hashlib
import json
import posixpath
import re
from urllib.parse import urlsplit

import attr
import yaml

DEFAULT_ENTRY_POINTS = ("bin/launch",)
DEFAULT_RESTART_POLICY = "always"
DEFAULT_RESTART_TIMEOUT = 60.0
DEFAULT_STATUS_PATH = "/_status"
DEFAULT_TERMINATION_GRACE_PERIOD = 3600
RESTART_POLICIES = ("always", "never")
SUPPORTED_LAUNCHABLE_TYPES = ("hoist",)

_ARTIFACT_FILE = re.compile(r".+_([^_]+)\.tar\.gz")
_ARTIFACT_VERSION = re.compile(r"[A-Za-z0-9.]+")


@attr.s(frozen=True)
class Status(object):
    """
    How the agent checks a pod's health.

    @ivar port: the status endpoint's TCP port, or C{None} for no check.
    @ivar http: C{True} for plain HTTP, C{False} for HTTPS.
    @ivar path: the URL path checked.
    @ivar localhostOnly: C{True} if the endpoint listens on localhost only.
    """

    port = attr.ib(default=None)
    http = attr.ib(default=False)
    path = attr.ib(default=DEFAULT_STATUS_PATH)
    localhostOnly = attr.ib(default=False)

    def canonical(self):
        stanza = {"http": self.http, "path": self.path, "localhost_only": self.localhostOnly}
        if self.port is not None:
            stanza["port"] = self.port
        return stanza


@attr.s(frozen=True)
class Version(object):
    """
    A launchable named by version, to be resolved by an artifact registry.

    @ivar artifactName: the artifact's name in the registry; the launchable
        id when the manifest gives none (P2's C{ArtifactOverride}).
    @ivar tags: a C{dict} of text to text.
    """

    id = attr.ib()
    artifactName = attr.ib()
    tags = attr.ib()

    def canonical(self):
        return {"id": self.id, "artifact_name": self.artifactName, "tags": self.tags}


@attr.s(frozen=True)
class Launchable(object):
    """
    One launchable of a pod.

    @ivar launchableType: C{"hoist"}.
    @ivar location: the artifact's URL, or C{None} when named by C{version}.
    @ivar version: a L{Version}, or C{None} when named by C{location}.
    @ivar digest: the artifact's SHA-256 in lower-case hex, or C{None}.
    @ivar digestLocation: URL of a sha256sum file, or C{None}.
    @ivar digestSignatureLocation: URL of its detached signature, or C{None}.
    @ivar entryPoints: a C{tuple} of normalized relative paths.
    @ivar restartPolicy: C{"always"} or C{"never"}.
    @ivar restartTimeout: seconds, a C{float}.
    @ivar env: a C{dict} of variable names to text.
    @ivar cgroup: C{None}, or a C{dict} with C{"cpus"} (a C{float}) and/or
        C{"memory"} (bytes, an C{int}).
    @ivar noHaltOnUpdate: C{True} to keep it running while its pod updates.
    """

    id = attr.ib()
    launchableType = attr.ib()
    location = attr.ib()
    version = attr.ib()
    digest = attr.ib()
    digestLocation = attr.ib()
    digestSignatureLocation = attr.ib()
    entryPoints = attr.ib()
    restartPolicy = attr.ib()
    restartTimeout = attr.ib()
    env = attr.ib()
    cgroup = attr.ib()
    noHaltOnUpdate = attr.ib()

    def canonical(self):
        """
        @return: the stanza with defaults filled in and absent optional
            fields left out.
        """
        stanza = {
            "launchable_type": self.launchableType,
            "entry_points": list(self.entryPoints),
            "restart_policy": self.restartPolicy,
            "restart_timeout": self.restartTimeout,
            "env": self.env,
            "no_halt_on_update": self.noHaltOnUpdate,
        }
        optional = {
            "location": self.location,
            "version": self.version.canonical() if self.version else None,
            "digest": self.digest,
            "digest_location": self.digestLocation,
            "digest_signature_location": self.digestSignatureLocation,
            "cgroup": self.cgroup,
        }
        stanza.update((name, value) for name, value in optional.items() if value is not None)
        return stanza


@attr.s(frozen=True)
class PodManifest(object):
    """
    A valid pod manifest.

    @ivar runAs: the Unix user the pod runs as.
    @ivar runAsGiven: whether the manifest names C{run_as} (else it is the pod
        id); not part of the canonical form.
    @ivar launchables: a C{dict} of id to L{Launchable}, in manifest order.
    @ivar config: the C{config} map, plain data: text keys; text, numbers,
        booleans, nulls, lists and maps.
    @ivar status: a L{Status}.
    @ivar resourceLimits: a C{dict} of limit kind to limits; the only kind is
        C{"cgroup"}, shaped like L{Launchable.cgroup}.
    @ivar terminationGracePeriod: seconds the pod is given to stop.
    @ivar labels: a C{dict} of text to text.
    @ivar warnings: a C{tuple} of C{"field.path: unknown field; ignored"}.
    @ivar raw: the original bytes.
    @ivar signature: the armored signature of a signed manifest, bytes, or
        C{None}.
    @ivar signedBody: the bytes that signature covers, or C{None}: for PGP
        the clear-signed text (dash-escaping undone, without trailing blanks
        on each line and without the line ending before the signature: RFC
        4880 section 7.1); for SSH the bytes before the signature block.
    @ivar signatureSystem: C{"gpg"} (PGP clear-signed), C{"ssh"} (followed
        by an SSH signature block) or C{None} (unsigned).
    """

    id = attr.ib()
    runAs = attr.ib()
    launchables = attr.ib()
    config = attr.ib()
    status = attr.ib()
    resourceLimits = attr.ib()
    terminationGracePeriod = attr.ib()
    labels = attr.ib()
    warnings = attr.ib()
    raw = attr.ib(repr=False)
    signature = attr.ib(repr=False)
    signedBody = attr.ib(repr=False)
    runAsGiven = attr.ib(default=True, repr=False, eq=False)
    signatureSystem = attr.ib(default=None, repr=False)

    def canonical(self):
        """
        @return: the canonical form, a C{dict} of plain data sharing its maps
            with this object: do not change it.
        """
        return {
            "id": self.id,
            "run_as": self.runAs,
            "launchables": {name: l.canonical() for name, l in self.launchables.items()},
            "config": self.config,
            "status": self.status.canonical(),
            "resource_limits": self.resourceLimits,
            "termination_grace_period": self.terminationGracePeriod,
            "labels": self.labels,
        }

    def sha(self):
        """
        @return: the hex SHA-256 of the canonical form as compact ASCII JSON
            with sorted keys.
        """
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def canonicalYAML(self):
        """
        @return: the canonical form as UTF-8 YAML bytes: a manifest with the
            same SHA.
        """
        return _dumpYAML(self.canonical())

    def configYAML(self):
        """
        @return: the C{config} map as UTF-8 YAML bytes, for C{CONFIG_PATH}.
        """
        return _dumpYAML(self.config)


def _dumpYAML(data):
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True,
                          encoding="utf-8")


def launchableVersion(launchable):
    """
    The version of a launchable, as P2 names installs.

    For a C{version} stanza it is C{version.id}.  For a C{location} it comes
    from the artifact's file name, C{<name>_<version>[-suffix].tar.gz}: the
    text after the last C{_}, without any C{-suffix}.  When the file name has
    no such version, it is the first 12 hex digits of the SHA-256 of the
    location, so one location always gives one version.

    @param launchable: a L{Launchable}.
    @return: the version, as text.
    """
    if launchable.version is not None:
        return launchable.version.id
    match = _ARTIFACT_FILE.fullmatch(posixpath.basename(urlsplit(launchable.location).path))
    version = match.group(1).split("-", 1)[0] if match else ""
    if _ARTIFACT_VERSION.fullmatch(version):
        return version
    return hashlib.sha256(launchable.location.encode("utf-8")).hexdigest()[:12]
