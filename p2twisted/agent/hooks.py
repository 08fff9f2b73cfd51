# -*- test-case-name: tests.test_agent_hooks -*-
"""
Running hooks: executables the agent runs at fixed moments of its workflow
(reference/p2.md section 4, "Hooks", with P2's gaps closed).

Events (L{EVENTS}), in workflow order::

    agent_init        once, when the agent has opened the store
    before_install    a pod is about to be fetched and installed
    after_install     its launchables are installed, runtime files written
    before_launch     just before its services are (re)started
    after_launch      its services run
    before_uninstall  a pod's services are stopped; its files still exist
    after_uninstall   its files are gone
    after_auth_fail   the auth policy refused a manifest (a pod's, or a hook
                      pod's), or a pod's artifact failed verification (digest
                      mismatch, or refused by artifact_auth)

Where hooks come from, looked up afresh at every run (so a hook pod that was
just installed takes effect at once):

  - C{<hooks_root>/exec/<event>/}: links to the launch scripts of hook pods
    (L{p2twisted.agent.hookpods}), named C{<pod_id>_<launchable>_<script>};
  - C{<hooks_directory>/<event>/}: the local hooks directory of the agent
    config, one subdirectory per event;
  - C{<hooks_directory>/} itself, P2 style: files directly in it run for
    I{every} event and filter on C{$HOOK_EVENT}.

Every entry not starting with a dot (directories excepted) is a hook; one
that is missing (a dangling link) or not executable is recorded as failed
and not run.  The hooks of an event run one at a time in name order, as the
agent's user, with the working directory C{/} and a cleared environment
holding only C{HOOK} (the hook's name), C{HOOK_EVENT}, C{HOOKED_NODE},
C{HOOKED_POD_ID}, C{HOOKED_POD_HOME}, C{HOOKED_POD_MANIFEST} (a temporary
copy of the pod's manifest, deleted when the hook ends), C{HOOKED_CONFIG_PATH},
C{HOOKED_ENV_PATH}, C{HOOKED_POD_UNIQUE_KEY} (empty when not applicable,
e.g. for C{agent_init}), C{PATH} (L{HOOK_PATH}) and C{P2_RUN_ID} (what ties
the hook's processes to its run, L{p2twisted.agent.runscope}).

Each hook runs with L{runBounded}, in a cgroup of its own: SIGTERM to every
process of the run after C{hook_term_after} seconds (30), SIGKILL after
C{hook_kill_after} (60), when the agent also stops reading its output; when
it ends none of its processes remain, even one that left its process group
and session with C{setsid}.  Its output goes to the agent log, one event per
line prefixed with the hook's name, and each run's outcome is written to
C{status/hooks/<node>/<event>/<hook>}.

A failing hook never blocks, unless it is named in C{hooks_required} and the
event is one of L{BLOCKING_EVENTS}: then the run stops there and fails with
L{HookFailed}, and the pod's worker retries the deploy with its backoff.
"""

import os
import re
import stat
import tempfile
import time

import attr
from twisted.internet import defer
from twisted.logger import Logger

from p2twisted.agent.process import runBounded
from p2twisted.errors import AgentError
from p2twisted.metrics import AgentMetrics
from p2twisted.records import EVENTS, HookStatus
from p2twisted.store import keys

#: Events during which a failing required hook stops the install.
BLOCKING_EVENTS = ("before_install", "after_install", "before_launch")

#: C{PATH} of a hook's environment.
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: How many of its last output lines a status record keeps.
STATUS_LINES = 20

OK, FAILED, TIMEOUT, MISSING, NOT_EXECUTABLE = (
    "ok", "failed", "timeout", "missing", "not_executable")

_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")

log = Logger()


class HookFailed(AgentError):
    """
    A required hook failed; the event (and the install) cannot proceed.

    @ivar event: the event.
    @ivar hook: the hook's name.
    @ivar outcome: what happened, e.g. C{"exit 3"}.
    """

    def __init__(self, event, hook, outcome, podId=None, detail=""):
        self.event = event
        self.hook = hook
        self.outcome = outcome
        self.podId = podId
        text = "required hook %s failed at %s%s (%s)" % (
            hook, event, " of pod %s" % (podId,) if podId else "", outcome)
        if detail:
            text += ": %s" % (detail,)
        AgentError.__init__(self, text + "; will retry")


@attr.s(frozen=True)
class HookContext(object):
    """
    The pod an event is about; every field may be C{None}.

    @ivar podId: the pod's id.
    @ivar podHome: its home directory.
    @ivar manifestBytes: its manifest (original bytes).
    @ivar configPath: its C{CONFIG_PATH} file.
    @ivar envPath: its pod env dir.
    @ivar uniqueKey: its C{POD_UNIQUE_KEY}.
    """

    podId = attr.ib(default=None)
    podHome = attr.ib(default=None)
    manifestBytes = attr.ib(default=None, repr=False)
    configPath = attr.ib(default=None)
    envPath = attr.ib(default=None)
    uniqueKey = attr.ib(default=None)


def podContext(layout, manifest=None):
    """
    The context of a pod event.

    @param layout: the pod's L{p2twisted.agent.layout.PodLayout}.
    @param manifest: its L{PodManifest}, or C{None} to use the
        C{current_manifest.yaml} on disk (if any).
    @return: a L{HookContext}.  Build it before deleting a pod's home: the
        manifest bytes it holds are what C{HOOKED_POD_MANIFEST} gets.
    """
    raw = configPath = None
    if manifest is not None:
        raw, configPath = manifest.raw, layout.configPath(manifest.sha())
    else:
        try:
            with open(layout.currentManifest, "rb") as f:
                raw = f.read()
        except OSError:
            pass
    return HookContext(podId=layout.podId, podHome=layout.home, manifestBytes=raw,
                       configPath=configPath, envPath=layout.envDir, uniqueKey=layout.podId)


def hooksRoot(config):
    """
    @return: the agent's hooks root: C{config.hooksRoot}, else
        C{<state_dir>/hooks}.
    """
    return config.hooksRoot or os.path.join(config.stateDir, "hooks")


def execDir(config, event):
    """
    @return: C{<hooks_root>/exec/<event>}, where hook pods' scripts are linked.
    """
    return os.path.join(hooksRoot(config), "exec", event)


def statusName(name):
    """
    @return: C{name} made a valid store key segment.
    """
    name = _UNSAFE.sub("_", name)
    return "_" + name if name in (".", "..") else name or "_"


def _entries(directory):
    # (name, path) of every hook candidate in directory.
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") or os.path.isdir(path):
            continue
        found.append((name, path))
    return found


class HookRunner(object):
    """
    Runs the hooks of an event.

    @param config: the L{p2twisted.agent.config.AgentConfig} (C{node},
        C{hooksRoot}, C{hooksDirectory}, C{hooksRequired}, C{hookTermAfter},
        C{hookKillAfter}).
    @param reactor: spawns the hooks, times them.
    @param metrics: the L{AgentMetrics} counting hook runs (default: new
        ones).
    @ivar store: the L{IStore} status records go to, or C{None} for none; may
        be set once the agent has opened its store.
    """

    def __init__(self, config, reactor, store=None, wallClock=time.time, metrics=None):
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.config = config
        self.reactor = reactor
        self.store = store
        self.wallClock = wallClock

    def hooks(self, event):
        """
        @return: the C{(name, path)} of the hooks of C{event}, in the order
            they run (by name; for equal names: local event directory, local
            directory, hook pods).
        """
        sources = []
        if self.config.hooksDirectory:
            sources.append(os.path.join(self.config.hooksDirectory, event))
            sources.append(self.config.hooksDirectory)
        sources.append(execDir(self.config, event))
        found = []
        for index, directory in enumerate(sources):
            found.extend((name, index, path) for name, path in _entries(directory))
        return [(name, path) for name, _, path in sorted(found)]

    def run(self, event, context=None):
        """
        Run the hooks of C{event}, one after the other.

        @param context: the L{HookContext} of the pod concerned, if any.
        @return: L{Deferred} firing with C{None} once every hook has ended;
            failing with L{HookFailed} when a hook named in C{hooks_required}
            fails during one of L{BLOCKING_EVENTS} (the later hooks are then
            not run), or C{ValueError} for an unknown event.
        """
        if event not in EVENTS:
            return defer.fail(ValueError("unknown hook event %r; expected one of %s"
                                         % (event, ", ".join(EVENTS))))
        return self._run(event, context or HookContext())

    @defer.inlineCallbacks
    def _run(self, event, context):
        required = set(self.config.hooksRequired or ())
        for name, path in self.hooks(event):
            record = yield self._runOne(event, name, path, context)
            isRequired = name in required
            record = attr.evolve(record, required=isRequired)
            self.metrics.hookRuns.labels(event, record.state).inc()
            if record.state == TIMEOUT:
                self.metrics.hookTimeouts.labels(event).inc()
            yield self._writeStatus(event, name, record)
            if record.state == OK:
                continue
            blocking = isRequired and event in BLOCKING_EVENTS
            log.warn("hook {hook} at {hookEvent}{of} failed ({outcome}){what}",
                     hook=name, hookEvent=event, outcome=record.outcome,
                     of=" of pod %s" % (context.podId,) if context.podId else "",
                     what="; it is required: stopping" if blocking else "; continuing",
                     pod=context.podId, node=self.config.node, event="hook-failed")
            if blocking:
                lines = record.output.splitlines()
                raise HookFailed(event, name, record.outcome, context.podId,
                                 lines[-1].strip() if lines else "")

    @defer.inlineCallbacks
    def _runOne(self, event, name, path, context):
        record = HookStatus(name, event, self.config.node, context.podId, path,
                            time=self._now())
        try:
            st = os.stat(path)
        except OSError as e:
            return attr.evolve(record, state=MISSING, outcome="missing: %s" % (e.strerror,))
        if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
            return attr.evolve(record, state=NOT_EXECUTABLE, outcome=(
                "not an executable file (mode %04o)" % (stat.S_IMODE(st.st_mode),)))
        manifestPath = self._manifestCopy(context)
        try:
            result = yield runBounded(
                self.reactor, [path], termAfter=self.config.hookTermAfter,
                killAfter=self.config.hookKillAfter, path="/",
                env=self.environment(event, name, context, manifestPath))
        finally:
            if manifestPath:
                try:
                    os.unlink(manifestPath)
                except OSError:
                    pass
        for line in result.output.decode("utf-8", "replace").splitlines():
            log.info("[{hook}] {line}", hook=name, line=line, hookEvent=event, pod=context.podId,
                     node=self.config.node, event="hook-output")
        if result.timedOut:
            state = TIMEOUT
        else:
            state = OK if result.exitCode == 0 else FAILED
        return attr.evolve(record, state=state, outcome=result.describe(),
                           exit_code=result.exitCode, signal=result.signal,
                           duration=round(result.duration, 3), output=result.tail(STATUS_LINES))

    def environment(self, event, name, context, manifestPath=None):
        """
        @return: the environment of hook C{name} run for C{event}.
        """
        def text(value):
            return "" if value is None else str(value)
        return {
            "HOOK": name,
            "HOOK_EVENT": event,
            "HOOKED_NODE": text(self.config.node),
            "HOOKED_POD_ID": text(context.podId),
            "HOOKED_POD_HOME": text(context.podHome),
            "HOOKED_POD_MANIFEST": text(manifestPath),
            "HOOKED_CONFIG_PATH": text(context.configPath),
            "HOOKED_ENV_PATH": text(context.envPath),
            "HOOKED_POD_UNIQUE_KEY": text(context.uniqueKey),
            "PATH": HOOK_PATH,
        }

    def _manifestCopy(self, context):
        if context.manifestBytes is None:
            return None
        fd, path = tempfile.mkstemp(prefix="hooked-manifest-", suffix=".yaml")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(context.manifestBytes)
        except OSError as e:
            log.warn("cannot write the manifest copy for hooks: {error}", error=str(e))
            return None
        return path

    def _now(self):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wallClock()))

    def _writeStatus(self, event, name, record):
        if self.store is None:
            return defer.succeed(None)
        try:
            key = keys.status("hooks", self.config.node, event, statusName(name))
            d = self.store.put(key, record.toBytes())
        except Exception as e:
            d = defer.fail(e)
        d.addErrback(lambda f: log.warn("cannot record the outcome of hook {hook}: {error}",
                                        hook=name, error=f.getErrorMessage(),
                                        node=self.config.node))
        return d.addCallback(lambda _: None)
