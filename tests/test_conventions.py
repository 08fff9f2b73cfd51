"""
Conventions of the code base that a test can check: every module's
C{# -*- test-case-name: ... -*-} header names test modules that exist (so
C{trial --testmodule} and editors run the right tests), and threads are
always those of the injected reactor.
"""

import os
import re

from twisted.trial import unittest

HEADER = re.compile(r"^#.*-\*-.*test-case-name:\s*(?P<names>[^;]*?)\s*(;.*)?-\*-", re.M)
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP = {".venv", "_trial_temp", ".git", "build", "dist"}


def pythonFiles(top=TOP):
    """
    @return: the repository's C{.py} files, as paths relative to C{top}.
    """
    found = []
    for directory, subdirs, files in os.walk(top):
        subdirs[:] = sorted(d for d in subdirs
                            if d not in SKIP and not d.startswith(("_trial_temp", "."))
                            and not d.endswith(".egg-info"))
        found.extend(os.path.relpath(os.path.join(directory, f), top)
                     for f in sorted(files) if f.endswith(".py"))
    return found


def namedTestModules(text):
    """
    @return: the test modules the first lines of C{text} name in their
        C{test-case-name} header (empty when there is none).
    """
    match = HEADER.search("\n".join(text.splitlines()[:2]))
    if match is None:
        return []
    return [name.strip() for name in match.group("names").split(",") if name.strip()]


class HeaderTests(unittest.TestCase):

    def test_parse(self):
        self.assertEqual(namedTestModules("# -*- test-case-name: tests.test_a -*-\n"),
                         ["tests.test_a"])
        self.assertEqual(namedTestModules("#!/usr/bin/env python\n"
                                          "# -*- test-case-name: tests.a, tests.b -*-\n"),
                         ["tests.a", "tests.b"])
        self.assertEqual(namedTestModules('"""no header"""\n'), [])

    def test_namedModulesExist(self):
        """
        Every header in the repository names C{tests/<module>.py} files
        that exist.
        """
        self.assertIn(os.path.join("p2twisted", "agent", "worker.py"), pythonFiles())
        missing = []
        for path in pythonFiles():
            with open(os.path.join(TOP, path), encoding="utf-8") as f:
                names = namedTestModules(f.read(4096))
            for name in names:
                module = os.path.join(TOP, *name.split(".")) + ".py"
                if not os.path.isfile(module):
                    missing.append("%s names %s" % (path, name))
        self.assertEqual(missing, [])


class ThreadTests(unittest.TestCase):

    def test_injectedReactorsPool(self):
        """
        The package runs threads through the injected reactor's pool
        (C{deferToThreadPool(reactor, reactor.getThreadPool(), ...)}),
        never the global reactor's (C{deferToThread}, C{callInThread}).
        """
        global_ = re.compile(r"\bdeferToThread\(|\bcallInThread\(")
        found = []
        for path in pythonFiles():
            if not path.startswith(("p2twisted" + os.sep, "twisted" + os.sep)):
                continue
            with open(os.path.join(TOP, path), encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if global_.search(line):
                        found.append("%s:%d: %s" % (path, number, line.strip()))
        self.assertEqual(found, [])
