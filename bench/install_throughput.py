"""
Install benchmark (not a test): our whole install path against the floor of
plain tools on the same artifact, in the same run, on the same filesystem.

    .venv/bin/python bench/install_throughput.py [--mb 200] [--small 30000] [--runs 3]

ours:  what the agent does (p2twisted/agent/pods.py): ArtifactCache.fetch(
       file://..., digest) -- copy into the cache while hashing (the writes
       in another thread) and verify the digest -- then Installer.install():
       decompress once, validate every header (plain ones without tarfile),
       pipe accepted bytes to GNU tar through a writer thread and a 1 MiB
       pipe, sync -f, rename.  (--rehash passes the digest to install too,
       which hashes the artifact again, in another thread, as it extracts.)
floor: sha256sum FILE && tar xzf FILE -C DIR  (no safety checks, no fsync).

Two artifacts: ~--mb MB of a few thousand files of mixed sizes (40% random,
incompressible), and --small tiny files.  Each is timed --runs times, ours
and the floor alternating, after an untimed `sync` so earlier writes are not
billed to the next run; everything is deleted only at the end (needs about
2 GB free).  CPU seconds (user + system, all threads and child processes)
are printed too: on a shared machine they vary less than wall time.

Targets (issue 10), ours / floor in wall time: mixed <= 0.65 (was 0.80),
small files <= 1.2 (was 1.85-1.98).  Measured on a shared 2-core VM (5 runs,
median; best; run by run): mixed 0.55; 0.56; 0.58 (CPU 0.60), small 1.08;
0.95; 1.06 (CPU 1.08).  The code before, same day, 5 runs: mixed 0.80;
0.75, small 0.85-2.82 depending on the load (CPU 0.98-1.46).
"""

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402
from twisted.logger import globalLogPublisher  # noqa: E402

from p2twisted.agent.artifacts import ArtifactCache, sha256File  # noqa: E402
from p2twisted.agent.install import Installer  # noqa: E402
from p2twisted.agent.layout import PodLayout, StateLayout  # noqa: E402

#: --rehash: pass the digest to Installer.install too.
REHASH = False


def buildMixed(top, totalBytes, rng):
    """
    Write a tree of mixed files totalling about C{totalBytes}.

    @return: the number of files.
    """
    words = b" ".join(b"w%d" % (rng.randrange(5000),) for _ in range(300000))
    count = written = 0
    while written < totalBytes:
        r = rng.random()
        if r < 0.80:
            size = rng.randint(200, 24000)
        elif r < 0.98:
            size = rng.randint(24000, 300000)
        else:
            size = rng.randint(1 << 20, 6 << 20)
        d = os.path.join(top, "pkg%02d" % (count % 50), "sub%d" % (count % 7))
        os.makedirs(d, exist_ok=True)
        if rng.random() < 0.4:
            data = os.urandom(size)
        else:
            start = rng.randrange(max(1, len(words) - size))
            data = words[start:start + size]
        with open(os.path.join(d, "f%05d" % (count,)), "wb") as f:
            f.write(data)
        if count % 10 == 0:
            os.chmod(os.path.join(d, "f%05d" % (count,)), 0o755)
        count += 1
        written += len(data)
    return count


def buildSmall(top, count, rng):
    for i in range(count):
        d = os.path.join(top, "pkg%03d" % (i // 100))
        if i % 100 == 0:
            os.makedirs(d)
        with open(os.path.join(d, "m%05d.py" % (i,)), "w") as f:
            f.write("x = %d\n" % (i,) * rng.randint(5, 150))
    return count


def pack(tree, artifact):
    subprocess.run(["tar", "czf", artifact, "-C", tree, "."], check=True)


def cpu():
    """
    @return: CPU seconds (user + system) used so far by this process (all its
        threads) and its waited-for children.
    """
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def floor(artifact, out, cpus):
    os.makedirs(out)
    subprocess.run(["sync"], check=True)
    started, used = time.perf_counter(), cpu()
    subprocess.run(["sh", "-c", 'sha256sum "$1" >/dev/null && tar xzf "$1" -C "$2"',
                    "sh", artifact, out], check=True)
    cpus.append(cpu() - used)
    return time.perf_counter() - started


@defer.inlineCallbacks
def ours(reactor, artifact, sha, work, phases):
    state, pods = os.path.join(work, "state"), os.path.join(work, "pods")
    subprocess.run(["sync"], check=True)
    started, used = time.perf_counter(), cpu()
    cache = ArtifactCache(StateLayout(state), reactor)
    path, got = yield cache.fetch("file://" + artifact, digest=sha)
    fetched = time.perf_counter()
    yield Installer(reactor).install(PodLayout(pods, "pod"), "app", "1", path,
                                     digest=sha if REHASH else None)
    elapsed = time.perf_counter() - started
    phases[-1]["cpu"] = cpu() - used
    yield cache.close()
    phases[-1]["fetch"] = fetched - started
    return elapsed


def describe(values):
    return "%6.2fs %6.2fs" % (min(values), statistics.median(values))


@defer.inlineCallbacks
def measure(reactor, label, artifact, work, runs, target):
    sha = sha256File(artifact)
    phases = []

    def observe(event):
        if event.get("event") == "installed" and phases:
            phases[-1].update(extract=event["extractSeconds"], sync=event["syncSeconds"])
    globalLogPublisher.addObserver(observe)
    floors, mine, floorCPU = [], [], []
    try:
        for number in range(runs):
            run = os.path.join(work, "run%d" % (number,))
            floors.append(floor(artifact, os.path.join(run, "floor"), floorCPU))
            phases.append({})
            t = yield ours(reactor, artifact, sha, run, phases)
            mine.append(t)
    finally:
        globalLogPublisher.removeObserver(observe)
    med = {k: statistics.median(p[k] for p in phases) for k in ("fetch", "extract", "sync")}
    print("\n%s" % (label,))
    print("  %-10s %7s %7s   (%d runs)" % ("", "best", "median", runs))
    print("  %-10s %s   sha256sum + tar xzf" % ("floor", describe(floors)))
    print("  %-10s %s   fetch file:// + verify + check + extract + sync -f + rename"
          % ("p2twisted", describe(mine)))
    print("  %-10s fetch+hash %.2fs, check+extract+verify %.2fs, sync -f %.2fs, rest %.2fs"
          % ("  median:", med["fetch"], med["extract"], med["sync"],
             statistics.median(mine) - med["fetch"] - med["extract"] - med["sync"]))
    print("  ratio      %6.2f  %6.2f    (target %s)"
          % (min(mine) / min(floors), statistics.median(mine) / statistics.median(floors), target))
    noSync = [m - p["sync"] for m, p in zip(mine, phases)]
    print("  ratio without our fsync (the floor has none): %.2f best, %.2f median"
          % (min(noSync) / min(floors), statistics.median(noSync) / statistics.median(floors)))
    paired = sorted(m / f for m, f in zip(mine, floors))
    print("  run by run (ours / the floor just before): %s; median %.2f"
          % (" ".join("%.2f" % (r,) for r in paired), statistics.median(paired)))
    ourCPU = [p["cpu"] for p in phases]
    print("  CPU s      floor %.2f, p2twisted %.2f (medians, user+sys, all threads and "
          "children): ratio %.2f"
          % (statistics.median(floorCPU), statistics.median(ourCPU),
             statistics.median(ourCPU) / statistics.median(floorCPU)))


def main(reactor, args):
    rng = random.Random(42)
    root = tempfile.mkdtemp(prefix="p2-install-bench-", dir=args.dir)

    @defer.inlineCallbacks
    def run():
        # Nothing is deleted before the end: ext4 makes creating files slow
        # for ~30 s after mass deletions (its allocator skips recently
        # deleted inodes), which would bill one run's cleanup to the next.
        big = os.path.join(root, "mixed.tar.gz")
        n = buildMixed(os.path.join(root, "tree1"), args.mb * 1000000, rng)
        pack(os.path.join(root, "tree1"), big)
        yield measure(reactor, "mixed: %d files, %d MB expanded, %.0f MB compressed"
                      % (n, args.mb, os.path.getsize(big) / 1e6), big,
                      os.path.join(root, "mixed"), args.runs, "<= 0.65")
        if args.small:
            small = os.path.join(root, "small.tar.gz")
            buildSmall(os.path.join(root, "tree2"), args.small, rng)
            pack(os.path.join(root, "tree2"), small)
            yield measure(reactor, "small: %d files, %.1f MB compressed"
                          % (args.small, os.path.getsize(small) / 1e6), small,
                          os.path.join(root, "small"), args.runs, "<= 1.2")
    return run().addBoth(lambda result: (shutil.rmtree(root, ignore_errors=True), result)[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the mixed artifact, MB")
    parser.add_argument("--small", type=int, default=30000, help="files in the small-file artifact")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to work (default: the temp dir)")
    parser.add_argument("--rehash", action="store_true",
                        help="pass the digest to Installer.install too")
    arguments = parser.parse_args()
    REHASH = arguments.rehash
    task.react(main, [arguments])
