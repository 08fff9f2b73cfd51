# -*- test-case-name: tests.test_store_local -*-
"""
The SQL layer of the local store (L{p2twisted.store.local}): the schema, and
L{_Database}, which runs one client's reads and write transactions on its
SQLite connections.

Every write is one C{BEGIN IMMEDIATE} transaction (L{_Database.write}) that
first reaps expired sessions, then takes the next global revision, stamps it
as the version of everything it writes and logs the written keys in
C{changes}.  Reads select only live entries (L{_SELECT}).  Nothing here is
thread-safe: L{p2twisted.store.local.LocalStore} calls it from its one
worker thread, except L{_Database.changedSince}, which uses its own
connection on the reactor thread.
"""

import sqlite3

from p2twisted.errors import KeyExists, SessionLost, VersionConflict
from p2twisted.store.common import Check, Create, Delete, Entry, Put

BACKEND = "local"

#: Seconds a write waits for another process's write lock before failing.
BUSY_TIMEOUT = 10.0

#: Revisions of C{changes} rows kept; a client further behind re-reads all.
KEEP_CHANGES = 10000

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, version INTEGER NOT NULL, owner TEXT, value BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS entries_owner ON entries(owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, ttl REAL NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions(expires);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS changes (
    rev INTEGER NOT NULL, key TEXT NOT NULL, PRIMARY KEY (rev, key)) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('pruned', 0), ('schema', 1);
COMMIT;
"""

#: Live entries: persistent, or owned by a session that has not expired.
_SELECT = ("SELECT e.key, e.value, e.version, e.owner FROM entries e"
           " LEFT JOIN sessions s ON s.id = e.owner"
           " WHERE (e.owner IS NULL OR s.expires > :now)")


class _OpenFailed(Exception):
    """Opening failed; C{args} are the reason and what to do."""


class _Txn(object):
    """One write transaction: its connection, time, revision, changed keys."""

    def __init__(self, conn, now, rev):
        self.conn, self.now, self.rev, self.changed = conn, now, rev, []


class _Database(object):
    """
    The SQL of one store client.  C{conn} is used only from the worker
    thread; C{watcher} (busy timeout 0) only by L{changedSince} on the
    reactor thread.
    """

    def __init__(self, path, sync, clock, keepChanges=KEEP_CHANGES):
        self.path, self.sync, self.clock = path, sync, clock
        self.keepChanges = keepChanges
        self.conn = self.watcher = None
        self.lastSeen = 0      # every changes row up to this revision was looked at
        self.own = set()       # our own revisions above lastSeen
        self.dataVersion = None

    def open(self):
        """
        Create the schema if missing, then reap.  (The file's directory was
        made and its permissions checked by
        L{p2twisted.store.local._openDatabase}.)

        @return: the keys reaped.
        """
        conn = self._connect(BUSY_TIMEOUT)
        try:
            (mode,), = conn.execute("PRAGMA journal_mode=WAL").fetchall()
            if mode.lower() != "wal":
                raise _OpenFailed("the file system does not support WAL mode (got %s)" % (mode,),
                                  "put the store on a local file system")
            conn.execute("PRAGMA synchronous=%s" % (self.sync,))
            conn.executescript(_SCHEMA)
            self.conn, self.watcher = conn, self._connect(0)
            self.changedSince()
            self.lastSeen = self._meta("revision")
        except BaseException:
            conn.close()
            self.close()
            raise
        return self.reapIfDue()

    def _connect(self, timeout):
        return sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                               check_same_thread=False)

    def close(self):
        for conn in (self.conn, self.watcher):
            if conn is not None:
                conn.close()
        self.conn = self.watcher = None

    def _meta(self, name):
        (value,), = self.conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchall()
        return value

    def changedSince(self):
        """
        Whether any connection but C{watcher} committed since the last call.
        A few microseconds, no disk I/O, never waits: a busy file counts as
        changed.
        """
        try:
            (version,), = self.watcher.execute("PRAGMA data_version").fetchall()
        except sqlite3.Error:
            return True
        changed, self.dataVersion = version != self.dataVersion, version
        return changed

    # -- reads (worker thread) ---------------------------------------------

    def get(self, key):
        rows = self.conn.execute(_SELECT + " AND e.key = :key",
                                 {"now": self.clock.seconds(), "key": key}).fetchall()
        return Entry(*rows[0]) if rows else None

    def snapshot(self, prefix):
        sql = _SELECT + (" AND (e.key = :p OR (e.key >= :lo AND e.key < :hi))" if prefix else "")
        args = {"now": self.clock.seconds(), "p": prefix, "lo": prefix + "/", "hi": prefix + "0"}
        return {row[0]: Entry(*row) for row in self.conn.execute(sql, args)}

    def poll(self, changed, reap):
        """
        Read the unseen change log if C{changed}; reap if C{reap}.

        @return: C{(foreign, reaped)}: the keys other clients wrote (C{None}
            if the log was pruned past us: assume everything), keys we reaped.
        """
        return (self._unseenChanges() if changed else []), (self.reapIfDue() if reap else [])

    def _unseenChanges(self):
        c = self.conn
        c.execute("BEGIN")
        try:
            rows = c.execute("SELECT rev, key FROM changes WHERE rev > ?",
                             (self.lastSeen,)).fetchall()
            pruned = self._meta("pruned")
        finally:
            c.execute("COMMIT")
        keys = None if pruned > self.lastSeen else [k for r, k in rows if r not in self.own]
        self.lastSeen = max([self.lastSeen, pruned] + [r for r, _ in rows])
        self.own = {r for r in self.own if r > self.lastSeen}
        return keys

    def reapIfDue(self):
        """
        Reap, if a cheap read finds an expired session.

        @return: the keys reaped.
        """
        if not self.conn.execute("SELECT 1 FROM sessions WHERE expires <= ? LIMIT 1",
                                 (self.clock.seconds(),)).fetchall():
            return []
        return self.write(lambda txn: None)[1]

    # -- writes (worker thread) --------------------------------------------

    def write(self, fn, *args):
        """
        Run C{fn(txn, *args)} in a write transaction, after reaping expired
        sessions, so that every row C{fn} sees is live.

        @return: C{(fn's result, keys changed)}
        """
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            txn = _Txn(c, self.clock.seconds(), self._meta("revision") + 1)
            for (sid,) in c.execute("SELECT id FROM sessions WHERE expires <= ?",
                                    (txn.now,)).fetchall():
                self.dropSession(txn, sid)
            result = fn(txn, *args)
            if txn.changed:
                self._log(txn)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        if txn.changed:
            if txn.rev == self.lastSeen + 1:
                self.lastSeen = txn.rev
            else:
                self.own.add(txn.rev)
        return result, txn.changed

    def _log(self, txn):
        c = txn.conn
        c.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (txn.rev,))
        c.executemany("INSERT INTO changes VALUES (?, ?)", [(txn.rev, k) for k in set(txn.changed)])
        keep = self.keepChanges
        if txn.rev % 128 == 0 and txn.rev > keep:
            c.execute("DELETE FROM changes WHERE rev <= ?", (txn.rev - keep,))
            c.execute("UPDATE meta SET value = ? WHERE name = 'pruned'", (txn.rev - keep,))

    def apply(self, txn, ops, owner=None, single=False):
        """
        Check every op against the state before the transaction, then apply
        them all: the semantics of L{MemoryState.apply}.  Errors carry the
        op's index, or none for a C{single} op.
        """
        for index, op in enumerate(ops):
            rows = txn.conn.execute("SELECT version FROM entries WHERE key = ?",
                                    (op.key,)).fetchall()
            current = rows[0][0] if rows else None
            at = None if single else index
            if isinstance(op, Check) and current != op.version:
                raise VersionConflict(op.key, BACKEND, index=at)
            if isinstance(op, Create) and current is not None:
                raise KeyExists(op.key, BACKEND, index=at)
            if (isinstance(op, (Put, Delete)) and op.version is not None
                    and (current is None or current != op.version)):
                raise VersionConflict(op.key, BACKEND, index=at)
        return [self._applyOne(txn, op, owner) for op in ops]

    def _applyOne(self, txn, op, owner):
        c = txn.conn
        if isinstance(op, Put):     # an existing entry keeps its owner
            (kept,), = c.execute(
                "INSERT INTO entries VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                " version = excluded.version, value = excluded.value RETURNING owner",
                (op.key, txn.rev, owner, op.value)).fetchall()
        elif isinstance(op, Create):
            c.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
                      (op.key, txn.rev, owner, op.value))
            kept = owner
        elif isinstance(op, Delete):
            deleted = c.execute("DELETE FROM entries WHERE key = ?", (op.key,)).rowcount > 0
            if deleted:
                txn.changed.append(op.key)
            return deleted
        else:
            return None
        txn.changed.append(op.key)
        return Entry(op.key, op.value, txn.rev, kept)

    def createSession(self, txn, sid, ttl):
        txn.conn.execute("INSERT INTO sessions VALUES (?, ?, ?)", (sid, ttl, txn.now + ttl))

    def heartbeat(self, txn, sid, ttl):
        """
        @return: whether the session is alive (its row was not reaped).
        """
        return txn.conn.execute("UPDATE sessions SET expires = ? WHERE id = ?",
                                (txn.now + ttl, sid)).rowcount > 0

    def dropSession(self, txn, sid):
        rows = txn.conn.execute("DELETE FROM entries WHERE owner = ? RETURNING key", (sid,))
        txn.changed.extend(key for (key,) in rows.fetchall())
        txn.conn.execute("DELETE FROM sessions WHERE id = ?", (sid,))

    def createEphemeral(self, txn, sid, key, value):
        if not txn.conn.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchall():
            raise SessionLost(key, BACKEND, "session lost: it expired or was closed")
        return self.apply(txn, [Create(key, value)], owner=sid, single=True)[0]

    def release(self, txn, sid, key):
        if txn.conn.execute("DELETE FROM entries WHERE key = ? AND owner = ?",
                            (key, sid)).rowcount:
            txn.changed.append(key)
