# -*- test-case-name: tests.test_agent_e2e -*-
"""
What the agent does to one pod: deploy a manifest (fetch, verify, install,
write runtime files, then swap the running version) and remove one.

Deploy order keeps the running version running until its successor is
ready: every launchable of the new manifest is fetched, verified, extracted
and its entry points checked *before* anything of the old version is
stopped.  Only then are old services that are no longer wanted stopped, the
C{current} links flipped, and the new services (re)started.  If starting
them fails, the previous installs are activated and started again.
"""

import os
import posixpath
import shutil
import socket
import sys

from twisted.application import service
from twisted.internet import defer, threads
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted import __version__
from p2twisted.agent import runtime
from p2twisted.agent.artifactauth import ArtifactAuth, fetchAndInstall
from p2twisted.agent.artifacts import ArtifactCache
from p2twisted.agent.fsutil import syncFilesystem
from p2twisted.agent.hooks import HookRunner, podContext
from p2twisted.agent.install import DEFAULT_ENTRY_POINTS, Installer
from p2twisted.agent.interfaces import IPodOperations, ServiceSpec
from p2twisted.agent.layout import (
    PodLayout, StateLayout, cgroupName, podServices, serviceLaunchable, serviceName)
from p2twisted.agent.process import processIdentity, runBounded
from p2twisted.agent.supervisors import kindForState, makeSupervisor
from p2twisted.agent.users import PodUsers
from p2twisted.errors import AgentError, DigestMismatch, ManifestError
from p2twisted.manifest import parseManifest
from p2twisted.metrics import AgentMetrics

log = Logger()


def p2execCommand():
    """
    @return: the argv prefix running C{p2-exec}: this Python running the
        launcher's file directly, without site packages (it needs only the
        standard library, and starts faster).
    """
    from p2twisted.agent import p2exec
    return [sys.executable, "-S", "-E", os.path.abspath(p2exec.__file__)]


def machineFacts(node, labels, supervisor, podAddress=None):
    """
    @return: the facts published in C{machines/<node>}.
    """
    machineId = None
    for path in ("/etc/machine-id", "/sys/class/dmi/id/product_uuid"):
        try:
            with open(path) as f:
                machineId = f.read().strip() or None
        except OSError:
            continue
        if machineId:
            break
    memory = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"node": node, "hostname": socket.gethostname(), "machine_id": machineId,
            "cores": os.cpu_count(), "memory": memory, "agent_version": __version__,
            "process": processIdentity(),
            "labels": labels, "supervisor": supervisor, "pod_address": podAddress}


def checkReachable(path, user):
    """
    @raise AgentError: if C{user} cannot reach C{path} because a directory on
        the way is not searchable by it (a pod would fail to start with only
        "Permission denied" in its log).
    """
    import pwd
    entry = pwd.getpwnam(user)
    if entry.pw_uid == 0:
        return
    groups = {g.gr_gid for g in __import__("grp").getgrall() if user in g.gr_mem}
    groups.add(entry.pw_gid)
    current = os.path.abspath(path)
    while True:
        st = os.stat(current)
        if st.st_uid == entry.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in groups:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            raise AgentError(
                "run_as user %s cannot reach the pod root %s: %s has mode %04o; make it "
                "searchable (chmod o+x) or choose another pod_root"
                % (user, path, current, st.st_mode & 0o7777))
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def installedSHA(path):
    """
    @return: the canonical SHA of the manifest at C{path} (a pod's current
        manifest), or C{None} when it is missing or not a valid manifest.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    try:
        return parseManifest(raw).sha()
    except ManifestError:
        return None


def _settled(d, podId, what="runtime files"):
    """
    @return: L{Deferred} firing once C{d} (or C{None}), writing the pod's
        C{what}, abandoned because the deploy failed otherwise, has ended;
        its failure is logged.
    """
    if d is None:
        return defer.succeed(None)
    return d.addErrback(lambda f: log.failure("writing the {what} of {pod}", f,
                                              pod=podId, what=what))


@implementer(IPodOperations)
class PodOperations(object):
    """
    Deploys and removes pods on this machine.

    @param supervisor: an L{ISupervisor}.
    @param artifacts: an L{ArtifactCache}.
    @param installer: an L{Installer}.
    @param metrics: the L{AgentMetrics} timing installs and launches, and
        counting hook runs (default: new ones).
    """

    def __init__(self, config, reactor, supervisor, artifacts, installer, p2exec=None,
                 isRoot=None, hooks=None, metrics=None):
        self.config = config
        self.reactor = reactor
        self.supervisor = supervisor
        self.artifacts = artifacts
        self.installer = installer
        self.p2exec = p2exec or p2execCommand()
        self.isRoot = (os.getuid() == 0) if isRoot is None else isRoot
        self._warnedRunAs = set()
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.hooks = hooks if hooks is not None else HookRunner(config, reactor,
                                                                metrics=self.metrics)
        #: runit's chpst, when pods may start without p2-exec (see
        #: L{runtime.chpstArgv}): p2-exec is not configured and chpst is here
        #: (and, from L{fromConfig}, this process's limits are raised).
        self.chpst = shutil.which("chpst") if p2exec is None else None
        self.users = PodUsers(config.stateDir, config.podRoot, config.createUsers,
                              getattr(config, "allowedRunAs", ()), self.isRoot)
        self._usersLock = defer.DeferredLock()
        #: C{{pod id: SHA}} of the manifest whose install last failed, per
        #: pod (L{_deploy} prepares no services for it again).
        self._failed = {}
        self._userClaims = {}

    def _inThread(self, f, *args):
        """
        Run C{f(*args)} in the injected reactor's thread pool.

        @return: L{Deferred} firing with its result.
        """
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    @classmethod
    def fromConfig(cls, config, reactor, metrics=None):
        """
        @return: the operations an L{AgentConfig} asks for.
        """
        state = StateLayout(config.stateDir)
        for path in (config.podRoot, state.serviceDir, state.artifactsDir):
            os.makedirs(path, exist_ok=True)
        supervisor = makeSupervisor(kindForState(config.supervisor, state), state, reactor)
        artifacts = ArtifactCache(state, reactor, idleTimeout=config.fetchTimeout,
                                  maxBytes=config.artifactCacheBytes,
                                  artifactDir=config.artifactDir)
        artifacts.auth = ArtifactAuth.fromSettings(config.artifactAuth, artifacts, reactor)
        installer = Installer(reactor, maxExpandedBytes=config.maxExpandedBytes,
                              podMaxExpandedBytes=config.podMaxExpandedBytes,
                              diskBudget=config.diskBudget)
        p2exec = config.p2exec.split() if config.p2exec else None
        ops = cls(config, reactor, supervisor, artifacts, installer, p2exec, metrics=metrics)
        if ops.chpst and not runtime.raiseOwnLimits(ops.isRoot):
            log.warn("pods start through p2-exec: this agent's soft limits cannot all be "
                     "raised to its hard limits")
            ops.chpst = None
        return ops

    def requestHandlers(self):
        """
        @return: the handlers of the requests this node's agent takes
            (L{p2twisted.agent.requests}): tasks and log reads.
        """
        from p2twisted.agent.tasks import RequestHandlers
        return RequestHandlers(self.reactor, self.config.podRoot, self.config.stateDir,
                               self.p2exec, self.isRoot).handlers()

    def healthChecker(self):
        """
        @return: the L{IHealthChecker} of this machine's pods: their status
            endpoints, or their services' uptime for pods without one.
        """
        from p2twisted.agent.health import (
            HTTPHealthChecker, PodHealthChecker, ServiceUptimeChecker)
        return PodHealthChecker(HTTPHealthChecker(self.reactor, address=self.config.podAddress),
                                ServiceUptimeChecker(self.supervisor, self.config.minUptime))

    def facts(self):
        return machineFacts(self.config.node, self.config.labels, self.supervisor.name,
                            self.config.podAddress)

    def service(self):
        """
        @return: a service that releases the supervisor and the HTTP pool
            when the agent stops (runit pods keep running).
        """
        ops = self

        class Closer(service.Service):
            def stopService(self):
                service.Service.stopService(self)
                return defer.gatherResults([ops.artifacts.close(), ops.supervisor.close()])
        return Closer()

    def installedPods(self):
        """
        @return: C{{pod_id: current_manifest.yaml bytes}} of the pods on disk.
        """
        found = {}
        try:
            names = sorted(os.listdir(self.config.podRoot))
        except OSError:
            return found
        for podId in names:
            path = PodLayout(self.config.podRoot, podId).currentManifest
            try:
                with open(path, "rb") as f:
                    found[podId] = f.read()
            except OSError:
                continue
        return found

    # -- deploy ------------------------------------------------------------

    def deploy(self, manifest, old):
        """
        Make C{manifest} the running version of its pod (C{old}, the manifest
        in reality, or C{None}).

        @return: L{Deferred} firing once every entry point is running;
            failing with an L{AgentError} that says what went wrong, in which
            case the previous version keeps (or is again) running; a
            C{run_as} the agent may not use (L{PodUsers.ensure}) fails it
            before anything is installed.
        """
        d = self._withUser(manifest, self._deploy, old)
        if old is not None and old.runAs != manifest.runAs:
            d.addCallback(lambda _: self._removeUnusedUsers())
            d.addCallback(lambda _: None)
        return d

    @defer.inlineCallbacks
    def _deploy(self, manifest, user, old):
        layout = PodLayout(self.config.podRoot, manifest.id)
        context = podContext(layout, manifest)
        yield self.hooks.run("before_install", context)
        # The runtime files are written under temporary names while the
        # artifacts install (nothing reads those; the install's flush
        # covers them), and take their names only once every install
        # succeeded: a failed deploy leaves the running version's as they
        # were.
        staging = self._inThread(self._stageRuntime, manifest, layout, user)
        # Its services are prepared meanwhile too (a new pod's runsvs
        # started, holding them down; runit's for a restart within its
        # pause).
        # (Not again when this manifest's last deploy failed: its retries
        # would start and remove runsvs each time.)
        prepared, existing = {}, ()
        if self._failed.get(manifest.id) != manifest.sha():
            # (Listed even for a pod reality names no version of: one may
            # run, started by an agent stopped before it recorded it, or
            # recorded by another writer since reality was read; a failed
            # deploy must not remove its services.)
            existing = set((yield self._podServices(manifest.id)))
            prepared = self._prepare(manifest, layout, user)
        installs = {}
        installing = self.reactor.seconds()
        try:
            for launchableId, launchable in manifest.launchables.items():
                installs[launchableId] = yield self._install(layout, launchableId, launchable)
        except DigestMismatch:
            self._failed[manifest.id] = manifest.sha()
            yield self._discardStaged(staging, manifest.id)
            yield self._unprepare(prepared, manifest, existing)
            yield self.hooks.run("after_auth_fail", context)
            raise
        except Exception:
            self._failed[manifest.id] = manifest.sha()
            yield self._discardStaged(staging, manifest.id)
            yield self._unprepare(prepared, manifest, existing)
            raise
        self._failed.pop(manifest.id, None)
        try:
            staged = yield staging
            yield self._inThread(self._commitRuntime, staged, layout, user)
            self.metrics.installSeconds.labels(manifest.id).observe(
                self.reactor.seconds() - installing)
            yield self.hooks.run("after_install", context)
            specs = self._specs(manifest, layout, user, installs)
            # (Each start waits for its service's preparation anyway; the
            # unwanted, found next, may be prepared ones.)
            yield defer.DeferredList(list(prepared.values()))
        except Exception:
            yield self._unprepare(prepared, manifest, existing)
            raise
        yield self._stopUnwanted(manifest.id, specs, old)
        yield self.hooks.run("before_launch", context)
        # A process cannot reload itself into another account: a change of
        # user restarts even the launchables with no_halt_on_update.
        userChanged = self.isRoot and old is not None and old.runAs != manifest.runAs
        previous = {}
        launching = self.reactor.seconds()
        try:
            for launchableId, (installDir, _) in installs.items():
                previous[launchableId] = yield self.installer.activate(
                    layout, launchableId, installDir, sync=False)
            # The runtime files' and links' new names reach the disk while
            # the services start, before reality says the pod runs (a crash
            # before then leaves reality as it was: the next agent deploys
            # this manifest again); so does the current manifest (a crash
            # before it is written leaves the old one there: the same).
            wrote = defer.gatherResults([
                self._inThread(syncFilesystem, layout.home),
                self._inThread(runtime.atomicWrite, layout.currentManifest, manifest.raw)],
                consumeErrors=True).addErrback(lambda f: f.value.subFailure)
            try:
                for launchableId, launchable in manifest.launchables.items():
                    before = previous[launchableId]
                    changed = before is not None and before != installs[launchableId][0]
                    restart = changed and not launchable.noHaltOnUpdate or userChanged
                    for spec in specs[launchableId]:
                        yield self.supervisor.start(spec, restart=restart)
            except Exception:
                yield _settled(wrote, manifest.id, "current manifest")
                raise
            yield wrote
        except Exception:
            yield self._rollBack(layout, installs, previous, specs)
            raise
        yield self._runScript(manifest, layout, user, "bin/enable")
        self.metrics.launchSeconds.labels(manifest.id).observe(
            self.reactor.seconds() - launching)
        yield self.hooks.run("after_launch", context)
        for launchableId in manifest.launchables:
            yield self.installer.prune(layout, launchableId)

    @defer.inlineCallbacks
    def _withUser(self, manifest, f, *args):
        """
        Resolve (or create) the account of C{manifest}'s pod, and call
        C{f(manifest, user, *args)} while that account is claimed for the pod
        (so a removal elsewhere does not delete it meanwhile).
        """
        layout = PodLayout(self.config.podRoot, manifest.id)
        yield self._usersLock.acquire()
        try:
            user, ignored, created = yield self._inThread(
                self.users.ensure, manifest, layout.home)
            self._userClaims[manifest.id] = user
        finally:
            self._usersLock.release()
        if created:
            log.info("created account {user} for pod {pod}", user=user, pod=manifest.id,
                     event="user-created")
        try:
            self._checkUser(manifest, user, ignored)
            result = yield f(manifest, user, *args)
        finally:
            self._userClaims.pop(manifest.id, None)
        return result

    def runsAs(self, manifest):
        """
        @return: the account the pod C{manifest} runs as: its C{run_as}
            (resolved when it was deployed), or, not as root, the agent's own
            user (its C{run_as} may not even exist here).
        """
        return runtime.podUser(manifest, self.isRoot)

    def _checkUser(self, manifest, user, ignored):
        checkReachable(self.config.podRoot, user)
        if ignored and manifest.id not in self._warnedRunAs:
            self._warnedRunAs.add(manifest.id)
            log.warn("pod {pod}: run_as {runAs} ignored; the agent is not root, so the pod runs "
                     "as {user}", pod=manifest.id, runAs=manifest.runAs, user=user)

    @defer.inlineCallbacks
    def _install(self, layout, launchableId, launchable):
        if launchable.location is None:
            raise AgentError("launchables.%s: 'version:' needs an artifact registry, and none "
                             "is configured; give the artifact's 'location:' instead"
                             % (launchableId,))
        installDir = yield fetchAndInstall(self.artifacts, self.installer, layout, launchableId,
                                           launchable)
        entries = self.installer.entryPoints(installDir, launchable.entryPoints)
        return installDir, entries

    def _podEnv(self, manifest, layout, configPath):
        """
        @return: the pod env dir's variables (L{runtime.podEnv}) on this
            node: what the env dir holds and what chpst starts pods with.
        """
        return runtime.podEnv(layout, manifest.id, configPath, self.config.podAddress)

    def _stageRuntime(self, manifest, layout, user):
        """
        Write the pod's runtime files (config file, env dirs) under
        temporary names, to be renamed into place by L{_commitRuntime}.

        @return: the L{runtime.StagedFiles}.
        """
        staged = runtime.StagedFiles()
        try:
            configPath = runtime.writeConfig(layout, manifest.sha(), manifest.configYAML(),
                                             staged=staged)
            runtime.writeEnvDir(layout.envDir, self._podEnv(manifest, layout, configPath),
                                staged=staged)
            for launchableId, launchable in manifest.launchables.items():
                runtime.writeEnvDir(layout.launchableEnvDir(launchableId), runtime.launchableEnv(
                    layout, launchableId, launchable.restartTimeout, launchable.env),
                    staged=staged)
        except BaseException:
            staged.abort()
            raise
        return staged

    def _commitRuntime(self, staged, layout, user):
        """
        Rename the runtime files L{_stageRuntime} staged into place, and give
        the pod home to C{user} (not before: until then the running version,
        maybe of another account, keeps its home).
        """
        try:
            staged.commit()
            if self.isRoot:
                import pwd
                entry = pwd.getpwnam(user)
                os.chown(layout.home, entry.pw_uid, entry.pw_gid)
        except OSError as e:
            raise AgentError("cannot write the runtime files: %s" % (e,))

    def _prepare(self, manifest, layout, user):
        """
        Prepare the pod's services (L{ISupervisor.prepare}) as they will be
        if its entry points are the files its manifest names (an entry point
        that is a directory names other services: new ones prepared are
        removed as unwanted).

        @return: C{{service name: Deferred}} firing when each is prepared
            (a failure is logged: L{ISupervisor.start} does it all then).
        """
        entries = {}
        for launchableId, launchable in manifest.launchables.items():
            entries[launchableId] = (None, list(dict.fromkeys(
                posixpath.normpath(str(entry)) for entry in
                (launchable.entryPoints or DEFAULT_ENTRY_POINTS))))
        try:
            specs = self._specs(manifest, layout, user, entries)
        except AgentError:
            return {}  # a bad entry point: the install says so
        prepared = {}
        for spec in (spec for group in specs.values() for spec in group):
            prepared[spec.name] = self.supervisor.prepare(spec).addErrback(
                lambda f, name=spec.name: log.warn(
                    "cannot prepare service {service}: {error}", service=name,
                    error=f.getErrorMessage(), pod=manifest.id))
        return prepared

    @defer.inlineCallbacks
    def _unprepare(self, prepared, manifest, existing):
        """
        Undo what L{_prepare} prepared for a deploy that failed: remove the
        services that did not exist before (not in C{existing}), discard
        what was prepared for the others.
        """
        yield defer.DeferredList(list(prepared.values()))
        for name in sorted(prepared):
            try:
                if name in existing:
                    yield self.supervisor.unprepare(name)
                else:
                    yield self.supervisor.remove(name, self._stopTimeout(manifest))
            except Exception as e:
                log.warn("cannot remove prepared service {service}: {error}", service=name,
                         error=str(e), pod=manifest.id)

    def _discardStaged(self, staging, podId):
        """
        @return: L{Deferred} firing once the runtime files C{staging} (a
            L{Deferred} of L{_stageRuntime}) staged for a deploy that failed
            are deleted; a failure to stage them is logged.
        """
        staging.addCallback(lambda staged: self._inThread(staged.abort))
        return _settled(staging, podId)

    def _specs(self, manifest, layout, user, installs):
        """
        @return: C{{launchable id: [ServiceSpec]}}.  Each spec's signature is
            the manifest's SHA, which covers everything that reaches a process
            (env, config, entry points, user, cgroup, restart policy, install):
            a changed SHA restarts every service of the pod, an unchanged one
            none (L{ISupervisor.start}).  A launchable with
            C{no_halt_on_update} has none: it reloads itself (but is
            restarted by L{_deploy} when the pod's user changes).
        """
        sha = manifest.sha()
        specs = {}
        for launchableId, launchable in manifest.launchables.items():
            specs[launchableId] = []
            for entry in installs[launchableId][1]:
                argv, env = self._startArgv(manifest, layout, launchableId, user, entry)
                specs[launchableId].append(ServiceSpec(
                    name=serviceName(manifest.id, launchableId, entry), argv=argv, env=env,
                    restartPolicy=launchable.restartPolicy,
                    restartTimeout=launchable.restartTimeout,
                    signature=None if launchable.noHaltOnUpdate else sha))
        return specs

    def _startArgv(self, manifest, layout, launchableId, user, entry):
        """
        @return: C{(argv, env)} starting an entry point as a service: by chpst
            when it can (no cgroup to join, not too many groups, no variable
            only p2-exec may set: L{runtime.chpstArgv}), else by p2-exec.
        """
        launchable = manifest.launchables[launchableId]
        if self.chpst and not launchable.cgroup:
            # The env dirs' variables, as _stageRuntime writes them.
            environment = self._podEnv(manifest, layout, layout.configPath(manifest.sha()))
            environment.update(runtime.launchableEnv(
                layout, launchableId, launchable.restartTimeout, launchable.env))
            started = runtime.chpstArgv(self.chpst, layout, launchableId, user, entry,
                                        environment, switchUser=self.isRoot)
            if started is not None:
                return started
        return runtime.launchableArgv(self.p2exec, layout, manifest, launchableId, user,
                                      entry), {}

    def relaunch(self, manifest, names):
        """
        Start again the services C{names} of a pod that is installed and in
        reality but not kept up (L{unsupervised}): from its C{current}
        installs, without fetching, installing, hooks or C{bin/enable}, and
        leaving its other services (one-shot jobs included) alone.

        @raise AgentError: if an install is missing (then a full deploy is
            needed).
        """
        return self._withUser(manifest, self._relaunch, names)

    @defer.inlineCallbacks
    def _relaunch(self, manifest, user, names):
        layout = PodLayout(self.config.podRoot, manifest.id)
        if (yield self._inThread(installedSHA, layout.currentManifest)) != manifest.sha():
            raise AgentError("pod %s has another manifest installed than %s"
                             % (manifest.id, manifest.sha()))
        installs = {}
        for launchableId, launchable in manifest.launchables.items():
            current = layout.current(launchableId)
            installDir = os.path.realpath(current)
            if not os.path.isdir(installDir):
                raise AgentError("pod %s has no current install of %s to start again"
                                 % (manifest.id, launchableId))
            installs[launchableId] = (installDir, self.installer.entryPoints(
                installDir, launchable.entryPoints))
        specs = self._specs(manifest, layout, user, installs)
        wanted = set(names)
        for launchableId, group in sorted(specs.items()):
            for spec in group:
                if "*" in wanted and manifest.launchables[launchableId].restartPolicy != "never" \
                        or spec.name in wanted:
                    log.info("starting {service} again", service=spec.name, pod=manifest.id,
                             event="relaunch")
                    yield self.supervisor.start(spec, restart=False)

    @defer.inlineCallbacks
    def unsupervised(self, manifest):
        """
        Which of the pod's services its supervisor is not keeping up: all of
        them when it has none, or the ones no supervisor runs any more (the
        builtin supervisor's die with the agent; a runsv may be killed).
        Entry points with restart policy C{never} run once and are not
        counted.

        @return: L{Deferred} firing with the sorted names (C{["*"]} when the
            pod has no service at all, or when what is installed is another
            manifest than C{manifest}: then L{relaunch} fails, and the pod
            is deployed again).
        """
        names = yield self._podServices(manifest.id)
        if not names:
            return ["*"]
        layout = PodLayout(self.config.podRoot, manifest.id)
        if (yield self._inThread(installedSHA, layout.currentManifest)) != manifest.sha():
            return ["*"]
        down = []
        for name in names:
            launchable = manifest.launchables.get(serviceLaunchable(name))
            if launchable is not None and launchable.restartPolicy == "never":
                continue
            status = yield self.supervisor.status(name)
            if status is None or not status.wantUp:
                down.append(name)
        return down

    @defer.inlineCallbacks
    def _podServices(self, podId):
        names = yield self.supervisor.services()
        return podServices(names, podId)

    @defer.inlineCallbacks
    def _stopUnwanted(self, podId, specs, old):
        wanted = {spec.name for group in specs.values() for spec in group}
        running = yield self._podServices(podId)
        unwanted = [n for n in running if n not in wanted]
        if old is not None and unwanted:
            layout = PodLayout(self.config.podRoot, podId)
            yield self._runScript(old, layout, self.runsAs(old), "bin/disable")
        for name in unwanted:
            log.info("removing service {service}: not in the new manifest", service=name,
                     pod=podId)
            yield self.supervisor.remove(name, self._stopTimeout(old))
        if old is not None and unwanted:
            yield self._inThread(self._removeCgroups, old, set(specs))

    def _stopTimeout(self, manifest):
        if manifest is None:
            return 60.0
        return max([l.restartTimeout for l in manifest.launchables.values()] or [60.0])

    @defer.inlineCallbacks
    def _rollBack(self, layout, installs, previous, specs):
        for launchableId, before in previous.items():
            if before is None or before == installs[launchableId][0]:
                continue
            try:
                yield self.installer.activate(layout, launchableId, before)
                for spec in specs[launchableId]:
                    yield self.supervisor.start(spec, restart=True)
                log.warn("rolled {launchable} back to {install}", launchable=launchableId,
                         install=before, pod=layout.podId, event="rollback")
            except Exception as e:
                log.error("could not roll {launchable} back to {install}: {error}",
                          launchable=launchableId, install=before, error=str(e),
                          pod=layout.podId)

    @defer.inlineCallbacks
    def _runScript(self, manifest, layout, user, script):
        """
        Run C{bin/enable} or C{bin/disable} of every launchable that has one,
        bounded by the pod's C{termination_grace_period}; failures only warn.
        """
        for launchableId in manifest.launchables:
            path = os.path.join(layout.current(launchableId), script)
            if not os.access(path, os.X_OK):
                continue
            argv = runtime.launchableArgv(self.p2exec, layout, manifest, launchableId, user,
                                          script)
            grace = float(manifest.terminationGracePeriod)
            result = yield runBounded(self.reactor, argv, termAfter=grace, killAfter=grace + 5)
            if result.failed:
                log.warn("{script} of {pod}/{launchable} failed ({outcome}); continuing",
                         script=script, pod=manifest.id, launchable=launchableId,
                         outcome=result.describe())

    # -- remove --------------------------------------------------------------

    def _removeCgroups(self, manifest, keep=()):
        """
        Remove the cgroups p2-exec made for the pod's launchables but those
        in C{keep} (their processes are gone by now); one that cannot go is
        only a warning.
        """
        from p2twisted.agent.p2exec import removeCgroup
        for launchableId, launchable in sorted(manifest.launchables.items()):
            if not launchable.cgroup or launchableId in keep:
                continue
            removed, problems = removeCgroup(cgroupName(manifest.id, launchableId))
            for problem in problems:
                log.warn("cannot remove cgroup {problem}", problem=problem, pod=manifest.id)

    @defer.inlineCallbacks
    def remove(self, manifest, podId):
        """
        Halt and uninstall C{podId} (C{manifest}: the one in reality, or
        C{None} when unknown): run C{bin/disable}, stop and remove its
        services, delete its home.

        @return: L{Deferred} firing when nothing of the pod remains.
        """
        self._failed.pop(podId, None)
        layout = PodLayout(self.config.podRoot, podId)
        context = podContext(layout, manifest)
        if manifest is not None:
            yield self._runScript(manifest, layout, self.runsAs(manifest), "bin/disable")
        for name in (yield self._podServices(podId)):
            yield self.supervisor.remove(name, self._stopTimeout(manifest))
        if manifest is not None:
            yield self._inThread(self._removeCgroups, manifest)
        yield self.hooks.run("before_uninstall", context)
        yield self._inThread(shutil.rmtree, layout.home, True)
        yield self.hooks.run("after_uninstall", context)
        yield self._removeUnusedUsers()

    @defer.inlineCallbacks
    def _removeUnusedUsers(self, patience=10.0, interval=0.5):
        """
        Delete the accounts the agent created that no installed pod uses (or
        is being deployed with) and that run no process (L{PodUsers}); each
        deletion is logged.  An unused account whose processes (a pod's
        processes just killed) are still there is looked at again every
        C{interval} seconds for up to C{patience} seconds, then kept until
        the next removal, which is logged with why; one C{userdel} failed to
        delete is not tried again before the next removal (a warning says
        why).  An unreadable account record is logged, not raised: it keeps
        every account, and fails deploys, not the removal of a pod.

        @return: L{Deferred} firing with the names deleted.
        """
        if not self.isRoot:
            return []
        removed = []
        deadline = self.reactor.seconds() + patience
        while True:
            try:
                result = yield self._usersLock.run(self._removeUnusedUsersOnce)
            except AgentError as e:
                # (An unreadable record: the pod itself is gone all the same.)
                log.error("not deleting unused pod accounts: {error}", error=str(e))
                return removed
            if result is None:
                return removed
            gone, busy, failed = result
            for name in gone:
                log.info("deleted account {user}: no pod uses it", user=name,
                         event="user-deleted")
            removed += gone
            if not busy or self.reactor.seconds() >= deadline:
                break
            yield deferLater(self.reactor, interval, lambda: None)
        for name, why in busy:
            log.info("keeping unused account {user} for now: {why}", user=name, why=why)
        for name, why in failed:
            log.warn("cannot delete unused account {user}: {why}; trying again at the next "
                     "removal", user=name, why=why, event="user-delete-failed")
        return removed

    def _removeUnusedUsersOnce(self):
        inUse = set(self._userClaims.values())
        for podId, raw in sorted(self.installedPods().items()):
            try:
                inUse.add(parseManifest(raw).runAs)
            except Exception as e:
                log.warn("not deleting unused pod accounts: the manifest of installed pod "
                         "{pod} does not parse ({error})", pod=podId, error=str(e))
                return None
        return self._inThread(self.users.removeUnused, inUse)
