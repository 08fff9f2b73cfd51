# -*- test-case-name: tests.test_auth_policy,tests.test_agent_artifactauth -*-
"""
Reading the agent config's signature sections (C{auth:}, C{artifact_auth:}):
a type, and the files of the keys trusted.  Every error is one line naming
the setting.
"""

import os

from p2twisted.errors import UsageError


def typedSection(data, name, known, types):
    """
    @param data: the section: a mapping, just its type (text), or C{None}.
    @param known: the setting names it may have.
    @param types: its possible types, the first the default.
    @return: C{(mapping, type)}.
    @raise UsageError: not a mapping, an unknown setting, an unknown type.
    """
    data = data or {}
    if isinstance(data, str):
        data = {"type": data}
    if not isinstance(data, dict):
        raise UsageError("agent config %s: expected a mapping with a type, got %r" % (name, data))
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UsageError("agent config %s: unknown setting %s (known: %s)" % (
            name, ", ".join(map(str, unknown)), ", ".join(sorted(known))))
    kind = data.get("type", types[0])
    if kind not in types:
        raise UsageError("agent config %s.type: expected %s or %s, got %r"
                         % (name, ", ".join(types[:-1]), types[-1], kind))
    return data, kind


def filePath(data, name, key):
    """
    @return: the absolute path of the file setting C{key}, or C{None}.
    @raise UsageError: it is not a file name.
    """
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError("agent config %s.%s: expected a file name, got %r" % (name, key, value))
    return os.path.abspath(value)


def signerFiles(data, name, kind, none="none"):
    """
    @return: C{(keyring, allowed signers)}: the absolute paths of the GPG
        keyring and the OpenSSH allowed-signers file, or C{None}s.
    @raise UsageError: a type other than C{none} without either file.
    """
    keyring, allowed = filePath(data, name, "keyring"), filePath(data, name, "allowed_signers")
    if kind != none and not (keyring or allowed):
        raise UsageError("agent config %s: type %s needs a keyring (GPG) or allowed_signers "
                         "(OpenSSH) file" % (name, kind))
    return keyring, allowed
