# -*- test-case-name: tests.test_agent_failsafe -*-
"""
The node-marker failsafe's decision: which of a node's pods the agent may
remove now (README.rst, "The failsafe").

A pod is a I{removal candidate} when it is on this node (in reality, or on
disk) and its intent is gone.  Installs and upgrades of what intent names are
not decided here: they go ahead whenever the marker is present.  Removals::

    no marker            ->  remove nothing: the listing means nothing
    a new marker         ->  hold: remove nothing until a person confirms
      (a creation other      (p2 node confirm NODE) or, when a hold timeout
       than the last seen)   is set, it runs out
    orphans (on disk, in ->  the same hold; on confirmation they are adopted
      neither intent nor     into reality, so the normal loop removes them
      reality)
    otherwise            ->  remove a candidate once it has been without
                             intent for the removal grace; the caller wakes
                             at C{wakeAt} and reads the store afresh, so the
                             marker must still be there at the end

A recursive delete removes a node's pods before its marker (and even an
atomic one reaches an agent's watch as several snapshots): one that ends
within the grace therefore removes nothing, whatever its order.

L{decide} is a pure function of what the agent knows; the agent
(L{p2twisted.agent.service.AgentService}) keeps the times and the last seen
marker and acts on the L{Verdict}.
"""

import json
import os

import attr

from p2twisted.agent.fsutil import fsyncDir

#: Why removals are held (the C{hold} of a L{Verdict}).
NEW_MARKER = "new-marker"
ORPHANS = "orphans"


@attr.s(frozen=True)
class Verdict(object):
    """
    What the agent may do about removals now.

    @ivar remove: the candidates it may remove now.
    @ivar adopt: the orphans to record in reality now (then removed).
    @ivar accept: whether to remember the marker as the last one seen.
    @ivar hold: C{None}, or why removals wait for a confirmation:
        L{NEW_MARKER} or L{ORPHANS}.
    @ivar held: the candidates waiting for a confirmation (or, without a
        marker, for the marker).
    @ivar waiting: C{{pod: time}}: candidates in their grace, and when it ends.
    @ivar wakeAt: when this verdict may change with nothing else happening
        (a grace or the hold timeout ending), or C{None}.
    """

    remove = attr.ib(default=frozenset())
    adopt = attr.ib(default=frozenset())
    accept = attr.ib(default=False)
    hold = attr.ib(default=None)
    held = attr.ib(default=frozenset())
    waiting = attr.ib(default=attr.Factory(dict))
    wakeAt = attr.ib(default=None)


def decide(marker, lastSeen, absentSince, now, grace, orphans=frozenset(), confirmed=None,
           holdSince=None, holdTimeout=None):
    """
    Decide which removal candidates may be removed now.

    @param marker: the identity of the node marker in the store
        (L{p2twisted.records.markerIdentity}), or C{None} when it is absent.
    @param lastSeen: the identity of the marker the agent last accepted, or
        C{None} if it never saw one (then the present one is accepted, unless
        there are orphans).
    @param absentSince: C{{pod: time}}: every removal candidate (orphans
        included) and when the agent first saw it without intent.
    @param now: the time now (same clock as C{absentSince}).
    @param grace: the removal grace, in seconds.
    @param orphans: the pods on disk in neither intent nor reality.
    @param confirmed: the marker identity a person confirmed, or C{None}.
    @param holdSince: when the current hold began, or C{None} if it begins
        now.
    @param holdTimeout: seconds after which a hold ends by itself, or
        C{None}: it waits for a confirmation.
    @return: a L{Verdict}.
    """
    if marker is None:
        return Verdict(held=frozenset(absentSince))
    reason = None
    if lastSeen is not None and marker != lastSeen:
        reason = NEW_MARKER
    elif orphans:
        reason = ORPHANS
    if reason is not None and confirmed != marker:
        timeout = None if holdTimeout is None else (
            now if holdSince is None else holdSince) + holdTimeout
        if timeout is None or now < timeout:
            return Verdict(hold=reason, held=frozenset(absentSince), wakeAt=timeout)
    waiting = {pod: since + grace for pod, since in absentSince.items() if now < since + grace}
    return Verdict(
        remove=frozenset(pod for pod in absentSince if pod not in waiting),
        adopt=frozenset(orphans),
        accept=marker != lastSeen,
        waiting=waiting,
        wakeAt=min(waiting.values()) if waiting else None)


def describe(verdict, node, markerPresent, orphans=()):
    """
    @return: the JSON-able C{removals} part of the agent's status: whether
        removals are held and why, which pods wait, the command that
        confirms, and when a hold times out (C{hold_until}; C{None}: it
        waits for the confirmation).
    """
    if not markerPresent:
        state = "no-marker"
    elif verdict.hold is not None:
        state = "held"
    elif verdict.waiting:
        state = "grace"
    else:
        state = "free"
    record = {"state": state, "hold": verdict.hold, "held": sorted(verdict.held),
              "orphans": sorted(orphans),
              "grace_until": {pod: t for pod, t in sorted(verdict.waiting.items())}}
    if verdict.hold is not None:
        record["confirm"] = "p2 node confirm %s" % (node,)
        record["hold_until"] = verdict.wakeAt
    return record


class MarkerMemory(object):
    """
    The identity of the node marker the agent last accepted, kept in a file
    of its state directory so a restarted agent still knows it.

    @param path: the file (L{p2twisted.agent.layout.StateLayout.nodeMarker}).
    @param node: this agent's node: a file written for another node is
        not remembered.
    """

    def __init__(self, path, node):
        self.path = path
        self.node = node

    def load(self):
        """
        @return: the remembered identity; C{None} when there is no file or it
            is another node's; when it cannot be read, an identity no marker
            has (so the present one starts a hold).
        """
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            return {"unreadable": str(e)}
        if not isinstance(data, dict) or "marker" not in data:
            return {"unreadable": "not a remembered marker: %.100r" % (data,)}
        if data.get("node") != self.node:
            return None
        return data["marker"]

    def save(self, identity):
        """
        Remember C{identity}, atomically (a temporary file renamed over it).

        @raise OSError: if it cannot be written.
        """
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        tmp = "%s.%s" % (self.path, os.urandom(6).hex())
        try:
            with open(tmp, "w") as f:
                json.dump({"node": self.node, "marker": identity}, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        fsyncDir(directory)
