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
        self.assertIsInstance(top, service.MultiService)

    def test_badSetting(self):
        """
        A bad setting is a usage error (one line for twistd), not a traceback.
        """
        self.assertRaises(usage.UsageError, makeService, self.options("--supervisor", "nope"),
                          task.Clock())
