# -*- test-case-name: tests.test_cli_tasks -*-
"""
Asking a node's agent to do something and waiting for its answer
(C{requests/<node>/<id>}, a L{p2twisted.records.Request}; the agent's side
is L{p2twisted.agent.requests}).
"""

import getpass
import socket
import time
import uuid

from twisted.internet import defer

from p2twisted.errors import P2Error, StoreError
from p2twisted.records import EXPIRED, PENDING, CorruptRecord, Request
from p2twisted.store import keys

#: Seconds an agent has to take a request before it expires.
PICKUP = 60.0


def requestId():
    """
    @return: a new request id, sorting by time.
    """
    return "%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), uuid.uuid4().hex[:12])


def requester():
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return "%s@%s" % (user, socket.gethostname())


class _Answer(object):
    """
    Follows one request's key until it ends: L{PICKUP} seconds for the
    agent to take it, then C{timeout} seconds for its answer.
    """

    def __init__(self, reactor, key, node, timeout, onState):
        self.reactor = reactor
        self.key = key
        self.node = node
        self.timeout = timeout
        self.onState = onState
        self.state = PENDING
        self.ended = defer.Deferred()
        self.timer = reactor.callLater(PICKUP, self._late)

    def changed(self, snapshot):
        if self.ended.called:
            return
        entry = snapshot.get(self.key)
        if entry is None:
            self._fail("the request %s was deleted before the agent of %s answered it"
                       % (self.key, self.node))
            return
        try:
            request = Request.fromEntry(self.key, entry)
        except CorruptRecord:
            return
        if request.state != self.state:
            if self.state == PENDING:
                self.timer.cancel()
                self.timer = self.reactor.callLater(self.timeout, self._late)
            self.state = request.state
            if self.onState is not None:
                self.onState(self.state)
        if request.ended:
            self.stop()
            self.ended.callback(request.fields)

    def _late(self):
        if self.state == PENDING:
            self._fail("the agent of %s did not take the request within %gs; is it running? "
                       "see 'p2 status'" % (self.node, PICKUP))
        else:
            self._fail("no answer from the agent of %s within %gs" % (self.node, self.timeout))

    def _fail(self, message):
        self.stop()
        self.ended.errback(P2Error(message))

    def stop(self):
        if self.timer.active():
            self.timer.cancel()


@defer.inlineCallbacks
def ask(store, reactor, node, request, timeout, onState=None, signer=None):
    """
    Write C{request} for C{node}'s agent and wait for the answer.

    @param request: the request's fields (C{kind} and the kind's own).
    @param timeout: seconds to wait once the agent has taken it.
    @param onState: called with each new state the request reaches.
    @param reactor: an L{IReactorTime} and L{IReactorCore}.
    @param signer: a L{p2twisted.auth.requestsig.RequestSigner} signing the
        request (agents under a C{keyring} or C{user} policy need it), or
        C{None}.
    @return: L{Deferred} firing with the answer (a dict whose C{state} is
        C{done} or C{failed}); the request is deleted from the store, also
        when this fails or is cancelled, or the reactor stops meanwhile
        (which withdraws it: its agent stops the task).
    @raise P2Error: when no agent of C{node} is registered, or it does not
        take the request within L{PICKUP} seconds, or does not answer
        within C{timeout}.
    """
    agent = yield store.get(keys.machine(node))
    if agent is None:
        raise P2Error("no agent is running on node %s (nothing at %s); start one there "
                      "with 'p2 start'" % (node, keys.machine(node)))
    key = keys.request(node, requestId())
    now = reactor.seconds()
    if signer is not None:
        from p2twisted.auth.requestsig import payload, withSignature
        data = payload(key, request, now + PICKUP)
        request = withSignature(request, data, signer.system, (yield signer.sign(data)))
        now = reactor.seconds()
    yield store.create(key, Request.new(request, now, now + PICKUP, requester()).toBytes())
    waiter = _Answer(reactor, key, node, timeout, onState)
    watch = store.watch(key, waiter.changed)
    # Interrupted (Ctrl-C stops the reactor), withdraw the request: its agent
    # stops the task rather than run it for nobody.
    withdrawn = []

    def withdraw():
        withdrawn.append(key)
        return store.delete(key).addErrback(lambda f: None)
    trigger = reactor.addSystemEventTrigger("before", "shutdown", withdraw)
    closing = False
    try:
        answer = yield waiter.ended
    except GeneratorExit:  # never resumed (the process exits): no more yields
        closing = True
        raise
    finally:
        if not withdrawn:  # a trigger that fired cannot be removed
            reactor.removeSystemEventTrigger(trigger)
        waiter.stop()
        watch.cancel()
        if not closing:
            try:
                yield store.delete(key)
            except StoreError:
                pass
    if answer["state"] == EXPIRED:
        raise P2Error("the agent of %s did not take the request before its deadline" % (node,))
    return answer
