# -*- test-case-name: tests.test_agent_install -*-
"""
Checking hoist artifacts (gzipped tar archives) before extraction.

An archive is checked in a single pass that judges each member before GNU tar
sees it: L{_Inflater} decompresses the artifact once, forward only (hashing
the compressed bytes as it goes); C{tarfile} parses each member's header
without extracting it; and L{_Validator} accepts or refuses the member,
judging it only by the members before it (its parents, a hard link's target,
an earlier member of the same name).  Only the bytes of members already
accepted are passed on to the sink -- the pipe into GNU tar, see
L{p2twisted.agent.install} -- so a refused archive has handed tar nothing but
accepted members.  L{checkArchive} runs the same pass without a sink.
"""

import hashlib
import tarfile
import zlib

from p2twisted.errors import ArtifactError, UnsafeArchive

#: Default limit on the total size of an archive's files once expanded.
DEFAULT_MAX_EXPANDED_BYTES = 10 * 1024 ** 3

#: The disk a file or directory is assumed to take at least (a block).
DISK_BLOCK = 4096

_FILE, _DIR, _LINK = "regular file", "directory", "symbolic link"
_CHUNK = 1 << 20
_BATCH = 256 << 10
_MAX_HEADER_READ = 64 << 20


class NoSpace(ArtifactError):
    """
    An archive would not fit in the free space of the disk it is extracted
    to.  C{needed} is the disk it was found to need (at least).
    """

    def __init__(self, message, needed):
        ArtifactError.__init__(self, message)
        self.needed = needed


class TooLarge(UnsafeArchive):
    """
    An archive's files expand past the limit; C{expanded} is their size up to
    the member that crossed it.
    """

    def __init__(self, message, expanded):
        UnsafeArchive.__init__(self, message)
        self.expanded = expanded


class _Validator(object):
    """
    Judges archive members in order (rules: L{checkArchive}); C{members}
    holds the accepted ones, C{total} their files' size, C{used} the disk
    they are estimated to take (whole L{DISK_BLOCK}s per file and directory),
    which must stay within C{freeBytes} (C{None}: not checked).
    """

    def __init__(self, source, maxBytes, freeBytes=None, target=None):
        self.source = source
        self.maxBytes = maxBytes
        self.freeBytes = freeBytes
        self.target = target
        self.total = self.used = 0
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
                raise TooLarge("unsafe archive %s: member %r takes the expanded size past the "
                               "limit of %d bytes" % (self.source, name, self.maxBytes),
                               self.total)
            self.used += -(-member.size // DISK_BLOCK) * DISK_BLOCK
        elif kind == _DIR and previous is None:
            self.used += DISK_BLOCK
        if self.freeBytes is not None and self.used > self.freeBytes:
            raise NoSpace("disk full: artifact %s needs at least %d bytes of disk once "
                          "extracted (up to member %r), and %d are free in %s" % (
                              self.source, self.used, name, self.freeBytes, self.target),
                          self.used)
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
            self.used += DISK_BLOCK


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


def _scan(path, maxBytes, sink=None, freeBytes=None, target=None):
    # Validate path, passing accepted bytes to sink; return (members, sha256).
    validator = _Validator(path, maxBytes, freeBytes, target)
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
