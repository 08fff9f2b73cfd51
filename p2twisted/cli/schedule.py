# -*- test-case-name: tests.test_cli_namespace -*-
"""
C{p2 schedule} and C{p2 unschedule}: write and remove intent for a node.
"""

import socket

from twisted.internet import defer

from p2twisted import intent
from p2twisted.errors import P2Error
from p2twisted.cli.manifest import readManifest
from p2twisted.store.common import checkKey


def register(subparsers):
    sched = subparsers.add_parser(
        "schedule", help="write a pod manifest into a node's intent",
        description="Validate a pod manifest and write it to intent/<node>/<pod_id>; the "
                    "node's agent installs and runs it.")
    sched.add_argument("manifest", metavar="FILE",
                       help="pod manifest (YAML, may be signed: p2 sign); - reads stdin")
    sched.add_argument("--node", default=None, help="target node (default: this host's name)")
    sched.set_defaults(run=runSchedule, writes=True)

    unsched = subparsers.add_parser(
        "unschedule", help="remove a pod from a node's intent",
        description="Delete intent/<node>/<pod_id>; the node's agent halts and uninstalls it.")
    unsched.add_argument("pod", metavar="POD_ID")
    unsched.add_argument("--node", default=None, help="target node (default: this host's name)")
    unsched.set_defaults(run=runUnschedule, writes=True)


def nodeName(name):
    """
    @return: C{name}, or this host's short name, checked as a key segment.
    """
    name = name or socket.gethostname().split(".")[0]
    if "/" in name:
        raise P2Error("node name %r must not contain '/'" % (name,))
    checkKey(name)
    return name


@defer.inlineCallbacks
def runSchedule(options):
    manifest = readManifest(options.manifest)
    node = nodeName(options.node)
    store = yield options.openStore()
    try:
        yield intent.schedule(store, node, manifest)
    finally:
        yield store.close()
    options.out.write("scheduled %s (sha %s) on %s\n" % (manifest.id, manifest.sha(), node))
    return 0


@defer.inlineCallbacks
def runUnschedule(options):
    node = nodeName(options.node)
    store = yield options.openStore()
    try:
        removed = yield intent.unschedule(store, node, options.pod)
    finally:
        yield store.close()
    if not removed:
        raise P2Error("%s is not scheduled on %s; nothing removed" % (options.pod, node))
    options.out.write("unscheduled %s from %s\n" % (options.pod, node))
    return 0
