# -*- test-case-name: tests.test_agent_sync -*-
"""
What each sync of the agent (L{p2twisted.agent.service.AgentService}) reads:
this node's intent and reality, each read from the store only when it must
be.

  - Intent: the snapshot the intent watch delivered (L{IStore.watch}: the
    subtree's latest state, latest wins, on every backend), once the watch
    has caught up with the last listing (a resync's: the truth).  A
    delivery may have been read before a change a listing saw and handed
    over after it (the watch learns of changes later than a read sees
    them), so acted on it would undo what the listing did: deploy a pod
    unscheduled since, or an older version.  So after a listing a delivery
    is acted on only once one equal to it came (versions change on every
    write, so equal snapshots are one state of the store, and every later
    delivery is read after it); until then each is listed afresh.
  - Reality: as the agent last read it and wrote it since (it is reality's
    only writer for its node), listed again at a resync, at the first sync,
    after a new session, when the node marker went, came or changed (the
    store may have been wiped or restored), after a failed sync, and after
    a write that failed (it met someone else's change, or may have been
    applied: the workers' writes all carry a version check, so a stale copy
    is caught there, never acted on twice).
    Without the marker it is not read at all: nothing is decided on it.

A removal is decided only by a resync (the agent's), on intent and reality
as listed: a delivery may have been read long before it arrives (before
the marker went within the grace, say), and what the failsafe calls an
orphan depends on reality.
"""

from twisted.internet import defer

from p2twisted.records import markerIdentity
from p2twisted.store import keys

#: Told to L{NodeReads.realityChanged} when a write of reality failed (it
#: met another's change, or its outcome is unknown).
STALE = object()


def _firstError(failure):
    """
    @return: the failure inside a L{defer.FirstError}, for callers that look
        at what failed.
    """
    failure.trap(defer.FirstError)
    return failure.value.subFailure


class NodeReads(object):
    """
    This node's intent and reality for the agent's syncs (one at a time).

    @param store: the L{IStore}.
    @param node: this node.
    """

    def __init__(self, store, node):
        self.store = store
        self.node = node
        #: The intent snapshot delivered last and not yet read; the last
        #: delivered and the last listed; whether the watch has caught up
        #: with that listing (its deliveries are as new as it or newer).
        self._delivered = None
        self._lastDelivered = self._lastListed = None
        self._caughtUp = True
        #: C{{key: Entry}}: reality as last read or as written since, or
        #: C{None} until it is read again.
        self._reality = None
        self._realityWrites = 0
        #: The identity of the node marker the last sync acted on.
        self._marker = None

    def delivered(self, snapshot):
        """
        The intent watch delivered C{snapshot}: the next L{read} that is not
        a resync takes it.
        """
        self._delivered = self._lastDelivered = snapshot
        if not self._caughtUp and snapshot == self._lastListed:
            self._caughtUp = True

    def read(self, resync):
        """
        Read intent and reality, at once when both must be read (one
        round-trip).

        @return: L{Deferred} firing with C{(intent, reality)}, each a
            C{{key: Entry}}; fails with the store's error.
        """
        delivered, self._delivered = self._delivered, None
        snapshot = None
        if not resync and delivered is not None and self._caughtUp:
            snapshot = delivered
            entry = snapshot.get(keys.intentNode(self.node))
            if entry is None or markerIdentity(entry) != self._marker:
                self.forgetReality()
            if entry is None:
                return defer.succeed((snapshot, {}))
        d = defer.gatherResults(
            [self._listIntent() if snapshot is None else defer.succeed(snapshot),
             self._readReality(resync)], consumeErrors=True).addErrback(_firstError)
        return d.addCallback(tuple).addErrback(self._failed)

    def synced(self, marker):
        """
        A sync acted on the node marker C{marker} (its identity, or C{None}
        when absent).
        """
        self._marker = marker

    def realityChanged(self, key, entry):
        """
        A worker (or an adoption) wrote reality at C{key}: C{entry} is the
        new L{Entry}, C{None} when it deleted it, or L{STALE} when its write
        failed (met someone else's change, or may have been applied: then
        reality is read again).
        """
        self._realityWrites += 1
        if entry is STALE:
            self.forgetReality()
        elif self._reality is not None:
            if entry is None:
                self._reality.pop(key, None)
            else:
                self._reality[key] = entry

    def forgetReality(self):
        """
        Read reality from the store at the next sync (e.g. a new session:
        it may have changed while the agent was away).
        """
        self._realityWrites += 1
        self._reality = None

    def _failed(self, failure):
        self.forgetReality()
        return failure

    def _listIntent(self):
        def answered(result):
            # A delivery during the listing may be older or newer than it:
            # caught up only if they are the same state.
            self._lastListed = result
            self._caughtUp = result == self._lastDelivered
            return result
        return self.store.list(keys.intentNode(self.node)).addCallback(answered)

    def _readReality(self, resync):
        if not resync and self._reality is not None:
            return defer.succeed(dict(self._reality))
        writes = self._realityWrites

        def read(entries):
            if self._realityWrites == writes:  # else it may miss a write: read again next time
                self._reality = dict(entries)
            return entries
        return self.store.list(keys.realityNode(self.node)).addCallback(read)
