# -*- test-case-name: tests.test_supervisors -*-
"""
The agent's seams: process supervision, artifact fetching, health checks.
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
    """

    name = attr.ib()
    running = attr.ib()
    pid = attr.ib(default=None)
    uptime = attr.ib(default=None)
    wantUp = attr.ib(default=True)


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
