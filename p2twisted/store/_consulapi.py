# -*- test-case-name: tests.test_store_consul -*-
"""
How the Consul backend (L{p2twisted.store.consul}) speaks Consul's API:
its URL, and our transaction ops as C{/v1/txn} ops with the way back from
Consul's results and per-op errors to ours.
"""

import base64
import os
import re
from urllib.parse import parse_qs, urlsplit

import attr

from p2twisted.errors import KeyExists, SessionLost, StoreError, UsageError, VersionConflict
from p2twisted.store._http import TLSFiles
from p2twisted.store.common import Check, Create, Delete, Entry, Put, checkKey

BACKEND = "consul"
DEFAULT_PORT = 8500
DEFAULT_ROOT = "p2"
#: Consul's txn_max_req_len default: the largest /v1/txn body.
MAX_TXN_BODY = 512 * 1024
#: Consul's maxTxnOps: the most ops in one /v1/txn.
MAX_TXN_OPS = 64
OPTIONS = ("token_file", "tls", "ca_file", "cert_file", "key_file", "dc", "consistency")


@attr.s(frozen=True)
class Address(object):
    base = attr.ib()
    root = attr.ib()
    token = attr.ib(default=None)
    tls = attr.ib(default=None)
    dc = attr.ib(default=None)
    consistency = attr.ib(default="default")


def parseURL(url):
    """
    @return: the L{Address} of C{consul://host:port/prefix?options}.
    @raise UsageError: for a malformed URL or an unreadable token file.
    """
    parts = urlsplit(url)

    def bad(why):
        return UsageError("bad Consul store URL %r: %s (expected consul://host:port/prefix"
                          "[?token_file=PATH&tls=1&ca_file=PATH&cert_file=PATH&key_file=PATH"
                          "&dc=NAME&consistency=default|consistent|stale])" % (url, why))
    if parts.scheme != "consul":
        raise bad("the scheme is not consul://")
    host, sep, port = parts.netloc.rpartition(":")
    if not sep:
        host, port = parts.netloc, str(DEFAULT_PORT)
    if not host or not port.isdigit() or "@" in host or "," in host:
        raise bad("%r is not host:port" % (parts.netloc,))
    root = parts.path.strip("/") or DEFAULT_ROOT
    try:
        checkKey(root)
    except StoreError:
        raise bad("the prefix %r is not a valid key path" % (root,))
    options = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name not in OPTIONS:
            raise bad("unknown option %r" % (name,))
        options[name] = values[-1]
    consistency = options.get("consistency", "default")
    if consistency not in ("default", "consistent", "stale"):
        raise bad("consistency must be default, consistent or stale")
    token = None
    if options.get("token_file"):
        path = options["token_file"]
        try:
            with open(path) as f:
                token = f.read().strip()
        except OSError as e:
            raise UsageError("cannot read the Consul token file %s: %s" % (path, e.strerror))
        if not token:
            raise UsageError("the Consul token file %s is empty" % (path,))
    tls = None
    if options.get("tls", "0") not in ("", "0", "false") or any(
            options.get(n) for n in ("ca_file", "cert_file", "key_file")):
        tls = TLSFiles(*(os.path.abspath(options[n]) if options.get(n) else None
                         for n in ("ca_file", "cert_file", "key_file")))
    base = "%s://%s:%s" % ("https" if tls else "http", host, port)
    return Address(base, root, token, tls, options.get("dc") or None, consistency)


def b64(value):
    return base64.b64encode(value).decode("ascii")


class TxnPlan(object):
    """
    Our transaction ops as Consul txn ops, and the way back: which of our
    ops each Consul op (and each Consul result) belongs to.
    """

    def __init__(self, consulKey, ops, session=None):
        self.ops = ops
        self.body = []
        self.owner = []  # our op index of each Consul op
        self.results = []  # our op index of each Consul op giving a result
        # A versioned delete is check-index + delete (check-index fails on
        # an absent key; delete-cas would not), as long as the Consul ops
        # fit in Consul's 64; beyond, the last ones are a single delete-cas,
        # which differs only for a key already gone (deleted, not refused).
        spare = MAX_TXN_OPS - len(ops) - sum(
            1 for op in ops if isinstance(op, Put) and session is not None)
        for i, op in enumerate(ops):
            ck = consulKey(op.key)
            if isinstance(op, Check):
                if op.version is None:
                    self._add(i, {"Verb": "check-not-exists", "Key": ck}, False)
                else:
                    self._add(i, {"Verb": "check-index", "Key": ck, "Index": op.version}, True)
            elif isinstance(op, Put) and session is not None:
                self._add(i, {"Verb": "check-not-exists", "Key": ck}, False)
                self._add(i, {"Verb": "lock", "Key": ck, "Value": b64(op.value),
                              "Session": session}, True)
            elif isinstance(op, Put) and op.version == 0:
                # Consul's cas index 0 means 'only if absent'; ours matches
                # no entry (no ModifyIndex is 0), which check-index says.
                self._add(i, {"Verb": "check-index", "Key": ck, "Index": 0}, False)
            elif isinstance(op, (Put, Create)):
                index = 0 if isinstance(op, Create) else op.version
                if index is None:
                    verb = {"Verb": "set", "Key": ck, "Value": b64(op.value)}
                else:
                    verb = {"Verb": "cas", "Key": ck, "Value": b64(op.value), "Index": index}
                self._add(i, verb, True)
            elif op.version is not None and spare <= 0:
                self._add(i, {"Verb": "delete-cas", "Key": ck, "Index": op.version}, False)
            else:
                if op.version is not None:
                    spare -= 1
                    self._add(i, {"Verb": "check-index", "Key": ck, "Index": op.version}, True)
                self._add(i, {"Verb": "delete", "Key": ck}, False)

    def _add(self, i, kv, gives):
        self.body.append({"KV": kv})
        self.owner.append(i)
        if gives:
            self.results.append(i)

    def entries(self, results):
        """
        @return: our per-op results from Consul's C{Results}.
        """
        out = [True if isinstance(op, Delete) else None for op in self.ops]
        for i, result in zip(self.results, results or []):
            op = self.ops[i]
            if isinstance(op, (Put, Create)):
                kv = result["KV"]
                out[i] = Entry(op.key, op.value, kv["ModifyIndex"], kv.get("Session") or None)
        return out

    def error(self, errors):
        """
        @return: the typed error of the first failing op.
        """
        first = min(errors, key=lambda e: e.get("OpIndex", 0))
        i = self.owner[first.get("OpIndex", 0)] if first.get("OpIndex", 0) < len(self.owner) else 0
        op, what = self.ops[i], first.get("What", "")
        if any("invalid session" in e.get("What", "") for e in errors):
            return SessionLost(op.key, BACKEND, index=i)
        if isinstance(op, Create) or (isinstance(op, Put) and "lock" in what) or (
                isinstance(op, Put) and "exists" in what):
            return KeyExists(op.key, BACKEND, index=i)
        return VersionConflict(op.key, BACKEND, index=i)


_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def minimumTTL(message):
    """
    @return: the least session TTL in seconds named by Consul's refusal
        C{"Session TTL '5s' must be between [10s=24h0m0s]"}, or C{None}.
    """
    match = re.search(r"must be between \[([0-9a-z.\u00b5]+)=", message)
    if match is None:
        return None
    parts = re.findall(r"([0-9.]+)(ns|us|\u00b5s|ms|s|m|h)", match.group(1))
    return sum(float(n) * _UNITS[u] for n, u in parts) or None
