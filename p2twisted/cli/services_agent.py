# -*- test-case-name: tests.test_cli_service -*-
"""
C{p2 start}, C{p2 stop-agent} and C{p2 fg}: this host's agent under
C{twistd}, its pidfile (C{agent.pid}) and log (C{agent.log}) in the state
directory.
"""

import errno
import os
import signal
import subprocess
import sys

from twisted.internet import defer, task

from p2twisted.cli.services_common import stateDir
from p2twisted.config import loadConfig
from p2twisted.errors import P2Error


def register(subparsers):
    for name, helpText, description in (
            ("start", "start this host's agent in the background",
             "Start the p2 agent of this host in the background under twistd (pidfile "
             "agent.pid and log agent.log in the state directory). Start and deploy may come "
             "in either order."),
            ("fg", "run this host's agent in the foreground",
             "Run the p2 agent of this host in the foreground (twistd -n), logging to the "
             "terminal; Ctrl-C stops it.")):
        parser = subparsers.add_parser(name, help=helpText, description=description)
        parser.add_argument("--node", help="this node's name (default: the host's short name)")
        parser.add_argument("--supervisor", choices=("auto", "runit", "builtin"),
                            help="how pods are supervised (default: auto, runit when "
                                 "installed)")
        parser.add_argument("--status-port", type=int, metavar="PORT",
                            help="serve the agent's GET /_status on 127.0.0.1:PORT")
        parser.add_argument("--metrics-listen", metavar="PORT|ENDPOINT",
                            help="serve Prometheus metrics at /metrics on 127.0.0.1:PORT or a "
                                 "Twisted endpoint such as tcp:7476:interface=0.0.0.0")
        parser.add_argument("--pod-address", metavar="ADDRESS",
                            help="the address this node's pods listen on ($POD_ADDRESS) and "
                                 "their status checks reach (default: 127.0.0.1); several "
                                 "agents on one host each take their own, e.g. 127.0.0.11")
        if name == "start":
            parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                                help="how long to wait for the agent to open the store "
                                     "(default: 30)")
        parser.set_defaults(run=runStart if name == "start" else runForeground)

    stop = subparsers.add_parser(
        "stop-agent", help="stop the background agent",
        description="Stop the agent started by 'p2 start' (SIGTERM to the pid in agent.pid) "
                    "and wait until it is gone.")
    stop.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                      help="how long to wait for it to exit (default: 60)")
    stop.set_defaults(run=runStop)


def twistd():
    """
    @return: the C{twistd} script beside this Python.
    """
    path = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.path.exists(path):
        raise P2Error("cannot find twistd beside %s; is Twisted installed in this "
                      "environment?" % (sys.executable,))
    return path


def paths(options):
    state = stateDir(options)
    return state, os.path.join(state, "agent.pid"), os.path.join(state, "agent.log")


def agentArguments(options, state):
    config = loadConfig(options.config)
    argv = ["p2-agent", "--store", config.storeURL(options.store), "--state-dir", state]
    if options.node:
        argv += ["--node", options.node]
    if options.supervisor:
        argv += ["--supervisor", options.supervisor]
    if options.status_port:
        argv += ["--status-port", str(options.status_port)]
    if options.pod_address:
        argv += ["--pod-address", options.pod_address]
    if options.metrics_listen:
        argv += ["--metrics-listen", options.metrics_listen]
    if options.config:  # its node, grace and the like, as this command read it
        argv += ["--config", os.path.abspath(options.config)]
    return argv


def runningPid(pidfile):
    """
    @return: the pid in C{pidfile} if that process is alive, else C{None}.
    """
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except OSError as e:
        if e.errno == errno.ESRCH:
            return None
    return pid


def runningStore(pid):
    """
    @return: the store URL the agent C{pid} was started with (its
        C{--store} argument), or C{None} when its command line is unknown.
    """
    try:
        with open("/proc/%d/cmdline" % (pid,), "rb") as f:
            argv = f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return None
    for flag, value in zip(argv, argv[1:]):
        if flag == "--store":
            return value
    return None


#: Seconds between two looks at the starting agent's presence.
START_INTERVAL = 0.1


def _message(line):
    """
    @return: the message of a twistd log line (without time and source).
    """
    head, sep, message = line.partition("] ")
    return message if sep and head.count(" [") == 1 else line


def _logSize(logfile):
    try:
        return os.path.getsize(logfile)
    except OSError:
        return 0


def _logSince(logfile, offset):
    """
    @return: the lines of C{logfile} from C{offset}, or from its start when
        it is shorter (twistd rotated it).
    """
    try:
        with open(logfile, "rb") as f:
            if os.fstat(f.fileno()).st_size >= offset:
                f.seek(offset)
            return f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


@defer.inlineCallbacks
def runStart(options):
    state, pidfile, logfile = paths(options)
    pid = runningPid(pidfile)
    if pid is not None:
        running, url = runningStore(pid), agentArguments(options, state)[2]
        if running is not None and running != url:
            raise P2Error("the agent (pid %d) is already running on another store, %s, not %s; "
                          "stop it with 'p2 stop-agent' first" % (pid, running, url))
        options.out.write("the agent is already running (pid %d; log %s)\n" % (pid, logfile))
        return 0
    if os.path.exists(pidfile):
        os.unlink(pidfile)  # stale: twistd refuses to start over it
    os.makedirs(state, exist_ok=True)
    offset = _logSize(logfile)
    argv = [twistd(), "--umask", "022", "--pidfile", pidfile, "--logfile", logfile] + agentArguments(options,
                                                                                    state)
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    if result.returncode != 0:
        output = result.stdout.decode("utf-8", "replace").strip().splitlines()
        last = output[-1] if output else "twistd exited with %d" % (result.returncode,)
        prefix = "twisted.python.usage.UsageError: "
        raise P2Error("the agent did not start: %s (see %s)"
                      % (last[len(prefix):] if last.startswith(prefix) else last, logfile))
    pid = runningPid(pidfile)
    code = yield waitOpened(options, pidfile, logfile, offset, pid)
    return code


def _presencePid(entry):
    """
    @return: the pid of the agent whose presence C{machines/<node>} holds
        (its facts' C{process}), or C{None}.
    """
    from p2twisted.records import MachineFacts, readable
    facts = readable(MachineFacts, entry)
    return None if facts is None else facts.pid


@defer.inlineCallbacks
def waitOpened(options, pidfile, logfile, offset, pid):
    """
    Wait until the agent just started is present in the store (its
    C{machines/<node>} holds its pid), or has exited; the store is opened
    here too, so one that cannot be opened says why at once.  The agent's
    log is read only to show what it said.

    @return: L{Deferred} firing with the exit code: 0, 3 when the store
        cannot be opened or the agent has not registered in time (it keeps
        trying).
    @raise P2Error: when the agent exited.
    """
    from p2twisted.agent.config import agentConfig
    from p2twisted.store import keys
    reactor = options.reactor
    deadline = reactor.seconds() + options.timeout
    url = agentArguments(options, "")[2]
    node = agentConfig(options.config, {"node": options.node, "store": url}).node
    key = keys.machine(node)

    def said():
        lines = [_message(line) for line in _logSince(logfile, offset)
                 if "#warn]" in line or "#error]" in line or "#critical]" in line]
        return " (it said: %s)" % (lines[-1],) if lines else ""

    try:
        store = yield options.openStore()
    except Exception as e:
        options.err.write("p2: the agent (pid %s) started but cannot open store %s: %s; it "
                          "keeps trying (see %s; stop it with 'p2 stop-agent')\n"
                          % (pid, url, e, logfile))
        return 3
    try:
        holder = None
        while True:
            holder = _presencePid((yield store.get(key)))
            pid = pid or runningPid(pidfile)
            if pid is not None and holder == pid:
                options.out.write("started the agent (pid %s) on %s: registered %s (log %s; stop "
                                  "it with 'p2 stop-agent')\n" % (pid, url, key, logfile))
                return 0
            if runningPid(pidfile) is None:
                last = [_message(line) for line in _logSince(logfile, offset) if line.strip()]
                raise P2Error("the agent exited before it registered in the store: %s (see %s)"
                              % (last[-1] if last else "it logged nothing", logfile))
            if reactor.seconds() > deadline:
                options.err.write(
                    "p2: the agent (pid %s) has not registered in the store %s after %gs%s%s; it "
                    "keeps trying (see %s; stop it with 'p2 stop-agent')\n"
                    % (pid, url, options.timeout,
                       "" if holder is None else " (%s is held by pid %s)" % (key, holder),
                       said(), logfile))
                return 3
            yield task.deferLater(reactor, START_INTERVAL, lambda: None)
    finally:
        yield store.close()


def runForeground(options):
    state, pidfile, logfile = paths(options)
    os.makedirs(state, exist_ok=True)
    pid = runningPid(pidfile)
    if pid is not None:
        raise P2Error("the agent is already running in the background (pid %d); stop it "
                      "with 'p2 stop-agent' first" % (pid,))
    argv = [twistd(), "-n", "--pidfile", "", "--logfile", "-"] + agentArguments(options, state)
    options.out.flush()
    os.execv(argv[0], argv)


@defer.inlineCallbacks
def runStop(options):
    state, pidfile, logfile = paths(options)
    pid = runningPid(pidfile)
    if pid is None:
        options.out.write("no agent is running (no live pid in %s)\n" % (pidfile,))
        return 0
    from p2twisted.agent.supervisors import processAlive
    os.kill(pid, signal.SIGTERM)
    reactor = options.reactor
    deadline = reactor.seconds() + options.timeout
    # twistd deletes its pidfile while it shuts down: wait for the process.
    while processAlive(pid):
        if reactor.seconds() > deadline:
            raise P2Error("the agent (pid %d) is still running %gs after SIGTERM; see %s"
                          % (pid, options.timeout, logfile))
        yield task.deferLater(reactor, 0.1, lambda: None)
    options.out.write("stopped the agent (pid %d)\n" % (pid,))
    return 0
