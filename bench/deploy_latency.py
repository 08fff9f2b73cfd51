"""
Deploy latency (not a test): from intent written to the pod answering 200 on
C{/_status}, for a tiny artifact, over N runs, with the agent on the local
and ZooKeeper backends -- and, in the same run, the floor: a shell script
doing the same by hand (C{tar xzf}, start the process, poll until 200).

    .venv/bin/python bench/deploy_latency.py [--runs 20] [--supervisor runit]

Target (issue 3): median within 1.5x the floor, p99 under 1 s.
"""

import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.application import service  # noqa: E402
from twisted.internet import defer, task, threads  # noqa: E402
from twisted.python.threadpool import ThreadPool  # noqa: E402

from p2twisted import intent  # noqa: E402
from p2twisted.agent.config import AgentConfig  # noqa: E402
from p2twisted.agent.pods import PodOperations  # noqa: E402
from p2twisted.agent.service import AgentService  # noqa: E402
from p2twisted.manifest import parseManifest  # noqa: E402
from p2twisted.store import openStore  # noqa: E402
from tests.agentharness import LAUNCH, buildWebArtifact, freePort, webManifest  # noqa: E402

FLOOR = r"""
set -e
mkdir -p "$DIR"
tar xzf "$ARTIFACT" -C "$DIR"
cd "$DIR"
LAUNCHABLE_ROOT="$DIR" PORT="$PORT" setsid ./bin/launch >/dev/null 2>&1 &
echo $!
"""


#: One thread polling the pod, so the reactor stays free for the agent.
POLLER = ThreadPool(1, 1, "poller")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def poll200(port, deadline=30.0):
    """
    Block until C{GET /_status} on C{port} answers 200, polling every 5 ms
    (the same poller for the floor and for the agent).
    """
    end = time.perf_counter() + deadline
    while time.perf_counter() < end:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/_status")
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError("pod on port %d never answered" % (port,))


def floorRun(artifact, workdir, port):
    started = time.perf_counter()
    out = subprocess.run(["bash", "-c", FLOOR], check=True, capture_output=True, env=dict(
        os.environ, DIR=os.path.join(workdir, "floor%d" % port), ARTIFACT=artifact,
        PORT=str(port))).stdout
    poll200(port)
    elapsed = time.perf_counter() - started
    os.killpg(int(out.split()[0]), signal.SIGTERM)
    return elapsed


def waitFor200(reactor, port):
    return threads.deferToThreadPool(reactor, POLLER, poll200, port)


@defer.inlineCallbacks
def agentRuns(reactor, storeURL, workdir, artifactURL, sha, runs, supervisor):
    base = tempfile.mkdtemp(prefix="agent", dir=workdir)
    os.chmod(base, 0o755)
    config = AgentConfig(node="bench", store=storeURL, podRoot=os.path.join(base, "pods"),
                         stateDir=os.path.join(base, "state"), supervisor=supervisor)
    pods = PodOperations.fromConfig(config, reactor)
    top = service.MultiService()
    agent = AgentService(config, pods, reactor, facts=pods.facts)
    agent.setServiceParent(top)
    pods.service().setServiceParent(top)
    top.startService()
    store = yield openStore(storeURL, reactor)
    yield task.deferLater(reactor, 0.5, lambda: None)
    latencies = []
    try:
        for i in range(runs):
            port = freePort()
            manifest = parseManifest(webManifest("bench%d" % i, artifactURL, port, sha,
                                                 runAs=currentUser()))
            started = time.perf_counter()
            yield intent.schedule(store, "bench", manifest)
            yield waitFor200(reactor, port)
            latencies.append(time.perf_counter() - started)
            yield intent.unschedule(store, "bench", manifest.id)
    finally:
        for i in range(runs):
            yield intent.unschedule(store, "bench", "bench%d" % i)
        for _ in range(600):
            names = yield pods.supervisor.services()
            if not names:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        yield top.stopService()
        yield store.close()
    return latencies


def currentUser():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def report(name, values, floor):
    med, p99 = percentile(values, 50), percentile(values, 99)
    ratio = med / percentile(floor, 50)
    print("%-22s median %7.1f ms   p99 %7.1f ms   median/floor %.2f  (targets: <= 1.50, p99 < 1000 ms: %s)"
          % (name, med * 1000, p99 * 1000, ratio,
             "met" if ratio <= 1.5 and p99 < 1.0 else "NOT met"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--supervisor", default="auto")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="p2deploy")
    os.chmod(workdir, 0o755)
    artifactURL, sha = buildWebArtifact(workdir, "tiny", "1")
    artifact = artifactURL[len("file://"):]
    assert LAUNCH  # the same launch script runs in both

    floor = [floorRun(artifact, workdir, freePort()) for _ in range(args.runs)]
    from tests.zkserver import ZooKeeperServer
    zk = ZooKeeperServer()
    zk.start()
    results = {}

    @defer.inlineCallbacks
    def run(reactor):
        results["local"] = yield agentRuns(
            reactor, "local://%s/state.db" % (workdir,), workdir, artifactURL, sha,
            args.runs, args.supervisor)
        results["zookeeper"] = yield agentRuns(
            reactor, "zk://%s/deploybench" % (zk.hosts,), workdir, artifactURL, sha,
            args.runs, args.supervisor)
    POLLER.start()
    try:
        task.react(lambda reactor: run(reactor))
    except SystemExit:
        pass
    finally:
        POLLER.stop()
        zk.destroy()
    print("deploy latency: intent written -> 200 on /_status, %d runs, tiny artifact"
          % (args.runs,))
    print("%-22s median %7.1f ms   p99 %7.1f ms"
          % ("floor (shell by hand)", percentile(floor, 50) * 1000, percentile(floor, 99) * 1000))
    for name in ("local", "zookeeper"):
        if name in results:
            report("agent on " + name, results[name], floor)


if __name__ == "__main__":
    main()
