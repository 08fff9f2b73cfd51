# -*- test-case-name: tests.test_store_memory -*-
"""
The coordination store: the one seam every part of p2twisted talks through.

Keys are C{/}-separated segments of C{[A-Za-z0-9._:-]}, none empty, relative
to the backend's configured root.  Values are bytes of at most 512 KiB.  Every
entry carries an integer C{version} that changes on each write; callers only
ever hand a version back to the store, never do arithmetic on it.

A "subtree" C{prefix} names a key and everything below it: C{"intent/n1"}
covers C{intent/n1} itself and C{intent/n1/web} but not C{intent/n10}.  The
empty prefix covers every key.

Every method returns a L{Deferred}; the failures are the typed errors of
L{p2twisted.errors}, whose messages name the key and the backend.
"""

from zope.interface import Attribute, Interface


class IStore(Interface):
    """
    A coordination store (see DESIGN.md, "Coordination store semantics").
    """

    backend = Attribute("Short name of the backend: 'memory', 'local', 'zookeeper', ...")
    url = Attribute("The store URL this instance was opened with.")

    def get(key):
        """
        Read one entry.

        @return: L{Deferred} firing with an L{Entry}, or C{None} when absent.
        """

    def list(prefix):
        """
        Read a subtree.

        @return: L{Deferred} firing with C{{key: Entry}} for C{prefix} itself
            (if present) and every key below it.
        """

    def put(key, value):
        """
        Write C{value} whatever is there.  An existing entry keeps its owner
        (an ephemeral key stays ephemeral).

        @return: L{Deferred} firing with the new L{Entry}.
        """

    def create(key, value):
        """
        Write a persistent entry that must not exist yet.

        @return: L{Deferred} firing with the new L{Entry}; fails with
            L{KeyExists}.
        """

    def cas(key, value, version):
        """
        Compare-and-set: write only if the entry's version is still C{version}.

        @return: L{Deferred} firing with the new L{Entry}; fails with
            L{VersionConflict} (also when the key is absent).
        """

    def delete(key, version=None):
        """
        Delete one entry (not its subtree).  With C{version}, only if the entry
        still has that version.

        @return: L{Deferred} firing with C{True} if something was deleted,
            C{False} if the key was absent and no version was given; fails with
            L{VersionConflict} when C{version} does not match (or the key is
            absent and a version was given).
        """

    def transaction(ops):
        """
        Apply a list of L{Check}, L{Put}, L{Create} and L{Delete} ops, all or
        nothing; at most 64 ops.

        @return: L{Deferred} firing with a list holding, per op, the new
            L{Entry} (Put, Create), C{True} (Delete) or C{None} (Check); fails
            with the first failing op's error (L{VersionConflict},
            L{KeyExists}) whose C{index} is that op's position, and nothing is
            written.  L{InvalidTransaction} for more than 64 ops.
        """

    def watch(prefix, callback):
        """
        Watch a subtree.  C{callback(snapshot)} is first called with the
        current C{{key: Entry}} of the subtree, then with a fresh snapshot after
        changes.  Changes may be coalesced (latest wins) but the final state is
        always delivered, also after the store reconnects.  Calls never overlap:
        if C{callback} returns a L{Deferred}, the next call waits for it.

        @return: an L{IWatch} (synchronously).
        """

    def session(ttl):
        """
        Open a session that keeps itself alive while this process runs and
        expires C{ttl} seconds after it stops.

        @return: L{Deferred} firing with an L{ISession}.
        """

    def close():
        """
        Release connections, end this store's sessions (deleting their
        ephemeral keys) and stop its watches.

        @return: L{Deferred} firing with C{None}.
        """


class ISession(Interface):
    """
    A liveness lease: ephemeral keys and locks live exactly as long as it.
    """

    id = Attribute("An opaque string naming the session.")
    ttl = Attribute("Seconds after the last heartbeat until the session expires.")
    lost = Attribute("True once the session has expired or been closed.")

    def createEphemeral(key, value):
        """
        Create a key owned by this session; it vanishes when the session ends.

        @return: L{Deferred} firing with the L{Entry}; fails with L{KeyExists}
            or L{SessionLost}.
        """

    def lock(key, value=b""):
        """
        Take the lock C{key} (an ephemeral key holding C{value}).

        @return: L{Deferred} firing with an L{ILock}; fails with
            L{AlreadyLocked} when another session holds it, or L{SessionLost}.
        """

    def whenLost():
        """
        @return: a new L{Deferred} firing with C{None} when the session has
            expired or was closed (immediately if it already has).
        """

    def close():
        """
        End the session now, deleting its ephemeral keys and locks.

        @return: L{Deferred} firing with C{None}.
        """


class ILock(Interface):
    """
    A held lock.  A lock protects work; every write made under it should also
    carry a version check, e.g. C{Check(lock.key, lock.version)} in a
    transaction, because a lock alone is unsafe.
    """

    key = Attribute("The lock's key.")
    version = Attribute("Version of the lock entry, for Check ops.")

    def release():
        """
        Release the lock if this session still holds it.

        @return: L{Deferred} firing with C{None}.
        """


class IWatch(Interface):
    """
    A running watch.
    """

    def cancel():
        """
        Stop the watch; the callback is not called again.
        """
