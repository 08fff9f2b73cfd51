"""
Deploy and upgrade latency (not a test), for a program the project did not
write (busybox C{httpd}), with the agent as its own C{twistd -n p2-agent}
process, on the local store and on ZooKeeper -- and, in the same run, the
floors: the same work done by hand with nothing in between.

    .venv/bin/python bench/deploy_latency.py [--runs 20] [--stores local,zookeeper]
        [--keep] [--check] [--baseline TREE] [--timeline] [--profile]
        [--agent-prefix COMMAND]

C{--timeline} prints, for each agent, the median time from the intent write
to each step of its deploy path (L{bench._timeline} stamps them in the
agent's log); C{--profile} leaves a cProfile of each agent beside its log;
C{--agent-prefix} runs the agents under a command (C{strace -f -o FILE}, to
count execs and flushes).  Each agent's CPU time (user + system) per run is
printed: a figure the machine's load does not change much.

Fresh deploy: from a new pod's intent committed to C{GET /_status} answering
200.  Floor: C{tar xzf} the artifact, start the server, poll until 200.

Upgrade: from a running pod's new manifest (a new artifact) committed to
C{GET /version} serving the new version.  The pod is upgraded right after its
first version answers (so within runsv's one-second restart pause, the case a
quick fix-forward hits).  Floor: C{tar xzf} the new artifact, stop the old
server (TERM, reaped), start the new one, poll until it serves the new version.

The floor and the agents take turns run by run, so that each sees the same
load.  Both pollers are the same (every 2 ms).  Targets (issue 10): fresh-deploy agent
overhead (agent median - floor median) <= 15 ms on the local store and
<= 25 ms on ZooKeeper; upgrade median <= 2x its floor and under 100 ms; p99
under 1 s.  The agent's own output goes to C{<workdir>/agent-<store>.log}.
The agents run with a removal grace of L{REMOVAL_GRACE} (it delays only the
removal between runs).

Figures (2 shared cores, load 0.4 -> 2.7 during the run, 20 runs, medians
in ms, "before" = the tree before the commits named below, run in turn with
the same floors via C{--baseline}):

                          floor    before    after
    fresh, local            9.0      34.6     26.9   (overhead +25.6 -> +17.9)
    upgrade, local          8.2      39.0     35.2
    fresh, ZooKeeper        9.0      43.3     42.8   (overhead +34.3 -> +33.8)
    upgrade, ZooKeeper      8.2      49.5     45.2

After merging main (main of 02:20 UTC as "before", load 2.1 -> 0.8):

                          floor    before    after
    fresh, local            9.5      33.9     28.8   (overhead +24.4 -> +19.3)
    upgrade, local          7.1      39.8     36.1
    fresh, ZooKeeper        9.5      48.0     44.5   (overhead +38.5 -> +35.0)
    upgrade, ZooKeeper      7.1      48.2     44.3

What changed: manifests parse with libyaml (1.4 -> 0.07 ms, twice per
upgrade); the local store hears another process's commit by inotify instead
of a 5 ms poll; a sync reads intent and reality in one round-trip; an
upgrade within runsv's pause no longer waits for the old run's finish
script; the run script runs chpst's C{sh -c} wrapper itself.  Where a local
fresh deploy's time goes now (ms from the clock's start): intent committed
1.5, artifact cache hit (work starts) 5.4, installed 12.8 (extract + syncfs:
the floor's tar takes 3-5), activated 14.2, runsv started 16.7, serving
26.9: runsv, svlogd, sh, two chpst and the pod take ~10 ms where the floor's
launch takes ~5.  On ZooKeeper the watch, the listing and the worker's
re-read of reality are ~8 ms of round-trips from commit to work, and the
install ~12 ms (its syncfs shares the disk with ZooKeeper's own log).  In an
upgrade, stopping the old run (C{sv down} to its process group gone) now
takes ~0.5 ms, where waiting for its finish script took 18-21; what is left
is the install, the runtime files written after it (~3-6 ms: an upgrade
cannot write them while the old version may still read them), and the new
runsv's chain (~12 ms to serving).

A later session (04:00 UTC, the machine shared by about seven helpers: load
5 -> 22, every figure 3-10x its quiet value, so only the ratios to the
baseline run in turn mean anything; "before" = main of 03:50 UTC):

                           run 1 (load 9->15)  run 2 (5->11)   run 3 (10->22)
                           after   before      after   before  after   before
    fresh, local            155     191         110     174     265     385
    upgrade, local          322     361         264     194     311     540
    fresh, ZooKeeper        164     173         154     171     277     268
    upgrade, ZooKeeper      244     263         183     163     332     314

The runit supervisor alone (a busybox httpd started as the agent starts it,
then restarted with a new definition within runsv's pause; 40 of each, in
turn, load 8 -> 13): fresh 71.5 ms after / 78.0 before, upgrade 76.0 / 126.0.
What changed: a new service's runsv starts on its directory while that is
flushed (no syncfs before the runsv); an upgrade's new runsv and svlogd start,
holding the service down, while the old run stops, and the old directory is
no longer rewritten first; the pod starts with one chpst (its env dirs'
variables set by the run script) instead of two reading the env dirs; tar
starts without an sh in front when the agent's umask is the installs'; the
install crosses to the thread pool twice instead of four times; the status
'deploying' is written only for a deploy lasting 0.25 s, not as a store write
beside every install.

Session 6 (09:00-10:00 UTC, 2 cores shared by 4 helpers: load 9 -> 15,
every wall-clock figure 2-5x its quiet value, so only "before" and "after"
run in turn compare; "before" = main of 09:05, 1271e6e; medians in ms):

                          run 1 (15 runs, load 11->13)   run 2 (20 runs, load 15->11)
                          floor   after   before         floor   after   before
    fresh, local           20.8    73.0     90.2          23.7    68.3     89.0
    upgrade, local         20.8   106.4    119.9          15.4    87.2    138.7
    fresh, ZooKeeper       20.8    70.1    117.4          23.7    94.7    104.4
    upgrade, ZooKeeper     20.8   113.1    146.5          15.4   111.9    105.1

Load-independent: flushes (fsync + syncfs, strace) 28 -> 17 per run (a
deploy, an upgrade, a removal); agent CPU per run 345 -> 325 ms on the local
store and 169 -> 103 ms on ZooKeeper (run 1; run 2: 314 -> 290, 145 -> 96);
execs unchanged (41 per run).  What changed:

  - runtime files (config file, two env dirs): were 6 flushes (fsync, syncfs
    and a directory fsync each), after the install in an upgrade; now
    written under temporary names while the artifact installs, flushed by
    the install's own syncfs (no flush of their own when it began after
    them), renamed once it succeeded (a failed install deletes them: the
    running version's stay as they were);
  - the new names (runtime files, C{current} and C{last} links) reach the
    disk in one syncfs while the services start, before reality is
    written (the link flip's own fsync is gone);
  - a new pod's services are prepared while its artifact installs: runit
    writes the service directory with a C{down} file and starts its runsv
    and svlogd, so the start after the install is an C{up} (under load,
    runsv takes 5-35 ms to come up: now beside tar and syncfs);
  - a pod worker deploys on reality as the sync read it with intent (one
    store round-trip fewer: a ZooKeeper round-trip, ~1 ms locally);
  - a stop looks at runsv's status before scanning /proc for the process
    group: while the old process is an unreaped zombie, the scan (7 ms
    with 111 processes under load) ran in the reactor at every 1-2 ms poll;
  - the waits for a runsv told to exit (~0.8 s with a log service) look
    every 50 ms, not 2 ms (~50 ms of agent CPU per upgrade and removal),
    and a retired service directory is deleted in a thread.

Where a fresh local deploy's time goes now (--timeline, load ~9, ms from
the intent write): watch news 5.4, worker attempt 6.7, deploy 8.5, artifact
cache hit 14.0-18.6, tar 24.3-28.3, syncfs + rename 29.2-39.2, (prepared
runsv up 56.4: under load the long pole), runtime files renamed 63, links
flipped 66, C{up} 68.0, run script's first line seen 75.2, serving 84.6
(floor 12.1).  An upgrade: news 8.9, attempt 13.4, deploy 15.0, tar
22.0-32.8, syncfs 36.2-38.5, runtime files 40.5-41.9, links 46.6, stop of
the old run 51.4-77.9 (the new runsv started meanwhile, 57.2), C{up} ~81,
run script seen 97.1, serving 120.5 (floor 13.8).  On ZooKeeper the watch
adds ~5-15 ms before the attempt (zkwatch's part).

What stands in the way of the targets (beside the load): after C{up}, runsv
forks C{./run} (sh), which execs chpst, which execs the entry point (sh),
which execs busybox: two execs (sh, chpst) more than the floor, and under
load each exec waits for a core (C{up} to serving: 16 ms in a fresh deploy,
~40 ms in an upgrade at load 9).  In an upgrade within runsv's pause the new
runsv started after the install (~5-25 ms, beside the stop of the old run):
the last commit prepares it during the install too, as for a new pod,
measured only at load 5 -> 8 (12 runs in turn, medians in ms):

                          floor   after   before
    fresh, local           28.3    80.0    125.6
    upgrade, local         20.5    96.0    146.2
    fresh, ZooKeeper       28.3   173.3     78.0
    upgrade, ZooKeeper     20.5   142.4    115.6

and again on ZooKeeper alone (8 runs, load ~8, floors 18.5 and 43.1): fresh
175.9 after / 167.8 before, upgrade 117.1 / 151.3.  At such loads a
ZooKeeper run swings 2x from one run to the next (its server's log fsyncs
share the disk with the installs' syncfs); the lead's quiet re-measure
decides.

A quieter moment at the end (10:13 UTC, load 1.6 -> 4.5, 15 runs in turn):

                          floor   after   before
    fresh, local           11.6    43.9     47.8   (overhead +32.3 / +36.1)
    upgrade, local         11.0    53.3     57.1   (x4.86 / x5.20)
    fresh, ZooKeeper       11.6    53.5     54.2   (overhead +41.9 / +42.6)
    upgrade, ZooKeeper     11.0    80.2     74.9   (x7.30 / x6.81)
    agent CPU per run: local 294 / 346 ms, ZooKeeper 97 / 151 ms

and its timeline of a fresh local deploy (load 2, 8 runs, floor 8.1 ms; ms
from the intent write): watch news 3.1, attempt 4.5, deploy 5.1, specs
6.7-7.9, artifact cache hit 8.0-10.6 (a re-hash of the cached file in a
thread), the prepared runsv 8.9-21.1 (beside the install), install
preparation 11.0-12.3, tar 15.1-22.6 (7.5 ms: the floor's whole deploy
takes 8.1; the agent's tar is fed by its Python archive checks, a reader
and a writer thread), syncfs + rename 22.8-24.1, runtime files renamed
25.3, links 26.9, C{up} 29.1, run script's first line seen 33.3, serving
37.8.  An upgrade (floor 8.4): news 7.4, attempt 8.4, new runsv prepared
11.4-22.6, tar 16.3-23.4, syncfs 23.6-26.3, runtime files 27.2, links 29.3,
stop of the old run 31.6-34.8, rename 35.4, run script seen 40.2, serving
47.4.  Left on the fresh path, besides the exec chain after C{up} (8.7 ms
to serving; the floor's launch takes ~4): the checked extraction (~4 ms
over a bare tar), the cache hit's re-hash and thread hop (~2.5 ms), the
news-to-deploy path (~5 ms: store watch, sync, worker) and ~3 ms of
thread hops between the steps.
The local store's own polling (C{_tick}, every ~6 ms) is most of the local
agent's CPU: ~0.7 s of the 22 s profiled (p2twisted/store, not the agent).

The lead's quiet re-measure at the session's end (11:33 UTC, every branch
merged, load 3.0 -> 1.0, 20 runs, medians in ms): fresh floor 11.5, local
34.7 (+23.3; target +15), ZooKeeper 39.8 (+28.3, of which the intent write
7.8; target +25); upgrade floor 11.4, local 44.0 (x3.85), ZooKeeper 61.0
(x5.34; target x2); p99 at most 82.6.  Agent CPU per run: local 207 ms,
ZooKeeper 95.5 ms (346 and 151 at the session's start).
"""

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import defer, task, threads  # noqa: E402
from twisted.python.threadpool import ThreadPool  # noqa: E402

from p2twisted import intent  # noqa: E402
from p2twisted.agent.supervisors import listServiceDirs  # noqa: E402
from p2twisted.manifest import parseManifest  # noqa: E402
from p2twisted.store import openStore  # noqa: E402
from tests.agentharness import freePort, webManifest  # noqa: E402
from tests.artifacts import buildHoist  # noqa: E402

#: The pod: busybox httpd serving the launchable's C{www/} on C{$PORT}.
LAUNCH = b"""#!/bin/sh
exec busybox httpd -f -p "127.0.0.1:$PORT" -h "$LAUNCHABLE_ROOT/www"
"""

#: One thread polling the pods, so the reactor stays free.
POLLER = ThreadPool(1, 1, "poller")

POLL_INTERVAL = 0.002

#: The agents' removal grace, in seconds.
REMOVAL_GRACE = 0.5


def busybox():
    path = shutil.which("busybox")
    if path is None:
        sys.exit("busybox is missing: run 'make sysdeps' (or apt-get install busybox)")
    return path


def buildArtifact(directory, version):
    path = os.path.join(directory, "httpd_%s.tar.gz" % (version,))
    sha = buildHoist(path, files={"bin/launch": (LAUNCH, 0o755),
                                  "www/version": version.encode(),
                                  "www/_status": b"ok\n"})
    return path, sha


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def poll(port, path="/_status", body=None, deadline=30.0):
    """
    Block until C{GET path} on C{port} answers 200 (with C{body}, if given).
    """
    end = time.perf_counter() + deadline
    while time.perf_counter() < end:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", path)
            response = connection.getresponse()
            data = response.read()
            connection.close()
            if response.status == 200 and (body is None or data == body):
                return
        except (OSError, http.client.HTTPException):
            pass  # not up yet, or the old version stopping mid-answer
        time.sleep(POLL_INTERVAL)
    raise RuntimeError("pod on port %d never served %s %r" % (port, path, body))


# -- the floors ------------------------------------------------------------------

def extract(artifact, directory):
    os.makedirs(directory)
    subprocess.run(["tar", "xzf", artifact, "-C", directory], check=True)


def launch(directory, port):
    return subprocess.Popen(
        [os.path.join(directory, "bin", "launch")], start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(PATH=os.environ["PATH"], PORT=str(port), LAUNCHABLE_ROOT=directory))


def stopByHand(process):
    os.killpg(process.pid, signal.SIGTERM)
    process.wait()


def floorRun(workdir, v1, v2, i):
    """
    @return: C{(fresh, upgrade)} seconds, by hand.
    """
    port = freePort()
    started = time.perf_counter()
    directory = os.path.join(workdir, "floor%d-1" % i)
    extract(v1, directory)
    old = launch(directory, port)
    poll(port)
    fresh = time.perf_counter() - started
    started = time.perf_counter()
    directory = os.path.join(workdir, "floor%d-2" % i)
    extract(v2, directory)
    stopByHand(old)
    new = launch(directory, port)
    poll(port, "/version", b"2")
    upgrade = time.perf_counter() - started
    stopByHand(new)
    return fresh, upgrade


# -- the agent -------------------------------------------------------------------

#: A command prefix the agents run under (C{--agent-prefix}, e.g. strace).
AGENT_PREFIX = []

#: The agents' log observer (C{--timeline}: L{bench._timeline}'s).
LOGGER = ["bench._mslog.observer"]

#: Where the agents' cProfile statistics go (C{--profile}), or C{None}.
PROFILE = [None]


def startAgent(base, storeURL, logPath, root=ROOT, settings=""):
    """
    Start C{twistd -n p2-agent} on C{storeURL}, its pods allowed to run as
    this user, with the agent config C{settings} (YAML lines) besides.
    """
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    config = os.path.join(base, "agent.yaml")
    with open(config, "w") as f:
        # A short removal grace (it delays removals only, never a deploy):
        # each run's pod is gone a moment after it is unscheduled, not 10 s
        # later.
        f.write("allowed_run_as: [%s]\nremoval_grace: %g\n%s"
                % (currentUser(), REMOVAL_GRACE, settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
    env["PYTHONPATH"] = os.pathsep.join([root, ROOT])
    with open(logPath, "ab") as log:
        return subprocess.Popen(
            AGENT_PREFIX + [sys.executable, twistd, "-n", "--pidfile=", "--logger=" + LOGGER[0]]
            + (["--profile=" + logPath + ".prof", "--profiler=cprofile", "--savestats"]
               if PROFILE[0] else []) + [
             "p2-agent", "--store", storeURL, "--node", "bench",
             "--state-dir", os.path.join(base, "state"),
             "--pod-root", os.path.join(base, "pods"), "--supervisor", "runit", "--config", config],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base)


def waitFor(reactor, port, path="/_status", body=None):
    return threads.deferToThreadPool(reactor, POLLER, poll, port, path, body)


@defer.inlineCallbacks
def waitUntilGone(reactor, base, podId):
    serviceDir = os.path.join(base, "state", "service")
    home = os.path.join(base, "pods", podId or "")
    for _ in range(2000):
        if not listServiceDirs(serviceDir) and not (podId and os.path.exists(home)):
            return
        yield task.deferLater(reactor, 0.01, lambda: None)
    raise RuntimeError("pod %s was not removed" % (podId,))


def childPids(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(word) for word in f.read().split()]
    except OSError:
        return []


def agentCPU(pid):
    """
    @return: the CPU seconds (user + system) the agent process C{pid} (or,
        under C{--agent-prefix}, its child) has used, or C{None}.
    """
    if AGENT_PREFIX:
        pid = (childPids(pid) or [pid])[0]
    try:
        with open("/proc/%d/stat" % (pid,)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def currentUser():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


class AgentBench(object):
    """
    One agent process on one store, and the bench's own client of that store.
    """

    def __init__(self, reactor, name, storeURL, workdir, artifacts, root=ROOT):
        self.reactor, self.name, self.storeURL, self.root = reactor, name, storeURL, root
        (self.v1, self.sha1), (self.v2, self.sha2) = artifacts
        self.base = tempfile.mkdtemp(prefix="agent-" + name.replace(" ", "-"), dir=workdir)
        os.chmod(self.base, 0o755)
        label = name.replace(" ", "-")
        self.logPath = os.path.join(workdir, "agent-%s.log" % (label,))
        self.trace = open(os.path.join(workdir, "bench-%s.log" % (label,)), "w")
        self.fresh, self.upgrade, self.commits = [], [], []
        #: C{(kind, wall-clock start)} of each measured deploy.
        self.starts = []
        self.podIds = []

    @defer.inlineCallbacks
    def start(self):
        self.agent = startAgent(self.base, self.storeURL, self.logPath, self.root)
        self.store = yield openStore(self.storeURL, self.reactor)

    def manifest(self, podId, port, path, sha):
        return parseManifest(webManifest(podId, "file://" + path, port, sha,
                                         runAs=currentUser()))

    @defer.inlineCallbacks
    def run(self, i):
        """
        Deploy pod C{bench<i>}, upgrade it, remove it; C{i < 0}: not measured.
        """
        if i == 0:
            self.cpuStart = agentCPU(self.agent.pid)
        podId = "bench%d" % (i + 1,)
        self.podIds.append(podId)
        port = freePort()
        for results, sha, path, body in ((self.fresh, self.sha1, self.v1, None),
                                         (self.upgrade, self.sha2, self.v2, b"2")):
            started, wall = time.perf_counter(), time.time()
            yield intent.schedule(self.store, "bench", self.manifest(podId, port, path, sha))
            committed = time.perf_counter()
            yield waitFor(self.reactor, port, "/_status" if body is None else "/version", body)
            elapsed = time.perf_counter() - started
            self.trace.write("%s %s %s committed +%.1f ms, serving +%.1f ms\n" % (
                time.strftime("%H:%M:%S", time.gmtime(wall)) + ("%.6f" % (wall % 1))[1:],
                podId, "fresh" if body is None else "upgrade",
                (committed - started) * 1000, elapsed * 1000))
            if i >= 0:
                self.starts.append(("fresh" if body is None else "upgrade", wall))
                results.append(elapsed)
                self.commits.append(committed - started)
        yield intent.unschedule(self.store, "bench", podId)
        yield waitUntilGone(self.reactor, self.base, podId)

    @defer.inlineCallbacks
    def stop(self):
        try:
            for podId in self.podIds:
                yield intent.unschedule(self.store, "bench", podId)
            yield waitUntilGone(self.reactor, self.base, None)
        finally:
            end = agentCPU(self.agent.pid)
            if end is not None and getattr(self, "cpuStart", None) is not None:
                self.cpu = end - self.cpuStart
            self.agent.send_signal(signal.SIGTERM)
            if AGENT_PREFIX:  # (strace: the agent is its child)
                for pid in childPids(self.agent.pid):
                    os.kill(pid, signal.SIGTERM)
            yield threads.deferToThread(self.agent.wait)
            yield self.store.close()
            self.trace.close()


def line(name, values):
    return "%-39s median %7.1f ms   p99 %7.1f ms" % (
        name, percentile(values, 50) * 1000, percentile(values, 99) * 1000)


def printTimeline(bench):
    """
    Print the median time, from the intent write, of each step of the
    deploys of C{bench}'s agent (L{bench._timeline}).
    """
    from bench._timeline import timeline
    limits = [start for _, start in bench.starts[1:]] + [float("inf")]
    runs = [(kind, start, limit) for (kind, start), limit in zip(bench.starts, limits)]
    for kind, steps in sorted(timeline(bench.logPath, runs).items()):
        print("timeline of a %s deploy, agent on %s (ms from the intent write, medians of "
              "the runs with that step):" % (kind, bench.name))
        served = bench.fresh if kind == "fresh" else bench.upgrade
        rows = [(percentile(ms, 50), step, len(ms)) for step, ms in steps.items()]
        rows.append((percentile(served, 50) * 1000, "(serving)", len(served)))
        for median, step, n in sorted(rows):
            print("  %8.1f  %-22s (%d runs)" % (median, step, n))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--stores", default="local,zookeeper")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target is not met")
    parser.add_argument("--baseline", metavar="TREE",
                        help="also run, in turn with the others, agents from this source tree "
                             "(e.g. 'git archive <commit> | tar x -C TREE'), for before/after")
    parser.add_argument("--agent-prefix", metavar="COMMAND", default="",
                        help="run the agents under this command (split at spaces), e.g. "
                             "'strace -f -tt -e trace=process,file -o /tmp/agent.strace'")
    parser.add_argument("--profile", action="store_true",
                        help="profile the agents (cProfile, <agent log>.prof; --keep to read it)")
    parser.add_argument("--timeline", action="store_true",
                        help="print where each deploy's time goes: the median time from the "
                             "intent write to each step of the agents' deploy path "
                             "(bench/_timeline.py; it adds a little to every step)")
    args = parser.parse_args()
    AGENT_PREFIX[:] = args.agent_prefix.split()
    if args.timeline:
        LOGGER[0] = "bench._timeline.observer"
    PROFILE[0] = args.profile
    stores = [s for s in args.stores.split(",") if s]
    busybox()
    workdir = tempfile.mkdtemp(prefix="p2deploy")
    os.chmod(workdir, 0o755)
    v1, sha1 = buildArtifact(workdir, "1")
    v2, sha2 = buildArtifact(workdir, "2")
    load = os.getloadavg()

    zk = None
    if "zookeeper" in stores:
        from tests.zkserver import ZooKeeperServer
        zk = ZooKeeperServer()
        zk.start()
    urls = {"local": "local://%s/state.db" % (workdir,),
            "zookeeper": "zk://%s/deploybench" % (zk.hosts,) if zk else None}
    agents = [(name, urls[name], ROOT) for name in stores]
    if args.baseline:
        urls["local"] = "local://%s/base.db" % (workdir,)
        agents += [(name + " (baseline)", urls[name].replace("/deploybench", "/deploybase"),
                    os.path.abspath(args.baseline)) for name in stores]
    floorFresh, floorUpgrade = [], []
    benches = []

    @defer.inlineCallbacks
    def run(reactor):
        for name, url, root in agents:
            bench = AgentBench(reactor, name, url, workdir, ((v1, sha1), (v2, sha2)), root)
            yield bench.start()
            benches.append(bench)
        try:
            # Floor and agents take turns, so that each sees the same load.
            # Round -1 warms up (not measured): the agents are up and their
            # caches hold both artifacts, as tar reads them from the page cache.
            for i in range(-1, args.runs):
                fresh, upgrade = floorRun(workdir, v1, v2, i + 1)
                if i >= 0:
                    floorFresh.append(fresh)
                    floorUpgrade.append(upgrade)
                for bench in benches:
                    yield bench.run(i)
        finally:
            for bench in benches:
                yield bench.stop()
    POLLER.start()
    try:
        task.react(run)
    except SystemExit as e:
        if e.code:
            raise
    finally:
        POLLER.stop()
        if zk is not None:
            zk.destroy()
    results = {b.name: (b.fresh, b.upgrade, b.commits) for b in benches}
    cpus = {b.name: getattr(b, "cpu", None) for b in benches}
    print("deploy latency: busybox httpd, agent as its own twistd process, %d runs, "
          "load average %.1f at start, %.1f at end"
          % (args.runs, load[0], os.getloadavg()[0]))
    print("clocks start before the intent write; each agent's log and the runs' "
          "timestamps are in the work directory (--keep)")
    print(line("fresh floor (by hand)", floorFresh))
    print(line("upgrade floor (by hand)", floorUpgrade))
    ok = True
    for name, budget in (("local", 0.015), ("zookeeper", 0.025),
                         ("local (baseline)", 0.015), ("zookeeper (baseline)", 0.025)):
        if name not in results:
            continue
        fresh, upgrade, commits = results[name]
        overhead = percentile(fresh, 50) - percentile(floorFresh, 50)
        met = overhead <= budget and percentile(fresh, 99) < 1.0
        ok = ok and met
        print("%s   overhead %+6.1f ms (target <= %d ms, p99 < 1 s: %s)"
              % (line("fresh, agent on " + name, fresh), overhead * 1000, budget * 1000,
                 "met" if met else "NOT met"))
        print("%-39s median %7.1f ms (included above)" % ("  intent write on " + name,
                                                           percentile(commits, 50) * 1000))
        ratio = percentile(upgrade, 50) / percentile(floorUpgrade, 50)
        met = ratio <= 2.0 and percentile(upgrade, 50) < 0.1 and percentile(upgrade, 99) < 1.0
        ok = ok and met
        print("%s   x%.2f floor (target <= 2, < 100 ms, p99 < 1 s: %s)"
              % (line("upgrade, agent on " + name, upgrade), ratio, "met" if met else "NOT met"))
        cpu = cpus.get(name)
        if cpu is not None:
            print("%-39s %7.1f ms per run (user + system: a deploy, an upgrade, a removal)"
                  % ("  agent CPU on " + name, cpu * 1000 / args.runs))
    if args.timeline:
        for bench in benches:
            printTimeline(bench)
    if args.keep:
        print("work directory (agent logs): %s" % (workdir,))
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
