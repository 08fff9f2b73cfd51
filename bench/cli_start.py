"""
CLI start benchmark (not a test): how long the C{p2} command takes as a
whole process, for verbs that touch no store and for verbs reading the
local store, beside the floor of starting Python at all.

    .venv/bin/python bench/cli_start.py [--runs N] [--p2 PATH] [--baseline TREE]

Each command runs N times (default 9); the median wall time is printed with
its ratio to the floor (C{python -c pass}), and the median CPU time (user +
system: less disturbed than wall time by other work on the machine).  C{--p2} is the console script
to time (default: C{p2} beside this Python).  Targets (issue 10, item 3):
C{p2 --help} and C{p2 manifest sha} <= 100 ms; C{p2 schedule} and
C{p2 status} on the local store <= 200 ms.  The store is a fresh
C{local://} file in a temporary directory.  C{--baseline TREE} also times
each command with C{p2twisted} imported from the source tree C{TREE} (e.g.
C{git archive <commit> | tar x -C TREE}), run by run in turn with the
current one, so both see the same load.

The store is a fresh C{local://} file holding one pod scheduled; the last
row's is another with a service deployed (C{p2 add web --template static},
C{p2 deploy web}), whose status hashes its manifest.

Figures (session 6, 09:55 UTC, machine saturated by the other helpers: load
10-14, so wall times mean nothing; median CPU time of 11 runs, "before" =
main of 09:08 UTC run in turn with --baseline) and, load-independent, the
instructions of one run (valgrind --tool=callgrind, .pyc warm, and with
the regex cache the lead removed after these figures; the floor is 38 M):

    command                          CPU after/before     instructions after/before
    p2 --help                         40.6 /  47.8 ms      107 / 135 M  (-21 %)
    p2 manifest sha FILE             110.4 / 132.4 ms      290 / 407 M  (-29 %)
    p2 schedule FILE --node N        250.3 / 290.9 ms      583 / 803 M  (-27 %)
    p2 status                        233.8 / 325.0 ms      555 / 828 M  (-33 %)
    p2 status (a service deployed)   284.4 / 340.3 ms      660 / 851 M  (-22 %)

On the quiet machine of that morning (load 1.8: floor 13.8 ms CPU, before
p2 --help 58.5, manifest sha 128.0, schedule 263.4, status 288.8 ms) about
0.33 ms a million instructions, which makes p2 --help about 46 ms, manifest
sha about 92, schedule about 195, status about 190 and status with a
service about 230.  What changed (L{p2twisted.cli.main}):
a verb not given is a name and a help in the verb table, not a parser
built; no cyclic garbage collection while starting; Deferreds imported
beside a stand-in for asyncio (which brought ssl, concurrent.futures,
subprocess); PyYAML, the manifest parser, fractions and the pod records
imported only by what uses them; pickle and random loaded on first use;
and, removed again: a cache in C{~/.cache/p2twisted} of the regular
expressions modules compile at import (PyYAML's reader and resolver
compile theirs even when libyaml parses: a fifth of C{manifest sha}); it
patched C{re}'s private compiler in every run and wrote to the user's home,
which a deployment tool run as root should not do for 20 ms.

What stands in the way of the targets: for C{manifest sha}, attrs (65 M
instructions, with typing and inspect, which it imports, 143 M: the
manifest classes are attrs classes, the agent evolves them) and PyYAML (about
45 M with its regular expressions cached, more without); for the store verbs, Twisted
itself: importing C{twisted.internet.defer} and installing the reactor,
without asyncio and TLS (regular expressions cached, no garbage collection),
is 363 M instructions (about 120 ms quiet) of C{p2 status}'s 555, of which
attrs classes (its signal handling, addresses, attrs' own
validators), C{zope.interface} declarations, C{twisted.logger},
C{incremental} (dataclasses, inspect) and C{typing_extensions}.  C{p2
status} with a service also loads the manifest parser (to hash the intent)
and the controller records (C{Snapshot.rcs} loads them even when there is
no RC).  No run waits on a timer: wall time equals CPU time on a quiet
machine.

The lead's quiet re-measure at the session's end (11:35 UTC, load 1.0,
regex cache removed, 9 runs, wall): floor 19.1 ms, p2 --help 51.7,
manifest sha 142.4, schedule 276.6, status 273.7, status with a service
287.4 -- at the session's start (09:08, load 0.6, floor 19.8): 54.6, 175.4,
414.8, 397.4.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MANIFEST = b"""id: bench
launchables:
  app:
    launchable_type: hoist
    location: https://example.com/app.tar.gz
"""


def _childCPU():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timeOnce(argv, env):
    """
    @return: C{(wall seconds, CPU seconds)} of running C{argv}.
    """
    cpu = _childCPU()
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start, _childCPU() - cpu
    if result.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (" ".join(argv), result.returncode,
                                                  result.stderr.decode("utf-8", "replace")))
    return elapsed


def medians(argv, envs, runs):
    """
    Run C{argv} C{runs} times in each environment of C{envs}, in turn.

    @return: C{[(median wall seconds, median CPU seconds)]}, one per
        environment.
    """
    for env in envs:
        timeOnce(argv, env)  # warm-up: .pyc files, the page cache
    times = [[] for env in envs]
    for _ in range(runs):
        for env, results in zip(envs, times):
            results.append(timeOnce(argv, env))
    return [(statistics.median(t[0] for t in results), statistics.median(t[1] for t in results))
            for results in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--p2", default=os.path.join(os.path.dirname(sys.executable), "p2"))
    parser.add_argument("--baseline", metavar="TREE",
                        help="also time p2twisted from this source tree, in turn")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="p2-cli-bench-")
    try:
        manifest = os.path.join(directory, "bench.yaml")
        with open(manifest, "wb") as f:
            f.write(MANIFEST)
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
        env["P2_STORE"] = "local://" + os.path.join(directory, "state.db")
        env["P2_STATE_DIR"] = os.path.join(directory, "state")
        env["HOME"] = directory
        # As installed: modules are loaded from .pyc files (written by the
        # warm-up run of each command), not compiled at every start.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # The store exists before the timed runs, as on a host in use.
        subprocess.run([args.p2, "schedule", manifest, "--node", "bench"], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        # A second store with a service deployed: p2 status then reads and
        # hashes its manifest, as on a host in use.
        served = dict(env, P2_STORE="local://" + os.path.join(directory, "served.db"))
        www = os.path.join(directory, "www")
        os.mkdir(www)
        for argv in (["add", "web", "--template", "static", "--port", "9000", "--directory", www],
                     ["deploy", "web", "--node", "bench"]):
            subprocess.run([args.p2] + argv, env=served, check=True, stdout=subprocess.DEVNULL)
        python = sys.executable
        rows = [
            ("floor: python -c pass", [python, "-c", "pass"], None),
            ("floor: python -S -c pass", [python, "-S", "-c", "pass"], None),
            ("p2 --help", [args.p2, "--help"], 0.100),
            ("p2 manifest sha FILE", [args.p2, "manifest", "sha", manifest], 0.100),
            ("p2 schedule FILE --node N", [args.p2, "schedule", manifest, "--node", "bench"],
             0.200),
            ("p2 status", [args.p2, "status"], 0.200),
            ("p2 status (a service deployed)", [args.p2, "status"], 0.200),
        ]
        envs = [("", env)]
        if args.baseline:
            base = dict(env, PYTHONPATH=os.path.abspath(args.baseline))
            subprocess.run([args.p2, "schedule", manifest, "--node", "bench"], env=base,
                           check=True, stdout=subprocess.DEVNULL)
            envs.append((" (baseline)", base))
        withService = {label: dict(e, P2_STORE=served["P2_STORE"]) for label, e in envs}
        print("load average %.1f" % (os.getloadavg()[0],))
        floor = None
        print("%-44s %9s %7s %9s %9s" % ("command", "wall", "xfloor", "cpu", "target"))
        for name, argv, target in rows:
            chosen = [withService[label] if "service" in name else e for label, e in envs]
            results = medians(argv, chosen, args.runs)
            for (label, _), (seconds, cpu) in zip(envs, results):
                if floor is None:
                    floor = seconds
                print("%-44s %7.1fms %6.1fx %7.1fms %9s%s" % (
                    name + label, seconds * 1000, seconds / floor, cpu * 1000,
                    "%dms" % (target * 1000,) if target else "-",
                    "" if target is None or seconds <= target else "  OVER"))
                if target is None:
                    break  # the floors do not depend on the tree
        print("load average %.1f" % (os.getloadavg()[0],))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
