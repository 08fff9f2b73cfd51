# -*- test-case-name: tests.test_agent_process -*-
"""
Everything one bounded run (a hook, a task, C{bin/enable}, C{bin/disable})
started, found again even when a process left the run's process group and
session with C{setsid}.

Two ties, each robust where the other is not:

  - B{a cgroup of its own}, C{p2-runs/<run id>}: joined by the command's
    first process before its C{exec} (a C{sh} wrapper writes C{$$} into
    C{cgroup.procs}), so every descendant is in it and no process can leave
    it without root.  Killed with cgroup v2's C{cgroup.kill} where the
    kernel has it (5.14+), else by SIGKILLing every pid of C{cgroup.procs}
    until it is empty.  Placed in a cgroup2 mount when one is writable
    (it need not offer any controller: a hybrid host's C{unified} mount
    does), else in a writable v1 hierarchy C{p2-exec} never moves
    processes in and processes can join (one without the cpu, memory, pids
    and cpuset controllers, e.g. C{freezer} or C{name=systemd}), below the
    agent's own cgroup there.
  - B{an environment marker}, C{P2_RUN_ID=<run id>}, inherited by every
    descendant that does not clear its environment and visible in
    C{/proc/<pid>/environ}.  It catches what the cgroup cannot: a run where
    no cgroup is writable (an unprivileged agent, a container without a
    cgroup mount), and a task whose C{p2-exec} moves it into its
    launchable's cgroup on a cgroup-v2-only host.

L{RunScope.kill} uses both, and is what the bounded runner calls at
C{killAfter} and when the command ends.
"""

import binascii
import errno
import os
import signal

from twisted.logger import Logger

from p2twisted.agent import p2exec
from p2twisted.agent.supervisors import processStartTime

log = Logger()

#: The environment variable tying a process to its run.
MARKER = "P2_RUN_ID"

#: Where run cgroups live, below the chosen hierarchy's base.
CGROUP_PARENT = "p2-runs"

#: SIGKILL rounds before giving up on processes that keep appearing.
KILL_ROUNDS = 50

#: The v1 controllers a run's cgroup is never made in a hierarchy of: those
#: C{p2-exec} moves processes between, and C{cpuset} (a new cpuset cgroup has
#: no cpus and no memory nodes, so no process can join it).
_NOT_FOR_RUNS = frozenset(["cpu", "memory", "pids", "cpuset"])

#: Joins the cgroup whose C{cgroup.procs} is C{$0}, then execs the command
#: (without the C{PWD} the shell sets, unless the caller's environment had
#: one).
_JOIN = '{ echo $$ > "$0"; } 2>/dev/null; exec "$@"'
_JOIN_NO_PWD = '{ echo $$ > "$0"; } 2>/dev/null; unset PWD; exec "$@"'


def newRunId():
    """
    @return: a fresh, unguessable run id.
    """
    return binascii.hexlify(os.urandom(8)).decode("ascii")


def runCgroupBases(mountinfo=None, procCgroup=None):
    """
    @return: the directories a run cgroup may be made in, best first: each
        cgroup2 mount's root, then each v1 hierarchy without a controller
        C{p2-exec} uses (nor C{cpuset}), at the agent's own cgroup there.
    """
    try:
        mountinfo, procCgroup = p2exec._procCgroupFiles(mountinfo, procCgroup)
    except OSError:
        return []
    v1Paths, _ = p2exec.parseProcCgroup(procCgroup)
    v2, v1 = [], []
    for fstype, mountPoint, root, options in p2exec.parseMountinfo(mountinfo):
        if fstype == "cgroup2":
            v2.append(mountPoint)
            continue
        if options & _NOT_FOR_RUNS:
            continue
        names = [o for o in options if o in v1Paths]
        if names:
            v1.append(p2exec._under(mountPoint, root, v1Paths[names[0]]))
    return v2 + v1


def environMarked(pid, marker):
    """
    @return: whether process C{pid}'s initial environment holds C{marker}
        (bytes, C{NAME=value}).
    """
    try:
        with open("/proc/%d/environ" % (pid,), "rb") as f:
            data = f.read()
    except OSError:
        return False
    return marker in data.split(b"\0")


class RunScope(object):
    """
    The processes of one run: its cgroup (if one could be made) and its
    environment marker.

    @ivar runId: the run's id.
    @ivar cgroup: the run's cgroup directory, or C{None}.
    """

    def __init__(self, runId=None, bases=None):
        """
        @param bases: where to try to make the cgroup (default:
            L{runCgroupBases}).
        """
        self.runId = runId or newRunId()
        self._marker = ("%s=%s" % (MARKER, self.runId)).encode("ascii")
        self.cgroup = None
        #: C{{pid: start time}} of every member ever seen (L{dead}).
        self._seen = {}
        for base in (runCgroupBases() if bases is None else bases):
            directory = os.path.join(base, CGROUP_PARENT, self.runId)
            try:
                os.makedirs(directory)
            except OSError:
                continue
            if os.path.exists(os.path.join(directory, "cgroup.procs")):
                self.cgroup = directory
                break
            _rmdir(directory)

    def environment(self, env):
        """
        @return: a copy of C{env} with the run's marker.
        """
        env = dict(env)
        env[MARKER] = self.runId
        return env

    def wrap(self, argv, env=None):
        """
        @param env: the environment C{argv} is given.
        @return: C{argv} made to join the run's cgroup before it execs.
        """
        if self.cgroup is None:
            return list(argv)
        script = _JOIN if env is not None and "PWD" in env else _JOIN_NO_PWD
        return (["/bin/sh", "-c", script, os.path.join(self.cgroup, "cgroup.procs")]
                + list(argv))

    def members(self, marked=True):
        """
        @param marked: also look for the processes carrying the run's marker
            (a scan of every process's environment).
        @return: the set of live pids of the run (its cgroup's, and those
            carrying its marker), never this process.
        """
        pids = set()
        if self.cgroup is not None:
            try:
                with open(os.path.join(self.cgroup, "cgroup.procs")) as f:
                    pids.update(int(line) for line in f if line.strip())
            except (OSError, ValueError):
                pass
        if marked:
            for entry in os.listdir("/proc"):
                if entry.isdigit() and environMarked(int(entry), self._marker):
                    pids.add(int(entry))
        pids.discard(os.getpid())
        for pid in pids:  # which process each pid is now (L{_send}, L{dead})
            self._seen[pid] = processStartTime(pid)
        return pids

    def dead(self):
        """
        @return: whether every process ever seen among the L{members} has
            ended (is gone or a zombie).  A SIGKILLed process leaves the
            cgroup and stops showing its environment (its memory is released
            first) a while before it has ended: L{members} is empty then,
            but the process is still there.
        """
        for pid, started in list(self._seen.items()):
            if started is not None and processStartTime(pid) == started:
                return False
            del self._seen[pid]
        return True

    def signal(self, sig):
        """
        Send C{sig} to every member.
        """
        for pid in self.members():
            self._send(pid, sig)

    def _send(self, pid, sig):
        """
        Send C{sig} to member C{pid}, unless that pid is no longer the
        process seen as a member (it ended, and an unrelated process got its
        pid since): a pidfd holds on to the process whose start time is
        checked, so it cannot change between the check and the signal.
        """
        try:
            fd = os.pidfd_open(pid)
        except AttributeError:  # Python before 3.9
            fd = None
        except OSError:
            return  # gone
        try:
            if processStartTime(pid) != self._seen.get(pid):
                return
            if fd is None:
                _kill(pid, sig)
            else:
                signal.pidfd_send_signal(fd, sig)
        except OSError:
            pass
        finally:
            if fd is not None:
                os.close(fd)

    def kill(self, rounds=KILL_ROUNDS):
        """
        SIGKILL every process of the run, again until none is left (or
        C{rounds} rounds, each a scan of every process).

        @return: whether none is left in the run (see L{dead}).
        """
        if self.cgroup is not None:
            # Remembered, to wait for their end (L{dead}): cgroup.kill makes
            # them leave the cgroup before they have ended.
            self.members(marked=False)
            try:
                with open(os.path.join(self.cgroup, "cgroup.kill"), "w") as f:
                    f.write("1")
            except OSError:
                pass  # no cgroup.kill (v1, kernel before 5.14): the loop does it
        # Those seen before too: one in the middle of an exec shows no
        # environment (so no marker) for an instant, and a scan then misses
        # it.  (L{_send} spares a pid that is no longer the process seen.)
        for pid in list(self._seen):
            self._send(pid, signal.SIGKILL)
        for _ in range(rounds):
            pids = self.members()
            if not pids:
                return True
            for pid in pids:
                self._send(pid, signal.SIGKILL)
            os.sched_yield()
        return not self.members()

    def close(self):
        """
        Remove the run's (empty) cgroup.

        @return: whether nothing is left to remove.
        """
        if self.cgroup is None:
            return True
        if _rmdir(self.cgroup):
            self.cgroup = None
            return True
        return False


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _rmdir(directory):
    try:
        os.rmdir(directory)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return True
        log.debug("cannot remove {cgroup} yet: {error}", cgroup=directory, error=e.strerror)
        return False
    return True
