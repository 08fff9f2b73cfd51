"""
A fleet of real processes on one machine for end-to-end tests: several
C{twistd p2-agent} processes (each its own node name, pod root, state dir
and loopback pod address, so one manifest's pods share its port), C{twistd
p2-orchestrator} processes, web pods over real runit and real HTTP, and a
record of everything the store went through (L{StoreHistory}).
"""

import json
import os

from twisted.internet import defer

from p2twisted.labels import encodeLabels
from p2twisted.manifest import parseManifest
from p2twisted.orchestrate import audit
from p2twisted.records import Health
from p2twisted.store import keys
from tests.agentharness import freePort, httpGet
from tests.artifacts import buildHoist
from tests.store_contract import waitFor
from tests.test_agent_process_e2e import AgentProcess, base
from tests.test_orchestrate_process import OrchestratorProcess

#: A pod serving its launchable's C{www/} on C{$POD_ADDRESS:$PORT}.
LAUNCH = b"""#!/bin/sh
exec /usr/bin/python3 -m http.server "$PORT" --bind "$POD_ADDRESS" --directory "$LAUNCHABLE_ROOT/www"
"""

#: Settings that keep a test short (a dead agent's keys go within seconds) yet
#: keep sessions through a busy machine's pauses.
AGENT_CONFIG = "session_ttl: 8\nresync_interval: 2\nremoval_grace: 1\nfetch_timeout: 10\n"
ORCHESTRATOR_CONFIG = "session_ttl: 5\nresync_interval: 2\n"


class Fleet(object):
    """
    Agents, orchestrators and web pod versions of one test.

    @ivar nodes: C{{node: address}}.
    @ivar agents: C{{node: AgentProcess}} of the running agents.
    """

    def __init__(self, test, url, store, nodes):
        """
        @param nodes: node names, given loopback addresses 127.0.0.11, .12...
        """
        self.test = test
        self.url = url
        self.store = store
        self.nodes = {n: "127.0.0.%d" % (11 + i,) for i, n in enumerate(nodes)}
        self.bases = {n: base(test) for n in nodes}
        self.agents = {}
        self.orchestrators = []
        self.port = freePort()
        self.artifacts = os.path.join(base(test), "artifacts")
        os.makedirs(self.artifacts)
        self.versions = {}

    def startAgent(self, node, config=""):
        """
        @param config: more agent settings (YAML lines).
        """
        config = "pod_address: %s\n%s%s" % (self.nodes[node], AGENT_CONFIG, config)
        self.agents[node] = AgentProcess(self.test, self.bases[node], self.url, node=node,
                                         config=config).start()
        return self.agents[node]

    def startAgents(self):
        for node in sorted(self.nodes):
            self.startAgent(node)

    def startOrchestrator(self, farms="rc,roll", config=""):
        """
        @param config: more orchestrator settings (YAML lines).
        """
        process = OrchestratorProcess(self.test, self.url, ORCHESTRATOR_CONFIG + config,
                                      farms=farms)
        self.orchestrators.append(process.start())
        return process

    def output(self):
        """@return: the orchestrators' output so far, as text."""
        return "".join(p.proto.output.decode("utf-8", "replace") for p in self.orchestrators)

    @defer.inlineCallbacks
    def label(self, node, **labels):
        yield self.store.put(keys.label("node", node), encodeLabels(labels))

    def manifest(self, version, healthy=True):
        """
        @return: the bytes of pod C{web}'s manifest at C{version}, whose
            status check passes (or, with C{healthy=False}, answers 404).
        """
        files = {"bin/launch": (LAUNCH, 0o755), "www/version": version.encode()}
        if healthy:
            files["www/_status"] = b"ok\n"
        path = os.path.join(self.artifacts, "web_%s.tar.gz" % (version,))
        sha = buildHoist(path, files=files)
        text = (b"id: web\nrun_as: nobody\nlaunchables:\n  web:\n    launchable_type: hoist\n"
                b"    location: file://%s\n    digest: %s\n    env:\n      PORT: '%d'\n"
                b"status:\n  port: %d\n  http: true\n"
                % (path.encode(), sha.encode(), self.port, self.port))
        self.versions[version] = text
        return text

    def manifestFile(self, version, healthy=True):
        path = os.path.join(self.artifacts, "web_%s.yaml" % (version,))
        with open(path, "wb") as f:
            f.write(self.manifest(version, healthy))
        return path

    @defer.inlineCallbacks
    def serving(self):
        """
        @return: L{Deferred} firing with C{{node: version or None}}: what
            each node's pod answers on C{/version}.
        """
        found = {}
        for node, address in sorted(self.nodes.items()):
            result = yield httpGet("http://%s:%d/version" % (address, self.port))
            found[node] = result[1].decode() if result and result[0] == 200 else None
        return found

    def waitServing(self, expected, timeout=120):
        """
        Wait until the nodes serve C{expected} (C{{node: version or None}}).
        """
        @defer.inlineCallbacks
        def check():
            return (yield self.serving()) == expected
        return waitFor(check, timeout=timeout, interval=0.2,
                       what="the nodes to serve %r" % (expected,))

    def waitHealthy(self, expected, timeout=120):
        """
        Wait until the nodes' agents report C{expected} (C{{node: version or
        None}}): passing on that version, or (C{None}) no health at all.
        """
        shas = {None: None}
        shas.update((v, parseManifest(m).sha()) for v, m in self.versions.items())

        @defer.inlineCallbacks
        def check():
            for node, version in expected.items():
                entry = yield self.store.get(keys.health("web", node))
                if version is None:
                    if entry is not None:
                        return False
                    continue
                if entry is None:
                    return False
                health = Health.fromEntry(entry.key, entry)
                if (health.status, health.sha) != ("passing", shas[version]):
                    return False
            return True
        return waitFor(check, timeout=timeout, interval=0.2,
                       what="the nodes to report %r healthy" % (expected,))

    @defer.inlineCallbacks
    def waitAgents(self, timeout=120):
        """Wait until every node's agent is registered (C{machines/<node>})."""
        for node in sorted(self.nodes):
            yield self.waitKey(keys.machine(node), timeout=timeout)

    @defer.inlineCallbacks
    def waitFleet(self, expected, timeout=120):
        """Wait until the nodes serve C{expected} and report it healthy."""
        yield self.waitServing(expected, timeout)
        yield self.waitHealthy(expected, timeout)

    def waitKey(self, key, present=True, timeout=120):
        @defer.inlineCallbacks
        def check():
            return ((yield self.store.get(key)) is not None) == present
        return waitFor(check, timeout=timeout, interval=0.2,
                       what="%s to be %s" % (key, "there" if present else "gone"))

    @defer.inlineCallbacks
    def status(self, kind, objectId):
        entry = yield self.store.get(keys.status(kind, objectId))
        return None if entry is None else json.loads(entry.value)

    @defer.inlineCallbacks
    def lockHolder(self, kind, objectId):
        """@return: L{Deferred} firing with the pid holding the object, or C{None}."""
        entry = yield self.store.get(keys.lock(kind, objectId))
        return None if entry is None else json.loads(entry.value)["pid"]

    @defer.inlineCallbacks
    def events(self, kind=None, since=0):
        """@return: L{Deferred} firing with the audit events, in order."""
        events, corrupt = yield audit.read(self.store)
        self.test.assertEqual(corrupt, [])
        return [e for e in events[since:] if kind is None or e.kind == kind]

    @defer.inlineCallbacks
    def podChanges(self, since=0):
        """
        @return: L{Deferred} firing with C{[(action, node)]} of the RC
            farms' pod changes in the audit log (schedule, rewrite,
            unschedule), one per node.
        """
        events = yield self.events(since=since)
        return [(e.action, node) for e in events
                if e.action in ("schedule", "rewrite", "unschedule")
                for node in e.details.get("nodes", ())]


class StoreHistory(object):
    """
    Every state of the pods the store went through, as a watch of the whole
    store saw them (coalesced, so a short-lived state may be missed; the final
    one never is): each a C{{"intent": {node: version}, "health": {node:
    status}, "machines": set}}.
    """

    def __init__(self, fleet):
        self.fleet = fleet
        self.states = []
        self.watch = fleet.store.watch("", self._changed)
        fleet.test.addCleanup(self.watch.cancel)

    def _version(self, value):
        for version, manifest in self.fleet.versions.items():
            if manifest == value:
                return version
        return "?"

    def _changed(self, snapshot):
        state = {"intent": {}, "health": {}, "machines": set()}
        for key, entry in snapshot.items():
            parts = keys.parse(key)
            if parts[0] == keys.INTENT and len(parts) == 3 and parts[2] == "web":
                state["intent"][parts[1]] = self._version(entry.value)
            elif parts[0] == keys.HEALTH and len(parts) == 3 and parts[1] == "web":
                health = Health.fromEntry(key, entry)
                state["health"][parts[2]] = (self._shaVersion(health.sha), health.status)
            elif parts[0] == keys.MACHINES and len(parts) == 2:
                state["machines"].add(parts[1])
        if not self.states or self.states[-1] != state:
            self.states.append(state)

    def _shaVersion(self, sha):
        for version, manifest in self.fleet.versions.items():
            if parseManifest(manifest).sha() == sha:
                return version
        return "?"

    def intentVersions(self, node, start=0):
        """
        @return: the distinct successive versions of C{node}'s intent from
            the state current when there were C{start} states (C{None} for
            no intent).
        """
        seen = []
        for state in self.states[max(start - 1, 0):]:
            version = state["intent"].get(node)
            if not seen or seen[-1] != version:
                seen.append(version)
        return seen

    def passing(self, state, version=None):
        """
        @return: the nodes whose pod reports passing in C{state} (on
            C{version}, when given).
        """
        return {node for node, (v, status) in state["health"].items()
                if status == "passing" and (version is None or v == version)}
