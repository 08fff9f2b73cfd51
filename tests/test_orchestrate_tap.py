"""
C{twistd p2-orchestrator}'s options and settings build the orchestrator
service: one farm per kind named, on one store.
"""

from twisted.internet import task
from twisted.python import usage
from twisted.trial import unittest

from p2twisted.errors import UsageError
from p2twisted.orchestrate.controllers import FARMS, FarmKind
from p2twisted.orchestrate.tap import Options, Orchestrator, makeService, orchestratorConfig
from p2twisted.orchestrate.testing import FakeController
from p2twisted.store import keys


def options(*argv):
    parsed = Options()
    parsed.parseOptions(list(argv))
    return parsed


class ConfigTests(unittest.TestCase):

    def configFile(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_defaults(self):
        """
        Without a file or flags: every farm, a 15 s session, a 30 s resync.
        """
        config = orchestratorConfig(None, {"store": "memory://"}, environ={})
        self.assertEqual((config.store, config.farms, config.sessionTTL, config.resyncInterval,
                          config.newsInterval), ("memory://", sorted(FARMS), 15.0, 30.0, 0.1))
        self.assertIn("ds", config.farms)

    def test_fileAndFlags(self):
        """
        The config file sets farms, session TTL and resync interval; the
        C{--farms} flag overrides the file.
        """
        path = self.configFile("store: memory://\nfarms: [roll]\nsession_ttl: 4\n"
                               "resync_interval: 2\nnews_interval: 0\n")
        config = orchestratorConfig(path, {}, environ={})
        self.assertEqual((config.store, config.farms, config.sessionTTL, config.resyncInterval,
                          config.newsInterval), ("memory://", ["roll"], 4, 2, 0))
        self.assertEqual(orchestratorConfig(path, {"farms": "rc, roll"}, environ={}).farms,
                         ["rc", "roll"])

    def test_badSettings(self):
        """
        An unknown farm or a bad number is a one-line error naming it.
        """
        e = self.assertRaises(UsageError, orchestratorConfig, None,
                              {"store": "memory://", "farms": "rc,nope"}, environ={})
        self.assertEqual(str(e), "orchestrator config farms: unknown farm 'nope'; expected some "
                                 "of %s" % (", ".join(sorted(FARMS)),))
        path = self.configFile("session_ttl: soon\n")
        e = self.assertRaises(UsageError, orchestratorConfig, path, {}, environ={})
        self.assertIn("session_ttl", str(e))
        self.assertRaises(UsageError, orchestratorConfig, None, {"farms": ","}, environ={})

    def test_usageErrorForTwistd(self):
        """
        A bad setting fails option parsing with a L{usage.UsageError}, which
        twistd shows as one line (not a traceback from C{makeService}).
        """
        e = self.assertRaises(usage.UsageError, options, "--store", "memory://", "--farms",
                              "nope")
        self.assertIn("unknown farm 'nope'", str(e))
        self.assertIsInstance(makeService(options("--store", "memory://"), task.Clock()),
                              Orchestrator)


class ServiceTests(unittest.TestCase):

    def test_farmsOnOneStore(self):
        """
        Started, the orchestrator opens the store and runs the farms named,
        which claim their objects; stopped, it releases them and closes the
        store.
        """
        clock = task.Clock()
        made = []

        def controller(store, objectId, lock, clock, reader):
            made.append(FakeController(objectId, lock))
            return made[-1]
        kinds = {name: FarmKind(k.name, k.tree, k.news, controller) for name, k in FARMS.items()}
        config = orchestratorConfig(None, {"store": "memory://", "farms": "rc"}, environ={})
        orchestrator = Orchestrator(config, clock, kinds)
        orchestrator.startService()
        self.assertEqual(sorted(orchestrator.farms), ["rc"])
        store = orchestrator.store
        self.successResultOf(store.put(keys.replicationController("web"), b"{}"))
        self.successResultOf(store.put(keys.roll("web2"), b"{}"))
        self.assertEqual([c.objectId for c in made], ["web"])
        self.assertIsNotNone(self.successResultOf(store.get(keys.lock("rc", "web"))))
        before = made[0].reconciles
        self.successResultOf(store.put(keys.health("web", "n1"), b"{}"))
        self.successResultOf(store.put(keys.health("web", "n2"), b"{}"))
        self.assertEqual(made[0].reconciles, before)  # news waits for news_interval
        clock.advance(config.newsInterval)
        self.assertEqual(made[0].reconciles, before + 1)  # the cluster watch's news, once
        self.successResultOf(orchestrator.stopService())
        self.assertTrue(made[0].stopped)
        self.assertIsNone(orchestrator.store)

    def test_plugin(self):
        """
        The twistd plugin points at this tap.
        """
        from twisted.plugins.p2_orchestrator import p2orchestrator
        self.assertEqual((p2orchestrator.tapname, p2orchestrator.module),
                         ("p2-orchestrator", "p2twisted.orchestrate.tap"))
