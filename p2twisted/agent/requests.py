# -*- test-case-name: tests.test_agent_requests -*-
"""
Requests to a node's agent: C{requests/<node>/<id>}, written by C{p2 run}
(run a template task of an installed pod) and C{p2 logs} (read a pod's
logs), carried out by that node's agent and answered in the same key.

A request's lifecycle, every step a compare-and-set on its key::

    pending --claimed by the agent--> running --answered--> done | failed
    pending --its deadline passed before an agent took it--> expired
    running, claimed by an agent process that is gone --> failed

Requesters delete the key once they have read the answer.  Deleting it
before that withdraws the request: a running task is killed (a requester that
gives up or is interrupted stops the work it asked for).  Requests left
behind (a requester that crashed) are deleted L{RETAIN} seconds after they
ended.  A request is never run twice: an agent that restarts
while a task runs marks it failed, outcome unknown, rather than running it
again.

The value is a L{p2twisted.records.Request}: JSON C{kind}, C{state},
C{created} and C{deadline} (epoch seconds), then the kind's fields
(L{p2twisted.agent.tasks}); the answer adds C{agent}, C{started},
C{finished}, and C{error} or the kind's results.

Under a C{keyring} or C{user} auth policy a request must be signed by its
sender, and its signer allowed to deploy as the user the pod's tasks run as
(its C{run_as}, or the agent's own user when the agent is not root;
L{p2twisted.auth.requestsig}); a refused one is answered C{failed} with
the reason, and nothing runs.
"""

import os
import uuid

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from p2twisted.agent.runtime import podUser
from p2twisted.auth.requestsig import SIGNED_FIELDS, SeenRequests, authorizeRequest
from p2twisted.errors import P2Error, StoreError, VersionConflict
from p2twisted.records import DONE, EXPIRED, FAILED, PENDING, RUNNING, CorruptRecord, Request
from p2twisted.store import keys
from p2twisted.store.common import MAX_VALUE

log = Logger()

#: Seconds an ended request stays in the store if its requester did not delete it.
RETAIN = 600.0

#: Seconds between two full reads of this node's requests (watches are hints).
RESCAN = 30.0

#: How many tasks run at once; the others wait, already claimed.
CONCURRENCY = 4

#: The kinds of request answered at once, outside that limit (cheap reads).
UNLIMITED = ("logs",)

#: Seconds a requester's clock may be ahead of this agent's: a pending request
#: expires only this long after its deadline.
CLOCK_SLACK = 300.0

#: The text fields cut (their start dropped) to keep an answer within the store's limit.
_CUT = "[... %d characters cut ...]\n"


def _encode(record):
    return Request(record).toBytes()


def fit(record, limit=MAX_VALUE - 1024):
    """
    @return: C{record} encoded, its longest texts (C{output}, log data) cut
        from the start until it fits in C{limit} bytes.  If it still does
        not fit with those texts cut to nothing, it is returned as it then
        is (and the store refuses it).
    """
    value = _encode(record)
    texts = [(record, "output")] if isinstance(record.get("output"), str) else []
    for entry in (record.get("logs") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("data"), str):
            texts.append((entry, "data"))
    # [holder, field, the original text, how many of its characters are cut]
    cuts = [[holder, field, holder[field], 0] for holder, field in texts]
    while len(value) > limit:
        cut = max(cuts, key=lambda c: len(c[2]) - c[3], default=None)
        if cut is None or len(cut[2]) == cut[3]:
            break  # nothing left to cut
        holder, field, text, dropped = cut
        dropped += (len(text) - dropped) - (len(text) - dropped) // 2
        cut[3] = dropped
        holder[field] = _CUT % (dropped,) + text[dropped:]
        value = _encode(record)
    return value


class RequestRunner(service.Service):
    """
    Carries out the requests to one node.

    @param handlers: C{{kind: callable(request dict)}} returning a
        L{Deferred} (or a value) with the answer's fields; failing with
        L{P2Error} gives a C{failed} answer with that message.
    @param clock: an L{IReactorTime}; C{seconds()} is wall-clock time
        (requests carry epoch deadlines).
    @param seenPath: the file keeping the signed requests carried out until
        their deadlines, so that one written again is refused after a
        restart too (L{SeenRequests}), or C{None}.
    @param runsAs: C{callable(manifest)} giving the account an installed
        pod's tasks run as (L{IPodOperations.runsAs}); default: its
        C{run_as} if this process is root, else this process's user.
    """

    def __init__(self, store, node, clock, handlers, concurrency=CONCURRENCY,
                 retain=RETAIN, rescan=RESCAN, auth=None, podRoot=None,
                 seenPath=None, runsAs=None):
        self.store = store
        self.node = node
        self.clock = clock
        self.handlers = handlers
        self.retain = retain
        self.rescan = rescan
        #: Marks the requests this agent process claimed.
        self.token = uuid.uuid4().hex
        #: C{{key: Deferred}} of the requests being carried out (C{None}
        #: while its claim is being started).
        self.active = {}
        #: The keys of the last watched snapshot.
        self._watched = set()
        self._limit = defer.DeferredSemaphore(concurrency)
        self._watch = None
        self._loop = None
        #: The auth policy requests are held to, or C{None}.
        self.auth = auth
        self.podRoot = podRoot
        #: C{manifest -> account} its tasks run as, which signers of its
        #: requests must be allowed to deploy as (L{IPodOperations.runsAs}).
        self.runsAs = runsAs if runsAs is not None else (
            lambda manifest: podUser(manifest, os.geteuid() == 0))
        self._seen = SeenRequests(seenPath)

    def startService(self):
        service.Service.startService(self)
        self._watch = self.store.watch(keys.requestNode(self.node), self._changed)
        self._loop = task.LoopingCall(self.scan)
        self._loop.clock = self.clock
        self._loop.start(self.rescan, now=False)

    def stopService(self):
        """
        Stop taking requests and end the running ones (their tasks are
        killed; their requests are answered C{failed} if the store is still
        there).
        """
        service.Service.stopService(self)
        if self._watch is not None:
            self._watch.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        running = [d for d in self.active.values() if d is not None]
        for d in running:
            d.cancel()
        return defer.DeferredList(running, consumeErrors=True)

    @defer.inlineCallbacks
    def scan(self):
        """
        Read this node's requests in full: take the pending ones and delete
        the ones ended more than C{retain} seconds ago.
        """
        try:
            snapshot = yield self.store.list(keys.requestNode(self.node))
        except StoreError as e:
            log.warn("cannot read requests: {error}", error=str(e), node=self.node)
            return
        now = self.clock.seconds()
        for key, entry in sorted(snapshot.items()):
            try:
                request = Request.fromEntry(key, entry)
            except CorruptRecord:
                continue
            ended = request.number("finished") or request.number("created")
            if request.ended and ended is not None and now - ended > self.retain:
                try:
                    yield self.store.delete(key, entry.version)
                except StoreError:
                    pass
        self._changed(snapshot, watched=False)

    def _changed(self, snapshot, watched=True):
        """
        Act on a snapshot of this node's requests: take the pending ones,
        expire the late ones, fail the ones left running by a previous agent
        (or by this one, having lost track of them), and cancel those whose
        requester deleted them: requests in an earlier watched snapshot but
        not in this one (watched snapshots never go back in time; a listing
        for a rescan may be older than one).
        """
        if not self.running:
            return
        now = self.clock.seconds()
        prefix = keys.requestNode(self.node)
        if watched:
            for key in sorted((set(self.active) & self._watched) - set(snapshot)):
                if self.active[key] is not None:
                    log.info("request {key} was withdrawn: stopping it", key=key)
                    self.active[key].cancel()
            self._watched = set(snapshot)
        for key, entry in sorted(snapshot.items()):
            if key in self.active or keys.child(prefix, key) is None:
                continue
            if key != keys.request(self.node, keys.child(prefix, key)):
                continue  # not ours to read: nothing below a request
            try:
                record = Request.fromEntry(key, entry).fields
            except CorruptRecord as e:
                self._answer(key, entry.version, {
                    "state": FAILED, "finished": now,
                    "error": "the request is not valid JSON with a state: %s" % (e.reason,)})
                continue
            state = record["state"]
            if state == PENDING:
                deadline = record.get("deadline")
                if isinstance(deadline, (int, float)) and now > deadline + CLOCK_SLACK:
                    self._answer(key, entry.version, dict(
                        record, state=EXPIRED, finished=now,
                        error="no agent took it before its deadline"))
                else:
                    self.active[key] = None  # its claim is on the way
                    d = self._carryOut(key, entry.version, record)
                    if key in self.active:  # else it is already over
                        self.active[key] = d
            elif state == RUNNING:
                self._answer(key, entry.version, dict(
                    record, state=FAILED, finished=now,
                    error="the agent stopped while this ran; its outcome is unknown"
                    if record.get("agent") != self.token else
                    "the agent lost track of this while it ran; its outcome is unknown"))

    def _answer(self, key, version, record):
        """
        Write C{record} over the request at C{version}; a request deleted or
        changed meanwhile (its requester gave up) is left alone.
        """
        d = self.store.cas(key, fit(record), version)

        def failed(f):
            if f.check(VersionConflict):
                log.info("request {key} went away before its answer was written", key=key)
            else:
                log.warn("cannot answer request {key}: {error}", key=key,
                         error=f.getErrorMessage())
        return d.addErrback(failed)

    @defer.inlineCallbacks
    def _carryOut(self, key, version, record):
        try:
            claimed = dict(record, state=RUNNING, agent=self.token,
                           started=self.clock.seconds())
            try:
                entry = yield self.store.cas(key, _encode(claimed), version)
            except (StoreError, defer.CancelledError) as e:
                # Gone, changed, withdrawn, or the store is away: the next
                # snapshot or scan decides.
                log.info("could not claim request {key}: {error}", key=key,
                         error=str(e) or type(e).__name__)
                return
            try:
                record, signer = yield self._authorize(key, record)
            except P2Error as e:
                log.warn("request {key} {error}", key=key, error=str(e), node=self.node,
                         event="request-refused")
                yield self._answer(key, entry.version, dict(
                    claimed, state=FAILED, finished=self.clock.seconds(), error=str(e)))
                return
            if signer is not None:  # the answer shows what was signed, and run
                claimed = dict(claimed, **{name: record[name] for name in SIGNED_FIELDS
                                           if name in record})
            try:
                if record.get("kind") in UNLIMITED:
                    answer = yield self._handle(record)
                else:
                    answer = yield self._limit.run(self._handle, record)
                if signer is not None:
                    answer = dict(answer, signer=signer)
            except defer.CancelledError:  # stopped while waiting for its turn
                answer = {"state": FAILED, "error": "the agent stopped before this ran"}
            yield self._answer(key, entry.version,
                               dict(claimed, finished=self.clock.seconds(), **answer))
        finally:
            self.active.pop(key, None)

    @defer.inlineCallbacks
    def _authorize(self, key, record):
        """
        Hold C{record} to the auth policy, if signed requests are needed.

        @return: L{Deferred} firing with C{(fields to act on, signer dict or
            None)}.
        @raise P2Error: why it is refused.
        """
        if self.auth is None or not self.auth.signedRequests:
            return record, None

        def runAsOf(podId):
            from p2twisted.agent.tasks import installedManifest
            return self.runsAs(installedManifest(self.podRoot, podId)[1])
        fields, decision = yield authorizeRequest(
            self.auth, key, record, runAsOf, self.clock.seconds(), CLOCK_SLACK, self._seen)
        return fields, decision.toDict()["signer"]

    @defer.inlineCallbacks
    def _handle(self, record):
        if not self.running:  # its turn came while the agent stops
            return {"state": FAILED, "error": "the agent stopped before this ran"}
        handler = self.handlers.get(record.get("kind"))
        if handler is None:
            return {"state": FAILED, "error": "unknown request kind %r; this agent takes %s" % (
                record.get("kind"), ", ".join(sorted(self.handlers)))}
        try:
            answer = yield handler(record)
        except defer.CancelledError:
            return {"state": FAILED, "error": "the agent stopped while this ran"}
        except P2Error as e:
            return {"state": FAILED, "error": str(e)}
        except Exception as e:
            log.failure("request {kind} failed", kind=record.get("kind"))
            return {"state": FAILED, "error": "internal error: %s" % (e,)}
        return dict({"state": DONE}, **answer)
