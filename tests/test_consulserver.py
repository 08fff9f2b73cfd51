"""
The Consul test server behaves as Consul's HTTP API documentation (and
source) say, for each behaviour the Consul store backend relies on.  Driven
through treq's C{StubTreq} on a C{task.Clock}, so TTLs, lock delays and
blocking-query waits are exact and instant; one test runs it as a process.
"""

import base64
import json
import os
import sys

import treq
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.consulserver import ConsulAPI
from tests.consulstate import MAX_VALUE, ConsulState, goDuration, parseDuration


class Consul(object):
    """
    A test server on a clock, and a way to call it.
    """

    def __init__(self, testCase, ttlMin=10.0, token=None):
        self.clock = task.Clock()
        self.state = ConsulState(self.clock, ttlMin)
        self.api = ConsulAPI(self.state, token)
        self.stub = StubTreq(self.api)
        self.testCase = testCase
        testCase.addCleanup(lambda: self.api.state.stop())

    def start(self, method, path, body=None, headers=None):
        """
        @return: a Deferred firing with C{(code, headers, body)}.
        """
        if isinstance(body, (list, dict)):
            body = json.dumps(body).encode()
        d = self.stub.request(method, "http://consul.test" + path, data=body,
                              headers=headers or {})

        def read(response):
            return treq.content(response).addCallback(
                lambda data: (response.code, response.headers, data))
        d.addCallback(read)
        self.stub.flush()
        return d

    def call(self, method, path, body=None, headers=None):
        d = self.start(method, path, body, headers)
        self.stub.flush()
        return self.testCase.successResultOf(d)

    def json(self, method, path, body=None, code=200):
        got, _, data = self.call(method, path, body)
        self.testCase.assertEqual(got, code, data)
        return json.loads(data) if data else None

    def index(self, path):
        return int(self.call("GET", path)[1].getRawHeaders(b"X-Consul-Index")[0])

    def session(self, **spec):
        return self.json("PUT", "/v1/session/create", spec)["ID"]


class DurationTests(unittest.TestCase):

    def test_goDurations(self):
        self.assertEqual([parseDuration(t) for t in ["15s", "1.5s", "500ms", "1m30s", "0", "0s"]],
                         [15, 1.5, 0.5, 90, 0, 0])
        self.assertRaises(ValueError, parseDuration, "15")
        self.assertRaises(ValueError, parseDuration, "soon")
        self.assertEqual([goDuration(s) for s in [10, 86400, 0.5, 90]],
                         ["10s", "24h0m0s", "500ms", "1m30s"])


class KVTests(unittest.TestCase):

    def setUp(self):
        self.consul = Consul(self)

    def test_putGet(self):
        """
        PUT answers C{true}; GET gives the entry with its value in base64,
        its indexes, and C{X-Consul-Index}; an absent key is a 404 that
        still carries the index.
        """
        c = self.consul
        self.assertEqual(c.json("PUT", "/v1/kv/p2/a", b"one"), True)
        [entry] = c.json("GET", "/v1/kv/p2/a")
        self.assertEqual(base64.b64decode(entry["Value"]), b"one")
        self.assertEqual((entry["Key"], entry["Flags"], entry["LockIndex"]), ("p2/a", 0, 0))
        self.assertEqual(entry["CreateIndex"], entry["ModifyIndex"])
        self.assertNotIn("Session", entry)
        self.assertEqual(c.index("/v1/kv/p2/a"), entry["ModifyIndex"])
        code, headers, _ = c.call("GET", "/v1/kv/p2/absent")
        self.assertEqual(code, 404)
        self.assertEqual(headers.getRawHeaders(b"X-Consul-Index"), [b"%d" % entry["ModifyIndex"]])
        self.assertEqual(c.call("GET", "/v1/kv/p2/a?raw")[2], b"one")

    def test_emptyValueIsNull(self):
        """
        An empty value reads back as C{null}.
        """
        self.consul.json("PUT", "/v1/kv/p2/e", b"")
        self.assertIsNone(self.consul.json("GET", "/v1/kv/p2/e")[0]["Value"])

    def test_unchangedSetKeepsIndex(self):
        """
        Setting the value a key already has changes nothing, not even its
        C{ModifyIndex}; another value moves it.
        """
        c = self.consul
        c.json("PUT", "/v1/kv/p2/a", b"same")
        first = c.json("GET", "/v1/kv/p2/a")[0]["ModifyIndex"]
        c.json("PUT", "/v1/kv/p2/a", b"same")
        self.assertEqual(c.json("GET", "/v1/kv/p2/a")[0]["ModifyIndex"], first)
        c.json("PUT", "/v1/kv/p2/a", b"other")
        self.assertGreater(c.json("GET", "/v1/kv/p2/a")[0]["ModifyIndex"], first)

    def test_cas(self):
        """
        C{?cas=0} writes only an absent key; C{?cas=I} only a key whose
        C{ModifyIndex} is I (never an absent one).
        """
        c = self.consul
        self.assertTrue(c.json("PUT", "/v1/kv/p2/c?cas=0", b"1"))
        self.assertFalse(c.json("PUT", "/v1/kv/p2/c?cas=0", b"2"))
        index = c.json("GET", "/v1/kv/p2/c")[0]["ModifyIndex"]
        self.assertFalse(c.json("PUT", "/v1/kv/p2/c?cas=%d" % (index + 100,), b"3"))
        self.assertTrue(c.json("PUT", "/v1/kv/p2/c?cas=%d" % (index,), b"4"))
        self.assertFalse(c.json("PUT", "/v1/kv/p2/c?cas=%d" % (index,), b"5"))
        self.assertFalse(c.json("PUT", "/v1/kv/p2/absent?cas=%d" % (index,), b"6"))
        self.assertEqual(c.call("GET", "/v1/kv/p2/c?raw")[2], b"4")
        self.assertEqual(c.call("PUT", "/v1/kv/p2/c?cas=x", b"")[0], 400)

    def test_delete(self):
        """
        DELETE answers C{true}, also for an absent key; with C{?cas=} a
        stale index answers C{false} and keeps the key, and an absent key
        counts as deleted; C{?recurse} deletes a prefix.
        """
        c = self.consul
        c.json("PUT", "/v1/kv/p2/d", b"1")
        index = c.json("GET", "/v1/kv/p2/d")[0]["ModifyIndex"]
        self.assertFalse(c.json("DELETE", "/v1/kv/p2/d?cas=%d" % (index - 1,)))
        self.assertEqual(c.call("GET", "/v1/kv/p2/d")[0], 200)
        self.assertTrue(c.json("DELETE", "/v1/kv/p2/d?cas=%d" % (index,)))
        self.assertEqual(c.call("GET", "/v1/kv/p2/d")[0], 404)
        self.assertTrue(c.json("DELETE", "/v1/kv/p2/d?cas=%d" % (index,)))
        self.assertTrue(c.json("DELETE", "/v1/kv/p2/d"))
        for k in ["t/a", "t/b/c", "u"]:
            c.json("PUT", "/v1/kv/p2/" + k, b"x")
        self.assertTrue(c.json("DELETE", "/v1/kv/p2/t?recurse"))
        self.assertEqual([e["Key"] for e in c.json("GET", "/v1/kv/p2?recurse")], ["p2/u"])

    def test_recurse(self):
        """
        C{?recurse} lists every key starting with the prefix (a string
        prefix, not a path); its index is the highest C{ModifyIndex} among
        them and their tombstones, so a delete moves it and a write
        elsewhere does not.
        """
        c = self.consul
        for k in ["p2/w/a", "p2/w/b", "p2/wx", "p2/z"]:
            c.json("PUT", "/v1/kv/" + k, b"x")
        self.assertEqual([e["Key"] for e in c.json("GET", "/v1/kv/p2/w?recurse")],
                         ["p2/w/a", "p2/w/b", "p2/wx"])
        before = c.index("/v1/kv/p2/w/?recurse")
        c.json("PUT", "/v1/kv/p2/z", b"changed")
        self.assertEqual(c.index("/v1/kv/p2/w/?recurse"), before)
        c.json("DELETE", "/v1/kv/p2/w/a")
        self.assertGreater(c.index("/v1/kv/p2/w/?recurse"), before)
        self.assertEqual(c.call("GET", "/v1/kv/p2/none?recurse")[0], 404)

    def test_valueLimit(self):
        """
        A value over 512 KiB is refused with 413 and not written; exactly
        512 KiB is accepted.
        """
        c = self.consul
        code, _, body = c.call("PUT", "/v1/kv/p2/big", b"x" * (MAX_VALUE + 1))
        self.assertEqual(code, 413)
        self.assertIn(b"too large", body)
        self.assertEqual(c.call("GET", "/v1/kv/p2/big")[0], 404)
        self.assertTrue(c.json("PUT", "/v1/kv/p2/big", b"x" * MAX_VALUE))

    def test_token(self):
        """
        With ACLs on, a request without the token is refused (403); the
        token goes in C{X-Consul-Token} or C{?token=}.
        """
        c = Consul(self, token="secret")
        self.assertEqual(c.call("GET", "/v1/kv/p2/a")[0], 403)
        self.assertEqual(c.call("GET", "/v1/kv/p2/a", headers={"X-Consul-Token": "secret"})[0], 404)
        self.assertEqual(c.call("GET", "/v1/kv/p2/a?token=secret")[0], 404)

    def test_datacenter(self):
        """
        C{?dc=dc1} is this datacenter; another one cannot be reached.
        """
        self.assertEqual(self.consul.call("GET", "/v1/kv/p2/a?dc=dc1")[0], 404)
        code, _, body = self.consul.call("GET", "/v1/kv/p2/a?dc=elsewhere")
        self.assertEqual((code, body), (500, b"No path to datacenter"))


class BlockingQueryTests(unittest.TestCase):

    def setUp(self):
        self.consul = Consul(self)

    def test_answersOnChange(self):
        """
        A query with an C{index} not yet passed waits, and answers as soon
        as a write moves the result's index past it.
        """
        c = self.consul
        c.json("PUT", "/v1/kv/p2/w/a", b"1")
        index = c.index("/v1/kv/p2/w?recurse")
        d = c.start("GET", "/v1/kv/p2/w?recurse&index=%d&wait=60s" % (index,))
        self.assertNoResult(d)
        c.json("PUT", "/v1/kv/p2/other", b"elsewhere")
        self.assertNoResult(d)
        c.json("PUT", "/v1/kv/p2/w/b", b"2")
        c.stub.flush()
        code, headers, body = self.successResultOf(d)
        self.assertEqual(code, 200)
        self.assertGreater(int(headers.getRawHeaders(b"X-Consul-Index")[0]), index)
        self.assertEqual(len(json.loads(body)), 2)

    def test_waitExpires(self):
        """
        With no change, the query answers after C{wait} (plus at most
        wait/16 of jitter) with the same index.
        """
        c = self.consul
        c.json("PUT", "/v1/kv/p2/a", b"1")
        index = c.index("/v1/kv/p2/a")
        d = c.start("GET", "/v1/kv/p2/a?index=%d&wait=16s" % (index,))
        c.clock.advance(15.9)
        self.assertNoResult(d)
        c.clock.advance(1.1)
        c.stub.flush()
        code, headers, _ = self.successResultOf(d)
        self.assertEqual((code, headers.getRawHeaders(b"X-Consul-Index")), (200, [b"%d" % index]))

    def test_pastIndexAnswersAtOnce(self):
        """
        An index already passed (or 0) answers at once; an index from the
        future (a reset cluster) waits, so clients must reset it.
        """
        c = self.consul
        c.json("PUT", "/v1/kv/p2/a", b"1")
        index = c.index("/v1/kv/p2/a")
        self.assertEqual(c.call("GET", "/v1/kv/p2/a?index=%d" % (index - 1,))[0], 200)
        self.assertEqual(c.call("GET", "/v1/kv/p2/a?index=0")[0], 200)
        d = c.start("GET", "/v1/kv/p2/a?index=%d&wait=1s" % (index + 1000,))
        self.assertNoResult(d)
        c.clock.advance(2)
        c.stub.flush()
        self.assertEqual(self.successResultOf(d)[0], 200)

    def test_restoreWakesQueries(self):
        """
        Restoring a snapshot answers blocking queries at once from the new
        data, with its (lower) index.
        """
        c = self.consul
        for i in range(5):
            c.json("PUT", "/v1/kv/p2/k%d" % (i,), b"x")
        index = c.index("/v1/kv/p2?recurse")
        d = c.start("GET", "/v1/kv/p2?recurse&index=%d&wait=60s" % (index,))
        self.assertNoResult(d)
        fresh = ConsulState(c.clock, 10)
        fresh.write(lambda kvs, t, i: fresh.setEntry(kvs, i, "p2/new", b"y"))
        c.api.restore(fresh)
        c.stub.flush()
        code, headers, body = self.successResultOf(d)
        self.assertEqual([e["Key"] for e in json.loads(body)], ["p2/new"])
        self.assertLess(int(headers.getRawHeaders(b"X-Consul-Index")[0]), index)

    def test_indexNeverZero(self):
        """
        The index of an empty store is 1, not 0.
        """
        self.assertEqual(self.consul.index("/v1/kv/p2?recurse"), 1)


class SessionTests(unittest.TestCase):

    def setUp(self):
        self.consul = Consul(self)

    def test_ttlBounds(self):
        """
        A TTL under C{session_ttl_min} or over 24 h is refused, saying so,
        as Consul's C{Session.Apply} does: an RPC error, so an HTTP 500
        (not a 400) whose text prints the TTL as Go's C{%d} of a duration.
        """
        c = self.consul
        code, _, body = c.call("PUT", "/v1/session/create", {"TTL": "5s"})
        self.assertEqual((code, body), (
            500, b"Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"))
        self.assertEqual(c.call("PUT", "/v1/session/create", {"TTL": "25h"})[0], 500)
        self.assertEqual(c.call("PUT", "/v1/session/create", {"TTL": "soon"})[0], 500)
        self.assertEqual(c.call("PUT", "/v1/session/create", {"Behavior": "keep"})[0], 500)

    def test_expiryDeletes(self):
        """
        A session is invalidated 2 x TTL after its last renewal; with
        C{Behavior=delete} the keys it holds are deleted.
        """
        c = self.consul
        sid = c.session(TTL="10s", Behavior="delete", LockDelay="0s")
        self.assertTrue(c.json("PUT", "/v1/kv/p2/eph?acquire=" + sid, b"x"))
        self.assertEqual(c.json("GET", "/v1/kv/p2/eph")[0]["Session"], sid)
        c.clock.advance(15)
        self.assertEqual(len(c.json("PUT", "/v1/session/renew/" + sid)), 1)
        c.clock.advance(19.9)
        self.assertEqual(c.call("GET", "/v1/kv/p2/eph")[0], 200)
        c.clock.advance(0.2)
        self.assertEqual(c.call("GET", "/v1/kv/p2/eph")[0], 404)
        code, _, body = c.call("PUT", "/v1/session/renew/" + sid)
        self.assertEqual((code, body), (404, ("Session id '%s' not found" % (sid,)).encode()))
        self.assertEqual(c.json("GET", "/v1/session/info/" + sid), [])

    def test_releaseBehavior(self):
        """
        With the default C{Behavior=release}, the keys stay, unlocked.
        """
        c = self.consul
        sid = c.session(TTL="10s")
        c.json("PUT", "/v1/kv/p2/l?acquire=" + sid, b"x")
        c.json("PUT", "/v1/session/destroy/" + sid)
        entry = c.json("GET", "/v1/kv/p2/l")[0]
        self.assertNotIn("Session", entry)
        self.assertEqual(entry["LockIndex"], 1)

    def test_acquireRelease(self):
        """
        A key held by one session cannot be acquired by another; the holder
        may acquire it again (updating it); a plain PUT keeps the holder;
        only the holder can release it; an unknown session is an error.
        """
        c = self.consul
        a = c.session(LockDelay="0s")
        b = c.session(LockDelay="0s")
        self.assertTrue(c.json("PUT", "/v1/kv/p2/lock?acquire=" + a, b"a"))
        self.assertFalse(c.json("PUT", "/v1/kv/p2/lock?acquire=" + b, b"b"))
        self.assertTrue(c.json("PUT", "/v1/kv/p2/lock?acquire=" + a, b"a2"))
        c.json("PUT", "/v1/kv/p2/lock", b"plain")
        self.assertEqual(c.json("GET", "/v1/kv/p2/lock")[0]["Session"], a)
        self.assertFalse(c.json("PUT", "/v1/kv/p2/lock?release=" + b, b""))
        self.assertTrue(c.json("PUT", "/v1/kv/p2/lock?release=" + a, b"free"))
        self.assertTrue(c.json("PUT", "/v1/kv/p2/lock?acquire=" + b, b"b"))
        code, _, body = c.call("PUT", "/v1/kv/p2/x?acquire=nonsense", b"")
        self.assertEqual(code, 500)
        self.assertIn(b"invalid session", body)
        code, _, body = c.call("PUT", "/v1/kv/p2/lock?release=", b"")
        self.assertEqual((code, body), (500, b"missing session"))

    def test_reacquireUnchanged(self):
        """
        The holder acquiring its lock again with the same value and flags
        changes nothing: the C{ModifyIndex}, C{LockIndex} and the KV index
        stay (Consul's C{kvsSetTxn} skips an entry equal to the existing).
        """
        c = self.consul
        a = c.session(LockDelay="0s")
        self.assertTrue(c.json("PUT", "/v1/kv/p2/lock?acquire=" + a, b"a"))
        before = c.json("GET", "/v1/kv/p2/lock")[0]
        index = c.index("/v1/kv/p2/lock")
        self.assertTrue(c.json("PUT", "/v1/kv/p2/lock?acquire=" + a, b"a"))
        self.assertEqual(c.json("GET", "/v1/kv/p2/lock")[0], before)
        self.assertEqual(c.index("/v1/kv/p2/lock"), index)

    def test_lockDelay(self):
        """
        After a holder's session is invalidated, its keys cannot be acquired
        for the lock delay (15 s by default); C{LockDelay=0s} turns it off.
        """
        c = self.consul
        for delay, blocked in [({}, True), ({"LockDelay": "0s"}, False)]:
            holder = c.session(**delay)
            c.json("PUT", "/v1/kv/p2/ld?acquire=" + holder, b"h")
            c.json("PUT", "/v1/session/destroy/" + holder)
            other = c.session()
            self.assertEqual(c.json("PUT", "/v1/kv/p2/ld?acquire=" + other, b"o"), not blocked)
            c.clock.advance(15.1)
            self.assertTrue(c.json("PUT", "/v1/kv/p2/ld?acquire=" + other, b"o"))
            c.json("PUT", "/v1/session/destroy/" + other)
            c.clock.advance(15.1)


class TxnTests(unittest.TestCase):

    def setUp(self):
        self.consul = Consul(self)

    def kv(self, verb, key, value=None, **extra):
        op = dict(Verb=verb, Key=key, **extra)
        if value is not None:
            op["Value"] = base64.b64encode(value).decode()
        return {"KV": op}

    def test_results(self):
        """
        A transaction applies its ops in order; results come for the ops
        that name an entry, without values except for gets.
        """
        c = self.consul
        c.json("PUT", "/v1/kv/p2/gone", b"x")
        out = c.json("PUT", "/v1/txn", [
            self.kv("set", "p2/a", b"1"), self.kv("delete", "p2/gone"),
            self.kv("check-not-exists", "p2/gone"), self.kv("cas", "p2/b", b"2", Index=0),
            self.kv("get", "p2/a")])
        self.assertIsNone(out["Errors"])
        results = [r["KV"] for r in out["Results"]]
        self.assertEqual([r["Key"] for r in results], ["p2/a", "p2/b", "p2/a"])
        self.assertEqual([r["Value"] for r in results], [None, None, "MQ=="])
        index = results[0]["ModifyIndex"]
        self.assertEqual(results[1]["ModifyIndex"], index)  # one Raft entry
        out = c.json("PUT", "/v1/txn", [self.kv("check-index", "p2/a", Index=index)])
        self.assertEqual(out["Results"][0]["KV"]["ModifyIndex"], index)

    def test_errors(self):
        """
        When ops fail the answer is 409 listing every failing op with its
        index and Consul's words, and nothing is written.
        """
        c = self.consul
        c.json("PUT", "/v1/kv/p2/a", b"1")
        index = c.json("GET", "/v1/kv/p2/a")[0]["ModifyIndex"]
        out = c.json("PUT", "/v1/txn", [
            self.kv("set", "p2/new", b"x"), self.kv("check-index", "p2/a", Index=index + 5),
            self.kv("check-not-exists", "p2/a"), self.kv("cas", "p2/a", b"y", Index=0),
            self.kv("check-index", "p2/absent", Index=3), self.kv("delete-cas", "p2/a", Index=1),
            self.kv("lock", "p2/l", b"", Session="nope")], code=409)
        self.assertIsNone(out["Results"])
        self.assertEqual(out["Errors"], [
            {"OpIndex": 1, "What": 'failed index check for key "p2/a", current modify index '
                                   '%d != %d' % (index, index + 5)},
            {"OpIndex": 2, "What": 'key "p2/a" exists'},
            {"OpIndex": 3, "What": 'failed to set key "p2/a", index is stale'},
            {"OpIndex": 4, "What": 'failed to check index, key "p2/absent" doesn\'t exist'},
            {"OpIndex": 5, "What": 'failed to delete key "p2/a", index is stale'},
            {"OpIndex": 6, "What": 'invalid session "nope"'}])
        self.assertEqual(c.call("GET", "/v1/kv/p2/new")[0], 404)

    def test_sessionOps(self):
        """
        C{lock} fails on a key another session holds; C{check-session}
        compares the holder.
        """
        c = self.consul
        a, b = c.session(), c.session()
        c.json("PUT", "/v1/txn", [self.kv("lock", "p2/l", b"a", Session=a)])
        out = c.json("PUT", "/v1/txn", [self.kv("lock", "p2/l", b"b", Session=b)], code=409)
        self.assertEqual(out["Errors"][0]["What"], 'failed to lock key "p2/l", lock is already held')
        c.json("PUT", "/v1/txn", [self.kv("check-session", "p2/l", Session=a),
                                  self.kv("delete", "p2/l")])
        self.assertEqual(c.call("GET", "/v1/kv/p2/l")[0], 404)

    def test_limits(self):
        """
        64 ops are accepted; 65 ops, a body over 512 KiB or a value over
        512 KiB are refused with 413 and nothing is written.
        """
        c = self.consul
        c.json("PUT", "/v1/txn", [self.kv("set", "p2/k%d" % i, b"x") for i in range(64)])
        code, _, body = c.call("PUT", "/v1/txn", [self.kv("set", "p2/o%d" % i, b"x")
                                                  for i in range(65)])
        self.assertEqual((code, body), (413, b"Transaction contains too many operations (65 > 64)"))
        code, _, body = c.call("PUT", "/v1/txn", [self.kv("set", "p2/big", b"x" * 400000)])
        self.assertEqual((code, body), (413, b"Request body too large, max size: 524288 bytes"))
        self.assertEqual(c.call("GET", "/v1/kv/p2/o0")[0], 404)
        self.assertEqual(c.call("PUT", "/v1/txn", b"not json")[0], 400)


class ProcessTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_runsAsProcess(self):
        """
        C{python -m tests.consulserver} listens, says so, and serves.
        """
        from twisted.internet import protocol

        class P(protocol.ProcessProtocol):
            def __init__(self):
                self.ready, self.ended, self.out = defer.Deferred(), defer.Deferred(), b""

            def outReceived(self, data):
                self.out += data
                if b"\n" in self.out and not self.ready.called:
                    self.ready.callback(int(self.out.split()[1]))

            def processEnded(self, reason):
                self.ended.callback(None)
        p = P()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        transport = reactor.spawnProcess(p, sys.executable, [
            sys.executable, "-m", "tests.consulserver", "--session-ttl-min", "1"], env=env)

        def stop():
            transport.signalProcess("KILL")
            return p.ended
        self.addCleanup(stop)
        port = yield p.ready.addTimeout(20, reactor)
        response = yield treq.put("http://127.0.0.1:%d/v1/kv/p2/a" % (port,), data=b"v",
                                  persistent=False)
        self.assertEqual((yield response.content()), b"true")
