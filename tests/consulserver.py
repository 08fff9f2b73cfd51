# -*- test-case-name: tests.test_consulserver -*-
"""
A test server speaking the part of Consul's HTTP API that the Consul store
backend uses, with Consul's semantics, because no Consul binary can be
installed on these machines.  It follows Consul's API documentation and
source (C{agent/kvs_endpoint.go}, C{agent/txn_endpoint.go},
C{agent/session_endpoint.go}, C{agent/consul/state/kvs.go} and C{txn.go}):

  - one Raft-like index for every write; C{X-Consul-Index} on reads is the
    KV table's index, or for a prefix the highest C{ModifyIndex} of its
    entries and tombstones (so deletes move it), never below 1;
  - blocking queries: C{?index=N&wait=D} answers once the result's index
    is above N, or after D (default 5 min, at most 10 min, plus up to D/16
    of jitter) with the unchanged result;
  - C{PUT /v1/kv/K} with C{?cas=I} (0: only if absent), C{?flags=},
    C{?acquire=S} and C{?release=S}; values over 512 KiB are refused (413);
    a set that changes nothing keeps the C{ModifyIndex}; a plain set keeps
    the entry's session; C{DELETE} with C{?cas=} and C{?recurse};
  - sessions with a C{TTL} (refused outside C{[session_ttl_min, 24h]}),
    invalidated 2 x TTL after the last renewal (Consul's TTL multiplier),
    C{Behavior} C{release} or C{delete}, and a lock delay (C{LockDelay},
    default 15 s; C{0} turns it off) during which a key held by an
    invalidated session cannot be acquired;
  - C{PUT /v1/txn}: at most 64 ops and 512 KiB of body (413), verbs set,
    cas, lock, unlock, get, get-tree, check-index, check-session,
    check-not-exists, delete, delete-tree, delete-cas, applied in order and
    all or nothing; on failure 409 with every failing op's C{OpIndex} and
    C{What}; results carry entries without their values (but for gets);
  - ACL tokens, when the server has one: C{X-Consul-Token} or C{?token=},
    else 403; C{?dc=} other than C{dc1} is a 500.

In-process (C{ConsulServer(reactor).start()}) or as a process of its own:

    python -m tests.consulserver [--port P] [--session-ttl-min SECONDS]

which prints C{ready <port>} once it listens on 127.0.0.1.
"""

import base64
import json
import random
import sys
from urllib.parse import parse_qsl

from twisted.internet import defer
from twisted.web import resource, server

from tests.consulstate import (
    DATACENTER, DEFAULT_WAIT, MAX_TXN_BODY, MAX_TXN_OPS, MAX_VALUE, MAX_WAIT, ConsulState,
    HTTPError, TxnError, parseDuration)
from tests.httpservers import TrackingFactory


def encodeEntry(entry):
    out = dict(entry)
    out["Value"] = base64.b64encode(entry["Value"]).decode("ascii") if entry["Value"] else None
    if not out["Session"]:
        del out["Session"]
    return out


class Waiter(object):
    """
    A blocking query: answers once C{query()}'s index passes C{minIndex},
    or at C{wait} seconds with the unchanged result.
    """

    def __init__(self, state, query, minIndex, wait, answer):
        self.state, self.query, self.minIndex, self.answer = state, query, minIndex, answer
        self.timer = state.clock.callLater(wait, self.finish)
        state.waiters.append(self)

    def check(self):
        if self.query()[0] > self.minIndex:
            self.finish()

    def finish(self):
        self.cancel()
        self.answer(self.query())

    def cancel(self):
        if self in self.state.waiters:
            self.state.waiters.remove(self)
        if self.timer.active():
            self.timer.cancel()


class ConsulAPI(resource.Resource):
    """
    The HTTP resource: C{/v1/kv/}, C{/v1/txn}, C{/v1/session/}.
    """

    isLeaf = True

    def __init__(self, state, token=None):
        resource.Resource.__init__(self)
        self.state = state
        self.token = token
        self.requests = []  # (method, path) of every request, for tests

    def render(self, request):
        path = request.path.decode("utf-8")
        method = request.method.decode("ascii")
        self.requests.append((method, path))
        # Twisted's request.args drops bare names (?recurse): parse the query.
        query = request.uri.split(b"?", 1)[1] if b"?" in request.uri else b""
        args = {k: v for k, v in parse_qsl(query.decode("utf-8"), keep_blank_values=True)}
        request.setHeader(b"X-Consul-KnownLeader", b"true")
        request.setHeader(b"X-Consul-LastContact", b"0")
        try:
            if self.token is not None:
                given = request.getHeader(b"X-Consul-Token") or args.get("token", "").encode()
                if given != self.token.encode():
                    raise HTTPError(403, "Permission denied")
            if args.get("dc", DATACENTER) != DATACENTER:
                raise HTTPError(500, "No path to datacenter")
            if path.startswith("/v1/kv/"):
                return self.kv(request, method, path[len("/v1/kv/"):], args)
            if path == "/v1/txn" and method == "PUT":
                return self.txn(request)
            if path.startswith("/v1/session/"):
                return self.session(request, method, path[len("/v1/session/"):].split("/"))
            raise HTTPError(404, "")
        except HTTPError as e:
            request.setResponseCode(e.code)
            return str(e).encode("utf-8")

    def restore(self, state=None):
        """
        Replace the data with C{state} (by default an empty one, whose
        indexes start again from 1), as restoring a snapshot does: blocking
        queries in progress answer at once from the new data (Consul's
        abandoned state store), even though its index may be lower.
        """
        old = self.state
        self.state = state or ConsulState(old.clock, old.sessionTTLMin)
        for waiter in list(old.waiters):
            waiter.finish()
        old.stop()

    def json(self, request, value, code=200):
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(value).encode("utf-8")

    # -- /v1/kv -------------------------------------------------------------------

    def kv(self, request, method, key, args):
        state = self.state
        if method == "GET":
            def query():
                now = self.state  # after a restore, the new one
                return now.list(key) if "recurse" in args else now.get(key)
            return self.blocking(request, query, args, self.kvAnswer(request, args))
        if method == "PUT":
            body = request.content.read()
            if len(body) > MAX_VALUE:
                raise HTTPError(413, "Request body(%d bytes) too large, max size: %d bytes"
                                % (len(body), MAX_VALUE))
            flags = self.uint(args, "flags")
            if "acquire" in args:
                ok = self.apply(lambda kvs, t, i: state.lock(kvs, i, key, body, flags,
                                                              args["acquire"]) is not None)
            elif "release" in args:
                ok = self.apply(lambda kvs, t, i: state.unlock(kvs, i, key, body, flags,
                                                                args["release"]) is not None)
            elif "cas" in args:
                op = {"Verb": "cas", "Key": key, "Value": body, "Flags": flags,
                      "Index": self.uint(args, "cas")}
                ok = self.apply(lambda kvs, t, i: bool(self.orFalse(state.txnOp, kvs, t, i, op)))
            else:
                ok = state.write(lambda kvs, t, i: state.setEntry(kvs, i, key, body, flags) and True)
            return self.json(request, ok)
        if method == "DELETE":
            if "recurse" in args:
                op = {"Verb": "delete-tree", "Key": key}
            elif "cas" in args:
                # An absent key counts as deleted (Consul's kvsDeleteCASTxn).
                op = {"Verb": "delete-cas", "Key": key, "Index": self.uint(args, "cas")}
            else:
                op = {"Verb": "delete", "Key": key}
            ok = self.apply(lambda kvs, t, i: self.orFalse(state.txnOp, kvs, t, i, op) is not False)
            return self.json(request, ok)
        raise HTTPError(405, "method %s not allowed" % (method,))

    def apply(self, f):
        try:
            return self.state.write(f)
        except TxnError as e:
            raise HTTPError(500, str(e))

    @staticmethod
    def orFalse(f, *args):
        try:
            return f(*args)
        except TxnError as e:
            if "stale" in str(e):
                return False
            raise

    @staticmethod
    def uint(args, name):
        try:
            value = int(args.get(name, "0"))
            if value < 0:
                raise ValueError(value)
            return value
        except ValueError:
            raise HTTPError(400, "Invalid %s index" % (name,) if name == "cas" else
                            "Invalid %s" % (name,))

    def kvAnswer(self, request, args):
        def answer(result):
            index, entries = result
            request.setHeader(b"X-Consul-Index", str(index).encode())
            if not entries:
                request.setResponseCode(404)
                return b""
            if "raw" in args:
                return entries[0]["Value"] or b""
            if "keys" in args:
                return self.json(request, [e["Key"] for e in entries])
            return self.json(request, [encodeEntry(e) for e in entries])
        return answer

    def blocking(self, request, query, args, answer):
        """
        Answer C{query()} now, or as a blocking query when C{?index=} is
        given and not yet passed.
        """
        minIndex = self.uint(args, "index")
        if minIndex == 0 or query()[0] > minIndex:
            return answer(query())
        wait = DEFAULT_WAIT
        if "wait" in args:
            try:
                wait = parseDuration(args["wait"])
            except ValueError as e:
                raise HTTPError(400, "Invalid wait time: %s" % (e,))
        wait = min(wait, MAX_WAIT)
        wait += random.uniform(0, wait / 16.0)

        def respond(result):
            if not request.finished and not gone:
                request.write(answer(result))
                request.finish()
        gone = []
        waiter = Waiter(self.state, query, minIndex, wait, respond)
        request.notifyFinish().addErrback(lambda _: (gone.append(True), waiter.cancel()))
        return server.NOT_DONE_YET

    # -- /v1/txn ------------------------------------------------------------------

    def txn(self, request):
        body = request.content.read()
        if len(body) > MAX_TXN_BODY:
            raise HTTPError(413, "Request body too large, max size: %d bytes" % (MAX_TXN_BODY,))
        try:
            raw = json.loads(body)
            ops = []
            for op in raw:
                kv = {k: v for k, v in op["KV"].items()}
                if kv.get("Value") is not None:
                    kv["Value"] = base64.b64decode(kv["Value"], validate=True)
                ops.append(kv)
        except (ValueError, KeyError, TypeError) as e:
            raise HTTPError(400, "Failed to parse body: %s" % (e,))
        if len(ops) > MAX_TXN_OPS:
            raise HTTPError(413, "Transaction contains too many operations (%d > %d)"
                            % (len(ops), MAX_TXN_OPS))
        for op in ops:
            if op.get("Value") is not None and len(op["Value"]) > MAX_VALUE:
                raise HTTPError(413, "Value for key %s is too large (%d > %d bytes)" % (
                    json.dumps(op.get("Key", "")), len(op["Value"]), MAX_VALUE))
        results, errors = self.state.txn(ops)
        if errors:
            return self.json(request, {"Results": None, "Errors": errors}, 409)
        return self.json(request, {"Results": [{"KV": encodeEntry(r["KV"])} for r in results],
                                   "Errors": None})

    # -- /v1/session --------------------------------------------------------------

    def session(self, request, method, parts):
        state = self.state
        verb, rest = parts[0], parts[1:]
        if verb == "create" and method == "PUT":
            body = request.content.read()
            try:
                spec = json.loads(body) if body.strip() else {}
                sid = state.createSession(spec)
            except ValueError as e:
                raise HTTPError(400, "Request decode failed: %s" % (e,))
            return self.json(request, {"ID": sid})
        if verb == "destroy" and method == "PUT" and rest:
            state.destroy(rest[0])
            return self.json(request, True)
        if verb == "renew" and method == "PUT" and rest:
            info = state.renew(rest[0])
            if info is None:
                raise HTTPError(404, "Session id '%s' not found" % (rest[0],))
            return self.json(request, [info])
        if verb == "info" and method == "GET" and rest:
            s = state.sessions.get(rest[0])
            return self.json(request, [s["info"]] if s else [])
        if verb == "list" and method == "GET":
            return self.json(request, [s["info"] for s in state.sessions.values()])
        raise HTTPError(405 if verb in ("create", "destroy", "renew", "info", "list") else 404,
                        "method %s not allowed" % (method,))


class ConsulServer(object):
    """
    The test server on 127.0.0.1: C{start()} (returns the port), C{stop()}.

    @ivar state: its L{ConsulState} (L{restore} replaces it).
    """

    def __init__(self, reactor, sessionTTLMin=0.5, token=None, port=0):
        self.reactor = reactor
        self.sessionTTLMin = sessionTTLMin
        self.api = ConsulAPI(ConsulState(reactor, sessionTTLMin), token)
        self.factory = TrackingFactory(server.Site(self.api))
        self.wantedPort = port
        self.listening = None

    def start(self):
        self.listening = self.reactor.listenTCP(self.wantedPort, self.factory,
                                                interface="127.0.0.1")
        self.port = self.listening.getHost().port
        return self.port

    @property
    def address(self):
        return "127.0.0.1:%d" % (self.port,)

    def restore(self, state=None):
        """
        See L{ConsulAPI.restore}.
        """
        self.api.restore(state)

    @property
    def state(self):
        return self.api.state

    @defer.inlineCallbacks
    def stop(self):
        self.state.stop()
        if self.listening is not None:
            yield self.listening.stopListening()
            self.listening = None
        yield self.factory.closeAll()


def main(argv=None):
    import argparse

    from twisted.internet import task
    parser = argparse.ArgumentParser(description="Consul HTTP API test server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--session-ttl-min", type=float, default=0.5)
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)

    def run(reactor):
        s = ConsulServer(reactor, args.session_ttl_min, args.token, args.port)
        sys.stdout.write("ready %d\n" % (s.start(),))
        sys.stdout.flush()
        return defer.Deferred()
    task.react(run)


if __name__ == "__main__":
    main()
