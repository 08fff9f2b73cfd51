# -*- test-case-name: tests.test_agent_install -*-
"""
Installing hoist artifacts: safe extraction, atomic activation, pruning.

An install never trusts the archive.  The artifact is decompressed once, in a
thread, where L{p2twisted.agent.archive} reads each member's header (without
extracting) and accepts or refuses it; only the bytes of members already
accepted are piped to GNU tar, which does the fast part -- creating files --
meanwhile (a writer thread and a 1 MiB pipe let the checks run ahead).  A
member is judged only by members before it (its parents, a hard link's
target, an earlier member of the same name) and by the limits (the pod's
C{max_expanded_bytes}, the free space of the pod's disk), so a refused
archive has put nothing but accepted members into a temporary directory,
which is then deleted.  (GNU tar's own defaults -- refusing C{..}, stripping
C{/}, creating absolute or C{..} symlinks only at the end -- remain as a
second line.)  What a refusal for size taught is remembered: retrying the
same artifact fails at once while it still cannot fit.

The temporary directory (C{.tmp-*} inside the launchable's C{installs/}) is
flushed to disk (C{syncfs(2)}, as C{sync -f}) and then renamed to its final
name, so an install directory either is complete or does not exist.  C{current} and C{last} are
flipped with a temporary symlink and C{rename}.
"""

import fcntl
import os
import re
import shutil
import stat
import tempfile
import time

from twisted.internet import defer, protocol, threads
from twisted.logger import Logger

# checkArchive and DEFAULT_MAX_EXPANDED_BYTES are re-exported: part of this
# module's API.
from p2twisted.agent.archive import (
    DEFAULT_MAX_EXPANDED_BYTES, NoSpace, TooLarge, _Background, _scan, checkArchive)
from p2twisted.agent.fsutil import fsyncDir, replaceLink, syncFilesystem
from p2twisted.errors import ArtifactError, DigestMismatch

#: Default disk budget of one launchable's installs (P2's
#: C{max_launchable_disk_usage}).
DEFAULT_DISK_BUDGET = 10 * 1024 ** 3
#: The entry points of a launchable that declares none.
DEFAULT_ENTRY_POINTS = ("bin/launch",)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:@~-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PIPE_SIZE = 1 << 20
_TAR_FLAGS = ["--no-same-owner", "--no-same-permissions",
              "--warning=no-timestamp", "--warning=no-unknown-keyword"]

__all__ = ["DEFAULT_DISK_BUDGET", "DEFAULT_ENTRY_POINTS", "DEFAULT_MAX_EXPANDED_BYTES",
           "Installer", "checkArchive", "diskUsage", "entryPoints"]

log = Logger()


class _TarGone(Exception):
    """
    tar stopped reading its input (it failed; its stderr says why).
    """


def freeSpace(path):
    """
    @return: the bytes free for unprivileged use on the filesystem of
        C{path} (root's reserve is left alone).
    """
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _feed(path, maxBytes, fd, freeBytes, target, hashing):
    # In a thread: _scan, writing accepted bytes to fd (from another thread,
    # so that checking goes on while tar catches up), then closing it.
    def write(data):
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except BrokenPipeError:
            raise _TarGone()
    writer = _Background(write, 8, "extract " + path)
    try:
        sha = _scan(path, maxBytes, lambda data: writer.put(bytes(data)), freeBytes, target,
                    hashing=hashing)
        writer.close()
        return sha
    except BaseException:
        writer.close(wait=False)
        raise
    finally:
        os.close(fd)


class _Process(protocol.ProcessProtocol):
    """
    Collects a child's stderr; C{ended} fires with C{(exitCode, stderr)}.
    """

    def __init__(self):
        self.ended = defer.Deferred()
        self._err = []

    def errReceived(self, data):
        if sum(map(len, self._err)) < 65536:
            self._err.append(data)

    def processEnded(self, reason):
        code = reason.value.exitCode
        self.ended.callback((-1 if code is None else code, b"".join(self._err)))


def processUmask():
    """
    @return: this process's umask, read without changing it (C{Umask:} of
        C{/proc/self/status}, Linux 4.7 and later), or C{None} when unknown.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _childEnv():
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}


def _tarError(stderr, artifact, target):
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line and "Exiting with failure" not in line]
    detail = lines[0] if lines else "tar failed"
    prefix = "disk full: " if "No space left on device" in stderr.decode("utf-8", "replace") else ""
    return ArtifactError("%scannot extract %s into %s: %s" % (prefix, artifact, target, detail))


def _osError(action, path, e):
    return ArtifactError("cannot %s %s: %s" % (action, path, e.strerror or e))


def _checkName(value, what):
    if not isinstance(value, str) or not _NAME.match(value):
        raise ArtifactError("invalid %s %r: use letters, digits and ._+:@~- "
                            "(not starting with a dot or dash)" % (what, value))




def _linkTarget(link):
    # The absolute path link points to, or None.
    try:
        return os.path.abspath(os.path.join(os.path.dirname(link), os.readlink(link)))
    except OSError:
        return None




def diskUsage(path):
    """
    @return: the bytes of disk used by the tree at C{path} (allocated blocks of
        every entry, symbolic links not followed).
    """
    total = 0
    for top, dirs, files in os.walk(path):
        for name in ["."] + dirs + files:
            try:
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
            except OSError:
                pass
    return total


def entryPoints(installDir, declared=None):
    """
    The executables to run for a launchable installed at C{installDir}.

    @param declared: the manifest's C{entry_points}; default C{[bin/launch]}.
        An entry point is a relative path to an executable file, or to a
        directory whose executable files (sorted, dotfiles and non-executable
        files skipped) each run as their own service.
    @return: the relative paths of the executables, in order, without
        duplicates.
    @raise ArtifactError: an entry point is not a relative path inside the
        install, is missing, is not executable, or is a directory holding no
        executable file.
    """
    result = []
    for entry in (list(declared) if declared else DEFAULT_ENTRY_POINTS):
        parts = [p for p in str(entry).split("/") if p not in ("", ".")]
        if not parts or str(entry).startswith("/") or ".." in parts:
            raise ArtifactError("entry point %r must be a relative path inside the install" % (entry,))
        rel = "/".join(parts)
        path = os.path.join(installDir, rel)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ArtifactError("entry point %s does not exist in %s" % (rel, installDir))
        except OSError as e:
            raise _osError("inspect entry point", path, e)
        if stat.S_ISDIR(st.st_mode):
            found = []
            for name in sorted(os.listdir(path)):
                try:
                    mode = os.stat(os.path.join(path, name)).st_mode
                except OSError:
                    continue
                if not name.startswith(".") and stat.S_ISREG(mode) and mode & 0o111:
                    found.append("%s/%s" % (rel, name))
            if not found:
                raise ArtifactError("entry point directory %s in %s holds no executable file"
                                    % (rel, installDir))
            result.extend(found)
        elif not stat.S_ISREG(st.st_mode):
            raise ArtifactError("entry point %s in %s is not a file or directory" % (rel, installDir))
        elif not st.st_mode & 0o111:
            raise ArtifactError("entry point %s in %s is not executable (mode %04o); "
                                "make it executable in the artifact"
                                % (rel, installDir, stat.S_IMODE(st.st_mode)))
        else:
            result.append(rel)
    return list(dict.fromkeys(result))


class Installer(object):
    """
    Installs artifacts into pods' launchable directories.

    Operations on one launchable (install, activate, prune) run one at a
    time; blocking filesystem work runs in the reactor's thread pool.

    @param maxExpandedBytes: the largest total size of an archive's files.
    @param podMaxExpandedBytes: C{{pod id: bytes}} overriding
        C{maxExpandedBytes} for those pods.
    @param freeSpace: C{f(path)} returning the bytes free on the filesystem
        of C{path}; an archive whose files (in whole blocks) would not fit
        is refused, before its first member that does not fit reaches the
        disk.
    @param diskBudget: bytes the installs of one launchable may use; see
        L{prune}.
    @param tar: the GNU tar executable.
    @param umask: applied to the modes of extracted files (exec bits kept).
    """

    entryPoints = staticmethod(entryPoints)

    def __init__(self, reactor, maxExpandedBytes=DEFAULT_MAX_EXPANDED_BYTES,
                 diskBudget=DEFAULT_DISK_BUDGET, tar="tar", umask=0o022,
                 podMaxExpandedBytes=None, freeSpace=freeSpace):
        self._reactor = reactor
        self.maxExpandedBytes = maxExpandedBytes
        self.podMaxExpandedBytes = dict(podMaxExpandedBytes or {})
        self._freeSpace = freeSpace
        # What refused extractions taught about artifacts: their key (path,
        # inode, size, mtime; see _space) -> (expanded bytes, disk bytes)
        # they need at least, so that retries fail at once instead of
        # writing it all again.
        self._atLeast = {}
        self.diskBudget = diskBudget
        self._tar = tar
        self._umask = umask
        self._locks = {}

    def _inThread(self, f, *args):
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    def _locked(self, key, f, *args):
        lock = self._locks.setdefault(key, defer.DeferredLock())

        def release(result):
            if not lock.locked and not lock.waiting:
                self._locks.pop(key, None)
            return result
        return lock.run(f, *args).addBoth(release)

    def install(self, podLayout, launchableId, version, artifactPath, digest=None):
        """
        Install the artifact at C{artifactPath} as C{version} of
        C{launchableId} (does not activate it).  An existing install of that
        version is reused; leftover C{.tmp-*} directories are removed.

        @param digest: when given, the artifact's SHA-256 (hex), verified in
            the same pass that extracts it (hashed in another thread).
            Without it the artifact is not hashed: the agent's artifacts
            come from the cache, which verified them while fetching.
        @return: L{Deferred} firing with the install directory; failing with
            L{UnsafeArchive}, L{DigestMismatch} or L{ArtifactError} (not a
            tar.gz, disk full, ...), in which case nothing is left behind.
        """
        try:
            _checkName(launchableId, "launchable id")
            _checkName(version, "version")
            if digest is not None and not _SHA256.match(str(digest).lower()):
                raise ArtifactError("invalid sha256 digest %r" % (digest,))
        except ArtifactError:
            return defer.fail()
        return self._locked(podLayout.installsDir(launchableId), self._install, podLayout,
                            launchableId, version, artifactPath, digest and digest.lower())

    @defer.inlineCallbacks
    def _install(self, podLayout, launchableId, version, artifactPath, digest):
        started = self._reactor.seconds()
        installsDir = podLayout.installsDir(launchableId)
        installDir = podLayout.installDir(launchableId, version)
        tmp, key, free = yield self._inThread(self._prepare, installsDir, installDir,
                                              artifactPath)
        if tmp is None:
            log.info("reusing {installDir}", installDir=installDir, event="install-reused")
            return installDir
        try:
            limit = self.podMaxExpandedBytes.get(podLayout.podId, self.maxExpandedBytes)
            self._knownTooBig(key, artifactPath, limit, free, installsDir)
            try:
                sha = yield self._extract(artifactPath, tmp, limit, free, digest is not None)
            except (NoSpace, TooLarge) as e:
                self._learn(key, getattr(e, "expanded", 0), getattr(e, "needed", 0))
                raise
            if digest is not None and sha != digest:
                raise DigestMismatch("sha256 mismatch for artifact %s: got %s, expected %s"
                                     % (artifactPath, sha, digest))
            extracted = self._reactor.seconds()
            syncSeconds = yield self._inThread(self._commit, tmp, installDir)
        except Exception as e:
            yield self._inThread(shutil.rmtree, tmp, True)
            raise e
        now = self._reactor.seconds()
        log.info("installed {installDir} in {seconds:.2f}s (extract {extractSeconds:.2f}s, "
                 "sync {syncSeconds:.2f}s)", installDir=installDir, sha=sha, event="installed",
                 seconds=now - started, extractSeconds=extracted - started,
                 syncSeconds=syncSeconds)
        return installDir

    def _space(self, artifactPath, target):
        try:
            st = os.stat(artifactPath)
            free = self._freeSpace(target)
        except OSError as e:
            raise _osError("inspect", artifactPath, e)
        return (os.path.realpath(artifactPath), st.st_dev, st.st_ino, st.st_size,
                st.st_mtime_ns), free

    def _knownTooBig(self, key, artifactPath, limit, free, target):
        # Fail at once when an earlier attempt showed the archive cannot fit.
        expanded, needed = self._atLeast.get(key, (0, 0))
        if expanded > limit:
            raise TooLarge("unsafe archive %s: its files expand to at least %d bytes, past the "
                           "limit of %d bytes (seen at an earlier attempt)"
                           % (artifactPath, expanded, limit), expanded)
        if needed > free:
            raise NoSpace("disk full: artifact %s needs at least %d bytes of disk once "
                          "extracted, and %d are free in %s (seen at an earlier attempt)"
                          % (artifactPath, needed, free, target), needed)

    def _learn(self, key, expanded, needed):
        old = self._atLeast.pop(key, (0, 0))
        self._atLeast[key] = (max(old[0], expanded), max(old[1], needed))
        while len(self._atLeast) > 256:
            del self._atLeast[next(iter(self._atLeast))]

    def _prepare(self, installsDir, installDir, artifactPath):
        """
        In a thread: remove leftover temporary directories, then make the
        new install's (unless C{installDir} exists: it is reused) and look
        at the artifact and the free space (L{_space}).

        @return: C{(temporary directory, artifact key, free bytes)}, or
            C{(None, None, None)} to reuse C{installDir}.
        """
        try:
            os.makedirs(installsDir, exist_ok=True)
            for name in os.listdir(installsDir):
                if name.startswith(".tmp-"):
                    shutil.rmtree(os.path.join(installsDir, name), ignore_errors=True)
            if os.path.isdir(installDir) and not os.path.islink(installDir):
                os.utime(installDir)
                return None, None, None
            tmp = tempfile.mkdtemp(prefix=".tmp-", dir=installsDir)
            os.chmod(tmp, 0o755 & ~self._umask)
        except OSError as e:
            raise _osError("prepare", installsDir, e)
        try:
            return (tmp,) + self._space(artifactPath, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @defer.inlineCallbacks
    def _extract(self, artifactPath, target, maxBytes, freeBytes, hashing):
        tar = shutil.which(self._tar)
        if tar is None:
            raise ArtifactError("cannot extract %s: %r not found on PATH" % (artifactPath, self._tar))
        target = os.path.abspath(target)
        rfd, wfd = os.pipe()
        try:
            # Room for tar to fall behind a little (default: 64 KiB).
            fcntl.fcntl(wfd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_SIZE)
        except OSError:
            pass
        child = _Process()
        argv = [tar, "-x", "-f", "-", "-C", target] + _TAR_FLAGS
        if processUmask() != self._umask:
            # tar creates files under its umask: set the installs' first.
            argv = ["sh", "-c", 'umask %04o && exec "$@"' % (self._umask,), "sh"] + argv
        try:
            self._reactor.spawnProcess(
                child, "/bin/sh" if argv[0] == "sh" else tar, argv,
                env=_childEnv(), childFDs={0: rfd, 1: "r", 2: "r"})
        except BaseException:
            os.close(wfd)
            raise
        finally:
            os.close(rfd)
        fed = self._inThread(_feed, artifactPath, maxBytes, wfd, freeBytes,
                             os.path.dirname(target), hashing)
        (fedOk, result), (_, (code, stderr)) = yield defer.DeferredList(
            [fed, child.ended], consumeErrors=True)
        if not fedOk and not result.check(_TarGone):
            if result.check(ArtifactError):
                result.raiseException()
            raise ArtifactError("cannot extract %s: %s" % (artifactPath, result.getErrorMessage()))
        if code != 0:
            raise _tarError(stderr, artifactPath, target)
        if not fedOk:
            raise ArtifactError("cannot extract %s: tar stopped reading it" % (artifactPath,))
        return result

    def _commit(self, tmp, installDir):
        """
        In a thread: flush the extracted C{tmp} to disk (C{syncfs(2)}, what
        C{sync -f} does, without a process start), then rename it to
        C{installDir}.

        @return: the seconds the flush took.
        """
        started = time.monotonic()
        try:
            syncFilesystem(tmp)
        except OSError as e:
            raise ArtifactError("cannot flush %s to disk: %s" % (tmp, e.strerror or e))
        synced = time.monotonic() - started
        try:
            os.utime(tmp)
            os.rename(tmp, installDir)
            fsyncDir(os.path.dirname(installDir))
        except OSError as e:
            raise _osError("move the new install into place at", installDir, e)
        return synced

    def activate(self, podLayout, launchableId, installDir, sync=True):
        """
        Make C{installDir} the launchable's C{current} install; C{last} then
        points to the previous C{current}.  Each link is replaced atomically
        (C{last} first, so a crash between the two never leaves the running
        version unreferenced).  Activating the current install changes
        nothing.

        @param sync: whether to flush the links to disk (else the caller
            does, before it relies on them surviving a crash).

        @return: L{Deferred} firing with the previous C{current} install
            directory (or C{None}); failing with L{ArtifactError} when
            C{installDir} is not an install of this launchable.
        """
        return self._locked(podLayout.installsDir(launchableId), self._inThread,
                            self._activate, podLayout, launchableId, installDir, sync)

    def _activate(self, podLayout, launchableId, installDir, sync=True):
        installDir = os.path.abspath(installDir)
        installsDir = os.path.abspath(podLayout.installsDir(launchableId))
        if (os.path.dirname(installDir) != installsDir
                or os.path.basename(installDir).startswith(".")
                or not os.path.isdir(installDir) or os.path.islink(installDir)):
            raise ArtifactError("cannot activate %s: not an install of launchable %s in %s"
                                % (installDir, launchableId, installsDir))
        launchableDir = podLayout.launchableDir(launchableId)
        current = podLayout.current(launchableId)
        previous = _linkTarget(current)
        if previous == installDir:
            return previous
        try:
            if previous is not None:
                replaceLink(podLayout.last(launchableId), os.readlink(current))
            replaceLink(current, os.path.relpath(installDir, launchableDir))
            if sync:
                fsyncDir(launchableDir)
        except OSError as e:
            raise _osError("flip the current link of", launchableDir, e)
        log.info("activated {installDir}", installDir=installDir, event="activated")
        return previous

    def prune(self, podLayout, launchableId):
        """
        Delete old installs, oldest (least recently installed or reused)
        first, until the launchable's installs use at most C{diskBudget}
        bytes; the C{current} and C{last} installs are never deleted.

        @return: L{Deferred} firing with the list of deleted directories;
            failing with L{ArtifactError}.
        """
        return self._locked(podLayout.installsDir(launchableId), self._inThread,
                            self._prune, podLayout, launchableId)

    def _prune(self, podLayout, launchableId):
        installsDir = podLayout.installsDir(launchableId)
        keep = {_linkTarget(podLayout.current(launchableId)),
                _linkTarget(podLayout.last(launchableId))}
        try:
            entries = [e for e in os.scandir(installsDir)
                       if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        except OSError as e:
            raise _osError("list", installsDir, e)
        installs = sorted((e.stat(follow_symlinks=False).st_mtime, e.name,
                           os.path.abspath(e.path), diskUsage(e.path)) for e in entries)
        total = sum(size for _, _, _, size in installs)
        removed = []
        for _, _, path, size in installs:
            if total <= self.diskBudget:
                break
            if path in keep:
                continue
            try:
                shutil.rmtree(path)
            except OSError as e:
                raise _osError("delete old install", path, e)
            total -= size
            removed.append(path)
            log.info("pruned {installDir}", installDir=path, event="pruned")
        return removed
