"""
The haproxy syncer: the backend section it writes, and a real HAProxy
(master-worker mode, reloaded by SIGUSR2) following its syncs to real HTTP
servers; a configuration HAProxy refuses fails the sync and changes nothing.
"""

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.orchestrate.podcluster import Member
from p2twisted.orchestrate.syncers import SyncerError, loadSyncers
from p2twisted.records.podcluster import PodCluster
from p2twisted.syncers.haproxy import render
from tests.haproxyserver import HAProxyServer, requireHAProxy, servePod
from tests.servers import freePort
from tests.store_contract import waitFor

PC = PodCluster("web-az1-prod", "web", "az1", "prod")


class RenderTests(unittest.TestCase):

    def test_backend(self):
        """
        The section names the cluster, lists its healthy members with an
        address as servers, and takes its options from the annotations.
        """
        members = [Member("n1", "web", "10.0.0.1:80", True),
                   Member("n2", "web", "10.0.0.2:80", False),
                   Member("n3", "web", None, True)]
        self.assertEqual(render(PC, members), (
            "# p2 pod cluster web-az1-prod (pod web, az1/prod): written by p2; edits are lost\n"
            "backend web-az1-prod\n"
            "    balance roundrobin\n"
            "    option redispatch\n"
            "    retries 3\n"
            "    retry-on conn-failure empty-response\n"
            "    server n1 10.0.0.1:80 check inter 1s init-addr libc,none\n"))
        pc = PC.withAnnotations({"haproxy_backend": "web", "haproxy_options": ["balance first"],
                                 "haproxy_server_options": ""})
        self.assertEqual(render(pc, members).splitlines()[1:],
                         ["backend web", "    balance first", "    server n1 10.0.0.1:80"])

    def test_badAnnotations(self):
        """An annotation HAProxy could not take is a one-line error naming it."""
        for annotations in ({"haproxy_backend": "a b"}, {"haproxy_options": "x\ny"},
                            {"haproxy_options": [1]}, {"haproxy_server_options": 5}):
            e = self.assertRaises(SyncerError, render, PC.withAnnotations(annotations), [])
            self.assertIn(list(annotations)[0], str(e))

    def test_settings(self):
        """Missing or mistyped settings are one-line errors naming them."""
        for settings, named in (({}, "syncers.haproxy.directory is required"),
                                ({"directory": "d", "configs": "x"}, "syncers.haproxy.configs"),
                                ({"directory": "d", "reload_command": []},
                                 "syncers.haproxy.reload_command"),
                                ({"directory": "d", "configs": ["h.cfg"]},
                                 "does not name the directory d"),
                                ({"directory": "d", "reload_timeout": "5"},
                                 "syncers.haproxy.reload_timeout")):
            e = self.assertRaises(SyncerError, loadSyncers, {"haproxy": settings}, None)
            self.assertIn(named, str(e))
        e = self.assertRaises(SyncerError, loadSyncers, {"nginx": {}}, None)
        self.assertIn("unknown syncer 'nginx'", str(e))


class RealHAProxyTests(unittest.TestCase):

    timeout = 120

    def setUp(self):
        requireHAProxy()
        self.proxy = HAProxyServer(PC.id)
        self.proxy.prepare(os.path.abspath(self.mktemp()))
        os.makedirs(self.proxy.directory, exist_ok=True)
        with open(os.path.join(self.proxy.backends, PC.id + ".cfg"), "w") as f:
            f.write(render(PC, []))
        self.proxy.start()
        self.addCleanup(self.proxy.stopGracefully)
        self.syncer = loadSyncers({"haproxy": self.proxy.settings()}, reactor)[0]
        self.port = freePort()
        self.pods = {name: servePod(self, reactor, name, "127.0.0.1", freePort())
                     for name in ("a", "b")}

    def members(self, *names):
        return [Member(n, "web", "127.0.0.1:%d" % (self.pods[n].getHost().port,), True)
                for n in names]

    def reaches(self, expected):
        @defer.inlineCallbacks
        def check():
            return (yield self.proxy.reached()) == expected
        return waitFor(check, timeout=60, interval=0.1,
                       what="requests through HAProxy to reach %r" % (expected,))

    @defer.inlineCallbacks
    def test_followsSyncs(self):
        """
        Requests through HAProxy reach the members of each sync: none (503),
        one, both, the other; HAProxy is reloaded each time (its master
        stays), and the syncer lists the cluster as one it holds.
        """
        yield self.reaches({"<503>"})
        master = self.proxy.process.pid
        yield self.syncer.sync(PC, self.members("a"))
        yield self.reaches({"a"})
        yield self.syncer.sync(PC, self.members("a", "b"))
        yield self.reaches({"a", "b"})
        yield self.syncer.sync(PC, self.members("b"))
        yield self.reaches({"b"})
        self.assertEqual(self.proxy.process.poll(), None)
        self.assertEqual(self.proxy.process.pid, master)
        self.assertEqual(self.syncer.reloads, 3)
        self.assertEqual((yield self.syncer.initialClusters()), [PC.id])

    @defer.inlineCallbacks
    def test_restartedAfterWriteBeforeReload(self):
        """
        An orchestrator that died after writing a backend file but before
        reloading HAProxy leaves the new file on disk and the old servers in
        HAProxy: the syncer of its successor reloads HAProxy on its first
        sync even though the file already holds the members.
        """
        yield self.reaches({"<503>"})
        with open(os.path.join(self.proxy.backends, PC.id + ".cfg"), "w") as f:
            f.write(render(PC, self.members("a")))
        yield self.syncer.sync(PC, self.members("a"))
        yield self.reaches({"a"})
        self.assertEqual(self.syncer.reloads, 1)
        yield self.syncer.sync(PC, self.members("a"))
        self.assertEqual(self.syncer.reloads, 1)

    @defer.inlineCallbacks
    def test_twoPodsOfOneNode(self):
        """
        A selector matching two pods of one node (blue and green pod ids
        labelled alike) gives HAProxy two servers of distinct names, which
        it takes: requests reach both.
        """
        a, b = self.members("a", "b")
        yield self.syncer.sync(PC, [Member("n1", "web-blue", a.address, True),
                                    Member("n1", "web-green", b.address, True)])
        yield self.reaches({"a", "b"})

    @defer.inlineCallbacks
    def test_unresolvableMember(self):
        """
        A member whose host HAProxy cannot resolve (a node without a
        published pod address, named in no DNS) is a disabled server, not a
        configuration HAProxy refuses: the other members are served.
        """
        yield self.syncer.sync(PC, self.members("a") + [
            Member("n9", "web", "no-such-host.invalid:80", True)])
        yield self.reaches({"a"})

    @defer.inlineCallbacks
    def test_stalePidFile(self):
        """
        A pid file left by a stopped HAProxy whose pid now belongs to another
        program fails the sync saying so; that program gets no signal.
        """
        import subprocess
        self.proxy.stopGracefully()
        other = subprocess.Popen(["sleep", "120"])
        self.addCleanup(lambda: other.poll() is None and (other.kill(), other.wait()))
        with open(self.proxy.pidFile, "w") as f:
            f.write("%d\n" % (other.pid,))
        e = yield self.assertFailure(self.syncer.sync(PC, self.members("a")), SyncerError)
        self.assertIn("is not HAProxy", str(e))
        self.assertIsNone(other.poll())

    @defer.inlineCallbacks
    def test_refusedConfiguration(self):
        """
        A backend HAProxy refuses (a bad option line from the annotations)
        fails the sync with HAProxy's complaint; the old file is put back and
        HAProxy, not reloaded, keeps serving the last members.
        """
        yield self.syncer.sync(PC, self.members("a"))
        yield self.reaches({"a"})
        path = os.path.join(self.proxy.backends, PC.id + ".cfg")
        with open(path) as f:
            before = f.read()
        bad = PC.withAnnotations({"haproxy_options": ["no-such-keyword 1"]})
        e = yield self.assertFailure(self.syncer.sync(bad, self.members("b")), SyncerError)
        self.assertIn("HAProxy refuses the configuration", str(e))
        self.assertIn("no-such-keyword", str(e))
        with open(path) as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(self.syncer.reloads, 1)
        self.assertEqual((yield self.proxy.reached()), {"a"})

    @defer.inlineCallbacks
    def test_deleteAndNotRunning(self):
        """
        Deleting a cluster removes its file and reloads; with HAProxy not
        running, a sync fails saying so, and the next sync reloads even
        when its file is unchanged.
        """
        other = PodCluster("other", "web", "az1", "canary")
        yield self.syncer.sync(other, self.members("a"))
        self.assertEqual(sorted((yield self.syncer.initialClusters())), ["other", PC.id])
        yield self.syncer.delete("other")
        self.assertEqual((yield self.syncer.initialClusters()), [PC.id])
        self.proxy.stopGracefully()
        os.unlink(self.proxy.pidFile)
        e = yield self.assertFailure(self.syncer.sync(PC, self.members("a")), SyncerError)
        self.assertIn("cannot reload HAProxy", str(e))
        self.proxy.start()
        yield self.syncer.sync(PC, self.members("a"))
        self.assertEqual(self.syncer.reloads, 4)
        yield self.reaches({"a"})

    @defer.inlineCallbacks
    def test_diedWhileChecking(self):
        """
        An orchestrator that dies while HAProxy checks a configuration it
        will refuse leaves HAProxy's directory as it was: its successor's
        syncs work and HAProxy restarts.
        """
        yield self.syncer.sync(PC, self.members("a"))
        self.syncer._check = lambda *args: defer.Deferred()  # never answers: died here
        self.syncer.sync(PodCluster("other", "web", "az1", "canary").withAnnotations(
            {"haproxy_options": ["no-such-keyword 1"]}), self.members("b"))
        successor = loadSyncers({"haproxy": self.proxy.settings()}, reactor)[0]
        yield successor.sync(PC, self.members("b"))
        yield self.reaches({"b"})
        self.proxy.stopGracefully()
        self.proxy.start()
        yield self.reaches({"b"})

    @defer.inlineCallbacks
    def test_leftovers(self):
        """
        The candidate directories and temporary files a dead syncer left
        are removed by the next one's first sync; its backends stay.
        """
        leftovers = [os.path.join(self.proxy.backends, ".p2-candidate-x1"),
                     os.path.join(self.proxy.backends, "." + PC.id + ".cfg.x2.tmp")]
        os.makedirs(os.path.join(leftovers[0]))
        for path in (os.path.join(leftovers[0], PC.id + ".cfg"), leftovers[1]):
            with open(path, "w") as f:
                f.write("no-such-keyword\n")
        yield self.syncer.sync(PC, self.members("a"))
        self.assertEqual([p for p in leftovers if os.path.exists(p)], [])
        self.assertEqual(sorted(os.listdir(self.proxy.backends)), [PC.id + ".cfg"])
        yield self.reaches({"a"})

    @defer.inlineCallbacks
    def test_failedReload(self):
        """
        A reload HAProxy fails (a port of its configuration taken by another
        program) fails the sync saying so, HAProxy's old workers serving
        the last members; once the port is free, the retried sync reloads.
        """
        yield self.syncer.sync(PC, self.members("a"))
        yield self.reaches({"a"})
        from twisted.internet.protocol import Factory
        taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        with open(self.proxy.main, "a") as f:
            f.write("    bind 127.0.0.1:%d\n" % (taken.getHost().port,))
        settings = dict(self.proxy.settings(), reload_timeout=3)
        syncer = loadSyncers({"haproxy": settings}, reactor)[0]
        e = yield self.assertFailure(syncer.sync(PC, self.members("b")), SyncerError)
        self.assertIn("HAProxy started no new worker", str(e))
        self.assertEqual(len(str(e).splitlines()), 1)
        self.assertEqual((yield self.proxy.reached()), {"a"})
        yield taken.stopListening()
        yield syncer.sync(PC, self.members("b"))
        yield self.reaches({"b"})
