# -*- test-case-name: tests.test_cli_store -*-
"""
C{p2 store copy FROM_URL TO_URL}: move a namespace between coordination
stores of any two backends (say, from the embedded store to etcd).

Only persistent keys are copied: ephemeral keys (agent presence, locks)
belong to live sessions of the source and are re-created by their owners
once they run on the target.  A target holding keys is refused unless
C{--force}, which replaces its persistent keys with the source's.  After
writing, every key is read back from the target and compared, and the
source is read again: a write to it during the copy fails the copy.
"""

import attr
from twisted.internet import defer

from p2twisted.errors import P2Error, UsageError
from p2twisted.store import keys
from p2twisted.store.common import MAX_OPS, MAX_VALUE, Delete, Put

#: Value bytes per transaction: a batch stays under every backend's request
#: limit (Consul's 512 KiB txn body, where values travel base64-encoded;
#: ZooKeeper's 1 MB; etcd's 1.5 MiB).  A larger value is written alone with
#: C{put}, which every backend takes up to 512 KiB.
BATCH_BYTES = MAX_VALUE // 2


def register(subparsers):
    store = subparsers.add_parser(
        "store", help="copy a namespace between coordination stores",
        description="Work on coordination stores as a whole.")
    verbs = store.add_subparsers(dest="storeVerb", metavar="VERB", parser_class=type(store))
    verbs.required = True
    copy = verbs.add_parser(
        "copy", help="copy every persistent key from one store to another",
        description="Copy the namespace of FROM_URL into TO_URL (any two backends: local://, "
                    "zk://, etcd://, ...). Only persistent keys are copied; ephemeral keys "
                    "(agent presence, locks) are re-created by their owners once they use the "
                    "new store. Every copied key is read back and compared. Stop the agents "
                    "first so the source does not change meanwhile; their pods keep running.")
    copy.add_argument("source", metavar="FROM_URL", help="the store to copy from")
    copy.add_argument("target", metavar="TO_URL", help="the store to copy into")
    copy.add_argument("--dry-run", action="store_true",
                      help="print what would be copied and deleted, change nothing")
    copy.add_argument("--force", action="store_true",
                      help="copy into a store that holds keys: its persistent keys are replaced "
                           "by the source's (those only in the target are deleted)")
    copy.set_defaults(run=runCopy)


@attr.s(frozen=True)
class CopyPlan(object):
    """
    What copying one snapshot over another means.

    @ivar copy: C{{key: Entry}} of the source's persistent keys.
    @ivar ephemeral: the source's ephemeral keys, sorted (not copied).
    @ivar stale: the target's persistent keys not in the source, sorted
        (deleted with C{--force}).
    @ivar existing: how many keys the target holds.
    """

    copy = attr.ib()
    ephemeral = attr.ib()
    stale = attr.ib()
    existing = attr.ib()

    @classmethod
    def between(cls, source, target):
        """
        @param source: C{{key: Entry}} of the source.
        @param target: C{{key: Entry}} of the target.
        """
        copy = {k: e for k, e in source.items() if e.owner is None}
        return cls(copy, sorted(k for k, e in source.items() if e.owner is not None),
                   sorted(k for k, e in target.items() if e.owner is None and k not in copy),
                   len(target))

    @property
    def nodes(self):
        """
        @return: the nodes whose marker (C{intent/<node>}) is copied, sorted.
        """
        return sorted(keys.parse(k)[-1] for k in self.copy
                      if k == keys.intentNode(keys.parse(k)[-1]))

    @property
    def size(self):
        return sum(len(e.value) for e in self.copy.values())

    def batches(self):
        """
        @return: lists of ops (deletes of stale keys, then puts), each at
            most L{MAX_OPS} ops and L{BATCH_BYTES} bytes of values (or one
            op, a larger value).
        """
        ops = [Delete(k) for k in self.stale] + [
            Put(k, self.copy[k].value) for k in sorted(self.copy)]
        batch, size = [], 0
        for op in ops:
            weight = len(getattr(op, "value", b""))
            if batch and (len(batch) == MAX_OPS or size + weight > BATCH_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(op)
            size += weight
        if batch:
            yield batch


def mismatches(plan, target):
    """
    @param target: C{{key: Entry}} read back from the target after the copy.
    @return: the keys where the target differs from the plan, sorted.
    """
    wrong = {k for k, e in plan.copy.items()
             if k not in target or target[k].value != e.value}
    return sorted(wrong | {k for k in plan.stale if k in target})


@defer.inlineCallbacks
def copyStore(source, target, force=False, dryRun=False, out=None):
    """
    Copy C{source}'s persistent keys into C{target}, printing what happens
    to C{out} (a file).

    @return: L{Deferred} firing with the L{CopyPlan} carried out.
    @raise P2Error: when the source is empty, the target holds keys and not
        C{force}, the copy read back differs, or the source changed
        meanwhile.
    """
    write = out.write if out is not None else (lambda text: None)
    plan = CopyPlan.between((yield source.list("")), (yield target.list("")))
    if not plan.copy:
        raise P2Error("%s holds no persistent keys: nothing to copy" % (source.url,))
    if plan.existing and not force:
        raise P2Error("%s already holds %d keys; use --force to replace its persistent keys "
                      "with those of %s" % (target.url, plan.existing, source.url))
    verb = ("would copy", "would delete", "would skip") if dryRun else \
        ("copying", "deleting", "skipping")
    write("%s %d keys (%s) from %s to %s\n" % (
        verb[0], len(plan.copy), _size(plan.size), source.url, target.url))
    if plan.stale:
        write("%s %d keys only in %s: %s\n" % (verb[1], len(plan.stale), target.url,
                                               ", ".join(plan.stale)))
    if plan.ephemeral:
        write("%s %d ephemeral keys (their owners re-create them): %s\n" % (
            verb[2], len(plan.ephemeral), ", ".join(plan.ephemeral)))
    if dryRun:
        return plan
    count = 0
    for batch in plan.batches():
        if len(batch) == 1 and isinstance(batch[0], Put):
            yield target.put(batch[0].key, batch[0].value)
        else:
            yield target.transaction(batch)
        count += 1
    wrong = mismatches(plan, (yield target.list("")))
    if wrong:
        raise P2Error("the copy in %s differs from %s at %d keys: %s" % (
            target.url, source.url, len(wrong), ", ".join(wrong[:10])))
    again = CopyPlan.between((yield source.list("")), {}).copy
    changed = sorted(k for k in set(again) | set(plan.copy) if k not in again or
                     k not in plan.copy or again[k].version != plan.copy[k].version)
    if changed:
        raise P2Error("%s changed during the copy at %d keys: %s; stop what writes to it "
                      "(agents, orchestrators, p2 commands) and copy again with --force" % (
                          source.url, len(changed), ", ".join(changed[:10])))
    write("copied in %d write(s); read back and verified all %d keys\n" % (
        count, len(plan.copy)))
    if plan.nodes:
        # Their markers have new store versions: the failsafe sees them as new.
        write("agents on the new store hold pod removals until their node is confirmed: "
              "p2 --store %s node confirm NODE (nodes: %s)\n"
              % (target.url, ", ".join(plan.nodes)))
    return plan


def _size(n):
    return "%d bytes" % (n,) if n < 1024 else "%.1f KiB" % (n / 1024.0,)


@defer.inlineCallbacks
def runCopy(options):
    from p2twisted.store import openStore
    if options.source == options.target:
        raise UsageError("FROM_URL and TO_URL are the same store: %s" % (options.source,))
    source = yield openStore(options.source, options.reactor)
    try:
        target = yield openStore(options.target, options.reactor)
        try:
            yield copyStore(source, target, options.force, options.dry_run, options.out)
        finally:
            yield target.close()
    finally:
        yield source.close()
    return 0
