"""
L{p2twisted.listeners}: who listens on a port, read from a C{/proc} tree
(a fake one here; L{tests.test_agent_health.ListenerTests} uses the real
one with real processes).
"""

import os

from twisted.trial import unittest

from p2twisted import listeners

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def line(local, state, inode):
    return ("   0: %s 00000000:0000 %s 00000000:00000000 00:00000000 00000000     0        0 %s 1 "
            "0000000000000000 100 0 0 10 0\n" % (local, state, inode))


class ProcTests(unittest.TestCase):

    def setUp(self):
        self.proc = self.mktemp()
        os.makedirs(os.path.join(self.proc, "net"))
        self.write("net/tcp", HEADER + line("0100007F:1F90", "0A", "111")
                   + line("0100007F:1F91", "01", "222"))
        self.write("net/tcp6", HEADER + line("00000000000000000000000000000000:1F92", "0A", "333"))

    def write(self, path, text):
        path = os.path.join(self.proc, path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def process(self, pid, name, inode, env):
        self.write("%d/comm" % (pid,), name + "\n")
        self.write("%d/environ" % (pid,), "".join("%s=%s\0" % kv for kv in env.items()))
        os.makedirs(os.path.join(self.proc, str(pid), "fd"))
        os.symlink("socket:[%s]" % (inode,), os.path.join(self.proc, str(pid), "fd", "3"))

    def test_listeningInodes(self):
        """
        Only listening sockets count (state 0A), IPv4 and IPv6; C{None}
        without C{/proc/net}.
        """
        self.assertEqual(listeners.listeningInodes(8080, self.proc), {"111"})
        self.assertEqual(listeners.listeningInodes(8081, self.proc), set())
        self.assertEqual(listeners.listeningInodes(8082, self.proc), {"333"})
        self.assertIs(listeners.listeningInodes(8080, self.mktemp()), None)

    def test_portHolders(self):
        self.process(42, "nginx", "111", {})
        self.assertEqual(listeners.portHolders(8080, self.proc), {42: "nginx"})
        self.assertEqual(listeners.portHolders(8081, self.proc), {})

    def test_podListenerCheck(self):
        """
        Another program on the port is named; the pod's own process
        (C{POD_ID}) or nobody listening gives C{None}.
        """
        self.process(42, "nginx", "111", {"PATH": "/bin"})
        self.process(43, "python3", "333", {"POD_ID": "web"})
        check = listeners.PodListenerCheck(self.proc)
        self.assertEqual(check(8080, "web"),
                         "port 8080 is held by pid 42 (nginx), not by a process of pod web")
        self.assertIs(check(8082, "web"), None)
        self.assertIs(check(8081, "web"), None)
        self.assertIs(check(9999, "web"), None)

    def test_titleOverEnvironment(self):
        """
        A process whose environment shows no variables (it wrote its
        process title over them, as nginx does) is not called another
        program: it may be the pod's.
        """
        self.process(42, "nginx", "111", {})
        self.write("42/environ", "nginx: master process\0\0\0\0")
        self.assertIs(listeners.PodListenerCheck(self.proc)(8080, "web"), None)


#: A pod process that listens, then writes its process title over its
#: environment as setproctitle and nginx do; prints its port, exits at EOF.
TITLED = r"""
import ctypes, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
ctypes.memset(start, 0, end - start)
title = b"web: master process"
ctypes.memmove(start, title, min(len(title), end - start - 1))
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


class RealProcessTests(unittest.TestCase):

    def test_podThatSetsItsTitle(self):
        """
        Neither the agent's health check nor C{p2 deploy}'s port check
        takes a pod process that set its title (its environment, POD_ID
        included, no longer shows) for another program: they called it one,
        so such a pod's health was critical and its re-deploys refused.
        """
        import subprocess
        import sys
        from p2twisted.cli.services_common import portProblem
        if listeners.listeningInodes(1) is None:
            raise unittest.SkipTest("no /proc/net/tcp here")
        child = subprocess.Popen([sys.executable, "-c", TITLED], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, env={"POD_ID": "web", "PATH": "/bin"})
        self.addCleanup(child.wait)
        self.addCleanup(child.stdin.close)
        port = int(child.stdout.readline())
        self.assertIn(child.pid, listeners.portHolders(port))
        self.assertIs(listeners.PodListenerCheck()(port, "web"), None)
        self.assertIs(portProblem(port, "web"), None)
