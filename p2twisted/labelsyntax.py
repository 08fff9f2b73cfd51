# -*- test-case-name: tests.test_labels -*-
"""
The syntax of label keys and values (L{p2twisted.labels} has the rest):
what manifest validation needs, without Twisted (C{p2 manifest} imports it).
"""

import re

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(r"^%s(\.%s)*$" % (_DNS_LABEL, _DNS_LABEL))
_NAME_MAX = 63
_PREFIX_MAX = 253

_NAME_RULE = ("at most %d characters of letters, digits, '-', '_' and '.', "
              "beginning and ending with a letter or digit" % (_NAME_MAX,))
_PREFIX_RULE = ("a DNS subdomain: at most %d characters of lowercase letters, digits, "
                "'-' and '.'" % (_PREFIX_MAX,))


# Validation

def _nameProblem(name):
    """
    @return: why C{name} is not a valid label name or non-empty value, or
        C{None} if it is.
    """
    if len(name) > _NAME_MAX:
        return "it is %d characters long; it must be %s" % (len(name), _NAME_RULE)
    if not _NAME.match(name):
        return "it must be %s" % (_NAME_RULE,)
    return None


def keyProblem(key):
    """
    @return: why C{key} is not a valid label key, in words, or C{None} if it
        is valid.  A key is an optional DNS-subdomain prefix and C{/}, then a
        name.
    """
    if not isinstance(key, str):
        return "invalid label key %r: keys are text" % (key,)
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix or len(prefix) > _PREFIX_MAX or not _DNS_SUBDOMAIN.match(prefix):
            return "invalid label key %r: the prefix %r must be %s" % (key, prefix, _PREFIX_RULE)
    if not name:
        return "invalid label key %r: the name is empty; it must be %s" % (key, _NAME_RULE)
    problem = _nameProblem(name)
    if problem:
        return "invalid label key %r: %s" % (key, problem)
    return None


def valueProblem(key, value):
    """
    @return: why C{value} is not a valid value for label C{key}, or C{None}
        if it is valid.  A value is empty or a name like a key's.
    """
    if not isinstance(value, str):
        return "invalid value %r for label %r: values are text" % (value, key)
    problem = _nameProblem(value) if value else None
    if problem:
        return "invalid value %r for label %r: %s, or empty" % (value, key, problem)
    return None
