"""
The C{twistd p2-agent} and C{p2-orchestrator} plugins are found in the installed environment, as a
user runs it: from any directory, without C{PYTHONPATH}, after
C{pip install .} or a plain C{pip install -e .}.
"""

import os
import subprocess
import sys

from twisted.trial import unittest


class TwistdPluginTests(unittest.TestCase):
    def test_listed(self):
        """
        C{twistd --help} beside this Python lists C{p2-agent} and
        C{p2-orchestrator}, quietly.
        """
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.path.exists(twistd):
            raise unittest.SkipTest("no twistd beside %s" % (sys.executable,))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        result = subprocess.run([twistd, "--help"], cwd="/", env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.assertIn(b"p2-agent ", result.stdout)
        self.assertIn(b"p2-orchestrator ", result.stdout)
        self.assertIn(b"p2-api ", result.stdout)
