"""
L{tests.reachable}: directories every user can reach.
"""

import os
import pwd
import subprocess

from twisted.trial import unittest

from tests.reachable import reachableDirectory, searchableByAll


class ReachableDirectoryTests(unittest.TestCase):
    def test_searchableByAll(self):
        """
        A directory is reachable only when it and every directory above it
        are searchable by others.
        """
        private = os.path.abspath(self.mktemp())
        inner = os.path.join(private, "inner")
        os.makedirs(inner)
        os.chmod(private, 0o700)
        os.chmod(inner, 0o755)
        self.assertFalse(searchableByAll(inner))
        os.chmod(private, 0o711)
        self.assertEqual(searchableByAll(inner), searchableByAll(os.path.dirname(private)))
        self.assertFalse(searchableByAll(os.path.join(private, "missing")))

    def test_reachableAndRemoved(self):
        """
        The directory is reachable by every user, and removed with what is
        in it at cleanup.
        """
        path = reachableDirectory(self)
        self.assertTrue(searchableByAll(path))
        with open(os.path.join(path, "file"), "w") as f:
            f.write("x")
        self.doCleanups()
        self.assertFalse(os.path.exists(path))

    def test_nobodyReadsIt(self):
        """
        As root, nobody can read a file put in it.
        """
        if os.geteuid() != 0:
            raise unittest.SkipTest("running a command as nobody needs root")
        path = reachableDirectory(self)
        with open(os.path.join(path, "file"), "w") as f:
            f.write("hello\n")
        os.chmod(os.path.join(path, "file"), 0o644)
        entry = pwd.getpwnam("nobody")

        def drop():
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        result = subprocess.run(["cat", os.path.join(path, "file")], preexec_fn=drop,
                                stdout=subprocess.PIPE, cwd="/", timeout=60)
        self.assertEqual(result.stdout, b"hello\n")
