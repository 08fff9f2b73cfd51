# -*- test-case-name: tests.test_cli_namespace -*-
"""
C{p2 init} and C{p2 dump}: create the namespace, print the whole tree.
"""

import base64
import json
import time

from twisted.internet import defer

from p2twisted import __version__
from p2twisted.cli.main import writeJSON
from p2twisted.errors import KeyExists, P2Error
from p2twisted.store import keys
from p2twisted.store.common import MAX_OPS, Delete, Put


def register(subparsers):
    init = subparsers.add_parser(
        "init", help="create the p2 namespace in the store",
        description="Create the p2 namespace in the coordination store. Refuses when one "
                    "exists already, unless --force is given, which deletes everything in it first.")
    init.add_argument("--force", action="store_true",
                      help="delete an existing namespace (every key in it) and start afresh")
    init.set_defaults(run=runInit)

    dump = subparsers.add_parser(
        "dump", help="print every key in the store",
        description="Print every key of the namespace with its value, sorted by key.")
    dump.add_argument("--json", action="store_true",
                      help="print a JSON object {key: {value, version, ephemeral}}")
    dump.set_defaults(run=runDump)


def marker():
    """
    @return: the bytes of the namespace marker written by C{p2 init}.
    """
    return json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "p2twisted": __version__}, sort_keys=True).encode()


@defer.inlineCallbacks
def ensureNamespace(store):
    """
    Create the namespace marker unless it exists: every verb that writes
    does, so a store p2 wrote into is a p2 namespace without 'p2 init'.

    @return: L{Deferred} firing with whether it was created.
    """
    if (yield store.get(keys.NAMESPACE_MARKER)) is not None:
        return False
    try:
        yield store.create(keys.NAMESPACE_MARKER, marker())
    except KeyExists:
        return False
    return True


@defer.inlineCallbacks
def initNamespace(store, force=False):
    """
    Create the namespace marker, deleting everything first when C{force}.
    Keys only in p2's trees (L{keys.TREES}) without the marker are a
    namespace p2 made before anyone ran init: they are kept and marked.

    @return: L{Deferred} firing with the number of keys deleted.
    @raise P2Error: when a namespace exists (or keys p2 did not write) and
        C{force} is false.
    """
    existing = yield store.list("")
    if existing and not force:
        if keys.NAMESPACE_MARKER not in existing and all(
                keys.parse(k)[0] in keys.TREES for k in existing):
            # Written by p2 (its verbs, its agents) before anyone ran init.
            yield ensureNamespace(store)
            return 0
        what = ("a p2 namespace" if keys.NAMESPACE_MARKER in existing
                else "%d keys that are not a p2 namespace" % (len(existing),))
        raise P2Error("%s already holds %s; use 'p2 init --force' to delete it and start afresh"
                      % (store.url, what))
    doomed = sorted(existing, reverse=True)  # children before parents
    for start in range(0, len(doomed), MAX_OPS):
        yield store.transaction([Delete(k) for k in doomed[start:start + MAX_OPS]])
    yield store.transaction([Put(keys.NAMESPACE_MARKER, marker())])
    return len(doomed)


@defer.inlineCallbacks
def runInit(options):
    store = yield options.openStore()
    try:
        deleted = yield initNamespace(store, options.force)
    finally:
        yield store.close()
    if deleted:
        options.out.write("deleted %d existing keys\n" % (deleted,))
    options.out.write("initialised a p2 namespace in %s\n" % (store.url,))
    return 0


def describeValue(value):
    """
    @return: C{(text, encoding)}: the value as text when it is UTF-8, else
        base64.
    """
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


def formatTree(entries):
    """
    @param entries: C{{key: Entry}}.
    @return: the text of C{p2 dump}: each key on a line, its value indented
        below it.
    """
    lines = []
    for key in sorted(entries):
        entry = entries[key]
        text, encoding = describeValue(entry.value)
        flags = []
        if entry.owner:
            flags.append("ephemeral")
        if encoding != "utf-8":
            flags.append(encoding)
        lines.append(key + ("  (%s)" % ", ".join(flags) if flags else ""))
        for line in text.rstrip("\n").splitlines():
            lines.append("    " + line)
    return "".join(line + "\n" for line in lines)


def treeJSON(entries):
    result = {}
    for key in sorted(entries):
        entry = entries[key]
        text, encoding = describeValue(entry.value)
        result[key] = {"value": text, "encoding": encoding, "version": entry.version,
                       "ephemeral": entry.owner is not None}
    return result


@defer.inlineCallbacks
def runDump(options):
    store = yield options.openStore()
    try:
        entries = yield store.list("")
    finally:
        yield store.close()
    if options.json:
        writeJSON(options.out, treeJSON(entries))
    elif not entries:
        options.err.write("%s is empty; create a namespace with 'p2 init'\n" % (store.url,))
    else:
        options.out.write(formatTree(entries))
    return 0
