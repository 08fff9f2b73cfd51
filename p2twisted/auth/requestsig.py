# -*- test-case-name: tests.test_auth_requests -*-
"""
Signed requests (C{p2 run}, C{p2 logs}): under an agent's C{keyring} or
C{user} policy, a request is carried out only if its sender signed it, and
only for a signer allowed to deploy the pod's C{run_as}.

What is signed (L{payload}) is a canonical JSON object holding the
request's key (so it cannot be moved to another node or replayed under
another id), its deadline, and every field the agent acts on (kind, pod,
task, args, timeout, offsets).  The request carries it as C{signed}, with
C{signature} and C{signature_system}; the agent acts on the signed fields,
never on the unsigned ones beside them, and runs a signed request at most
once (L{SeenRequests}).  OpenSSH signatures use the namespace
C{p2-request}, so a manifest's signature is no request's.
"""

import json
import os

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger

from p2twisted.auth.settings import REQUEST_NAMESPACE
from p2twisted.errors import AgentError, P2Error

log = Logger()

#: The fields of a request the agent acts on, all signed.
SIGNED_FIELDS = ("kind", "pod", "task", "args", "timeout", "offsets")


class RequestRefused(AgentError):
    """
    A request the agent's auth policy does not allow (its answer says why).
    """


def payload(key, fields, deadline):
    """
    @return: the bytes a request's sender signs.
    """
    body = {"key": key, "deadline": deadline}
    body.update({name: fields[name] for name in SIGNED_FIELDS if name in fields})
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def withSignature(fields, data, system, signature):
    """
    @return: the request's fields with its signature.
    """
    return dict(fields, signed=data.decode("utf-8"), signature_system=system,
                signature=signature.decode("ascii"))


class RequestSigner(object):
    """
    Signs requests with the real C{gpg} (a detached armored signature by
    C{gpgKey}, from the user's own GNUPGHOME) or C{ssh-keygen -Y sign}
    (with the private key file C{sshKey}).

    @param gnupgHome: the GNUPGHOME holding C{gpgKey} (default: the user's).
    """

    def __init__(self, gpgKey=None, sshKey=None, reactor=None, gnupgHome=None):
        if bool(gpgKey) == bool(sshKey):
            raise P2Error("sign requests with either a GPG key or an OpenSSH key")
        if reactor is None:
            from twisted.internet import reactor
        self.gpgKey = gpgKey
        self.sshKey = sshKey
        self.gnupgHome = gnupgHome
        self.reactor = reactor
        self.system = "gpg" if gpgKey else "ssh"

    @defer.inlineCallbacks
    def sign(self, data):
        """
        @return: L{Deferred} firing with the armored signature of C{data}.
        @raise P2Error: naming the key, if the tool fails.
        """
        import tempfile
        with tempfile.NamedTemporaryFile(prefix="p2-request-") as f:
            f.write(data)
            f.flush()
            if self.gpgKey:
                argv = ["gpg", "--batch", "--no-tty", "--armor", "--detach-sign",
                        "--local-user", self.gpgKey, "--output", "-", f.name]
                if self.gnupgHome:
                    argv[1:1] = ["--homedir", self.gnupgHome]
                tool, key = "gpg", self.gpgKey
            else:
                argv = ["ssh-keygen", "-q", "-Y", "sign", "-f", self.sshKey,
                        "-n", REQUEST_NAMESPACE, f.name]
                tool, key = "ssh-keygen", self.sshKey
            out, err, code = yield getProcessOutputAndValue(
                argv[0], argv[1:], env=dict(os.environ), reactor=self.reactor)
            if self.sshKey:
                sigPath = f.name + ".sig"
                try:
                    with open(sigPath, "rb") as sig:
                        out = sig.read()
                    os.unlink(sigPath)
                except OSError:
                    out = b""
        if code != 0 or not out:
            lines = [l for l in err.decode("utf-8", "replace").splitlines() if l.strip()]
            raise P2Error("cannot sign the request with %s key %s: %s" % (
                tool, key, lines[-1] if lines else "exit %s" % (code,)))
        return out


class SeenRequests(object):
    """
    The signed requests this agent took, until their deadline has passed:
    the same signed request written again is refused -- also by the agent
    after a restart, when C{path} keeps them.

    @param path: the file (JSON) that keeps them, or C{None}.
    """

    def __init__(self, path=None):
        self.path = path
        self._until = {}
        if path is not None:
            try:
                with open(path, "rb") as f:
                    until = json.loads(f.read().decode("utf-8"))
                self._until = {str(k): float(t) for k, t in until.items()}
            except FileNotFoundError:
                pass
            except (OSError, ValueError, AttributeError, TypeError) as e:
                log.warn("cannot read the signed requests already carried out from "
                         "{path} ({error}); starting afresh", path=path, error=str(e))

    def claim(self, key, until, now):
        """
        @return: whether C{key} was not seen before (now it is).
        @raise OSError: if C{path} cannot be written (then C{key} is not
            claimed).
        """
        for old in [k for k, t in self._until.items() if t < now]:
            del self._until[old]
        if key in self._until:
            return False
        if self.path is not None:
            from p2twisted.agent.runtime import atomicWrite
            atomicWrite(self.path, json.dumps(dict(self._until, **{key: until}),
                                              sort_keys=True).encode("utf-8"), mode=0o600)
        self._until[key] = until
        return True


@defer.inlineCallbacks
def authorizeRequest(policy, key, record, runAsOf, now, slack, seen):
    """
    Check a request's signature under C{policy}.

    @param runAsOf: C{pod_id -> run_as} of an installed pod (raising
        L{AgentError} when it is not installed).
    @param slack: seconds a sender's clock may be ahead.
    @param seen: the L{SeenRequests}.
    @return: L{Deferred} firing with C{(fields to act on, Decision)}.
    @raise RequestRefused: saying why.
    """
    signed, signature = record.get("signed"), record.get("signature")
    system = record.get("signature_system")
    if not isinstance(signed, str) or not isinstance(signature, str):
        raise RequestRefused(
            "refused by auth policy %s: the request is not signed; sign it with "
            "--key ID (GPG) or --ssh-key FILE (OpenSSH)" % (policy.name,))
    try:
        body = json.loads(signed)
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("key") != key:
        raise RequestRefused("refused: the signed request is not this one (%s)" % (key,))
    deadline = body.get("deadline")
    if not isinstance(deadline, (int, float)) or now > deadline + slack:
        raise RequestRefused("refused: the signed request's deadline has passed")
    podId = body.get("pod")
    if not isinstance(podId, str) or not podId:
        raise RequestRefused("refused: the signed request names no pod")
    runAs = runAsOf(podId)
    decision = yield policy.authorizeRequest(signed.encode("utf-8"), signature.encode("utf-8"),
                                             system, podId, runAs)
    if not decision.allowed:
        raise RequestRefused(decision.describe())
    try:
        fresh = seen.claim(key, deadline + slack, now)
    except OSError as e:
        raise RequestRefused("refused: cannot record it as carried out (%s: %s)"
                             % (seen.path, e.strerror or e))
    if not fresh:
        raise RequestRefused("refused: this signed request was already carried out")
    fields = {name: value for name, value in record.items() if name not in SIGNED_FIELDS}
    fields.update({name: body[name] for name in SIGNED_FIELDS if name in body})
    return fields, decision
