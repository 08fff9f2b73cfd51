"""
C{.ci/run}: its last line is C{tests: N passed, N failed} and its exit
status says whether the suite passed, whatever C{make test} printed; run
here with a stand-in C{make} printing a trial summary.
"""

import os
import subprocess

from twisted.trial import unittest

from tests.cli import ROOT


class CIRunTests(unittest.TestCase):

    def run_(self, output, code):
        """
        Run C{.ci/run} with a C{make} that prints C{output} and exits with
        C{code}.

        @return: C{(its output lines, its exit status)}.
        """
        bin_ = os.path.abspath(self.mktemp())
        os.makedirs(bin_)
        make = os.path.join(bin_, "make")
        with open(make, "w") as f:
            f.write("#!/bin/sh\n[ \"$1\" = test ] || exit 99\n[ -f setup.py ] || exit 98\n"
                    "printf '%%s\\n' %s\nexit %d\n" % (
                        " ".join("'%s'" % (line,) for line in output), code))
        os.chmod(make, 0o755)
        env = dict(os.environ, PATH=bin_ + os.pathsep + os.environ["PATH"])
        result = subprocess.run([os.path.join(ROOT, ".ci", "run")], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        return result.stdout.decode().splitlines(), result.returncode

    def test_failures(self):
        """
        Failures and errors are counted and the run fails.
        """
        lines, code = self.run_(["FAILED (skips=1, failures=2, errors=1, successes=7)"], 1)
        self.assertEqual(lines[-1], "tests: 7 passed, 3 failed")
        self.assertEqual(code, 1)

    def test_passed(self):
        """
        A passing suite passes.
        """
        lines, code = self.run_(["PASSED (skips=2, successes=9)"], 0)
        self.assertEqual((lines[-1], code), ("tests: 9 passed, 0 failed", 0))

    def test_noTestRan(self):
        """
        A suite that ran nothing fails, and the summary is still the last
        line (the error came after it).
        """
        lines, code = self.run_([], 0)
        self.assertEqual(lines[-1], "tests: 0 passed, 0 failed")
        self.assertIn("error: no test ran", lines)
        self.assertEqual(code, 1)
