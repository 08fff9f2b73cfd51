# -*- test-case-name: tests.test_auth_agent -*-
"""
L{AuthGate}: what the agent's pod workers and hook pods ask before a change
of what runs.  It remembers each refusal with the manifest's bytes and the
policy's generation, so a refused manifest is judged (and its
C{after_auth_fail} hooks run) once, and again only when the manifest or the
policy changes.
"""

from twisted.internet import defer
from twisted.logger import Logger

log = Logger()


class AuthGate(object):
    """
    @param auth: an L{IAuthPolicy} with a C{generation} (the agent's
        L{p2twisted.auth.reload.PolicyReloader}).
    @param onRefused: C{callable(manifest, decision)} returning a
        L{Deferred}: the refusal hooks; their failure is only logged.
    """

    def __init__(self, auth, onRefused=None):
        self.auth = auth
        self.onRefused = onRefused
        self._refusals = {}

    def refusal(self, name, raw):
        """
        @return: the L{Decision} that refused C{raw} as C{name}'s manifest,
            or C{None}.
        """
        known = self._refusals.get(name)
        return known[2] if known is not None and known[0] == raw else None

    def forget(self, name):
        self._refusals.pop(name, None)

    @defer.inlineCallbacks
    def check(self, name, raw, manifest, judged=None):
        """
        Ask the policy about C{manifest} (bytes C{raw}) for C{name} (a pod,
        a hook pod), unless it refused the same bytes under the same policy.

        @param judged: what the policy is asked about, if not C{manifest}
            itself (a hook pod's manifest with the C{run_as} its scripts
            really run as).
        @return: L{Deferred} firing with the L{Decision}.
        """
        while True:
            generation = self.auth.generation
            known = self._refusals.get(name)
            if known is not None and known[:2] == (raw, generation):
                return known[2]
            decision = yield self.auth.authorize(manifest if judged is None else judged)
            # A policy that changed while it was asked may answer otherwise
            # (and told its subscribers before this refusal was known, so
            # nothing else would ask again): ask the new one.
            if self.auth.generation == generation:
                break
        if decision.allowed:
            self._refusals.pop(name, None)
            return decision
        self._refusals[name] = (raw, generation, decision)
        log.warn("{name}: manifest {sha} {refusal}; nothing is installed, and what runs keeps "
                 "running", name=name, pod=manifest.id, sha=manifest.sha(),
                 refusal=decision.describe(), event="auth-refused")
        if self.onRefused is not None:
            try:
                yield self.onRefused(manifest, decision)
            except Exception as e:
                log.warn("{name}: after_auth_fail hooks: {error}", name=name, error=str(e))
        return decision
