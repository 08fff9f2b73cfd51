# -*- test-case-name: tests.test_orchestrate_podcluster -*-
"""
Pod cluster membership and its failsafe, as pure functions over a
L{Snapshot}.

A member is a pod with intent whose pod labels match the cluster's
C{pod_selector}.  Its address is C{host:port}:

  - host: the C{pod_address} its node's agent publishes in C{machines/<node>}
    (the address its pods listen on), else the node's name;
  - port: the cluster's C{port} annotation, else the C{status} port of the
    manifest in the node's intent; a member with neither has no address
    (syncers leave it out).

It is healthy when its node's agent reports it passing I{for the manifest in
its intent}: a pod whose intent just changed (a roll rewrote it) leaves the
syncers at once, while its agent installs the new version -- before it
halts the old one -- and returns once the new one passes.

The failsafe (the seed's VIP failsafe, DESIGN.md principle 4): a membership
whose healthy members suddenly drop to none, or by more than half, is synced
only after a second read confirms it (L{guard}); until then the syncers keep
what they last had.
"""

import attr

from p2twisted import records
from p2twisted.errors import P2Error

@attr.s(frozen=True, order=True)
class Member(object):
    """
    One pod of a pod cluster.

    @ivar address: C{"host:port"}, or C{None} when no port is known.
    """

    node = attr.ib()
    pod_id = attr.ib()
    address = attr.ib()
    healthy = attr.ib()

    def toDict(self):
        return {"node": self.node, "pod_id": self.pod_id, "address": self.address,
                "healthy": self.healthy}


@attr.s(frozen=True)
class Membership(object):
    """
    A pod cluster and its members (sorted), as one snapshot saw them.
    """

    cluster = attr.ib()
    members = attr.ib(converter=tuple)

    def healthy(self):
        """@return: the healthy members with an address, sorted."""
        return [m for m in self.members if m.healthy and m.address is not None]

    def addresses(self):
        """@return: the addresses of the L{healthy} members, sorted."""
        return sorted(m.address for m in self.healthy())

    def toDict(self):
        return {"cluster": self.cluster.toDict(),
                "members": [m.toDict() for m in self.members]}


def _port(cluster, snapshot, node, podId):
    port = cluster.port()
    if port is not None:
        return port
    entry = snapshot.intent(node, podId)
    if entry is None:
        return None
    from p2twisted.manifest import parseManifest
    try:
        return parseManifest(entry.value).status.port
    except P2Error:
        return None


def _host(snapshot, node):
    try:
        facts = snapshot.machineFacts(node)
    except records.CorruptRecord:
        facts = None
    address = facts.facts.get("pod_address") if facts is not None else None
    return address if isinstance(address, str) and address else node


def membership(cluster, snapshot):
    """
    @return: the L{Membership} of C{cluster} in C{snapshot}.
    """
    members = []
    for node, podId in snapshot.podsMatching(cluster.selector()):
        port = _port(cluster, snapshot, node, podId)
        address = None if port is None else "%s:%d" % (_host(snapshot, node), port)
        health = snapshot.health(podId, node)
        healthy = health is not None and health.passing and (
            health.sha is None or health.sha == snapshot.intentSha(node, podId))
        members.append(Member(node, podId, address, healthy))
    return Membership(cluster, sorted(members))


@attr.s(frozen=True)
class Verdict(object):
    """
    What L{guard} says of a new membership.

    @ivar sync: whether to sync it now.
    @ivar held: C{(addresses, since)} held back for confirmation, or C{None}.
    @ivar at: when to read again to confirm (seconds since the epoch), or
        C{None}.
    @ivar reason: one line saying why.
    @ivar confirmed: whether it syncs a drop a second read confirmed (the
        new baseline: what was synced before no longer counts).
    """

    sync = attr.ib()
    held = attr.ib(default=None)
    at = attr.ib(default=None)
    reason = attr.ib(default="")
    confirmed = attr.ib(default=False)


def drops(before, after):
    """
    @param before: the healthy addresses last synced.
    @param after: the healthy addresses now.
    @return: whether going from C{before} to C{after} is a sudden drop: to
        none from some, or to fewer than half as many (a count: members all
        replaced by as many others is no drop).
    """
    before, after = len(set(before)), len(set(after))
    return before > 0 and (after == 0 or (before - after) * 2 > before)


def baseline(history, now, window):
    """
    What a new membership is compared with: the largest healthy membership
    synced in the last C{window} seconds, so a wipe delivered in steps (a
    recursive delete, key by key) is one drop, not several small ones.

    @param history: C{[(when, addresses)]} synced, oldest first.
    @return: those addresses, or C{None} when nothing was synced; the last
        synced when none is that recent.
    """
    if not history:
        return None
    recent = [addresses for when, addresses in history if when >= now - window]
    return max(recent or [history[-1][1]], key=len)


def remember(history, when, addresses, window):
    """
    @return: C{history} with C{addresses} synced at C{when}, keeping only the
        entries L{baseline} may still use (and the last).
    """
    return [(t, a) for t, a in history if t >= when - window] + [(when, list(addresses))]


def guard(synced, current, held, now, confirmAfter):
    """
    The failsafe.

    @param synced: the healthy addresses last synced (their L{baseline}), or
        C{None} when nothing was ever synced.
    @param current: the healthy addresses read now.
    @param held: C{(addresses, since)}: what an earlier read held back and
        since when; or C{None}.
    @param now: seconds since the epoch.
    @param confirmAfter: seconds after a drop was first seen before a second
        read may confirm it.
    @return: a L{Verdict}: sync unless C{current} is a sudden drop from
        C{synced} not yet confirmed -- by a read at least C{confirmAfter}
        seconds after the first seeing the same addresses.
    """
    current = sorted(current)
    if synced is None or not drops(synced, current):
        return Verdict(True, reason="in sync" if sorted(synced or ()) == current
                       else "membership changed")
    drop = "healthy members dropped from %d to %d" % (len(synced), len(current))
    if held is not None and sorted(held[0]) == current:
        if now >= held[1] + confirmAfter:
            return Verdict(True, reason="a second read confirmed it: %s" % (drop,),
                           confirmed=True)
        return Verdict(False, held=held, at=held[1] + confirmAfter, reason=(
            "FAILSAFE: %s; holding the last membership until a second read confirms it"
            % (drop,)))
    return Verdict(False, held=(current, now), at=now + confirmAfter, reason=(
        "FAILSAFE: %s; holding the last membership until a second read confirms it"
        % (drop,)))
