# -*- test-case-name: tests.test_agent_requests -*-
"""
A pod's logs on this machine: what its supervisor wrote for each of its
services, under C{<state_dir>/service/<pod>__<launchable>__<entry>/} --
runit's C{log/main/current}, or the builtin supervisor's C{current.log}.

Read by the agent for C{p2 logs} (see L{p2twisted.agent.requests}) and by
C{p2 logs} itself when this host's agent is not running.
"""

import os

from p2twisted.agent.layout import StateLayout, podServices
from p2twisted.agent.supervisors import listServiceDirs

#: At most this many bytes of one log are returned by one read.
MAX_READ = 64 * 1024

#: The log files a supervisor may keep in a service directory.
LOG_FILES = (("log", "main", "current"), ("current.log",))


def logFiles(stateDir, podId):
    """
    @return: C{{service name: path}} of pod C{podId}'s log files under the
        agent state directory C{stateDir} (empty when it has none).
    """
    layout = StateLayout(stateDir)
    found = {}
    for name in podServices(listServiceDirs(layout.serviceDir), podId):
        for rel in LOG_FILES:
            path = os.path.join(layout.service(name), *rel)
            if os.path.isfile(path):
                found[name] = path
                break
    return found


def readFrom(path, offset, maxBytes=MAX_READ):
    """
    Read what C{path} holds from C{offset} on.

    @param offset: where the last read ended, or C{None} for the last
        C{maxBytes} bytes.  An offset past the end (the log was rotated or
        truncated) starts over from the beginning.
    @return: C{(data, offset to read from next)}; at most C{maxBytes} bytes,
        the last ones, so a reader that fell behind sees the newest lines.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if offset is None or offset > size:  # first read, or rotated
                offset = 0
            offset = max(offset, size - maxBytes)
            f.seek(offset)
            data = f.read(size - offset)
            return data, offset + len(data)
    except OSError:
        return b"", offset or 0


def readLogs(stateDir, podId, offsets=None, maxBytes=MAX_READ):
    """
    @param offsets: C{{service name: offset}} from the previous read, or
        C{None} for the tail of every log.
    @return: C{{service name: (data, next offset)}}.
    """
    result = {}
    for name, path in sorted(logFiles(stateDir, podId).items()):
        start = None if offsets is None else offsets.get(name, 0)
        result[name] = readFrom(path, start, maxBytes)
    return result
