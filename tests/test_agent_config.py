"""
The agent's settings: defaults, the YAML file, flags over the file, and a
clear one-line error for a bad value.
"""

import os

from twisted.trial import unittest

from p2twisted.agent.config import AgentConfig, agentConfig
from p2twisted.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AgentConfigTests(unittest.TestCase):

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.environ = {"P2_STATE_DIR": os.path.join(self.dir, "state")}

    def load(self, text=None, **flags):
        path = None
        if text is not None:
            path = os.path.join(self.dir, "agent.yaml")
            with open(path, "w") as f:
                f.write(text)
        return agentConfig(path, flags, environ=self.environ)

    def test_defaults(self):
        """
        Without a file, every setting has its default, the pods and hooks
        under the state directory.
        """
        config = self.load(node="n1")
        state = self.environ["P2_STATE_DIR"]
        self.assertEqual((config.stateDir, config.podRoot, config.hooksRoot),
                         (state, os.path.join(state, "pods"), os.path.join(state, "hooks")))
        self.assertEqual(config.store, "local://" + os.path.join(state, "state.db"))
        defaults = AgentConfig(node="n1", store=None, podRoot=None, stateDir=None)
        for name in ("supervisor", "resyncInterval", "sessionTTL", "maxExpandedBytes",
                     "diskBudget", "artifactCacheBytes", "fetchTimeout", "createUsers",
                     "allowedRunAs", "artifactDir", "minUptime"):
            self.assertEqual(getattr(config, name), getattr(defaults, name), name)
        self.assertEqual(config.allowedRunAs, [])

    def test_fileAndFlags(self):
        """
        The file's settings apply; a flag overrides the file.
        """
        config = self.load("node: web1\nsession_ttl: 5\nartifact_cache_bytes: 1048576\n"
                           "disk_budget: 0\nlabels: {rack: r1}\n"
                           "allowed_run_as: [nobody, root]\n", node="web2")
        self.assertEqual((config.node, config.sessionTTL, config.artifactCacheBytes,
                          config.diskBudget, config.labels, config.allowedRunAs),
                         ("web2", 5, 1 << 20, 0, {"rack": "r1"}, ["nobody", "root"]))

    def test_artifactDir(self):
        """
        C{artifact_dir}, where relative artifact paths are found, is unset by
        default and made absolute when set.
        """
        self.assertIsNone(self.load(node="n1").artifactDir)
        config = self.load("artifact_dir: drop\n", node="n1")
        self.assertEqual(config.artifactDir, os.path.abspath("drop"))

    def test_minUptime(self):
        """
        C{min_uptime}, the seconds a pod without a status check must have
        been up to pass, is 5 by default; a negative one is refused.
        """
        self.assertEqual(self.load(node="n1").minUptime, 5.0)
        self.assertEqual(self.load("min_uptime: 1.5\n", node="n1").minUptime, 1.5)
        e = self.assertRaises(UsageError, self.load, "min_uptime: -1\n", node="n1")
        self.assertIn("min_uptime", str(e))

    def test_failsafeSettings(self):
        """
        The removal grace defaults to 10 s and the hold timeout to none (wait
        for a confirmation); the file sets either.
        """
        config = self.load(node="n1")
        self.assertEqual((config.removalGrace, config.holdTimeout), (10.0, None))
        config = self.load("removal_grace: 2.5\nhold_timeout: 3600\n", node="n1")
        self.assertEqual((config.removalGrace, config.holdTimeout), (2.5, 3600))

    def test_podAddress(self):
        """
        Pods listen on 127.0.0.1 unless C{pod_address} (or the flag) names
        another address: each of several agents on one host takes its own.
        """
        self.assertEqual(self.load(node="n1").podAddress, "127.0.0.1")
        self.assertEqual(self.load("pod_address: 127.0.0.2\n", node="n1").podAddress,
                         "127.0.0.2")
        self.assertEqual(self.load("pod_address: 127.0.0.2\n", pod_address="127.0.0.3",
                                   node="n1").podAddress, "127.0.0.3")

    def test_expandedBytes(self):
        """
        C{max_expanded_bytes} limits the expanded size of every pod's
        artifacts, C{pod_max_expanded_bytes} of the pods it names;
        C{max_artifact_bytes} is the former name of the first.
        """
        config = self.load("max_expanded_bytes: 2048\npod_max_expanded_bytes: {web: 1024}\n",
                           node="n1")
        self.assertEqual((config.maxExpandedBytes, config.podMaxExpandedBytes),
                         (2048, {"web": 1024}))
        self.assertEqual(self.load("max_artifact_bytes: 4096\n", node="n1").maxExpandedBytes, 4096)
        error = self.assertRaises(UsageError, self.load, "pod_max_expanded_bytes: {web: 0}\n")
        self.assertIn("pod_max_expanded_bytes.web: expected a number >= 1, got 0", str(error))

    def test_badValues(self):
        """
        A bad value is a L{UsageError} naming the setting and the value.
        """
        for text, fragment in [
                ("artifact_cache_bytes: -1\n", "artifact_cache_bytes: expected a number >= 0"),
                ("session_ttl: true\n", "session_ttl: expected a number >= 1.0, got True"),
                ("supervisor: systemd\n", "expected auto, runit or builtin, got 'systemd'"),
                ("labels: [a]\n", "labels: expected a mapping"),
                ("node: a/b\n", "must not contain '/'"),
                ("removal_grace: -1\n", "removal_grace: expected a number >= 0"),
                ("hold_timeout: soon\n", "hold_timeout: expected a number >= 0"),
                ("allowed_run_as: root\n", "allowed_run_as: expected a list of names"),
                ("pod_address: localhost\n", "pod_address: expected an IPv4 address")]:
            error = self.assertRaises(UsageError, self.load, text)
            self.assertIn(fragment, str(error))

    def test_exampleLoads(self):
        """
        The example in conf/agent.yaml (every setting commented out) loads
        to the defaults.
        """
        config = agentConfig(os.path.join(ROOT, "conf", "agent.yaml"), {"node": "n1"},
                             environ=self.environ)
        self.assertEqual(config.artifactCacheBytes, 10 * 1024 ** 3)
