"""
The node-marker failsafe end to end (README.rst, "The failsafe"): a real
agent running real pods under runit, on the local store and on a real
ZooKeeper, survives a recursive delete of its node's intent -- children
first, key by key, or ZooKeeper's own C{zkCli.sh deleteall} -- and a restore
after a wipe holds every removal until C{p2 node confirm}.
"""

import json
import os
import sys
import uuid

from twisted.internet import defer, utils
from twisted.trial import unittest

from p2twisted import intent
from p2twisted.manifest import parseManifest
from p2twisted.store import keys, openStore
from tests.agentharness import (
    AgentHarness, buildWebArtifact, freePort, httpGet, waitForVersion, webManifest)
from tests.cli import ROOT
from tests.servers import requireServer
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit

#: The removal grace of the agents here: long enough for the deletes below
#: (a few milliseconds each), even on a loaded machine.
GRACE = 10.0

ZKCLI = "/usr/share/zookeeper/bin/zkCli.sh"


def p2(url, *args):
    """
    Run the real C{p2 --store URL ARGS...}.

    @return: L{Deferred} firing with C{(stdout, stderr, exit code)}.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
    d = utils.getProcessOutputAndValue(sys.executable, ["-m", "p2twisted.cli", "--store", url]
                                       + list(args), env=env, path=ROOT)
    return d.addCallback(lambda r: (r[0].decode(), r[1].decode(), r[2]))


class FailsafeMixin(object):
    """
    One agent (removal grace L{GRACE}) running two pods, web and other.
    """

    timeout = 180

    @defer.inlineCallbacks
    def startTwoPods(self):
        self.artifacts = os.path.abspath(self.mktemp())
        os.makedirs(self.artifacts)
        self.harness = AgentHarness(self, self.url, removalGrace=GRACE).start()
        self.ports = {"web": freePort(), "other": freePort()}
        for podId, port in sorted(self.ports.items()):
            artifact, sha = buildWebArtifact(self.artifacts, podId, "1")
            yield intent.schedule(self.store, "n1",
                                  parseManifest(webManifest(podId, artifact, port, sha)))
        for port in self.ports.values():
            yield waitForVersion(port, "1")
        yield self.harness.whenConverged()

    @defer.inlineCallbacks
    def statusVersion(self):
        entry = yield self.store.get(keys.status("agents", "n1"))
        return entry.version if entry else None

    @defer.inlineCallbacks
    def converged(self, before):
        """
        Wait until the agent has converged on a change made after its status
        had version C{before}.
        """
        yield waitFor(lambda: self.statusVersion().addCallback(lambda v: v != before),
                      timeout=60, what="the agent to act on the change")
        yield self.harness.whenConverged()

    @defer.inlineCallbacks
    def removals(self):
        entry = yield self.store.get(keys.status("agents", "n1"))
        return json.loads(entry.value).get("removals", {}) if entry else {}

    def waitForRemovals(self, state, what):
        return waitFor(lambda: self.removals().addCallback(
            lambda r: r if r.get("state") == state else None), timeout=60, what=what)

    @defer.inlineCallbacks
    def assertBothRunning(self):
        for podId, port in sorted(self.ports.items()):
            self.assertEqual((yield httpGet("http://127.0.0.1:%d/version" % (port,))),
                             (200, b"1"), podId)
            self.assertIsNotNone((yield self.store.get(keys.reality("n1", podId))), podId)

    @defer.inlineCallbacks
    def markerGoneRemovesNothing(self):
        """
        Once the agent has seen the marker go, a resync of its own still
        removes nothing: both pods keep running, their reality stays.
        """
        yield waitFor(lambda: self.harness.agent.markerPresent is False, timeout=60,
                      what="the agent to see the marker gone")
        yield self.harness.agent.resync()
        yield self.harness.whenConverged()
        yield self.assertBothRunning()
        removals = yield self.removals()
        self.assertEqual((removals["state"], removals["held"]), ("no-marker", []))

    @defer.inlineCallbacks
    def restoreHoldsThenConfirm(self, what):
        """
        Schedule web again (a new marker): other, not in intent, keeps
        running, its removal held as C{what} ("held" pod or "orphan"), and
        C{p2 inspect} and C{p2 status} say so with the command that confirms;
        C{p2 node confirm n1} then removes it, and web keeps serving.
        """
        artifact, sha = buildWebArtifact(self.artifacts, "web", "1")
        before = yield self.statusVersion()
        yield intent.schedule(self.store, "n1", parseManifest(
            webManifest("web", artifact, self.ports["web"], sha)))
        yield self.converged(before)
        self.assertTrue(self.harness.agent.markerPresent)
        self.assertEqual((yield httpGet("http://127.0.0.1:%d/version" % (self.ports["other"],))),
                         (200, b"1"))
        removals = yield waitFor(lambda: self.removals().addCallback(
            lambda r: r if r.get("state") == "held" and "other" in r.get("held", ()) else None),
            timeout=60, what="the agent to hold other's removal")
        self.assertEqual(removals["confirm"], "p2 node confirm n1")
        yield self.harness.whenConverged()
        self.assertEqual((yield httpGet("http://127.0.0.1:%d/version" % (self.ports["other"],))),
                         (200, b"1"))
        out, err, code = yield p2(self.url, "inspect")
        self.assertEqual(code, 0, err)
        row = [line for line in out.splitlines() if line.startswith("other ")]
        self.assertEqual(len(row), 1, out)
        self.assertIn(what, row[0].split())
        self.assertIn("removals on n1 are held", out)
        self.assertIn("confirm with 'p2 node confirm n1'", out)
        out, err, code = yield p2(self.url, "status")
        self.assertEqual(code, 0, err)
        self.assertIn("removals on n1 are held", out)
        out, err, code = yield p2(self.url, "node", "confirm", "n1")
        self.assertEqual(code, 0, err)
        self.assertIn("confirmed the node marker of n1", out)
        yield waitForVersion(self.ports["other"], None, timeout=60)
        yield waitFor(lambda: self.store.get(keys.reality("n1", "other")).addCallback(
            lambda e: e is None), timeout=30, what="other's reality to be deleted")
        self.assertEqual((yield httpGet("http://127.0.0.1:%d/version" % (self.ports["web"],))),
                         (200, b"1"))
        yield self.waitForRemovals("free", "removals no longer held")


class LocalStoreFailsafeTests(FailsafeMixin, unittest.TestCase):
    """
    On the local store, deleting one key at a time.
    """

    @defer.inlineCallbacks
    def setUp(self):
        requireRunit()
        self.url = "local://%s/state.db" % (os.path.abspath(self.mktemp()),)
        self.store = yield openStore(self.url)
        self.addCleanup(self.store.close)
        yield self.startTwoPods()

    @defer.inlineCallbacks
    def test_childrenFirstThenWipeAndRestore(self):
        """
        Deleting intent/n1/web, then (once the agent has seen web gone under
        the marker) intent/n1/other, then intent/n1, removes nothing.  Then
        reality is wiped too (what C{p2 init --force} does) and web is
        scheduled again: other, now an orphan, keeps running until
        C{p2 node confirm n1}.
        """
        before = yield self.statusVersion()
        yield self.store.delete(keys.intent("n1", "web"))
        yield self.converged(before)
        yield self.assertBothRunning()
        self.assertEqual((yield self.removals())["state"], "grace")
        yield self.store.delete(keys.intent("n1", "other"))
        yield self.store.delete(keys.intentNode("n1"))
        yield self.markerGoneRemovesNothing()
        for podId in sorted(self.ports):
            yield self.store.delete(keys.reality("n1", podId))
        yield self.restoreHoldsThenConfirm("orphan")


class ZooKeeperFailsafeTests(FailsafeMixin, unittest.TestCase):
    """
    On a real ZooKeeper, deleting with ZooKeeper's own C{zkCli.sh deleteall}.
    """

    @defer.inlineCallbacks
    def setUp(self):
        requireRunit()
        from tests.zkserver import sharedServer
        if not os.access(ZKCLI, os.X_OK):
            requireServer("ZooKeeper", "%s is missing" % (ZKCLI,),
                          install="apt-get install zookeeper")
        self.server = sharedServer()
        self.root = "/t%s" % (uuid.uuid4().hex,)
        self.url = "zk://%s%s" % (self.server.hosts, self.root)
        self.store = yield openStore(self.url)
        self.addCleanup(self.store.close)
        yield self.startTwoPods()

    @defer.inlineCallbacks
    def zkCli(self, *args):
        out, err, code = yield utils.getProcessOutputAndValue(
            ZKCLI, ["-server", self.server.hosts] + list(args), env=dict(os.environ))
        self.assertEqual(code, 0, (out + err).decode("utf-8", "replace")[-2000:])

    @defer.inlineCallbacks
    def test_deleteallThenRestore(self):
        """
        C{zkCli.sh deleteall <root>/intent/n1} removes nothing (one C{multi},
        which the agent's watch still sees in steps); scheduling web again
        then holds other's removal (its reality intact) until
        C{p2 node confirm n1}.
        """
        yield self.zkCli("deleteall", "%s/%s" % (self.root, keys.intentNode("n1")))
        yield self.markerGoneRemovesNothing()
        yield self.restoreHoldsThenConfirm("held")
