# -*- test-case-name: tests.test_agent_install -*-
"""
Installing hoist artifacts: safe extraction, atomic activation, pruning.

An install never trusts the archive.  The artifact is decompressed once, in a
thread; C{tarfile} parses each member's header (without extracting) and
L{_Validator} accepts or refuses it; only the bytes of members already
accepted are piped to GNU tar, which does the fast part -- creating files.  A
member is judged only by members before it (its parents, a hard link's
target, an earlier member of the same name), so a refused archive has put
nothing but accepted members into a temporary directory, which is then
deleted.  (GNU tar's own defaults -- refusing C{..}, stripping C{/}, creating
absolute or C{..} symlinks only at the end -- remain as a second line.)

The temporary directory (C{.tmp-*} inside the launchable's C{installs/}) is
flushed to disk (C{sync -f}) and then renamed to its final name, so an install
directory either is complete or does not exist.  C{current} and C{last} are
flipped with a temporary symlink and C{rename}.
"""

import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib

from twisted.internet import defer, protocol, threads
from twisted.logger import Logger

from p2twisted.agent.fsutil import fsyncDir, replaceLink
from p2twisted.errors import ArtifactError, DigestMismatch, UnsafeArchive

#: Default limit on the total size of an archive's files once expanded.
DEFAULT_MAX_EXPANDED_BYTES = 10 * 1024 ** 3
#: Default disk budget of one launchable's installs (P2's
#: C{max_launchable_disk_usage}).
DEFAULT_DISK_BUDGET = 10 * 1024 ** 3
#: The entry points of a launchable that declares none.
DEFAULT_ENTRY_POINTS = ("bin/launch",)

_FILE, _DIR, _LINK = "regular file", "directory", "symbolic link"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:@~-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_BATCH = 256 << 10
_MAX_HEADER_READ = 64 << 20
_TAR_FLAGS = ["--no-same-owner", "--no-same-permissions",
              "--warning=no-timestamp", "--warning=no-unknown-keyword"]

log = Logger()


class _Validator(object):
    """
    Judges archive members in order (rules: L{checkArchive}); C{members}
    holds the accepted ones, C{total} their files' size.
    """

    def __init__(self, source, maxBytes):
        self.source = source
        self.maxBytes = maxBytes
        self.total = 0
        self.members = []
        self._kinds = {"": _DIR}

    def _refuse(self, name, why):
        raise UnsafeArchive("unsafe archive %s: member %r %s" % (self.source, name, why))

    def _path(self, name, value, what):
        if not value:
            self._refuse(name, "has an empty %s" % (what,))
        if "\0" in value:
            self._refuse(name, "has a NUL byte in its %s" % (what,))
        if value.startswith("/"):
            self._refuse(name, "has an absolute %s %r" % (what, value))
        parts = [p for p in value.split("/") if p not in ("", ".")]
        if ".." in parts:
            self._refuse(name, "has '..' in its %s %r" % (what, value))
        return "/".join(parts)

    def check(self, member, header=None, globalHeaders=()):
        """
        Accept C{member} or raise L{UnsafeArchive} naming it.

        @param header: the member's raw 512-byte tar header, if available.
        @param globalHeaders: the PAX global headers in force.
        """
        for key in ("path", "linkpath", "size") if globalHeaders else ():
            if key in globalHeaders:
                self._refuse(member.name, "follows a global header setting %r" % (key,))
        name = member.name
        path = self._path(name, name, "path")
        if member.isreg() or member.islnk():
            kind = _FILE
        elif member.isdir():
            kind = _DIR
        elif member.issym():
            kind = _LINK
        elif member.ischr() or member.isblk():
            self._refuse(name, "is a device file")
        elif member.isfifo():
            self._refuse(name, "is a FIFO")
        else:
            self._refuse(name, "has unsupported type %r" % (member.type,))
        if member.size and not member.isreg():
            self._refuse(name, "is a %s carrying %d bytes of data" % (kind, member.size))
        if (member.isreg() or member.isdir()) and member.mode & 0o6000:
            self._refuse(name, "has the setuid/setgid bit (mode %04o)" % (member.mode,))
        if member.issym() and not member.linkname:
            self._refuse(name, "is a symbolic link with an empty target")
        if member.issparse() or (member.pax_headers and any(
                k.startswith("GNU.sparse.") for k in member.pax_headers)):
            self._refuse(name, "is a sparse file (not supported)")
        if header is not None and header[257:263] != b"ustar\0" and header[345:500].strip(b"\0"):
            # Python prepends this "prefix" field to the name whatever the
            # magic; GNU tar only for POSIX ustar.  Refuse the ambiguity.
            self._refuse(name, "has a header that tar implementations read differently "
                         "(a name prefix without POSIX ustar magic)")
        if not path:
            if kind != _DIR:
                self._refuse(name, "would replace the install directory itself")
            self.members.append(member)
            return
        self._checkParents(name, path.rpartition("/")[0])
        previous = self._kinds.get(path)
        if previous is not None and previous != kind:
            self._refuse(name, "would replace a %s with a %s" % (previous, kind))
        if member.islnk():
            target = self._path(name, member.linkname, "hard link target")
            if target == path or self._kinds.get(target) != _FILE:
                self._refuse(name, "is a hard link to %r, which is not a regular file "
                             "earlier in the archive" % (member.linkname,))
        if member.isreg():
            self.total += member.size
            if self.total > self.maxBytes:
                self._refuse(name, "takes the expanded size past the limit of %d bytes"
                             % (self.maxBytes,))
        self._kinds[path] = kind
        self.members.append(member)

    def _checkParents(self, name, parent):
        # A path recorded as a directory had all its ancestors checked when it
        # was recorded, and a directory can never change kind afterwards.
        created = []
        while self._kinds.get(parent) != _DIR:
            kind = self._kinds.get(parent)
            if kind == _LINK:
                self._refuse(name, "would be written through the symbolic link %r" % (parent,))
            if kind == _FILE:
                self._refuse(name, "would be written under %r, which is a regular file" % (parent,))
            created.append(parent)
            parent = parent.rpartition("/")[0]
        for path in created:
            self._kinds[path] = _DIR


class _Inflater(object):
    """
    A forward-only file object over a gzip file's decompressed content, for
    C{tarfile}.  It hashes the compressed bytes as it reads them, and passes
    the decompressed stream to C{sink} -- but never past the limit set by
    L{setLimit}, which is raised as members are accepted.
    """

    def __init__(self, f, source, sink=None):
        self._f = f
        self._source = source
        self._sink = sink
        self._hash = hashlib.sha256()
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._input = b""
        self._compressed = 0
        self._inputDone = False
        self._win = bytearray()     # stream bytes [_base, _base + len(_win))
        self._base = self._pos = self._sent = self._limit = 0

    def _produced(self):
        return self._base + len(self._win)

    def _fill(self):
        # Decompress up to one more chunk; False at the end of the stream.
        while True:
            if not self._input:
                if self._inputDone:
                    return False
                self._input = self._f.read(_CHUNK)
                if not self._input:
                    self._inputDone = True
                    if not self._compressed:
                        raise ArtifactError("artifact %s is empty, not a gzip file" % (self._source,))
                    if not self._inflate.eof:
                        raise ArtifactError("artifact %s is truncated: its gzip stream ends early"
                                            % (self._source,))
                    return False
                self._compressed += len(self._input)
                self._hash.update(self._input)
            if self._inflate.eof:
                # A gzip member ended: another member, zero padding or garbage follows.
                if self._input[:1] == b"\x1f":
                    self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                elif not self._input.strip(b"\0"):
                    self._input = b""
                    continue
                else:
                    raise ArtifactError("artifact %s has trailing garbage after its gzip stream"
                                        % (self._source,))
            try:
                out = self._inflate.decompress(self._input, _CHUNK)
            except zlib.error as e:
                raise ArtifactError("artifact %s is not a valid gzip file (%s)" % (self._source, e))
            self._input = self._inflate.unconsumed_tail or self._inflate.unused_data
            if out:
                self._win += out
                return True

    def _flush(self, force=False):
        # Send what may be sent (in batches: fewer, larger pipe writes), and
        # drop what is both sent and read.
        base = self._base
        produced = base + len(self._win)
        end = self._limit if self._limit < produced else produced
        if end > self._sent and (force or self._sink is None or end - self._sent >= _BATCH):
            if self._sink is not None:
                with memoryview(self._win) as view:
                    self._sink(view[self._sent - base:end - base])
            self._sent = end
        keep = min(self._pos, self._sent, produced)
        if keep > base:
            del self._win[:keep - base]
            self._base = keep

    def read(self, size):
        if size > _MAX_HEADER_READ:
            raise UnsafeArchive("unsafe archive %s: a header of %d bytes at offset %d"
                                % (self._source, size, self._pos))
        start = self._pos - self._base
        if len(self._win) < start + size:
            while self._produced() < self._pos + size and self._fill():
                pass
            start = self._pos - self._base
        data = bytes(self._win[start:start + size])
        self._pos += len(data)
        if self._pos - self._base > _CHUNK or self._limit - self._sent >= _BATCH:
            self._flush()
        return data

    def seek(self, offset, whence=0):
        if whence != 0 or offset < self._pos:
            raise ValueError("only forward seeks are possible")
        self._pos = offset
        while self._produced() < offset and self._fill():
            self._flush()
        self._flush()
        return offset

    def tell(self):
        return self._pos

    def setLimit(self, offset, force=False):
        # Let the stream up to offset go to the sink.
        self._limit = offset
        self._flush(force)

    def peek(self, offset, size):
        # Bytes at offset, if still held (not yet released).
        start = offset - self._base
        return bytes(self._win[start:start + size]) if start >= 0 else b""

    def finish(self):
        # Check the rest of the gzip stream; return the file's SHA-256.
        self._sink = None
        while self._fill():
            self._base += len(self._win)
            del self._win[:]
        return self._hash.hexdigest()


def _scan(path, maxBytes, sink=None):
    # Validate path, passing accepted bytes to sink; return (members, sha256).
    validator = _Validator(path, maxBytes)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ArtifactError("cannot read artifact %s: %s" % (path, e.strerror))
    with f:
        src = _Inflater(f, path, sink)
        try:
            archive = tarfile.open(fileobj=src, mode="r:")
            for m in archive:
                validator.check(m, src.peek(m.offset_data - tarfile.BLOCKSIZE, tarfile.BLOCKSIZE),
                                archive.pax_headers)
                src.setLimit(archive.offset)
        except tarfile.TarError as e:
            raise ArtifactError("artifact %s is not a valid tar archive: %s" % (path, e))
        except OSError as e:
            raise ArtifactError("cannot read artifact %s: %s" % (path, e.strerror or e))
        if src.peek(archive.offset, tarfile.BLOCKSIZE).strip(b"\0"):
            raise ArtifactError("artifact %s is corrupt: invalid tar header at offset %d"
                                % (path, archive.offset))
        if sink is not None:
            src.setLimit(archive.offset, force=True)
            sink(b"\0" * (2 * tarfile.BLOCKSIZE))
        sha = src.finish()
    return validator.members, sha


def checkArchive(path, maxBytes=DEFAULT_MAX_EXPANDED_BYTES):
    """
    Check, without extracting, that the gzipped tar at C{path} is safe to
    extract.  Refused: absolute paths, C{..}, a member written through a
    symbolic link of the archive or under a regular file, a hard link to
    anything but a regular file earlier in the archive, device files, FIFOs
    and other special types, setuid/setgid bits, a member that replaces an
    earlier one of another kind (a regular file may replace a regular file),
    and files totalling more than C{maxBytes}.  Symbolic links may point
    anywhere.  Sparse files, global headers renaming members, and headers
    that Python and GNU tar would read differently are refused too.  Reads
    headers only, but decompresses the whole stream once.

    @return: the list of accepted C{tarfile.TarInfo}s.
    @raise UnsafeArchive: naming the archive and the offending member.
    @raise ArtifactError: the file is not a complete, valid tar.gz.
    """
    return _scan(path, maxBytes)[0]


class _TarGone(Exception):
    """
    tar stopped reading its input (it failed; its stderr says why).
    """


def _feed(path, maxBytes, fd):
    # In a thread: _scan, writing accepted bytes to fd, then closing it.
    def write(data):
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except BrokenPipeError:
            raise _TarGone()
        finally:
            view.release()
    try:
        return _scan(path, maxBytes, write)
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
    @param diskBudget: bytes the installs of one launchable may use; see
        L{prune}.
    @param tar: the GNU tar executable.
    @param umask: applied to the modes of extracted files (exec bits kept).
    """

    entryPoints = staticmethod(entryPoints)

    def __init__(self, reactor, maxExpandedBytes=DEFAULT_MAX_EXPANDED_BYTES,
                 diskBudget=DEFAULT_DISK_BUDGET, tar="tar", umask=0o022):
        self._reactor = reactor
        self.maxExpandedBytes = maxExpandedBytes
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
            the same pass that extracts it.
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
        tmp = yield self._inThread(self._prepare, installsDir, installDir)
        if tmp is None:
            log.info("reusing {installDir}", installDir=installDir, event="install-reused")
            return installDir
        try:
            sha = yield self._extract(artifactPath, tmp)
            if digest is not None and sha != digest:
                raise DigestMismatch("sha256 mismatch for artifact %s: got %s, expected %s"
                                     % (artifactPath, sha, digest))
            extracted = self._reactor.seconds()
            yield self._sync(tmp)
            synced = self._reactor.seconds()
            yield self._inThread(self._commit, tmp, installDir)
        except Exception as e:
            yield self._inThread(shutil.rmtree, tmp, True)
            raise e
        now = self._reactor.seconds()
        log.info("installed {installDir} in {seconds:.2f}s (extract {extractSeconds:.2f}s, "
                 "sync {syncSeconds:.2f}s)", installDir=installDir, sha=sha, event="installed",
                 seconds=now - started, extractSeconds=extracted - started,
                 syncSeconds=synced - extracted)
        return installDir

    def _prepare(self, installsDir, installDir):
        try:
            os.makedirs(installsDir, exist_ok=True)
            for name in os.listdir(installsDir):
                if name.startswith(".tmp-"):
                    shutil.rmtree(os.path.join(installsDir, name), ignore_errors=True)
            if os.path.isdir(installDir) and not os.path.islink(installDir):
                os.utime(installDir)
                return None
            tmp = tempfile.mkdtemp(prefix=".tmp-", dir=installsDir)
            os.chmod(tmp, 0o755 & ~self._umask)
            return tmp
        except OSError as e:
            raise _osError("prepare", installsDir, e)

    @defer.inlineCallbacks
    def _extract(self, artifactPath, target):
        tar = shutil.which(self._tar)
        if tar is None:
            raise ArtifactError("cannot extract %s: %r not found on PATH" % (artifactPath, self._tar))
        target = os.path.abspath(target)
        rfd, wfd = os.pipe()
        child = _Process()
        try:
            self._reactor.spawnProcess(
                child, "/bin/sh",
                ["sh", "-c", 'umask %04o && exec "$@"' % (self._umask,), "sh",
                 tar, "-x", "-f", "-", "-C", target] + _TAR_FLAGS,
                env=_childEnv(), childFDs={0: rfd, 1: "r", 2: "r"})
        except BaseException:
            os.close(wfd)
            raise
        finally:
            os.close(rfd)
        fed = self._inThread(_feed, artifactPath, self.maxExpandedBytes, wfd)
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
        return result[1]

    @defer.inlineCallbacks
    def _sync(self, path):
        child = _Process()
        self._reactor.spawnProcess(child, shutil.which("sync") or "/bin/sync",
                                   ["sync", "-f", path], env=_childEnv())
        code, err = yield child.ended
        if code != 0:
            raise ArtifactError("cannot flush %s to disk: %s"
                                % (path, err.decode("utf-8", "replace").strip() or "sync failed"))

    def _commit(self, tmp, installDir):
        try:
            os.utime(tmp)
            os.rename(tmp, installDir)
            fsyncDir(os.path.dirname(installDir))
        except OSError as e:
            raise _osError("move the new install into place at", installDir, e)

    def activate(self, podLayout, launchableId, installDir):
        """
        Make C{installDir} the launchable's C{current} install; C{last} then
        points to the previous C{current}.  Each link is replaced atomically
        (C{last} first, so a crash between the two never leaves the running
        version unreferenced).  Activating the current install changes
        nothing.

        @return: L{Deferred} firing with the previous C{current} install
            directory (or C{None}); failing with L{ArtifactError} when
            C{installDir} is not an install of this launchable.
        """
        return self._locked(podLayout.installsDir(launchableId), self._inThread,
                            self._activate, podLayout, launchableId, installDir)

    def _activate(self, podLayout, launchableId, installDir):
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
