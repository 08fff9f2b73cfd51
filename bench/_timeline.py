"""
A log observer for C{twistd --logger=bench._timeline.observer}: the agent's
log as L{bench._mslog} writes it, and, where a deploy's milliseconds go,
one line per step of the agent's deploy path (C{TL <unix time> <step>}),
stamped as the step begins (C{>}) and as it ends (C{<}, when the step
returns a Deferred: as that fires).  Only the benchmark loads this module;
it wraps the agent's methods when twistd imports it, and changes nothing
they do.

L{timeline} reads those lines back and places them on each run's clock.
"""

import os
import sys
import threading
import time

from twisted.internet import defer

from bench._mslog import observer as _textObserver

_lock = threading.Lock()


def stamp(label):
    line = "TL %.6f %s\n" % (time.time(), label)
    with _lock:
        os.write(2, line.encode())


def _wrap(owner, name, label=None):
    import inspect
    static = isinstance(inspect.getattr_static(owner, name), staticmethod)
    original = getattr(owner, name)
    label = label or name

    def wrapper(*args, **kwargs):
        stamp(label + ">")
        result = original(*args, **kwargs)
        if isinstance(result, defer.Deferred):
            def ended(value):
                stamp(label + "<")
                return value
            result.addBoth(ended)
        else:
            stamp(label + "<")
        return result
    wrapper.__name__ = getattr(original, "__name__", name)
    setattr(owner, name, staticmethod(wrapper) if static else wrapper)


#: (module, attribute path, label): the steps of a deploy, in order.
STEPS = [
    ("p2twisted.agent.service", "AgentService._intentChanged", "watch-news"),
    ("p2twisted.agent.service", "AgentService._converge", "converge"),
    ("p2twisted.agent.worker", "PodWorker._attempt", "attempt"),
    ("p2twisted.agent.pods", "PodOperations.deploy", "deploy"),
    ("p2twisted.agent.pods", "PodOperations._writeRuntime", "runtime-files"),
    ("p2twisted.agent.artifacts", "ArtifactCache.fetch", "artifact-cache"),
    ("p2twisted.agent.install", "Installer._prepare", "install-prepare"),
    ("p2twisted.agent.install", "Installer._extract", "tar"),
    ("p2twisted.agent.install", "Installer._commit", "syncfs+rename"),
    ("p2twisted.agent.pods", "PodOperations._commitRuntime", "commit-runtime"),
    ("p2twisted.agent.pods", "PodOperations._specs", "specs"),
    ("p2twisted.agent.install", "Installer._activate", "activate"),
    ("p2twisted.agent.pods", "PodOperations._stopUnwanted", "stop-unwanted"),
    ("p2twisted.agent.supervisors.runit", "RunitSupervisor._start", "supervisor-start"),
    ("p2twisted.agent.supervisors.runit", "RunitSupervisor._build", "service-dir"),
    ("p2twisted.agent.supervisors.runit", "RunitSupervisor._define", "service-define"),
    ("p2twisted.agent.supervisors.runit", "RunitSupervisor._spawnRunsv", "spawn-runsv"),
    ("p2twisted.agent.supervisors.runit", "RunitSupervisor._ensureRunsv", "runsv-up"),
    ("p2twisted.agent.supervisors.runit", "RunitSupervisor._stopRunning", "stop-old"),
    ("p2twisted.agent.supervisors.runit", "RunitSupervisor._place", "rename-service"),
    ("p2twisted.agent.supervisors.runit", "RunitSupervisor._command", "sv-command"),
    ("p2twisted.agent.pods", "PodOperations._runScript", "enable/disable"),
    ("p2twisted.agent.install", "Installer._prune", "prune"),
]


def _install():
    import importlib
    for module, path, label in STEPS:
        try:
            owner = importlib.import_module(module)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            _wrap(owner, name, label)
        except (ImportError, AttributeError) as e:
            # (A baseline tree without this step.)
            sys.stderr.write("timeline: no %s.%s (%s)\n" % (module, path, e))
    from p2twisted.agent import hooks
    runHooks = hooks.HookRunner.run

    def run(self, event, *args, **kwargs):
        stamp("hooks-%s>" % (event,))
        return runHooks(self, event, *args, **kwargs).addBoth(
            lambda result: stamp("hooks-%s<" % (event,)) or result)
    hooks.HookRunner.run = run
    # Reality written: the worker's create or cas of reality/<node>/<pod>.
    from p2twisted.agent import worker
    original = worker.PodWorker._writeStatus

    def writeStatus(self, state, *args, **kwargs):
        stamp("status-" + state)
        return original(self, state, *args, **kwargs)
    worker.PodWorker._writeStatus = writeStatus


def observer():
    _install()
    return _textObserver()


def timeline(logPath, runs):
    """
    @param runs: C{[(label, start, limit)]}: each run's wall-clock start, and
        when the next one started (stamps from then on are not its own).
    @return: C{{label: {step: [ms from start]}}}: in each run, the first
        stamp of each step (from the first C{attempt>} on, but for the
        watch's), in ms from the run's start.
    """
    stamps = []
    with open(logPath, errors="replace") as f:
        for line in f:
            if line.startswith("TL "):
                _, when, step = line.split(None, 2)
                stamps.append((float(when), step.strip()))
    found = {}
    for label, start, limit in runs:
        seen = {}
        attempting = False
        for when, step in stamps:
            if not start <= when < limit:
                continue
            if step == "attempt>":
                attempting = True
            if step not in seen and (attempting or step.startswith(("watch-news", "converge"))):
                seen[step] = (when - start) * 1000
        for step, ms in seen.items():
            found.setdefault(label, {}).setdefault(step, []).append(ms)
    return found
