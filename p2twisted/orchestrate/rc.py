# -*- test-case-name: tests.test_orchestrate_rc -*-
"""
A replication controller's decision: C{decide(rc, snapshot) -> Plan}.

Exactly C{replicas_desired} eligible nodes run the RC's manifest, one pod per
node (P2's C{pkg/rc}, reference/p2.md section 8), with these rules:

 - A disabled RC changes nothing.
 - The RC's pods are those whose pod labels say C{replication_controller_id}
   is the RC (and whose pod id is the manifest's).
 - Too few pods on eligible nodes: new ones go first to nodes where the RC
   can take a pod over in place (below), then to nodes already running its
   manifest under no RC (scheduled by hand, or their labels lost), which it
   adopts by labelling them, then to eligible nodes without the pod, fewest
   pods first, then by name.  Too few such nodes: it schedules
   what it can and reports the C{shortfall}.
 - Too many: ineligible nodes' pods go first, unhealthy before healthy, then
   unhealthy eligible ones, then the most loaded nodes, by name from the end.
   A healthy pod is removed only while at least C{replicas_desired} healthy
   pods stay, so a node that stops matching the selector loses its pod only
   once its replacement is healthy.
 - A pod whose intent drifted from the RC's manifest (by canonical SHA), or
   whose labels lost the RC's, is rewritten (on eligible nodes); so is one
   whose intent is the RC's manifest unsigned while the RC's is signed (the
   same SHA: the agent does not restart it).
 - Pods labelled as the RC's under another pod id (its manifest's id
   changed) are unscheduled once the RC's own pods are all healthy -- only
   if their labels are what the RC writes (their own C{pod_id} too), so a
   label a person put on some other pod never removes it.
 - A node whose labels are unreadable keeps the RC's pod it has (as if
   it still matched) and gets no new one.
 - A node whose agent is down (no C{machines/<node>}) keeps its pod: the RC
   never unschedules there, places a replacement on a node whose agent is up
   instead, and trims the surplus once the node is back.  When no agent at
   all is up (a store with no agents yet, or a fleet-wide outage) every node
   counts as up, so nothing is replaced en masse.
 - In-place takeover (rolling updates): two RCs sharing a roll run the same
   pod id, and a node runs one copy of it.  The enabled RC of the pair takes
   over the disabled one's I{surplus} pods (beyond that RC's own
   C{replicas_desired}) by rewriting their intent and labels: no pod is
   unscheduled and no node gets a second copy, and since the counts live in
   the two RC records, a restarted orchestrator takes over exactly the same
   pods.
"""

from p2twisted.orchestrate.plan import Plan, Schedule, Unschedule
from p2twisted.errors import StoreError
from p2twisted.manifest.signed import isSigned
from p2twisted.records import PASSING
from p2twisted.records.controllers import POD_ID_LABEL, RC_ID_LABEL
from p2twisted.records.daemonset import DS_ID_LABEL


class PodView(object):
    """
    What L{decide} and L{roll.step} ask of a snapshot about one pod id:
    which nodes count as up, whether a node runs an RC's manifest and is
    healthy on it, whether the pod id is taken on a node.
    """

    def __init__(self, snapshot, podId):
        self.snapshot = snapshot
        self.podId = podId
        nodes = snapshot.nodes()
        self.anyUp = any(snapshot.agentUp(n) for n in nodes)

    def up(self, node):
        return self.snapshot.agentUp(node) if self.anyUp else True

    def runs(self, tree, node, rc):
        """
        Whether C{node}'s C{tree} (C{"intent"} or C{"reality"}) holds
        C{rc}'s manifest: the same bytes, or failing that the same canonical
        SHA (parsing only manifests that differ in bytes).
        """
        entry = getattr(self.snapshot, tree)(node, self.podId)
        if entry is None:
            return False
        if entry.value == rc.manifest:
            return True
        return getattr(self.snapshot, tree + "Sha")(node, self.podId) == rc.sha

    def unsigned(self, node, rc):
        """
        Whether C{node}'s intent holds C{rc}'s manifest (same canonical SHA)
        in other bytes while C{rc}'s are signed: the signed bytes are to be
        written there (an agent requiring signatures refuses the others),
        with no restart (what runs is the same).  An unsigned C{rc} never
        rewrites a signed or differently formatted intent.
        """
        entry = self.snapshot.intent(node, self.podId)
        return (entry is not None and entry.value != rc.manifest and isSigned(rc.manifest)
                and self.runs("intent", node, rc))

    def healthy(self, node, rc):
        """Whether the pod on C{node} runs C{rc}'s manifest and is passing."""
        health = self.snapshot.health(self.podId, node)
        if health is None or health.status != PASSING:
            return False
        if getattr(health, "sha", None) is not None:
            return health.sha == rc.sha
        return self.runs("reality", node, rc)

    def occupied(self, node):
        """Whether anything (intent or pod labels) holds the pod id on C{node}."""
        return (self.snapshot.intent(node, self.podId) is not None
                or self.snapshot.podLabelsVersion(node, self.podId) is not None)

    def adoptable(self, node, rc):
        """
        Whether the pod on C{node} runs C{rc}'s manifest but belongs to no
        RC nor daemon set (scheduled by hand, or its labels were lost): C{rc} may adopt it
        by labelling it, with no restart.
        """
        if not self.runs("intent", node, rc):
            return False
        try:
            labels = self.snapshot.podLabels(node, self.podId)
        except StoreError:
            return False
        return RC_ID_LABEL not in labels and DS_ID_LABEL not in labels

    def load(self, node):
        return len(self.snapshot.podsOnNode(node))

    def podsOf(self, rcId):
        return [node for node, pod in self.snapshot.podsOf(rcId) if pod == self.podId]


def partners(rc, snapshot):
    """
    @return: the RCs C{rc} may take pods over from: disabled RCs sharing a
        roll with it, with the same pod id, while C{rc} is enabled.
    """
    if rc.disabled:
        return []
    found = []
    for roll in snapshot.rolls().values():
        if rc.id not in (roll.old_rc, roll.new_rc):
            continue
        other = snapshot.rc(roll.old_rc if roll.new_rc == rc.id else roll.new_rc)
        if other is not None and other.disabled and other.podId == rc.podId:
            found.append(other)
    return found


def _takeovers(rc, view, eligible):
    """
    @return: C{[node]} whose pod C{rc} may take over, best first: the
        partners' surplus pods on nodes eligible for C{rc}, unhealthy ones
        first (nothing healthy is lost), then by name.
    """
    found = []
    for partner in partners(rc, view.snapshot):
        theirs = view.podsOf(partner.id)
        surplus = len(theirs) - partner.replicas_desired
        if surplus <= 0:
            continue
        candidates = sorted((n for n in theirs if n in eligible),
                            key=lambda n: (view.healthy(n, partner), n))
        found.extend(candidates[:surplus])
    return found


def _place(count, takeovers, free):
    """
    @return: up to C{count} nodes, takeovers first.
    """
    chosen = takeovers[:count]
    return chosen + free[:count - len(chosen)]


def decide(rc, snapshot):
    """
    @param rc: a L{ReplicationController}.
    @param snapshot: a L{Snapshot} of the store.
    @return: the L{Plan} bringing the store toward C{rc}'s desire.
    """
    if rc.disabled:
        return Plan(reason="disabled: no change", snapshot=snapshot)
    view = PodView(snapshot, rc.podId)
    labels = rc.labelsForPods()
    eligible = set(snapshot.eligible(rc.node_selector))
    labelled = snapshot.podsOf(rc.id)
    mine = [n for n, p in labelled if p == rc.podId]
    mineSet = set(mine)
    # A node whose labels cannot be read (a bad write) is not known to have
    # stopped matching: it keeps its pod, and gets no new one.
    eligible.update(n for n in mine if n not in eligible and not _labelsReadable(snapshot, n))
    upMine = [n for n in mine if view.up(n)]
    eligibleUp = [n for n in upMine if n in eligible]
    eligibleDown = [n for n in mine if n in eligible and not view.up(n)]
    desired = rc.replicas_desired

    schedule, unschedule, shortfall = [], [], 0
    need = desired - len(eligibleUp)
    takeovers = _takeovers(rc, view, eligible)
    # A partner's surplus pods on down nodes are taken over whatever the
    # need: nothing runs there to lose, and the partner must end with none.
    # They hold no place, like the RC's own pods on down nodes.
    schedule = [n for n in takeovers if not view.up(n)]
    if need > 0:
        free = sorted((n for n in eligible if n not in mineSet and not view.occupied(n)),
                      key=lambda n: (view.load(n), n))
        adoptable = [n for n in sorted(eligible) if n not in mineSet and view.up(n)
                     and view.adoptable(n, rc)]
        up = _place(need, [n for n in takeovers if view.up(n)] + adoptable,
                    [n for n in free if view.up(n)])
        # The pods on down nodes hold their places until replaced on up nodes.
        rest = need - len(up) - len(eligibleDown) - len(schedule)
        down = [n for n in free if not view.up(n)][:max(rest, 0)]
        schedule = schedule + up + down
        shortfall = max(rest - len(down), 0)

    excess = len(upMine) - desired
    if excess > 0:
        healthy = {n for n in upMine if view.healthy(n, rc)}
        # Ineligible first, unhealthy first; then the most loaded nodes, then
        # by name from the end (the reverse of the order pods are placed in).
        # Eligible pods go only beyond the desired count: the surplus that
        # ineligible pods make waits for their replacements' health.
        order = sorted(upMine, key=lambda n: (n in eligible, n in healthy, -view.load(n),
                                              _descending(n)))
        eligibleExcess = len(eligibleUp) - desired
        keptHealthy = len(healthy)
        for node in order:
            if len(unschedule) == excess:
                break
            if node in eligible and eligibleExcess <= 0:
                break
            if node in healthy:
                if keptHealthy - 1 < desired:
                    continue
                keptHealthy -= 1
            eligibleExcess -= node in eligible
            unschedule.append(node)

    # Pods labelled as this RC's under another pod id (its manifest's id
    # changed) go once the RC's own pods are all there and healthy.
    # Only pods labelled as the RC labels them (their own pod_id too): a
    # person's label on some other pod makes it no stray of the RC's.
    strays = [(n, p) for n, p in labelled if p != rc.podId and view.up(n)
              and snapshot.podLabels(n, p).get(POD_ID_LABEL) == p]
    if strays and len([n for n in eligibleUp if view.healthy(n, rc)]) >= desired:
        unscheduleOthers = strays
    else:
        unscheduleOthers = []

    going = set(unschedule)
    rewrite = [n for n in mine if n in eligible and n not in going
               and (not view.runs("intent", n, rc) or view.unsigned(n, rc)
                    or not _hasLabels(snapshot.podLabels(n, rc.podId), labels))]

    changes = ([Schedule(n, rc.podId, rc.manifest, labels) for n in schedule + rewrite]
               + [Unschedule(n, rc.podId) for n in unschedule]
               + [Unschedule(n, p) for n, p in unscheduleOthers])
    return Plan(changes, reason=_reason(schedule, unschedule + ["%s/%s" % s for s in
                                                              unscheduleOthers],
                                        rewrite, shortfall, desired, len(eligible)),
                shortfall=shortfall, snapshot=snapshot)


def _labelsReadable(snapshot, node):
    try:
        snapshot.nodeLabels(node)
    except StoreError:
        return False
    return True


def _hasLabels(actual, wanted):
    return all(actual.get(k) == v for k, v in wanted.items())


def _descending(name):
    return tuple(-ord(c) for c in name) + (1,)


def _reason(schedule, unschedule, rewrite, shortfall, desired, eligible):
    parts = []
    if schedule:
        parts.append("schedule on %s" % (", ".join(schedule),))
    if unschedule:
        parts.append("unschedule from %s" % (", ".join(unschedule),))
    if rewrite:
        parts.append("rewrite drifted %s" % (", ".join(rewrite),))
    if shortfall:
        parts.append("%d short of %d desired: only %d eligible node(s)"
                     % (shortfall, desired, eligible))
    return "; ".join(parts) or "converged"

