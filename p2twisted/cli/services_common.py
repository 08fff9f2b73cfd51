# -*- test-case-name: tests.test_cli_service -*-
"""
What the service verbs share: the state and artifact directories, and
template options given as C{--OPTION VALUE} on the command line.
"""

import os

from p2twisted.cli.main import Parser
from p2twisted.config import defaultStateDir, loadConfig
from p2twisted.errors import UsageError


class ExtrasParser(Parser):
    """
    A verb parser that keeps the options it does not know in C{extras}
    (template options) instead of failing on them.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = Parser.parse_known_args(self, args, namespace)
        namespace.extras = list(getattr(namespace, "extras", None) or []) + list(extras)
        return namespace, []


def extrasParser(subparsers, name, **kwargs):
    """
    Add a verb parser that collects unknown options in C{options.extras}.
    """
    parser = subparsers.add_parser(name, **kwargs)
    parser.__class__ = ExtrasParser
    return parser


def parseExtras(extras):
    """
    Turn C{["--port", "8080", "--directory=/srv"]} into settings.

    @return: C{{option name: text}} (dashes turned into underscores).
    @raise UsageError: for a stray argument or an option without a value.
    """
    settings = {}
    extras = list(extras)
    while extras:
        arg = extras.pop(0)
        if not arg.startswith("--") or arg == "--":
            raise UsageError("unexpected argument %r: template options are --OPTION VALUE"
                             % (arg,))
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if not extras or extras[0].startswith("--"):
                raise UsageError("option --%s needs a value" % (name,))
            value = extras.pop(0)
        settings[name.replace("-", "_")] = value
    return settings


def readSettingsFile(path):
    """
    @return: the mapping of settings in the YAML (or JSON) file C{path}.
    """
    import yaml
    try:
        with open(path, "rb") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise UsageError("cannot read settings file %s: %s" % (path, e.strerror))
    except yaml.YAMLError as e:
        raise UsageError("settings file %s is not valid YAML: %s" % (path, e))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError("settings file %s must hold a mapping of option: value" % (path,))
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def stateDir(options):
    """
    @return: the state directory: the config file's C{state_dir}, else
        L{defaultStateDir}, made absolute.
    """
    config = loadConfig(getattr(options, "config", None))
    return os.path.abspath(config.get("state_dir") or defaultStateDir())


def artifactLocation(options):
    """
    @return: C{(directory, base URL)}: where rendered artifacts are built
        (C{<state_dir>/artifacts-build}) and how agents reach them (the
        config file's C{artifact_base_url}, else C{file://} on this host).
    """
    config = loadConfig(getattr(options, "config", None))
    directory = os.path.join(stateDir(options), "artifacts-build")
    return directory, config.get("artifact_base_url") or "file://" + directory


def manifestSigner(options):
    """
    @return: what signs the manifests C{p2 deploy} renders, from the config
        file's C{signing:} (C{key: GPG-KEY-ID} or C{ssh_key: FILE}), or
        C{None} when it has none.
    @raise UsageError: a malformed C{signing:}.
    """
    signing = loadConfig(getattr(options, "config", None)).get("signing")
    if not signing:
        return None
    if (not isinstance(signing, dict) or set(signing) - {"key", "ssh_key"}
            or len(signing) != 1 or not all(isinstance(v, str) and v for v in signing.values())):
        raise UsageError("config signing: expected 'key: GPG-KEY-ID' or 'ssh_key: FILE', got %r"
                         % (signing,))
    from p2twisted.cli.sign import signManifest
    key, sshKey = signing.get("key"), signing.get("ssh_key")
    if sshKey:
        sshKey = os.path.expanduser(sshKey)
    return lambda raw: signManifest(raw, key=key, sshKey=sshKey)[0]


def thisHost():
    """
    @return: this host's node name (what C{--node} defaults to).
    """
    from p2twisted.cli.schedule import nodeName
    return nodeName(None)


def hostCheck(template, settings, skip=False):
    """
    @raise UsageError: naming what C{template.hostProblems} finds wrong with
        C{settings} on this host, unless C{skip}.
    """
    problems = [] if skip else getattr(template, "hostProblems", lambda settings: [])(settings)
    if problems:
        raise UsageError("%s (pass --no-host-check if the service runs on other nodes only)"
                         % ("; ".join(problems),))


def portProblem(port, podId):
    """
    @return: one line when another program than the pod C{podId} listens
        on C{port} of this host, else C{None} (also when unknown).
    """
    from p2twisted import listeners
    inodes = listeners.listeningInodes(port)
    owners = listeners.socketOwners(inodes) if inodes else {}
    if not owners or not listeners.foreignTo(owners, podId):
        return None
    return ("port %d on this host is taken by %s; free it, or choose another with "
            "'p2 config %s port=N'" % (port, listeners.describeOwners(owners), podId))


def checkPortHere(nodes, skip=False):
    """
    @return: a check for L{services.deploy}: when C{nodes} include this host,
        the manifest's status port must be free here (or the pod's own).
    """
    def check(manifest):
        if skip or not manifest.status.port or thisHost() not in nodes:
            return
        problem = portProblem(manifest.status.port, manifest.id)
        if problem:
            raise UsageError(problem)
    return check


def logTail(state, podId, lines=5):
    """
    @param state: this host's agent state directory (L{stateDir}).
    @return: the last C{lines} lines of C{podId}'s logs on this host,
        C{[(log name, [line...])]}; empty when there are none here.
    """
    from p2twisted.agent import podlogs
    from p2twisted.errors import P2Error
    try:
        logs = podlogs.readLogs(state, podId, None, maxBytes=4096)
    except (OSError, P2Error):
        return []
    tails = []
    for name, (data, offset) in sorted(logs.items()):
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        if tail:
            tails.append((name, tail))
    return tails


def writeLogTail(out, tails, indent="    "):
    """
    Write L{logTail}'s C{tails} under a line of C{p2 status} or C{--wait}.
    """
    for logName, tail in tails:
        out.write("%slast lines of %s:\n" % (indent, logName))
        out.write("".join("%s  %s\n" % (indent, line) for line in tail))
