# -*- test-case-name: tests.test_listeners -*-
"""
Which process listens on a TCP port of this host, from C{/proc}: the
socket's inode in C{/proc/net/tcp} and C{tcp6}, then the process holding
it among C{/proc/<pid>/fd}.  Used by the agent's health check (is the pod
the one answering on its status port?) and by C{p2 config}/C{p2 deploy}
(is the port free here?).  Without C{/proc} (or the right to read another
user's file descriptors) the answers are "unknown", never a guess.
"""

import os

#: The state of a listening socket in C{/proc/net/tcp}.
_LISTEN = "0A"


def listeningInodes(port, proc="/proc"):
    """
    @return: the inodes of the sockets listening on TCP C{port} (any
        address, IPv4 or IPv6), or C{None} if C{/proc/net/tcp} cannot be read.
    """
    inodes, readable = set(), False
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, "net", name)) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            try:
                local = int(fields[1].rpartition(":")[2], 16)
            except ValueError:
                continue
            if local == port and fields[9] != "0":
                inodes.add(fields[9])
    return inodes if readable else None


def socketOwners(inodes, proc="/proc"):
    """
    @return: C{{pid: command name}} of the processes holding a socket of
        C{inodes} (those whose file descriptors we may read).
    """
    wanted = {"socket:[%s]" % (inode,) for inode in inodes}
    owners = {}
    if not wanted:
        return owners
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        fdDir = os.path.join(proc, entry, "fd")
        try:
            fds = os.listdir(fdDir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(fdDir, fd)) in wanted:
                    owners[int(entry)] = commandName(int(entry), proc)
                    break
            except OSError:
                continue
    return owners


def commandName(pid, proc="/proc"):
    """
    @return: the command name of C{pid} (C{/proc/<pid>/comm}), or C{"?"}.
    """
    try:
        with open(os.path.join(proc, str(pid), "comm")) as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def environment(pid, proc="/proc"):
    """
    @return: the environment C{pid} started with, C{{name: value}}, or
        C{None} if it cannot be read.
    """
    try:
        with open(os.path.join(proc, str(pid), "environ"), "rb") as f:
            raw = f.read()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        name, eq, value = item.partition(b"=")
        if eq:
            env[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def foreignTo(owners, podId, proc="/proc"):
    """
    Whether the processes C{owners} (of a port) are provably none of pod
    C{podId}'s: each one's environment is readable and has variables, and
    none has C{POD_ID=<podId>}.  A process showing no variables is unknown,
    not foreign: programs that set their process title (nginx, PostgreSQL,
    Python's setproctitle) write it over the memory that
    C{/proc/<pid>/environ} shows.

    @param owners: C{{pid: command name}}, not empty.
    """
    envs = [environment(pid, proc) for pid in owners]
    return all(envs) and not any(env.get("POD_ID") == podId for env in envs)


def describeOwners(owners):
    """
    @return: C{"pid 12 (nginx), pid 13 (nginx)"}.
    """
    return ", ".join("pid %d (%s)" % (pid, name) for pid, name in sorted(owners.items()))


def portHolders(port, proc="/proc"):
    """
    @return: C{{pid: command name}} of the processes listening on C{port};
        C{None} when unknown (no C{/proc}); C{{}} when nothing listens, or
        when what does is not ours to see.
    """
    inodes = listeningInodes(port, proc)
    if inodes is None:
        return None
    return socketOwners(inodes, proc)


class PodListenerCheck(object):
    """
    Tells whether the process listening on a pod's status port is one of
    the pod's (its environment has C{POD_ID=<pod id>}, as C{p2-exec} sets
    for every pod process).  The owner of a socket inode is looked up once:
    checked every second, a port whose listening socket is the same costs
    one read of C{/proc/net/tcp}.
    """

    def __init__(self, proc="/proc"):
        self.proc = proc
        self._cache = {}

    def __call__(self, port, podId):
        """
        @return: one line saying which other program listens on C{port}, or
            C{None} when it is the pod, nothing listens, or it is unknown.
        """
        inodes = listeningInodes(port, self.proc)
        if not inodes:
            self._cache.pop(port, None)
            return None
        key = (frozenset(inodes), podId)
        cached = self._cache.get(port)
        if cached is not None and cached[0] == key:
            return cached[1]
        owners = socketOwners(inodes, self.proc)
        verdict = None
        if owners and foreignTo(owners, podId, self.proc):
            verdict = ("port %d is held by %s, not by a process of pod %s"
                       % (port, describeOwners(owners), podId))
        self._cache[port] = (key, verdict)
        return verdict
