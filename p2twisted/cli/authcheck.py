# -*- test-case-name: tests.test_cli_authcheck -*-
"""
C{p2 verify MANIFEST --agent-config FILE}: would that agent's C{auth:}
policy deploy this manifest?  The policy is built from the agent config's
files (keyring, allowed signers, deploy policy) exactly as the agent builds
it, and asked the agent's question: about the manifest as it would run, as
its C{run_as} under an agent that is root, else as the agent's own user
(C{--agent-user}).
"""

import attr
from twisted.internet import defer

from p2twisted.agent.config import agentConfig
from p2twisted.auth.settings import buildPolicy


@defer.inlineCallbacks
def policyDecision(configPath, manifest, agentUser=None):
    """
    @param agentUser: the user the agent runs as, if not root (who every
        pod runs as, and who C{manifest} is judged as), or C{None}.
    @return: L{Deferred} firing with the L{Decision} of the agent config
        C{configPath}'s policy on C{manifest}.
    @raise UsageError: the config is not valid.
    @raise PolicyError: a policy file is missing or not valid.
    """
    settings = agentConfig(configPath, environ={}).auth
    policy = buildPolicy(settings)
    if agentUser not in (None, "root"):
        manifest = attr.evolve(manifest, runAs=agentUser)
    try:
        decision = yield policy.authorize(manifest)
    finally:
        for verifier in getattr(policy, "verifiers", {}).values():
            if hasattr(verifier, "close"):
                yield verifier.close()
    return decision


@defer.inlineCallbacks
def runPolicyCheck(options, manifest):
    """
    Print whether the agent config's policy accepts C{manifest} (JSON with
    C{--json}).

    @return: L{Deferred} firing with the exit status: 0 when it would be
        deployed, 1 when refused.
    """
    decision = yield policyDecision(options.agent_config, manifest,
                                    getattr(options, "agent_user", None))
    if options.json:
        from p2twisted.cli.main import writeJSON
        writeJSON(options.out, {"id": manifest.id, "sha": manifest.sha(),
                                "system": manifest.signatureSystem,
                                "agent_config": options.agent_config,
                                "decision": decision.toDict()})
    elif decision.allowed:
        options.out.write("%s\n%s %s\n" % (decision.describe(), manifest.id, manifest.sha()))
    else:
        options.err.write("p2: %s: %s\n" % (options.file, decision.describe()))
    return 0 if decision.allowed else 1
