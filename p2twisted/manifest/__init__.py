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

from p2twisted.errors import ManifestError
from p2twisted.manifest.model import (
    DEFAULT_ENTRY_POINTS, DEFAULT_RESTART_POLICY, DEFAULT_RESTART_TIMEOUT, DEFAULT_STATUS_PATH,
    DEFAULT_TERMINATION_GRACE_PERIOD, RESTART_POLICIES, SUPPORTED_LAUNCHABLE_TYPES, Launchable,
    PodManifest, Status, Version, launchableVersion)
from p2twisted.manifest.parse import manifestSHA, parseManifest

__all__ = [
    "DEFAULT_ENTRY_POINTS", "DEFAULT_RESTART_POLICY", "DEFAULT_RESTART_TIMEOUT",
    "DEFAULT_STATUS_PATH", "DEFAULT_TERMINATION_GRACE_PERIOD", "RESTART_POLICIES",
    "SUPPORTED_LAUNCHABLE_TYPES", "Launchable", "ManifestError", "PodManifest", "Status",
    "Version", "launchableVersion", "manifestSHA", "parseManifest",
]
