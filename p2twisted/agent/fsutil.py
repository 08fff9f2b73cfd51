# -*- test-case-name: tests.test_agent_install -*-
"""
Small filesystem operations the agent relies on for crash safety.
"""

import os


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
