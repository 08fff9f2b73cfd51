# -*- test-case-name: tests.test_manifest -*-
"""
Pod manifests: parse, validate, normalize and hash them.

A pod manifest is P2's YAML document describing one pod: its id, the Unix
user it runs as, its launchables (hoist artifacts run under a supervisor),
its config map (written to the file named by C{CONFIG_PATH}), its status
check and its resource limits.  It may be PGP clear-signed.

L{parseManifest} turns bytes into a L{PodManifest}, or raises
L{ManifestError} listing I{every} problem, each C{"field.path: what is
wrong"}; no input, however broken, gives any other exception.  Unknown
fields are ignored and listed in L{PodManifest.warnings}.  A null value
(C{env:} with nothing after it) is the same as an absent field.  Where text
is expected and the YAML has an unquoted number or boolean (C{VERSION:
1.10}, C{DEBUG: yes}), the text is the value as spelled (C{"1.10"},
C{"yes"}), as with P2's Go decoder.

L{PodManifest.sha} hashes the I{canonical} form (L{PodManifest.canonical}):
the validated manifest with every default filled in, durations in seconds
and memory in bytes, as compact JSON with sorted keys.  Key order, quoting,
YAML style, comments, legacy field spellings and a PGP wrapper do not
change it; any change of meaning does.  The original bytes are kept in
L{PodManifest.raw}: they are what is stored, since a signature covers them.
"""

import hashlib
import itertools
import json
import posixpath
import re
from fractions import Fraction
from urllib.parse import urlsplit

import attr
import yaml

from p2twisted import labels
from p2twisted.errors import ManifestError

DEFAULT_ENTRY_POINTS = ("bin/launch",)
DEFAULT_RESTART_POLICY = "always"
DEFAULT_RESTART_TIMEOUT = 60.0
DEFAULT_STATUS_PATH = "/_status"
DEFAULT_TERMINATION_GRACE_PERIOD = 3600
RESTART_POLICIES = ("always", "never")
SUPPORTED_LAUNCHABLE_TYPES = ("hoist",)

_TOP_LEVEL_FIELDS = ("id", "run_as", "launchables", "config", "status", "status_port",
                     "status_http", "resource_limits", "termination_grace_period", "labels")
_LAUNCHABLE_FIELDS = ("launchable_type", "location", "version", "digest", "digest_location",
                      "digest_signature_location", "entry_points", "restart_policy",
                      "restart_timeout", "env", "cgroup", "no_halt_on_update")

_SEGMENT = re.compile(r"[A-Za-z0-9._:-]+")
_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_MEMORY = re.compile(r"([0-9]{1,19})([KMGT]?)", re.IGNORECASE)
_DURATION_PART = re.compile(
    r"([0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_PLAIN_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_:/-]+")
_ARTIFACT_FILE = re.compile(r".+_([^_]+)\.tar\.gz")
_ARTIFACT_VERSION = re.compile(r"[A-Za-z0-9.]+")

_MICRO = Fraction(1, 10 ** 6)
_SECONDS_PER_UNIT = {"ns": Fraction(1, 10 ** 9), "us": _MICRO, "\u00b5s": _MICRO,
                     "\u03bcs": _MICRO, "ms": Fraction(1, 1000), "s": 1, "m": 60, "h": 3600}
_BYTES_PER_UNIT = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
_MAX_INT = 2 ** 63 - 1
#: Go's longest duration, in seconds.
_MAX_DURATION = _MAX_INT // 10 ** 9
_MAX_CONFIG_VALUES = 100000
_MAX_CONFIG_DEPTH = 64

_SIGNED_MESSAGE = b"-----BEGIN PGP SIGNED MESSAGE-----"
_SIGNATURE_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_SIGNATURE_END = b"-----END PGP SIGNATURE-----"
_STR_TAG = "tag:yaml.org,2002:str"


# The parsed manifest

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
    @ivar signature: the armored signature of a clear-signed manifest, bytes,
        or C{None}.
    @ivar signedBody: the text that signature covers (dash-escaping undone,
        without the line ending before the signature: RFC 4880 section 7.1),
        bytes, or C{None}.
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


def parseManifest(data, source=None):
    """
    Parse and validate a pod manifest.

    @param data: the manifest's bytes: YAML, perhaps PGP clear-signed.
    @param source: where it came from (a file name), for error messages.
    @return: a L{PodManifest}.
    @raise ManifestError: listing every problem found.
    """
    body, signature, signedBody = _unwrapClearSigned(data, source)
    root, document = _loadYAML(body, source)
    v = _Validator(root)
    fields = _podFields(v, document)
    if v.problems:
        raise ManifestError(v.problems, source)
    return PodManifest(warnings=tuple(v.warnings), raw=data, signature=signature,
                       signedBody=signedBody, **fields)


def manifestSHA(data, source=None):
    """
    @return: the hex SHA-256 of the manifest in C{data}; see L{PodManifest.sha}.
    @raise ManifestError: if it is not a valid manifest.
    """
    return parseManifest(data, source).sha()


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


# Reading the bytes

def _unwrapClearSigned(data, source):
    """
    Strip a PGP clear-signature wrapper, if any.

    @return: C{(body, signature, signedBody)}; C{(data, None, None)} for an
        unsigned manifest.
    @raise ManifestError: if the wrapper is malformed.
    """
    if not data.startswith(_SIGNED_MESSAGE):
        return data, None, None
    lines = data.split(b"\n")
    bare = [line.rstrip(b"\r\t ") for line in lines]

    def find(marker, start, missing):
        if marker not in bare[start:]:
            raise ManifestError(["pgp: the clear-signed message has no %s" % (missing,)], source)
        return bare.index(marker, start)
    start = find(b"", 0, "blank line after its headers") + 1
    begin = find(_SIGNATURE_BEGIN, start, _SIGNATURE_BEGIN.decode() + " line")
    end = find(_SIGNATURE_END, begin, _SIGNATURE_END.decode() + " line")
    body = b"\n".join(line[2:] if line.startswith(b"- ") else line for line in lines[start:begin])
    if body.endswith(b"\r"):
        body = body[:-1]
    return body, b"\n".join(bare[begin:end + 1]) + b"\n", body


class _Loader(yaml.SafeLoader):
    """
    A safe loader leaving timestamps as text, as P2's Go decoder does for
    untyped fields, and as JSON needs.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if not tag.endswith(":timestamp")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _loadYAML(body, source):
    """
    @return: C{(root, document)}: the node tree and the mapping built from
        it.
    @raise ManifestError: if C{body} is not YAML of a mapping.
    """
    try:
        loader = _Loader(body)
        try:
            root = loader.get_single_node()
            document = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ManifestError(["yaml: " + _describeYAMLError(e)], source)
    except RecursionError:
        raise ManifestError(["yaml: the document is nested too deeply"], source)
    except (ValueError, TypeError, AttributeError) as e:
        # PyYAML's constructors let these out for values like "!!int x".
        raise ManifestError(["yaml: cannot build a value: " + _oneLine(str(e))], source)
    expected = "a mapping with id and launchables"
    if document is None:
        raise ManifestError(["manifest: the document is empty; expected %s" % (expected,)], source)
    if not isinstance(document, dict):
        raise ManifestError(["manifest: expected %s, got %s" % (expected, _describe(document))],
                            source)
    return root, document


def _describeYAMLError(error):
    if isinstance(error, yaml.reader.ReaderError):
        return "%s at byte %d" % (str(error).splitlines()[0], error.position)
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return _oneLine(str(error))
    text = "line %d, column %d: %s" % (mark.line + 1, mark.column + 1, error.problem)
    if error.context:
        context = error.context_mark
        text += " (%s%s)" % (error.context, "" if context is None else " at line %d, column %d"
                             % (context.line + 1, context.column + 1))
    return _oneLine(text)


# Describing values and paths in messages

def _oneLine(text):
    return " ".join(text.split())


def _quote(text):
    """
    @return: C{repr(text)}, cut short if long: one line.
    """
    return repr(text) if len(text) <= 60 else repr(text[:60]) + "..."


def _describe(value):
    """
    @return: what C{value} is, for "expected X, got Y" messages.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean %s" % ("true" if value else "false")
    if isinstance(value, int):
        return "integer %d" % (value,) if value.bit_length() <= 64 else "a very large integer"
    if isinstance(value, float):
        return "number %r" % (value,)
    if isinstance(value, str):
        return "string %s" % (_quote(value),)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a %s value" % (type(value).__name__,)


def _formatPath(path):
    """
    @return: C{path}, a tuple of keys and list indexes, as
        C{launchables.web.entry_points[0]}, quoting odd keys.
    """
    text = ""
    for segment in path:
        if isinstance(segment, str):
            plain = _PLAIN_PATH_SEGMENT.fullmatch(segment)
            text += "." + (segment if plain else _quote(segment))
        elif type(segment) is int and 0 <= segment <= _MAX_INT:
            text += "[%d]" % (segment,)
        else:
            text += "." + _describe(segment)
    return text.lstrip(".") or "manifest"


# Validation

class _Validator(object):
    """
    Collects problems and warnings, each C{"field.path: what"}.

    Checks are functions C{check(v, value, path)}, with C{v} a validator and
    C{path} a tuple of keys: each returns the value, normalized, or C{None}
    after recording a problem.
    """

    def __init__(self, root):
        self._root = root
        self.problems = []
        self.warnings = []

    def problem(self, path, message):
        """
        @return: C{None}, so a check can C{return v.problem(...)}.
        """
        self.problems.append("%s: %s" % (_formatPath(path), message))

    def expected(self, path, what, value):
        self.problem(path, "expected %s, got %s" % (what, _describe(value)))

    def warn(self, path, message):
        self.warnings.append("%s: %s" % (_formatPath(path), message))

    def warnUnknown(self, stanza, path, known):
        for name in stanza:
            if name not in known:
                self.warn(path + (name,), "unknown field; ignored")

    def field(self, stanza, path, name, check, default=None):
        """
        @return: C{stanza[name]} checked, or C{default} if absent or null.
        """
        value = stanza.get(name)
        return default if value is None else check(self, value, path + (name,))

    def required(self, stanza, path, name, check):
        if stanza.get(name) is None:
            return self.problem(path + (name,), "required")
        return self.field(stanza, path, name, check)

    def spelling(self, path):
        """
        @return: the source text of the scalar at C{path}.
        """
        node = self._root
        for key in path:
            if isinstance(node, yaml.SequenceNode):
                node = node.value[key]
            else:
                node = [v for k, v in node.value if k.tag == _STR_TAG and k.value == key][-1]
        return node.value


# Checks of plain values

def _mapping(v, value, path):
    return value if isinstance(value, dict) else v.expected(path, "a mapping", value)


def _boolean(v, value, path):
    return value if isinstance(value, bool) else v.expected(path, "true or false", value)


def _string(v, value, path):
    """
    Text; an unquoted number or boolean gives its source spelling.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return v.spelling(path)
    return v.expected(path, "a string", value)


def _oneOf(v, value, path, choices, what):
    text = _string(v, value, path)
    if text is not None and text not in choices:
        return v.problem(path, "expected %s, got %s" % (what, _quote(text)))
    return text


def _matching(v, value, path, pattern, what):
    """
    Text matching C{pattern}, but never C{.} or C{..}.
    """
    text = _string(v, value, path)
    if text is not None and (not pattern.fullmatch(text) or text in (".", "..")):
        return v.problem(path, "expected %s, got %s" % (what, _quote(text)))
    return text


def _segment(v, value, path):
    return _matching(v, value, path, _SEGMENT, "a name of letters, digits, '.', '_', ':' and '-'")


def _integer(v, value, path, low, high, what):
    if not isinstance(value, int) or isinstance(value, bool):
        return v.expected(path, what, value)
    if not low <= value <= high:
        return v.problem(path, "expected %s from %d to %d, got %s"
                         % (what, low, high, _describe(value)))
    return value


def _number(v, value, path, what, positive=False):
    """
    A finite number from 0 (above 0 if C{positive}), as a L{float}.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and (0 < value if positive else 0 <= value) and value <= _MAX_INT:
        return float(value)
    return v.expected(path, what, value)


def _url(v, value, path):
    text = _string(v, value, path)
    if text is not None and not _isURL(text):
        return v.problem(path, "expected an http, https or file URL, got %s" % (_quote(text),))
    return text


def _isURL(text):
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        return False
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    if parts.scheme.lower() in ("http", "https"):
        return bool(parts.netloc)
    return parts.scheme.lower() == "file" and bool(parts.path)


def _stringMap(v, value, path, keyProblem=lambda key: None):
    """
    A map of text to text; C{keyProblem(key)} says what is wrong with a key,
    or C{None}.
    """
    if _mapping(v, value, path) is None:
        return None
    result = {}
    for key, item in value.items():
        if not isinstance(key, str):
            v.problem(path, "keys must be strings, got %s (quote it)" % (_describe(key),))
            continue
        if keyProblem(key):
            v.problem(path + (key,), keyProblem(key))
        text = _string(v, item, path + (key,))
        if text is not None:
            result[key] = text
    return result


def _config(v, value, path):
    """
    Free-form data, copied (so YAML aliases become plain copies).
    """
    if _mapping(v, value, path) is None:
        return None
    try:
        return _plainData(v, value, path, itertools.count())
    except _TooLarge:
        return v.problem(path, "more than %d values or %d levels deep (a YAML alias may expand "
                               "to that, or contain itself)"
                         % (_MAX_CONFIG_VALUES, _MAX_CONFIG_DEPTH))


class _TooLarge(Exception):
    """
    The config map is too large or too deep.
    """


def _plainData(v, value, path, counter):
    if next(counter) >= _MAX_CONFIG_VALUES or len(path) > _MAX_CONFIG_DEPTH:
        raise _TooLarge()
    if isinstance(value, dict):
        copy = {}
        for key, item in value.items():
            if isinstance(key, str):
                copy[key] = _plainData(v, item, path + (key,), counter)
            else:
                v.problem(path, "keys must be strings, got %s (quote it)" % (_describe(key),))
        return copy
    if isinstance(value, list):
        return [_plainData(v, item, path + (i,), counter) for i, item in enumerate(value)]
    if type(value) is int and value.bit_length() > 63:
        return v.problem(path, "expected an integer that fits in 64 bits")
    if value is None or isinstance(value, (str, int, float)):
        return value
    return v.expected(path, "text, a number, a boolean, null, a list or a mapping", value)


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
    if text == "0":
        return Fraction(0)
    seconds, position = Fraction(0), 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            return None
        seconds += Fraction(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]
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

def _podFields(v, document):
    """
    @return: the L{PodManifest} attributes but C{warnings}, C{raw},
        C{signature} and C{signedBody}.
    """
    v.warnUnknown(document, (), _TOP_LEVEL_FIELDS)
    podId = v.required(document, (), "id", _segment)
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
        elif _segment(v, name, path + (name,)) is not None:
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
    return Version(id=v.required(value, path, "id", _segment),
                   artifactName=v.required(value, path, "artifact_name", _segment),
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
