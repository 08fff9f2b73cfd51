# -*- test-case-name: tests.test_cli_tutorial -*-
"""
C{p2 run NAME TASK [ARGS]} and C{p2 logs NAME [-f]}: a service's template
tasks and its pods' logs, on this host.

A task is the executable C{tasks/<TASK>} of the pod's launchable, run with
C{p2-exec} exactly as the agent runs the pod (its env dirs, its user, and
the supervisor's environment rather than the caller's).
Tasks run only on the node of this host for now: for the other nodes the
service is deployed to, C{p2 run} says to run it there.
"""

import argparse
import os
import sys

from twisted.internet import defer, task

from p2twisted import services
from p2twisted.cli.services_common import stateDir
from p2twisted.cli.services_wait import isLocal
from p2twisted.errors import P2Error, UsageError
from p2twisted.store import keys
from p2twisted.templates import getTemplate

#: How long a task may run before it is terminated (then killed 30 s later).
TASK_TIMEOUT = 600.0

#: Seconds between two looks at a followed log.
FOLLOW_INTERVAL = 0.2


def register(subparsers):
    run = subparsers.add_parser(
        "run", help="run a template's task on the service's nodes",
        description="Run the task TASK of the service's template (see 'p2 describe "
                    "TEMPLATE') in the pod's environment, as the pod's user, on every node "
                    "the service is deployed to, showing each node's output under a "
                    "'== node ==' header. Tasks run on this host's node only for now; run "
                    "'p2 run' on the other hosts. Exits 1 if a node failed.")
    run.add_argument("name", metavar="NAME")
    run.add_argument("task", metavar="TASK")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                     help="the task's arguments (passed as they are)")
    run.set_defaults(run=runTask)

    logs = subparsers.add_parser(
        "logs", help="show the service's pod logs on this host",
        description="Print the logs of the service's pod on this host (runit's log/main/"
                    "current, or the builtin supervisor's log file); -f keeps printing what "
                    "is appended until Ctrl-C.")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("-f", "--follow", action="store_true", help="follow the logs")
    logs.set_defaults(run=runLogs)


def localConfig(options):
    """
    @return: the L{AgentConfig} an agent started here by C{p2 start} has
        (its state directory and pod root).
    """
    from p2twisted.agent.config import agentConfig
    return agentConfig(getattr(options, "config", None), {"state_dir": stateDir(options)})


def taskArgv(podRoot, podId, taskName, args):
    """
    @return: the C{p2-exec} command line running C{tasks/<taskName>} of the
        pod installed under C{podRoot} as the agent runs it.
    @raise P2Error: if the pod is not installed there or has no such task.
    """
    from p2twisted.agent.layout import PodLayout
    from p2twisted.agent.pods import p2execCommand
    from p2twisted.agent.runtime import currentUser, execArgv
    from p2twisted.manifest import parseManifest
    layout = PodLayout(podRoot, podId)
    try:
        with open(layout.currentManifest, "rb") as f:
            manifest = parseManifest(f.read(), source=layout.currentManifest)
    except OSError:
        raise P2Error("pod %s is not installed under %s yet (is the agent running? see "
                      "'p2 status %s')" % (podId, podRoot, podId))
    entry = "tasks/" + taskName
    for launchableId in sorted(manifest.launchables):
        if os.access(os.path.join(layout.current(launchableId), entry), os.X_OK):
            user = manifest.runAs if os.geteuid() == 0 else currentUser()
            return execArgv(p2execCommand(), layout, launchableId, user, entry) + list(args)
    raise P2Error("pod %s on this host has no executable %s (is it still being "
                  "installed?)" % (podId, entry))


@defer.inlineCallbacks
def runTask(options):
    from p2twisted.agent.process import runBounded
    from p2twisted.agent.supervisors import DEFAULT_PATH
    store = yield options.openStore()
    try:
        service = yield services.getService(store, options.name)
        template = getTemplate(service.template)
        if options.task not in template.tasks:
            raise UsageError("template %s has no task %r; its tasks: %s" % (
                template.name, options.task, ", ".join(sorted(template.tasks)) or "none"))
        nodes = yield services.deployedNodes(store, options.name)
        if not nodes:
            raise P2Error("%s is not deployed anywhere; deploy it with 'p2 deploy %s'"
                          % (options.name, options.name))
        agents = {}
        for node in nodes:
            agents[node] = yield store.get(keys.machine(node))
    finally:
        yield store.close()
    config = localConfig(options)
    out = options.out
    failed = []
    for node in nodes:
        out.write("== %s ==\n" % (node,))
        out.flush()
        if not isLocal(node, agents[node]):
            out.write("tasks run only on the local node for now; run 'p2 run %s %s' on %s\n"
                      % (options.name, options.task, node))
            failed.append(node)
            continue
        try:
            argv = taskArgv(config.podRoot, options.name, options.task, options.args)
        except P2Error as e:
            out.write("%s\n" % (e,))
            failed.append(node)
            continue
        # The pod's environment, not ours: what its supervisor gives it.
        result = yield runBounded(options.reactor, argv, termAfter=TASK_TIMEOUT,
                                  killAfter=TASK_TIMEOUT + 30.0, env={"PATH": DEFAULT_PATH})
        output = result.output.decode("utf-8", "replace")
        out.write(output)
        if output and not output.endswith("\n"):
            out.write("\n")
        if result.failed:
            failed.append(node)
            out.write("task %s failed on %s: %s\n" % (
                options.task, node, "timed out after %gs" % (TASK_TIMEOUT,) if result.timedOut
                else "exit status %s" % (result.exitCode,) if result.exitCode is not None
                else "signal %s" % (result.signal,)))
        out.flush()
    if failed:
        raise P2Error("task %s failed on %s" % (options.task, ", ".join(failed)))
    return 0


def logFiles(state, podId):
    """
    @return: the log files of pod C{podId}'s supervised services under the
        state directory C{state}: runit's C{log/main/current}, or the
        builtin supervisor's C{current.log}.
    """
    from p2twisted.agent.layout import StateLayout
    layout = StateLayout(state)
    try:
        names = sorted(os.listdir(layout.serviceDir))
    except OSError:
        return []
    found = []
    for name in names:
        if not name.startswith(podId + "__"):
            continue
        for rel in (("log", "main", "current"), ("current.log",)):
            path = os.path.join(layout.service(name), *rel)
            if os.path.isfile(path):
                found.append(path)
    return found


def _readFrom(path, offset):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            if size < offset:  # rotated or truncated
                offset = 0
            f.seek(offset)
            return f.read(), f.tell()
    except OSError:
        return b"", offset


def _write(out, data):
    text = data.decode("utf-8", "replace")
    buffer = getattr(out, "buffer", None)
    if buffer is not None and out is sys.stdout:
        out.flush()
        buffer.write(data)
        buffer.flush()
    else:
        out.write(text)
        out.flush()


@defer.inlineCallbacks
def runLogs(options):
    state = stateDir(options)
    files = logFiles(state, options.name)
    if not files:
        raise P2Error("no logs of %s on this host (nothing under %s); is it deployed here "
                      "and the agent running? see 'p2 status %s'"
                      % (options.name, os.path.join(state, "service"), options.name))
    offsets = {}
    for path in files:
        if len(files) > 1:
            options.out.write("== %s ==\n" % (path,))
        data, offsets[path] = _readFrom(path, 0)
        _write(options.out, data)
    if not options.follow:
        return 0
    while True:
        yield task.deferLater(options.reactor, FOLLOW_INTERVAL, lambda: None)
        for path in logFiles(state, options.name):
            data, offsets[path] = _readFrom(path, offsets.get(path, 0))
            if data:
                _write(options.out, data)
