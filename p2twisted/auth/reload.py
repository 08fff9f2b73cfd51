# -*- test-case-name: tests.test_auth_reload -*-
"""
The agent's policy, rebuilt without a restart when its files change.

L{PolicyReloader} reads the policy's files (keyring, allowed signers,
deploy policy) every C{reload_interval} seconds on its clock (a
L{LoopingCall}); when their contents changed, it builds the policy again
and tells its subscribers (the pod workers and the hook pods try again what
was refused).  A policy that cannot be built (a file missing, a deploy
policy that does not parse) refuses everything until it is fixed -- a
refusal changes nothing that runs -- and the log says why, once per change.
"""

import hashlib

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted.auth.policy import NONE, IAuthPolicy, RefuseAll
from p2twisted.auth.settings import buildPolicy

log = Logger()


def filesState(paths):
    """
    @return: a comparable summary of the files' contents (a SHA-256 each,
        C{None} for a missing one).
    """
    state = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                state.append(hashlib.sha256(f.read()).hexdigest())
        except OSError:
            state.append(None)
    return tuple(state)


def _close(policy):
    """
    Let the policy's verifiers that hold resources (a GNUPGHOME of their
    own, its gpg-agent) release them.

    @return: L{Deferred} firing when they have (never failing).
    """
    closing = []
    for verifiers in (getattr(policy, "verifiers", {}), getattr(policy, "requestVerifiers", {})):
        for verifier in verifiers.values():
            close = getattr(verifier, "close", None)
            if close is not None:
                closing.append(defer.maybeDeferred(close).addErrback(
                    lambda f: log.failure("closing a signature verifier", f)))
    return defer.gatherResults(closing)


@implementer(IAuthPolicy)
class PolicyReloader(service.Service):
    """
    The current L{IAuthPolicy} of C{settings}, itself an L{IAuthPolicy}.

    @param settings: an L{p2twisted.auth.settings.AuthSettings}.
    @param clock: an L{IReactorTime}.
    @param build: C{settings -> IAuthPolicy} (L{buildPolicy}).
    @ivar generation: how many times the policy was (re)built; a refusal
        is retried only under another generation.
    """

    def __init__(self, settings, clock, build=buildPolicy):
        self.settings = settings
        self.clock = clock
        self.build = build
        self.name = settings.type
        self.generation = 0
        self.policy = None
        self.error = None
        self._state = None
        self._subscribers = []
        self._loop = None
        self.load()

    @property
    def signedRequests(self):
        return self.policy.signedRequests

    def subscribe(self, callback):
        """
        Call C{callback()} after each change of policy.
        """
        self._subscribers.append(callback)

    def load(self):
        """
        Build the policy from its files if they changed since the last
        build (or there was none).

        @return: whether it was rebuilt.
        """
        state = filesState(self.settings.files())
        if self.policy is not None and state == self._state:
            return False
        self._state = state
        old = self.policy
        try:
            self.policy = self.build(self.settings)
            self.error = None
        except Exception as e:
            self.error = str(e)
            self.policy = RefuseAll(self.settings.type, self.error)
            log.error("auth policy {policy} cannot be loaded: {error}; refusing every "
                      "manifest and request until it is fixed (nothing running is touched)",
                      policy=self.settings.type, error=self.error, event="auth-policy-error")
        else:
            if old is not None:
                log.info("auth policy {policy} reloaded: its files changed",
                         policy=self.settings.type, event="auth-policy-reloaded")
        if old is not None:
            _close(old)
        self.generation += 1
        return True

    def check(self):
        """
        Rebuild the policy if its files changed, and tell the subscribers.
        """
        if self.load():
            for callback in list(self._subscribers):
                try:
                    callback()
                except Exception:
                    log.failure("auth policy subscriber failed")

    def startService(self):
        service.Service.startService(self)
        if self.settings.type == NONE:
            log.warn("auth policy none: this agent deploys any manifest written to the store "
                     "and carries out any request; set auth.type keyring or user in its config "
                     "(README.rst, 'A signed fleet')", event="auth-none")
            return
        if self.settings.files():
            self._loop = task.LoopingCall(self.check)
            self._loop.clock = self.clock
            self._loop.start(self.settings.reloadInterval, now=False)

    def stopService(self):
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return _close(self.policy)

    def authorize(self, manifest):
        return defer.maybeDeferred(self.policy.authorize, manifest)

    def authorizeRequest(self, data, signature, system, podId, runAs):
        return defer.maybeDeferred(self.policy.authorizeRequest, data, signature, system,
                                   podId, runAs)
