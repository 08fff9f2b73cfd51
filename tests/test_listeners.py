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
