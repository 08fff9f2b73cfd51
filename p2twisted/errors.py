# -*- test-case-name: tests.test_store_memory -*-
"""
Typed errors.

Every error a user can see is one line that says what failed, where, and what
to do.  Store errors name the key and the backend they came from.
"""


class P2Error(Exception):
    """
    Base of every error p2twisted raises on purpose.  C{str()} is the one line
    shown to a user.
    """


class UsageError(P2Error):
    """
    The user asked for something malformed (bad argument, bad file).
    """


class StoreError(P2Error):
    """
    A coordination-store operation failed.

    @ivar key: the key involved, or C{None}.
    @ivar backend: the backend's short name (C{"local"}, C{"zookeeper"}, ...).
    @ivar detail: what went wrong, in words.
    """

    #: What went wrong, used when no detail is given.
    summary = "store operation failed"

    def __init__(self, key=None, backend=None, detail=None, index=None):
        self.key = key
        self.backend = backend
        self.detail = detail or self.summary
        #: For errors raised by a transaction: the position of the failing op.
        self.index = index
        Exception.__init__(self, str(self))

    def __str__(self):
        where = []
        if self.key is not None:
            where.append("key %r" % (self.key,))
        if self.backend:
            where.append("%s store" % (self.backend,))
        text = self.detail
        if where:
            text = "%s (%s)" % (text, ", ".join(where))
        if self.index is not None:
            text += " [transaction op %d]" % (self.index,)
        return text


class InvalidKey(StoreError):
    summary = "invalid key"


class ValueTooLarge(StoreError):
    summary = "value too large"


class InvalidTransaction(StoreError):
    summary = "invalid transaction"


class StoreUnavailable(StoreError):
    summary = "store unavailable"


class VersionConflict(StoreError):
    summary = "version conflict: the entry changed since it was read"


class KeyExists(StoreError):
    summary = "key already exists"


class KeyNotFound(StoreError):
    summary = "no such key"


class AlreadyLocked(StoreError):
    summary = "already locked by another session"


class SessionLost(StoreError):
    summary = "session lost"


class ManifestError(P2Error):
    """
    A pod manifest is invalid.

    @ivar problems: every problem found, each C{"field.path: what is wrong"}.
    """

    def __init__(self, problems, source=None):
        self.problems = list(problems)
        self.source = source
        Exception.__init__(self, str(self))

    def __str__(self):
        prefix = "%s: " % (self.source,) if self.source else ""
        return prefix + "; ".join(self.problems)


class SelectorError(P2Error):
    """
    A label selector or label could not be parsed or is invalid.

    @ivar column: 1-based column of the problem in the selector, or C{None}.
    """

    def __init__(self, message, text=None, column=None):
        self.message = message
        self.text = text
        self.column = column
        Exception.__init__(self, str(self))

    def __str__(self):
        if self.column is None:
            return self.message
        return "%s at column %d of %r" % (self.message, self.column, self.text)


class AgentError(P2Error):
    """
    The agent could not do something to a pod; the message says what and why.
    """


class SupervisorError(AgentError):
    """
    A service could not be started, stopped or inspected.
    """


class ArtifactError(AgentError):
    """
    An artifact could not be fetched, verified or installed.
    """


class FetchError(ArtifactError):
    """
    Downloading an artifact failed (not found, timeout, refused).
    """


class DigestMismatch(ArtifactError):
    """
    An artifact's SHA-256 is not the one its manifest or digest file names.
    """


class ArtifactRejected(DigestMismatch):
    """
    An artifact's signature, or the signed digest file of its installed
    tree, was refused.  Like a digest mismatch: nothing of it is activated,
    what runs keeps running, and C{after_auth_fail} hooks run.
    """


class UnsafeArchive(ArtifactError):
    """
    An archive holds a member that would escape or subvert its install
    directory; the message names the member.
    """
