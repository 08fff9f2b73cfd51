# -*- test-case-name: tests.test_agent_hookpods -*-
"""
Hook pods: hook manifests scheduled at C{hooks/<event>/<pod_id>} in the store
are installed by every agent, and their launch scripts linked where
L{p2twisted.agent.hooks.HookRunner} finds them (DESIGN.md, "Machine agent")::

    <hooks_root>/pods/<event>/<pod_id>/            the hook pod (PodLayout)
      current_manifest.yaml
      <launchable>/installs/<launchable>_<version>/
      <launchable>/current -> installs/...
    <hooks_root>/exec/<event>/<pod_id>_<launchable>_<script>
        -> <hooks_root>/pods/<event>/<pod_id>/<launchable>/current/<entry>

A hook pod is installed with the same artifact cache and installer as
application pods (digest checks, safe extraction, atomic C{current} flip).
Each entry point of a launchable (default C{bin/launch}) gives one link
named after its file name, C{<pod_id>_<launchable>_launch}; an entry point
that is a directory gives one link per executable in it,
C{<pod_id>_<launchable>_<script>}.  Links point through C{current}, so an
upgrade changes what runs the moment C{current} flips; each link is
replaced atomically (temporary link, then C{rename}).

L{HookSync} watches C{hooks/} and also re-reads it periodically (watches
are hints).  It acts only on snapshots it did read: a failed read changes
nothing.  A key that disappears from a successful snapshot has its links and
pod removed.  An invalid manifest or a failed install is logged, written to
C{status/hooks/<node>/<event>/<pod_id>} and retried at the next snapshot or
resync; meanwhile the previously installed version (if any) stays.  A hook
pod is held to the agent's auth policy like any pod, judged as running as the
agent's user (who runs hooks, whatever its C{run_as}): a refused version is not
installed (the one installed, if any, stays), its status says C{refused} and
why, the C{after_auth_fail} hooks run once, and it is tried again only when
its manifest or the policy changes.
"""

import os
import shutil
import time

import attr
from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from p2twisted.agent import runtime
from p2twisted.agent.artifactauth import fetchAndInstall
from p2twisted.agent.fsutil import replaceLink
from p2twisted.agent.hooks import execDir, hooksRoot, statusName
from p2twisted.agent.layout import PodLayout
from p2twisted.auth.gate import AuthGate
from p2twisted.errors import AgentError, ManifestError
from p2twisted.manifest import parseManifest
from p2twisted.records import EVENTS, HookPodStatus
from p2twisted.store import keys

INSTALLED, INVALID, FAILED, REFUSED = "installed", "invalid", "failed", "refused"

log = Logger()


def podsDir(config, event):
    """
    @return: C{<hooks_root>/pods/<event>}: the pod root of C{event}'s hook pods.
    """
    return os.path.join(hooksRoot(config), "pods", event)


def hookKey(key):
    """
    @return: C{(event, pod_id)} of a C{hooks/<event>/<pod_id>} key, else C{None}.
    """
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == keys.HOOKS and parts[1] in EVENTS:
        return parts[1], parts[2]
    return None


def linkNames(podId, launchableId, entries):
    """
    @param entries: the launchable's entry points, relative paths.
    @return: C{{link name: entry}}: C{<pod_id>_<launchable>_<file name>}, or
        with the entry's whole path (C{/} as C{__}) when file names clash.
    """
    names = {}
    bases = [os.path.basename(entry) for entry in entries]
    for entry, base in zip(entries, bases):
        part = base if bases.count(base) == 1 else entry.replace("/", "__")
        names[statusName("%s_%s_%s" % (podId, launchableId, part))] = entry
    return names




def _ownedLinks(directory, home):
    # {name: path} of the links in directory pointing into home.
    found = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        path = os.path.join(directory, name)
        try:
            target = os.readlink(path)
        except OSError:
            continue
        if target.startswith(home + os.sep):
            found[name] = path
    return found


def setLinks(execDirectory, home, wanted):
    """
    Make the links of one hook pod exactly C{wanted}.

    @param home: the hook pod's home; links pointing into it are its own.
    @param wanted: C{{name: absolute target}}.
    @return: the names of the links added, changed or removed.
    """
    os.makedirs(execDirectory, exist_ok=True)
    changed = [name for name, target in sorted(wanted.items())
               if replaceLink(os.path.join(execDirectory, name), target)]
    for name, path in _ownedLinks(execDirectory, home).items():
        if name not in wanted:
            os.unlink(path)
            changed.append(name)
    return changed


def removePod(execDirectory, home):
    """
    Remove a hook pod: its links first, then its home.
    """
    setLinks(execDirectory, home, {})
    shutil.rmtree(home, ignore_errors=True)


def _installed(config):
    # {(event, pod_id)} of the hook pods on disk or linked.
    found = set()
    for event in EVENTS:
        root = podsDir(config, event)
        try:
            found.update((event, name) for name in os.listdir(root)
                         if os.path.isdir(os.path.join(root, name)))
        except OSError:
            pass
        prefix = root + os.sep
        for path in _ownedLinks(execDir(config, event), root).values():
            found.add((event, os.readlink(path)[len(prefix):].split(os.sep, 1)[0]))
    return found


def _readCurrentSHA(layout):
    try:
        with open(layout.currentManifest, "rb") as f:
            return parseManifest(f.read(), source=layout.currentManifest).sha()
    except (OSError, ManifestError):
        return None


class HookSync(service.Service):
    """
    Keeps this machine's hook pods in line with C{hooks/} in the store.

    @param store: the L{IStore}.
    @param config: the L{p2twisted.agent.config.AgentConfig}.
    @param artifacts: an L{p2twisted.agent.artifacts.ArtifactCache}.
    @param installer: an L{p2twisted.agent.install.Installer}.
    @param resyncInterval: seconds between full re-reads of C{hooks/}.
    """

    def __init__(self, store, config, reactor, artifacts, installer, resyncInterval=30.0,
                 wallClock=time.time, auth=None, refused=None):
        self.store = store
        self.config = config
        self.reactor = reactor
        self.artifacts = artifacts
        self.installer = installer
        self.resyncInterval = resyncInterval
        self.wallClock = wallClock
        self._lock = defer.DeferredLock()
        self._watch = None
        self._loop = None
        self._status = {}
        self._ignored = set()
        self._stopped = False
        self._gate = None if auth is None else AuthGate(auth, refused)

    def startService(self):
        service.Service.startService(self)
        self._stopped = False
        self._watch = self.store.watch(keys.HOOKS, self._apply)
        self._loop = task.LoopingCall(self.resync)
        self._loop.clock = self.reactor
        self._loop.start(self.resyncInterval, now=False)

    def stopService(self):
        """
        Stop watching; fires once a sync in progress has ended.
        """
        service.Service.stopService(self)
        self._stopped = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._lock.run(lambda: None)

    def resync(self):
        """
        Read C{hooks/} in full and apply it.

        @return: L{Deferred} firing with C{True} once the snapshot is applied,
            or C{False} when it could not be read (then nothing changed).
        """
        d = defer.maybeDeferred(self.store.list, keys.HOOKS)

        def failed(f):
            log.warn("cannot read {prefix}: {error}; hook pods unchanged until the next resync",
                     prefix=keys.HOOKS, error=f.getErrorMessage(), node=self.config.node)
            return None
        d.addErrback(failed)

        def apply(snapshot):
            if snapshot is None:
                return False
            return self._apply(snapshot).addCallback(lambda _: True)
        return d.addCallback(apply)

    def whenSynced(self):
        """
        For startup and tests: read C{hooks/} now and apply it.

        @return: L{Deferred} firing with C{True} once the hook pods on disk
            match what was read, or C{False} when the read failed.
        """
        return self.resync()

    def _apply(self, snapshot):
        """
        Apply a successful snapshot C{{key: Entry}}, after any sync in progress.

        @return: L{Deferred} firing when done (never failing).
        """
        d = self._lock.run(self._sync, snapshot)
        d.addErrback(lambda f: log.failure("hook sync failed", f, node=self.config.node))
        return d

    @defer.inlineCallbacks
    def _sync(self, snapshot):
        desired = {}
        for key, entry in sorted(snapshot.items()):
            which = hookKey(key)
            if which is None:
                if key != keys.HOOKS and key not in self._ignored:
                    self._ignored.add(key)
                    log.warn("ignoring {key}: hook keys are hooks/<event>/<pod_id> with an "
                             "event among {events}", key=key, events=", ".join(EVENTS),
                             node=self.config.node)
                continue
            desired[which] = entry
        present = yield threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), _installed, self.config)
        for event, podId in sorted(present - set(desired)):
            yield self._remove(event, podId)
        for (event, podId), entry in sorted(desired.items()):
            if self._stopped:
                break
            try:
                yield self._ensure(event, podId, entry)
            except Exception as e:
                error = str(e) if isinstance(e, AgentError) else "%s: %s" % (
                    type(e).__name__, e)
                yield self._record(event, podId, FAILED, error=error)

    def _inThread(self, f, *args):
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    @defer.inlineCallbacks
    def _remove(self, event, podId):
        layout = PodLayout(podsDir(self.config, event), podId)
        yield self._inThread(removePod, execDir(self.config, event), layout.home)
        log.info("removed hook pod {pod} of {hookEvent}", pod=podId, hookEvent=event,
                 node=self.config.node, event="hook-removed")
        self._status.pop((event, podId), None)
        try:
            yield self.store.delete(keys.status("hooks", self.config.node, event, podId))
        except Exception as e:
            log.warn("cannot delete the status of hook pod {pod}: {error}", pod=podId,
                     error=str(e), node=self.config.node)

    @defer.inlineCallbacks
    def _ensure(self, event, podId, entry):
        layout = PodLayout(podsDir(self.config, event), podId)
        try:
            manifest = parseManifest(entry.value, source=entry.key)
            if manifest.id != podId:
                raise ManifestError(["id: %s does not match the key's pod id %s"
                                     % (manifest.id, podId)], entry.key)
        except ManifestError as e:
            yield self._record(event, podId, INVALID, error=str(e))
            return
        sha = manifest.sha()
        current = yield self._inThread(_readCurrentSHA, layout)
        if current != sha and (yield self._refuse(event, podId, entry, manifest)):
            return
        if current == sha:
            try:
                wanted = yield self._inThread(self._currentLinks, layout, manifest)
            except (AgentError, OSError) as e:
                # Damaged on disk (a current link deleted...): install again.
                log.warn("hook pod {pod} of {hookEvent} is damaged ({error}); reinstalling",
                         pod=podId, hookEvent=event, error=str(e), node=self.config.node)
            else:
                yield self._inThread(setLinks, execDir(self.config, event), layout.home, wanted)
                yield self._record(event, podId, INSTALLED, sha=sha)
                return
        installs = {}
        for launchableId, launchable in manifest.launchables.items():
            if launchable.location is None:
                raise AgentError("launchables.%s: 'version:' needs an artifact registry; give "
                                 "the artifact's 'location:'" % (launchableId,))
            installDir = yield fetchAndInstall(self.artifacts, self.installer, layout,
                                               launchableId, launchable)
            installs[launchableId] = installDir
            self.installer.entryPoints(installDir, launchable.entryPoints)
        for launchableId, installDir in installs.items():
            yield self.installer.activate(layout, launchableId, installDir)
        yield self._inThread(runtime.atomicWrite, layout.currentManifest, manifest.raw)
        wanted = yield self._inThread(self._currentLinks, layout, manifest)
        yield self._inThread(setLinks, execDir(self.config, event), layout.home, wanted)
        yield self._inThread(self._dropOldLaunchables, layout, manifest)
        for launchableId in manifest.launchables:
            yield self.installer.prune(layout, launchableId)
        log.info("installed hook pod {pod} of {hookEvent} ({sha})", pod=podId, hookEvent=event,
                 sha=sha, node=self.config.node, event="hook-installed")
        yield self._record(event, podId, INSTALLED, sha=sha)

    @defer.inlineCallbacks
    def _refuse(self, event, podId, entry, manifest):
        """
        Ask the auth policy about a hook pod's new version.

        @return: L{Deferred} firing with whether it was refused (then its
            status says so).
        """
        if self._gate is None:
            return False
        # Hooks run as the agent's user (root, usually), whatever the hook
        # pod's run_as says: that is the user its signer must be allowed to
        # deploy as.
        decision = yield self._gate.check("hook pod %s/%s" % (event, podId), entry.value,
                                          manifest, attr.evolve(manifest,
                                                                runAs=runtime.currentUser()))
        if decision.allowed:
            return False
        yield self._record(event, podId, REFUSED, sha=manifest.sha(), error=decision.describe())
        return True

    def _currentLinks(self, layout, manifest):
        # {link name: target} of the installed (current) version.
        wanted = {}
        for launchableId, launchable in manifest.launchables.items():
            current = layout.current(launchableId)
            entries = self.installer.entryPoints(os.path.realpath(current),
                                                 launchable.entryPoints)
            for name, entry in linkNames(layout.podId, launchableId, entries).items():
                wanted[name] = os.path.join(current, entry)
        return wanted

    def _dropOldLaunchables(self, layout, manifest):
        for name in os.listdir(layout.home):
            path = layout.launchableDir(name)
            if name not in manifest.launchables and os.path.isdir(layout.installsDir(name)) \
                    and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)

    def _record(self, event, podId, state, sha=None, error=None):
        """
        Log and write the status of a hook pod when it changed.
        """
        if self._status.get((event, podId)) == (state, sha, error):
            return defer.succeed(None)
        self._status[(event, podId)] = (state, sha, error)
        if error is not None:
            log.warn("hook pod {pod} of {hookEvent}: {error}; will retry", pod=podId,
                     hookEvent=event, error=error, node=self.config.node, event="hook-pod-" + state)
        record = HookPodStatus(
            podId, event, self.config.node, state, sha, error,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wallClock())))
        d = defer.maybeDeferred(self.store.put, keys.status("hooks", self.config.node, event,
                                                           podId), record.toBytes())

        def failed(f):
            # Write it again next time.
            self._status.pop((event, podId), None)
            log.warn("cannot write the status of hook pod {pod}: {error}", pod=podId,
                     error=f.getErrorMessage(), node=self.config.node)
        return d.addCallbacks(lambda _: None, failed)
