"""
C{twistd p2-agent}'s options build the agent service.
"""

import os

from twisted.application import service
from twisted.internet import task
from twisted.python import usage
from twisted.trial import unittest

from p2twisted.agent.service import AgentService
from p2twisted.agent.tap import Options, makeService


class TapTests(unittest.TestCase):

    def options(self, *argv):
        base = os.path.abspath(self.mktemp())
        options = Options()
        options.parseOptions(["--store", "memory://", "--node", "n1", "--state-dir", base,
                              "--supervisor", "builtin"] + list(argv))
        return options

    def test_service(self):
        """
        The options give a service holding the agent for the named node,
        and with C{--status-port} one more child: its status endpoint.
        """
        top = makeService(self.options(), task.Clock())
        agents = [s for s in top if isinstance(s, AgentService)]
        self.assertEqual([a.node for a in agents], ["n1"])
        withStatus = makeService(self.options("--status-port", "0"), task.Clock())
        self.assertEqual(len(list(withStatus)), len(list(top)) + 1)
        withMetrics = makeService(self.options("--metrics-listen", "tcp:0:interface=127.0.0.1"),
                                  task.Clock())
        self.assertEqual(len(list(withMetrics)), len(list(top)) + 1)
        self.assertIsInstance(top, service.MultiService)

    def test_badSetting(self):
        """
        A bad setting is a usage error while the options are parsed (twistd
        shows that as one line; raised later, in C{makeService}, it would be
        a traceback).
        """
        for argv, named in ((["--supervisor", "nope"], "supervisor"),
                            (["--status-port", "abc"], "--status-port"),
                            (["--status-port", "70000"], "--status-port"),
                            (["--metrics-listen", "soon"], "metrics_listen"),
                            (["--metrics-listen", "tcp:port"], "metrics_listen")):
            e = self.assertRaises(usage.UsageError, self.options, *argv)
            self.assertIn(named, str(e))

    def test_twistdOneLine(self):
        """
        C{twistd p2-agent} with a bad setting prints one line naming it and
        exits non-zero, with no traceback.
        """
        import subprocess
        import sys
        for argv, named in ((["--supervisor", "nope"], "supervisor"),
                            (["--metrics-listen", "tcp:port"], "agent config metrics_listen")):
            result = subprocess.run(
                [sys.executable, "-m", "twisted", "p2-agent", "--store", "memory://"] + argv,
                capture_output=True, text=True, timeout=60)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(named, result.stderr + result.stdout)
            self.assertNotIn("Traceback", result.stderr + result.stdout)
