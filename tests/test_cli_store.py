"""
C{p2 store copy}: a namespace moved between backends (local, ZooKeeper,
etcd, memory) with its persistent keys only, refused over a non-empty
target without C{--force}, verified key by key.
"""

import json
import os
import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.cli.store import BATCH_BYTES, CopyPlan, copyStore, mismatches
from p2twisted.errors import P2Error
from p2twisted.store.common import MAX_OPS, MAX_VALUE, Delete, Entry, Put
from p2twisted.store.memory import MemoryStore
from tests.cli import ROOT, P2CommandMixin

EXAMPLE = os.path.join(ROOT, "conf", "examples", "hello.yaml")


class PlanTests(unittest.TestCase):
    """
    What a copy does, as a pure function of the two snapshots.
    """

    def test_between(self):
        """
        Persistent source keys are copied, ephemeral ones skipped; target
        keys not in the source are stale unless ephemeral.
        """
        source = {"a": Entry("a", b"1", 1), "m/n1": Entry("m/n1", b"up", 2, owner="s1")}
        target = {"a": Entry("a", b"old", 7), "gone": Entry("gone", b"x", 8),
                  "m/n2": Entry("m/n2", b"up", 9, owner="s9")}
        plan = CopyPlan.between(source, target)
        self.assertEqual(sorted(plan.copy), ["a"])
        self.assertEqual(plan.ephemeral, ["m/n1"])
        self.assertEqual(plan.stale, ["gone"])
        self.assertEqual(plan.existing, 3)

    def test_batches(self):
        """
        Batches hold deletes then puts, at most 64 ops and L{BATCH_BYTES} of
        values each; a single largest value is a batch of its own.
        """
        source = {"k%03d" % i: Entry("k%03d" % i, b"v", i) for i in range(100)}
        source["big"] = Entry("big", b"x" * MAX_VALUE, 1000)
        plan = CopyPlan.between(source, {"stale": Entry("stale", b"", 1)})
        batches = list(plan.batches())
        self.assertEqual(batches[0][0], Delete("stale"))
        self.assertEqual([op for b in batches for op in b][1:],
                         [Put(k, source[k].value) for k in sorted(source)])
        for batch in batches:
            self.assertLessEqual(len(batch), MAX_OPS)
            values = sum(len(getattr(op, "value", b"")) for op in batch)
            self.assertTrue(values <= BATCH_BYTES or len(batch) == 1)

    def test_mismatches(self):
        plan = CopyPlan.between({"a": Entry("a", b"1", 1), "b": Entry("b", b"2", 1)},
                                {"s": Entry("s", b"", 1)})
        self.assertEqual(mismatches(plan, {"a": Entry("a", b"1", 5), "s": Entry("s", b"", 1)}),
                         ["b", "s"])


class CopyTests(unittest.TestCase):
    """
    L{copyStore} between in-memory stores.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.source = MemoryStore(url="memory://source")
        self.target = MemoryStore(url="memory://target")
        yield self.source.put("intent/n1", b"{}")
        yield self.source.put("intent/n1/web", b"manifest")
        self.session = yield self.source.session(10)
        yield self.session.createEphemeral("machines/n1", b"facts")
        self.addCleanup(self.source.close)
        self.addCleanup(self.target.close)

    def values(self, store):
        return store.list("").addCallback(lambda es: {k: e.value for k, e in es.items()})

    @defer.inlineCallbacks
    def test_copy(self):
        """
        Persistent keys arrive with their values; the ephemeral one does not,
        and the output says so.
        """
        out = _Out()
        yield copyStore(self.source, self.target, out=out)
        self.assertEqual((yield self.values(self.target)),
                         {"intent/n1": b"{}", "intent/n1/web": b"manifest"})
        self.assertIn("copying 2 keys", out.text)
        self.assertIn("skipping 1 ephemeral keys (their owners re-create them): machines/n1",
                      out.text)
        self.assertIn("verified all 2 keys", out.text)
        self.assertIn("hold pod removals until their node is confirmed: p2 --store "
                      "memory://target node confirm NODE (nodes: n1)", out.text)

    @defer.inlineCallbacks
    def test_refusesNonEmpty(self):
        """
        A target holding keys is refused, naming it and C{--force}, and
        keeps what it held.
        """
        yield self.target.put("mine", b"keep")
        e = yield self.assertFailure(copyStore(self.source, self.target), P2Error)
        self.assertIn("memory://target already holds 1 keys", str(e))
        self.assertIn("--force", str(e))
        self.assertEqual((yield self.values(self.target)), {"mine": b"keep"})

    @defer.inlineCallbacks
    def test_force(self):
        """
        With C{force} the target's persistent keys are replaced; its
        ephemeral keys (live sessions of its own) stay.
        """
        yield self.target.put("intent/n1/web", b"older")
        yield self.target.put("stale", b"x")
        session = yield self.target.session(10)
        yield session.createEphemeral("machines/n2", b"live")
        out = _Out()
        yield copyStore(self.source, self.target, force=True, out=out)
        self.assertEqual((yield self.values(self.target)), {
            "intent/n1": b"{}", "intent/n1/web": b"manifest", "machines/n2": b"live"})
        self.assertIn("deleting 1 keys only in memory://target: stale", out.text)

    @defer.inlineCallbacks
    def test_dryRun(self):
        """
        A dry run says what it would do and writes nothing.
        """
        out = _Out()
        yield copyStore(self.source, self.target, dryRun=True, out=out)
        self.assertIn("would copy 2 keys", out.text)
        self.assertEqual((yield self.values(self.target)), {})

    @defer.inlineCallbacks
    def test_emptySource(self):
        """
        An empty source (a mistyped URL) is an error, not an empty copy.
        """
        e = yield self.assertFailure(copyStore(self.target, self.source), P2Error)
        self.assertIn("memory://target holds no persistent keys", str(e))

    @defer.inlineCallbacks
    def test_verifyCatchesDifference(self):
        """
        When what is read back differs from the source (another writer in
        the target meanwhile), the copy fails naming the keys.
        """
        original = self.target.transaction

        def meddling(ops):
            d = original(ops)
            return d.addCallback(lambda r: self.target.put("intent/n1/web", b"changed")
                                 .addCallback(lambda _: r))
        self.target.transaction = meddling
        e = yield self.assertFailure(copyStore(self.source, self.target), P2Error)
        self.assertIn("differs from memory://source at 1 keys: intent/n1/web", str(e))


    @defer.inlineCallbacks
    def test_interruptedThenForced(self):
        """
        A copy that fails half-way leaves a partial target: a rerun refuses
        it (naming C{--force}), and a rerun with C{force} completes the copy.
        """
        for i in range(100):
            yield self.source.put("intent/n1/p%03d" % (i,), b"m%d" % (i,))
        original = self.target.transaction
        calls = []

        def crashing(ops):
            calls.append(ops)
            if len(calls) == 2:
                return defer.fail(P2Error("connection lost"))
            return original(ops)
        self.target.transaction = crashing
        yield self.assertFailure(copyStore(self.source, self.target), P2Error)
        self.target.transaction = original
        partial = yield self.values(self.target)
        self.assertTrue(0 < len(partial) < 102, len(partial))
        e = yield self.assertFailure(copyStore(self.source, self.target), P2Error)
        self.assertIn("--force", str(e))
        yield copyStore(self.source, self.target, force=True)
        expected = yield self.values(self.source)
        del expected["machines/n1"]
        self.assertEqual((yield self.values(self.target)), expected)

    @defer.inlineCallbacks
    def test_sourceChangedMeanwhile(self):
        """
        A write to the source during the copy (an orchestrator or a p2
        command still using it) fails the copy, naming the key, instead of
        reporting a verified copy that lacks it.
        """
        original = self.target.transaction

        def meanwhile(ops):
            return original(ops).addCallback(
                lambda r: self.source.put("intent/n1/db", b"new").addCallback(lambda _: r))
        self.target.transaction = meanwhile
        e = yield self.assertFailure(copyStore(self.source, self.target), P2Error)
        self.assertIn("memory://source changed during the copy at 1 keys: intent/n1/db",
                      str(e))
        self.assertIn("--force", str(e))


class BackendCopyTests(unittest.TestCase):
    """
    L{copyStore} into each real backend of values as large as the store
    takes, alone and many together.
    """

    @defer.inlineCallbacks
    def copyInto(self, url):
        from p2twisted.store import openStore
        source = MemoryStore(url="memory://source")
        self.addCleanup(source.close)
        values = {"big/%d" % i: (b"%d" % i) * MAX_VALUE for i in range(3)}
        values.update({"mid/%02d" % i: b"m" * (MAX_VALUE // 5) for i in range(10)})
        values.update({"small/%03d" % i: b"s" for i in range(100)})
        for key, value in values.items():
            yield source.put(key, value)
        target = yield openStore(url, reactor)
        self.addCleanup(target.close)
        out = _Out()
        yield copyStore(source, target, out=out)
        self.assertIn("verified all %d keys" % (len(values),), out.text)
        copied = yield target.list("")
        self.assertEqual({k: e.value for k, e in copied.items()}, values)

    def test_local(self):
        return self.copyInto("local://" + os.path.abspath(self.mktemp()))

    def test_zookeeper(self):
        from tests import zkserver
        return self.copyInto("zk://%s/p2-%s" % (zkserver.sharedServer().hosts,
                                                 uuid.uuid4().hex[:12]))

    def test_etcd(self):
        from tests import etcdserver
        return self.copyInto(etcdserver.sharedServer().url("/p2-" + uuid.uuid4().hex[:12]))

    def test_consul(self):
        from tests.consulserver import ConsulServer
        server = ConsulServer(reactor)
        server.start()
        self.addCleanup(server.stop)
        return self.copyInto("consul://%s/p2" % (server.address,))


class _Out(object):
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text


class CopyCommandTests(P2CommandMixin, unittest.TestCase):
    """
    C{p2 store copy} as a user runs it, through every real backend.
    """

    def otherURLs(self):
        """
        @return: URLs of fresh namespaces on the real ZooKeeper and etcd.
        """
        from tests import etcdserver, zkserver
        name = "/p2-%s" % (uuid.uuid4().hex[:12],)
        return ["zk://%s%s" % (zkserver.sharedServer().hosts, name),
                etcdserver.sharedServer().url(name)]

    @defer.inlineCallbacks
    def test_roundTrip(self):
        """
        local -> ZooKeeper -> etcd -> another local store: the last holds
        exactly the first's keys and values.
        """
        yield self.succeed("node", "add", "web1")
        yield self.succeed("schedule", EXAMPLE, "--node", "web1")
        first = json.loads((yield self.succeed("dump", "--json")))
        last = "local://" + os.path.abspath(self.mktemp())
        urls = [self.url] + self.otherURLs() + [last]
        for source, target in zip(urls, urls[1:]):
            out = yield self.succeed("store", "copy", source, target)
            self.assertIn("copying %d keys" % (len(first),), out)
            self.assertIn("verified all %d keys" % (len(first),), out)
        self.url = last
        copied = json.loads((yield self.succeed("dump", "--json")))

        def values(tree):
            return {k: v["value"] for k, v in tree.items()}
        self.assertEqual(values(copied), values(first))

    @defer.inlineCallbacks
    def test_errors(self):
        """
        Refusals are one line with the right exit code, and change nothing.
        """
        yield self.succeed("node", "add", "web1")
        target = "local://" + os.path.abspath(self.mktemp())
        line, code = yield self.p2Fails("store", "copy", self.url, self.url)
        self.assertEqual(code, 2)
        self.assertIn("the same store", line)
        yield self.succeed("store", "copy", self.url, target)
        line, code = yield self.p2Fails("store", "copy", self.url, target)
        self.assertEqual(code, 1)
        self.assertIn("already holds", line)
        line, code = yield self.p2Fails("store", "copy", self.url, "nope://x")
        self.assertEqual(code, 2)
        line, code = yield self.p2Fails("store", "copy", self.url, "etcd://127.0.0.1:1/p2")
        self.assertEqual(code, 3)
        self.assertIn("127.0.0.1:1", line)
