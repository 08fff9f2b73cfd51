"""
The recursive-delete window (not a test): how long a node's intent spends
half deleted -- pods gone, marker still there -- when a person deletes it
children first, which is what the agent's removal grace must outlast.

    .venv/bin/python bench/deleteall_window.py [--pods 100] [--runs 3]

For a node holding --pods pods on a real ZooKeeper (tests/zkserver.py):
ZooKeeper's own C{zkCli.sh deleteall /<root>/intent/<node>} with its default
batch (1000 deletes per C{multi}) and with C{-b 1} (one znode per C{multi},
as a tool deleting one key at a time does), and a key-by-key delete loop
through our store (children first, each delete waiting for the previous).

The window is what an agent sees: from the first change its watch on
intent/<node> delivers to the snapshot without the marker (the worst of
--runs).  The transaction count, from ZooKeeper's own log (TxnLogToolkit),
says how many steps the delete took: one means it was atomic and there is no
window at all -- that is the floor.  zkCli's own start (a JVM, about half a
second) is not part of the window: nothing is deleted until it is connected.
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task, threads  # noqa: E402

from p2twisted.store import keys, openStore  # noqa: E402
from p2twisted.store.common import MAX_OPS, Put  # noqa: E402
from tests.zkserver import JAR, LOGGERS, ZooKeeperServer  # noqa: E402

ZKCLI = "/usr/share/zookeeper/bin/zkCli.sh"
NODE = "n3"


def deleteTransactions(directory, path):
    """
    @return: how many transactions in the server's log deleted something
        under C{path} (ZooKeeper's TxnLogToolkit prints one line per
        transaction; its times have only second resolution).
    """
    count = 0
    for log in sorted(glob.glob(os.path.join(directory, "data", "version-2", "log.*"))):
        out = subprocess.run(
            ["java", "-cp", ":".join([JAR] + LOGGERS[-1:]),
             "org.apache.zookeeper.server.persistence.TxnLogToolkit", log],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False).stdout.decode()
        count += sum(1 for line in out.splitlines()
                     if re.search(r" zxid \S+ (multi )?delete", line) and path in line)
    return count


@defer.inlineCallbacks
def populate(store, pods):
    ops = [Put(keys.intentNode(NODE), b'{"node": "n3", "created": "bench"}')]
    ops += [Put(keys.intent(NODE, "pod%03d" % i), b"id: pod%03d\n" % i) for i in range(pods)]
    for start in range(0, len(ops), MAX_OPS):
        yield store.transaction(ops[start:start + MAX_OPS])


@defer.inlineCallbacks
def oneRun(reactor, server, how, pods):
    root = "/bench%s" % (uuid.uuid4().hex[:8],)
    store = yield openStore("zk://%s%s" % (server.hosts, root), reactor)
    yield populate(store, pods)
    marker = keys.intentNode(NODE)
    seen = {}
    done = defer.Deferred()

    def changed(snapshot):
        now = time.monotonic()
        if len(snapshot) < pods + 1:
            seen.setdefault("first", now)
        if marker not in snapshot and not done.called:
            seen["gone"] = now
            done.callback(None)
    watch = store.watch(marker, changed)
    yield task.deferLater(reactor, 0.5, lambda: None)
    path = "%s/%s" % (root, marker)
    if how == "p2 store, key by key":
        for key in sorted((yield store.list(marker)), reverse=True):
            yield store.delete(key)
    else:
        argv = [ZKCLI, "-server", server.hosts, "deleteall", path]
        if how.endswith("-b 1"):
            argv += ["-b", "1"]
        yield threads.deferToThread(subprocess.run, argv, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, check=True)
    yield done
    watch.cancel()
    yield store.close()
    return seen["gone"] - seen["first"], deleteTransactions(server.directory, path)


@defer.inlineCallbacks
def main(reactor):
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("deleting intent/%s holding %d pods (+ its marker) on ZooKeeper; worst of %d runs"
          % (NODE, args.pods, args.runs))
    server = ZooKeeperServer()
    server.start()
    try:
        for how in ("zkCli deleteall", "zkCli deleteall -b 1", "p2 store, key by key"):
            results = []
            for _ in range(args.runs):
                results.append((yield oneRun(reactor, server, how, args.pods)))
            print("%-24s window %.3f s  (%d delete transactions)" % (
                how, max(r[0] for r in results), results[-1][1]))
    finally:
        server.destroy()


if __name__ == "__main__":
    task.react(main)
