# -*- test-case-name: tests.test_reachable -*-
"""
Directories that the users pods run as can reach, wherever the checkout
lives.

Trial's C{mktemp()} directories are under the checkout, which may sit in a
private directory (a clone in root's home, or in C{mktemp -d}, both 0700).
Pod roots, and anything a pod or a process started as another user must
read, go in a directory from L{reachableDirectory} instead.
"""

import os
import shutil
import stat
import tempfile


def searchableByAll(path):
    """
    @return: whether every user can reach C{path}: it and each directory
        above it are searchable by others.
    """
    current = os.path.abspath(path)
    while True:
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def _bases():
    yield tempfile.gettempdir()
    yield "/tmp"
    yield "/var/tmp"


def reachableDirectory(testCase, prefix="p2-test-"):
    """
    Make a new directory (mode 0755) that every user can reach, removed with
    its contents when C{testCase} is cleaned up.

    @return: its absolute path.
    @raise unittest.SkipTest: when no temporary directory is reachable by
        every user.
    """
    for base in _bases():
        if searchableByAll(base) and os.access(base, os.W_OK | os.X_OK):
            break
    else:
        from twisted.trial.unittest import SkipTest
        raise SkipTest("no temporary directory that every user can reach "
                       "(tried %s, /tmp, /var/tmp)" % (tempfile.gettempdir(),))
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(path, 0o755)
    testCase.addCleanup(shutil.rmtree, path)
    return path
