# -*- test-case-name: tests.test_manifest -*-
"""
Loading a manifest's YAML into a node tree and a mapping, with every YAML
error turned into a L{ManifestError}.
"""

import yaml

from p2twisted.errors import ManifestError
from p2twisted.manifest.validate import _describe, _oneLine


class _Loader(yaml.SafeLoader):
    """
    A safe loader leaving timestamps as text, as P2's Go decoder does for
    untyped fields, and as JSON needs.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if not tag.endswith(":timestamp")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


#: The same loader on libyaml's parser, when PyYAML has it: a manifest
#: loads in a tenth of the time (about 0.1 ms instead of 1.3), which each
#: deploy pays for its intent and its reality.
_FastLoader = None
if getattr(yaml, "__with_libyaml__", False):
    class _FastLoader(yaml.CSafeLoader):
        yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers

#: Deeper documents go to the pure-Python loader (whose recursion limit
#: refuses them): libyaml's composer recurses on the C stack, and a deep
#: enough document crashes the process.
_FAST_DEPTH = 100

#: Every mapping or sequence starts at one of these (C{-}, C{?}, C{:} in block
#: style, C{[}, C{\{} or C{:} in flow style), each starting at most one: their
#: count bounds the depth.
_COLLECTION_INDICATORS = "[{-?:"


def _loadYAML(body, source):
    """
    @return: C{(root, document)}: the node tree and the mapping built from
        it.
    @raise ManifestError: if C{body} is not YAML of a mapping.
    """
    if _FastLoader is not None and _fastLoadable(body):
        try:
            loaded = _load(_FastLoader, body)
        except Exception:
            pass  # described by the pure-Python loader below, as always
        else:
            if isinstance(loaded[1], dict):
                return loaded
    try:
        root, document = _load(_Loader, body)
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


def _fastLoadable(body):
    """
    @return: whether libyaml loads C{body} as PyYAML does: it has no tab
        (libyaml takes one after a key's colon as a space, PyYAML refuses it)
        and nests no deeper than L{_FAST_DEPTH}.
    """
    text = isinstance(body, str)
    if ("\t" if text else b"\t") in body:
        return False
    if sum(body.count(c if text else c.encode()) for c in _COLLECTION_INDICATORS) <= _FAST_DEPTH:
        return True
    # libyaml's parser keeps its nesting on a heap stack: its events tell
    # the depth safely.
    loader = _FastLoader(body)
    try:
        depth = 0
        while True:
            event = loader.get_event()
            if event is None:
                return True
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > _FAST_DEPTH:
                    return False
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except Exception:
        return False  # described by the pure-Python loader, as always
    finally:
        loader.dispose()


def _load(loaderClass, body):
    loader = loaderClass(body)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()


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
