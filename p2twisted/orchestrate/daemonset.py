# -*- test-case-name: tests.test_orchestrate_daemonset -*-
"""
A daemon set's decision: C{decide(ds, snapshot, now, progress) -> Plan |
Wait | Done}.  Pure: the only state kept between two decisions is
L{Progress} (when each node's new pod started, when the last node
started), which the controller keeps and passes in.

The pod runs on every node C{node_selector} matches (the node universe,
labelled or not), labelled C{daemon_set_id} (P2's C{pkg/ds}, reference/p2.md
section 8), with these rules, in order:

 - A disabled daemon set changes nothing.
 - Contention (P2's check): another enabled daemon set of the same pod id
   whose selector overlaps (either is every node, they are the same, or
   they match a node in common) -- the one of the two with fewer pods (on a
   tie, the later id) disables itself, loudly: its reason and audit event
   name the other, whose record must be unchanged (never both).  Neither ever overwrites a pod another controller's
   labels claim.
 - Zero match (failsafe): while the selector matches no node at all, nothing
   is unscheduled (a wiped label tree must not remove the pod everywhere).
 - A node that stops matching loses the pod, once seen not matching for
   L{LEAVE_GRACE} seconds (a wipe seen half-way is no reason), at most
   C{parallel} nodes per decision.
 - New nodes get the pod at C{rate} (seconds between starting two nodes; 0
   is no limit), while fewer than C{parallel} nodes' new pods are not yet
   healthy.  A node already running the manifest under no controller is
   adopted (labelled) at once; one running another manifest of the pod
   under no controller is replaced as the set's own old pods are.
 - A pod whose intent is the set's manifest (same SHA) in other bytes, while
   the set's are signed, gets the signed bytes at once (no restart follows).
 - A manifest change replaces the pod node by node under the same limits,
   failing pods first, and never takes a healthy pod down while that
   would leave fewer than C{min_health} percent of the set's pods healthy
   (P2 stored C{min_health} but never enforced it), nor one reporting no
   health while fewer are (not known down: its agent may have restarted).
 - A node whose new pod is not healthy C{timeout} seconds after it started
   halts the replacement: no other node's pod is replaced until that one
   turns healthy (also if it leaves the set meanwhile), the manifest
   changes, or the set is disabled and enabled again (new nodes still get
   the pod: that takes nothing away).
 - Nodes whose agent is down are left alone but for new nodes' intent
   (waiting for their agent), and count neither as started nor as healthy.

L{orphans}: pods labelled with a daemon set id that has no record (deleted
out of band, or a cascade cut short) are unscheduled, but only after
L{ORPHAN_GRACE} seconds, by one daemon set's controller, and never when the
listing of daemon sets is empty (P2's gap: its cleanup trusted an empty
listing).
"""

import attr

from p2twisted.errors import StoreError
from p2twisted.orchestrate.plan import Done, Plan, Schedule, Unschedule, UpdateRecord, Wait
from p2twisted.orchestrate.rc import PodView
from p2twisted.records.controllers import POD_ID_LABEL, RC_ID_LABEL, AuditEvent
from p2twisted.records.daemonset import DS_ID_LABEL

#: The kind the audit log names daemon sets by.
AUDIT_KIND = "daemon_set"

#: Seconds a pod's daemon set record must be gone before its pod is
#: removed as an orphan.
ORPHAN_GRACE = 60.0

#: Seconds a node must be seen not matching before it loses the pod: a
#: wipe of the node labels seen half-way (on ZooKeeper, watches deliver a
#: transaction's writes one by one) must not remove the pod from the nodes
#: seen first, before the whole wipe shows and the set holds.
LEAVE_GRACE = 5.0


@attr.s(frozen=True)
class Progress(object):
    """
    What a daemon set's controller remembers between decisions.

    @ivar started: C{{node: (sha, when)}}: when the pod of C{sha} started
        on each node whose pod is not yet healthy.
    @ivar last: when the last node was started, or C{None}.
    @ivar orphans: C{{dsId: when}}: when pods of a daemon set with no record
        were first seen.
    @ivar halted: C{(sha, node)}: the manifest whose replacement a node's
        timeout halted, and that node, or C{None}.
    @ivar leaving: C{{node: when}}: when each of the set's nodes was first
        seen not matching.
    """

    started = attr.ib(factory=dict)
    last = attr.ib(default=None)
    orphans = attr.ib(factory=dict)
    halted = attr.ib(default=None)
    leaving = attr.ib(factory=dict)

    def toJSON(self):
        return {"started": {n: [sha, t] for n, (sha, t) in sorted(self.started.items())},
                "last": self.last, "orphans": dict(self.orphans),
                "halted": None if self.halted is None else list(self.halted),
                "leaving": dict(self.leaving)}

    @classmethod
    def fromJSON(cls, data):
        """
        @return: the progress C{toJSON} gave, or an empty one for anything
            unreadable (the timers then start again: later, never sooner).
        """
        try:
            started = {str(n): (str(v[0]), float(v[1]))
                       for n, v in (data.get("started") or {}).items()}
            orphans = {str(k): float(v) for k, v in (data.get("orphans") or {}).items()}
            leaving = {str(k): float(v) for k, v in (data.get("leaving") or {}).items()}
            last, halted = data.get("last"), data.get("halted")
            if halted is not None:
                halted = (str(halted[0]), str(halted[1]))
            return cls(started, None if last is None else float(last), orphans, halted,
                       leaving)
        except (AttributeError, TypeError, ValueError, IndexError):
            return cls()


class Survey(object):
    """
    A daemon set's pods in one snapshot.

    @ivar eligible: the nodes the selector matches (plus the set's nodes
        whose labels are unreadable: not known to have stopped matching).
    @ivar mine: the set's nodes (by pod label).
    @ivar remove: the set's nodes that stopped matching.
    @ivar add: matching nodes without the pod (or whose agent is down), to
        start.
    @ivar adopt: matching nodes running the manifest under no controller.
    @ivar blocked: C{{node: owner}} of matching nodes whose pod another
        controller claims.
    @ivar relabel: the set's nodes running its manifest whose labels lack
        the set's.
    @ivar sign: the set's other nodes whose intent is its manifest (same
        SHA) in other bytes while the set's are signed: rewritten at once,
        outside any budget (what runs is the same; the agent restarts
        nothing).
    @ivar members: the set's matching nodes, agent up or not, and those of
        C{old} it takes over: the pods C{min_health} is a percentage of.
    @ivar old: the set's matching nodes (agent up) not running its
        manifest, and the matching nodes running another manifest of the
        pod under no controller.
    @ivar updated: the set's matching nodes (agent up) running it.
    @ivar healthy: the nodes of C{old} and C{updated} whose pod is passing
        on the manifest it intends.
    @ivar failing: the nodes of C{old} whose pod reports a failing health
        check (known down: replacing it takes nothing away).
    @ivar inflight: the nodes of C{updated} not healthy.
    """

    def __init__(self, ds, snapshot):
        self.ds = ds
        view = self.view = PodView(snapshot, ds.pod_id)
        eligible = set(snapshot.eligible(ds.node_selector))
        mine = [n for n, p in snapshot.podsOfDaemonSet(ds.id) if p == ds.pod_id]
        eligible.update(n for n in mine if n not in eligible and not _readable(snapshot, n))
        mineSet = set(mine)
        self.eligible, self.mine = eligible, mine
        self.remove = sorted(mineSet - eligible)
        self.blocked, self.add, self.adopt = {}, [], []
        for node in sorted(eligible - mineSet):
            owner = _owner(snapshot, node, ds.pod_id)
            if owner is not None:
                self.blocked[node] = owner
            elif view.runs("intent", node, ds):
                self.adopt.append(node)
            else:
                self.add.append(node)
        # Nodes (agent up) running another manifest of the pod under no
        # controller are running pods to replace under min_health like the
        # set's own old ones, not new nodes to start at once.
        takeover = [n for n in self.add if view.up(n)
                    and snapshot.intent(n, ds.pod_id) is not None]
        self.add = [n for n in self.add if n not in takeover]
        wanted = ds.labelsForPods()
        inSet = [n for n in mine if n in eligible]
        self.members = inSet + takeover
        self.relabel = [n for n in inSet if view.runs("intent", n, ds) and not all(
            snapshot.podLabels(n, ds.pod_id).get(k) == v for k, v in wanted.items())]
        self.sign = [n for n in inSet if n not in self.relabel and view.unsigned(n, ds)]
        up = [n for n in inSet if view.up(n)]
        self.updated = [n for n in up if view.runs("intent", n, ds)]
        self.old = sorted([n for n in up if n not in self.updated] + takeover)
        self.healthy = {n for n in up + takeover if _healthy(snapshot, n, ds.pod_id)}
        self.failing = {n for n in self.old if n not in self.healthy
                        and _failing(snapshot, n, ds.pod_id)}
        self.inflight = [n for n in self.updated if n not in self.healthy]

    def counts(self):
        return {"desired": len(self.eligible) - len(self.blocked), "current": len(self.mine),
                "updated": len(self.updated), "healthy": len(self.healthy),
                "old": len(self.old), "blocked": len(self.blocked)}


def _readable(snapshot, node):
    try:
        snapshot.nodeLabels(node)
    except StoreError:
        return False
    return True


def _owner(snapshot, node, podId):
    """@return: the controller another pod's labels name on C{node}, or C{None}."""
    try:
        labels = snapshot.podLabels(node, podId)
    except StoreError:
        return "unreadable labels"
    if RC_ID_LABEL in labels:
        return "replication controller %s" % (labels[RC_ID_LABEL],)
    if DS_ID_LABEL in labels:
        return "daemon set %s" % (labels[DS_ID_LABEL],)
    return None


def _healthy(snapshot, node, podId):
    """Whether the pod on C{node} passes its health check on the manifest it intends."""
    health = snapshot.health(podId, node)
    if health is None or health.status != "passing":
        return False
    sha = snapshot.intentSha(node, podId)
    if getattr(health, "sha", None) is not None:
        return health.sha == sha
    return snapshot.realitySha(node, podId) == sha


def _failing(snapshot, node, podId):
    """Whether the pod on C{node} reports a health check failing (not: none)."""
    health = snapshot.health(podId, node)
    return health is not None and health.status != "passing"


def contender(ds, snapshot):
    """
    @return: the first other enabled daemon set (by id) of C{ds}'s pod id
        whose nodes overlap C{ds}'s, or C{None}.  Either selecting every
        node, or both the same selector, overlaps (as in P2), whatever the
        nodes.
    """
    mine = None
    for otherId, other in sorted(snapshot.daemonSets().items()):
        if otherId == ds.id or other.disabled or other.pod_id != ds.pod_id:
            continue
        if not ds.node_selector or not other.node_selector or \
                ds.node_selector == other.node_selector:
            return other
        if mine is None:
            mine = set(snapshot.eligible(ds.node_selector))
        if mine & set(snapshot.eligible(other.node_selector)):
            return other
    return None


def _loses(ds, other, snapshot):
    """Whether C{ds}, not C{other}, gives way: fewer pods, or on a tie the later id."""
    mine, theirs = len(snapshot.podsOfDaemonSet(ds.id)), len(snapshot.podsOfDaemonSet(other.id))
    return (mine, other.id) < (theirs, ds.id)


def _started(progress, node, sha, now):
    found = progress.started.get(node)
    return found[1] if found is not None and found[0] == sha else now


def decide(ds, snapshot, now, progress=Progress()):
    """
    @param ds: the L{DaemonSet} (its current record is read from C{snapshot}).
    @param now: seconds since the epoch.
    @param progress: the L{Progress} the controller kept.
    @return: a L{Plan}, a L{Wait} (with C{at} when time alone will change
        something) or L{Done} (the record is gone).
    """
    current = snapshot.daemonSet(ds.id)
    if current is None:
        return Done("daemon set %s is gone" % (ds.id,))
    ds = current
    rival = contender(ds, snapshot)
    if ds.disabled:
        if rival is not None:
            return Wait("DISABLED: contends with daemon set %s (pod %s); no change"
                        % (rival.id, ds.pod_id))
        return Wait("disabled: no change")
    if rival is not None and _loses(ds, rival, snapshot):
        why = ("contends with daemon set %s (pod %s, selectors %r and %r overlap)"
               % (rival.id, ds.pod_id, ds.node_selector, rival.node_selector))
        # The other's record is rewritten as read (compare-and-set): of two
        # sets that each give way over snapshots of different moments (their
        # pod counts moved in between), the second to write fails.
        return Plan([UpdateRecord(ds.key, ds.withDisabled(True).toBytes(),
                                  snapshot.version(ds.key)),
                     UpdateRecord(rival.key, snapshot.entries[rival.key].value,
                                  snapshot.version(rival.key))],
                    reason="DISABLED: " + why,
                    events=[AuditEvent(AUDIT_KIND, ds.id, "contention", {
                        "other": rival.id, "pod_id": ds.pod_id, "reason": why})],
                    snapshot=snapshot)
    found = Survey(ds, snapshot)
    cleanup = orphanChanges(ds, snapshot, now, progress)
    if not found.eligible:
        reason = ("HOLDING: selector %r matches no node; unscheduling nothing (%d pod(s) kept)"
                  % (ds.node_selector, len(found.mine)))
        if cleanup:
            return Plan(cleanup, reason=reason, snapshot=snapshot)
        return Wait(reason)

    labels = ds.labelsForPods()
    timedOut, deadlines = _timeouts(ds, found, progress, now)
    halt = _halt(ds, found, progress, timedOut)
    slots = ds.parallel - (len(found.inflight) - len(timedOut))
    last = _lastStart(ds, found, progress, now)
    paced = ds.rate > 0 and last is not None and now < last + ds.rate
    if paced:
        deadlines.append(last + ds.rate)
        slots = 0
    elif ds.rate > 0:
        slots = min(slots, 1)

    leaving = [n for n in found.remove if progress.leaving.get(n, now) + LEAVE_GRACE > now]
    deadlines.extend(progress.leaving.get(n, now) + LEAVE_GRACE for n in leaving)
    # At most `parallel` nodes lose the pod per decision: a mistyped
    # selector that still matches a node takes the pod from the others a
    # few at a time, not all at once.
    ready = [n for n in found.remove if n not in leaving]
    remove = ready[:ds.parallel]
    starts = found.add[:max(slots, 0)]
    halted = None
    # With no old pod left, a halt has nothing to stop (new nodes still get
    # the pod): saying HALTED would be a lie.
    if halt is not None and found.old:
        halted = ("HALTED: the new pod on %s is not healthy %gs after it started; replacing "
                  "nothing more (%d node(s) left on the old version; a healthy pod there, a "
                  "new manifest, or disabling and enabling the set goes on)"
                  % (halt, ds.timeout, len(found.old)))
    else:
        # A node whose agent is down counts, as not known healthy.
        budget = len(found.healthy) - ds.minHealthy(len(found.members))
        # Failing pods first (free), then those reporting no health (not
        # known down: only while enough are known healthy), then healthy ones.
        for node in sorted(found.old, key=lambda n: (n not in found.failing,
                                                     n in found.healthy, n)):
            if len(starts) >= slots:
                break
            if node in found.healthy:
                if budget <= 0:
                    continue
                budget -= 1
            elif node not in found.failing and budget < 0:
                continue
            starts.append(node)
    changes = ([Schedule(n, ds.pod_id, ds.manifest, labels)
                for n in found.adopt + found.relabel + found.sign + starts]
               + [Unschedule(n, ds.pod_id) for n in remove] + cleanup)
    parts = []
    for what, nodes in (("adopt", found.adopt), ("relabel", found.relabel),
                        ("write the signed manifest on", found.sign),
                        ("start", [n for n in starts if n in found.add]),
                        ("replace", [n for n in starts if n not in found.add]),
                        ("unschedule", remove)):
        if nodes:
            parts.append("%s %s" % (what, _few(nodes)))
    if len(ready) > len(remove):
        parts.append("%d more to unschedule (parallel %d)"
                     % (len(ready) - len(remove), ds.parallel))
    if cleanup:
        parts.append("remove %d orphaned pod(s)" % (len(cleanup),))
    if leaving:
        parts.append("leaving: %s (not matching; unscheduled if still so after %gs)"
                     % (_few(leaving), LEAVE_GRACE))
    if timedOut and not halted:
        parts.append("not healthy %gs after starting: %s" % (ds.timeout, _few(timedOut)))
    if halted:
        parts.insert(0, halted)
    elif (found.old or found.add) and not starts:
        if paced:
            why = "the next start in %gs (rate %gs)" % (last + ds.rate - now, ds.rate)
        elif slots <= 0:
            why = "%d node(s) starting (parallel %d)" % (len(found.inflight), ds.parallel)
        else:
            why = "%d healthy of %d, min_health %d%%" % (
                len(found.healthy), len(found.members), ds.min_health)
        parts.append("waiting: %d node(s) on the old version, %d to add; %s"
                     % (len(found.old), len(found.add), why))
    if found.blocked:
        parts.append("%d node(s) run the pod under another controller (%s)"
                     % (len(found.blocked), _few(["%s: %s" % kv for kv in
                                                  sorted(found.blocked.items())])))
    if not parts and found.inflight:
        parts.append("placed on %d node(s); starting: %s"
                     % (len(found.updated), _few(found.inflight)))
    reason = "; ".join(parts) or "converged: %d node(s)" % (len(found.updated),)
    if changes:
        return Plan(changes, reason=reason, snapshot=snapshot)
    return Wait(reason, at=min(deadlines) if deadlines else None)


def _lastStart(ds, found, progress, now):
    """
    @return: when the last node was started: C{progress.last}, or C{now}
        when a node is starting that C{progress} does not know (a start
        whose progress a dead controller never wrote: later, never sooner).
    """
    if any(_started(progress, n, ds.sha, None) is None for n in found.inflight):
        return now
    return progress.last


def _timeouts(ds, found, progress, now):
    """
    @return: C{(timedOut, deadlines)}: the nodes whose new pod is past its
        timeout, and when the others' run out.
    """
    timedOut, deadlines = [], []
    for node in found.inflight:
        deadline = _started(progress, node, ds.sha, now) + ds.timeout
        if deadline <= now:
            timedOut.append(node)
        else:
            deadlines.append(deadline)
    return timedOut, deadlines


def _halt(ds, found, progress, timedOut):
    """
    @return: the node whose timeout halts C{ds}'s replacement, or C{None}:
        one timed out now, or the one that halted it before, until its pod
        turns healthy on this manifest -- also when it has left the set
        meanwhile (the manifest is no better for it).
    """
    if timedOut:
        return timedOut[0]
    if progress.halted is not None and progress.halted[0] == ds.sha:
        node = progress.halted[1]
        if not (node in found.updated and node in found.healthy):
            return node
    return None


def _few(nodes, most=5):
    nodes = list(nodes)
    if len(nodes) <= most:
        return ", ".join(nodes)
    return "%s and %d more" % (", ".join(nodes[:most]), len(nodes) - most)


def orphanOwners(snapshot):
    """
    @return: the daemon set ids some pod's labels name but whose record is
        absent -- none at all when no daemon set record was listed (the
        failsafe: an empty listing says nothing about which are gone).
    """
    listed = snapshot.daemonSetIds()
    if not listed:
        return []
    return [o for o in snapshot.daemonSetOwners() if o not in listed]


def orphanChanges(ds, snapshot, now, progress):
    """
    @return: the L{Unschedule}s of orphaned pods (see L{orphanOwners})
        whose daemon set has been gone L{ORPHAN_GRACE} seconds, when C{ds}
        is the enabled daemon set of the lowest id (one controller cleans
        up); else C{[]}.
    """
    enabled = [i for i, d in sorted(snapshot.daemonSets().items()) if not d.disabled]
    if not enabled or enabled[0] != ds.id:
        return []
    changes = []
    for owner in orphanOwners(snapshot):
        if progress.orphans.get(owner, now) + ORPHAN_GRACE > now:
            continue
        for node, podId in snapshot.podsOfDaemonSet(owner):
            if snapshot.podLabels(node, podId).get(POD_ID_LABEL) == podId:
                changes.append(Unschedule(node, podId))
    return changes


def advance(progress, ds, snapshot, outcome, now):
    """
    @return: the L{Progress} after deciding C{outcome} over C{snapshot}:
        start times of the nodes in flight (new ones now), the time of the
        last start, and when each orphan owner was first seen.
    """
    current = snapshot.daemonSet(ds.id) or ds
    found = Survey(current, snapshot)
    # A disabled set's timers start again when it is enabled.
    started = {} if current.disabled else {
        n: (current.sha, _started(progress, n, current.sha, now)) for n in found.inflight}
    last = progress.last if current.disabled else _lastStart(current, found, progress, now)
    for change in getattr(outcome, "changes", ()):
        if isinstance(change, Schedule) and change.podId == current.pod_id and \
                not found.view.runs("intent", change.node, current):
            started[change.node] = (current.sha, now)
            last = now
    orphans = {o: progress.orphans.get(o, now) for o in orphanOwners(snapshot)}
    halt = None
    if not current.disabled:
        halt = _halt(current, found, progress, _timeouts(current, found, progress, now)[0])
    # While the selector matches nothing the set holds: nodes leave only
    # once some match again, after the grace from then.
    leaving = {n: progress.leaving.get(n, now) for n in found.remove} if found.eligible else {}
    return Progress(started, last, orphans, None if halt is None else (current.sha, halt),
                    leaving)


def status(ds, snapshot, outcome, progress):
    """@return: the JSON-able status a daemon set's controller reports."""
    found = Survey(ds, snapshot)
    return dict(found.counts(), sha=ds.sha, disabled=ds.disabled,
                reason=outcome.reason, halted=outcome.reason.startswith("HALTED"),
                starting=sorted(found.inflight), progress=progress.toJSON())
