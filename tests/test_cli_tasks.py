"""
Tests for L{p2twisted.cli.agentrequests.ask}: asking a node's agent through
the store and waiting for its answer -- against a fake agent driven by the
test, then against a real L{RequestRunner} on the same store (fake handlers
and a fake clock, then the real handlers running a real task).
"""

import os

from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from p2twisted.agent.pods import p2execCommand
from p2twisted.agent.requests import RequestRunner
from p2twisted.agent.tasks import RequestHandlers
from p2twisted.cli.agentrequests import PICKUP, ask
from p2twisted.errors import P2Error
from p2twisted.store import keys
from p2twisted.store.memory import MemoryStore
from tests.test_agent_requests import FakeHandler, decode, encode, layOutPod

NODE = "n1"

REQUEST = {"kind": "task", "pod": "web", "task": "install", "args": ["requests==2.0"]}


class TriggerClock(MemoryReactorClock):
    """
    A clock whose system event triggers can also be removed.
    """

    def addSystemEventTrigger(self, phase, eventType, f, *args, **kw):
        MemoryReactorClock.addSystemEventTrigger(self, phase, eventType, f, *args, **kw)
        return (phase, eventType, self.triggers[phase][eventType][-1])

    def removeSystemEventTrigger(self, triggerID):
        phase, eventType, trigger = triggerID
        self.triggers[phase][eventType].remove(trigger)


class AskTestMixin(object):

    def setUp(self):
        self.clock = TriggerClock()
        self.store = MemoryStore(clock=self.clock)
        self.successResultOf(self.store.put(keys.machine(NODE), b'{"node": "n1"}'))
        self.states = []

    def ask(self, timeout=100.0, node=NODE, request=REQUEST):
        return ask(self.store, self.clock, node, dict(request), timeout,
                   onState=self.states.append)

    def requests(self, node=NODE):
        """
        @return: C{{key: request}} of C{node}'s requests in the store.
        """
        snapshot = self.successResultOf(self.store.list(keys.requestNode(node)))
        return {key: decode(entry.value) for key, entry in snapshot.items()}

    def theRequest(self):
        [(key, request)] = self.requests().items()
        return key, request

    def agentWrites(self, **fields):
        """
        Do what an agent does to the one request: change C{fields}.
        """
        key, _ = self.theRequest()
        entry = self.successResultOf(self.store.get(key))
        record = dict(decode(entry.value), **fields)
        self.successResultOf(self.store.cas(key, encode(record), entry.version))


class AskTests(AskTestMixin, unittest.SynchronousTestCase):

    def test_withdrawnAtShutdown(self):
        """
        When the reactor stops while waiting (Ctrl-C), the request is
        deleted first, which withdraws it (and the fired trigger is not
        removed again: the reactor would raise).
        """
        d = self.ask()
        [(trigger, args, kwargs)] = self.clock.triggers["before"]["shutdown"]
        self.assertEqual(len(self.requests()), 1)
        self.successResultOf(defer.maybeDeferred(trigger, *args, **kwargs))
        self.assertEqual(self.requests(), {})
        self.failureResultOf(d, P2Error)
    """
    L{ask} against a fake agent.
    """

    def test_noAgent(self):
        """
        Asking a node without a registered agent fails at once, naming the
        node and how to start one, and writes no request.
        """
        f = self.failureResultOf(self.ask(node="n2"), P2Error)
        self.assertIn("no agent is running on node n2", str(f.value))
        self.assertIn("'p2 start'", str(f.value))
        self.assertEqual(self.requests("n2"), {})

    def test_writesRequest(self):
        """
        The request is written pending under the node, with when it was
        made, the deadline for an agent to take it, and who asked.
        """
        d = self.ask()
        key, request = self.theRequest()
        self.assertTrue(key.startswith(keys.requestNode(NODE) + "/"), key)
        self.assertEqual({k: request[k] for k in REQUEST}, REQUEST)
        self.assertEqual(request["state"], "pending")
        self.assertAlmostEqual(request["deadline"] - request["created"], PICKUP)
        self.assertIn("@", request["requester"])
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)

    def test_answered(self):
        """
        The answer is returned once the request ends; C{onState} saw each
        state; the request is deleted.
        """
        d = self.ask()
        self.agentWrites(state="running", agent="a1")
        self.clock.advance(30)
        self.assertNoResult(d)
        self.agentWrites(state="done", output="installed\n", exit_code=0)
        answer = self.successResultOf(d)
        self.assertEqual((answer["state"], answer["output"], answer["exit_code"]),
                         ("done", "installed\n", 0))
        self.assertEqual(self.states, ["running", "done"])
        self.assertEqual(self.requests(), {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.clock.triggers["before"]["shutdown"], [])

    def test_failedAnswer(self):
        """
        A C{failed} answer is returned, not raised: it is the node's answer.
        """
        d = self.ask()
        self.agentWrites(state="running")
        self.agentWrites(state="failed", error="pod web has no executable tasks/install")
        answer = self.successResultOf(d)
        self.assertEqual((answer["state"], answer["error"]),
                         ("failed", "pod web has no executable tasks/install"))
        self.assertEqual(self.requests(), {})

    def test_pickupTimeout(self):
        """
        An agent that does not take the request within L{PICKUP} seconds
        fails it, naming the node; the request is deleted.
        """
        d = self.ask(timeout=1000)
        self.clock.advance(PICKUP - 1)
        self.assertNoResult(d)
        self.clock.advance(1)
        f = self.failureResultOf(d, P2Error)
        self.assertEqual(str(f.value), "the agent of n1 did not take the request within 60s; "
                                       "is it running? see 'p2 status'")
        self.assertEqual(self.requests(), {})

    def test_answerTimeout(self):
        """
        Once taken, the agent has C{timeout} seconds (from then) to answer.
        """
        d = self.ask(timeout=100)
        self.clock.advance(50)
        self.agentWrites(state="running")
        self.clock.advance(PICKUP + 10)
        self.assertNoResult(d)
        self.clock.advance(100 - PICKUP - 10 - 1)
        self.assertNoResult(d)
        self.clock.advance(1)
        f = self.failureResultOf(d, P2Error)
        self.assertEqual(str(f.value), "no answer from the agent of n1 within 100s")
        self.assertEqual(self.requests(), {})
        self.assertEqual(self.states, ["running"])

    def test_expired(self):
        """
        A request the agent found expired is an error.
        """
        d = self.ask()
        self.agentWrites(state="expired", error="no agent took it before its deadline")
        f = self.failureResultOf(d, P2Error)
        self.assertEqual(str(f.value), "the agent of n1 did not take the request before "
                                       "its deadline")
        self.assertEqual(self.requests(), {})

    def test_deletedMeanwhile(self):
        d = self.ask()
        key, _ = self.theRequest()
        self.successResultOf(self.store.delete(key))
        f = self.failureResultOf(d, P2Error)
        self.assertEqual(str(f.value), "the request %s was deleted before the agent of n1 "
                                       "answered it" % (key,))

    def test_cancelled(self):
        """
        Cancelling the wait deletes the request (so no agent takes it) and
        stops the timers.
        """
        d = self.ask()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.requests(), {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_otherRequestsIgnored(self):
        """
        Other requests to the node, answered or not, do not end this one.
        """
        other = keys.request(NODE, "other")
        self.successResultOf(self.store.create(other, encode({"state": "done"})))
        d = self.ask()
        self.assertNoResult(d)
        self.successResultOf(self.store.delete(other))
        self.assertNoResult(d)
        self.clock.advance(PICKUP)
        self.failureResultOf(d, P2Error)


class AskRunnerTests(AskTestMixin, unittest.SynchronousTestCase):
    """
    L{ask} answered by a real L{RequestRunner} on the same store.
    """

    def setUp(self):
        AskTestMixin.setUp(self)
        self.handler = FakeHandler()
        self.runner = RequestRunner(self.store, NODE, self.clock,
                                    {"task": self.handler, "logs": self.handler})
        self.runner.startService()

    def tearDown(self):
        if self.runner.running:
            self.successResultOf(self.runner.stopService())

    def test_answered(self):
        d = self.ask()
        [(request, running)] = self.handler.calls
        self.assertEqual({k: request[k] for k in REQUEST}, REQUEST)
        self.assertEqual(self.states, ["running"])
        self.clock.advance(PICKUP + 30)  # the agent has taken it: no pickup timeout
        self.assertNoResult(d)
        running.callback({"output": "ok\n", "exit_code": 0})
        answer = self.successResultOf(d)
        self.assertEqual((answer["state"], answer["output"], answer["agent"]),
                         ("done", "ok\n", self.runner.token))
        self.assertEqual(self.states, ["running", "done"])
        self.assertEqual(self.requests(), {})
        self.assertEqual(self.runner.active, {})

    def test_unknownKind(self):
        answer = self.successResultOf(self.ask(request={"kind": "reboot"}))
        self.assertEqual(answer["state"], "failed")
        self.assertIn("unknown request kind 'reboot'", answer["error"])
        self.assertEqual(self.requests(), {})

    def test_agentStops(self):
        """
        A request whose agent stops while it runs is answered C{failed}.
        """
        d = self.ask()
        self.successResultOf(self.runner.stopService())
        answer = self.successResultOf(d)
        self.assertEqual((answer["state"], answer["error"]),
                         ("failed", "the agent stopped while this ran"))
        self.assertEqual(self.requests(), {})

    def test_requesterGivesUp(self):
        """
        A requester that gives up deletes its request, which stops the
        task; nothing is written back.
        """
        d = self.ask(timeout=10)
        self.clock.advance(10)
        self.failureResultOf(d, P2Error)
        self.assertEqual(self.handler.cancelled, [self.handler.calls[0][0]])
        self.assertEqual(self.requests(), {})
        self.assertEqual(self.runner.active, {})


class AskRealTaskTests(unittest.TestCase):
    """
    L{ask} answered by an agent's L{RequestRunner} with its real handlers:
    a real task of a pod laid out on disk, run through C{p2-exec}.
    """

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        podRoot = os.path.join(self.base, "pods")
        stateDir = os.path.join(self.base, "state")
        os.makedirs(stateDir)
        layOutPod(podRoot)
        self.store = MemoryStore(clock=reactor)
        handlers = RequestHandlers(reactor, podRoot, stateDir, p2execCommand(), isRoot=False)
        self.runner = RequestRunner(self.store, NODE, reactor, handlers.handlers())
        self.runner.startService()
        self.addCleanup(self.runner.stopService)
        return self.store.put(keys.machine(NODE), b"{}")

    @defer.inlineCallbacks
    def test_task(self):
        states = []
        answer = yield ask(self.store, reactor, NODE,
                           {"kind": "task", "pod": "web", "task": "hello", "args": ["x y"]},
                           30.0, onState=states.append).addTimeout(30, reactor)
        self.assertEqual((answer["state"], answer["exit_code"]), ("done", 0))
        self.assertIn("pod=web greeting=hi there", answer["output"])
        self.assertIn("arg=[x y]\n", answer["output"])
        self.assertEqual(states[-1], "done")
        self.assertEqual((yield self.store.list(keys.requestNode(NODE))), {})

    @defer.inlineCallbacks
    def test_taskFails(self):
        answer = yield ask(self.store, reactor, NODE,
                           {"kind": "task", "pod": "web", "task": "fail"},
                           30.0).addTimeout(30, reactor)
        self.assertEqual((answer["state"], answer["exit_code"], answer["output"]),
                         ("failed", 3, "oops\n"))

    @defer.inlineCallbacks
    def test_refused(self):
        answer = yield ask(self.store, reactor, NODE,
                           {"kind": "task", "pod": "web", "task": "../../bin/sh"},
                           30.0).addTimeout(30, reactor)
        self.assertEqual((answer["state"], answer["error"]),
                         ("failed", "'../../bin/sh' is not a task name"))

