# -*- test-case-name: tests.test_store_url -*-
"""
The coordination store: one interface (L{interfaces.IStore}), several backends
chosen by URL.

    memory://                         in-process (tests)
    local:///var/lib/p2/state.db      embedded SQLite, shared by one host's processes
    zk://h1:2181,h2:2181/p2           ZooKeeper (optional user:password@ for digest auth)
    consul://127.0.0.1:8500/p2        Consul (options: token_file, tls, ca_file, cert_file,
                                      key_file, dc, consistency)
    etcd://127.0.0.1:2379/p2          etcd 3.4+, v3 JSON gateway (options: tls, ca_file, cert_file,
                                      key_file)
"""

from urllib.parse import urlsplit

from p2twisted.errors import UsageError

SCHEMES = ("memory", "local", "zk", "consul", "etcd")


def openStore(url, reactor=None):
    """
    Open the store named by C{url}.

    @return: L{Deferred} firing with a connected L{IStore}; fails with
        L{UsageError} for an unknown or malformed URL, L{StoreUnavailable} when
        the store cannot be reached.
    """
    from twisted.internet import defer
    return defer.maybeDeferred(_open, url, reactor)


def _open(url, reactor):
    if reactor is None:
        from twisted.internet import reactor
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from p2twisted.store.memory import MemoryStore
        return MemoryStore(clock=reactor, url=url)
    if scheme == "local":
        from p2twisted.store.local import LocalStore
        return LocalStore.open(url, reactor)
    if scheme in ("zk", "zookeeper"):
        from p2twisted.store.zookeeper import ZooKeeperStore
        return ZooKeeperStore.open(url, reactor)
    if scheme == "consul":
        from p2twisted.store.consul import ConsulStore
        return ConsulStore.open(url, reactor)
    if scheme == "etcd":
        from p2twisted.store.etcd import EtcdStore
        return EtcdStore.open(url, reactor)
    raise _unknown(url)


def checkStoreURL(url):
    """
    @return: C{url}, when it names a kind of store there is.
    @raise UsageError: it does not (so a long-running process says so at
        start rather than retrying to open it for ever).
    """
    if urlsplit(url).scheme not in SCHEMES + ("zookeeper",):
        raise _unknown(url)
    return url


def _unknown(url):
    return UsageError(
        "unknown store URL %r: expected local:///path/state.db, zk://host:port[,host:port]/root, "
        "consul://host:port/prefix or etcd://host:port/root"
        % (url,))
