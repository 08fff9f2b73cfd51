"""
The typed records of the read model: each reads what its writer stores
(byte for byte the format the agent and CLI always wrote) and refuses
anything else with an error naming the key.
"""

import json

from twisted.trial import unittest

from p2twisted import records
from p2twisted.errors import StoreError
from p2twisted.store.common import Entry


def entry(key, value):
    if not isinstance(value, bytes):
        value = json.dumps(value, sort_keys=True).encode()
    return Entry(key, value, 7)


HEALTH = {"status": "passing", "output": "GET http://127.0.0.1:8080/_status: 200 ok",
          "sha": "abc", "time": 12.5}
POD_STATUS = {"pod": "web", "node": "n1", "state": "idle", "sha": "abc", "error": None,
              "attempts": 0, "time": "2026-12-07T03:00:00Z"}
AGENT_STATUS = {"node": "n1", "store": "local:///tmp/s.db", "connected": True,
                "converged": True, "node_marker": True, "last_sync": 1.5,
                "removals": {"state": "none"}, "pods": {"web": {"state": "idle"}}}
HOOK_RUN = {"hook": "h", "event": "before_install", "node": "n1", "pod": "web",
            "path": "/x/h", "exit_code": 0, "signal": None, "duration": 0.25,
            "output": "hi\n", "time": "2026-12-07T03:00:00Z", "state": "ok",
            "outcome": "exited 0", "required": True}
HOOK_POD = {"hook_pod": "hp", "event": "after_launch", "node": "n1", "state": "installed",
            "sha": "abc", "error": None, "time": "2026-12-07T03:00:00Z"}
FACTS = {"node": "n1", "hostname": "h", "machine_id": "m", "cores": 2, "memory": 1024,
         "agent_version": "1", "labels": {}, "supervisor": "runit",
         "process": {"pid": 42, "pid_start": 9, "boot_id": "b", "pid_ns": "p"}}

#: (record type, key, the value its writer stores)
WRITTEN = [
    (records.NodeMarker, "intent/n1", {"node": "n1", "created": "2026-12-07T03:00:00Z"}),
    (records.MachineFacts, "machines/n1", FACTS),
    (records.AgentStatus, "status/agents/n1", AGENT_STATUS),
    (records.AgentStatus, "status/agents/n1", dict(AGENT_STATUS, removals={
        "state": "held", "hold": "orphans", "held": ["db"], "orphans": ["old"],
        "grace_until": {"web": 12.5}, "confirm": "p2 node confirm n1", "hold_until": None})),
    (records.Confirmation, "confirmations/n1",
     {"node": "n1", "marker": {"created": "x", "version": 3}, "by": "me@h", "time": "t"}),
    (records.Health, "health/web/n1", HEALTH),
    (records.PodStatus, "status/pods/n1/web", POD_STATUS),
    (records.PodStatus, "status/pods/n1/web",
     dict(POD_STATUS, restarts=3, crash_loop={"restarts": 3, "text": "crash-looping"})),
    (records.HookStatus, "status/hooks/n1/before_install/h", HOOK_RUN),
    (records.HookStatus, "status/hooks/n1/before_install/h",
     {k: v for k, v in HOOK_RUN.items() if k != "required"}),
    (records.HookPodStatus, "status/hooks/n1/after_launch/hp", HOOK_POD),
    (records.Request, "requests/n1/r1",
     {"kind": "logs", "state": "pending", "created": 1.0, "deadline": 61.0, "pod": "web"}),
]

#: (record type, key, value, words the error must contain)
CORRUPT = [
    (records.NodeMarker, "intent/n1", b"{not json", "not JSON"),
    (records.NodeMarker, "intent/n1", [1, 2], "list, not an object"),
    (records.NodeMarker, "intent/n1", {"created": 5}, "'created' is 5, not text"),
    (records.MachineFacts, "machines/n1", {"process": "x"}, "'process'"),
    (records.AgentStatus, "status/agents/n1", {"removals": []}, "'removals'"),
    (records.AgentStatus, "status/agents/n1", {"connected": 1}, "'connected'"),
    (records.AgentStatus, "status/agents/n1", {"removals": {"state": "held", "held": 5}},
     "'held'"),
    (records.AgentStatus, "status/agents/n1", {"removals": {"orphans": ["a", 1]}},
     "'orphans'"),
    (records.AgentStatus, "status/agents/n1", {"removals": {"grace_until": {"db": "soon"}}},
     "'grace_until'"),
    (records.Confirmation, "confirmations/n1", {"node": "n1"}, "'marker' is missing"),
    (records.Health, "health/web/n1", {"output": "x"}, "'status' is missing"),
    (records.Health, "health/web/n1", dict(HEALTH, time="soon"), "'time'"),
    (records.Health, "health/web/n1", b'{"status": "passing", "time": NaN}', "NaN"),
    (records.Health, "health/web", HEALTH, "not a key health/.../..."),
    (records.PodStatus, "status/pods/n1/web", dict(POD_STATUS, attempts=True), "'attempts'"),
    (records.HookStatus, "status/hooks/n1/after_launch/hp", HOOK_POD, "hook pod"),
    (records.HookPodStatus, "status/hooks/n1/before_install/h", HOOK_RUN, "'hook_pod'"),
    (records.Request, "requests/n1/r1", {"kind": "logs"}, "'state' is missing"),
    (records.Request, "requests/n1/r1", b"\xff", "not JSON"),
    (records.Health, "health/web/n1", b"[" * 100000, "not JSON"),
]


class RecordTests(unittest.TestCase):

    def test_readsAndWritesTheStoredFormat(self):
        """
        Every record reads what its writer stores and writes it back byte
        for byte (sorted keys, the same fields).
        """
        for recordType, key, value in WRITTEN:
            stored = json.dumps(value, sort_keys=True).encode()
            record = recordType.fromEntry(key, entry(key, stored))
            self.assertEqual(record.toBytes(), stored, recordType.__name__)
            again = recordType.fromEntry(key, entry(key, record.toBytes()))
            self.assertEqual(again, record)

    def test_corruptValuesNameTheKey(self):
        """
        A value that is not the record its key holds raises L{CorruptRecord}
        (a L{StoreError}), whose one-line message names the key and what is
        wrong.
        """
        for recordType, key, value, words in CORRUPT:
            e = self.assertRaises(records.CorruptRecord, recordType.fromEntry, key,
                                  entry(key, value))
            self.assertIsInstance(e, StoreError)
            self.assertIn(repr(key), str(e))
            self.assertIn(words, str(e), (recordType.__name__, value))
            self.assertNotIn("\n", str(e))

    def test_fieldsFromTheKey(self):
        """
        Health names its pod and node by its key; a pod's status without
        them (an older writer) takes them from the key too.
        """
        health = records.Health.fromEntry("health/web/n1", entry("health/web/n1", HEALTH))
        self.assertEqual((health.pod_id, health.node, health.status, health.sha),
                         ("web", "n1", "passing", "abc"))
        self.assertTrue(health.passingFor("abc"))
        self.assertFalse(health.passingFor("def"))
        status = records.PodStatus.fromEntry("status/pods/n2/db", entry(
            "status/pods/n2/db", {"state": "failed", "attempts": 2}))
        self.assertEqual((status.pod, status.node, status.state, status.attempts,
                          status.counted), ("db", "n2", "failed", 2, False))

    def test_markerIdentity(self):
        """
        A marker's identity is its creation time and version; an unreadable
        marker is still a marker, of unknown creation.
        """
        marker = records.NodeMarker.new("n1", now=0)
        self.assertEqual(json.loads(marker.toBytes()),
                         {"node": "n1", "created": "1970-01-01T00:00:00Z"})
        self.assertEqual(records.markerIdentity(Entry("intent/n1", marker.toBytes(), 4)),
                         {"created": "1970-01-01T00:00:00Z", "version": 4})
        self.assertEqual(records.markerIdentity(Entry("intent/n1", b"junk", 5)),
                         {"created": None, "version": 5})

    def test_podStatusCounts(self):
        """
        A pod's status without restart counts writes none; with them, both.
        """
        status = records.PodStatus("web", "n1", "idle")
        self.assertNotIn("restarts", json.loads(status.toBytes()))
        counted = status.withCounts(0, None)
        self.assertEqual({k: v for k, v in json.loads(counted.toBytes()).items()
                          if k in records.PodStatus.COUNTS},
                         {"restarts": 0, "crash_loop": None})

    def test_request(self):
        """
        A request's record keeps all its fields; its state says whether it
        ended.
        """
        request = records.Request.new({"kind": "task", "pod": "web", "task": "install"}, 1.0, 61.0,
                                      "me@h")
        self.assertEqual((request.kind, request.state, request.ended), ("task", "pending", False))
        done = request.evolve(state=records.DONE, finished=2)
        self.assertTrue(done.ended)
        self.assertEqual(done.number("finished"), 2)
        self.assertIsNone(done.number("pod"))
        self.assertEqual(json.loads(done.toBytes())["task"], "install")

    def test_importsOnlyAttrsAndJson(self):
        """
        The records load neither Twisted nor the store: the CLI imports them
        for every store verb, and keeps its start fast.
        """
        import subprocess
        import sys
        code = ("import sys, p2twisted.records; "
                "print(sorted(m for m in sys.modules if m.startswith(('twisted', 'zope', "
                "'p2twisted.store', 'p2twisted.agent', 'yaml'))))")
        out = subprocess.check_output([sys.executable, "-c", code])
        self.assertEqual(out.strip(), b"[]")
