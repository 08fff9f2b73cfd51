# -*- test-case-name: tests.test_records_daemonset -*-
"""
The daemon set record (C{daemon_sets/<id>}): run one pod on every node a
label selector matches (P2's C{pkg/ds}, reference/p2.md section 8).

Like the other controller records, its constructor validates it (a
one-line L{UsageError}) and C{fromEntry} reads the stored JSON, raising
L{CorruptRecord} naming the key for anything else; C{manifest} and
C{pod_id} are required, never defaulted.
"""

import math

import attr

from p2twisted.errors import UsageError
from p2twisted.labels import parseSelector
from p2twisted.records.controllers import (
    DS_ID_LABEL, POD_ID_LABEL, _flag, _parsed, _seconds, _segment, _sha, checkManifest, checkSelector,
    dumpWithManifest, loadWithManifest)
from p2twisted.store import keys

# DS_ID_LABEL, the pod label naming a pod's daemon set, is defined beside
# the RC's labels (an RC may not set it) and read from here too.

#: Defaults (P2's: a 5 minute per-node timeout, 50 nodes at once).
DEFAULT_TIMEOUT = 300
DEFAULT_PARALLEL = 50


def _percent(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise UsageError("min_health must be a whole percentage 0-100, got %r" % (value,))


def _positive(what):
    def check(instance, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError("%s must be a whole number >= 1, got %r" % (what, value))
    return check


@attr.s(frozen=True)
class DaemonSet(object):
    """
    Run C{manifest} on every node C{node_selector} matches.

    @ivar pod_id: the manifest's pod id (checked).
    @ivar manifest: the pod manifest's bytes as written (perhaps signed).
    @ivar node_selector: label selector text over node labels; empty is
        every node.
    @ivar min_health: the percentage of the set's pods that must stay
        healthy while a new manifest replaces the old one.
    @ivar timeout: seconds a node's new pod has to turn healthy; past it,
        the replacement halts.
    @ivar rate: seconds between starting two nodes (0: no limit).
    @ivar parallel: nodes whose new pod is not yet healthy at once.
    @ivar disabled: make no change at all.
    """

    id = attr.ib(validator=_segment("daemon set id"))
    pod_id = attr.ib()
    manifest = attr.ib(validator=checkManifest)
    node_selector = attr.ib(default="", validator=checkSelector)
    min_health = attr.ib(default=0, validator=_percent)
    timeout = attr.ib(default=DEFAULT_TIMEOUT, validator=_seconds("timeout"))
    rate = attr.ib(default=0, validator=_seconds("rate"))
    parallel = attr.ib(default=DEFAULT_PARALLEL, validator=_positive("parallel"))
    disabled = attr.ib(default=False, validator=_flag("disabled"))

    FIELDS = ("id", "pod_id", "manifest", "node_selector", "min_health", "timeout", "rate",
              "parallel", "disabled")

    @manifest.validator
    def _checkPodId(self, attribute, value):
        podId = _parsed(value).id
        if self.pod_id != podId:
            raise UsageError("pod_id %r is not the manifest's id %r" % (self.pod_id, podId))

    @property
    def key(self):
        return keys.daemonSet(self.id)

    @property
    def sha(self):
        """The canonical SHA of the manifest (computed once per manifest)."""
        return _sha(self.manifest)

    def selector(self):
        return parseSelector(self.node_selector)

    def labelsForPods(self):
        """@return: the label map of every pod this daemon set schedules."""
        return {DS_ID_LABEL: self.id, POD_ID_LABEL: self.pod_id}

    def minHealthy(self, size):
        """@return: how many of C{size} pods must stay healthy (rounded up)."""
        return int(math.ceil(size * self.min_health / 100.0))

    def withDisabled(self, disabled):
        return attr.evolve(self, disabled=disabled)

    @classmethod
    def fromEntry(cls, key, entry):
        """
        @raise CorruptRecord: for anything but a valid daemon set's JSON,
            including one whose C{id} is not its key's.
        """
        return loadWithManifest(cls, key, entry, ("manifest", "pod_id"))

    def toBytes(self):
        return dumpWithManifest(self)
