# -*- test-case-name: tests.test_replicate -*-
"""
C{p2 replicate}: roll a manifest out to a list of nodes by hand, a few at a
time, each gated on its health (L{p2twisted.orchestrate.replication}).
"""

from twisted.internet import defer

from p2twisted.cli.rc import number
from p2twisted.errors import P2Error, UsageError

#: The session TTL of the deploy lock: a killed C{p2 replicate}'s lock goes
#: this long after it dies.
LOCK_TTL = 15.0


def register(subparsers):
    from p2twisted.orchestrate.replication import STATUSES
    rep = subparsers.add_parser(
        "replicate", help="roll a manifest out to nodes, health-gated",
        description="Write MANIFEST into the intent of each node of --nodes, worst health "
                    "first, at most (nodes - --min-nodes) at a time, each waiting for its "
                    "agent to run the manifest and report it healthy. Holds the deploy lock "
                    "locks/replication/<pod_id> meanwhile. Refuses nodes without a live agent, "
                    "and nodes whose pod belongs to a replication controller or daemon set "
                    "(unless --ignore-controllers). Ctrl-C stops it: the nodes done stay done, "
                    "those under way keep their new intent, the others are not touched.")
    rep.add_argument("manifest", metavar="MANIFEST",
                     help="pod manifest (YAML, may be signed); - reads stdin")
    rep.add_argument("--nodes", required=True, metavar="N1,N2,...",
                     help="the nodes, comma-separated")
    rep.add_argument("--min-nodes", type=number(int, "a whole number"), default=None,
                     metavar="K", help="nodes left running (not being replaced) at any time "
                                       "(default 1; 0 for a single node)")
    rep.add_argument("--threshold", choices=STATUSES, default="passing",
                     help="the health a node must reach (default passing)")
    rep.add_argument("--timeout", type=number(float), default=None, metavar="SECONDS",
                     help="give up when a node is not healthy this long after it started "
                          "(default: wait)")
    rep.add_argument("--override-lock", action="store_true",
                     help="break another p2 replicate's lock on this pod")
    rep.add_argument("--ignore-controllers", action="store_true",
                     help="replicate to pods of replication controllers and daemon sets too")
    rep.set_defaults(run=runReplicate, writes=True)


def nodeList(text, minNodes=None):
    """
    @param minNodes: C{--min-nodes}, or C{None} for its default (1, or 0
        for a single node).
    @return: C{(nodes, minNodes)}: the node names of C{--nodes}, checked.
    @raise UsageError: for none, a repeated one, a bad name or a
        C{--min-nodes} that leaves no node to replace at once.
    """
    from p2twisted.errors import InvalidKey
    from p2twisted.store.common import checkKey
    nodes = [n.strip() for n in text.split(",") if n.strip()]
    if not nodes:
        raise UsageError("--nodes: expected node names, comma-separated")
    repeated = sorted({n for n in nodes if nodes.count(n) > 1})
    if repeated:
        raise UsageError("--nodes: %s given twice" % (", ".join(repeated),))
    for node in nodes:
        if "/" in node:
            raise UsageError("--nodes: node name %r must not contain '/'" % (node,))
        try:
            checkKey(node)
        except InvalidKey:
            raise UsageError("--nodes: %r is no node name (letters, digits and . _ : -; "
                             "not . or ..)" % (node,))
    if minNodes is None:
        minNodes = min(1, len(nodes) - 1)
    if minNodes >= len(nodes):
        raise UsageError("--min-nodes %d leaves none of the %d node(s) to replace at once; "
                         "expected less than %d" % (minNodes, len(nodes), len(nodes)))
    return nodes, minNodes


@defer.inlineCallbacks
def runReplicate(options):
    from p2twisted.cli.manifest import readManifest
    from p2twisted.cli.progress import Progress
    from p2twisted.orchestrate import replication
    from p2twisted.orchestrate.edit import who
    from p2twisted.orchestrate.snapshot import Snapshot
    manifest = readManifest(options.manifest)
    nodes, minNodes = nodeList(options.nodes, options.min_nodes)
    reactor = options.reactor
    store = yield options.openStore()
    session = run = guard = None
    progress = Progress(options.out)
    state = {"interrupted": False}

    @defer.inlineCallbacks
    def release():
        if guard is not None:
            guard.cancel()
        if session is not None:
            yield session.close()  # its lock goes with it
        yield store.close()

    def interrupted():
        # Ctrl-C: the reactor stops; start no other node, release the lock.
        state["interrupted"] = True
        if run is not None:
            run.stop()
            progress.end("interrupted; the lock is released. " + run.summary())
        return release()
    trigger = reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    try:
        session = yield store.session(LOCK_TTL)
        lock = yield replication.takeLock(store, session, manifest.id, reactor,
                                          override=options.override_lock)
        snapshot = yield Snapshot.read(store)
        refused = replication.refusals(snapshot, manifest.id, nodes, options.ignore_controllers)
        if refused:
            raise P2Error("refusing to replicate %s: %s" % (manifest.id, "; ".join(refused)))
        run = replication.Replication(
            store, manifest, replication.order(snapshot, manifest.id, nodes),
            len(nodes) - minNodes, threshold=options.threshold,
            timeout=options.timeout, clock=reactor, onChange=lambda: progress.show(run.line()),
            who=who(), lock=lock)
        guard = replication.guardLock(store, session, lock, run.lost)
        progress.show(run.line())
        try:
            yield run.run()
        except P2Error as e:
            progress.end("stopped. " + run.summary())
            raise P2Error("replicate %s: %s" % (manifest.id, e))
        progress.end("replicated %s (sha %s) to %s" % (manifest.id, manifest.sha()[:12],
                                                       ", ".join(run.nodes)))
    except GeneratorExit:  # Ctrl-C: the trigger releases everything
        raise
    finally:
        if not state["interrupted"]:
            reactor.removeSystemEventTrigger(trigger)
            yield release()
    return 0
