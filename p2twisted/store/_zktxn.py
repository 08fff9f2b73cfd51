# -*- test-case-name: tests.test_store_zookeeper -*-
"""
Planning a store transaction as one ZooKeeper C{multi} (see
L{p2twisted.store.zookeeper} for the znode layout and versions).

  - C{Check(key, version)}, C{Put}/C{Delete} with a version: the entry read
    must have that C{mzxid}, else the op conflicts now; the multi then checks
    the C{dataVersion} read, so a write in between is a conflict too.  A
    lock's C{Check} also checks the lock's fence znode (C{fences}), which a
    lock re-created by another session in between does not have.
  - C{Check(key, None)} (absent) and an unconditional C{Delete} of an absent
    key: a structural znode must keep its C{dataVersion}; where there is no
    znode, a create+delete pair proves there still is none.
  - C{Create}: on a structural znode, a check of its C{dataVersion}; then,
    like C{Put}, C{create} (parents made beforehand, structural) or
    C{set_data}.
  - C{Delete}: C{delete}, or C{set_data(b"")} when keys remain below.

Every check is against the state before the transaction (like the memory
store); the writes see the state the earlier writes leave.  A multi op that
fails because the plan was made from a stale read (a structural race) makes
the caller read again and re-plan.
"""

from p2twisted.errors import KeyExists, VersionConflict
from p2twisted.store._zkclient import BACKEND, HEADER, isEntry, parent
from p2twisted.store.common import Check, Create, Delete, Put


def mayCreate(op):
    """
    Whether a transaction op may create its znode when absent (to write it,
    or to prove it absent with a create+delete pair): its parent must exist.
    """
    return isinstance(op, (Put, Create)) or op.version is None


class Plan(object):
    """
    The ZooKeeper multi for one attempt at a transaction, planned from
    C{states} (C{{path: (data, stat) or None}}) read just before.

    @ivar zk: the multi's ops, each C{(method, args, opIndex, conflict)}: if
        it fails and C{conflict}, op C{opIndex} conflicts; else the plan was
        stale.
    @ivar results: per op, C{None}, C{True}/C{False} (Delete), or
        C{("set", n)} (an entry whose stat is the multi's result C{n}) or
        C{("created", None)} (an entry created with the multi's zxid).
    @ivar prune: parents of deleted leaves.
    @ivar needsProbe: whether no multi op returns a stat, so the multi's
        zxid (the created entries' version) is unknown: plan again with
        C{probe=True} to create the first entry empty and then set it.

    @raise VersionConflict, KeyExists: when an op already fails against
        C{states}.
    """

    def __init__(self, ops, paths, states, acl, probe=False, fences=None):
        self.zk, self.results, self.prune = [], [], []
        self._fences = fences or {}
        # path -> [exists, isEntry, dataVersion, numChildren]
        sim = {}
        for path, st in states.items():
            data, stat = st if st is not None else (None, None)
            sim[path] = [st is not None, isEntry(data), stat.version if stat else 0,
                         stat.numChildren if stat else 0]
        self._guards(ops, paths, states, sim, acl)
        created = False
        for i, (op, path) in enumerate(zip(ops, paths)):
            s = sim[path]
            if isinstance(op, (Put, Create)):
                data = HEADER + op.value
                if s[0]:
                    self._add("set_data", (path, data, -1), i)
                    s[1:3] = [True, s[2] + 1]
                    self.results.append(("set", len(self.zk) - 1))
                    continue
                if probe:
                    self._add("create", (path, b"", acl), i)
                    self._add("set_data", (path, data, 0), i)
                    s[:], probe = [True, True, 1, 0], False
                    self.results.append(("set", len(self.zk) - 1))
                else:
                    self._add("create", (path, data, acl), i)
                    s[:], created = [True, True, 0, 0], True
                    self.results.append(("created", None))
                self._child(sim, path, 1)
            elif isinstance(op, Delete) and s[1]:
                if s[3]:
                    self._add("set_data", (path, b"", s[2]), i)
                    s[1:3] = [False, s[2] + 1]
                else:
                    self._add("delete", (path, s[2]), i)
                    s[:] = [False, False, 0, 0]
                    self._child(sim, path, -1)
                    self.prune.append(parent(path))
                self.results.append(True)
            else:
                self.results.append(False if isinstance(op, Delete) else None)
        self.needsProbe = created and not any(z[0] == "set_data" for z in self.zk)

    def _guards(self, ops, paths, states, sim, acl):
        """
        Fail now, or add the multi ops holding the state read, for every op
        with a precondition.
        """
        touched = set()
        for i, (op, path) in enumerate(zip(ops, paths)):
            exists, entry, dv, _ = sim[path]
            version = getattr(op, "version", None)
            first = path not in touched
            touched.add(path)
            if version is not None:
                if not entry or states[path][1].mzxid != version:
                    raise VersionConflict(op.key, BACKEND, index=i)
                self._add("check", (path, dv), i, conflict=True)
                fence = states.get(self._fences.get(i))
                if fence is not None:  # a lock's fence: gone if its session is
                    self._add("check", (self._fences[i], fence[1].version), i, conflict=True)
            elif isinstance(op, (Check, Create, Delete)):
                if entry and isinstance(op, Create):
                    raise KeyExists(op.key, BACKEND, index=i)
                if entry and isinstance(op, Check):
                    raise VersionConflict(op.key, BACKEND, index=i)
                if exists and not entry:
                    self._add("check", (path, dv), i)
                elif not exists and not (isinstance(op, Create) and first):
                    # (A Create that is the first op on its key proves the
                    # absence itself.)
                    self._add("create", (path, b"", acl), i)
                    self._add("delete", (path, 0), i)

    def _add(self, method, args, index, conflict=False):
        self.zk.append((method, args, index, conflict))

    @staticmethod
    def _child(sim, path, change):
        up = sim.get(parent(path))
        if up is not None:
            up[3] += change
