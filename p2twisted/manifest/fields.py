# -*- test-case-name: tests.test_manifest -*-
"""
Checks of a manifest's fields and of its stanzas: the pod, its launchables,
its status check and its resource limits.
"""

import posixpath
import re

from p2twisted import labelsyntax as labels
from p2twisted.manifest.model import (
    DEFAULT_ENTRY_POINTS, DEFAULT_RESTART_POLICY, DEFAULT_RESTART_TIMEOUT, DEFAULT_STATUS_PATH,
    DEFAULT_TERMINATION_GRACE_PERIOD, RESTART_POLICIES, SUPPORTED_LAUNCHABLE_TYPES, Launchable,
    Status, Version)
from p2twisted.manifest.validate import (
    _MAX_INT, _boolean, _config, _describe, _integer, _mapping, _matching, _number, _oneOf,
    _quote, _segment, _string, _stringMap, _url)

_TOP_LEVEL_FIELDS = ("id", "run_as", "launchables", "config", "status", "status_port",
                     "status_http", "resource_limits", "termination_grace_period", "labels")
_LAUNCHABLE_FIELDS = ("launchable_type", "location", "version", "digest", "digest_location",
                      "digest_signature_location", "entry_points", "restart_policy",
                      "restart_timeout", "env", "cgroup", "no_halt_on_update")

_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_MEMORY = re.compile(r"([0-9]{1,19})([KMGT]?)", re.IGNORECASE)
_DURATION_PART = re.compile(
    r"([0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")

#: The seconds in a unit of a Go duration: C{1 / divisor} or C{multiplier}
#: (made a C{Fraction} by L{_parseDuration}, which imports C{fractions}: only
#: a manifest with a duration needs it).
_SECONDS_PER_UNIT = {"ns": (1, 10 ** 9), "us": (1, 10 ** 6), "\u00b5s": (1, 10 ** 6),
                     "\u03bcs": (1, 10 ** 6), "ms": (1, 1000), "s": (1, 1), "m": (60, 1),
                     "h": (3600, 1)}
_BYTES_PER_UNIT = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}

#: Go's longest duration, in seconds.
_MAX_DURATION = _MAX_INT // 10 ** 9


# Checks of fields

def _userName(v, value, path):
    return _matching(v, value, path, _USER_NAME, "a unix user name (a letter or '_', then "
                     "letters, digits, '_', '.' or '-'; at most 32)")


def _port(v, value, path):
    return _integer(v, value, path, 1, 65535, "a port number")


def _gracePeriod(v, value, path):
    return _integer(v, value, path, 0, _MAX_INT, "a whole number of seconds")


def _statusPath(v, value, path):
    text = _string(v, value, path)
    if text is not None and not text.startswith("/"):
        return v.problem(path, "expected a URL path starting with '/', got %s" % (_quote(text),))
    return text


def _restartPolicy(v, value, path):
    return _oneOf(v, value, path, RESTART_POLICIES, " or ".join(RESTART_POLICIES))


def _launchableType(v, value, path):
    return _oneOf(v, value, path, SUPPORTED_LAUNCHABLE_TYPES, "a supported launchable type (%s)"
                  % (", ".join(SUPPORTED_LAUNCHABLE_TYPES),))


def _digest(v, value, path):
    text = _matching(v, value, path, _DIGEST, "a SHA-256 of 64 hex digits")
    return None if text is None else text.lower()


def _duration(v, value, path):
    """
    A Go duration (C{30s}, C{1m30s}, C{500ms}) or a number of seconds, as a
    L{float} of seconds.
    """
    what = "a duration like 30s, 1m30s or 500ms, or a number of seconds"
    if isinstance(value, str):
        seconds = _parseDuration(value)
        if seconds is None:
            return v.problem(path, "expected %s, got %s" % (what, _quote(value)))
    else:
        seconds = _number(v, value, path, what)
        if seconds is None:
            return None
    if seconds > _MAX_DURATION:
        return v.problem(path, "expected at most %d seconds" % (_MAX_DURATION,))
    return float(seconds)


def _parseDuration(text):
    """
    @return: the seconds in the Go duration C{text}, a L{Fraction}, or
        C{None} if it is not one (negative ones are not).
    """
    from fractions import Fraction
    if text == "0":
        return Fraction(0)
    seconds, position = Fraction(0), 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            return None
        seconds += Fraction(match.group(1)) * Fraction(*_SECONDS_PER_UNIT[match.group(2)])
        position = match.end()
    return seconds if text else None


def _cpus(v, value, path):
    return _number(v, value, path, "a number of CPUs above 0", positive=True)


def _memory(v, value, path):
    """
    Bytes, as an integer or like C{512M} or C{2G} (powers of 1024).
    """
    what = "a number of bytes above 0, or a size like 512M, 2G, 1024K or 1T"
    if isinstance(value, str):
        match = _MEMORY.fullmatch(value)
        if match is None:
            return v.problem(path, "expected %s, got %s" % (what, _quote(value)))
        value = int(match.group(1)) * _BYTES_PER_UNIT[match.group(2).upper()]
    elif not isinstance(value, int) or isinstance(value, bool):
        return v.expected(path, what, value)
    if not 0 < value <= _MAX_INT:
        return v.problem(path, "expected %s, got %s" % (what, _describe(value)))
    return value


def _cgroup(v, value, path):
    """
    C{{cpus, memory}} as a C{dict} of the limits given, or C{None} for none.
    """
    if _mapping(v, value, path) is None:
        return None
    v.warnUnknown(value, path, ("cpus", "memory"))
    limits = {"cpus": v.field(value, path, "cpus", _cpus),
              "memory": v.field(value, path, "memory", _memory)}
    return {name: limit for name, limit in limits.items() if limit is not None} or None


def _entryPoints(v, value, path):
    """
    A list of relative paths in the artifact; empty means the default.
    """
    if value == []:
        return DEFAULT_ENTRY_POINTS
    if not isinstance(value, list):
        return v.expected(path, "a list of relative paths", value)
    entries = []
    for index, item in enumerate(value):
        entry = _entryPoint(v, item, path + (index,))
        if entry in entries:
            v.problem(path + (index,), "%s is listed twice" % (_quote(entry),))
        elif entry is not None:
            entries.append(entry)
    return tuple(entries)


def _entryPoint(v, value, path):
    text = _string(v, value, path)
    if text is None:
        return None
    if text.startswith("/") or ".." in text.split("/") or posixpath.normpath(text) == "." \
            or any(ord(ch) < 32 for ch in text):
        return v.problem(path, "expected a relative path inside the launchable, without '..', "
                               "got %s" % (_quote(text),))
    return posixpath.normpath(text)


def _envNameProblem(name):
    if not _ENV_NAME.fullmatch(name):
        return "expected a variable name: letters, digits and '_', not starting with a digit"
    return None


def _env(v, value, path):
    return _stringMap(v, value, path, _envNameProblem)


def _labels(v, value, path):
    result = _stringMap(v, value, path, labels.keyProblem)
    for key, text in (result or {}).items():
        if labels.valueProblem(key, text):
            v.problem(path + (key,), labels.valueProblem(key, text))
    return result


# Stanzas

def _serviceId(v, value, path):
    """
    A pod or launchable id: a segment that keeps service names
    (C{<pod>__<launchable>__<entry>}) unambiguous: no C{__} inside, no C{_}
    at either end.
    """
    text = _segment(v, value, path)
    if text is not None and ("__" in text or text.startswith("_") or text.endswith("_")):
        return v.problem(path, "%s must not contain '__' or start or end with '_' (service "
                               "names join ids with '__')" % (_quote(text),))
    return text


def _podFields(v, document):
    """
    @return: the L{PodManifest} attributes but C{warnings}, C{raw},
        C{signature} and C{signedBody}.
    """
    v.warnUnknown(document, (), _TOP_LEVEL_FIELDS)
    podId = v.required(document, (), "id", _serviceId)
    return dict(
        id=podId,
        runAs=_runAs(v, document, podId),
        launchables=v.required(document, (), "launchables", _launchables),
        config=v.field(document, (), "config", _config, {}),
        status=_status(v, document),
        resourceLimits=v.field(document, (), "resource_limits", _resourceLimits, {}),
        terminationGracePeriod=v.field(document, (), "termination_grace_period", _gracePeriod,
                                       DEFAULT_TERMINATION_GRACE_PERIOD),
        labels=v.field(document, (), "labels", _labels, {}),
    )


def _runAs(v, document, podId):
    if document.get("run_as") is not None:
        return v.field(document, (), "run_as", _userName)
    if podId is not None and not _USER_NAME.fullmatch(podId):
        v.warn(("run_as",), "defaults to the pod id %s, which is not a usable unix user name; "
                            "set run_as" % (_quote(podId),))
    return podId


def _launchables(v, value, path):
    if _mapping(v, value, path) is None:
        return None
    if not value:
        return v.problem(path, "expected at least one launchable")
    launchables = {}
    for name, stanza in value.items():
        if not isinstance(name, str):
            v.problem(path, "launchable ids must be strings, got %s" % (_describe(name),))
        elif _serviceId(v, name, path + (name,)) is not None:
            launchables[name] = _launchable(v, stanza, path + (name,))
    return launchables


def _launchable(v, stanza, path):
    if _mapping(v, stanza, path) is None:
        return None
    v.warnUnknown(stanza, path, _LAUNCHABLE_FIELDS)
    given = {name for name in _LAUNCHABLE_FIELDS if stanza.get(name) is not None}
    if ("location" in given) == ("version" in given):
        v.problem(path, "needs exactly one of location or version, got %s"
                  % ("both" if "location" in given else "neither",))
    if {"digest", "digest_location"} <= given:
        v.problem(path, "takes at most one of digest or digest_location, got both")
    if "digest_signature_location" in given and "digest_location" not in given:
        v.problem(path + ("digest_signature_location",), "needs digest_location")
    return Launchable(
        id=path[-1],
        launchableType=v.required(stanza, path, "launchable_type", _launchableType),
        location=v.field(stanza, path, "location", _url),
        version=v.field(stanza, path, "version", _version),
        digest=v.field(stanza, path, "digest", _digest),
        digestLocation=v.field(stanza, path, "digest_location", _url),
        digestSignatureLocation=v.field(stanza, path, "digest_signature_location", _url),
        entryPoints=v.field(stanza, path, "entry_points", _entryPoints, DEFAULT_ENTRY_POINTS),
        restartPolicy=v.field(stanza, path, "restart_policy", _restartPolicy,
                              DEFAULT_RESTART_POLICY),
        restartTimeout=v.field(stanza, path, "restart_timeout", _duration,
                               DEFAULT_RESTART_TIMEOUT),
        env=v.field(stanza, path, "env", _env, {}),
        cgroup=v.field(stanza, path, "cgroup", _cgroup),
        noHaltOnUpdate=v.field(stanza, path, "no_halt_on_update", _boolean, False),
    )


def _version(v, value, path):
    if _mapping(v, value, path) is None:
        return None
    v.warnUnknown(value, path, ("id", "artifact_name", "tags"))
    # As P2's ArtifactOverride: without artifact_name, the artifact is
    # named by the launchable id.
    return Version(id=v.required(value, path, "id", _segment),
                   artifactName=v.field(value, path, "artifact_name", _segment, path[-2]),
                   tags=v.field(value, path, "tags", _stringMap, {}))


def _status(v, document):
    """
    The C{status} stanza, merged with the legacy C{status_port} and
    C{status_http} fields.
    """
    path = ("status",)
    stanza = v.field(document, (), "status", _mapping) or {}
    v.warnUnknown(stanza, path, ("port", "http", "path", "localhost_only"))

    def merged(name, legacyName, check, default):
        value = v.field(stanza, path, name, check)
        legacy = v.field(document, (), legacyName, check)
        if None not in (value, legacy) and value != legacy:
            v.problem((legacyName,), "conflicts with status.%s; keep only status.%s"
                      % (name, name))
        return next((x for x in (value, legacy) if x is not None), default)
    return Status(
        port=merged("port", "status_port", _port, None),
        http=merged("http", "status_http", _boolean, False),
        path=v.field(stanza, path, "path", _statusPath, DEFAULT_STATUS_PATH),
        localhostOnly=v.field(stanza, path, "localhost_only", _boolean, False),
    )


def _resourceLimits(v, value, path):
    if _mapping(v, value, path) is None:
        return None
    v.warnUnknown(value, path, ("cgroup",))
    cgroup = v.field(value, path, "cgroup", _cgroup)
    return {"cgroup": cgroup} if cgroup else {}
