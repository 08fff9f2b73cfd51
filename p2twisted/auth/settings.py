# -*- test-case-name: tests.test_auth_policy -*-
"""
The agent's C{auth:} settings (conf/agent.yaml) and the policy they build::

    auth:
      type: user                      # none (default) | keyring | user
      keyring: /etc/p2/keyring.gpg    # GPG public keys (gpg --export)
      allowed_signers: /etc/p2/allowed_signers   # OpenSSH signers (ssh-keygen -Y)
      deploy_policy: /etc/p2/deploy_policy.yaml  # type user: groups and apps
      authorized_deployers: [0123...CDEF, "SHA256:..."]  # may deploy agent_pod
      agent_pod: p2-agent             # the agent's own pod's id
      reload_interval: 5              # seconds between checks of those files
"""

import attr

from p2twisted.auth.policy import (
    KEYRING, NONE, TYPES, USER, DeployPolicy, KeyringPolicy, NonePolicy, PolicyError,
    UserPolicy)
from p2twisted.auth.section import filePath, signerFiles, typedSection
from p2twisted.errors import UsageError

#: The OpenSSH signature namespace of requests: a manifest's signature
#: (namespace C{p2-manifest}) cannot be passed off as a request's, nor the
#: other way round.
REQUEST_NAMESPACE = "p2-request"


@attr.s(frozen=True)
class AuthSettings(object):
    """
    The C{auth:} section, paths made absolute.
    """

    type = attr.ib(default=NONE)
    keyring = attr.ib(default=None)
    allowedSigners = attr.ib(default=None)
    deployPolicy = attr.ib(default=None)
    authorizedDeployers = attr.ib(default=())
    agentPod = attr.ib(default="p2-agent")
    reloadInterval = attr.ib(default=5.0)

    def files(self):
        """
        @return: the files the policy is built from (watched for changes).
        """
        return tuple(p for p in (self.keyring, self.allowedSigners, self.deployPolicy) if p)


def authSettings(data, name="auth"):
    """
    @param data: the C{auth:} mapping of the agent config, or C{None}.
    @return: an L{AuthSettings}.
    @raise UsageError: naming the bad setting.
    """
    data, kind = typedSection(data, name, (
        "type", "keyring", "allowed_signers", "deploy_policy", "authorized_deployers",
        "agent_pod", "reload_interval"), TYPES)
    keyring, allowed = signerFiles(data, name, kind, NONE)
    policy = filePath(data, name, "deploy_policy")
    if kind == USER and not policy:
        raise UsageError("agent config %s: type user needs a deploy_policy file" % (name,))
    deployers = data.get("authorized_deployers") or []
    if not isinstance(deployers, list) or not all(isinstance(d, str) for d in deployers):
        raise UsageError("agent config %s.authorized_deployers: expected a list of key "
                         "fingerprints" % (name,))
    agentPod = data.get("agent_pod", "p2-agent")
    if not isinstance(agentPod, str) or not agentPod:
        raise UsageError("agent config %s.agent_pod: expected a pod id" % (name,))
    interval = data.get("reload_interval", 5.0)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        raise UsageError("agent config %s.reload_interval: expected a positive number of "
                         "seconds, got %r" % (name, interval))
    return AuthSettings(kind, keyring, allowed, policy, tuple(deployers), agentPod,
                        float(interval))


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise PolicyError("cannot read the %s %s: %s" % (what, path, e.strerror))


def defaultVerifiers():
    """
    @return: C{(makeGPG, makeSSH)}: C{makeGPG(keyringPath)} and
        C{makeSSH(allowedSignersPath, namespace)} building the real
        verifiers.
    """
    def makeGPG(path):
        from p2twisted.auth.gpg import GPGVerifier
        return GPGVerifier(path)

    def makeSSH(path, namespace):
        from p2twisted.auth.ssh import SSHVerifier
        return SSHVerifier(path, namespace=namespace)
    return makeGPG, makeSSH


def buildPolicy(settings, makeGPG=None, makeSSH=None):
    """
    Build the L{IAuthPolicy} C{settings} describe, reading its files now.

    @param makeGPG: C{keyringPath -> ISignatureVerifier} (default: the real one).
    @param makeSSH: C{(allowedSignersPath, namespace) -> ISignatureVerifier}.
    @raise PolicyError: if a file is missing or not valid (the message names it).
    """
    if settings.type == NONE:
        return NonePolicy()
    if makeGPG is None or makeSSH is None:
        realGPG, realSSH = defaultVerifiers()
        makeGPG, makeSSH = makeGPG or realGPG, makeSSH or realSSH
    verifiers, requestVerifiers = {}, {}
    if settings.keyring:
        _read(settings.keyring, "keyring")
        verifiers["gpg"] = requestVerifiers["gpg"] = makeGPG(settings.keyring)
    if settings.allowedSigners:
        _read(settings.allowedSigners, "allowed signers file")
        from p2twisted.auth.ssh import MANIFEST_NAMESPACE
        verifiers["ssh"] = makeSSH(settings.allowedSigners, MANIFEST_NAMESPACE)
        requestVerifiers["ssh"] = makeSSH(settings.allowedSigners, REQUEST_NAMESPACE)
    if settings.type == KEYRING:
        return KeyringPolicy(verifiers, settings.authorizedDeployers, settings.agentPod,
                             requestVerifiers)
    deploy = DeployPolicy.fromBytes(_read(settings.deployPolicy, "deploy policy"),
                                    settings.deployPolicy)
    return UserPolicy(verifiers, deploy, settings.authorizedDeployers, settings.agentPod,
                      requestVerifiers)
