"""
Tests for requests to a node's agent (L{p2twisted.agent.requests}): the
request lifecycle on an in-memory store with a fake clock and fake handlers;
then the real handlers (L{p2twisted.agent.tasks}), which run a pod's tasks
through C{p2-exec} as real processes and read its log files
(L{p2twisted.agent.podlogs}); and cancelling a bounded command
(L{p2twisted.agent.process.runBounded}).
"""

import os
import re
import signal

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from p2twisted.agent import process, runtime, tasks
from p2twisted.agent import requests as requestsModule
from p2twisted.agent.layout import PodLayout
from p2twisted.agent.podlogs import MAX_READ, logFiles, readFrom
from p2twisted.agent.pods import p2execCommand
from p2twisted.agent.requests import CLOCK_SLACK, RequestRunner, fit
from p2twisted.records import CorruptRecord, Request
from p2twisted.agent.supervisors import processAlive as alive
from p2twisted.agent.tasks import RequestHandlers
from p2twisted.errors import AgentError, P2Error
from p2twisted.manifest import parseManifest
from p2twisted.store import keys
from p2twisted.store.common import MAX_VALUE
from p2twisted.store.memory import MemoryState, MemoryStore
from tests.store_contract import waitFor

NODE = "n1"

#: Where the fake clock starts: epoch seconds, as requests carry.
START = 1700000000.0

#: Seconds a real-process test waits for an expected event.
WAIT = 20.0



def encode(record):
    return Request(record).toBytes()


def decode(value):
    return Request.fromBytes("requests/n1/r", value).fields

class StateLog(object):
    """
    A watch on a node's requests recording, per key, each state it went
    through (C{None} once deleted).
    """

    def __init__(self, store, node=NODE):
        self.states = {}
        store.watch(keys.requestNode(node), self)

    def __call__(self, snapshot):
        for key, entry in snapshot.items():
            try:
                state = decode(entry.value)["state"]
            except CorruptRecord:
                state = "<invalid>"
            history = self.states.setdefault(key, [])
            if not history or history[-1] != state:
                history.append(state)
        for key, history in self.states.items():
            if key not in snapshot and history[-1] is not None:
                history.append(None)


class FakeHandler(object):
    """
    A request handler returning a L{Deferred} the test fires.

    @ivar calls: C{[(request, Deferred)]}, in call order.
    @ivar cancelled: the requests whose Deferred was cancelled.
    """

    def __init__(self):
        self.calls = []
        self.cancelled = []

    def __call__(self, request):
        d = defer.Deferred(lambda d: self.cancelled.append(request))
        self.calls.append((request, d))
        return d

    def tasks(self):
        return [request["task"] for request, _ in self.calls]


class RunnerTestMixin(object):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.state = MemoryState()
        #: The requesters' client of the store.
        self.store = MemoryStore(self.state, clock=self.clock)
        #: The agent's client of the same store.
        self.agentStore = MemoryStore(self.state, clock=self.clock)
        self.log = StateLog(self.store)
        self.handler = FakeHandler()

    def startRunner(self, handlers=None, **kw):
        if handlers is None:
            handlers = {"task": self.handler, "logs": self.handler}
        runner = RequestRunner(self.agentStore, NODE, self.clock, handlers, **kw)
        runner.startService()

        def stop():
            if runner.running:
                self.successResultOf(runner.stopService())
        self.addCleanup(stop)
        return runner

    def request(self, requestId, **fields):
        """
        Write a pending request; C{fields} add to or replace the defaults.

        @return: its key.
        """
        now = self.clock.seconds()
        record = dict(kind="task", state="pending", created=now, deadline=now + 60,
                      pod="web", task=requestId)
        record.update(fields)
        key = keys.request(NODE, requestId)
        self.successResultOf(self.store.create(key, encode(record)))
        return key

    def read(self, key):
        """
        @return: the request at C{key}, or C{None} when there is none.
        """
        entry = self.successResultOf(self.store.get(key))
        return None if entry is None else decode(entry.value)

    def requestKeys(self):
        return sorted(self.successResultOf(self.store.list(keys.requestNode(NODE))))


class RunnerLifecycleTests(RunnerTestMixin, unittest.SynchronousTestCase):
    """
    L{RequestRunner} carries out each request once and answers it in its key.
    """

    def test_answeredDone(self):
        """
        A pending request is claimed (C{running}, this agent's token, the
        time it started), handed to its kind's handler with its fields, and
        answered C{done} with the handler's fields, keeping the request's.
        """
        runner = self.startRunner()
        key = self.request("r1", args=["a", "b c"])
        [(request, d)] = self.handler.calls
        self.assertEqual((request["kind"], request["pod"], request["task"], request["args"]),
                         ("task", "web", "r1", ["a", "b c"]))
        running = self.read(key)
        self.assertEqual((running["state"], running["agent"], running["started"]),
                         ("running", runner.token, START))
        self.clock.advance(7)
        d.callback({"output": "hello a\n", "exit_code": 0})
        answer = self.read(key)
        self.assertEqual(answer["state"], "done")
        self.assertEqual(answer["output"], "hello a\n")
        self.assertEqual(answer["exit_code"], 0)
        self.assertEqual((answer["agent"], answer["started"], answer["finished"]),
                         (runner.token, START, START + 7))
        self.assertEqual(answer["args"], ["a", "b c"])
        self.assertEqual(self.log.states[key], ["pending", "running", "done"])
        self.assertEqual(runner.active, {})

    def test_handlerState(self):
        """
        A handler may answer C{failed} itself (a task that exited non-zero).
        """
        self.startRunner()
        key = self.request("r1")
        self.handler.calls[0][1].callback({"state": "failed", "exit_code": 3})
        answer = self.read(key)
        self.assertEqual((answer["state"], answer["exit_code"]), ("failed", 3))

    def test_synchronousHandler(self):
        """
        A handler answering at once (a log read) answers the request, and
        the runner keeps nothing of it.
        """
        runner = self.startRunner({"logs": lambda request: {"logs": {}}})
        key1 = self.request("r1", kind="logs")
        key2 = self.request("r2", kind="logs")
        self.assertEqual(self.read(key1)["state"], "done")
        self.assertEqual(self.read(key2)["state"], "done")
        self.assertEqual(runner.active, {})

    def test_handlerP2Error(self):
        """
        A handler failing with a L{P2Error} answers C{failed} with its message.
        """
        self.startRunner()
        key = self.request("r1")
        self.handler.calls[0][1].errback(AgentError("pod web has no executable tasks/r1"))
        answer = self.read(key)
        self.assertEqual(answer["state"], "failed")
        self.assertEqual(answer["error"], "pod web has no executable tasks/r1")
        self.assertEqual(self.log.states[key], ["pending", "running", "failed"])

    def test_handlerRaisesAtOnce(self):
        """
        A handler raising (not returning a failed L{Deferred}) is a
        C{failed} answer too.
        """
        def refuse(request):
            raise P2Error("the request has no pod")
        self.startRunner({"logs": refuse})
        key = self.request("r1", kind="logs")
        self.assertEqual((self.read(key)["state"], self.read(key)["error"]),
                         ("failed", "the request has no pod"))

    def test_handlerBug(self):
        """
        An unexpected exception is a C{failed} answer saying so (and logged
        with its traceback), not a request left C{running}.
        """
        self.startRunner()
        key = self.request("r1")
        self.handler.calls[0][1].errback(RuntimeError("boom"))
        answer = self.read(key)
        self.assertEqual((answer["state"], answer["error"]), ("failed", "internal error: boom"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unknownKind(self):
        """
        A request of a kind the agent does not take is answered C{failed},
        naming it and the kinds it takes.
        """
        self.startRunner()
        key = self.request("r1", kind="reboot")
        answer = self.read(key)
        self.assertEqual(answer["state"], "failed")
        self.assertEqual(answer["error"],
                         "unknown request kind 'reboot'; this agent takes logs, task")
        self.assertEqual(self.handler.calls, [])

    def test_invalidValue(self):
        """
        A value that is not a JSON object with a state is answered C{failed}
        (with valid JSON), and no handler is called.
        """
        self.startRunner()
        for name, value in [("r1", b"{not json"), ("r2", b'["task"]'), ("r3", b"\xff\xfe"),
                            ("r4", b'{"kind": "task"}')]:
            key = keys.request(NODE, name)
            self.successResultOf(self.store.create(key, value))
            answer = self.read(key)
            self.assertEqual(answer["state"], "failed", name)
            self.assertTrue(answer["error"].startswith(
                "the request is not valid JSON with a state: "), answer["error"])
            self.assertEqual(answer["finished"], START)
        self.assertEqual(self.handler.calls, [])

    def test_expired(self):
        """
        A pending request whose deadline passed (by more than the clock
        slack allowed to requesters) before the agent saw it is answered
        C{expired} and never carried out; one within the slack runs.
        """
        self.request("late", deadline=START - 1)
        self.request("sooner", deadline=START + 1)
        self.request("skewed", deadline=START + 3)
        self.clock.advance(CLOCK_SLACK + 2)
        self.startRunner()
        key = keys.request(NODE, "late")
        answer = self.read(key)
        self.assertEqual((answer["state"], answer["error"]),
                         ("expired", "no agent took it before its deadline"))
        self.assertEqual(answer["finished"], START + CLOCK_SLACK + 2)
        self.assertEqual(self.log.states[key], ["pending", "expired"])
        self.assertEqual(self.read(keys.request(NODE, "sooner"))["state"], "expired")
        self.assertEqual(self.read(keys.request(NODE, "skewed"))["state"], "running")
        self.assertEqual([r["pod"] for r, d in self.handler.calls], ["web"])

    def test_deadlineNotReached(self):
        """
        A request taken before its deadline runs, however long it then takes.
        """
        self.startRunner()
        key = self.request("r1", deadline=START + 1)
        self.clock.advance(100)
        self.assertEqual(self.read(key)["state"], "running")
        self.handler.calls[0][1].callback({})
        self.assertEqual(self.read(key)["state"], "done")

    def test_runningOfAnotherAgent(self):
        """
        A request C{running} under another agent process (this node's agent
        restarted while it ran) is answered C{failed}, outcome unknown, and
        not run again.
        """
        key = self.request("r1", state="running", agent="0ld", started=START - 5)
        self.startRunner()
        answer = self.read(key)
        self.assertEqual(answer["state"], "failed")
        self.assertIn("outcome is unknown", answer["error"])
        self.assertEqual(answer["agent"], "0ld")
        self.assertEqual(self.log.states[key], ["running", "failed"])
        self.assertEqual(self.handler.calls, [])

    def test_ownRunningLeftAlone(self):
        """
        This agent's own running requests are left running by a rescan.
        """
        runner = self.startRunner()
        key = self.request("r1")
        self.successResultOf(runner.scan())
        self.clock.advance(runner.rescan)
        self.assertEqual(self.read(key)["state"], "running")
        self.assertEqual(len(self.handler.calls), 1)

    def test_requesterDeletesMeanwhile(self):
        """
        A request deleted while it runs (its requester withdrew it) is
        cancelled, and not written again.
        """
        runner = self.startRunner()
        key = self.request("r1")
        self.successResultOf(self.store.delete(key))
        self.assertEqual(self.handler.cancelled, [self.handler.calls[0][0]])
        self.assertIsNone(self.read(key))
        self.assertEqual(self.requestKeys(), [])
        self.assertEqual(self.log.states[key], ["pending", "running", None])
        self.assertEqual(runner.active, {})

    def test_concurrencyLimit(self):
        """
        At most C{concurrency} requests run at once; the others are claimed
        and run in turn as running ones end.
        """
        self.startRunner(concurrency=4)
        for i in range(1, 6):
            self.request("r%d" % (i,))
        self.assertEqual(self.handler.tasks(), ["r1", "r2", "r3", "r4"])
        self.assertEqual([self.read(k)["state"] for k in self.requestKeys()], ["running"] * 5)
        self.handler.calls[2][1].callback({})
        self.assertEqual(self.handler.tasks(), ["r1", "r2", "r3", "r4", "r5"])
        for _, d in self.handler.calls:
            if not d.called:
                d.callback({})
        self.assertEqual([self.read(k)["state"] for k in self.requestKeys()], ["done"] * 5)

    def test_logsOutsideTheLimit(self):
        """
        Log reads are answered even while every task slot is busy.
        """
        logs = FakeHandler()
        self.startRunner(handlers={"task": self.handler, "logs": logs}, concurrency=1)
        self.request("r1")
        self.request("r2")
        key = self.request("l1", kind="logs")
        self.assertEqual(self.handler.tasks(), ["r1"])
        logs.calls[0][1].callback({"logs": {}})
        self.assertEqual(self.read(key)["state"], "done")

    def test_staleListingWithdrawsNothing(self):
        """
        Only a watched snapshot withdraws a request, and only one the watch
        had shown: a rescan's listing (which may be older) or a watched
        snapshot older than the request does not cancel it.
        """
        runner = self.startRunner()
        key = self.request("r1")
        runner._changed({}, watched=False)
        self.assertEqual(self.handler.cancelled, [])
        runner._watched = set()
        runner._changed({}, watched=True)
        self.assertEqual(self.handler.cancelled, [])
        self.assertEqual(self.read(key)["state"], "running")
        self.successResultOf(self.store.delete(key))
        self.assertEqual(self.handler.cancelled, [])  # the watch had not shown it
        runner._changed({key: None}, watched=True)
        runner._changed({}, watched=True)
        self.assertEqual([r["task"] for r in self.handler.cancelled], ["r1"])

    def test_ownLostRunningFailed(self):
        """
        A request this agent claimed but is not carrying out (its answer
        was lost) is answered C{failed} at the next look, not left running.
        """
        runner = self.startRunner()
        key = self.request("r1", state="running", agent=runner.token)
        self.successResultOf(runner.scan())
        answer = self.read(key)
        self.assertEqual((answer["state"], answer["error"]), (
            "failed", "the agent lost track of this while it ran; its outcome is unknown"))
        self.assertEqual(self.handler.calls, [])

    def test_stopAnswersRunningFailed(self):
        """
        Stopping the runner cancels the running handlers and answers their
        requests C{failed}; requests waiting for their turn are answered
        C{failed} without being run; later requests are left for the next
        agent.
        """
        runner = self.startRunner(concurrency=1)
        running = self.request("r1")
        waiting = self.request("r2")
        self.assertEqual(self.handler.tasks(), ["r1"])
        stopped = runner.stopService()
        self.successResultOf(stopped)
        self.assertEqual([request["task"] for request in self.handler.cancelled], ["r1"])
        self.assertEqual(self.handler.tasks(), ["r1"])
        answer = self.read(running)
        self.assertEqual((answer["state"], answer["error"]),
                         ("failed", "the agent stopped while this ran"))
        answer = self.read(waiting)
        self.assertEqual((answer["state"], answer["error"]),
                         ("failed", "the agent stopped before this ran"))
        later = self.request("r3")
        self.clock.advance(runner.rescan * 3)
        self.assertEqual(self.read(later)["state"], "pending")
        self.assertEqual(self.handler.tasks(), ["r1"])
        self.assertEqual(runner.active, {})

    def test_hugeOutputAnswered(self):
        """
        An answer whose output is over the store's limit is written with
        the end of that output.
        """
        self.startRunner()
        key = self.request("r1")
        output = "x" * (2 * MAX_VALUE) + "the end\n"
        self.handler.calls[0][1].callback({"output": output})
        answer = self.read(key)
        self.assertEqual(answer["state"], "done")
        self.assertTrue(answer["output"].endswith("x" * 1000 + "the end\n"))
        self.assertLess(len(answer["output"]), MAX_VALUE)


class ScanTests(RunnerTestMixin, unittest.SynchronousTestCase):
    """
    L{RequestRunner.scan} reads all of a node's requests: it deletes those
    ended long ago and takes pending ones a watch missed.
    """

    def test_deletesLongEnded(self):
        """
        Requests ended more than C{retain} seconds ago are deleted (a
        requester gave up on them); fresh ones, pending and running ones,
        and other nodes' requests are kept.
        """
        runner = self.startRunner(retain=600)
        old = START - 1000
        self.request("done-old", state="done", created=old, finished=START - 601)
        self.request("failed-old", state="failed", created=old, finished=START - 700)
        self.request("expired-old", state="expired", created=old, deadline=old + 60)
        self.request("done-fresh", state="done", created=old, finished=START - 100)
        self.request("running-old", created=old, deadline=None)
        self.successResultOf(self.store.create(
            keys.request("n2", "done-old"),
            encode({"state": "done", "created": old, "finished": old})))
        self.successResultOf(runner.scan())
        self.assertEqual(self.requestKeys(), [keys.request(NODE, "done-fresh"),
                                              keys.request(NODE, "running-old")])
        self.assertEqual(self.read(keys.request(NODE, "running-old"))["state"], "running")
        self.assertIsNotNone(self.read(keys.request("n2", "done-old")))

    def test_periodic(self):
        """
        Every C{rescan} seconds, ended requests reaching C{retain} seconds
        are deleted.
        """
        self.startRunner(retain=600, rescan=30)
        self.request("r1", state="done", finished=START)
        self.clock.advance(600)
        self.assertEqual(self.requestKeys(), [keys.request(NODE, "r1")])
        self.clock.advance(30)
        self.assertEqual(self.requestKeys(), [])

    def test_takesMissedPending(self):
        """
        A pending request the watch missed is taken by the next scan.
        """
        self.startRunner(rescan=30)
        self.agentStore.crash()  # its watch is gone
        key = self.request("r1", created=START - 700, deadline=None)
        self.assertEqual(self.handler.calls, [])
        self.clock.advance(30)
        self.assertEqual(self.handler.tasks(), ["r1"])
        self.assertEqual(self.read(key)["state"], "running")
        self.handler.calls[0][1].callback({})
        self.assertEqual(self.read(key)["state"], "done")


class CodecTests(unittest.SynchronousTestCase):
    """
    The L{Request} record and L{fit}.
    """

    def test_roundTrip(self):
        record = {"state": "pending", "kind": "task", "args": ["\u00e9", "b"]}
        self.assertEqual(decode(encode(record)), record)

    def test_decodeRefuses(self):
        """
        Anything but a JSON object with a string C{state} is a L{CorruptRecord}.
        """
        for value in [b"", b"nope", b"[1]", b'"x"', b'{"state": 3}', b"{}", b"\xff",
                      b'{"state": "pending", "timeout": NaN}',
                      b'{"state": "pending", "timeout": Infinity}']:
            self.assertRaises(CorruptRecord, decode, value)

    def test_fitUnchanged(self):
        record = {"state": "done", "output": "short\n", "logs": None}
        self.assertEqual(fit(dict(record)), encode(record))

    def cutAndKept(self, text):
        match = re.match(r"\[\.\.\. (\d+) characters cut \.\.\.\]\n", text)
        self.assertIsNotNone(match, text[:80])
        return int(match.group(1)), text[match.end():]

    def test_fitKeepsTail(self):
        """
        A huge output is cut from its start: what remains is its end,
        preceded by how many characters were cut, and the answer fits in
        the store.
        """
        output = "".join("line %d\n" % (i,) for i in range(300000))
        value = fit({"state": "done", "output": output, "exit_code": 0})
        self.assertLessEqual(len(value), MAX_VALUE)
        answer = decode(value)
        self.assertEqual(answer["exit_code"], 0)
        cut, kept = self.cutAndKept(answer["output"])
        self.assertTrue(output.endswith(kept))
        self.assertTrue(kept.endswith("line 299999\n"))
        self.assertEqual(cut + len(kept), len(output))
        self.assertGreater(len(kept), MAX_VALUE // 4)

    def test_fitEscapedText(self):
        """
        Text that JSON escapes (non-ASCII, control characters) fits too.
        """
        output = "\u00e9\x01" * 200000
        value = fit({"state": "done", "output": output})
        self.assertLessEqual(len(value), MAX_VALUE)
        cut, kept = self.cutAndKept(decode(value)["output"])
        self.assertEqual(cut + len(kept), len(output))

    def test_fitLogs(self):
        """
        Log data is cut like output, the longest first; offsets stay.
        """
        big = "y" * (MAX_VALUE * 2)
        value = fit({"state": "done", "logs": {
            "web__app__launch": {"data": big, "offset": len(big)},
            "web__app__worker": {"data": "small\n", "offset": 6}}})
        self.assertLessEqual(len(value), MAX_VALUE)
        logs = decode(value)["logs"]
        self.assertEqual(logs["web__app__worker"], {"data": "small\n", "offset": 6})
        self.assertEqual(logs["web__app__launch"]["offset"], len(big))
        cut, kept = self.cutAndKept(logs["web__app__launch"]["data"])
        self.assertEqual(cut + len(kept), len(big))

    def test_fitGivesUp(self):
        """
        When cutting the texts to nothing is not enough, what is left is
        returned rather than cutting forever.
        """
        calls = []

        def counting(record):
            calls.append(None)
            if len(calls) > 1000:
                raise AssertionError("fit does not end")
            return encode(record)
        self.patch(requestsModule, "_encode", counting)
        value = fit({"state": "done", "args": ["z" * 2000], "output": "x" * 100}, limit=1000)
        self.assertGreater(len(value), 1000)
        self.assertEqual(decode(value)["output"], "[... 100 characters cut ...]\n")
        value = fit({"state": "done", "args": ["z" * 2000]}, limit=1000)
        self.assertEqual(decode(value)["args"], ["z" * 2000])


# -- the real handlers ------------------------------------------------------------

MANIFEST = b"""id: web
run_as: nobody
launchables:
  app:
    launchable_type: hoist
    location: file:///nowhere/web_1.tar.gz
    env:
      GREETING: hi there
"""

#: Prints what a task sees: its pod's env dirs, its arguments, the agent's environment.
HELLO = """#!/bin/sh
echo "pod=$POD_ID greeting=$GREETING entry=$ENTRY_POINT agentvar=[$P2_TEST_AGENT_ONLY]"
for a in "$@"; do echo "arg=[$a]"; done
echo "to stderr" >&2
"""

FAIL = """#!/bin/sh
echo oops
exit 3
"""

#: Ignores SIGTERM and blocks (on its standard input, which stays open).
STUBBORN = """#!/bin/sh
trap '' TERM
echo started
read x
"""

#: Writes its pid to the file named by its argument, then blocks.
BLOCK = """#!/bin/sh
echo $$ > "$1"
read x
"""

TASKS = {"hello": (HELLO, 0o755), "fail": (FAIL, 0o755), "stubborn": (STUBBORN, 0o755),
         "block": (BLOCK, 0o755), "notexec": (HELLO, 0o644)}


def layOutPod(podRoot, podId="web", manifest=MANIFEST, taskScripts=TASKS):
    """
    Install pod C{podId} under C{podRoot} as the agent would: its manifest,
    its launchable C{app}'s C{current} install holding C{tasks/...}, its
    config and env dirs.

    @return: its L{PodLayout}.
    """
    layout = PodLayout(podRoot, podId)
    os.makedirs(layout.home)
    with open(layout.currentManifest, "wb") as f:
        f.write(manifest)
    parsed = parseManifest(manifest)
    install = layout.installDir("app", "1")
    os.makedirs(os.path.join(install, "tasks"))
    os.symlink(install, layout.current("app"))
    for name, (text, mode) in taskScripts.items():
        path = os.path.join(install, "tasks", name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
    configPath = runtime.writeConfig(layout, parsed.sha(), parsed.configYAML())
    runtime.writeEnvDir(layout.envDir, runtime.podEnv(layout, podId, configPath))
    for launchableId, launchable in parsed.launchables.items():
        runtime.writeEnvDir(layout.launchableEnvDir(launchableId), runtime.launchableEnv(
            layout, launchableId, launchable.restartTimeout, launchable.env))
    return layout


_Bounded = process._Bounded


class RecordingBounded(_Bounded):
    """
    L{process._Bounded} that says when its process has ended and been
    reaped, so that a test can wait for it.
    """

    instances = []

    def __init__(self, *args, **kw):
        _Bounded.__init__(self, *args, **kw)
        self.gone = defer.Deferred()
        RecordingBounded.instances.append(self)

    def processEnded(self, reason):
        _Bounded.processEnded(self, reason)
        self.gone.callback(None)


class ProcessTestMixin(object):

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.podRoot = os.path.join(self.base, "pods")
        self.stateDir = os.path.join(self.base, "state")
        os.makedirs(self.stateDir)
        self.layout = layOutPod(self.podRoot)
        self.handlers = RequestHandlers(reactor, self.podRoot, self.stateDir, p2execCommand(),
                                        isRoot=False)
        RecordingBounded.instances = []
        self.patch(process, "_Bounded", RecordingBounded)

    def waitForProcesses(self):
        """
        @return: L{Deferred} firing once every bounded command started by
            the test has ended.
        """
        return defer.gatherResults([
            p.gone.addTimeout(WAIT, reactor) for p in RecordingBounded.instances])

    def waitForPid(self, path):
        def read():
            try:
                with open(path) as f:
                    text = f.read()
            except OSError:
                return None
            return int(text) if text.endswith("\n") else None
        return waitFor(read, WAIT, what="a pid in %s" % (path,))


class RunTaskTests(ProcessTestMixin, unittest.TestCase):
    """
    L{RequestHandlers.runTask} runs an installed pod's C{tasks/<TASK>} for
    real, through C{p2-exec}, in the pod's environment.
    """

    @defer.inlineCallbacks
    def test_inLaunchableCgroup(self):
        """
        A task of a launchable with cgroup limits runs in its cgroup
        C{p2/<pod>@<launchable>}, like the launchable's processes.
        """
        from tests.test_agent_p2exec import _memoryCgroupUsable, _removeCgroup
        usable, why = _memoryCgroupUsable()
        if not usable:
            raise unittest.SkipTest("cannot create memory cgroups here: %s" % (why,))
        self.addCleanup(_removeCgroup, "limited@app")
        layOutPod(self.podRoot, "limited", MANIFEST.replace(b"id: web", b"id: limited")
                  + b"    cgroup:\n      memory: 268435456\n",
                  {"where": ("#!/bin/sh\ncat /proc/self/cgroup\n", 0o755)})
        answer = yield self.handlers.runTask({"kind": "task", "pod": "limited",
                                              "task": "where"})
        self.assertEqual(answer["state"], "done", answer)
        self.assertIn("/p2/limited@app", answer["output"])

    @defer.inlineCallbacks
    def test_runs(self):
        """
        The task gets its arguments as they are, its pod's env dirs and
        C{ENTRY_POINT}, and not the agent's environment; its output
        (stdout and stderr) is the answer's.
        """
        self.patch(os, "environ", dict(os.environ, P2_TEST_AGENT_ONLY="leak"))
        answer = yield self.handlers.runTask(
            {"kind": "task", "pod": "web", "task": "hello", "args": ["a b", "--x", ""]})
        self.assertEqual((answer["state"], answer["exit_code"], answer["signal"],
                          answer["outcome"]), ("done", 0, None, "exit 0"))
        self.assertIn("pod=web greeting=hi there entry=tasks/hello agentvar=[]\n"
                      "arg=[a b]\narg=[--x]\narg=[]\n", answer["output"])
        self.assertIn("to stderr", answer["output"])
        self.assertGreaterEqual(answer["duration"], 0)

    @defer.inlineCallbacks
    def test_exitCode(self):
        """
        A task exiting non-zero is C{failed}, with its exit code and output.
        """
        answer = yield self.handlers.runTask({"pod": "web", "task": "fail"})
        self.assertEqual((answer["state"], answer["exit_code"], answer["outcome"]),
                         ("failed", 3, "exit 3"))
        self.assertEqual(answer["output"], "oops\n")

    @defer.inlineCallbacks
    def test_timeout(self):
        """
        A task still running at its timeout is terminated, then killed
        C{KILL_GRACE} seconds later if it ignores that.
        """
        self.patch(tasks, "KILL_GRACE", 0.5)
        answer = yield self.handlers.runTask(
            {"pod": "web", "task": "stubborn", "timeout": 0.5})
        self.assertEqual((answer["state"], answer["exit_code"], answer["signal"]),
                         ("failed", None, signal.SIGKILL))
        self.assertEqual(answer["outcome"], "killed by SIGKILL after timeout")
        self.assertIn("started", answer["output"])
        self.assertGreaterEqual(answer["duration"], 1.0)

    def assertRefused(self, request, message):
        f = self.failureResultOf(self.handlers.runTask(request), AgentError)
        self.assertEqual(str(f.value), message)

    def test_badTaskNames(self):
        """
        A task is named by one path segment: anything else is refused.
        """
        for name in ["../x", "a/b", ".hidden", "..", "x y", "-v", "hello\n"]:
            self.assertRefused({"pod": "web", "task": name}, "%r is not a task name" % (name,))
        self.assertRefused({"pod": "web", "task": ""}, "the request has no task")
        self.assertRefused({"pod": "web"}, "the request has no task")
        self.assertRefused({"pod": "web", "task": ["hello"]}, "the request has no task")

    def test_badArgs(self):
        for args in ["a b", [1], ["a", None], {"a": "b"}]:
            self.assertRefused({"pod": "web", "task": "hello", "args": args},
                               "a task's arguments must be a list of strings")

    def test_badTimeout(self):
        for timeout in [0, -1, "10", None, float("nan"), float("inf"), True]:
            self.assertRefused({"pod": "web", "task": "hello", "timeout": timeout},
                               "a task's timeout must be a positive number of seconds")

    def test_podNotInstalled(self):
        self.assertRefused({"pod": "db", "task": "hello"},
                           "pod db is not installed on this node (yet)")
        self.assertRefused({"task": "hello"}, "the request has no pod")

    def test_podOutsidePodRoot(self):
        """
        A pod id is one path segment: a request cannot run tasks of a pod
        laid out outside the pod root.
        """
        layOutPod(self.base, "elsewhere")
        for podId in ["../elsewhere", "..", ".", "x/../../elsewhere"]:
            self.assertRefused({"pod": podId, "task": "hello"},
                               "%r is not a pod id" % (podId,))

    def test_noSuchTask(self):
        """
        Only executables under C{tasks/} can be run.
        """
        self.assertRefused({"pod": "web", "task": "missing"},
                           "pod web has no executable tasks/missing")
        self.assertRefused({"pod": "web", "task": "notexec"},
                           "pod web has no executable tasks/notexec")

    def test_unreadableManifest(self):
        with open(self.layout.currentManifest, "wb") as f:
            f.write(b"id: [\n")
        f = self.failureResultOf(self.handlers.runTask({"pod": "web", "task": "hello"}),
                                 AgentError)
        self.assertTrue(str(f.value).startswith(
            "pod web: its installed manifest is unreadable: "), str(f.value))

    @defer.inlineCallbacks
    def test_stopKillsTask(self):
        """
        Stopping the agent's request runner kills a running task at once
        (its whole process) and answers its request C{failed}.
        """
        store = MemoryStore(clock=reactor)
        runner = RequestRunner(store, NODE, reactor, self.handlers.handlers())
        runner.startService()
        self.addCleanup(lambda: runner.running and runner.stopService())
        pidfile = os.path.join(self.base, "pid")
        key = keys.request(NODE, "r1")
        yield store.create(key, encode({"kind": "task", "state": "pending", "pod": "web",
                                        "task": "block", "args": [pidfile]}))
        pid = yield self.waitForPid(pidfile)
        self.assertEqual(decode((yield store.get(key)).value)["state"], "running")
        yield runner.stopService().addTimeout(WAIT, reactor)
        answer = decode((yield store.get(key)).value)
        self.assertEqual((answer["state"], answer["error"]),
                         ("failed", "the agent stopped while this ran"))
        yield self.waitForProcesses()
        self.assertFalse(alive(pid))


class RunBoundedCancelTests(ProcessTestMixin, unittest.TestCase):
    """
    Cancelling L{process.runBounded}'s L{Deferred} fails it at once and
    ends its process group: TERM, then KILL after C{CANCEL_GRACE}.
    """

    @defer.inlineCallbacks
    def test_cancelKillsWhatIgnoresTerm(self):
        self.patch(process, "CANCEL_GRACE", 0.5)
        pidfile = os.path.join(self.base, "pids")
        script = "trap '' TERM; echo $$ > %s; read x" % (pidfile,)
        d = process.runBounded(reactor, ["/bin/sh", "-c", script], termAfter=60, killAfter=120)
        yield waitFor(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(),
                      WAIT, what="the pid")
        with open(pidfile) as f:
            pid = int(f.read())
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        yield self.waitForProcesses()
        self.assertFalse(alive(pid), "process %d survived" % (pid,))

    @defer.inlineCallbacks
    def test_cancelKillsGroup(self):
        pidfile = os.path.join(self.base, "pids")
        script = "tail -f /dev/null & echo $$ $! > %s; read x" % (pidfile,)
        d = process.runBounded(reactor, ["/bin/sh", "-c", script], termAfter=60, killAfter=120)
        yield waitFor(lambda: os.path.exists(pidfile) and len(open(pidfile).read().split()) == 2,
                      WAIT, what="the pids")
        with open(pidfile) as f:
            pids = [int(p) for p in f.read().split()]
        self.assertTrue(all(alive(pid) for pid in pids))
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        yield self.waitForProcesses()
        for pid in pids:
            self.assertFalse(alive(pid), "process %d survived" % (pid,))


# -- logs ------------------------------------------------------------------------

class LogTestMixin(object):

    def setUp(self):
        self.stateDir = os.path.abspath(self.mktemp())
        self.serviceDir = os.path.join(self.stateDir, "service")
        self.runitLog = self.writeLog(("web__app__bin__launch", "log", "main", "current"),
                                      b"".join(b"runit line %d\n" % (i,) for i in range(100)))
        self.builtinLog = self.writeLog(("web__app__bin__worker", "current.log"),
                                        b"worker started\n")
        self.writeLog(("webby__app__bin__launch", "current.log"), b"another pod\n")
        self.writeLog(("db__app__bin__launch", "current.log"), b"another pod\n")
        os.makedirs(os.path.join(self.serviceDir, "web__app__bin__nolog"))
        self.handlers = RequestHandlers(reactor, os.path.join(self.stateDir, "pods"),
                                        self.stateDir, p2execCommand(), isRoot=False)

    def writeLog(self, parts, data, mode="wb"):
        path = os.path.join(self.serviceDir, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, mode) as f:
            f.write(data)
        return path

    def append(self, path, data):
        with open(path, "ab") as f:
            f.write(data)


class PodLogsTests(LogTestMixin, unittest.SynchronousTestCase):
    """
    L{p2twisted.agent.podlogs}: a pod's log files, read from an offset.
    """

    def test_logFiles(self):
        """
        A pod's log files are runit's and the builtin supervisor's, of its
        own services only.
        """
        self.assertEqual(logFiles(self.stateDir, "web"), {
            "web__app__bin__launch": self.runitLog,
            "web__app__bin__worker": self.builtinLog})
        self.assertEqual(logFiles(self.stateDir, "nope"), {})
        self.assertEqual(logFiles(os.path.join(self.stateDir, "missing"), "web"), {})

    def test_readFromNone(self):
        """
        Without an offset, the last C{maxBytes} bytes are read, and the
        next offset is the end.
        """
        with open(self.runitLog, "rb") as f:
            content = f.read()
        self.assertEqual(readFrom(self.runitLog, None, 50), (content[-50:], len(content)))
        self.assertEqual(readFrom(self.builtinLog, None, 50),
                         (b"worker started\n", len(b"worker started\n")))

    def test_readFromOffset(self):
        """
        From an offset, only what was appended since is read, and never
        more than the newest C{maxBytes}.
        """
        size = os.path.getsize(self.runitLog)
        self.assertEqual(readFrom(self.runitLog, size, 50), (b"", size))
        self.append(self.runitLog, b"new\n")
        self.assertEqual(readFrom(self.runitLog, size, 50), (b"new\n", size + 4))
        self.assertEqual(readFrom(self.runitLog, 0, 10), (b"ne 99\nnew\n", size + 4))

    def test_readFromRotated(self):
        """
        An offset past the end (the log was rotated) starts again from its
        beginning.
        """
        size = os.path.getsize(self.runitLog)
        self.writeLog(("web__app__bin__launch", "log", "main", "current"), b"fresh\n")
        self.assertEqual(readFrom(self.runitLog, size, 50), (b"fresh\n", 6))
        self.writeLog(("web__app__bin__launch", "log", "main", "current"), b"z" * 100)
        self.assertEqual(readFrom(self.runitLog, 1000, 30), (b"z" * 30, 100))

    def test_readFromMissing(self):
        self.assertEqual(readFrom(os.path.join(self.stateDir, "gone"), 17), (b"", 17))
        self.assertEqual(readFrom(os.path.join(self.stateDir, "gone"), None), (b"", 0))


class ReadLogsHandlerTests(LogTestMixin, unittest.SynchronousTestCase):
    """
    L{RequestHandlers.readLogs}: the answer to a C{logs} request.
    """

    def read(self, **request):
        request.setdefault("pod", "web")
        return self.successResultOf(self.handlers.readLogs(request))

    def test_tailThenNew(self):
        """
        A first read gives the end of every log of the pod and where it
        ended; a read from there gives only what was appended since.
        """
        first = self.read(max_bytes=30)
        self.assertEqual(first["state"], "done")
        size = os.path.getsize(self.runitLog)
        self.assertEqual(first["logs"], {
            "web__app__bin__launch": {"data": self.tail(self.runitLog, 30), "offset": size},
            "web__app__bin__worker": {"data": "worker started\n", "offset": 15}})
        self.assertTrue(first["logs"]["web__app__bin__launch"]["data"].endswith(
            "runit line 99\n"))
        self.append(self.runitLog, b"runit line 100\n")
        offsets = {name: entry["offset"] for name, entry in first["logs"].items()}
        second = self.read(offsets=offsets, max_bytes=30)
        self.assertEqual(second["logs"], {
            "web__app__bin__launch": {"data": "runit line 100\n", "offset": size + 15},
            "web__app__bin__worker": {"data": "", "offset": 15}})

    def tail(self, path, n):
        with open(path, "rb") as f:
            return f.read()[-n:].decode()

    def test_rotated(self):
        offsets = {name: entry["offset"] for name, entry in self.read()["logs"].items()}
        self.writeLog(("web__app__bin__launch", "log", "main", "current"), b"fresh\n")
        logs = self.read(offsets=offsets)["logs"]
        self.assertEqual(logs["web__app__bin__launch"], {"data": "fresh\n", "offset": 6})

    def test_newService(self):
        """
        A log that was not there at the last read is read from its start.
        """
        offsets = {name: entry["offset"] for name, entry in self.read()["logs"].items()}
        self.writeLog(("web__app__bin__cron", "current.log"), b"cron 1\ncron 2\n")
        logs = self.read(offsets=offsets)["logs"]
        self.assertEqual(logs["web__app__bin__cron"], {"data": "cron 1\ncron 2\n", "offset": 14})

    def test_atMostMaxRead(self):
        big = b"q" * (MAX_READ + 100)
        self.writeLog(("web__app__bin__worker", "current.log"), big)
        logs = self.read(max_bytes=10 ** 9)["logs"]
        self.assertEqual(len(logs["web__app__bin__worker"]["data"]), MAX_READ)

    def test_undecodable(self):
        self.append(self.builtinLog, b"\xff bytes\n")
        logs = self.read()["logs"]
        self.assertEqual(logs["web__app__bin__worker"]["data"],
                         "worker started\n\ufffd bytes\n")

    def test_noLogs(self):
        e = self.assertRaises(AgentError, self.handlers.readLogs, {"pod": "api"})
        self.assertEqual(str(e), "pod api has no logs on this node")

    def test_badRequests(self):
        for offsets in [[1], {"x": -1}, {"x": "3"}, {"x": 1.5}]:
            e = self.assertRaises(AgentError, self.handlers.readLogs,
                                  {"pod": "web", "offsets": offsets})
            self.assertEqual(str(e), "a log request's offsets must map service names "
                                     "to byte offsets")
        for maxBytes in [0, -3, "5", None]:
            e = self.assertRaises(AgentError, self.handlers.readLogs,
                                  {"pod": "web", "max_bytes": maxBytes})
            self.assertEqual(str(e), "a log request's max_bytes must be a positive integer")
        self.assertRaises(AgentError, self.handlers.readLogs, {})
