# -*- test-case-name: tests.test_records_controllers -*-
"""
The read model: typed records for every store value more than one process
reads, each with C{fromEntry(key, entry)} and C{toBytes()}.

(Stand-in written by the orchestration branch; the read-model branch's
version of this module wins at merge and re-exports L{controllers}.)
"""

from p2twisted.errors import StoreError


class CorruptRecord(StoreError):
    """
    A store value is not the record its key says it holds.  The message names
    the key and what is wrong; nothing reads such a record as a default.
    """

    summary = "corrupt record"

    def __init__(self, key, reason, backend=None):
        StoreError.__init__(self, key, backend, "%s; fix or delete the entry" % (reason,))


from p2twisted.records.controllers import AuditEvent, ReplicationController, Roll  # noqa: E402

__all__ = ["AuditEvent", "CorruptRecord", "ReplicationController", "Roll"]
