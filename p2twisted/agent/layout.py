# -*- test-case-name: tests.test_agent_runtime -*-
"""
Where things live on disk (DESIGN.md, "Machine agent"): the only module that
builds agent paths.

    <pod_root>/<pod_id>/                        POD_HOME
      current_manifest.yaml
      config/<pod_id>_<sha>.yaml                CONFIG_PATH
      env/                                      pod env dir
      <launchable>/installs/<launchable>_<version>/
      <launchable>/current -> installs/...
      <launchable>/last    -> installs/...
      <launchable>/env/                         launchable env dir
    <state_dir>/service/<pod>__<launchable>__<entry>   supervised service dirs
    <state_dir>/artifacts/<sha256>                       artifact cache
    <state_dir>/tmp/                                     downloads in progress
"""

import os

import attr


@attr.s(frozen=True)
class PodLayout(object):
    """
    The paths of one pod under C{podRoot}.
    """

    podRoot = attr.ib()
    podId = attr.ib()

    @property
    def home(self):
        return os.path.join(self.podRoot, self.podId)

    @property
    def currentManifest(self):
        return os.path.join(self.home, "current_manifest.yaml")

    @property
    def configDir(self):
        return os.path.join(self.home, "config")

    def configPath(self, sha):
        return os.path.join(self.configDir, "%s_%s.yaml" % (self.podId, sha))

    @property
    def envDir(self):
        return os.path.join(self.home, "env")

    def launchableDir(self, launchableId):
        return os.path.join(self.home, launchableId)

    def launchableEnvDir(self, launchableId):
        return os.path.join(self.launchableDir(launchableId), "env")

    def installsDir(self, launchableId):
        return os.path.join(self.launchableDir(launchableId), "installs")

    def installDir(self, launchableId, version):
        return os.path.join(self.installsDir(launchableId), "%s_%s" % (launchableId, version))

    def current(self, launchableId):
        """The C{current} link: the running version's install dir."""
        return os.path.join(self.launchableDir(launchableId), "current")

    def last(self, launchableId):
        """The C{last} link: the version that ran before C{current}."""
        return os.path.join(self.launchableDir(launchableId), "last")


@attr.s(frozen=True)
class StateLayout(object):
    """
    The agent's own state under C{stateDir}.
    """

    stateDir = attr.ib()

    @property
    def serviceDir(self):
        return os.path.join(self.stateDir, "service")

    def service(self, name):
        return os.path.join(self.serviceDir, name)

    @property
    def artifactsDir(self):
        return os.path.join(self.stateDir, "artifacts")

    def artifact(self, sha256):
        return os.path.join(self.artifactsDir, sha256)

    @property
    def tmpDir(self):
        return os.path.join(self.stateDir, "tmp")

    @property
    def seenRequests(self):
        """The signed requests carried out, until their deadlines (JSON)."""
        return os.path.join(self.stateDir, "seen-requests.json")

    @property
    def nodeMarker(self):
        """The identity of the node marker the agent last accepted (JSON)."""
        return os.path.join(self.stateDir, "node-marker.json")


def podServices(names, podId):
    """
    @return: those of the service C{names} that belong to pod C{podId}
        (unambiguous, as ids never contain C{__} nor start or end with C{_}).
    """
    return [name for name in names if name.startswith(podId + "__")]


def serviceLaunchable(name):
    """
    @return: the launchable id in a L{serviceName}.
    """
    return name.split("__")[1]


def cgroupName(podId, launchableId):
    """
    @return: the name of the cgroup (C{p2/<name>}) of a launchable's
        processes: C{@} joins the ids, as it can occur in neither.
    """
    return "%s@%s" % (podId, launchableId)


def serviceName(podId, launchableId, entryPoint):
    """
    @return: the supervised service's name for one entry point:
        C{<pod>__<launchable>__<entry>} with C{/} in the entry's path as C{__}.
    """
    entry = entryPoint.strip("/").replace("/", "__")
    return "%s__%s__%s" % (podId, launchableId, entry)
