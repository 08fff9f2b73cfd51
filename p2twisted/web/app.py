# -*- test-case-name: tests.test_web_api, tests.test_web_openapi, tests.test_web_e2e -*-
"""
The klein application of C{twistd p2-api}: JSON under C{/api/v1/} read
from the store through the read model (a L{Snapshot}, turned into dicts by
L{p2twisted.web.views} only), the dashboard at C{/}
(L{p2twisted.web.dashboard}), its event stream at C{/api/v1/events}
(L{p2twisted.web.events}) and the API's description at C{/openapi.json}
(L{p2twisted.web.openapi}).

Writes (schedule, unschedule, labels, RC scale, roll start and abort) go
through the CLI's own paths (L{p2twisted.intent}, L{LabelStore},
L{p2twisted.orchestrate.edit}) and need C{Authorization: Bearer <token>}:
without the right token they are answered 401, compared in constant time;
the token is never logged or echoed.  No response allows another origin
(no CORS headers).
"""

import hmac
import json
import socket
import time

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request
from zope.interface import implementer
from werkzeug.exceptions import MethodNotAllowed, NotFound as NoRoute

from p2twisted.errors import (
    InvalidKey, InvalidTransaction, KeyExists, P2Error, StoreError, StoreUnavailable,
    ValueTooLarge, VersionConflict)
from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.records import CorruptRecord
from p2twisted.web import views

log = Logger()

#: The largest request body read (a manifest, a JSON object).
MAX_BODY = 1024 * 1024


class BoundedRequest(Request):
    """
    A request whose body may not be larger than L{MAX_BODY}: one saying
    (C{Content-Length}) or sending more is answered 413 at once and its
    connection closed, before the body is stored -- Twisted would otherwise
    keep any body, in memory or a temporary file, before a handler (and its
    token check) sees the request.
    """

    _refused = False

    def gotLength(self, length):
        if length is not None and length > MAX_BODY:
            self._refuse()
            length = 0
        Request.gotLength(self, length)

    def handleContentChunk(self, data):
        if not self._refused and self.content.tell() + len(data) > MAX_BODY:
            self._refuse()
        if not self._refused:
            Request.handleContentChunk(self, data)

    def process(self):
        if not self._refused:  # (never with a body cut short)
            Request.process(self)

    def _refuse(self):
        self._refused = True
        body = json.dumps({"error": "the request body is larger than %d bytes"
                                    % (MAX_BODY,)}).encode() + b"\n"
        self.channel.transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        self.channel.transport.loseConnection()


def jsonResponse(request, value, code=200):
    """
    Set C{request}'s code and headers for C{value} as JSON.

    @return: the body: C{value} as indented JSON and a newline.
    """
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    return json.dumps(value, sort_keys=True, indent=2).encode() + b"\n"


class HTTPError(Exception):
    """
    A request answered with C{code} and C{{"error": message}}.
    """

    code = 400

    def __init__(self, message, code=None):
        Exception.__init__(self, message)
        if code is not None:
            self.code = code


class NotFound(HTTPError):
    """An unknown object or path: 404."""

    code = 404


class Unauthorized(HTTPError):
    """A write without the right bearer token: 401."""

    code = 401


def checkToken(expected, header):
    """
    @param expected: the token (bytes), or C{None} when writes are off.
    @param header: the request's C{Authorization} header value, or C{None}.
    @raise Unauthorized: unless C{header} is C{Bearer <expected>}; the
        comparison takes the same time wherever the two differ.
    """
    if expected is None:
        raise Unauthorized("writes are disabled: this p2-api was started without --token-file")
    scheme, _, given = (header or b"").partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), expected):
        raise Unauthorized("a write needs the header 'Authorization: Bearer <token>' with the "
                           "token of p2-api's --token-file")


def _author():
    return "p2-api@%s" % (socket.gethostname(),)


class API(object):
    """
    The HTTP API over one store.

    @ivar store: the open L{IStore}, or C{None} until it is open (requests
        are then answered 503).
    @param token: the bearer token writes need (bytes), or C{None}: writes
        are then refused.
    @param clock: the time of audit events (C{seconds()}; default: the
        wall clock).
    @param author: who the audit log says made the API's changes (default
        C{p2-api@<host>}).
    @param loopbackOnly: answer only requests whose C{Host} is a loopback
        name (L{_Guard}); for an API listening on loopback.
    """

    app = Klein()

    def __init__(self, store=None, token=None, clock=None, author=None, loopbackOnly=False):
        self.store = store
        self._token = token
        self._clock = clock
        self._author = author or _author()
        self._events = None
        self._loopbackOnly = loopbackOnly

    def resource(self):
        """@return: the L{IResource} serving everything."""
        return _Guard(self.app.resource(), self._loopbackOnly)

    def stop(self):
        """
        End the dashboard's open event streams and stop watching the store
        (before it is closed).
        """
        if self._events is not None:
            events, self._events = self._events, None
            events.stop()

    def _now(self):
        return self._clock.seconds() if self._clock is not None else time.time()

    def _open(self):
        if self.store is None:
            raise HTTPError("the coordination store is not open yet; retry shortly", 503)
        return self.store

    def _read(self):
        return Snapshot.read(self._open(), views.API_TREES)

    def _authorize(self, request):
        checkToken(self._token, request.getHeader(b"authorization"))

    # -- errors ------------------------------------------------------------

    @app.handle_errors(HTTPError)
    def _httpError(self, request, failure):
        if failure.check(Unauthorized):
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="p2-api"')
        return jsonResponse(request, {"error": str(failure.value)}, failure.value.code)

    @app.handle_errors(NoRoute, MethodNotAllowed)
    def _noRoute(self, request, failure):
        return jsonResponse(request, {"error": "no such API path: %s %s" % (
            request.method.decode("ascii", "replace"),
            request.path.decode("ascii", "replace"))}, failure.value.code)

    @app.handle_errors(P2Error)
    def _refused(self, request, failure):
        error = failure.value
        if isinstance(error, StoreUnavailable):
            log.warn("store unavailable: {error}", error=str(error))
            return jsonResponse(request, {"error": "the coordination store cannot be reached"},
                                503)
        if isinstance(error, (VersionConflict, KeyExists)):
            return jsonResponse(request, {"error": str(error)}, 409)
        if isinstance(error, CorruptRecord):
            return jsonResponse(request, {"error": str(error)}, 500)
        if isinstance(error, (InvalidKey, ValueTooLarge, InvalidTransaction)):
            return jsonResponse(request, {"error": str(error)}, 400)
        if isinstance(error, StoreError):
            log.failure("store error", failure)
            return jsonResponse(request, {"error": "store error: %s" % (error.summary,)}, 502)
        return jsonResponse(request, {"error": str(error)}, 400)

    @app.handle_errors(Exception)
    def _internal(self, request, failure):
        log.failure("internal error answering {method} {path}", failure,
                    method=request.method.decode("ascii", "replace"),
                    path=request.path.decode("ascii", "replace"))
        return jsonResponse(request, {"error": "internal error (see p2-api's log)"}, 500)

    # -- the dashboard and what it serves ----------------------------------

    @app.route("/", branch=True, methods=["GET", "HEAD"])
    def dashboard(self, request):
        from p2twisted.web import dashboard
        return dashboard.resource()

    # (/api too: else werkzeug's redirect to /api/ ends in _internal, a 500.)
    @app.route("/api", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    @app.route("/api/", branch=True, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                              "OPTIONS"])
    def apiUnknown(self, request):
        raise NoRoute()

    @app.route("/api/v1/events", methods=["GET"])
    def events(self, request):
        if self._events is None:
            from p2twisted.web.events import EventStream
            self._events = EventStream(self._open())
        return self._events.render(request)

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request):
        from p2twisted.web.openapi import document
        return jsonResponse(request, document())

    # -- reads -------------------------------------------------------------

    @app.route("/api/v1/nodes", methods=["GET"])
    @defer.inlineCallbacks
    def listNodes(self, request):
        snapshot = yield self._read()
        return jsonResponse(request, {"nodes": views.nodes(snapshot)})

    @app.route("/api/v1/nodes/<node>", methods=["GET"])
    @defer.inlineCallbacks
    def getNode(self, request, node):
        snapshot = yield self._read()
        if node not in snapshot.nodes() and not snapshot.podsInReality(node):
            raise NotFound("there is no node %s" % (node,))
        return jsonResponse(request, views.nodeDetail(snapshot, node))

    @app.route("/api/v1/pods", methods=["GET"])
    @defer.inlineCallbacks
    def listPods(self, request):
        node = _argument(request, "node")
        snapshot = yield self._read()
        return jsonResponse(request, {"pods": views.pods(snapshot, node)})

    @app.route("/api/v1/services", methods=["GET"])
    @defer.inlineCallbacks
    def listServices(self, request):
        from p2twisted.cli.service import serviceStatus
        found, snapshot = yield serviceStatus(self._open())
        for service in found:
            for state in service["nodes"]:
                state.pop("agent", None)  # this host's view of the agent's process
        return jsonResponse(request, {"services": found})

    @app.route("/api/v1/rcs", methods=["GET"])
    @defer.inlineCallbacks
    def listRCs(self, request):
        snapshot = yield self._read()
        return jsonResponse(request, {"rcs": views.rcs(snapshot)})

    @app.route("/api/v1/rcs/<rc>", methods=["GET"])
    @defer.inlineCallbacks
    def getRC(self, request, rc):
        snapshot = yield self._read()
        return jsonResponse(request, _found(views.rc(snapshot, rc, pods=True),
                                            "replication controller", rc))

    @app.route("/api/v1/rolls", methods=["GET"])
    @defer.inlineCallbacks
    def listRolls(self, request):
        snapshot = yield self._read()
        return jsonResponse(request, {"rolls": views.rolls(snapshot)})

    @app.route("/api/v1/rolls/<roll>", methods=["GET"])
    @defer.inlineCallbacks
    def getRoll(self, request, roll):
        snapshot = yield self._read()
        return jsonResponse(request, _found(views.roll(snapshot, roll), "roll", roll,
                                            " (a finished or aborted roll leaves none)"))

    @app.route("/api/v1/daemon_sets", methods=["GET"])
    @defer.inlineCallbacks
    def listDaemonSets(self, request):
        snapshot = yield self._read()
        return jsonResponse(request, {"daemon_sets": views.daemonSets(snapshot)})

    @app.route("/api/v1/pod_clusters", methods=["GET"])
    @defer.inlineCallbacks
    def listPodClusters(self, request):
        snapshot = yield self._read()
        return jsonResponse(request, {"pod_clusters": views.podClusters(snapshot)})

    @app.route("/api/v1/pod_clusters/<pc>", methods=["GET"])
    @defer.inlineCallbacks
    def getPodCluster(self, request, pc):
        snapshot = yield self._read()
        return jsonResponse(request, _found(views.podCluster(snapshot, pc), "pod cluster", pc))

    @app.route("/api/v1/audit", methods=["GET"])
    @defer.inlineCallbacks
    def listAudit(self, request):
        from p2twisted.orchestrate import audit
        limit = _integer(_argument(request, "limit"), "limit", 100, 1, views.MAX_AUDIT)
        since = _argument(request, "since")
        if since is not None:
            since = audit.parseSince(since, self._now())
        events, corrupt = yield audit.read(self._open(), since)
        return jsonResponse(request, {"events": [views.auditEvent(e) for e in events[-limit:]],
                                      "unreadable": len(corrupt)})

    @app.route("/api/v1/labels/<kind>/<path:objectId>", methods=["GET"])
    @defer.inlineCallbacks
    def getLabels(self, request, kind, objectId):
        from p2twisted.labels import LabelStore
        labels = yield LabelStore(self._open()).getLabels(_labelType(kind), objectId)
        return jsonResponse(request, {"type": kind, "id": objectId, "labels": labels})

    # -- writes ------------------------------------------------------------

    @app.route("/api/v1/nodes/<node>/pods/<pod>", methods=["PUT"])
    @defer.inlineCallbacks
    def schedule(self, request, node, pod):
        from p2twisted import intent
        from p2twisted.cli.schedule import nodeName
        from p2twisted.manifest import parseManifest
        self._authorize(request)
        manifest = parseManifest(_body(request), source="the request body")
        if manifest.id != pod:
            raise HTTPError("the manifest's id is %s, not %s (the path names the pod)"
                            % (manifest.id, pod))
        entry = yield intent.schedule(self._open(), nodeName(node), manifest)
        log.info("scheduled {pod} (sha {sha}) on {node}", pod=pod, sha=manifest.sha(),
                 node=node, event="schedule")
        return jsonResponse(request, {"node": node, "pod_id": pod, "intent_sha": manifest.sha(),
                                      "version": entry.version})

    @app.route("/api/v1/nodes/<node>/pods/<pod>", methods=["DELETE"])
    @defer.inlineCallbacks
    def unschedule(self, request, node, pod):
        from p2twisted import intent
        from p2twisted.cli.schedule import nodeName
        self._authorize(request)
        removed = yield intent.unschedule(self._open(), nodeName(node), pod)
        if not removed:
            raise NotFound("%s is not scheduled on %s; nothing removed" % (pod, node))
        log.info("unscheduled {pod} from {node}", pod=pod, node=node, event="unschedule")
        return jsonResponse(request, {"node": node, "pod_id": pod, "removed": True})

    @app.route("/api/v1/labels/<kind>/<path:objectId>", methods=["PATCH"])
    @defer.inlineCallbacks
    def applyLabels(self, request, kind, objectId):
        from p2twisted.labels import LabelStore, validateLabels
        self._authorize(request)
        kind = _labelType(kind)
        body = _jsonBody(request)
        setting = body.get("set", {})
        remove = body.get("remove", [])
        if not isinstance(setting, dict) or not isinstance(remove, list) or not all(
                isinstance(k, str) for k in remove) or set(body) - {"set", "remove"}:
            raise HTTPError('expected {"set": {key: value}, "remove": [key]}')
        validateLabels(setting)
        labels = yield LabelStore(self._open()).applyLabels(kind, objectId, setting, remove)
        log.info("labels of {kind} {id} changed", kind=kind, id=objectId, event="labels")
        return jsonResponse(request, {"type": kind, "id": objectId, "labels": labels})

    @app.route("/api/v1/rcs/<rc>/scale", methods=["POST"])
    @defer.inlineCallbacks
    def scaleRC(self, request, rc):
        from p2twisted.orchestrate import edit
        self._authorize(request)
        replicas = _jsonBody(request).get("replicas")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise HTTPError('expected {"replicas": N}, N a whole number >= 0')

        def build(snapshot):
            _found(snapshot.rc(rc), "replication controller", rc)
            return edit.scaleRC(snapshot, rc, replicas)
        plan = yield self._change(build)
        snapshot = yield self._read()
        return jsonResponse(request, dict(views.rc(snapshot, rc) or {"id": rc},
                                          changed=bool(plan), reason=plan.reason))

    @app.route("/api/v1/rolls", methods=["POST"])
    @defer.inlineCallbacks
    def startRoll(self, request):
        from p2twisted.orchestrate import edit
        self._authorize(request)
        body = _jsonBody(request)
        known = {"from", "to", "manifest", "min_healthy", "delay", "leave_old",
                 "auto_rollback", "rollback_after"}
        if set(body) - known:
            raise HTTPError("unknown field %r; expected some of %s"
                            % (sorted(set(body) - known)[0], ", ".join(sorted(known))))
        old, new, manifest = body.get("from"), body.get("to"), body.get("manifest")
        if not isinstance(old, str) or (new is None) == (manifest is None) or not isinstance(
                new if manifest is None else manifest, str):
            raise HTTPError('expected {"from": OLD_RC, "to": NEW_RC or "manifest": TEXT, '
                            '"min_healthy": N}')
        minHealthy = _integer(body.get("min_healthy"), "min_healthy", None, 0)
        more = {"roll_delay": _number(body.get("delay", 0), "delay"),
                "leave_old": _flag(body, "leave_old"),
                "auto_rollback": _flag(body, "auto_rollback")}
        if body.get("rollback_after") is not None:
            if not more["auto_rollback"]:
                raise HTTPError("rollback_after goes with auto_rollback")
            more["rollback_after"] = _number(body["rollback_after"], "rollback_after")
        if manifest is not None:
            from p2twisted.manifest import parseManifest
            manifest = parseManifest(manifest.encode("utf-8"), source="manifest").raw

        def build(snapshot):
            _found(snapshot.rc(old), "replication controller", old)
            if new is not None:
                _found(snapshot.rc(new), "replication controller", new)
            return edit.startRoll(snapshot, old, minHealthy, newId=new, manifest=manifest,
                                  **more)
        roll, plan = yield self._change(build)
        snapshot = yield self._read()
        request.setHeader(b"Location", ("/api/v1/rolls/%s" % (roll.id,)).encode())
        return jsonResponse(request, views.roll(snapshot, roll.id) or {"id": roll.id}, 201)

    @app.route("/api/v1/rolls/<roll>/abort", methods=["POST"])
    @defer.inlineCallbacks
    def abortRoll(self, request, roll):
        from p2twisted.orchestrate import roll as rolls
        self._authorize(request)

        def build(snapshot):
            _found(snapshot.roll(roll), "roll", roll)
            return snapshot, rolls.abortRoll(snapshot, roll)
        snapshot, plan = yield self._change(build)
        found = snapshot.roll(roll)
        return jsonResponse(request, {"id": roll, "aborted": True, "old_rc": found.old_rc,
                                      "new_rc": found.new_rc})

    def _change(self, build):
        from p2twisted.orchestrate import edit
        from p2twisted.store import keys
        return edit.change(self._open(), build, self._now(),
                           (keys.REPLICATION_CONTROLLERS, keys.ROLLS, keys.LABELS),
                           author=self._author)


#: The C{Host} names of loopback.
_LOOPBACK_HOSTS = (b"localhost", b"[::1]")


def _loopbackHost(header):
    """
    @param header: a request's C{Host} header (bytes), or C{None}.
    @return: whether it names loopback (C{localhost}, C{127.x.x.x},
        C{[::1]}), with or without a port.
    """
    header = (header or b"").strip().lower()
    if header.startswith(b"["):
        split = header.find(b"]") + 1
    else:
        split = header.find(b":") if b":" in header else len(header)
    host, port = header[:split], header[split:]
    if port and not (port.startswith(b":") and port[1:].isdigit()):
        return False
    if host in _LOOPBACK_HOSTS:
        return True
    parts = host.split(b".")
    return len(parts) == 4 and parts[0] == b"127" and all(p.isdigit() for p in parts)


@implementer(IResource)
class _Guard(object):
    """
    What klein would answer as text, answered as JSON: a URL that is not
    UTF-8 (klein's C{400 Non-UTF-8 encoding in URL.}) is 400.

    With C{loopbackOnly}, requests to a loopback name only: a page of
    another site whose name was made to resolve to 127.0.0.1 (DNS
    rebinding) is the same origin to the browser and could read the fleet;
    its requests name that site in C{Host} and are answered 403.
    """

    isLeaf = True

    def __init__(self, wrapped, loopbackOnly):
        self.wrapped = wrapped
        self.loopbackOnly = loopbackOnly

    def getChildWithDefault(self, name, request):
        return self

    def putChild(self, path, child):
        raise NotImplementedError()

    def render(self, request):
        if self.loopbackOnly and not _loopbackHost(request.getHeader(b"host")):
            return jsonResponse(request, {"error": "p2-api listens on loopback and answers "
                                                   "requests for localhost or 127.0.0.1 only"},
                                403)
        try:
            for part in [request.getRequestHostname()] + request.prepath + request.postpath:
                part.decode("utf-8")
        except UnicodeDecodeError:
            return jsonResponse(request, {"error": "the URL %s is not UTF-8" % (
                request.uri.decode("ascii", "replace"),)}, 400)
        return self.wrapped.render(request)


def _found(value, what, objectId, more=""):
    """
    @return: C{value}.
    @raise NotFound: when it is C{None}.
    """
    if value is None:
        raise NotFound("there is no %s %s%s" % (what, objectId, more))
    return value


def _argument(request, name):
    values = request.args.get(name.encode())
    return None if not values else values[-1].decode("utf-8", "replace")


def _integer(value, name, default, low, high=None):
    """
    @param value: a number, its text (a query argument), or C{None}.
    @return: C{value} as a whole number, C{default} for C{None}.
    @raise HTTPError: when it is not one in C{[low, high]}.
    """
    if value is None and default is not None:
        return default
    try:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError(value)
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < low or (high is not None and number > high):
        raise HTTPError("%s must be a whole number from %d%s, got %r" % (
            name, low, "" if high is None else " to %d" % (high,), value))
    return number


def _number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise HTTPError("%s must be a number of seconds >= 0, got %r" % (name, value))
    return value


def _flag(body, name):
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise HTTPError("%s must be true or false, got %r" % (name, value))
    return value


def _labelType(kind):
    from p2twisted.store import keys
    if kind not in keys.LABEL_TYPES:
        raise NotFound("unknown label type %r; expected one of %s"
                       % (kind, ", ".join(sorted(keys.LABEL_TYPES))))
    return kind


def _body(request):
    """
    @return: the request's body (bytes).
    @raise HTTPError: 413 when larger than L{MAX_BODY}.
    """
    request.content.seek(0)
    data = request.content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise HTTPError("the request body is larger than %d bytes" % (MAX_BODY,), 413)
    return data


def _jsonBody(request):
    """
    @return: the request's body, a JSON object.
    @raise HTTPError: when it is not one.
    """
    try:
        body = json.loads(_body(request).decode("utf-8") or "{}")
    except ValueError as e:
        raise HTTPError("the request body is not JSON: %s" % (e,))
    if not isinstance(body, dict):
        raise HTTPError("the request body must be a JSON object")
    return body
