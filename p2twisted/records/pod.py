# -*- test-case-name: tests.test_records -*-
"""
The records about pods an agent publishes -- their health
(C{health/<pod_id>/<node>}), its last attempt at each
(C{status/pods/<node>/<pod_id>}), its hooks' outcomes
(C{status/hooks/<node>/<event>/<name>}) -- and the requests people make to
an agent (C{requests/<node>/<id>}).
"""

import attr

from p2twisted.records.base import CorruptRecord, dumpObject, field, loadObject, segments

PASSING, CRITICAL = "passing", "critical"

#: A request's states (see L{p2twisted.agent.requests}).
PENDING, RUNNING, DONE, FAILED, EXPIRED = "pending", "running", "done", "failed", "expired"

#: The states a request ends in.
ENDED = (DONE, FAILED, EXPIRED)

#: Seconds a task may run when its request does not say (then KILL_GRACE
#: seconds more before it is killed).
DEFAULT_TIMEOUT = 600.0
KILL_GRACE = 30.0

#: The hook events, in workflow order.
EVENTS = ("agent_init", "before_install", "after_install", "before_launch", "after_launch",
          "before_uninstall", "after_uninstall", "after_auth_fail")


@attr.s(frozen=True)
class Health(object):
    """
    C{health/<pod_id>/<node>}: the last health check of a pod by its node's
    agent (ephemeral: gone with the agent's session).

    @ivar status: L{PASSING} or L{CRITICAL}.
    @ivar output: one line saying what the check saw.
    @ivar time: epoch seconds of the check.
    @ivar sha: the canonical SHA of the manifest checked, so the health of a
        new version can be told from the old one's.
    """

    pod_id = attr.ib()
    node = attr.ib()
    status = attr.ib()
    output = attr.ib(default="")
    time = attr.ib(default=None)
    sha = attr.ib(default=None)

    @classmethod
    def fromEntry(cls, key, entry):
        podId, node = segments(key, 2, "health")
        record = loadObject(key, entry.value)
        return cls(podId, node, field(key, record, "status", str, required=True),
                   field(key, record, "output", str, default=""),
                   field(key, record, "time", float), field(key, record, "sha", str))

    @property
    def passing(self):
        return self.status == PASSING

    def passingFor(self, sha):
        """
        @return: whether this is a passing check of the manifest C{sha}.
        """
        return self.passing and self.sha == sha

    def toDict(self):
        """
        @return: the JSON object stored: C{{"status", "output", "sha", "time"}}.
        """
        return {"status": self.status, "output": self.output, "sha": self.sha,
                "time": self.time}

    def toBytes(self):
        return dumpObject(self.toDict())


@attr.s(frozen=True)
class PodStatus(object):
    """
    C{status/pods/<node>/<pod_id>}: the agent's last attempt at a pod,
    written by its worker, with the restart counts its crash-loop monitor
    merges in.

    @ivar state: the worker's state (C{deploying}, C{idle}, C{failed},
        C{removing}, ...).
    @ivar sha: the manifest it worked on, or C{None}.
    @ivar attempts: failed attempts in a row.
    @ivar time: when written, C{YYYY-MM-DDTHH:MM:SSZ}.
    @ivar restarts: restarts of the pod's services, or C{None} until the
        crash-loop monitor counted them (then C{crash_loop} is absent too).
    @ivar crash_loop: C{None}, or C{{"restarts", "seconds", "last_exit",
        "delay", "service", "text"}} of its worst crash-looping service.
    @ivar auth: C{None}, or what the agent's auth policy decided about the
        manifest (L{p2twisted.auth.policy.Decision.toDict}: C{allowed},
        C{policy}, C{rule}, C{signer}).
    @ivar intent_version: with a refusal, the store version of the intent
        entry refused (C{None} from agents before it): a signature changes
        the bytes but not the SHA, so the SHA alone cannot tell the refusal
        of an unsigned manifest from one of the same manifest signed since.
    """

    pod = attr.ib()
    node = attr.ib()
    state = attr.ib(default=None)
    sha = attr.ib(default=None)
    error = attr.ib(default=None)
    attempts = attr.ib(default=0)
    time = attr.ib(default=None)
    restarts = attr.ib(default=None)
    crash_loop = attr.ib(default=None)
    auth = attr.ib(default=None)
    intent_version = attr.ib(default=None)

    #: The fields the crash-loop monitor owns.
    COUNTS = ("restarts", "crash_loop")

    @classmethod
    def fromEntry(cls, key, entry):
        node, podId = segments(key, 2, "status/pods")
        record = loadObject(key, entry.value)
        return cls(field(key, record, "pod", str, default=podId),
                   field(key, record, "node", str, default=node),
                   field(key, record, "state", str), field(key, record, "sha", str),
                   field(key, record, "error", str),
                   field(key, record, "attempts", int, default=0),
                   field(key, record, "time", str), field(key, record, "restarts", int),
                   field(key, record, "crash_loop", dict), field(key, record, "auth", dict),
                   field(key, record, "intent_version", int))

    @property
    def counted(self):
        """Whether the restart counts are in (L{COUNTS})."""
        return self.restarts is not None

    def refuses(self, sha, intentVersion):
        """
        @return: whether this is the agent's refusal of the manifest C{sha}
            as written at C{intentVersion} (the intent entry's version now),
            not of other bytes of the same SHA written before.
        """
        return (self.state == "refused" and self.sha == sha
                and (self.intent_version is None or self.intent_version == intentVersion))

    def withCounts(self, restarts, crash_loop):
        return attr.evolve(self, restarts=restarts, crash_loop=crash_loop)

    def toBytes(self):
        record = attr.asdict(self, recurse=False)
        if not self.counted:
            for name in self.COUNTS:
                del record[name]
        for name in ("auth", "intent_version"):
            if record[name] is None:
                del record[name]
        return dumpObject(record)


@attr.s(frozen=True)
class HookStatus(object):
    """
    C{status/hooks/<node>/<event>/<name>}: the outcome of the last run of a
    hook (a script of a hook pod, or in the hooks directory).

    @ivar state: C{ok}, C{failed}, C{timeout}, C{missing} or
        C{not_executable}.
    @ivar outcome: in words (C{exited 0}, C{killed after 30s}, ...).
    @ivar output: its last output lines.
    @ivar required: whether its failure stops an install (in a blocking
        event).
    """

    hook = attr.ib()
    event = attr.ib()
    node = attr.ib()
    pod = attr.ib()
    path = attr.ib()
    state = attr.ib(default=None)
    outcome = attr.ib(default=None)
    exit_code = attr.ib(default=None)
    signal = attr.ib(default=None)
    duration = attr.ib(default=0.0)
    output = attr.ib(default="")
    time = attr.ib(default=None)
    required = attr.ib(default=None)

    @classmethod
    def fromEntry(cls, key, entry):
        node, event, name = segments(key, 3, "status/hooks")
        record = loadObject(key, entry.value)
        if "hook_pod" in record:
            raise CorruptRecord(key, "the status of a hook pod, not of a hook run")
        return cls(field(key, record, "hook", str, default=name),
                   field(key, record, "event", str, default=event),
                   field(key, record, "node", str, default=node),
                   field(key, record, "pod", str), field(key, record, "path", str),
                   field(key, record, "state", str), field(key, record, "outcome", str),
                   field(key, record, "exit_code", int), field(key, record, "signal", int),
                   field(key, record, "duration", float, default=0.0),
                   field(key, record, "output", str, default=""),
                   field(key, record, "time", str), field(key, record, "required", bool))

    def toBytes(self):
        record = attr.asdict(self, recurse=False)
        if self.required is None:
            del record["required"]
        return dumpObject(record)


@attr.s(frozen=True)
class HookPodStatus(object):
    """
    C{status/hooks/<node>/<event>/<pod_id>}: where the agent is with
    installing a hook pod (C{installed}, C{failed}, ...), and why not.
    """

    hook_pod = attr.ib()
    event = attr.ib()
    node = attr.ib()
    state = attr.ib()
    sha = attr.ib(default=None)
    error = attr.ib(default=None)
    time = attr.ib(default=None)

    @classmethod
    def fromEntry(cls, key, entry):
        node, event, podId = segments(key, 3, "status/hooks")
        record = loadObject(key, entry.value)
        return cls(field(key, record, "hook_pod", str, required=True),
                   field(key, record, "event", str, default=event),
                   field(key, record, "node", str, default=node),
                   field(key, record, "state", str, required=True),
                   field(key, record, "sha", str), field(key, record, "error", str),
                   field(key, record, "time", str))

    def toBytes(self):
        return dumpObject(attr.asdict(self, recurse=False))


@attr.s(frozen=True)
class Request(object):
    """
    C{requests/<node>/<id>}: a request to a node's agent and, in the same
    key, its answer (L{p2twisted.agent.requests} has the lifecycle).

    @ivar fields: the whole JSON object: C{kind}, C{state}, C{created} and
        C{deadline} (epoch seconds), C{requester}, the kind's fields; the
        answer adds C{agent}, C{started}, C{finished}, and C{error} or the
        kind's results.
    """

    fields = attr.ib()

    @classmethod
    def new(cls, fields, now, deadline, requester):
        """
        @param fields: C{kind} and the kind's fields.
        @return: a L{PENDING} request made at C{now} by C{requester}.
        """
        return cls(dict(fields, state=PENDING, created=now, deadline=deadline,
                        requester=requester))

    @classmethod
    def fromEntry(cls, key, entry):
        return cls.fromBytes(key, entry.value)

    @classmethod
    def fromBytes(cls, key, value):
        record = loadObject(key, value)
        field(key, record, "state", str, required=True)
        return cls(record)

    @property
    def state(self):
        return self.fields["state"]

    @property
    def kind(self):
        return self.fields.get("kind")

    @property
    def ended(self):
        return self.state in ENDED

    def number(self, name):
        """
        @return: the field C{name} when it is a number, else C{None}.
        """
        value = self.fields.get(name)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def evolve(self, **changes):
        """
        @return: this request with C{changes} to its fields.
        """
        return Request(dict(self.fields, **changes))

    def toBytes(self):
        return dumpObject(self.fields)
