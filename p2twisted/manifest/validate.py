# -*- test-case-name: tests.test_manifest -*-
"""
The validator, which collects problems and warnings, and checks of plain
values (text, numbers, URLs, maps) that the field checks build on.
"""

import itertools
import re
from urllib.parse import urlsplit

import yaml

_SEGMENT = re.compile(r"[A-Za-z0-9._:-]+")
_PLAIN_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_:/-]+")
_MAX_INT = 2 ** 63 - 1
_MAX_CONFIG_VALUES = 100000
_MAX_CONFIG_DEPTH = 64
_STR_TAG = "tag:yaml.org,2002:str"


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
        return v.problem(path, "expected an http, https or file URL or a file path, got %s"
                         % (_quote(text),))
    return text


def _isURL(text):
    """
    Whether C{text} is an artifact location: an http, https or file URL, or
    (as in P2's C{pkg/uri}) a path to a local file, with no scheme.
    """
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        return False
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    if parts.scheme.lower() in ("http", "https"):
        return bool(parts.netloc)
    if parts.scheme == "":
        # A path; not "//host/x", which reads as a host.
        return bool(parts.path) and not parts.netloc and not text.startswith("//")
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
