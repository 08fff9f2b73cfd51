# -*- test-case-name: tests.test_agent_install -*-
"""
Checking hoist artifacts (gzipped tar archives) before extraction.

An archive is checked in a single pass that judges each member before GNU tar
sees it: L{_Inflater} decompresses the artifact once, forward only (the
compressed bytes are hashed meanwhile in another thread); each member's
header is read without extracting it -- by L{_fastHeader} when it is a plain
one (most are), else by C{tarfile}, with checks that GNU tar reads it alike;
and L{_Validator} accepts or refuses the member, judging it only by the
members before it (its parents, a hard link's target, an earlier member of
the same name) and the limits (expanded size, free space).  Only the bytes of
members already accepted are passed on to the sink -- the pipe into GNU tar,
see L{p2twisted.agent.install} -- so a refused archive has handed tar nothing
but accepted members.  L{checkArchive} runs the same pass without a sink.
"""

import hashlib
import queue
import re
import tarfile
import threading
import zlib

from p2twisted.errors import ArtifactError, UnsafeArchive

#: Default limit on the total size of an archive's files once expanded.
DEFAULT_MAX_EXPANDED_BYTES = 10 * 1024 ** 3

#: The disk a file or directory is assumed to take at least (a block).
DISK_BLOCK = 4096

_FILE, _DIR, _LINK = "regular file", "directory", "symbolic link"
_CHUNK = 1 << 20
_BATCH = 128 << 10
_MAX_HEADER_READ = 64 << 20
_BLOCK = tarfile.BLOCKSIZE
_ZEROS = bytes(_BLOCK)

# Number fields of a tar header (mode, uid, gid, size, mtime, chksum) and the
# octal form GNU tar and Python read alike: optional leading blanks, digits,
# optional blanks, then the end or a NUL and anything.  (Base-256, a first
# byte 0x80, is read alike too.)
_NUMBERS = ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 156))
_LOOSE_OCTAL = re.compile(rb" *([0-7]+) *(?:\0.*)?", re.S)


def _fixedOctal(width):
    # A regular expression for a plain number field of width bytes: digits,
    # then blanks or NULs.
    return b"(" + b"|".join(b"[0-7]{%d}[ \0]{%d}" % (k, width - k)
                            for k in range(width, 0, -1)) + b")"


_PLAIN_NUMBERS = re.compile(b"".join(_fixedOctal(end - start) for start, end in _NUMBERS))
_DECIMAL = re.compile(r"[0-9]+")
# Header types read by _fastHeader (others go to tarfile): regular file, hard
# link, symbolic link, directory.
_FAST_KINDS = {b"0": _FILE, b"\0": _FILE, b"1": _FILE, b"2": _LINK, b"5": _DIR}
_EXTENSIONS = frozenset(b"LKxXg")


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
    Judges archive members in order (rules: L{checkArchive}): C{total} is
    the size of the files accepted, C{used} the disk they are estimated to
    take (whole L{DISK_BLOCK}s per file and directory), which must stay
    within C{freeBytes} (C{None}: not checked).
    """

    def __init__(self, source, maxBytes, freeBytes=None, target=None):
        self.source = source
        self.maxBytes = maxBytes
        self.freeBytes = freeBytes
        self.target = target
        self.total = self.used = 0
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
        Accept the C{tarfile.TarInfo} C{member} or raise L{UnsafeArchive}
        naming it.

        @param header: the member's raw 512-byte tar header, if available.
        @param globalHeaders: the PAX global headers in force.
        """
        for key in ("path", "linkpath", "size") if globalHeaders else ():
            if key in globalHeaders:
                self._refuse(member.name, "follows a global header setting %r" % (key,))
        name = member.name
        self._path(name, name, "path")
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
        if not member.isdir() and (name.endswith("/") or member.pax_headers.get(
                "path", "").endswith("/")):
            # A directory to GNU tar; Python strips the '/' of a PAX path.
            self._refuse(name, "is a %s with a directory's name (tar implementations "
                         "read it differently)" % (kind,))
        if member.issparse() or (member.pax_headers and any(
                k.startswith("GNU.sparse.") for k in member.pax_headers)):
            self._refuse(name, "is a sparse file (not supported)")
        if "size" in member.pax_headers and not _DECIMAL.fullmatch(member.pax_headers["size"]):
            # Python also reads signs, blanks and '_'; GNU tar does not.
            self._refuse(name, "has a header that tar implementations read differently "
                         "(PAX size %r)" % (member.pax_headers["size"],))
        if header is not None:
            if header[156:157] == b"\0" and member.isdir() and \
                    member.offset_data - _BLOCK != member.offset:
                # Python took it for a directory by its header's name ending
                # in '/'; GNU tar goes by the long name or PAX path.
                self._refuse(name, "has a header that tar implementations read differently "
                             "(type NUL, a directory by the header's name only)")
            if header[257:263] != b"ustar\0" and header[345:500].strip(b"\0"):
                # Python prepends this "prefix" field to the name whatever
                # the magic; GNU tar only for POSIX ustar.  Refuse the
                # ambiguity.
                self._refuse(name, "has a header that tar implementations read differently "
                             "(a name prefix without POSIX ustar magic)")
            for start, end in _NUMBERS:
                field = header[start:end]
                if not (field[0] == 0x80 or _LOOSE_OCTAL.fullmatch(field)):
                    # Python also reads signs and '_' in numbers; GNU tar
                    # does not.
                    self._refuse(name, "has a header that tar implementations read "
                                 "differently (number field %r)" % (field,))
        self.accept(name, kind, member.size if member.isreg() else 0,
                    member.linkname if member.islnk() else None)

    def accept(self, name, kind, size, hardLinkTarget=None):
        """
        Accept a member whose header passed the checks of its own (see
        L{check}) or raise L{UnsafeArchive} naming it: judge it against the
        members before it and the limits.

        @param kind: L{_FILE}, L{_DIR} or L{_LINK}.
        @param size: the bytes of a regular file (not a hard link).
        @param hardLinkTarget: the target's name, for a hard link.
        """
        path = name[2:] if name.startswith("./") else name
        if path and "\0" not in path and "//" not in "/" + path and "/." not in "/" + path \
                and not path.endswith("/"):
            pass            # already normal: no empty, '.' or '..' part
        else:
            path = self._path(name, name, "path")
        if not path:
            if kind != _DIR:
                self._refuse(name, "would replace the install directory itself")
            return
        self._checkParents(name, path.rpartition("/")[0])
        previous = self._kinds.get(path)
        if previous is not None and previous != kind:
            self._refuse(name, "would replace a %s with a %s" % (previous, kind))
        if hardLinkTarget is not None:
            # A link to itself (P2's tests extract one: C{a}, then C{a}
            # linked to C{a}) keeps the file already there, as GNU tar does.
            target = self._path(name, hardLinkTarget, "hard link target")
            if self._kinds.get(target) != _FILE:
                self._refuse(name, "is a hard link to %r, which is not a regular file "
                             "earlier in the archive" % (hardLinkTarget,))
        elif kind == _FILE:
            self.total += size
            if self.total > self.maxBytes:
                raise TooLarge("unsafe archive %s: member %r takes the expanded size past the "
                               "limit of %d bytes" % (self.source, name, self.maxBytes),
                               self.total)
            self.used += -(-size // DISK_BLOCK) * DISK_BLOCK
        elif kind == _DIR and previous is None:
            self.used += DISK_BLOCK
        if self.freeBytes is not None and self.used > self.freeBytes:
            raise NoSpace("disk full: artifact %s needs at least %d bytes of disk once "
                          "extracted (up to member %r), and %d are free in %s" % (
                              self.source, self.used, name, self.freeBytes, self.target),
                          self.used)
        self._kinds[path] = kind

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

    def __init__(self, f, source, sink=None, hashing=True):
        self._f = f
        self._source = source
        self._sink = sink
        self._sha = hashlib.sha256() if hashing else None
        self._hash = _Background(self._sha.update, 4, "hash " + source) if hashing else None
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
                if self._hash is not None:
                    self._hash.put(self._input)
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

    def reached(self, offset):
        # Whether the stream is at least offset bytes long.
        return self._produced() >= offset

    def rewind(self, offset):
        # Read again from offset (bytes not yet released to the sink).
        if offset < self._base:
            raise ValueError("offset %d already released" % (offset,))
        self._pos = offset

    def finish(self):
        # Check the rest of the gzip stream; return the file's SHA-256.
        self._sink = None
        while self._fill():
            self._base += len(self._win)
            del self._win[:]
        if self._hash is None:
            return None
        self._hash.close()
        return self._sha.hexdigest()

    def close(self):
        # Stop the hashing thread (if finish did not).
        if self._hash is not None:
            self._hash.close(wait=False)


class _Background(object):
    """
    Runs C{consume(item)} in a thread, on each item L{put}, in order --
    work that releases the GIL (hashing, writing) overlaps the caller's.
    An exception in C{consume} is raised by the next L{put} or L{close}.
    """

    def __init__(self, consume, depth, name):
        self.consume = consume
        self._queue = queue.Queue(depth)
        self._error = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self.consume(item)
                except BaseException as e:
                    self._error = e

    def put(self, item):
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self, wait=True):
        """
        Let the thread finish (C{wait}: the items put so far first).  Closing
        again does nothing.
        """
        if not self._thread.is_alive():
            return
        if not wait:
            self._error = self._error or _Stopped()
        self._queue.put(None)
        self._thread.join()
        if wait and self._error is not None:
            raise self._error


class _Stopped(Exception):
    pass


class _TarState(object):
    """
    What C{tarfile.TarInfo.fromtarfile} needs of a C{TarFile}: the stream,
    the offset of the next header, the PAX global headers seen.
    """

    encoding = "utf-8"
    errors = "surrogateescape"

    def __init__(self, fileobj):
        self.fileobj = fileobj
        self.offset = 0
        self.pax_headers = {}


def _number(field):
    # A number field as GNU tar and Python both read it, or None.
    if field[0] == 0x80:
        return int.from_bytes(field[1:], "big")
    match = _LOOSE_OCTAL.fullmatch(field)
    return int(match.group(1), 8) if match else None


def _fastHeader(block):
    """
    Read a plain header -- valid checksum, ustar or GNU magic, no name prefix,
    plain octal numbers, a regular file, hard link, symbolic link or
    directory with nothing suspicious -- as GNU tar and C{tarfile} both read
    it, without C{tarfile}'s per-member cost.

    @return: C{(name, kind, size, hard link target or None)}, or C{None} for
        any other header (C{tarfile} and L{_Validator.check} then read it).
    """
    kind = _FAST_KINDS.get(block[156:157])
    if kind is None or block[257:265] not in (b"ustar\x0000", b"ustar  \0") or block.count(
            0, 345, 500) != 155:
        return None
    numbers = _PLAIN_NUMBERS.match(block, 100)
    if numbers is None:
        return None
    mode = int(numbers.group(1).rstrip(b" \0"), 8)
    size = int(numbers.group(4).rstrip(b" \0"), 8)
    chksum = int(numbers.group(6).rstrip(b" \0"), 8)
    # The unsigned sum of the header's bytes, the checksum field counted as
    # blanks; each half's sum is below adler32's modulus, so exact.
    total = (zlib.adler32(block[:256]) & 0xffff) + (zlib.adler32(block[256:]) & 0xffff) - 2
    if total - sum(block[148:156]) + 256 != chksum:
        return None
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    linkname = block[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    link = block[156:157] in b"12"
    if (kind != _FILE or link) and size:
        return None     # refused by check(), with its message
    if kind == _DIR:
        name = name.rstrip("/")
    elif name.endswith("/"):
        return None     # a directory to GNU tar, a file to Python: check() refuses
    if (mode & 0o6000 and not link) or (link and not linkname):
        return None
    return name, kind, size, (linkname if block[156:157] == b"1" else None)


# A PAX record GNU tar and Python read alike: a decimal length, one blank, a
# keyword (not starting with a blank, no NUL), '=', then the value and a
# newline ending the record at that length (checked by _paxAlike).
_PAX_RECORD = re.compile(rb"([0-9]+) ([^=\0 \t][^=\0]*)=")


def _paxAlike(data, size):
    """
    Whether GNU tar and Python read the same records from a PAX header whose
    data is C{data}: its C{size} bytes, then the padding to a whole block.
    GNU tar reads records from the C{size} bytes up to a NUL, skipping
    blanks before a length and after it, and drops a record whose length or
    newline is wrong (keeping the name of the ustar header); Python reads
    them up to one it cannot parse, padding included, and trusts the
    lengths.
    """
    pos = 0
    while pos < size and data[pos]:
        match = _PAX_RECORD.match(data, pos)
        if match is None:
            return False
        end = pos + int(match.group(1))
        if not match.end() < end <= size or data[end - 1] != 0x0a:
            return False
        pos = end
    return pos >= len(data) or data[pos] == 0


def _checkChain(src, path, member, offset):
    # The extension headers (long names, PAX) before member's header must
    # lead to it as GNU tar reads them too: same sizes, so same offsets, and
    # the same PAX records.  Of two long names (or link names, or PAX
    # headers) for one member, Python takes the first, GNU tar the last; of
    # a long name and a later PAX path, Python takes the long name, GNU tar
    # the path: such chains are refused.
    end = member.offset_data - _BLOCK
    seen = set()
    while offset < end:
        block = src.peek(offset, _BLOCK)
        size = _number(block[124:136]) if len(block) == _BLOCK else None
        if size is None or block[156] not in _EXTENSIONS:
            break
        kind = b"x" if block[156:157] == b"X" else block[156:157]
        if kind != b"g" and (kind in seen or kind == b"x" and seen & {b"L", b"K"}):
            break
        seen.add(kind)
        padded = -(-size // _BLOCK) * _BLOCK
        if block[156] in b"xXg" and not _paxAlike(src.peek(offset + _BLOCK, padded), size):
            break
        offset += _BLOCK + padded
    if offset != end:
        raise UnsafeArchive("unsafe archive %s: member %r has extension headers that tar "
                            "implementations read differently" % (path, member.name))


def _scan(path, maxBytes, sink=None, freeBytes=None, target=None, names=None, hashing=True):
    """
    Validate the archive at C{path}, passing accepted bytes to C{sink}.

    @param names: a list to which the names of the accepted members are
        appended.
    @return: the SHA-256 of the file (C{None} without C{hashing}).
    """
    validator = _Validator(path, maxBytes, freeBytes, target)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ArtifactError("cannot read artifact %s: %s" % (path, e.strerror))
    with f:
        src = _Inflater(f, path, sink, hashing)
        state = _TarState(src)
        offset = 0
        try:
            while True:
                src.seek(offset)
                if not src.reached(offset):
                    raise ArtifactError("artifact %s is truncated: its tar stream ends inside "
                                        "a member" % (path,))
                block = src.read(_BLOCK)
                if block == _ZEROS or not block and offset:
                    break
                fast = None if state.pax_headers else _fastHeader(block)
                if fast is not None:
                    name, kind, size, linkTarget = fast
                    validator.accept(name, kind, size, linkTarget)
                    offset += _BLOCK + (-(-size // _BLOCK) * _BLOCK if linkTarget is None else 0)
                else:
                    src.rewind(offset)
                    state.offset = offset
                    m = tarfile.TarInfo.fromtarfile(state)
                    header = src.peek(m.offset_data - _BLOCK, _BLOCK)
                    if m.offset_data - _BLOCK != offset:
                        # (m.offset is after any global header.)
                        _checkChain(src, path, m, offset)
                    validator.check(m, header, state.pax_headers)
                    name, offset = m.name, state.offset
                if names is not None:
                    names.append(name)
                src.setLimit(offset)
            if sink is not None:
                src.setLimit(offset, force=True)
                sink(b"\0" * (2 * _BLOCK))
            return src.finish()
        except tarfile.TarError as e:
            raise ArtifactError("artifact %s is not a valid tar archive: %s" % (path, e))
        except OSError as e:
            raise ArtifactError("cannot read artifact %s: %s" % (path, e.strerror or e))
        finally:
            src.close()


def checkArchive(path, maxBytes=DEFAULT_MAX_EXPANDED_BYTES):
    """
    Check, without extracting, that the gzipped tar at C{path} is safe to
    extract.  Refused: absolute paths, C{..}, a member written through a
    symbolic link of the archive or under a regular file, a hard link to
    anything but a regular file earlier in the archive (which may be the
    link's own name: GNU tar and P2 keep that file), device files, FIFOs
    and other special types, setuid/setgid bits, a member that replaces an
    earlier one of another kind (a regular file may replace a regular file),
    and files totalling more than C{maxBytes}.  Symbolic links may point
    anywhere.  Sparse files, global headers renaming members, and headers
    that Python and GNU tar would read differently are refused too.  Reads
    headers only, but decompresses the whole stream once.

    @return: the names of the accepted members.
    @raise UnsafeArchive: naming the archive and the offending member.
    @raise ArtifactError: the file is not a complete, valid tar.gz.
    """
    names = []
    _scan(path, maxBytes, names=names, hashing=False)
    return names
