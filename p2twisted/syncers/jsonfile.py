# -*- test-case-name: tests.test_syncers -*-
"""
The C{json} syncer: a service-discovery file per pod cluster,
C{<directory>/<cluster id>.json}, replaced atomically (a reader sees the old
file or the new one, never a part)::

    {"id": ..., "pod_id": ..., "availability_zone": ..., "cluster_name": ...,
     "annotations": {...},
     "members": [{"node", "pod_id", "address", "healthy"}, ...],
     "healthy": ["host:port", ...]}

Settings (orchestrator config, C{syncers: {json: {...}}}): C{directory}
(required; created if absent).
"""

import json
import os

from twisted.internet import defer
from zope.interface import implementer

from p2twisted.orchestrate.syncers import IPodClusterSyncer, SyncerError, setting

SUFFIX = ".json"


@implementer(IPodClusterSyncer)
class JSONFileSyncer(object):
    """
    @ivar directory: where the files are.
    """

    name = "json"

    def __init__(self, directory):
        self.directory = directory

    def path(self, clusterId):
        return os.path.join(self.directory, clusterId + SUFFIX)

    def render(self, cluster, members):
        """@return: the bytes of C{cluster}'s file."""
        data = dict(cluster.toDict(), members=[m.toDict() for m in members],
                    healthy=sorted(m.address for m in members if m.healthy and m.address))
        return (json.dumps(data, sort_keys=True, indent=2) + "\n").encode("utf-8")

    def sync(self, cluster, members):
        from p2twisted.agent.runtime import atomicWrite
        try:
            os.makedirs(self.directory, exist_ok=True)
            atomicWrite(self.path(cluster.id), self.render(cluster, members))
        except OSError as e:
            return defer.fail(SyncerError("json syncer: cannot write %s: %s"
                                          % (self.path(cluster.id), e.strerror or e)))
        return defer.succeed(None)

    def delete(self, clusterId):
        try:
            os.unlink(self.path(clusterId))
        except FileNotFoundError:
            pass
        except OSError as e:
            return defer.fail(SyncerError("json syncer: cannot remove %s: %s"
                                          % (self.path(clusterId), e.strerror or e)))
        return defer.succeed(None)

    def initialClusters(self):
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            names = []
        return defer.succeed(sorted(n[:-len(SUFFIX)] for n in names
                                    if n.endswith(SUFFIX) and not n.startswith(".")))


def syncer(settings, reactor):
    """The C{json} entry point."""
    return JSONFileSyncer(setting("json", settings, "directory", str, required=True))
