# -*- test-case-name: tests.test_web_openapi -*-
"""
The OpenAPI 3 document of the API, served at C{/openapi.json}.  Every
operation's C{operationId} is the name of its klein handler in
L{p2twisted.web.app.API}; a test checks that the document and the routes
agree (paths, methods, path parameters, the token on every write).
"""

from p2twisted import __version__

#: The klein handlers the document leaves out, and why.
UNDOCUMENTED = {
    "dashboard": "the dashboard page and its files, not the API",
    "apiUnknown": "answers 404 JSON for any path under /api/ no handler has",
}

_OBJECT = {"type": "object"}
_ERROR = {"$ref": "#/components/schemas/Error"}

#: C{(method, path, operationId, summary, query parameters, request body)}
#: of every operation; a request body is C{(media type, description)}.
OPERATIONS = (
    ("get", "/api/v1/nodes", "listNodes",
     "Every node: agent up/down, node marker, labels, pod ids.", (), None),
    ("get", "/api/v1/nodes/{node}", "getNode",
     "A node: its agent's facts and last status (store URL without password), labels, "
     "and its pods in full.", (), None),
    ("get", "/api/v1/pods", "listPods",
     "Every pod on every node: intent vs reality SHA, health, the agent's state and last "
     "error.", (("node", "string", "only the pods of this node"),), None),
    ("get", "/api/v1/services", "listServices",
     "Every service definition with its pods and its RCs and roll.", (), None),
    ("get", "/api/v1/rcs", "listRCs",
     "Every replication controller with its desired, current and healthy counts.", (), None),
    ("get", "/api/v1/rcs/{rc}", "getRC",
     "A replication controller, its pods, its roll and its farm's last status.", (), None),
    ("get", "/api/v1/rolls", "listRolls", "Every rolling update in progress.", (), None),
    ("get", "/api/v1/rolls/{roll}", "getRoll",
     "A rolling update: old and new RCs' desired/current/healthy counts, its target "
     "(desired, min_healthy), its farm's last word.", (), None),
    ("get", "/api/v1/daemon_sets", "listDaemonSets",
     "Every daemon set with its farm's last status.", (), None),
    ("get", "/api/v1/pod_clusters", "listPodClusters",
     "Every pod cluster with its member and healthy counts and its syncers' last status.",
     (), None),
    ("get", "/api/v1/pod_clusters/{pc}", "getPodCluster",
     "A pod cluster, its members (node, pod, address, healthy) and its syncers' last "
     "status.", (), None),
    ("get", "/api/v1/audit", "listAudit",
     "The last audit events, oldest first.",
     (("limit", "integer", "how many (1 to 1000, default 100)"),
      ("since", "string", "only events since then: a duration back (90s, 15m, 2h, 7d) or a "
                          "UTC time (2026-12-07T03:00:00Z)")), None),
    ("get", "/api/v1/events", "events",
     "Server-Sent Events of the store's changes (the dashboard's live updates); a client "
     "coming back sends the last event id it saw as the Last-Event-ID header (or ?last=) "
     "and gets only what it missed, while the stream remembers it.",
     (("last", "string", "the last event id seen, when a Last-Event-ID header cannot be "
                         "sent (a new EventSource)"),), None),
    ("get", "/api/v1/labels/{kind}/{objectId}", "getLabels",
     "The labels of an object (a pod's id is NODE/POD_ID).", (), None),
    ("get", "/openapi.json", "openapi", "This document.", (), None),
    ("put", "/api/v1/nodes/{node}/pods/{pod}", "schedule",
     "Schedule a pod: write its manifest (the body, YAML, may be clear-signed) into the "
     "node's intent.", (), ("application/yaml", "the pod manifest; its id must be {pod}")),
    ("delete", "/api/v1/nodes/{node}/pods/{pod}", "unschedule",
     "Unschedule a pod: remove it from the node's intent.", (), None),
    ("patch", "/api/v1/labels/{kind}/{objectId}", "applyLabels",
     "Set and remove labels of an object.",
     (), ("application/json", '{"set": {key: value}, "remove": [key]}')),
    ("post", "/api/v1/rcs/{rc}/scale", "scaleRC",
     "Set a replication controller's desired replicas (audited).",
     (), ("application/json", '{"replicas": N}')),
    ("post", "/api/v1/rolls", "startRoll",
     "Start a rolling update (audited).", (),
     ("application/json", '{"from": OLD_RC, "to": NEW_RC | "manifest": TEXT, '
      '"min_healthy": N, "delay": S, "leave_old": B, "auto_rollback": B, '
      '"rollback_after": S}')),
    ("post", "/api/v1/rolls/{roll}/abort", "abortRoll",
     "Abort a rolling update where it stands (audited).", (), None),
)


def _pathParameters(path):
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in names]


def _operation(method, path, operationId, summary, query, body):
    operation = {
        "operationId": operationId, "summary": summary,
        "parameters": _pathParameters(path) + [
            {"name": name, "in": "query", "required": False, "schema": {"type": kind},
             "description": text} for name, kind, text in query],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": _OBJECT}}},
            "400": {"description": "bad request", "content": {"application/json": {
                "schema": _ERROR}}},
            "403": {"description": "p2-api listens on loopback and the request's Host is "
                                   "not a loopback name", "content": {
                "application/json": {"schema": _ERROR}}},
            "503": {"description": "the store cannot be reached", "content": {
                "application/json": {"schema": _ERROR}}},
        },
    }
    if "{" in path:
        operation["responses"]["404"] = {"description": "no such object", "content": {
            "application/json": {"schema": _ERROR}}}
    if operationId == "events":
        operation["responses"]["200"] = {"description": "an event stream", "content": {
            "text/event-stream": {"schema": {"type": "string"}}}}
    if operationId == "startRoll":
        operation["responses"]["201"] = dict(operation["responses"].pop("200"), description=(
            "started; Location: the roll's URL"))
    if method != "get":
        operation["security"] = [{"token": []}]
        operation["responses"]["401"] = {
            "description": "no valid bearer token", "content": {
                "application/json": {"schema": _ERROR}}}
        operation["responses"]["409"] = {
            "description": "the store kept changing under the write", "content": {
                "application/json": {"schema": _ERROR}}}
    if body is not None:
        mediaType, description = body
        operation["responses"]["413"] = {"description": "the body is larger than 1 MiB",
                                         "content": {"application/json": {"schema": _ERROR}}}
        operation["requestBody"] = {"required": True, "description": description, "content": {
            mediaType: {"schema": {"type": "string"} if mediaType != "application/json"
                        else _OBJECT}}}
    return operation


def document():
    """
    @return: the OpenAPI 3.0 document, a JSON-able dict.
    """
    paths = {}
    for method, path, operationId, summary, query, body in OPERATIONS:
        paths.setdefault(path, {})[method] = _operation(
            method, path, operationId, summary, query, body)
    return {
        "openapi": "3.0.3",
        "info": {"title": "p2twisted API", "version": __version__,
                 "description": "The fleet as the store holds it, read through p2twisted's "
                                "read model; writes need the bearer token of p2-api's "
                                "--token-file."},
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}}}},
        },
    }
