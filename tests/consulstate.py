# -*- test-case-name: tests.test_consulserver -*-
"""
The data and rules of the Consul test server (L{tests.consulserver}): KV
entries and tombstones with Consul's indexes, sessions with TTLs and lock
delays, transactions op by op, as Consul's C{agent/consul/state/kvs.go} and
C{txn.go} apply them.
"""

import json
import re
import uuid

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
    def setEntry(kvs, index, key, value, flags=0, session=None, lockIndex=None):
        """
        Consul's C{kvsSetTxn}: keep the session (and lock index) unless one
        is given; a set that changes nothing keeps the C{ModifyIndex}.
        """
        existing = kvs.get(key)
        if lockIndex is None:
            lockIndex = existing["LockIndex"] if existing else 0
        entry = {"LockIndex": lockIndex, "Key": key,
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
        return self.setEntry(kvs, index, key, value, flags, session, lockIndex)

    def unlock(self, kvs, index, key, value, flags, session):
        """
        Consul's C{kvsUnlockTxn}.

        @return: the entry, or C{None} when C{session} does not hold it.
        """
        if not session:
            raise TxnError("missing session")
        existing = kvs.get(key)
        if existing is None or existing["Session"] != session:
            return None
        return self.setEntry(kvs, index, key, value, flags, "")

    # -- sessions ---------------------------------------------------------------

    def createSession(self, spec):
        # Consul's Session.Apply refuses these; the RPC error reaches the
        # client as an HTTP 500 with the error's text (agent/http.go).
        behavior = spec.get("Behavior") or "release"
        if behavior not in ("release", "delete"):
            raise HTTPError(500, "Invalid Behavior setting '%s'" % (behavior,))
        ttl = 0.0
        if spec.get("TTL"):
            try:
                ttl = parseDuration(spec["TTL"])
            except ValueError as e:
                raise HTTPError(500, "Session TTL '%s' invalid: %s" % (spec["TTL"], e))
            if ttl != 0 and not (self.sessionTTLMin <= ttl <= TTL_MAX):
                # Go's %d of a time.Duration: nanoseconds.
                raise HTTPError(500, "Invalid Session TTL '%d', must be between [%s=%s]" % (
                    round(ttl * 1e9), goDuration(self.sessionTTLMin), goDuration(TTL_MAX)))
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
