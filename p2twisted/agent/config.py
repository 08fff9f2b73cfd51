# -*- test-case-name: tests.test_agent_config -*-
"""
The agent's settings: defaults, the optional config file (C{conf/agent.yaml}
shows every one), then command-line flags.
"""

import ipaddress
import os
import socket

import attr

from p2twisted.agent.artifactauth import ArtifactAuthSettings, artifactAuthSettings
from p2twisted.auth.settings import AuthSettings, authSettings
from p2twisted.config import Config, defaultStateDir, loadConfig
from p2twisted.errors import UsageError
from p2twisted.listen import listenSetting
from p2twisted.store.common import checkKey


@attr.s
class AgentConfig(object):
    """
    Every agent setting, with its default.
    """

    node = attr.ib()
    store = attr.ib()
    podRoot = attr.ib()
    stateDir = attr.ib()
    supervisor = attr.ib(default="auto")
    resyncInterval = attr.ib(default=30.0)
    sessionTTL = attr.ib(default=15.0)
    statusPort = attr.ib(default=None)
    #: Where to serve /metrics (an endpoint description), or C{None}.
    metricsListen = attr.ib(default=None)
    labels = attr.ib(default=attr.Factory(dict))
    createUsers = attr.ib(default=True)
    allowedRunAs = attr.ib(default=attr.Factory(list))
    maxExpandedBytes = attr.ib(default=10 * 1024 ** 3)
    podMaxExpandedBytes = attr.ib(default=attr.Factory(dict))
    diskBudget = attr.ib(default=10 * 1024 ** 3)
    artifactCacheBytes = attr.ib(default=10 * 1024 ** 3)
    fetchTimeout = attr.ib(default=30.0)
    artifactDir = attr.ib(default=None)
    artifactAuth = attr.ib(default=attr.Factory(ArtifactAuthSettings))
    minUptime = attr.ib(default=5.0)
    p2exec = attr.ib(default=None)
    hooksRoot = attr.ib(default=None)
    hooksDirectory = attr.ib(default=None)
    hooksRequired = attr.ib(default=attr.Factory(list))
    hookTermAfter = attr.ib(default=30.0)
    hookKillAfter = attr.ib(default=60.0)
    removalGrace = attr.ib(default=10.0)
    holdTimeout = attr.ib(default=None)
    podAddress = attr.ib(default="127.0.0.1")
    auth = attr.ib(default=attr.Factory(AuthSettings))


def _number(data, name, default, low=0.0):
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise UsageError("agent config %s: expected a number >= %s, got %r" % (name, low, value))
    return value


def _podBytes(data, name):
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise UsageError("agent config %s: expected a mapping of pod ids to numbers of bytes, "
                         "got %r" % (name, value))
    return {str(pod): int(_number({"%s.%s" % (name, pod): limit}, "%s.%s" % (name, pod), None, 1))
            for pod, limit in value.items()}


def _address(data, name):
    """
    An IPv4 address of this host: pods serve there and their health is
    checked there, so another host's address would report the health of
    whatever answers on that host.
    """
    value = str(data.get(name) or "127.0.0.1")
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise UsageError("agent config %s: expected an IPv4 address such as 127.0.0.2, got %r"
                         % (name, value))
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((value, 0))
    except OSError as e:
        raise UsageError("agent config %s: %s is not an address of this host (%s)"
                         % (name, value, e.strerror))
    finally:
        probe.close()
    return value


def _names(data, name):
    value = data.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError("agent config %s: expected a list of names, got %r" % (name, value))
    return list(value)


def agentConfig(path=None, flags=None, environ=None):
    """
    Build the agent's config from the file at C{path} (or the usual places)
    and the command-line C{flags} (a dict; C{None} values are ignored).

    @raise UsageError: for a bad file or setting; the message names it.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config = loadConfig(path, environ)
    data = dict(config.data)
    data.update(flags)
    base = Config(data, config.path, config.environ)
    stateDir = os.path.abspath(data.get("state_dir") or defaultStateDir(config.environ))
    node = str(data.get("node") or socket.gethostname().split(".")[0])
    if "/" in node:
        raise UsageError("agent config node: %r must not contain '/'" % (node,))
    try:
        checkKey(node)
    except Exception as e:
        raise UsageError("agent config node: %s" % (e,))
    supervisor = data.get("supervisor", "auto")
    if supervisor not in ("auto", "runit", "builtin"):
        raise UsageError("agent config supervisor: expected auto, runit or builtin, got %r"
                         % (supervisor,))
    labels = data.get("labels") or {}
    if not isinstance(labels, dict):
        raise UsageError("agent config labels: expected a mapping, got %r" % (labels,))
    holdTimeout = data.get("hold_timeout")
    if holdTimeout is not None:
        holdTimeout = _number(data, "hold_timeout", None, 0.0)
    port = data.get("status_port")
    if port is not None:
        port = int(_number(data, "status_port", 0))
    return AgentConfig(
        node=node,
        store=base.storeURL(data.get("store")),
        podRoot=os.path.abspath(data.get("pod_root") or os.path.join(stateDir, "pods")),
        stateDir=stateDir,
        supervisor=supervisor,
        resyncInterval=_number(data, "resync_interval", 30.0, 0.1),
        sessionTTL=_number(data, "session_ttl", 15.0, 1.0),
        statusPort=port,
        metricsListen=listenSetting(data.get("metrics_listen"), "agent config metrics_listen"),
        labels={str(k): str(v) for k, v in labels.items()},
        createUsers=bool(data.get("create_users", True)),
        allowedRunAs=_names(data, "allowed_run_as"),
        maxExpandedBytes=int(_number(data, "max_expanded_bytes",
                                     data.get("max_artifact_bytes", 10 * 1024 ** 3), 1)),
        podMaxExpandedBytes=_podBytes(data, "pod_max_expanded_bytes"),
        diskBudget=int(_number(data, "disk_budget", 10 * 1024 ** 3, 0)),
        artifactCacheBytes=int(_number(data, "artifact_cache_bytes", 10 * 1024 ** 3, 0)),
        fetchTimeout=_number(data, "fetch_timeout", 30.0, 0.1),
        artifactDir=os.path.abspath(data["artifact_dir"]) if data.get("artifact_dir") else None,
        artifactAuth=artifactAuthSettings(data.get("artifact_auth")),
        minUptime=_number(data, "min_uptime", 5.0, 0.0),
        p2exec=data.get("p2exec"),
        hooksRoot=os.path.abspath(data.get("hooks_root") or os.path.join(stateDir, "hooks")),
        hooksDirectory=(os.path.abspath(data["hooks_directory"])
                        if data.get("hooks_directory") else None),
        hooksRequired=_names(data, "hooks_required"),
        hookTermAfter=_number(data, "hook_term_after", 30.0, 0.01),
        hookKillAfter=_number(data, "hook_kill_after", 60.0, 0.01),
        removalGrace=_number(data, "removal_grace", 10.0, 0.0),
        holdTimeout=holdTimeout,
        podAddress=_address(data, "pod_address"),
        auth=authSettings(data.get("auth")),
    )
