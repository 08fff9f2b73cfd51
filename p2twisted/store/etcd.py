# -*- test-case-name: tests.test_store_etcd -*-
"""
The etcd backend: C{etcd://host:port/root} (root C{/p2} by default), over
etcd's v3 JSON gateway (C{/v3/...}, etcd 3.4 and later) with treq.

Options, as for Consul: C{?tls=1} talks TLS (C{https}); C{ca_file=PATH}
trusts that CA (else the system's), C{cert_file=PATH} (and C{key_file=PATH}
when the key is apart) presents a client certificate, which etcd's
C{--client-cert-auth} takes as the user's name.

Layout.  Key C{a/b} is the etcd key C{<root>/a/b}; keys and values travel
base64-encoded in the gateway's JSON.  A subtree C{p} is the range
C{[<root>/p, <root>/p0)} (C{"0"} follows C{"/"}) filtered to C{p} and the keys
below it.

Versions.  C{Entry.version} is the key's C{mod_revision}: the cluster
revision of the write, so it changes on every write and never repeats when a
key is deleted and created again.  Every conditional write is one
C{/v3/kv/txn} whose compares (C{mod_revision} equal, C{create_revision}
zero for "absent") and writes are applied atomically by etcd; when a compare
fails, the failure branch reads the compared keys so the error names the
first failing op.

Ownership.  A session is a lease (C{/v3/lease/grant}) kept alive at a third
of its TTL; its ephemeral keys and locks are written with the lease, so etcd
deletes them when it expires or is revoked.  C{put} on an existing key
passes C{ignore_lease}, keeping its owner.

Watches read the subtree, then follow the streaming C{/v3/watch} from the
next revision; after a lost stream they resume from the last revision seen,
and re-read the subtree when etcd has compacted that revision away.
"""

import base64
import json
import math
import os
from urllib.parse import parse_qsl, urlsplit

import attr
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted.errors import (
    InvalidTransaction, KeyExists, SessionLost, StoreError, StoreUnavailable, UsageError,
    VersionConflict)
from p2twisted.store._http import HTTPEndpoint, TLSFiles, retryDelays
from p2twisted.store._renewed import RenewedSession
from p2twisted.store.common import (
    Check, CloseOnceMixin, Create, Delete, Entry, Put, Sequencer, SingleOpsMixin, WatchesMixin,
    checkKey, checkOps, checkPrefix, checkedTransaction, idempotent, inSubtree)
from p2twisted.store.interfaces import ILock, ISession, IStore

BACKEND = "etcd"
DEFAULT_ROOT = "/p2"
DEFAULT_PORT = 2379
#: The options of an C{etcd://} URL.
OPTIONS = ("tls", "ca_file", "cert_file", "key_file")

log = Logger()


@attr.s(frozen=True)
class EtcdAddress(object):
    """
    A parsed C{etcd://} URL.
    """

    base = attr.ib()
    root = attr.ib()
    tls = attr.ib(default=None)


def parseURL(url):
    """
    @return: the L{EtcdAddress} of C{url}.
    @raise UsageError: if C{url} is malformed.
    """
    parts = urlsplit(url)
    if parts.scheme != "etcd":
        raise UsageError("not an etcd URL: %r (expected etcd://host:port/root)" % (url,))
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PORT
    except ValueError as e:
        raise UsageError("bad etcd URL %r: %s" % (url, e))
    if not host or "," in parts.netloc or parts.username:
        raise UsageError("bad etcd URL %r: expected etcd://host:port/root (one endpoint; "
                         "authenticate with a TLS client certificate)" % (url,))
    root = parts.path.rstrip("/") or DEFAULT_ROOT
    try:
        checkKey(root[1:], BACKEND)
    except StoreError as e:
        raise UsageError("bad root %r in etcd URL %r: %s" % (root, url, e.detail))
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise UsageError("unknown option(s) %s in etcd URL %r (known: %s)"
                         % (", ".join(sorted(unknown)), url, ", ".join(OPTIONS)))
    tls = None
    if options.get("tls", "0") not in ("", "0", "false") or any(
            options.get(n) for n in OPTIONS[1:]):
        tls = TLSFiles(*(os.path.abspath(options[n]) if options.get(n) else None
                         for n in OPTIONS[1:]))
    hostport = "[%s]" % (host,) if ":" in host else host
    base = "%s://%s:%d" % ("https" if tls else "http", hostport, port)
    return EtcdAddress(base, root, tls)


def _b64(text):
    return base64.b64encode(text.encode("utf-8") if isinstance(text, str) else text).decode("ascii")


def _int(value):
    return int(value or 0)


class _Keys(object):
    """
    Our keys as etcd keys below one root, and back.
    """

    def __init__(self, root):
        self.root = root

    def etcd(self, key):
        return _b64(self.root + "/" + key)

    def range(self, prefix):
        """
        @return: the gateway's C{key} and C{range_end} covering C{prefix}.
        """
        start = self.root + "/" + prefix if prefix else self.root + "/"
        end = start[:-1] + "0" if start.endswith("/") else start + "0"
        return {"key": _b64(start), "range_end": _b64(end)}

    def entry(self, kv, prefix=None):
        """
        @return: the L{Entry} of a gateway C{kv}, or C{None} when it is not
            one of our keys (or not in C{prefix}'s subtree).
        """
        name = base64.b64decode(kv["key"]).decode("utf-8", "replace")
        if not name.startswith(self.root + "/"):
            return None
        key = name[len(self.root) + 1:]
        if prefix is not None and not inSubtree(key, prefix):
            return None
        lease = _int(kv.get("lease"))
        return Entry(key, base64.b64decode(kv.get("value", "")), _int(kv.get("mod_revision")),
                     "%x" % (lease,) if lease else None)


def _compare(key, target, value, result="EQUAL"):
    field = {"MOD": "mod_revision", "CREATE": "create_revision", "LEASE": "lease"}[target]
    return {"key": key, "target": target, field: str(value), "result": result}


@implementer(IStore)
class EtcdStore(CloseOnceMixin, SingleOpsMixin, WatchesMixin):
    """
    An L{IStore} on etcd.  Use L{open}.
    """

    backend = BACKEND

    def __init__(self, reactor, url, address, endpoint):
        self.url = url
        self._reactor = reactor
        self._address = address
        self._http = endpoint
        self._keys = _Keys(address.root)
        self._seq = Sequencer()  # one client's operations on one key keep their order
        self._watches = set()
        self._sessions = set()

    @classmethod
    @defer.inlineCallbacks
    def open(cls, url, reactor=None):
        """
        Connect to the etcd at C{url}.

        @return: L{Deferred} firing with an L{EtcdStore}; fails with
            L{UsageError} for a bad URL, L{StoreUnavailable} if etcd cannot
            be reached.
        """
        if reactor is None:
            from twisted.internet import reactor
        address = parseURL(url)
        endpoint = HTTPEndpoint(reactor, address.base, BACKEND, tls=address.tls)
        try:
            yield endpoint.request("GET", "/version", idempotent=True)
        except StoreUnavailable as e:
            yield endpoint.close()
            raise endpoint.notReached(e, "etcd", "etcd")
        except Exception:
            yield endpoint.close()
            raise
        return cls(reactor, url, address, endpoint)

    # -- the gateway -----------------------------------------------------------

    @defer.inlineCallbacks
    def call(self, path, body, key=None, idempotent=False, timeout=None, blocking=False):
        """
        POST C{body} to the gateway's C{path}; a C{blocking} one (a
        keep-alive) does not wait for a free request slot.

        @return: L{Deferred} firing with the decoded answer; fails with the
            typed error of etcd's answer.
        """
        response = yield self._http.request(
            "POST", path, body=body, key=key, idempotent=idempotent, timeout=timeout,
            expect=(200, 400, 404, 413, 429), blocking=blocking)
        try:
            answer = response.json()
        except ValueError:
            raise StoreError(key, BACKEND, "POST %s%s: not JSON: %s" % (
                self._http.base, path, response.text()))
        if response.code == 200 and "error" not in answer:
            return answer
        message = answer.get("message") or answer.get("error") or response.text()
        if "lease not found" in message:
            raise SessionLost(key, BACKEND, "the session's lease is gone: %s" % (message,))
        if "too large" in message or "larger than max" in message or response.code == 413:
            # One key's value fits (checked before); many of them may not.
            raise InvalidTransaction(key, BACKEND, "over etcd's request size limit (its "
                                     "--max-request-bytes); split the transaction: %s" % (message,))
        if "duplicate key" in message:
            raise InvalidTransaction(key, BACKEND, "etcd refuses two writes to one key in a "
                                     "transaction: %s" % (message,))
        raise StoreError(key, BACKEND, "POST %s%s failed: HTTP %d: %s" % (
            self._http.base, path, response.code, message))

    def _range(self, prefix):
        return self.call("/v3/kv/range", self._keys.range(prefix), key=prefix or None,
                         idempotent=True)

    def _snapshot(self, answer, prefix):
        entries = (self._keys.entry(kv, prefix) for kv in answer.get("kvs", ()))
        return {e.key: e for e in entries if e is not None}

    # -- reads ---------------------------------------------------------------

    def get(self, key):
        try:
            checkKey(key, BACKEND)
        except StoreError:
            return defer.fail()
        d = self._seq.run((key,), self.call, "/v3/kv/range", {"key": self._keys.etcd(key)},
                          key, True)
        return d.addCallback(lambda a: self._snapshot(a, None).get(key))

    def list(self, prefix):
        try:
            checkPrefix(prefix, BACKEND)
        except StoreError:
            return defer.fail()
        return self._range(prefix).addCallback(self._snapshot, prefix)

    # -- writes ----------------------------------------------------------------

    def _one(self, op):
        def single(f):
            f.trap(VersionConflict, KeyExists)
            f.value.index = None
            return f
        return self.transaction([op]).addCallbacks(lambda r: r[0], single)

    def transaction(self, ops):
        return checkedTransaction(ops, BACKEND, self._transact)

    def _transact(self, ops, lease=None):
        """
        Apply C{ops} in one etcd transaction, in their turn for their keys;
        C{Create}s with C{lease}.
        """
        return self._seq.run({op.key for op in ops}, self._txn, ops, lease)

    @defer.inlineCallbacks
    def _txn(self, ops, lease):
        compares, success, checked = [], [], []
        for index, op in enumerate(ops):
            key = self._keys.etcd(op.key)
            version = getattr(op, "version", None)
            if isinstance(op, (Check, Create)) and version is None:
                compares.append(_compare(key, "CREATE", 0))
            elif version is not None and version <= 0:
                # No entry has such a version, but an absent key's
                # mod_revision is 0: a compare that nothing passes.
                compares.append(_compare(key, "CREATE", 0, "LESS"))
            elif version is not None:
                compares.append(_compare(key, "MOD", version))
            if len(compares) > len(checked):
                checked.append(index)
            if isinstance(op, Create):
                put = {"key": key, "value": _b64(op.value)}
                if lease:
                    put["lease"] = str(lease)
                success.append({"request_put": put})
            elif isinstance(op, Put):
                keep = {"key": key, "value": _b64(op.value), "ignore_lease": True, "prev_kv": True}
                if version is not None:
                    success.append({"request_put": keep})
                else:
                    # An existing key keeps its lease; an absent one has none.
                    success.append({"request_txn": {
                        "compare": [_compare(key, "CREATE", 0, "GREATER")],
                        "success": [{"request_put": keep}],
                        "failure": [{"request_put": {"key": key, "value": _b64(op.value)}}]}})
            elif isinstance(op, Delete):
                success.append({"request_delete_range": {"key": key}})
        failure = [{"request_range": {"key": c["key"]}} for c in compares]
        body = {"compare": compares, "success": success, "failure": failure}
        alone = len(success) == 1 and not compares and "request_txn" in success[0]
        if alone:
            # A plain put alone: a flat txn, which etcd applies faster than
            # a nested one (bench/store.py: ~1.5x).
            body = success[0]["request_txn"]
        answer = yield self.call("/v3/kv/txn", body, key=ops[0].key if len(ops) == 1 else None,
                                 idempotent=idempotent(ops))
        if alone:
            answer = dict(answer, succeeded=True, responses=[{"response_txn": answer}])
        if not answer.get("succeeded"):
            raise self._conflict(ops, checked, answer.get("responses", []))
        revision = _int(answer["header"]["revision"])
        results = []
        responses = iter(answer.get("responses", []))
        for op in ops:
            if isinstance(op, Check):
                results.append(None)
                continue
            response = next(responses)
            if isinstance(op, Delete):
                results.append(_int(response["response_delete_range"].get("deleted")) > 0)
                continue
            if "response_txn" in response:
                inner = response["response_txn"]
                response = inner["responses"][0] if inner.get("succeeded") else {}
            prev = response.get("response_put", {}).get("prev_kv") or {}
            owner = _int(prev.get("lease")) or (lease if isinstance(op, Create) else None)
            results.append(Entry(op.key, op.value, revision, "%x" % (owner,) if owner else None))
        return results

    def _conflict(self, ops, checked, responses):
        """
        @return: the error of the first op whose compare failed, judged from
            the failure branch's reads (all at the revision of the compares).
        """
        for index, response in zip(checked, responses):
            op = ops[index]
            kvs = response.get("response_range", {}).get("kvs") or []
            current = _int(kvs[0].get("mod_revision")) if kvs else None
            if isinstance(op, Create):
                if current is not None:
                    return KeyExists(op.key, BACKEND, index=index)
            elif current != op.version:
                return VersionConflict(op.key, BACKEND, index=index)
        return VersionConflict(None, BACKEND, "a compare of the transaction failed")

    # -- watches, sessions, close ------------------------------------------------

    def _newWatch(self, prefix, delivery):
        return EtcdWatch(self, prefix, delivery)

    @defer.inlineCallbacks
    def session(self, ttl):
        if self._closing is not None:
            raise StoreUnavailable(None, BACKEND, "the store is closed")
        answer = yield self.call("/v3/lease/grant", {"TTL": int(math.ceil(ttl))})
        lease = _int(answer.get("ID"))
        session = EtcdSession(self, lease, float(_int(answer.get("TTL")) or ttl))
        if self._closing is not None:
            yield session.close()
            raise StoreUnavailable(None, BACKEND, "the store is closed")
        self._sessions.add(session)
        session.start()
        return session

    @defer.inlineCallbacks
    def _close(self):
        for w in list(self._watches):
            w.delivery.cancel()
        yield defer.DeferredList([s.close() for s in list(self._sessions)], consumeErrors=True)
        yield self._http.close()


class EtcdWatch(object):
    """
    One subtree followed through a C{/v3/watch} stream, its entries kept in
    C{entries} and offered to C{delivery} after every change.
    """

    def __init__(self, store, prefix, delivery):
        self.store = store
        self.prefix = prefix
        self.delivery = delivery
        self.entries = {}
        self.revision = None  # the last revision applied; None: read again
        self._buffer = b""
        self._stream = None
        self._running = None
        self._stopped = False
        self._delays = retryDelays(0.1, 2.0)
        self._failures = 0
        self._decoder = json.JSONDecoder()

    def start(self):
        self._running = self._run()
        self._running.addErrback(lambda f: None if self._stopped else
                                 log.failure("etcd watch of {prefix!r}", f, prefix=self.prefix))

    def stop(self):
        self._stopped = True
        if self._running is not None:
            self._running.cancel()

    @defer.inlineCallbacks
    def _run(self):
        reactor = self.store._reactor
        while not self._stopped:
            try:
                if self.revision is None:
                    answer = yield self.store._range(self.prefix)
                    self.entries = self.store._snapshot(answer, self.prefix)
                    self.revision = _int(answer["header"]["revision"])
                    self.delivery.offer(dict(self.entries))
                self._buffer = b""
                keys = self.store._keys.range(self.prefix)
                keys["start_revision"] = str(self.revision + 1)
                self._stream = self.store._http.stream(
                    "POST", "/v3/watch", {"create_request": keys}, self._received,
                    key=self.prefix or None)
                yield self._stream
                reason = "etcd ended the watch stream"
            except defer.CancelledError:
                if self.revision is None and not self._stopped:
                    continue  # compacted: read the subtree again
                return
            except StoreError as e:
                reason = str(e)
            if self._stopped:
                return
            delay = self._delays(self._failures)
            if self._failures == 0 or self._failures % 10 == 0:
                log.warn("etcd watch of {prefix!r} interrupted ({reason}); resuming from revision "
                         "{revision} in {delay:.2f}s", prefix=self.prefix, reason=reason,
                         revision=self.revision, delay=delay)
            self._failures += 1
            yield task.deferLater(reactor, delay, lambda: None)

    def _reread(self, why):
        log.info(why + "; reading the subtree again", revision=self.revision,
                 prefix=self.prefix)
        self.revision = None
        self._stream.cancel()

    def _received(self, data):
        self._buffer += data
        try:
            text = self._buffer.decode("utf-8")
        except UnicodeDecodeError:
            return  # a character cut in two: wait for the rest
        while True:
            text = text.lstrip()
            try:
                message, end = self._decoder.raw_decode(text)
            except ValueError:
                break  # empty, or an incomplete message: wait for more
            text = text[end:]
            self._message(message)
            if self.revision is None:
                return  # compacted: the stream is cut
        self._buffer = text.encode("utf-8")

    def _message(self, message):
        result = message.get("result")
        if result is None:
            raise StoreError(self.prefix or None, BACKEND,
                             "etcd watch failed: %s" % (message.get("error", message),))
        if _int(result.get("compact_revision")) or result.get("canceled"):
            self._reread("etcd compacted revision {revision} of the watch of {prefix!r} away")
            return
        if result.get("created") and _int(result.get("header", {}).get("revision")) < \
                self.revision:
            # A server that lost its data, or another cluster behind the
            # same address: the revision we would resume from never comes.
            self._reread("etcd's revision went back from {revision} while watching {prefix!r}")
            return
        self._failures = 0
        events = result.get("events") or []
        for event in events:
            kv = event["kv"]
            self.revision = max(self.revision, _int(kv.get("mod_revision")))
            if event.get("type") == "DELETE":
                entry = self.store._keys.entry(dict(kv, value=""), self.prefix)
                if entry is not None:
                    self.entries.pop(entry.key, None)
            else:
                entry = self.store._keys.entry(kv, self.prefix)
                if entry is not None:
                    self.entries[entry.key] = entry
        if events:
            self.delivery.offer(dict(self.entries))


@implementer(ILock)
class EtcdLock(object):
    """
    A lock: a key written with its session's lease.
    """

    def __init__(self, session, entry):
        self._session = session
        self.key = entry.key
        self.version = entry.version

    def release(self):
        s = self._session
        if s.lost:
            return defer.succeed(None)
        key = s.store._keys.etcd(self.key)
        return s.store._seq.run((self.key,), s.store.call, "/v3/kv/txn", {
            "compare": [_compare(key, "LEASE", s.lease)],
            "success": [{"request_delete_range": {"key": key}}]},
            self.key, True).addCallback(lambda _: None)


@implementer(ISession)
class EtcdSession(RenewedSession):
    """
    An etcd lease, kept alive every C{ttl / 3} seconds; closing revokes it.
    """

    backend = BACKEND
    lockClass = EtcdLock

    def __init__(self, store, lease, ttl):
        RenewedSession.__init__(self, store, "%x" % (lease,), ttl, store._reactor)
        self.lease = lease

    def renew(self, timeout):
        def alive(answer):
            return _int(answer.get("result", answer).get("TTL")) > 0

        def gone(f):
            f.trap(SessionLost)
            return False
        d = self.store.call("/v3/lease/keepalive", {"ID": str(self.lease)},
                            idempotent=True, timeout=max(timeout, 0.5), blocking=True)
        return d.addCallbacks(alive, gone)

    def destroy(self):
        d = self.store.call("/v3/lease/revoke", {"ID": str(self.lease)}, idempotent=True)
        return d.addErrback(lambda f: f.trap(SessionLost))

    def createEphemeral(self, key, value):
        if self.lost:
            return defer.fail(SessionLost(key, BACKEND))
        try:
            ops = checkOps([Create(key, value)], BACKEND)
        except StoreError:
            return defer.fail()

        def failed(f):
            f.value.index = None
            if f.check(SessionLost):
                self._end("etcd no longer knows its lease")
            return f
        d = self.store._transact(ops, self.lease).addCallback(lambda r: r[0])
        return d.addErrback(self._recognise, key, value).addErrback(failed)
