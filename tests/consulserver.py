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
import re
import sys
import uuid
from urllib.parse import parse_qsl

from twisted.internet import defer
from twisted.web import resource, server

from tests.httpservers import TrackingFactory

#: Consul's defaults (kv_max_value_size, txn_max_req_len, maxTxnOps).
MAX_VALUE = 512 * 1024
MAX_TXN_BODY = 512 * 1024
MAX_TXN_OPS = 64
TTL_MULTIPLIER = 2
TTL_MAX = 24 * 3600.0
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
DEFAULT_LOCK_DELAY = 15.0
DATACENTER = "dc1"

WRITE_VERBS = {"set", "cas", "lock", "unlock", "delete", "delete-tree", "delete-cas"}


class TxnError(Exception):
    """One op of a transaction failed; the message is Consul's."""


class HTTPError(Exception):

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


def goDuration(seconds):
    """
    @return: C{seconds} spelled as Go's C{time.Duration} prints it.
    """
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return "%gms" % (seconds * 1000,)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return "%dh%dm%gs" % (h, m, s)
    if m:
        return "%dm%gs" % (m, s)
    return "%gs" % (s,)


def parseDuration(text):
    """
    Parse a Go duration (C{"15s"}, C{"1.5s"}, C{"500ms"}, C{"1m30s"}).

    @return: seconds.
    @raise ValueError: for anything else.
    """
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if text == "0":
        return 0.0
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError("time: invalid duration %s" % (json.dumps(text),))
    return sum(float(n) * units[u] for n, u in parts)


class ConsulState(object):
    """
    The data of one Consul datacenter: KV entries, tombstones, sessions,
    lock delays, and the blocking queries waiting on them.
    """

    def __init__(self, clock, sessionTTLMin=10.0):
        self.clock = clock
        self.sessionTTLMin = sessionTTLMin
        self.index = 1  # the last Raft index
        self.kvsIndex = 0  # index of the last change to the kvs/tombstones tables
        self.kvs = {}
        self.tombstones = {}
        self.sessions = {}
        self.lockDelays = {}
        self.waiters = []

    # -- reads ------------------------------------------------------------------

    def get(self, key):
        entry = self.kvs.get(key)
        return max(self.kvsIndex, 1), ([entry] if entry else [])

    def list(self, prefix):
        entries = [self.kvs[k] for k in sorted(self.kvs) if k.startswith(prefix)]
        if prefix:
            index = max([e["ModifyIndex"] for e in entries] +
                        [i for k, i in self.tombstones.items() if k.startswith(prefix)] + [0])
            index = index or self.kvsIndex
        else:
            index = self.kvsIndex
        return max(index, 1), entries

    # -- writes -----------------------------------------------------------------

    def write(self, f, *args):
        """
        Apply C{f(kvs, tombstones, index, *args)} as one Raft entry to copies
        of the tables, committing them if it does not raise.
        """
        index = self.index + 1
        kvs, tombstones = dict(self.kvs), dict(self.tombstones)
        result = f(kvs, tombstones, index, *args)
        self.index = index
        if kvs != self.kvs or tombstones != self.tombstones:
            self.kvs, self.tombstones, self.kvsIndex = kvs, tombstones, index
            self.wake()
        return result

    def wake(self):
        for waiter in list(self.waiters):
            waiter.check()

    @staticmethod
    def setEntry(kvs, index, key, value, flags=0, session=None):
        """
        Consul's C{kvsSetTxn}: keep the session unless one is given; a set
        that changes nothing keeps the C{ModifyIndex}.
        """
        existing = kvs.get(key)
        entry = {"LockIndex": existing["LockIndex"] if existing else 0, "Key": key,
                 "Flags": flags, "Value": value,
                 "Session": (existing or {}).get("Session", "") if session is None else session,
                 "CreateIndex": existing["CreateIndex"] if existing else index,
                 "ModifyIndex": index}
        if existing is not None and all(existing[f] == entry[f] for f in (
                "LockIndex", "Key", "Flags", "Value", "Session")):
            return existing
        kvs[key] = entry
        return entry

    @staticmethod
    def deleteEntry(kvs, tombstones, index, key):
        if kvs.pop(key, None) is not None:
            tombstones[key] = index

    def lock(self, kvs, index, key, value, flags, session):
        """
        Consul's C{kvsLockTxn} (and the lock-delay check of C{kvsPreApply}).

        @return: the entry, or C{None} when another session holds the key.
        """
        if not session:
            raise TxnError("missing session")
        if session not in self.sessions:
            raise TxnError("invalid session %s" % (json.dumps(session),))
        if self.lockDelays.get(key, 0) > self.clock.seconds():
            return None
        existing = kvs.get(key)
        lockIndex = 1
        if existing is not None:
            if existing["Session"] and existing["Session"] != session:
                return None
            lockIndex = existing["LockIndex"] + (existing["Session"] != session)
        entry = self.setEntry(kvs, index, key, value, flags, session)
        entry = dict(entry, LockIndex=lockIndex, ModifyIndex=index)
        kvs[key] = entry
        return entry

    def unlock(self, kvs, index, key, value, flags, session):
        existing = kvs.get(key)
        if existing is None or existing["Session"] != session or not session:
            return None
        entry = dict(self.setEntry(kvs, index, key, value, flags, ""), ModifyIndex=index)
        kvs[key] = entry
        return entry

    # -- sessions ---------------------------------------------------------------

    def createSession(self, spec):
        ttl = 0.0
        if spec.get("TTL"):
            ttl = parseDuration(spec["TTL"])
            if ttl != 0 and not (self.sessionTTLMin <= ttl <= TTL_MAX):
                raise HTTPError(400, "Session TTL '%s' must be between [%s=%s]" % (
                    spec["TTL"], goDuration(self.sessionTTLMin), goDuration(TTL_MAX)))
        behavior = spec.get("Behavior") or "release"
        if behavior not in ("release", "delete"):
            raise HTTPError(400, "Invalid Behavior setting '%s'" % (behavior,))
        delay = spec.get("LockDelay", DEFAULT_LOCK_DELAY)
        if isinstance(delay, str):
            delay = parseDuration(delay)
        elif delay >= 1000:
            delay = delay / 1e9  # nanoseconds; smaller numbers are seconds
        self.index += 1
        sid = str(uuid.uuid4())
        session = {"ID": sid, "Name": spec.get("Name", ""), "Node": "consul-test-server",
                   "LockDelay": int(delay * 1e9), "Behavior": behavior,
                   "TTL": spec.get("TTL", ""), "NodeChecks": ["serfHealth"], "ServiceChecks": None,
                   "CreateIndex": self.index, "ModifyIndex": self.index}
        self.sessions[sid] = {"info": session, "ttl": ttl, "delay": delay, "timer": None}
        self.renew(sid)
        return sid

    def renew(self, sid):
        """
        @return: the session's info, or C{None} if it is gone.
        """
        s = self.sessions.get(sid)
        if s is None:
            return None
        if s["timer"] is not None and s["timer"].active():
            s["timer"].cancel()
        if s["ttl"]:
            s["timer"] = self.clock.callLater(s["ttl"] * TTL_MULTIPLIER, self.destroy, sid)
        return s["info"]

    def destroy(self, sid):
        """
        Invalidate a session: release or delete what it holds, start the
        lock delay of those keys.
        """
        s = self.sessions.pop(sid, None)
        if s is None:
            return
        if s["timer"] is not None and s["timer"].active():
            s["timer"].cancel()
        behavior = s["info"]["Behavior"]

        def invalidate(kvs, tombstones, index):
            for key, entry in list(kvs.items()):
                if entry["Session"] == sid:
                    if s["delay"] > 0:
                        self.lockDelays[key] = self.clock.seconds() + s["delay"]
                    if behavior == "delete":
                        self.deleteEntry(kvs, tombstones, index, key)
                    else:
                        kvs[key] = dict(entry, Session="", ModifyIndex=index)
        self.write(invalidate)

    def stop(self):
        for s in self.sessions.values():
            if s["timer"] is not None and s["timer"].active():
                s["timer"].cancel()
        for waiter in list(self.waiters):
            waiter.cancel()

    # -- transactions -------------------------------------------------------------

    def txn(self, ops):
        """
        @return: C{(results, errors)} as Consul's C{/v1/txn} reports them.
        """
        errors = []

        def apply(kvs, tombstones, index):
            results = []
            for i, op in enumerate(ops):
                try:
                    results.extend(self.txnOp(kvs, tombstones, index, op))
                except TxnError as e:
                    errors.append({"OpIndex": i, "What": str(e)})
            if errors:
                raise TxnError()
            return results
        try:
            if any(op["Verb"] in WRITE_VERBS for op in ops):
                return self.write(apply), None
            return apply(self.kvs, self.tombstones, self.index), None
        except TxnError:
            return None, errors

    def txnOp(self, kvs, tombstones, index, op):
        verb, key = op["Verb"], op.get("Key", "")
        value, flags = op.get("Value"), op.get("Flags", 0)
        cidx, session = op.get("Index", 0), op.get("Session", "")
        entry, keepValue = None, verb == "get"
        if verb == "set":
            entry = self.setEntry(kvs, index, key, value, flags)
        elif verb == "delete":
            self.deleteEntry(kvs, tombstones, index, key)
        elif verb == "delete-cas":
            existing = kvs.get(key)
            if existing is not None and existing["ModifyIndex"] == cidx:
                self.deleteEntry(kvs, tombstones, index, key)
            elif existing is not None:
                raise TxnError("failed to delete key %s, index is stale" % (json.dumps(key),))
        elif verb == "delete-tree":
            for k in [k for k in kvs if k.startswith(key)]:
                self.deleteEntry(kvs, tombstones, index, k)
        elif verb == "cas":
            existing = kvs.get(key)
            if (cidx == 0) != (existing is None) or (existing and existing["ModifyIndex"] != cidx):
                raise TxnError("failed to set key %s, index is stale" % (json.dumps(key),))
            entry = self.setEntry(kvs, index, key, value, flags)
        elif verb == "lock":
            if self.lockDelays.get(key, 0) > self.clock.seconds():
                raise TxnError("failed to lock key %s due to lock delay" % (json.dumps(key),))
            entry = self.lock(kvs, index, key, value, flags, session)
            if entry is None:
                raise TxnError("failed to lock key %s, lock is already held" % (json.dumps(key),))
        elif verb == "unlock":
            entry = self.unlock(kvs, index, key, value, flags, session)
            if entry is None:
                raise TxnError("failed to unlock key %s, lock isn't held, or is held by another "
                               "session" % (json.dumps(key),))
        elif verb == "get":
            entry = kvs.get(key)
            if entry is None:
                raise TxnError("key %s doesn't exist" % (json.dumps(key),))
        elif verb == "get-tree":
            return [{"KV": e} for k, e in sorted(kvs.items()) if k.startswith(key)]
        elif verb == "check-index":
            entry = kvs.get(key)
            if entry is None:
                raise TxnError("failed to check index, key %s doesn't exist" % (json.dumps(key),))
            if entry["ModifyIndex"] != cidx:
                raise TxnError("failed index check for key %s, current modify index %d != %d"
                               % (json.dumps(key), entry["ModifyIndex"], cidx))
        elif verb == "check-session":
            entry = kvs.get(key)
            if entry is None:
                raise TxnError("failed to check session, key %s doesn't exist" % (json.dumps(key),))
            if entry["Session"] != session:
                raise TxnError("failed session check for key %s, current session %s != %s" % (
                    json.dumps(key), json.dumps(entry["Session"]), json.dumps(session)))
        elif verb == "check-not-exists":
            if key in kvs:
                raise TxnError("key %s exists" % (json.dumps(key),))
        else:
            raise TxnError("unknown KV verb %s" % (json.dumps(verb),))
        if entry is None:
            return []
        return [{"KV": entry if keepValue else dict(entry, Value=None)}]


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

    from twisted.internet import reactor, task
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
    task.react(lambda r: run(r))


if __name__ == "__main__":
    main()
