# -*- test-case-name: tests.test_auth_policy -*-
"""
Who may deploy what on an agent (reference/p2.md section 5): the agent's
C{auth:} policies.

  - C{none}: every manifest is deployed (the default; the agent warns at
    start).
  - C{keyring}: a manifest must be signed (PGP clear-signed, or followed by
    an OpenSSH signature) by a key the agent trusts: in its GPG keyring or
    its OpenSSH allowed-signers file.  The agent's own pod (C{agent_pod})
    may be deployed only by the C{authorized_deployers} fingerprints, when
    that list is given.
  - C{user}: C{keyring}, and the signer must belong to a group the deploy
    policy allows for the manifest's C{run_as} (L{DeployPolicy}).

A policy answers with a L{Decision}: allowed or not, who signed (or
C{None}), and the rule that decided, in one line.  The same rules decide
who may send a signed request (C{p2 run}, C{p2 logs}) for a pod: its signer
must be allowed to deploy that pod's C{run_as}
(L{IAuthPolicy.authorizeRequest}).
"""

import attr
import yaml
from twisted.internet import defer
from zope.interface import Attribute, Interface, implementer

from p2twisted.auth.interfaces import SignatureRejected
from p2twisted.errors import P2Error

NONE, KEYRING, USER = "none", "keyring", "user"
TYPES = (NONE, KEYRING, USER)

#: The C{apps} entry that covers every C{run_as} not named -- except root.
ANY = "*"
ROOT = "root"


class PolicyError(P2Error):
    """
    A deploy-policy file or an auth setting is not valid; the message names
    the file and the problem.
    """


@attr.s(frozen=True)
class Decision(object):
    """
    What a policy said about one manifest or request.

    @ivar allowed: whether it may be deployed (run).
    @ivar signer: the L{p2twisted.auth.interfaces.Signer} of a good
        signature, or C{None} (unsigned, or its signature rejected).
    @ivar rule: one line: the rule that decided, and why.
    @ivar policy: the policy's type (C{none}, C{keyring}, C{user}).
    """

    allowed = attr.ib()
    signer = attr.ib()
    rule = attr.ib()
    policy = attr.ib(default=NONE)

    def signedBy(self):
        """
        @return: who signed, in words: C{"Alice <a@x> (gpg 0123...)"} or
            C{"nobody (unsigned or signature not accepted)"}.
        """
        if self.signer is None:
            return "no accepted signature"
        return "%s (%s %s)" % (self.signer.identity, self.signer.system, self.signer.fingerprint)

    def describe(self):
        """
        @return: the one-line refusal (or acceptance) for logs, errors and
            status.
        """
        return "%s by auth policy %s: %s; signer: %s" % (
            "allowed" if self.allowed else "refused", self.policy, self.rule, self.signedBy())

    def toDict(self):
        """
        @return: the JSON form written in status records.
        """
        signer = None
        if self.signer is not None:
            signer = {"system": self.signer.system, "fingerprint": self.signer.fingerprint,
                      "identity": self.signer.identity}
        return {"allowed": self.allowed, "policy": self.policy, "rule": self.rule,
                "signer": signer}


class IAuthPolicy(Interface):
    """
    Decides whether a manifest may be deployed, or a request carried out.
    """

    name = Attribute("The policy's type: 'none', 'keyring' or 'user'.")

    signedRequests = Attribute("Whether requests (p2 run, p2 logs) must be signed.")

    def authorize(manifest):
        """
        @param manifest: a L{p2twisted.manifest.PodManifest}.
        @return: L{Deferred} firing with a L{Decision} (never failing).
        """

    def authorizeRequest(data, signature, system, podId, runAs):
        """
        @param data: the signed request's bytes.
        @param signature: its signature (bytes), or C{None}.
        @param system: C{"gpg"} or C{"ssh"}.
        @param podId: the pod the request is about.
        @param runAs: that pod's C{run_as}.
        @return: L{Deferred} firing with a L{Decision} (never failing).
        """


def manifestSignature(manifest):
    """
    @return: C{(system, signed bytes, signature)} of a manifest:
        C{(None, None, None)} when it is not signed.
    """
    if manifest.signature is None:
        return None, None, None
    return manifest.signatureSystem, manifest.signedBody, manifest.signature


def normalFingerprint(value):
    """
    @return: C{value} as fingerprints are compared: a GPG fingerprint
        without spaces, upper case; an OpenSSH C{SHA256:...} one unchanged
        (base64 is case-sensitive).
    """
    value = value.strip()
    if value.startswith("SHA256:"):
        return value
    return value.replace(" ", "").upper()


def signerNames(signer):
    """
    @return: the names a deploy policy may know C{signer} by: its identity
        (a GPG user id or an OpenSSH principal) and the e-mail address in
        it, lower case, and its fingerprint.
    """
    names = {normalFingerprint(signer.fingerprint)}
    identity = (signer.identity or "").strip()
    if identity:
        names.add(identity.lower())
        if "<" in identity and identity.endswith(">"):
            names.add(identity[identity.rindex("<") + 1:-1].strip().lower())
    return names


def memberMatches(member, names):
    return normalFingerprint(member) in names or member.strip().lower() in names


@attr.s(frozen=True)
class DeployPolicy(object):
    """
    The C{user} policy's deploy policy (P2's format)::

        groups:
          teamA: [alice@example.com, bob@example.com]
          admins: [carol@example.com]
        apps:                  # run_as user -> groups allowed to deploy as it
          web: [teamA, admins]
          db: [admins]
          "*": [admins]        # any other run_as, except root
          root: [admins]       # root only when named

    A group member is a signer's identity (a GPG user id, or its e-mail
    address; an OpenSSH principal) or a key fingerprint.

    @ivar groups: C{{group: frozenset of members}}.
    @ivar apps: C{{run_as: tuple of groups}}.
    """

    groups = attr.ib()
    apps = attr.ib()
    source = attr.ib(default="deploy policy")

    @classmethod
    def fromBytes(cls, data, source="deploy policy"):
        """
        @raise PolicyError: naming C{source} and what is wrong.
        """
        def bad(problem):
            return PolicyError("%s: %s" % (source, problem))
        try:
            doc = yaml.safe_load(data)
        except yaml.YAMLError as e:
            raise bad("not valid YAML (%s)" % (str(e).splitlines()[0],))
        if not isinstance(doc, dict):
            raise bad("expected a mapping with 'groups' and 'apps'")
        unknown = sorted(set(doc) - {"groups", "apps"})
        if unknown:
            raise bad("unknown key %s (expected groups and apps)" % (", ".join(map(str, unknown)),))
        groups, apps = doc.get("groups") or {}, doc.get("apps") or {}
        if not isinstance(groups, dict) or not isinstance(apps, dict):
            raise bad("'groups' and 'apps' must be mappings")
        parsed = {}
        for name, members in groups.items():
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                raise bad("groups.%s: expected a list of identities or fingerprints" % (name,))
            parsed[str(name)] = frozenset(members)
        allowed = {}
        for runAs, names in apps.items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise bad("apps.%s: expected a list of group names" % (runAs,))
            missing = [n for n in names if n not in parsed]
            if missing:
                raise bad("apps.%s: no group named %s" % (runAs, ", ".join(missing)))
            allowed[str(runAs)] = tuple(names)
        return cls(parsed, allowed, source)

    def groupsFor(self, runAs):
        """
        @return: C{(groups, why)}: the groups allowed to deploy as C{runAs}
            (C{None} when none may) and which entry said so.
        """
        if runAs in self.apps:
            return self.apps[runAs], "apps.%s" % (runAs,)
        if runAs == ROOT:
            return None, "run_as root is not named in apps (root is never covered by '*')"
        if ANY in self.apps:
            return self.apps[ANY], "apps.*"
        return None, "run_as %s is not in apps, and there is no '*' entry" % (runAs,)

    def check(self, signer, runAs):
        """
        @return: C{(allowed, rule)}.
        """
        groups, why = self.groupsFor(runAs)
        if groups is None:
            return False, "deploy policy: " + why
        names = signerNames(signer)
        member = [g for g in groups if any(memberMatches(m, names) for m in self.groups[g])]
        if member:
            return True, "deploy policy %s allows group %s" % (why, member[0])
        return False, ("deploy policy %s allows groups %s; the signer is in none of them"
                       % (why, ", ".join(groups) or "(none)"))


@implementer(IAuthPolicy)
class NonePolicy(object):
    """
    Every manifest and request is allowed (P2's C{none}).
    """

    name = NONE
    signedRequests = False

    def authorize(self, manifest):
        return defer.succeed(Decision(True, None, "no policy: every manifest is deployed", NONE))

    def authorizeRequest(self, data, signature, system, podId, runAs):
        return defer.succeed(Decision(True, None, "no policy: every request is carried out",
                                      NONE))


@implementer(IAuthPolicy)
class RefuseAll(object):
    """
    What an agent whose policy files cannot be read applies meanwhile:
    every manifest and request is refused (refusals change nothing that
    runs), until the files are fixed.
    """

    signedRequests = True

    def __init__(self, name, reason):
        self.name = name
        self.reason = reason

    def _refuse(self):
        return defer.succeed(Decision(False, None, "the policy cannot be loaded (%s)"
                                      % (self.reason,), self.name))

    def authorize(self, manifest):
        return self._refuse()

    def authorizeRequest(self, data, signature, system, podId, runAs):
        return self._refuse()


@implementer(IAuthPolicy)
class KeyringPolicy(object):
    """
    A manifest must be signed by a trusted key (P2's C{keyring}).

    @param verifiers: C{{system: ISignatureVerifier}} for manifests (a
        system missing: its signatures are refused).
    @param requestVerifiers: the same for requests (an OpenSSH verifier of
        another namespace), default C{verifiers}.
    @param authorizedDeployers: fingerprints; when given, only they may
        deploy C{agentPod}, the agent's own pod.
    """

    name = KEYRING
    signedRequests = True

    def __init__(self, verifiers, authorizedDeployers=(), agentPod=None,
                 requestVerifiers=None):
        self.verifiers = dict(verifiers)
        self.requestVerifiers = dict(self.verifiers if requestVerifiers is None
                                     else requestVerifiers)
        self.authorizedDeployers = frozenset(normalFingerprint(f) for f in authorizedDeployers)
        self.agentPod = agentPod

    def _refused(self, rule, signer=None):
        return Decision(False, signer, rule, self.name)

    @defer.inlineCallbacks
    def _verify(self, verifiers, system, data, signature, what):
        """
        @return: L{Deferred} firing with C{(signer, None)}, or C{(None,
            refusing Decision)}.
        """
        if signature is None:
            return None, self._refused("the %s is not signed" % (what,))
        verifier = verifiers.get(system)
        if verifier is None:
            configured = ", ".join(sorted(verifiers)) or "none"
            return None, self._refused(
                "signed with %s, which this agent does not check (it trusts: %s)"
                % (system, configured))
        try:
            signer = yield verifier.verify(data, signature)
        except SignatureRejected as e:
            return None, self._refused("signature not accepted: %s" % (e.reason,))
        return signer, None

    def allows(self, signer, podId, runAs):
        """
        @return: C{(allowed, rule)} for a good signature by C{signer}.
        """
        if self.agentPod is not None and podId == self.agentPod and self.authorizedDeployers:
            if normalFingerprint(signer.fingerprint) not in self.authorizedDeployers:
                return False, ("only authorized_deployers may deploy the agent's own pod %s"
                               % (podId,))
            return True, "authorized_deployers may deploy the agent's own pod %s" % (podId,)
        return True, "signed by a trusted key"

    @defer.inlineCallbacks
    def _decide(self, verifiers, system, data, signature, podId, runAs, what):
        signer, refusal = yield self._verify(verifiers, system, data, signature, what)
        if refusal is not None:
            return refusal
        allowed, rule = self.allows(signer, podId, runAs)
        return Decision(allowed, signer, rule, self.name)

    def authorize(self, manifest):
        system, data, signature = manifestSignature(manifest)
        return self._decide(self.verifiers, system, data, signature, manifest.id,
                            manifest.runAs, "manifest")

    def authorizeRequest(self, data, signature, system, podId, runAs):
        return self._decide(self.requestVerifiers, system, data, signature, podId, runAs,
                            "request")


@implementer(IAuthPolicy)
class UserPolicy(KeyringPolicy):
    """
    C{keyring}, and the signer must be in a group the L{DeployPolicy} allows
    for the pod's C{run_as} (P2's C{user}).
    """

    name = USER

    def __init__(self, verifiers, deployPolicy, authorizedDeployers=(), agentPod=None,
                 requestVerifiers=None):
        KeyringPolicy.__init__(self, verifiers, authorizedDeployers, agentPod, requestVerifiers)
        self.deployPolicy = deployPolicy

    def allows(self, signer, podId, runAs):
        allowed, rule = KeyringPolicy.allows(self, signer, podId, runAs)
        if not allowed:
            return allowed, rule
        return self.deployPolicy.check(signer, runAs)
