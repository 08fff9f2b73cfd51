# -*- test-case-name: tests.test_agent_testing -*-
"""
Public in-memory fakes of the agent's seams (as treq ships C{StubTreq}), for
testing the agent, its workers, or code built on them without touching the
machine:

  - L{FakePods}: an L{IPodOperations} recording deploys and removals, each
    of which may be made to fail or to wait;
  - L{FakeSupervisor}: an L{ISupervisor} keeping services in a dict;
  - L{FakeFetcher}: an L{IArtifactFetcher} answering from a dict.

Each is checked against its interface with C{verifyObject}.
"""

from twisted.internet import defer
from zope.interface import implementer

from p2twisted.agent.interfaces import (
    IArtifactFetcher, IPodOperations, ISupervisor, ServiceStatus)
from p2twisted.errors import DigestMismatch, FetchError


@implementer(IPodOperations)
class FakePods(object):
    """
    Records what the agent asks of its pods.

    @ivar calls: C{("deploy", sha, old sha or None)}, C{("remove", sha or
        None, pod id)} and C{("relaunch", sha, names)}, in order.
    @ivar fail: an exception that deploys and removals fail with, or C{None}.
    @ivar gate: a L{Deferred} the next deploy or removal returns (then it
        ends when the test fires it), or C{None}.
    @ivar down: what L{unsupervised} answers (default: nothing is down).
    @ivar onDisk: what L{installedPods} answers.
    @ivar user: the account L{runsAs} answers for every pod, as for an
        agent that is not root, or C{None}: each pod's C{run_as}.
    """

    hooks = None
    artifacts = None
    installer = None
    supervisor = None

    def __init__(self, onDisk=None):
        self.calls = []
        self.fail = None
        self.gate = None
        self.down = []
        self.onDisk = dict(onDisk or {})
        self.user = None

    def deploy(self, manifest, old):
        self.calls.append(("deploy", manifest.sha(), old.sha() if old else None))
        return self._outcome()

    def remove(self, manifest, podId):
        self.calls.append(("remove", manifest.sha() if manifest else None, podId))
        return self._outcome()

    def unsupervised(self, manifest):
        return defer.succeed(list(self.down))

    def relaunch(self, manifest, names):
        self.calls.append(("relaunch", manifest.sha(), list(names)))
        return defer.succeed(None)

    def runsAs(self, manifest):
        return manifest.runAs if self.user is None else self.user

    def installedPods(self):
        return dict(self.onDisk)

    def requestHandlers(self):
        return None

    def healthChecker(self):
        return None

    def _outcome(self):
        if self.gate is not None:
            gate, self.gate = self.gate, None
            return gate
        if self.fail is not None:
            return defer.fail(self.fail)
        return defer.succeed(None)


@implementer(ISupervisor)
class FakeSupervisor(object):
    """
    Keeps service definitions in memory; a started service is "running"
    with a made-up pid until stopped.

    @ivar specs: C{{name: ServiceSpec}} of the defined services.
    @ivar started: the names started (or restarted), in order.
    @ivar fail: an exception that starts fail with, or C{None}.
    """

    name = "fake"

    def __init__(self):
        self.specs = {}
        self.started = []
        self.fail = None
        self.closed = False
        self._up = {}
        self._pids = iter(range(1000, 1 << 30))

    def start(self, spec, restart=False):
        if self.fail is not None:
            return defer.fail(self.fail)
        if spec.name in self._up and self.specs.get(spec.name) == spec and not restart:
            return defer.succeed(self._status(spec.name))
        self.specs[spec.name] = spec
        self._up[spec.name] = next(self._pids)
        self.started.append(spec.name)
        return defer.succeed(self._status(spec.name))

    def prepare(self, spec):
        return defer.succeed(None)

    def unprepare(self, name):
        return defer.succeed(None)

    def stop(self, name, timeout):
        self._up.pop(name, None)
        return defer.succeed(None)

    def remove(self, name, timeout):
        self._up.pop(name, None)
        self.specs.pop(name, None)
        return defer.succeed(None)

    def status(self, name):
        if name not in self.specs:
            return defer.succeed(None)
        return defer.succeed(self._status(name))

    def services(self):
        return defer.succeed(sorted(self.specs))

    def close(self):
        self.closed = True
        return defer.succeed(None)

    def _status(self, name):
        pid = self._up.get(name)
        return ServiceStatus(name=name, running=pid is not None, pid=pid, uptime=0.0,
                             wantUp=pid is not None)


@implementer(IArtifactFetcher)
class FakeFetcher(object):
    """
    Answers fetches from C{artifacts}: C{{url: (path, sha256)}}.  An unknown
    URL fails with L{FetchError}; a C{digest} that differs from the sha
    fails with L{DigestMismatch}.

    @ivar fetched: the URLs asked for, in order.
    """

    def __init__(self, artifacts=None):
        self.artifacts = dict(artifacts or {})
        self.fetched = []
        self.closed = False

    def fetch(self, url, digest=None, digestLocation=None):
        self.fetched.append(url)
        if url not in self.artifacts:
            return defer.fail(FetchError("cannot fetch %s: 404 Not Found" % (url,)))
        path, sha = self.artifacts[url]
        if digest is not None and digest != sha:
            return defer.fail(DigestMismatch("%s: digest %s, expected %s" % (url, sha, digest)))
        return defer.succeed((path, sha))

    def close(self):
        self.closed = True
        return defer.succeed(None)


__all__ = ["FakePods", "FakeSupervisor", "FakeFetcher"]
