# -*- test-case-name: tests.test_cli_tasks -*-
"""
C{p2 run NAME TASK [ARGS]} and C{p2 logs NAME [-f]}: a service's template
tasks and its pods' logs, on every node it is deployed to.

Both ask each node's agent through the store (C{requests/<node>/<id>}, see
L{p2twisted.agent.requests}), so they work from any host that reaches the
store.  A task is the executable C{tasks/<TASK>} of the pod's launchable,
run by the agent exactly as it runs the pod.  When this host's agent is not
running, C{p2 logs} reads this host's log files itself.
"""

import argparse
import math

from twisted.internet import defer, task

from p2twisted import services
from p2twisted.agent import podlogs
from p2twisted.cli.agentrequests import ask
from p2twisted.cli.main import withStore
from p2twisted.cli.services_common import stateDir
from p2twisted.cli.schedule import nodeName
from p2twisted.errors import P2Error, UsageError
from p2twisted.records import DEFAULT_TIMEOUT, KILL_GRACE
from p2twisted.store import keys
from p2twisted.templates import getTemplate

#: Seconds between two looks at followed logs.
FOLLOW_INTERVAL = 0.5

#: Seconds to wait for an agent's answer to a log read.
LOGS_TIMEOUT = 30.0


def register(subparsers):
    run = subparsers.add_parser(
        "run", help="run a template's task on every node of a service",
        description="Run the task TASK of the service's template (see 'p2 describe "
                    "TEMPLATE') on every node the service is deployed to, at once: each "
                    "node's agent runs it in the pod's environment, as the pod's user. Each "
                    "node's output is shown under a '== node ==' header as it ends; Ctrl-C "
                    "stops the task everywhere. Exits 1 if it failed on a node (or a node's "
                    "agent did not answer).")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                     help="terminate the task after this long, kill it %gs later "
                          "(default: %g)" % (KILL_GRACE, DEFAULT_TIMEOUT))
    run.add_argument("name", metavar="NAME")
    run.add_argument("task", metavar="TASK")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                     help="the task's arguments, passed as they are: p2's own options "
                          "(--timeout) go before NAME")
    addSigningOptions(run)
    run.set_defaults(run=runTask, writes=True)

    logs = subparsers.add_parser(
        "logs", help="show a service's logs on every node",
        description="Print the end of the logs of the service's pod on every node it is "
                    "deployed to (runit's log/main/current, or the builtin supervisor's log "
                    "file), read by each node's agent; a '== node: service ==' header "
                    "precedes each log when there are several. When the agent of the node "
                    "named after this host is not running, this host's logs are read "
                    "directly. -f keeps printing what is appended until Ctrl-C (a node "
                    "whose logs cannot be read is said once, and followed again when they "
                    "can). Exits 1 if a node's logs could not be read.")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("-f", "--follow", action="store_true", help="follow the logs")
    addSigningOptions(logs)
    logs.set_defaults(run=runLogs)


def addSigningOptions(parser):
    """
    The options signing a request, for agents whose auth policy needs it.
    """
    parser.add_argument("--key", metavar="ID", dest="signing_key",
                        help="sign the requests with this GPG key (agents under an auth policy "
                             "keyring or user carry out only signed requests)")
    parser.add_argument("--ssh-key", metavar="FILE", dest="ssh_signing_key",
                        help="sign the requests with this OpenSSH private key instead")


def requestSigner(options):
    """
    @return: the L{RequestSigner} the options ask for, or C{None}.
    """
    gpgKey = getattr(options, "signing_key", None)
    sshKey = getattr(options, "ssh_signing_key", None)
    if not (gpgKey or sshKey):
        return None
    if gpgKey and sshKey:
        raise UsageError("give --key or --ssh-key, not both")
    from p2twisted.auth.requestsig import RequestSigner
    return RequestSigner(gpgKey=gpgKey, sshKey=sshKey, reactor=options.reactor)


@defer.inlineCallbacks
def deployedService(store, name):
    """
    @return: the nodes service C{name} is deployed to.
    @raise P2Error: if it does not exist or is deployed nowhere.
    """
    yield services.getService(store, name)
    nodes = yield services.deployedNodes(store, name)
    if not nodes:
        raise P2Error("%s is not deployed anywhere; deploy it with 'p2 deploy %s'"
                      % (name, name))
    return nodes


def progress(options, node):
    """
    @return: a callback showing a node's request states on standard error
        when it is a terminal, else C{None}.
    """
    err = options.err
    if not getattr(err, "isatty", lambda: False)():
        return None

    def show(state):
        err.write("  %s: %s\n" % (node, state))
        err.flush()
    return show


def _text(out, text):
    out.write(text)
    if text and not text.endswith("\n"):
        out.write("\n")


def runTask(options):
    return withStore(options, lambda store: _runTask(options, store))


@defer.inlineCallbacks
def _runTask(options, store):
    service = yield services.getService(store, options.name)
    template = getTemplate(service.template)
    if options.task not in template.tasks:
        raise UsageError("template %s has no task %r; its tasks: %s" % (
            template.name, options.task, ", ".join(sorted(template.tasks)) or "none"))
    if not (math.isfinite(options.timeout) and options.timeout > 0):
        raise UsageError("--timeout must be a positive number of seconds")
    nodes = yield deployedService(store, options.name)
    request = {"kind": "task", "pod": options.name, "task": options.task,
               "args": list(options.args), "timeout": options.timeout}
    failed = []
    out = options.out

    def show(answer, node):
        out.write("== %s ==\n" % (node,))
        _text(out, answer.get("output", ""))
        if answer["state"] != "done":
            failed.append(node)
            out.write("task %s failed on %s: %s\n" % (
                options.task, node, answer.get("error") or answer.get("outcome")))
        out.flush()

    def refused(f, node):
        f.trap(P2Error)
        failed.append(node)
        out.write("== %s ==\n%s\n" % (node, f.value))
        out.flush()

    asked = []
    signer = requestSigner(options)
    for node in nodes:
        d = ask(store, options.reactor, node, request, options.timeout + KILL_GRACE + 15,
                onState=progress(options, node), signer=signer)
        asked.append(d.addCallbacks(show, refused, callbackArgs=(node,), errbackArgs=(node,)))
    yield defer.gatherResults(asked, consumeErrors=True)
    if failed:
        raise P2Error("task %s failed on %s" % (options.task, ", ".join(sorted(failed))))
    return 0


class LogSource(object):
    """
    One node's logs of a pod, read from where they were last read.

    @ivar offsets: C{{service name: offset}} after the last read, or
        C{None} before the first (which returns the end of each log).
    """

    def __init__(self, node):
        self.node = node
        self.offsets = None

    @defer.inlineCallbacks
    def read(self):
        """
        @return: L{Deferred} firing with C{[(service name, text)]} of what
            was appended since the last read.
        """
        logs = yield self._read()
        self.offsets = {name: offset for name, (text, offset) in logs.items()}
        return [(name, text) for name, (text, offset) in sorted(logs.items())]


class AgentLogs(LogSource):
    """A node's logs, read by its agent."""

    def __init__(self, node, store, reactor, podId, signer=None):
        LogSource.__init__(self, node)
        self.store = store
        self.reactor = reactor
        self.podId = podId
        self.signer = signer

    @defer.inlineCallbacks
    def _read(self):
        answer = yield ask(self.store, self.reactor, self.node,
                           {"kind": "logs", "pod": self.podId, "offsets": self.offsets},
                           LOGS_TIMEOUT, signer=self.signer)
        if answer["state"] != "done":
            raise P2Error(answer.get("error") or "the agent could not read the logs")
        return {name: (entry["data"], entry["offset"]) for name, entry in answer["logs"].items()}


class LocalLogs(LogSource):
    """This host's logs, read directly (its agent is not running)."""

    def __init__(self, node, state, podId):
        LogSource.__init__(self, node)
        self.state = state
        self.podId = podId

    def _read(self):
        logs = podlogs.readLogs(self.state, self.podId, self.offsets)
        if not logs:
            return defer.fail(P2Error("no logs of %s on this host (its agent is not running "
                                      "and %s has none)" % (self.podId, self.state)))
        return defer.succeed({name: (data.decode("utf-8", "replace"), offset)
                              for name, (data, offset) in logs.items()})


class LogPrinter(object):
    """
    Prints log text, with a C{== node: service ==} header whenever the log
    it comes from changes, if there is more than one.
    """

    def __init__(self, out, headers):
        self.out = out
        self.headers = headers
        self.last = None

    def show(self, node, name, text):
        if not text:
            return
        if self.headers and (node, name) != self.last:
            self.out.write("== %s: %s ==\n" % (node, name))
        self.last = (node, name)
        self.out.write(text)
        self.out.flush()

    def error(self, node, message):
        self.out.write("== %s ==\n%s\n" % (node, message))
        self.out.flush()
        self.last = None


def runLogs(options):
    return withStore(options, lambda store: _runLogs(options, store))


@defer.inlineCallbacks
def _runLogs(options, store):
    nodes = yield deployedService(store, options.name)
    sources = []
    signer = requestSigner(options)
    for node in nodes:
        agent = yield store.get(keys.machine(node))
        if agent is None and node == nodeName(None):  # this host's node, agent down
            sources.append(LocalLogs(node, stateDir(options), options.name))
        else:
            sources.append(AgentLogs(node, store, options.reactor, options.name, signer))
    first = yield _readAll(sources)
    several = len(nodes) > 1 or any(len(logs) > 1 for logs in first
                                    if not isinstance(logs, P2Error))
    printer = LogPrinter(options.out, several)
    failing = set()

    def show(source, result):
        if isinstance(result, P2Error):  # said once, until it reads again
            if source.node not in failing:
                failing.add(source.node)
                printer.error(source.node, result)
            return
        failing.discard(source.node)
        for name, text in result:
            printer.show(source.node, name, text)

    @defer.inlineCallbacks
    def follow(source):
        # Each node at its own pace: one whose agent is slow or gone does
        # not hold the others' lines back.
        while True:
            yield task.deferLater(options.reactor, FOLLOW_INTERVAL, lambda: None)
            show(source, (yield _readAll([source]))[0])
    for source, result in zip(sources, first):
        show(source, result)
    failed = sorted(failing)
    if options.follow:
        yield defer.gatherResults([follow(source) for source in sources])
    if failed:
        raise P2Error("could not read the logs of %s on %s" % (options.name, ", ".join(failed)))
    return 0


@defer.inlineCallbacks
def _readAll(sources):
    """
    @return: L{Deferred} firing with, per source, what it read or the
        L{P2Error} that kept it from reading.
    """
    results = yield defer.DeferredList([s.read() for s in sources], consumeErrors=True)
    found = []
    for ok, result in results:
        if not ok:
            result.trap(P2Error)
            result = result.value
        found.append(result)
    return found
