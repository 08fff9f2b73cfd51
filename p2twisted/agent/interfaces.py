# -*- test-case-name: tests.test_supervisors -*-
"""
The agent's seams: what it does to pods, process supervision, artifact
fetching, health checks.  Public fakes of them are in
L{p2twisted.agent.testing}.
"""

import attr
from zope.interface import Attribute, Interface


@attr.s(frozen=True)
class ServiceSpec(object):
    """
    What to supervise for one entry point of one launchable.

    @ivar name: the service name (L{layout.serviceName}).
    @ivar argv: the command, normally C{[p2-exec, ..., "--", entry]}.
    @ivar restartPolicy: C{"always"} (restart when it exits) or C{"never"}
        (run once).
    @ivar restartTimeout: seconds to wait for a stop or a start to complete.
    @ivar env: extra environment for the service (on top of the standard PATH).
    @ivar signature: a digest of everything that reaches the process besides
        C{argv} and C{env} (the agent gives its pod manifest's SHA: env dirs,
        config, user, limits, install): a service running with another
        signature is restarted by L{ISupervisor.start}.  C{None} asks for no
        such restart (a launchable with C{no_halt_on_update} reloads itself).
    """

    name = attr.ib()
    argv = attr.ib(converter=tuple)
    restartPolicy = attr.ib(default="always")
    restartTimeout = attr.ib(default=60.0)
    env = attr.ib(default=attr.Factory(dict), hash=False)
    signature = attr.ib(default=None)


@attr.s(frozen=True)
class ServiceStatus(object):
    """
    What the supervisor knows about a service.

    @ivar name: the service name.
    @ivar running: whether its process is up.
    @ivar pid: the process id when running, else C{None}.
    @ivar uptime: seconds in the current state, or C{None}.
    @ivar wantUp: whether the supervisor is keeping it up.
    @ivar restarts: how many times the supervisor restarted it after it
        ended on its own (since its definition last changed).
    @ivar quickExits: how many of the last runs in a row ended within
        C{MIN_UPTIME} seconds.
    @ivar loopingSince: when the first of those runs started (Unix time),
        or C{None}.
    @ivar lastExit: how its last run ended (e.g. C{"exit 3"}), or C{None}.
    @ivar restartDelay: seconds its latest restart waited after a quick exit
        (0 when the last run was not one).
    """

    name = attr.ib()
    running = attr.ib()
    pid = attr.ib(default=None)
    uptime = attr.ib(default=None)
    wantUp = attr.ib(default=True)
    restarts = attr.ib(default=0)
    quickExits = attr.ib(default=0)
    loopingSince = attr.ib(default=None)
    lastExit = attr.ib(default=None)
    restartDelay = attr.ib(default=0.0)


class ISupervisor(Interface):
    """
    Runs services and keeps them running.
    """

    name = Attribute("'runit' or 'builtin'.")

    def start(spec, restart=False):
        """
        Define the service C{spec} (atomically replacing an older definition)
        and make sure it is running.  A service already running is restarted
        (stopped as L{stop} does, then started) when its process was started
        with another C{spec.signature} than the one given (unless that is
        C{None}), or when C{restart} is true; otherwise it is left alone, so
        an unchanged signature restarts nothing.

        @return: L{Deferred} firing with the L{ServiceStatus} once the process
            is up (for policy C{"never"}: once started), or failing with
            L{SupervisorError} after C{spec.restartTimeout} seconds.
        """

    def prepare(spec):
        """
        Get ready to start C{spec} (a pod's new version, while its
        artifacts install) without starting it or touching what runs: what
        L{start} would do before the process starts, done beforehand.  A
        new service prepared and then not started is removed with
        L{remove}; for one that exists, L{unprepare} discards what was
        prepared.

        @return: L{Deferred} firing with C{None}, or failing with
            L{SupervisorError} (then L{start} does it all).
        """

    def unprepare(name):
        """
        Discard what L{prepare} made for the existing service C{name}, if
        anything; the service is left as it is, unless it is a new one
        L{prepare} made and no L{start} took up (even before a restart of
        the agent): that one is removed.

        @return: L{Deferred} firing with C{None}.
        """

    def stop(name, timeout):
        """
        Stop the service (TERM, then KILL after C{timeout} seconds) and keep it
        down.  Stopping a stopped or unknown service is a no-op.

        @return: L{Deferred} firing with C{None} once no process of it remains.
        """

    def remove(name, timeout):
        """
        Stop the service and delete its definition.

        @return: L{Deferred} firing with C{None}.
        """

    def status(name):
        """
        @return: L{Deferred} firing with a L{ServiceStatus}, or C{None} for an
            unknown service.
        """

    def services():
        """
        @return: L{Deferred} firing with the sorted names of every defined
            service (so an agent can adopt them after a restart, and prune).
        """

    def close():
        """
        Release the supervisor's resources.  Services supervised outside the
        agent (runit) keep running; in-agent ones (builtin) are stopped.

        @return: L{Deferred} firing with C{None}.
        """


class IArtifactFetcher(Interface):
    """
    Brings artifacts into the local content-addressed cache.
    """

    def fetch(url, digest=None, digestLocation=None):
        """
        Make sure the artifact at C{url} is in the cache, verified against
        C{digest} (SHA-256 hex) and/or the sha256sum file at C{digestLocation}.

        @return: L{Deferred} firing with C{(path, sha256)}; failing with
            L{FetchError}, L{DigestMismatch} or L{ArtifactError}.
        """

    def close():
        """
        Release connections.

        @return: L{Deferred} firing with C{None}.
        """


@attr.s(frozen=True)
class HealthResult(object):
    """
    One health check of a pod.

    @ivar status: C{"passing"} or C{"critical"}.
    @ivar output: what the check saw, a short text.
    """

    status = attr.ib()
    output = attr.ib(default="")


class IHealthChecker(Interface):
    """
    Checks a pod's health (P2: C{GET http://127.0.0.1:<status.port><status.path>}).
    """

    def check(manifest):
        """
        @param manifest: the pod's L{PodManifest}.
        @return: L{Deferred} firing with a L{HealthResult}, or C{None} when
            the manifest declares no check; never failing.
        """

    def close():
        """
        Release connections.

        @return: L{Deferred} firing with C{None}.
        """


class IPodOperations(Interface):
    """
    What the agent does to the pods of its machine
    (L{p2twisted.agent.pods.PodOperations}).
    """

    hooks = Attribute("The L{p2twisted.agent.hooks.HookRunner} of this machine's hooks, or "
                      "C{None} when this machine runs no hooks (then hook pods are not "
                      "installed either).")
    artifacts = Attribute("The L{p2twisted.agent.artifacts.ArtifactCache} (hook pods are "
                          "installed with it); may be C{None} when C{hooks} is.")
    installer = Attribute("The L{p2twisted.agent.install.Installer} (for hook pods); may be "
                          "C{None} when C{hooks} is.")
    supervisor = Attribute("The L{ISupervisor} that keeps the pods up (its restart counts are "
                           "published as crash loops); may be C{None}.")

    def deploy(manifest, old):
        """
        Make C{manifest} the running version of its pod; C{old} is the
        manifest in reality (a L{PodManifest} of the same pod), or C{None}.

        @return: L{Deferred} firing once every entry point runs; failing with
            an L{AgentError} when the previous version keeps running.
        """

    def remove(manifest, podId):
        """
        Halt and uninstall C{podId}; C{manifest} is the one in reality, or
        C{None} when unknown or not trusted.

        @return: L{Deferred} firing when nothing of the pod remains.
        """

    def unsupervised(manifest):
        """
        @return: L{Deferred} firing with the sorted names of the pod's
            services no supervisor keeps up here (C{["*"]}: it has none, or
            what is installed is another manifest than C{manifest}).
        """

    def relaunch(manifest, names):
        """
        Start again the services C{names} (as from L{unsupervised}) from the
        pod's current installs.

        @return: L{Deferred}; failing with L{AgentError} when an install is
            gone, or what is installed is another manifest than C{manifest}
            (then a full deploy is needed).
        """

    def runsAs(manifest):
        """
        @return: the account the pod C{manifest} (and its tasks) runs as on
            this machine: its C{run_as} when the agent is root, else the
            agent's own user.  The auth policy judges it as this user.
        """

    def installedPods():
        """
        @return: C{{pod_id: manifest bytes}} of the pods on disk (or a
            L{Deferred} firing with it).
        """

    def requestHandlers():
        """
        @return: the handlers of this node's requests (C{p2 run}, C{p2
            logs}) for L{p2twisted.agent.requests.RequestRunner}, or C{None}
            when this machine takes none.
        """

    def healthChecker():
        """
        @return: the L{IHealthChecker} of this machine's pods, or C{None}
            when it checks none.
        """
