# -*- test-case-name: tests.test_cli_label -*-
"""
C{p2 label}: change, show and select the labels of nodes, pods and the other
labelled objects.
"""

import argparse
import json

from twisted.internet import defer

from p2twisted.errors import UsageError
from p2twisted.labels import LabelStore, parseChanges, parseSelector
from p2twisted.store import keys

_TYPES = ", ".join(sorted(keys.LABEL_TYPES))


def register(subparsers):
    label = subparsers.add_parser(
        "label", help="change, show and select labels",
        description="Change, show and select the labels of objects. TYPE is one of %s; "
                    "a pod's ID is NODE/POD_ID." % (_TYPES,))
    label.set_defaults(run=runMissing)
    commands = label.add_subparsers(dest="label_command", metavar="COMMAND")

    apply_ = commands.add_parser(
        "apply", help="set and remove labels of one object",
        description="Set labels (key=value) and remove them (key-) on one object, then print "
                    "its labels.")
    _addObject(apply_)
    apply_.add_argument("changes", nargs="+", metavar="CHANGE",
                        help="key=value to set a label, key- to remove one")
    apply_.add_argument("--json", action="store_true", help="print the labels as a JSON object")
    apply_.set_defaults(run=runApply, writes=True)

    show = commands.add_parser(
        "show", help="print the labels of one object",
        description="Print the labels of one object, one key=value a line.")
    _addObject(show)
    show.add_argument("--json", action="store_true", help="print the labels as a JSON object")
    show.set_defaults(run=runShow)

    select = commands.add_parser(
        "select", help="print the objects whose labels match a selector",
        description="Print the ids of the objects of TYPE whose labels match SELECTOR, one a "
                    "line. Selectors: k=v, k==v, k!=v, 'k in (a,b)', 'k notin (a,b)', k, !k; "
                    "commas mean AND; '' matches everything. Nodes are every node known: "
                    "added ('p2 node add'), running an agent or labelled, so '' and '!k' "
                    "match unlabelled nodes too.")
    select.add_argument("type", type=labelType, metavar="TYPE", help=_TYPES)
    select.add_argument("selector", metavar="SELECTOR", help="a label selector")
    select.add_argument("--json", action="store_true",
                        help='print a JSON list of {"id": ..., "labels": {...}}')
    select.set_defaults(run=runSelect)


def _addObject(parser):
    parser.add_argument("type", type=labelType, metavar="TYPE", help=_TYPES)
    parser.add_argument("id", metavar="ID", help="the object's id; for a pod NODE/POD_ID")


def labelType(text):
    """
    An argparse type: a label type.

    @raise argparse.ArgumentTypeError: naming the valid types.
    """
    if text not in keys.LABEL_TYPES:
        raise argparse.ArgumentTypeError(
            "unknown label type %r; expected one of %s" % (text, _TYPES))
    return text


def formatLabels(labels):
    """
    @return: the text of a label map: C{key=value} lines, sorted by key.
    """
    return "".join("%s=%s\n" % (k, labels[k]) for k in sorted(labels))


def _printLabels(options, labels):
    if options.json:
        options.out.write(json.dumps(labels, sort_keys=True) + "\n")
    else:
        options.out.write(formatLabels(labels))


@defer.inlineCallbacks
def _withLabelStore(options, f):
    """
    Open the store, call C{f(labelStore)} and close the store again.

    @return: L{Deferred} firing with C{f}'s result.
    """
    store = yield options.openStore()
    try:
        result = yield f(LabelStore(store))
    finally:
        yield store.close()
    return result


def runMissing(options):
    raise UsageError("'p2 label' needs a command: apply, show or select "
                     "(see 'p2 label --help')")


@defer.inlineCallbacks
def runApply(options):
    changes = parseChanges(options.changes)
    labels = yield _withLabelStore(options, lambda ls: ls.applyLabels(
        options.type, options.id, changes.set, changes.remove))
    _printLabels(options, labels)
    return 0


@defer.inlineCallbacks
def runShow(options):
    labels = yield _withLabelStore(options, lambda ls: ls.getLabels(options.type, options.id))
    _printLabels(options, labels)
    return 0


@defer.inlineCallbacks
def selectNodes(store, selector):
    """
    Select over the node universe: every node holding a node marker,
    running an agent or labelled, labelled or not.

    @return: L{Deferred} firing with a sorted list of C{(node, labels)}.
    """
    from p2twisted.orchestrate.snapshot import Snapshot
    snapshot = yield Snapshot.read(store, (keys.INTENT, keys.MACHINES, keys.labelTree("node")))
    return [(node, snapshot.nodeLabels(node)) for node in snapshot.eligible(selector)]


@defer.inlineCallbacks
def runSelect(options):
    selector = parseSelector(options.selector)
    if options.type == "node":
        store = yield options.openStore()
        try:
            found = yield selectNodes(store, selector)
        finally:
            yield store.close()
    else:
        found = yield _withLabelStore(options, lambda ls: ls.select(options.type, selector))
    if options.json:
        options.out.write(json.dumps([{"id": i, "labels": ls} for i, ls in found],
                                     sort_keys=True) + "\n")
    else:
        options.out.write("".join(i + "\n" for i, _ in found))
    return 0
