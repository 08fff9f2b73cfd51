# -*- test-case-name: tests.test_agent_crashloop -*-
"""
Crash loops, visible: every C{interval} seconds (on the injected clock) the
agent reads the restart counts its supervisor keeps for each service
(L{ServiceStatus<p2twisted.agent.interfaces.ServiceStatus>}: restarts, quick
exits in a row, last exit) and merges them into the pod's record
C{status/pods/<node>/<pod>}, which the pod's worker writes:

    restarts     restarts of the pod's services since their definition
                 last changed (sum over the services)
    crash_loop   C{None}, or C{{"restarts", "seconds", "last_exit", "delay",
                 "service", "text"}} of its worst crash-looping service;
                 C{text} reads C{crash-looping (N restarts in M s, last exit
                 3)}

The merge is a read-modify-write with a version check (the record's other
fields stay as the worker wrote them), and only into an existing record: a
pod's record is created by its worker and removed with the pod.  The
worker's own writes keep these fields (L{preservingWrite}).  The record is a
L{p2twisted.records.PodStatus}.
"""

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from p2twisted.agent.layout import podServices
from p2twisted.agent.supervisors import crashLoop, crashLoopText
from p2twisted.errors import KeyExists, StoreError, VersionConflict
from p2twisted.records import PodStatus, readable
from p2twisted.store import keys

log = Logger()

#: Seconds between two looks at the supervisor's counts.
INTERVAL = 5.0

#: Read-modify-write attempts before a round gives up on one record.
ATTEMPTS = 5


def podCounts(statuses, now):
    """
    @param statuses: the L{ServiceStatus} of each of a pod's services.
    @return: C{{"restarts", "crash_loop"}} of the pod (see the module
        docstring).
    """
    restarts = 0
    worst = None
    for status in statuses:
        restarts += status.restarts
        loop = crashLoop(status, now)
        if loop is not None and (worst is None or loop["restarts"] > worst["restarts"]):
            worst = dict(loop, service=status.name)
    if worst is not None:
        worst["text"] = crashLoopText(worst)
    return {"restarts": restarts, "crash_loop": worst}



@defer.inlineCallbacks
def mergeFields(store, key, fields):
    """
    Merge the counts C{fields} (C{{"restarts", "crash_loop"}}) into the pod
    status at C{key} with a version-checked read-modify-write, if the record
    exists and differs.

    @return: L{Deferred} firing with whether it was written, or C{None}
        when every attempt met a concurrent write.
    """
    for _ in range(ATTEMPTS):
        entry = yield store.get(key)
        status = readable(PodStatus, entry)
        if status is None:
            return False
        merged = status.withCounts(fields["restarts"], fields["crash_loop"])
        if merged == status:
            return False
        try:
            yield store.cas(key, merged.toBytes(), entry.version)
        except VersionConflict:
            continue
        return True
    return None


#: For L{preservingWrite}: the caller expects no record at the key.
ABSENT = object()


@defer.inlineCallbacks
def preservingWrite(store, key, status, known=None):
    """
    Write the L{PodStatus} C{status} at C{key} (as C{put} would), keeping the
    restart counts of the record it replaces unless it has its own.

    @param known: the L{Entry} at C{key} as the caller last wrote it, or
        L{ABSENT} if it expects none: its first attempt replaces that one
        (creates one) without reading it; if another wrote since, its
        version says so and it is read.  C{None}: read it first.
    @return: L{Deferred} firing with the new L{Entry}.
    """
    for _ in range(ATTEMPTS):
        if known is None:
            entry = yield store.get(key)
        else:
            entry, known = (None if known is ABSENT else known), None
        old = readable(PodStatus, entry)
        merged = status
        if old is not None and old.counted and not status.counted:
            merged = status.withCounts(old.restarts, old.crash_loop)
        try:
            if entry is None:
                return (yield store.create(key, merged.toBytes()))
            return (yield store.cas(key, merged.toBytes(), entry.version))
        except (VersionConflict, KeyExists):
            continue
    return (yield store.put(key, status.toBytes()))


class CrashLoopMonitor(TimerService):
    """
    Publishes each pod's restart counts and crash loop in its status record.

    @param supervisor: the agent's L{ISupervisor}.
    @param clock: an L{IReactorTime}; also the time crash loops are measured
        against (the supervisors report Unix times with a real reactor).
    """

    def __init__(self, store, node, clock, supervisor, interval=INTERVAL):
        TimerService.__init__(self, interval, self.checkAll)
        self.store = store
        self.node = node
        self.clock = clock
        self.supervisor = supervisor
        self.interval = interval
        #: C{{pod_id: fields}} last published.
        self.published = {}

    @defer.inlineCallbacks
    def checkAll(self):
        """
        Read every service's counts once and merge what changed into the
        pods' records.

        @return: L{Deferred} firing when done; never failing.
        """
        try:
            names = yield self.supervisor.services()
            pods = sorted({name.split("__", 1)[0] for name in names if "__" in name})
            now = self.clock.seconds()
            for podId in pods:
                statuses = []
                for name in podServices(names, podId):
                    status = yield self.supervisor.status(name)
                    if status is not None:
                        statuses.append(status)
                fields = podCounts(statuses, now)
                yield self._publish(podId, fields)
            for podId in set(self.published) - set(pods):
                del self.published[podId]
        except StoreError as e:
            log.warn("cannot publish restart counts: {error}", error=str(e), node=self.node)
        except Exception:
            log.failure("reading restart counts failed", node=self.node)

    @defer.inlineCallbacks
    def _publish(self, podId, fields):
        # The crash loop's seconds change every round: compare without them,
        # but write them whenever something else changes.
        def stable(f):
            loop = f["crash_loop"]
            return (f["restarts"], None if loop is None else
                    dict(loop, seconds=None, text=None))
        last = self.published.get(podId)
        key = keys.status("pods", self.node, podId)
        written = yield mergeFields(self.store, key, fields) if (
            last is None or stable(last) != stable(fields)) else self._check(key, fields)
        if written is None:
            # Not published: the next round tries again.
            log.warn("pod {pod}: restart counts not published (concurrent writes)",
                     pod=podId, node=self.node)
            return
        if written:
            loop = fields["crash_loop"]
            if loop is not None and (last is None or last["crash_loop"] is None):
                log.warn("pod {pod}: service {service} is {text}", pod=podId,
                         service=loop["service"], text=loop["text"], node=self.node,
                         event="crash-loop")
        self.published[podId] = fields

    @defer.inlineCallbacks
    def _check(self, key, fields):
        """
        Rewrite the fields only if the record lost them (an older worker, or
        one written meanwhile without them).
        """
        status = readable(PodStatus, (yield self.store.get(key)))
        if status is None or status.counted:
            return False
        return (yield mergeFields(self.store, key, fields))
