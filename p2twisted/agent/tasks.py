# -*- test-case-name: tests.test_agent_requests -*-
"""
What the agent does for the two kinds of request (L{p2twisted.agent.requests}):

  - C{task}: run C{tasks/<TASK> ARGS...} of an installed pod (a template's
    task, e.g. the python template's C{install} and C{packages}) as the
    pod's processes run: through C{p2-exec}, with the pod's env dirs, as its
    user, in its launchable's cgroup (under the same limits), with the
    supervisor's environment; TERM after the request's C{timeout}, KILL 30 s
    later, the whole process group.
  - C{logs}: read the pod's logs (L{p2twisted.agent.podlogs}).

Only executables under C{tasks/} of the pod's installed launchables can be
run: a request names a task, never a command line.
"""

import math
import os
import re

from twisted.internet import defer
from twisted.logger import Logger

from p2twisted.agent import podlogs
from p2twisted.agent.layout import PodLayout
from p2twisted.agent.process import runBounded
from p2twisted.agent.runtime import launchableArgv, podUser
from p2twisted.agent.supervisors import DEFAULT_PATH
from p2twisted.errors import AgentError, ManifestError
from p2twisted.manifest import parseManifest
from p2twisted.records import DEFAULT_TIMEOUT, KILL_GRACE

log = Logger()

#: A task's name: one path segment.
TASK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


#: At most this many bytes of a task's output are kept (the last ones).
MAX_OUTPUT = 256 * 1024


def _text(request, field):
    value = request.get(field)
    if not isinstance(value, str) or not value:
        raise AgentError("the request has no %s" % (field,))
    return value


def installedManifest(podRoot, podId):
    """
    @return: C{(layout, manifest)} of pod C{podId} as installed under
        C{podRoot}.
    @raise AgentError: if it is not installed there, or C{podId} is not
        one path segment.
    """
    if "/" in podId or podId in (".", ".."):
        raise AgentError("%r is not a pod id" % (podId,))
    layout = PodLayout(podRoot, podId)
    try:
        with open(layout.currentManifest, "rb") as f:
            return layout, parseManifest(f.read(), source=layout.currentManifest)
    except OSError:
        raise AgentError("pod %s is not installed on this node (yet)" % (podId,))
    except ManifestError as e:
        raise AgentError("pod %s: its installed manifest is unreadable: %s" % (podId, e))


class RequestHandlers(object):
    """
    The agent's handlers for C{task} and C{logs} requests.

    @param podRoot: where pods are installed.
    @param stateDir: the agent's state directory (its supervisor's logs).
    @param p2exec: the C{p2-exec} argv prefix.
    @param isRoot: whether tasks run as the pod's C{run_as} user (else as
        the agent's user, like the pods themselves).
    """

    def __init__(self, reactor, podRoot, stateDir, p2exec, isRoot):
        self.reactor = reactor
        self.podRoot = podRoot
        self.stateDir = stateDir
        self.p2exec = p2exec
        self.isRoot = isRoot

    def handlers(self):
        """
        @return: C{{kind: callable(request) -> Deferred(answer fields)}}.
        """
        return {"task": self.runTask, "logs": self.readLogs}

    def taskArgv(self, podId, taskName, args):
        """
        @return: the C{p2-exec} argv running C{tasks/<taskName> ARGS} of
            pod C{podId}.
        @raise AgentError: if the pod is not installed or has no such task.
        """
        if not TASK_NAME.fullmatch(taskName):
            raise AgentError("%r is not a task name" % (taskName,))
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise AgentError("a task's arguments must be a list of strings")
        layout, manifest = installedManifest(self.podRoot, podId)
        entry = "tasks/" + taskName
        for launchableId in sorted(manifest.launchables):
            if os.access(os.path.join(layout.current(launchableId), entry), os.X_OK):
                return launchableArgv(self.p2exec, layout, manifest, launchableId,
                                      podUser(manifest, self.isRoot), entry) + list(args)
        raise AgentError("pod %s has no executable %s" % (podId, entry))

    @defer.inlineCallbacks
    def runTask(self, request):
        podId = _text(request, "pod")
        taskName = _text(request, "task")
        argv = self.taskArgv(podId, taskName, request.get("args", []))
        timeout = request.get("timeout", DEFAULT_TIMEOUT)
        if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                or not math.isfinite(timeout) or timeout <= 0):
            raise AgentError("a task's timeout must be a positive number of seconds")
        log.info("running task {task} of pod {pod}", task=taskName, pod=podId,
                 event="task-start")
        # The pod's environment, not the agent's: what its supervisor gives it.
        result = yield runBounded(self.reactor, argv, termAfter=timeout,
                                  killAfter=timeout + KILL_GRACE, env={"PATH": DEFAULT_PATH},
                                  maxOutput=MAX_OUTPUT)
        log.info("task {task} of pod {pod}: {outcome}", task=taskName, pod=podId,
                 outcome=result.describe(), event="task-end")
        return {"state": "failed" if result.failed else "done",
                "exit_code": result.exitCode, "signal": result.signal,
                "outcome": result.describe(), "duration": round(result.duration, 3),
                "output": result.output.decode("utf-8", "replace")}

    def readLogs(self, request):
        podId = _text(request, "pod")
        offsets = request.get("offsets")
        if offsets is not None and not (
                isinstance(offsets, dict)
                and all(isinstance(v, int) and v >= 0 for v in offsets.values())):
            raise AgentError("a log request's offsets must map service names to byte offsets")
        maxBytes = request.get("max_bytes", podlogs.MAX_READ)
        if not isinstance(maxBytes, int) or maxBytes <= 0:
            raise AgentError("a log request's max_bytes must be a positive integer")
        maxBytes = min(maxBytes, podlogs.MAX_READ)
        logs = podlogs.readLogs(self.stateDir, podId, offsets, maxBytes)
        if not logs:
            raise AgentError("pod %s has no logs on this node" % (podId,))
        return defer.succeed({"state": "done", "logs": {
            name: {"data": data.decode("utf-8", "replace"), "offset": offset}
            for name, (data, offset) in logs.items()}})
