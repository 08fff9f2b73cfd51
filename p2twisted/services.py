# -*- test-case-name: tests.test_services -*-
"""
Services: pop-style definitions (a template and its settings) stored at
C{services/<name>}, and deploying them as pods.

A definition is JSON C{{"template", "settings", "created", "updated"}}.  A
service named C{web} runs as the pod C{web} on every node it is deployed to;
deploying renders the template (manifest + artifact) and writes the manifest
into each node's intent.  Because the settings are part of the manifest,
changing them changes its SHA and the agents restart the pod; rendering
unchanged settings gives the same SHA and restarts nothing.
"""

import json
import time

import attr
from twisted.internet import defer

from p2twisted import intent
from p2twisted.errors import KeyExists, P2Error, VersionConflict
from p2twisted.records.base import CorruptRecord, field, loadObject
from p2twisted.store import keys
from p2twisted.store.common import Delete, checkKey

#: How often a read-modify-write of a definition is retried on a race.
RETRIES = 10


class ServiceNotFound(P2Error):
    """
    No service has that name.
    """


class ServiceExists(P2Error):
    """
    A service of that name is already defined.
    """


@attr.s
class Service(object):
    """
    A service definition.

    @ivar settings: the template's settings, defaults filled in.
    @ivar version: the store entry's version, or C{None} if not stored.
    @ivar fleet: for a service deployed under a replication controller
        (C{p2 deploy NAME --replicas N}), how it rolls:
        C{{"min_healthy": M}}; else C{None}.
    """

    name = attr.ib()
    template = attr.ib()
    settings = attr.ib(factory=dict)
    created = attr.ib(default=None)
    updated = attr.ib(default=None)
    version = attr.ib(default=None)
    fleet = attr.ib(default=None)

    def toBytes(self):
        data = {"template": self.template, "settings": self.settings,
                "created": self.created, "updated": self.updated}
        if self.fleet is not None:
            data["fleet"] = self.fleet
        return json.dumps(data, sort_keys=True, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def fromEntry(cls, name, entry):
        """
        @raise CorruptRecord: naming the key, when it holds no service
            definition.
        """
        data = loadObject(entry.key, entry.value)
        return cls(name, field(entry.key, data, "template", str, required=True),
                   field(entry.key, data, "settings", dict, default={}),
                   field(entry.key, data, "created", str), field(entry.key, data, "updated", str),
                   entry.version, field(entry.key, data, "fleet", dict))


def getTemplate(name):
    """
    L{p2twisted.templates.getTemplate}, imported when first needed (reading
    services, as C{p2 status} does, needs no template).
    """
    from p2twisted.templates import getTemplate as get
    return get(name)


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def checkName(name):
    """
    @raise P2Error: unless C{name} can name a service (and its pod).
    """
    if not name or "/" in name or name.startswith(".") or not name.replace(
            "-", "").replace("_", "").replace(".", "").isalnum():
        raise P2Error("service name %r must be letters, digits, '-', '_' or '.'" % (name,))
    checkKey(keys.service(name))
    return name


@defer.inlineCallbacks
def addService(store, name, templateName, settings, replace=False):
    """
    Define a service.

    @param settings: the user's settings; checked and completed by the
        template.
    @param replace: overwrite an existing definition instead of failing.
    @return: L{Deferred} firing with the stored L{Service}.
    @raise ServiceExists: if C{name} is defined and not C{replace}.
    """
    checkName(name)
    template = getTemplate(templateName)
    complete = template.settings(settings)
    now = _now()
    service = Service(name, template.name, complete, now, now)
    key = keys.service(name)
    if replace:
        old = yield store.get(key)
        if old is not None:
            previous = Service.fromEntry(name, old)
            service.created, service.fleet = previous.created, previous.fleet
        entry = yield store.put(key, service.toBytes())
    else:
        try:
            entry = yield store.create(key, service.toBytes())
        except KeyExists:
            raise ServiceExists("service %s already exists; change it with 'p2 config %s "
                                "KEY=VALUE' or replace it with 'p2 add --force'" % (name, name))
    service.version = getattr(entry, "version", None)
    return service


@defer.inlineCallbacks
def getService(store, name):
    """
    @return: L{Deferred} firing with the L{Service}.
    @raise ServiceNotFound: if there is none.
    """
    checkName(name)
    entry = yield store.get(keys.service(name))
    if entry is None:
        raise ServiceNotFound("there is no service %s; define it with 'p2 add %s --template T' "
                              "(see 'p2 status' for the services there are)" % (name, name))
    return Service.fromEntry(name, entry)


@defer.inlineCallbacks
def listServices(store, unreadable=None):
    """
    @param unreadable: a dict to collect C{{name: CorruptRecord}} of the
        definitions that cannot be read, left out of the result; without
        it, the first one fails the listing.
    @return: L{Deferred} firing with C{{name: Service}}.
    """
    prefix = keys.tree(keys.SERVICES)
    entries = yield store.list(prefix)
    services = {}
    for key, entry in entries.items():
        parts = keys.parse(key)
        if len(parts) == 2:
            try:
                services[parts[1]] = Service.fromEntry(parts[1], entry)
            except CorruptRecord as e:
                if unreadable is None:
                    raise
                unreadable[parts[1]] = e
    return services


@defer.inlineCallbacks
def updateSettings(store, name, changes, remove=()):
    """
    Change some settings of a service (read, modify, compare-and-set).

    @param changes: C{{option: value}} to set.
    @param remove: options to reset to their defaults.
    @return: L{Deferred} firing with C{(old Service, new Service)}.
    """
    for attempt in range(RETRIES):
        old = yield getService(store, name)
        template = getTemplate(old.template)
        given = dict(old.settings)
        for option in remove:
            given.pop(option.replace("-", "_"), None)
        given.update(changes)
        new = attr.evolve(old, settings=template.settings(given), updated=_now())
        if new.settings == old.settings:
            return old, old
        try:
            entry = yield store.cas(keys.service(name), new.toBytes(), old.version)
        except VersionConflict:
            continue
        new.version = getattr(entry, "version", None)
        return old, new
    raise VersionConflict(keys.service(name), store.backend,
                          "gave up changing %s after %d conflicting writes" % (name, RETRIES))


@defer.inlineCallbacks
def removeService(store, name):
    """
    Delete a service's definition (its pods stay deployed: undeploy first).

    @return: L{Deferred} firing with C{True} if it existed.
    """
    checkName(name)
    results = yield store.transaction([Delete(keys.service(name))])
    return results[0]


def render(service, artifactDir, artifactBaseURL, sign=None):
    """
    Render C{service}'s template: build its artifact into C{artifactDir}.

    @param sign: C{None}, or a function from the manifest's bytes to the
        signed bytes (same SHA).
    @return: the parsed L{PodManifest}.
    """
    template = getTemplate(service.template)
    raw = template.render(service.name, service.settings, artifactDir, artifactBaseURL)
    if sign is not None:
        raw = sign(raw)
    from p2twisted.manifest import parseManifest
    return parseManifest(raw, source="service %s (template %s)" % (service.name, template.name))


@defer.inlineCallbacks
def deployedNodes(store, name):
    """
    @return: L{Deferred} firing with the sorted nodes whose intent has the
        pod C{name}.
    """
    entries = yield store.list(keys.INTENT)
    nodes = set()
    for key in entries:
        parts = keys.parse(key)
        if len(parts) == 3 and parts[2] == name:
            nodes.add(parts[1])
    return sorted(nodes)


@defer.inlineCallbacks
def deploy(store, name, nodes, artifactDir, artifactBaseURL, check=None, sign=None):
    """
    Render service C{name} and schedule it on every node of C{nodes}.

    @param check: called with the rendered manifest before anything is
        scheduled; raises to stop the deploy.
    @param sign: signs the rendered manifest (see L{render}), or C{None}.
    @return: L{Deferred} firing with the L{PodManifest} written.
    """
    service = yield getService(store, name)
    manifest = render(service, artifactDir, artifactBaseURL, sign)
    if check is not None:
        check(manifest)
    for node in nodes:
        yield intent.schedule(store, node, manifest)
    return manifest


@defer.inlineCallbacks
def undeploy(store, name, nodes=None):
    """
    Remove the pod C{name} from the intent of C{nodes} (default: every node
    it is deployed to).

    @return: L{Deferred} firing with the nodes it was removed from.
    """
    if nodes is None:
        nodes = yield deployedNodes(store, name)
    removed = []
    for node in nodes:
        if (yield intent.unschedule(store, node, name)):
            removed.append(node)
    return removed


#: The trees a view of pods reads (L{readPods}), one C{list()} each.
POD_TREES = (keys.INTENT, keys.REALITY, keys.MACHINES, keys.HEALTH, keys.status("pods"),
             keys.status("agents"))


def readPods(store):
    """
    Read what the views of pods (C{p2 status}, C{p2 inspect}, C{deploy
    --wait}) show: intent, reality, agents, health and status, one
    C{list()} per tree whatever the number of nodes.

    @return: L{Deferred} firing with a L{p2twisted.orchestrate.snapshot.Snapshot}.
    """
    from p2twisted.orchestrate.snapshot import Snapshot
    return Snapshot.read(store, POD_TREES)


def oneLine(text, limit=200):
    """
    @return: C{text} on one line (whitespace runs made one space), cut to
        C{limit} characters.
    """
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def healthText(health, sha):
    """
    @return: a pod's health in a word or two: C{passing}, C{critical}, with
        C{(previous version)} when it is the health of another manifest
        than C{sha}, or C{-} when none is published (no check declared, or
        no agent running).
    """
    if health is None:
        return "-"
    if health["sha"] != sha:
        return "%s (previous version)" % (health["status"],)
    return health["status"]


def podState(snapshot, name, node):
    """
    @param snapshot: a L{Snapshot} from L{readPods}.
    @return: C{{"node", "intent", "reality", "state", "error", "time",
        "attempts", "restarts", "crash_loop", "health"}}: the intent and
        reality SHAs (C{None} when absent, C{"invalid"} when not a valid
        manifest), the agent's last status of the pod (its failed attempts in
        a row, its services' restart count and crash loop), and the health
        its agent publishes (C{{"status", "output", "sha", "time"}}: C{status}
        C{passing} or C{critical}, C{sha} the manifest checked; C{None}
        without a check, or without an agent running there).
    """
    from p2twisted.records import CorruptRecord
    health = snapshot.health(name, node)
    state = {"node": node, "intent": snapshot.intentSha(node, name),
             "reality": snapshot.realitySha(node, name),
             "health": None if health is None else health.toDict()}
    try:
        status = snapshot.podStatus(node, name)
    except CorruptRecord as e:
        status, state["error"] = None, str(e)
    for field in ("state", "error", "time", "attempts", "restarts", "crash_loop"):
        if status is not None or field not in state:
            state[field] = None if status is None else getattr(status, field)
    return state


def crashLoopLine(state):
    """
    @param state: a pod's state (L{podState}, or a row of C{p2 inspect}).
    @return: the line saying it is crash-looping, e.g. C{"crash-looping (7
        restarts in 63 s, last exit 3)"} with the service, or C{None}.
    """
    loop = state.get("crash_loop")
    if not isinstance(loop, dict) or not loop.get("text"):
        return None
    return "%s: %s" % (loop.get("service") or "a service", loop["text"])
