"""
Where the store is: flag, environment, config file, default.
"""

import os

from twisted.trial import unittest

from p2twisted.config import Config, defaultStateDir, loadConfig
from p2twisted.errors import UsageError


class StoreURLTests(unittest.SynchronousTestCase):

    def test_precedence(self):
        """
        The flag beats C{P2_STORE}, which beats the file's C{store:}, which
        beats the default embedded store.
        """
        env = {"P2_STORE": "zk://127.0.0.1:2181/env", "HOME": "/srv/u"}
        config = Config({"store": "zk://127.0.0.1:2181/file"}, environ=env)
        self.assertEqual(config.storeURL("local:///flag.db"), "local:///flag.db")
        self.assertEqual(config.storeURL(None), "zk://127.0.0.1:2181/env")
        del env["P2_STORE"]
        self.assertEqual(config.storeURL(None), "zk://127.0.0.1:2181/file")
        self.assertEqual(Config({}, environ=env).storeURL(None),
                         "local://" + os.path.abspath(defaultStateDir(env)) + "/state.db")

    def test_unknownScheme(self):
        """
        A URL naming no kind of store is a usage error wherever it comes
        from, so the agent, the orchestrator and C{p2-api} refuse it at start
        instead of retrying to open it for ever.
        """
        for config, flag in ((Config({}, environ={}), "bogus://x"),
                             (Config({}, environ={"P2_STORE": "bogus://x"}), None),
                             (Config({"store": "bogus://x"}, environ={}), None)):
            e = self.assertRaises(UsageError, config.storeURL, flag)
            self.assertIn("unknown store URL 'bogus://x'", str(e))

    def test_twistdRefusesAtStart(self):
        """
        C{twistd p2-api} (like the agent and the orchestrator) given an
        unknown store URL says so in one line and exits.
        """
        import subprocess
        import sys
        for plugin in ("p2-api", "p2-orchestrator"):
            result = subprocess.run([sys.executable, "-m", "twisted", plugin, "--store", "bogus://x"],
                                    capture_output=True, text=True, timeout=60)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("unknown store URL 'bogus://x'", result.stderr + result.stdout)
            self.assertNotIn("Traceback", result.stderr + result.stdout)

    def test_defaultStateDir(self):
        """
        Root keeps state in /var/lib/p2; others in their XDG state directory;
        C{P2_STATE_DIR} overrides both.
        """
        self.assertEqual(defaultStateDir({}, uid=0), "/var/lib/p2")
        self.assertEqual(defaultStateDir({"HOME": "/srv/u"}, uid=1000), "/srv/u/.local/state/p2")
        self.assertEqual(defaultStateDir({"XDG_STATE_HOME": "/x"}, uid=1000), "/x/p2")
        self.assertEqual(defaultStateDir({"P2_STATE_DIR": "/s"}, uid=0), "/s")


class LoadConfigTests(unittest.SynchronousTestCase):

    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_loads(self):
        """
        A config file's settings are read; comments are fine.
        """
        path = self.write("# comment\nstore: local:///tmp/x.db\n")
        self.assertEqual(loadConfig(path, environ={}).storeURL(), "local:///tmp/x.db")

    def test_exampleConfig(self):
        """
        The shipped example config loads (all of it commented defaults).
        """
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        config = loadConfig(os.path.join(here, "conf", "p2.yaml"), environ={})
        self.assertEqual(config.data, {})

    def test_errors(self):
        """
        A missing file, invalid YAML and a non-mapping are one-line
        L{UsageError}s naming the file.
        """
        missing = self.mktemp()
        e = self.assertRaises(UsageError, loadConfig, missing, {})
        self.assertIn(missing, str(e))
        bad = self.write("store: [unclosed\n")
        e = self.assertRaises(UsageError, loadConfig, bad, {})
        self.assertIn("not valid YAML", str(e))
        self.assertIn("line", str(e))
        listy = self.write("- a\n- b\n")
        e = self.assertRaises(UsageError, loadConfig, listy, {})
        self.assertIn("mapping", str(e))
        for error in (e,):
            self.assertNotIn("\n", str(error))
