# -*- test-case-name: tests.test_cli_service -*-
"""
C{p2 deploy --wait}: show progress until every node runs the deployed
manifest (reality SHA = intent SHA, agent state C{running}) and that node's
agent reports it passing for this manifest (C{health/<pod>/<node>}): its
status check, or for a pod without one its services up the agent's
C{min_uptime} (so a pod whose process keeps exiting is never done).
"""

from twisted.internet import defer, task

from p2twisted import services
from p2twisted.cli.services_common import thisHost, writeLogTail
from p2twisted.errors import P2Error

#: Seconds between two looks at the store.
INTERVAL = 0.2

#: A node whose agent failed this many attempts in a row while we watched
#: (the same manifest, retried with backoff: about 7 s) is given up on at
#: once, with the agent's error, rather than at the timeout.
FAILED_ATTEMPTS = 3


def healthy(state, sha):
    """
    @return: whether the agent reports the pod passing its check for C{sha}.
    """
    health = state["health"]
    return health is not None and health["sha"] == sha and health["status"] == "passing"


def describe(state, sha):
    """
    @return: a node's progress in a line: the agent's state of the pod, the
        version still running, its health once it runs C{sha}, the last error.
    """
    text = state["state"] or "waiting for the agent"
    if state["reality"] and state["reality"] != state["intent"]:
        text += ", still running %s" % (state["reality"][:12],)
    health = state["health"]
    if state["reality"] == sha:
        if health is None or health["sha"] != sha:
            text += ", waiting for its health check"
        else:
            text += ", health %s (%s)" % (health["status"], services.oneLine(health["output"]))
    if state.get("crash_loop"):
        text += ", crash-looping"
    if state["error"]:
        text += ": %s" % (services.oneLine(state["error"]),)
    return text


def agentsHere(snapshot):
    """
    @return: the nodes whose agent runs on this host (its facts' hostname),
        sorted: a deploy to this host's node name while its agent runs under
        another (the demo's C{demo}) waits for nothing.
    """
    import socket

    from p2twisted.records import CorruptRecord
    here = socket.gethostname()
    found = []
    for node in snapshot.nodes():
        try:
            facts = snapshot.machineFacts(node)
        except CorruptRecord:
            continue
        if facts is not None and facts.facts.get("hostname") == here:
            found.append(node)
    return found


@defer.inlineCallbacks
def waitDeployed(store, manifest, nodes, timeout, out, reactor, logTail=None):
    """
    Wait until every node of C{nodes} runs C{manifest}, printing each
    change of a node's state to C{out}.

    @param logTail: callable returning the end of the pod's logs on this
        host (L{services_common.logTail}), shown at the timeout when this
        host is late.
    @raise P2Error: at C{timeout} seconds, saying which nodes are not there.
    """
    sha = manifest.sha()
    deadline = reactor.seconds() + timeout
    shown = {}
    done = set()
    agentless = set()
    failures = {}  # node -> the failed attempt counts seen while waiting
    while True:
        snapshot = yield services.readPods(store)
        for node in nodes:
            if node in done:
                continue
            state = services.podState(snapshot, manifest.id, node)
            if not snapshot.agentUp(node) and node not in agentless:
                agentless.add(node)
                here = agentsHere(snapshot) if node == thisHost() else []
                hint = ("; this host's agent runs as node %s: deploy with --node %s"
                        % (", ".join(here), here[0]) if here else "")
                out.write("  %s: no agent has registered there yet (start one with "
                          "'p2 start'%s)\n" % (node, hint))
            line = describe(state, sha)
            if state["intent"] != sha:
                raise P2Error("the intent of %s on %s changed while waiting (now %s); "
                              "someone else deployed it" % (manifest.id, node,
                                                             (state["intent"] or "none")[:12]))
            if shown.get(node) != line:
                shown[node] = line
                out.write("  %s: %s\n" % (node, line))
            if state["reality"] == sha and state["state"] == "running" and healthy(state, sha):
                done.add(node)
            elif state["state"] == "refused" and _refused(snapshot, node, manifest.id, sha):
                out.flush()
                raise P2Error("the agent of %s refused %s: %s; what ran there keeps running "
                              "(see README.rst, 'A signed fleet')" % (
                                  node, manifest.id,
                                  services.oneLine(state["error"] or "no reason given")))
            elif state["state"] == "failed" and isinstance(state["attempts"], int):
                seen = failures.setdefault(node, set())
                seen.add(state["attempts"])
                if len(seen) >= FAILED_ATTEMPTS:
                    out.flush()
                    raise P2Error("%s failed on %s %d times in a row while waiting: %s; "
                                  "the agent keeps retrying; see 'p2 logs %s'" % (
                                      manifest.id, node, len(seen),
                                      services.oneLine(state["error"] or "no error given"),
                                      manifest.id))
            out.flush()
        if len(done) == len(nodes):
            out.write("%s is running on %s\n" % (manifest.id, ", ".join(nodes)))
            return
        if reactor.seconds() > deadline:
            late = [n for n in nodes if n not in done]
            if logTail is not None and thisHost() in late:
                writeLogTail(out, logTail(), "  %s: " % (thisHost(),))
                out.flush()
            raise P2Error("%s is not running on %s after %gs (%s); %ssee 'p2 logs %s'" % (
                manifest.id, ", ".join(late), timeout,
                "; ".join("%s: %s" % (n, shown.get(n, "unknown")) for n in late),
                "start an agent with 'p2 start', then " if agentless & set(late) else "",
                manifest.id))
        yield task.deferLater(reactor, INTERVAL, lambda: None)


def _refused(snapshot, node, podId, sha):
    """
    @return: whether the agent of C{node} refused C{sha} as its intent now
        holds it (C{status/pods/<node>/<pod>}); not a refusal of the same
        manifest unsigned, written before.
    """
    from p2twisted.records import CorruptRecord
    from p2twisted.store import keys
    try:
        status = snapshot.podStatus(node, podId)
    except CorruptRecord:
        return False
    return status is not None and status.refuses(sha, snapshot.version(keys.intent(node, podId)))
