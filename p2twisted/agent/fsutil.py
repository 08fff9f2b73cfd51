# -*- test-case-name: tests.test_agent_install -*-
"""
Small filesystem operations the agent relies on for crash safety.
"""

import ctypes
import errno
import os
import threading
import time


def _loadSyncfs():
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


#: libc's C{syncfs(2)} (Linux), or C{None} where there is none.
_syncfs = _loadSyncfs()

#: C{{st_dev: time.monotonic()}}: when the latest flush of that filesystem
#: that succeeded began (L{flushedSince}).
_flushed = {}
_flushedLock = threading.Lock()


def syncFilesystem(path):
    """
    Flush everything written to the filesystem holding C{path} (file data,
    new names, renames) to disk: C{syncfs(2)}, what C{sync -f} does, without
    starting a process.  One call replaces an fsync per file and per
    directory of a tree just written, at about the cost of one fsync.
    Blocks: call it from a thread when the reactor matters.

    @raise OSError: if C{path} cannot be opened or the flush fails.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        device = os.fstat(fd).st_dev
        began = time.monotonic()
        if _syncfs is None:
            os.sync()
        elif _syncfs(fd) != 0:
            code = ctypes.get_errno() or errno.EIO
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(fd)
    with _flushedLock:
        _flushed[device] = max(_flushed.get(device, began), began)


def flushedSince(path, when):
    """
    @param when: a C{time.monotonic()} reading.
    @return: whether a L{syncFilesystem} of the filesystem holding C{path}
        began at C{when} or later and succeeded: everything written there
        before C{when} (by any thread of this process) is on disk.
    """
    try:
        device = os.stat(path).st_dev
    except OSError:
        return False
    with _flushedLock:
        return _flushed.get(device, when - 1) >= when


def fsyncDir(path):
    """
    Flush a directory's entries (new names, renames) to disk.

    @raise OSError: if it cannot be opened or flushed.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replaceLink(link, target):
    """
    Point the symbolic link C{link} at C{target} atomically (a temporary link
    renamed over it): readers see the old target or the new one, never none.

    @return: whether anything changed.
    """
    if os.path.islink(link) and os.readlink(link) == target:
        return False
    tmp = os.path.join(os.path.dirname(link), ".link-%s" % (os.urandom(6).hex(),))
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        os.unlink(tmp)
        raise
    return True
