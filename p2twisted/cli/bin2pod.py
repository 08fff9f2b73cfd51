# -*- test-case-name: tests.test_cli_hook -*-
"""
C{p2 bin2pod}: wrap one executable into a hoist artifact and a pod manifest
(P2's C{p2-bin2pod}), e.g. to schedule it as a hook with C{p2 hook schedule}.

The artifact C{<id>_<sha256 prefix>.tar.gz} holds the executable as
C{bin/launch} (mode 0755); it is built deterministically (fixed owner and
times), so wrapping the same executable twice gives the same file.  The
manifest C{<id>.yaml} beside it names the artifact's location and SHA-256
C{digest}; its launchable is named after the pod id (C{_} becomes C{-}, as
launchable ids may not hold C{_}).
"""

import gzip
import hashlib
import json
import os
import re
import stat
import tarfile
import tempfile
from urllib.parse import quote, urlsplit

import yaml

from p2twisted.errors import P2Error, UsageError
from p2twisted.manifest import parseManifest

_POD_ID = re.compile(r"[A-Za-z0-9._:-]+")
_MTIME = 1262304000  # 2010-01-01: a fixed time keeps the artifact reproducible
_CHUNK = 1 << 20


def register(subparsers):
    parser = subparsers.add_parser(
        "bin2pod", help="wrap an executable into an artifact and a pod manifest",
        description="Wrap EXECUTABLE into a hoist artifact (<id>_<sha>.tar.gz, the executable "
                    "as bin/launch) and a pod manifest (<id>.yaml) naming its location and "
                    "sha256 digest. Prints JSON {\"tar_path\", \"manifest_path\", \"location\", "
                    "\"digest\"} with absolute paths. Nothing is written to the store.")
    parser.add_argument("executable", metavar="EXECUTABLE", help="the executable file to wrap")
    parser.add_argument("--id", default=None,
                        help="the pod id (default: the executable's file name, with characters "
                             "other than letters, digits and ._:- replaced by '-')")
    parser.add_argument("--artifact-dir", default=".", metavar="DIR",
                        help="where to write the artifact and the manifest (default: the "
                             "current directory)")
    parser.add_argument("--location", default=None, metavar="URL",
                        help="where agents will fetch the artifact: a full URL ending in "
                             ".tar.gz is used as given; any other URL is a base to which "
                             "'/<artifact file name>' is appended (default: "
                             "file://<artifact path>, for agents on this host)")
    parser.set_defaults(run=runBin2pod, offline=True)


def podIdFor(path):
    """
    @return: a valid pod id made from C{path}'s file name.
    """
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", os.path.basename(path.rstrip("/")))
    name = name.lstrip(".-") or "pod"
    return name


def launchableIdFor(podId):
    """
    @return: the launchable id for C{podId}: the installer's names may not
        hold C{_} or C{:}, nor start with anything but a letter or digit.
    """
    name = re.sub(r"[^A-Za-z0-9.+@~-]", "-", podId).lstrip(".-+@~")
    return name[:200] or "launchable"


def buildArtifact(executable, directory, podId):
    """
    Write the artifact for C{executable} into C{directory}.

    @return: C{(path, sha256)}.
    """
    info = tarfile.TarInfo("bin/launch")
    info.size = os.path.getsize(executable)
    info.mode = 0o755
    info.mtime = _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    binDir = tarfile.TarInfo("bin")
    binDir.type = tarfile.DIRTYPE
    binDir.mode = 0o755
    binDir.mtime = _MTIME
    binDir.uname = binDir.gname = "root"
    fd, tmp = tempfile.mkstemp(prefix=".bin2pod-", suffix=".tar.gz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as archive:
                    archive.addfile(binDir)
                    with open(executable, "rb") as f:
                        archive.addfile(info, f)
        sha = hashlib.sha256()
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                sha.update(chunk)
        digest = sha.hexdigest()
        path = os.path.join(directory, "%s_%s.tar.gz" % (podId, digest[:12]))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path, digest


def artifactLocation(location, path):
    """
    @param location: the C{--location} given, or C{None}.
    @return: the URL agents fetch the artifact at C{path} from.
    """
    if location is None:
        return "file://" + quote(path)
    if location.endswith(".tar.gz"):
        return location
    return location.rstrip("/") + "/" + os.path.basename(path)


def manifestBytes(podId, location, digest):
    """
    @return: the YAML manifest of the wrapped executable.
    """
    document = {"id": podId, "launchables": {launchableIdFor(podId): {
        "launchable_type": "hoist", "location": location, "digest": digest}}}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).encode()


def runBin2pod(options):
    executable = os.path.abspath(options.executable)
    try:
        st = os.stat(executable)
    except OSError as e:
        raise P2Error("cannot read %s: %s" % (options.executable, e.strerror))
    if not stat.S_ISREG(st.st_mode):
        raise P2Error("%s is not a regular file" % (options.executable,))
    if not st.st_mode & 0o111:
        raise P2Error("%s is not executable; run 'chmod +x %s' first"
                      % (options.executable, options.executable))
    podId = options.id if options.id is not None else podIdFor(executable)
    if not _POD_ID.fullmatch(podId) or podId in (".", ".."):
        raise UsageError("invalid pod id %r: use letters, digits and ._:-" % (podId,))
    if options.location is not None and (
            urlsplit(options.location).scheme not in ("http", "https", "file")
            or any(ch.isspace() for ch in options.location)):
        raise UsageError("--location %s: expected an http, https or file URL"
                         % (options.location,))
    directory = os.path.abspath(options.artifact_dir)
    if not os.path.isdir(directory):
        raise P2Error("artifact directory %s does not exist" % (options.artifact_dir,))
    try:
        tarPath, digest = buildArtifact(executable, directory, podId)
    except OSError as e:
        raise P2Error("cannot write the artifact in %s: %s" % (directory, e.strerror or e))
    location = artifactLocation(options.location, tarPath)
    raw = manifestBytes(podId, location, digest)
    parseManifest(raw, source="the generated manifest")
    manifestPath = os.path.join(directory, "%s.yaml" % (podId,))
    try:
        with open(manifestPath, "wb") as f:
            f.write(raw)
    except OSError as e:
        raise P2Error("cannot write %s: %s" % (manifestPath, e.strerror or e))
    options.out.write(json.dumps({"tar_path": tarPath, "manifest_path": manifestPath,
                                  "location": location, "digest": digest}, sort_keys=True) + "\n")
    return 0

