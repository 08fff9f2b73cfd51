"""
p2 against Ansible (not a test): a fresh deploy of busybox C{httpd} as a
user sees it, from starting the command to the server answering 200.

    .venv/bin/python bench/ansible_compare.py [--runs 7] [--keep]

p2: with an agent already running as its own C{twistd -n p2-agent} process
(local store, runit as root), the wall time from starting the C{p2 schedule
FILE --node N} process until C{GET /_status} on the pod's port answers 200
and the process has exited (both are printed; the ratio uses this).
Each run is a new pod on a new port, unscheduled and removed before the next
(the bench agent's C{removal_grace} is 0).

Ansible: C{ansible-core} in a virtualenv of its own, cached between runs of
this script in C{~/.cache/p2twisted-bench/ansible} (C{$XDG_CACHE_HOME} is
honoured; delete it to refresh), running a C{connection: local} playbook that
unpacks the same artifact (C{unarchive}, C{remote_src}), starts the server in
the background (C{shell} with C{setsid nohup}) and waits for 200 (C{uri}
with C{until}), timed as the whole C{ansible-playbook} process.  Pipelining
is on and facts are not gathered: Ansible at its quickest ordinary setting.
When pip cannot install C{ansible-core} (no index), the script says so and
prints the p2 figure alone.

Floor: C{tar xzf}, start, poll (as in C{bench/deploy_latency.py}).  p2,
Ansible and the floor take turns run by run; one unmeasured round warms up.
Goal (issue 10, item 3): Ansible's median >= 20x p2's.

Measured (7 runs, 2 cores shared with other work, load average 2.1-2.8;
ansible-core 2.19, Python 3.11), median / p90:

    floor (tar xzf, start, poll)          7 ms /   14 ms
    p2 schedule to 200 and exited       182-207 ms / 195-337 ms
    ansible-playbook to 200            2.67-2.83 s / 2.75-3.65 s
    ansible / p2                        x13.6-14.7 (goal x20: not met)

Where p2's time goes (agent log, stamped to the microsecond, against each
run's start): the C{p2} process itself is nearly all of it -- the agent's
first line on the new pod comes 150-165 ms after the process started
(C{bench/cli_start.py}: C{p2 schedule} takes about 200 ms alone, most of it
importing Twisted and the reactor), then the agent takes 20-25 ms to run the
pod (cache hit, extract, activate, runsv up), and busybox answers within a
few ms; the pod often answers before the C{p2} process has exited.  Without
pipelining Ansible takes about 0.3 s more.
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

from bench.deploy_latency import (  # noqa: E402
    POLL_INTERVAL, buildArtifact, busybox, currentUser, extract, launch, percentile,
    poll, startAgent, stopByHand)
from p2twisted.agent.supervisors import listServiceDirs  # noqa: E402
from tests.agentharness import freePort, webManifest  # noqa: E402

BIN = os.path.dirname(sys.executable)

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - file: {path: "{{ dest }}", state: directory}
    - unarchive: {src: "{{ artifact }}", dest: "{{ dest }}", remote_src: true}
    - shell: setsid nohup bin/launch </dev/null >/dev/null 2>&1 & echo $! > pid
      args: {chdir: "{{ dest }}"}
      environment: {PORT: "{{ http_port }}", LAUNCHABLE_ROOT: "{{ dest }}"}
    - uri: {url: "http://127.0.0.1:{{ http_port }}/_status"}
      register: status
      until: status.status == 200
      retries: 500
      delay: 0.01
"""


def ansibleVenv():
    """
    @return: the C{ansible-playbook} of a cached virtualenv holding
        C{ansible-core}, or C{None} (said why) when it cannot be installed.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    venv = os.path.join(cache, "p2twisted-bench", "ansible")
    playbook = os.path.join(venv, "bin", "ansible-playbook")
    if os.path.exists(playbook):
        return playbook
    subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
    result = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "ansible-core"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    if result.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        last = (result.stderr.decode("utf-8", "replace").strip().splitlines() or ["?"])[-1]
        print("no Ansible comparison: pip could not install ansible-core (%s)" % (last,))
        return None
    return playbook


def waitUntilGone(base, podId, deadline=30.0):
    end = time.perf_counter() + deadline
    while time.perf_counter() < end:
        if not listServiceDirs(os.path.join(base, "state", "service")) and \
                not os.path.exists(os.path.join(base, "pods", podId)):
            return
        time.sleep(0.01)
    raise RuntimeError("pod %s was not removed" % (podId,))


def answers(port):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/_status")
        status = connection.getresponse().status
        connection.close()
        return status == 200
    except (OSError, http.client.HTTPException):
        return False


class P2(object):
    """
    An agent process on a local store, and pods scheduled by the C{p2} command.
    """

    def __init__(self, workdir, artifact, sha):
        self.workdir, self.artifact, self.sha = workdir, artifact, sha
        self.base = os.path.join(workdir, "agent")
        os.makedirs(self.base, mode=0o755)
        self.store = "local://%s/state.db" % (workdir,)
        self.logPath = os.path.join(workdir, "agent.log")
        self.agent = startAgent(self.base, self.store, self.logPath, settings="removal_grace: 0\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: from .pyc files
        self.starts = []

    def p2(self, *args):
        return [os.path.join(BIN, "p2"), "--store", self.store] + list(args)

    def run(self, i):
        """
        @return: C{(seconds until the p2 process exited, seconds until 200)}.
        """
        podId, port = "bench%d" % (i + 1,), freePort()
        path = os.path.join(self.workdir, podId + ".yaml")
        with open(path, "wb") as f:
            f.write(webManifest(podId, "file://" + self.artifact, port, self.sha,
                                runAs=currentUser()))
        self.starts.append((podId, time.time()))
        started = time.perf_counter()
        process = subprocess.Popen(self.p2("schedule", path, "--node", "bench"),
                                   env=self.env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL)
        exited = None
        while True:
            if exited is None and process.poll() is not None:
                exited = time.perf_counter() - started
                if process.returncode != 0:
                    raise RuntimeError("p2 schedule failed (%d)" % (process.returncode,))
            if answers(port):
                served = time.perf_counter() - started
                break
            if time.perf_counter() - started > 30:
                raise RuntimeError("pod %s never answered" % (podId,))
            time.sleep(POLL_INTERVAL)
        if exited is None:
            process.wait()
            exited = time.perf_counter() - started
        subprocess.run(self.p2("unschedule", podId, "--node", "bench"), env=self.env,
                       check=True, stdout=subprocess.DEVNULL)
        waitUntilGone(self.base, podId)
        return exited, served

    def agentTimes(self):
        """
        @return: C{(pickups, runnings)}: for each measured run, the seconds
            from starting C{p2 schedule} to the agent's first log line about
            the new pod and to its "pod ... running" line.
        """
        entries = []
        with open(self.logPath) as log:
            for text in log:
                try:
                    h, m, sec = text.split(" ", 1)[0].split(":")
                    entries.append((int(h) * 3600 + int(m) * 60 + float(sec), text))
                except ValueError:
                    continue  # a traceback's continuation line
        pickups, runnings = [], []
        for podId, wall in self.starts[1:]:
            local = time.localtime(wall)  # the log's clock: local time of day
            start = local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec + wall % 1
            after = [(t - start, text) for t, text in entries if t >= start]
            pickups.append(after[0][0])
            runnings.append(next(t for t, text in after if "pod %s running" % (podId,) in text))
        return pickups, runnings

    def stop(self):
        """
        Remove a pod a failed run left (under runit, it would outlive the
        agent), then stop the agent.
        """
        try:
            podId = self.starts[-1][0] if self.starts else None
            if podId and os.path.exists(os.path.join(self.base, "pods", podId)):
                subprocess.run(self.p2("unschedule", podId, "--node", "bench"), env=self.env,
                               stdout=subprocess.DEVNULL)
                waitUntilGone(self.base, podId)
        finally:
            self.agent.send_signal(signal.SIGTERM)
            self.agent.wait()


class Ansible(object):
    def __init__(self, workdir, artifact, playbook):
        self.workdir, self.artifact, self.command = workdir, artifact, playbook
        self.playbook = os.path.join(workdir, "deploy.yaml")
        with open(self.playbook, "w") as f:
            f.write(PLAYBOOK)
        self.env = dict(os.environ, ANSIBLE_PIPELINING="true", ANSIBLE_NOCOLOR="1",
                        ANSIBLE_LOCALHOST_WARNING="false",
                        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
                        ANSIBLE_HOME=os.path.join(workdir, "ansible-home"),
                        ANSIBLE_LOCAL_TEMP=os.path.join(workdir, "ansible-tmp"))

    def run(self, i):
        dest, port = os.path.join(self.workdir, "ansible%d" % (i + 1,)), freePort()
        started = time.perf_counter()
        result = subprocess.run(
            [self.command, self.playbook, "-e", "dest=%s artifact=%s http_port=%d"
             % (dest, self.artifact, port)],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        elapsed = time.perf_counter() - started
        try:
            with open(os.path.join(dest, "pid")) as f:
                os.killpg(int(f.read()), signal.SIGTERM)
        except (OSError, ValueError):
            pass  # never started: the playbook failed, said below
        if result.returncode != 0:
            raise RuntimeError("ansible-playbook failed:\n" + result.stdout.decode())
        return elapsed


def floorRun(workdir, artifact, i):
    port, directory = freePort(), os.path.join(workdir, "floor%d" % (i + 1,))
    started = time.perf_counter()
    extract(artifact, directory)
    process = launch(directory, port)
    poll(port)
    elapsed = time.perf_counter() - started
    stopByHand(process)
    return elapsed


def line(name, values):
    return "%-36s median %7.1f ms   p90 %7.1f ms" % (
        name, percentile(values, 50) * 1000, percentile(values, 90) * 1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (the agent's log, stamped to the us)")
    args = parser.parse_args()
    busybox()
    playbook = ansibleVenv()
    workdir = tempfile.mkdtemp(prefix="p2ansible")
    os.chmod(workdir, 0o755)
    artifact, sha = buildArtifact(workdir, "1")
    load = os.getloadavg()
    p2 = P2(workdir, artifact, sha)
    ansible = Ansible(workdir, artifact, playbook) if playbook else None
    exits, served, users, ansibles, floors = [], [], [], [], []
    try:
        for i in range(-1, args.runs):  # round -1 warms up, not measured
            floor = floorRun(workdir, artifact, i)
            exited, up = p2.run(i)
            took = ansible.run(i) if ansible else None
            if i >= 0:
                floors.append(floor)
                exits.append(exited)
                served.append(up)
                users.append(max(exited, up))
                if took is not None:
                    ansibles.append(took)
    finally:
        p2.stop()
    print("p2 against Ansible: busybox httpd, fresh deploy to 200, %d runs, "
          "load average %.1f at start, %.1f at end" % (args.runs, load[0], os.getloadavg()[0]))
    print(line("floor (tar xzf, start, poll)", floors))
    print(line("p2 schedule process exited", exits))
    pickups, runnings = p2.agentTimes()
    print(line("  agent's first line on the pod", pickups))
    print(line("  agent's 'pod ... running'", runnings))
    print(line("p2 schedule to 200", served))
    print(line("p2 to 200 and the process exited", users))
    if ansibles:
        ratio = percentile(ansibles, 50) / percentile(users, 50)
        print(line("ansible-playbook to 200", ansibles))
        print("ansible / p2: x%.1f (goal >= 20: %s)" % (ratio, "met" if ratio >= 20 else "NOT met"))
    if args.keep:
        print("work directory (agent log): %s" % (workdir,))
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
