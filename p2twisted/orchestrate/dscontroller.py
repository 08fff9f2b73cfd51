# -*- test-case-name: tests.test_orchestrate_dsfarm -*-
"""
The daemon set farm's controller: the glue between the generic farm
(L{p2twisted.orchestrate.farm}, kind C{ds}, locks C{locks/ds/<id>}) and the
pure L{p2twisted.orchestrate.daemonset.decide}.

It keeps the decision's L{Progress} (when each node's new pod started) in
memory and in its status (C{status/ds/<id>}), from which a successor that
claims the daemon set after this process died reads it back: a replacement
halted by a node's timeout stays halted across an orchestrator's restart.
"""

import json

import attr
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted.errors import StoreError
from p2twisted.orchestrate import daemonset as dsLogic
from p2twisted.orchestrate.controllers import RCController, _Controller
from p2twisted.orchestrate.farm import IController
from p2twisted.orchestrate.plan import Done, Plan, Unschedule, UpdateRecord
from p2twisted.records.controllers import AuditEvent
from p2twisted.records.daemonset import DS_ID_LABEL
from p2twisted.store import keys

log = Logger()


@implementer(IController)
class DSController(_Controller):
    """
    Keeps a daemon set's pods where L{daemonset.decide} says.

    @ivar progress: the L{dsLogic.Progress} kept between decisions
        (C{None} until read back from the status).
    """

    kind = "ds"
    auditKind = dsLogic.AUDIT_KIND
    ownerLabel = DS_ID_LABEL
    _wasMine = RCController._wasMine

    def events(self, plan):
        """
        @return: L{RCController.events} of the plan's changes but the
            orphans it removes (pods another daemon set's label claims: its
            record is gone), which are audited under that set's id.
        """
        own, orphans = [], {}
        for change in plan.changes:
            owner = _owner(plan.snapshot, change)
            if isinstance(change, Unschedule) and owner not in (None, self.objectId):
                orphans.setdefault(owner, []).append(change)
            else:
                own.append(change)
        found = RCController.events(self, attr.evolve(plan, changes=own))
        for owner, changes in sorted(orphans.items()):
            found.append(AuditEvent(self.auditKind, owner, "unschedule", {
                "nodes": sorted(c.node for c in changes), "pod_id": changes[0].podId,
                "reason": "orphaned: daemon set %s has no record (removed by the controller "
                          "of daemon set %s)" % (owner, self.objectId)}))
        return found

    def __init__(self, *args, **kw):
        self.decideDS = kw.pop("decide", dsLogic.decide)
        _Controller.__init__(self, *args, **kw)
        self.progress = None

    def recordKey(self):
        return keys.daemonSet(self.objectId)

    @defer.inlineCallbacks
    def reconcile(self):
        if self.progress is None:
            self.progress = yield self._lastProgress()
        return (yield _Controller.reconcile(self))

    @defer.inlineCallbacks
    def _lastProgress(self):
        """
        @return: L{Deferred} firing with the progress the last status of
            this daemon set recorded (by this process or a dead one), or an
            empty one when there is none or it is not JSON; failing with
            the store's error (the farm retries: a progress taken for empty
            would forget a halt and the last start's time).
        """
        entry = yield self.store.get(self.statusKey)
        try:
            data = json.loads(entry.value) if entry is not None else {}
        except ValueError:
            data = {}
        return dsLogic.Progress.fromJSON(data.get("progress") or {} if isinstance(data, dict)
                                         else {})

    def decide(self, snapshot):
        ds = snapshot.daemonSet(self.objectId)
        if ds is None:
            return None, None
        now = self.clock.seconds()
        outcome = self.decideDS(ds, snapshot, now, self.progress)
        if isinstance(outcome, Done):
            return None, None
        self.progress = dsLogic.advance(self.progress, ds, snapshot, outcome, now)
        if isinstance(outcome, Plan) and any(e.action == "contention" for e in outcome.events):
            log.critical("ds {object}: {reason}", object=self.objectId, reason=outcome.reason,
                         event="contention")
        elif outcome.reason.startswith(("HALTED", "HOLDING")):
            log.warn("ds {object}: {reason}", object=self.objectId, reason=outcome.reason,
                     event=outcome.reason.split(":")[0].lower())
        return outcome, dsLogic.status(ds, snapshot, outcome, self.progress)


def _owner(snapshot, change):
    """@return: the daemon set C{change}'s pod is labelled with, or C{None}."""
    if snapshot is None or isinstance(change, UpdateRecord):
        return None
    try:
        return snapshot.podLabels(change.node, change.podId).get(DS_ID_LABEL)
    except StoreError:
        return None
