"""
Running a real agent in a test: real supervisor (runit or builtin), real
artifacts on disk, a real store, real HTTP to the pods it starts.
"""

import os
import socket

import treq
from twisted.application import service
from twisted.internet import defer, reactor

from p2twisted.agent.config import AgentConfig
from p2twisted.agent.layout import PodLayout
from p2twisted.agent.pods import PodOperations
from p2twisted.agent.service import AgentService
from tests.artifacts import buildHoist
from tests.reachable import reachableDirectory
from tests.store_contract import waitFor

#: A pod that serves its launchable's C{www/} directory on C{$PORT}:
#: C{/_status} and C{/version} (the system Python, readable by any user).
LAUNCH = b"""#!/bin/sh
exec /usr/bin/python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$LAUNCHABLE_ROOT/www"
"""


def freePort():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def buildWebArtifact(directory, name, version, files=None):
    """
    Write C{<directory>/<name>_<version>.tar.gz}: a hoist serving
    C{/version} (= C{version}) and C{/_status}.

    @return: C{(file URL, sha256)}.
    """
    path = os.path.join(directory, "%s_%s.tar.gz" % (name, version))
    contents = {"bin/launch": (LAUNCH, 0o755), "www/version": version.encode(),
                "www/_status": b"ok\n"}
    contents.update(files or {})
    sha = buildHoist(path, files=contents)
    return "file://" + path, sha


def webManifest(podId, url, port, sha=None, extra=b"", runAs="nobody"):
    """
    @return: the bytes of a manifest running the web artifact at C{url}.
    """
    digest = b"    digest: %s\n" % sha.encode() if sha else b""
    return (b"id: %s\nrun_as: %s\nlaunchables:\n  web:\n    launchable_type: hoist\n"
            b"    location: %s\n%s    env:\n      PORT: '%d'\n%s"
            % (podId.encode(), runAs.encode(), url.encode(), digest, port, extra))


@defer.inlineCallbacks
def httpGet(url, timeout=2.0):
    """
    @return: L{Deferred} firing with C{(code, body)} or C{None} when nothing
        answers.
    """
    try:
        response = yield treq.get(url, timeout=timeout, persistent=False)
        body = yield response.content()
    except Exception:
        return None
    return response.code, body


def waitForVersion(port, version, timeout=30.0):
    """
    Wait until the pod on C{port} serves C{/version} = C{version} (or, with
    C{version=None}, until nothing answers).
    """
    url = "http://127.0.0.1:%d/version" % (port,)

    def check():
        def got(result):
            if version is None:
                return result is None
            return result is not None and result == (200, version.encode())
        return httpGet(url).addCallback(got)
    return waitFor(check, timeout=timeout, interval=0.05,
                   what="pod on port %d to serve version %r" % (port, version))


class AgentHarness(object):
    """
    An agent running in the test process, stopped (and its pods removed) at
    cleanup.
    """

    def __init__(self, testCase, storeURL, node="n1", supervisor="runit", base=None, **settings):
        self.testCase = testCase
        # Pods run as 'nobody', who must be able to reach the pod root
        # (the checkout, where mktemp's directories are, may be private).
        base = base or reachableDirectory(testCase, "p2-agent-")
        os.makedirs(base, exist_ok=True)
        self.base = base
        # A short removal grace: unscheduled pods go within a second here
        # (tests of the grace itself set their own).  Pods run as 'nobody',
        # an existing account the agent must be allowed.
        defaults = dict(resyncInterval=2.0, sessionTTL=5.0, fetchTimeout=5.0, removalGrace=1.0,
                        allowedRunAs=["nobody"])
        defaults.update(settings)
        self.config = AgentConfig(node=node, store=storeURL, podRoot=os.path.join(base, "pods"),
                                  stateDir=os.path.join(base, "state"), supervisor=supervisor,
                                  **defaults)
        self.top = None
        self.agent = None
        testCase.addCleanup(self.cleanUp)

    def start(self):
        self.pods = PodOperations.fromConfig(self.config, reactor)
        self.top = service.MultiService()
        self.agent = AgentService(self.config, self.pods, reactor, facts=self.pods.facts)
        self.agent.setServiceParent(self.top)
        self.pods.service().setServiceParent(self.top)
        self.top.startService()
        return self

    def stop(self):
        """
        Stop the agent (runit pods keep running).
        """
        top, self.top = self.top, None
        if top is None:
            return defer.succeed(None)
        return defer.maybeDeferred(top.stopService)

    def layout(self, podId):
        return PodLayout(self.config.podRoot, podId)

    def servicePid(self, podId, launchableId="web", entry="bin/launch"):
        """
        @return: the pid runit's C{supervise/pid} gives for one entry point
            of a pod (0 while it is down).
        """
        from p2twisted.agent.layout import StateLayout, serviceName
        path = os.path.join(StateLayout(self.config.stateDir).service(
            serviceName(podId, launchableId, entry)), "supervise", "pid")
        with open(path) as f:
            return int(f.read().strip() or 0)

    def whenConverged(self, timeout=30.0):
        return waitFor(lambda: self.agent is not None and self.agent.converged(),
                       timeout=timeout, what="agent %s to converge" % (self.config.node,))

    @defer.inlineCallbacks
    def cleanUp(self):
        yield self.stop()
        # Remove whatever pods are still supervised, with a fresh supervisor.
        from p2twisted.agent.layout import StateLayout
        from p2twisted.agent.supervisors import makeSupervisor
        if not os.path.isdir(StateLayout(self.config.stateDir).serviceDir):
            return
        supervisor = makeSupervisor(self.config.supervisor, StateLayout(self.config.stateDir),
                                    reactor)
        for name in (yield supervisor.services()):
            yield supervisor.remove(name, 5.0)
        yield supervisor.close()
        # The accounts the agent created for pods left installed.
        from p2twisted.agent.users import PodUsers
        PodUsers(self.config.stateDir, self.config.podRoot).removeUnused(set())
