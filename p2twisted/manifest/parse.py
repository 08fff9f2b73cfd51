# -*- test-case-name: tests.test_manifest -*-
"""
L{parseManifest} and L{manifestSHA}: from bytes to a validated
L{PodManifest}.
"""

from p2twisted.errors import ManifestError
from p2twisted.manifest.fields import _podFields
from p2twisted.manifest.model import PodManifest
from p2twisted.manifest.signed import unwrapSigned
from p2twisted.manifest.validate import _Validator
from p2twisted.manifest.yamlload import _loadYAML


def parseManifest(data, source=None):
    """
    Parse and validate a pod manifest.

    @param data: the manifest's bytes: YAML, perhaps PGP clear-signed or
        SSH-signed.
    @param source: where it came from (a file name), for error messages.
    @return: a L{PodManifest}.
    @raise ManifestError: listing every problem found.
    """
    wrapped = unwrapSigned(data, source)
    root, document = _loadYAML(wrapped.body, source)
    v = _Validator(root)
    fields = _podFields(v, document)
    if v.problems:
        raise ManifestError(v.problems, source)
    return PodManifest(warnings=tuple(v.warnings), raw=data,
                       signature=wrapped.signature, signedBody=wrapped.signedBody,
                       signatureSystem=wrapped.system,
                       runAsGiven=document.get("run_as") is not None, **fields)


def manifestSHA(data, source=None):
    """
    @return: the hex SHA-256 of the manifest in C{data}; see L{PodManifest.sha}.
    @raise ManifestError: if it is not a valid manifest.
    """
    return parseManifest(data, source).sha()
