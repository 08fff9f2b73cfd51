# -*- test-case-name: tests.test_agent_tap -*-
"""
C{twistd p2-agent}: options and the service they build.
"""

from twisted.application import service, strports
from twisted.python import usage
from twisted.web import server

from p2twisted.agent.config import agentConfig
from p2twisted.errors import P2Error


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run the p2 machine agent: converge this node's intent (intent/<node>/ in the "
                "coordination store) into running pods. Every setting has a default; a config "
                "file (see conf/agent.yaml) and these flags override them.")
    optParameters = [
        ["config", "c", None, "agent config file (YAML)"],
        ["store", None, None, "coordination store URL (default: $P2_STORE, the config file, "
                              "else the embedded local store)"],
        ["node", None, None, "this node's name (default: the host name)"],
        ["pod-root", None, None, "where pods are installed (default: <state-dir>/pods)"],
        ["state-dir", None, None, "agent state: service dirs, artifact cache"],
        ["supervisor", None, None, "auto, runit or builtin (default: auto)"],
        ["status-port", None, None, "serve GET /_status and /metrics (Prometheus) on "
                                    "127.0.0.1:PORT"],
        ["metrics-listen", None, None, "serve Prometheus metrics at /metrics on PORT "
                                       "(127.0.0.1) or a Twisted endpoint, e.g. "
                                       "tcp:7476:interface=0.0.0.0 (default: none)"],
        ["pod-address", None, None, "the address this node's pods serve on ($POD_ADDRESS) and "
                                    "their health checks reach (default: 127.0.0.1)"],
    ]

    def postOptions(self):
        """
        Read the settings now, so that a bad one is a usage error twistd
        shows as one line (an error raised in L{makeService} is a traceback).
        """
        try:
            self.settings = agentConfig(self["config"], {
                "store": self["store"], "node": self["node"], "pod_root": self["pod-root"],
                "state_dir": self["state-dir"], "supervisor": self["supervisor"],
                "status_port": _port(self["status-port"]), "pod_address": self["pod-address"],
                "metrics_listen": self["metrics-listen"],
            })
        except P2Error as e:
            raise usage.UsageError(str(e))


def _port(text):
    """
    @return: the port number C{text} names, or C{None} for none.
    @raise UsageError: it is not a port number.
    """
    if not text:
        return None
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise usage.UsageError("--status-port: expected a port number (0-65535), got %r" % (text,))
    return port


def makeService(options, reactor=None):
    """
    @return: the agent's L{IService}, with its status endpoint when a status
        port is configured.
    """
    if reactor is None:
        from twisted.internet import reactor
    from p2twisted.agent.pods import PodOperations
    from p2twisted.agent.service import AgentService
    from p2twisted.agent.web import StatusResource
    from p2twisted.metrics import AgentMetrics, metricsService
    config = options.settings
    metrics = AgentMetrics()
    try:
        pods = PodOperations.fromConfig(config, reactor, metrics=metrics)
    except P2Error as e:
        # twistd shows anything else raised here as a traceback.
        raise SystemExit(str(e))
    top = service.MultiService()
    agent = AgentService(config, pods, reactor, facts=pods.facts, metrics=metrics)
    agent.setServiceParent(top)
    pods.service().setServiceParent(top)
    if config.statusPort is not None:
        site = server.Site(StatusResource(agent).resource())
        strports.service("tcp:%d:interface=127.0.0.1" % (config.statusPort,), site).setServiceParent(top)
    if config.metricsListen is not None:
        metricsService(config.metricsListen, metrics, reactor).setServiceParent(top)
    return top
