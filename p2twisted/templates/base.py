# -*- test-case-name: tests.test_templates -*-
"""
What the built-in templates share: settings checking, deterministic hoist
artifacts, and the manifest that runs one.
"""

import gzip
import hashlib
import io
import json
import os
import tarfile

from zope.interface import implementer

from p2twisted.templates import ITemplate, Option, SettingsError, closestOption

#: Every archive member's modification time, so equal content gives equal bytes.
MTIME = 1700000000

#: Options every built-in template has.
COMMON_OPTIONS = [
    Option("run_as", "str", None,
           "the unix user the pod runs as (default: the service name; ignored when the "
           "agent is not root)"),
]


def coerce(option, value):
    """
    @return: C{value} as C{option}'s type.
    @raise SettingsError: if it is not one.
    """
    if value is None:
        return None
    kind = option.type
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind == "path":
            return os.path.abspath(os.path.expanduser(str(value)))
        if kind == "list":
            if isinstance(value, (list, tuple)):
                return [str(v) for v in value]
            return [v for v in str(value).replace(",", " ").split() if v]
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError("option %s must be %s, got %r"
                            % (option.flag, {"int": "an integer"}.get(kind, kind), value))


def hoistBytes(files):
    """
    @param files: C{{relpath: (bytes, mode)}}.
    @return: a gzipped tar of C{files}, byte for byte the same for the same
        C{files}.
    """
    tarBuffer = io.BytesIO()
    with tarfile.open(fileobj=tarBuffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        dirs = sorted({"/".join(name.split("/")[:i]) for name in files
                       for i in range(1, len(name.split("/")))})
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            info.uname = info.gname = "root"
            archive.addfile(info)
        for name in sorted(files):
            content, mode = files[name]
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, MTIME
            info.uname = info.gname = "root"
            archive.addfile(info, io.BytesIO(content))
    gzBuffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gzBuffer, mtime=0) as compressed:
        compressed.write(tarBuffer.getvalue())
    return gzBuffer.getvalue()


def writeArtifact(artifactDir, baseName, raw):
    """
    Write C{raw} as C{<artifactDir>/<baseName>_<sha12>.tar.gz} (atomically;
    an existing identical file is left alone), readable by every user.

    @return: C{(file name, sha256 hex)}.
    """
    digest = hashlib.sha256(raw).hexdigest()
    fileName = "%s_%s.tar.gz" % (baseName, digest[:12])
    path = os.path.join(artifactDir, fileName)
    if not os.path.exists(path) or os.path.getsize(path) != len(raw):
        os.makedirs(artifactDir, exist_ok=True)
        os.chmod(artifactDir, 0o755)
        tmp = "%s.tmp.%d" % (path, os.getpid())
        with open(tmp, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    return fileName, digest


def resource(name):
    """
    @return: the bytes of C{p2twisted/templates/files/<name>}.
    """
    with open(os.path.join(os.path.dirname(__file__), "files", name), "rb") as f:
        return f.read()


@implementer(ITemplate)
class BaseTemplate(object):
    """
    A template whose pod has one hoist launchable, C{app}, built from
    L{files}, with the settings in the manifest's C{config} and C{env}.

    Subclasses set L{name}, L{description}, L{options}, L{tasks} and
    implement L{files} and L{env}.
    """

    name = None
    description = ""
    options = []
    tasks = {}
    #: The setting holding the HTTP port answering C{status_path}, if any.
    statusPortOption = "port"
    statusPathOption = None
    statusPath = "/_status"

    def allOptions(self):
        return list(self.options) + COMMON_OPTIONS

    def settings(self, given):
        options = {o.name: o for o in self.allOptions()}
        result = {}
        for key, value in sorted((given or {}).items()):
            key = key.replace("-", "_")
            if key not in options:
                close = closestOption(key, self.allOptions())
                hint = "; did you mean --%s?" % (close.replace("_", "-"),) if close else ""
                raise SettingsError("template %s has no option --%s%s (see 'p2 describe %s')"
                                    % (self.name, key.replace("_", "-"), hint, self.name))
            result[key] = coerce(options[key], value)
        for option in options.values():
            if result.get(option.name) is None:
                if option.required:
                    raise SettingsError("template %s needs %s" % (self.name, option.flag))
                result[option.name] = option.default
        self.check(result)
        return result

    def check(self, settings):
        """
        Check settings beyond their types; raise L{SettingsError}.
        """

    def hostProblems(self, settings):
        """
        What is wrong with C{settings} on this host (a directory that does
        not exist here), as C{p2 add} and C{p2 config} check before the pod
        would fail on it.

        @return: a list of one-line problems, empty when none.
        """
        return []

    def files(self, serviceName, settings):
        """
        @return: the artifact's C{{relpath: (bytes, mode)}}.
        """
        raise NotImplementedError()

    def env(self, serviceName, settings):
        """
        @return: the launchable's environment, C{{name: text}}.
        """
        return {}

    def render(self, serviceName, settings, artifactDir, artifactBaseURL):
        settings = self.settings(settings)
        files = dict(self.files(serviceName, settings))
        files["p2-service.json"] = (_json({"service": serviceName, "template": self.name,
                                           "settings": settings}) + b"\n", 0o644)
        fileName, digest = writeArtifact(artifactDir, serviceName, hoistBytes(files))
        launchable = {
            "launchable_type": "hoist",
            "location": artifactBaseURL.rstrip("/") + "/" + fileName,
            "digest": digest,
            "env": {k: str(v) for k, v in self.env(serviceName, settings).items()},
        }
        manifest = {
            "id": serviceName,
            "run_as": settings.get("run_as") or serviceName,
            "launchables": {"app": launchable},
            "config": {"service": serviceName, "template": self.name, "settings": settings},
        }
        status = self.statusCheck(settings)
        if status is not None:
            manifest["status"] = {"port": status[0], "http": True, "path": status[1]}
        return _json(manifest, indent=2) + b"\n"

    def statusCheck(self, settings):
        """
        @return: C{(port, path)} of the pod's HTTP status check, or C{None}
            when it has none.
        """
        port = settings.get(self.statusPortOption) if self.statusPortOption else None
        if not port:
            return None
        path = settings.get(self.statusPathOption) if self.statusPathOption else None
        return port, path or self.statusPath


def _json(value, indent=None):
    return json.dumps(value, sort_keys=True, indent=indent).encode("utf-8")
