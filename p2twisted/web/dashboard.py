# -*- test-case-name: tests.test_web_dashboard -*-
"""
The dashboard served at C{/} by C{twistd p2-api}: one page of plain HTML,
CSS and JavaScript (C{web/static/}: no build step, nothing fetched from
elsewhere, so it works offline) showing the fleet grid, the rolling
updates and the audit timeline, kept live by the event stream
(L{p2twisted.web.events}) -- and the documents that stream carries
(L{documents}).
"""

import os

from twisted.web.resource import Resource
from twisted.web.static import File

from p2twisted import records
from p2twisted.store import keys
from p2twisted.web import views

#: The directory of the page's files.
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

#: The trees the dashboard's event stream watches (none below another): the
#: API's and the audit log.
TREES = views.API_TREES + (keys.tree(keys.AUDIT),)

#: How many of the latest audit events the timeline shows.
AUDIT_LIMIT = 50

#: Where the page may load anything from: only this server (no CDN, no inline
#: script), and it may not be framed.
POLICY = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def _audit(snapshot, limit):
    """
    @return: C{{name: event}} of the latest C{limit} readable audit events
        (C{name} is the key's last segment, which sorts by time).
    """
    from p2twisted.records.controllers import AuditEvent
    found = {}
    entries = sorted((key, entry) for key, entry in snapshot.entries.items()
                     if keys.parse(key)[0] == keys.AUDIT and len(keys.parse(key)) == 2)
    for key, entry in reversed(entries):
        if len(found) == limit:
            break
        event = records.readable(AuditEvent, entry)
        if event is not None:
            found[keys.parse(key)[1]] = views.auditEvent(event)
    return found


def documents(snapshot, auditLimit=AUDIT_LIMIT):
    """
    @return: what the dashboard shows of C{snapshot}, as C{{(kind, id):
        value}}: C{("node", name)} a row of the fleet grid (the API's node
        with its pods); C{("rc", id)}, C{("daemon_set", id)} and
        C{("pod_cluster", id)} the API's views of the controllers (with
        their farms' last word); C{("roll", id)} a rolling update's
        progress (the API's: old and new RCs' desired/current/healthy, the
        target, the roll farm's last word) and C{("audit", name)} the latest
        C{auditLimit} audit events.
    """
    podsByNode = {node: [] for node in snapshot.nodes()}
    for node, podId in snapshot.pods():
        podsByNode.setdefault(node, []).append(podId)
    found = {}
    for node, podIds in podsByNode.items():
        row = found["node", node] = views.node(snapshot, node)
        row["pods"] = [views.pod(snapshot, node, podId) for podId in podIds]
    for kind, objects in (("rc", views.rcs), ("daemon_set", views.daemonSets),
                          ("pod_cluster", views.podClusters)):
        for view in objects(snapshot):
            found[kind, view["id"]] = view
    for rollId in snapshot.rolls():
        found["roll", rollId] = views.roll(snapshot, rollId)
    for name, event in _audit(snapshot, auditLimit).items():
        found["audit", name] = event
    return found


class _NotFound(Resource):
    """
    A 404 with a JSON error, as the API's.
    """

    isLeaf = True

    def render(self, request):
        from p2twisted.web.app import jsonResponse
        return jsonResponse(request, {"error": "no such file: %s" % (
            request.path.decode("ascii", "replace"),)}, 404)


class _Files(File):
    """
    The page's files, with a content security policy that keeps it to this
    server.
    """

    contentTypes = dict(File.contentTypes, **{
        ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
        ".html": "text/html; charset=utf-8", ".png": "image/png"})

    childNotFound = _NotFound()
    indexNames = []  # (/ is the page, not /static/)

    def directoryListing(self):
        return self.childNotFound

    def render(self, request):
        request.setHeader(b"Content-Security-Policy", POLICY)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"no-cache")
        return File.render(self, request)


class _Root(Resource):
    """
    C{/}: the page; C{/static/...}: its script and style.
    """

    def __init__(self):
        Resource.__init__(self)
        self.files = _Files(STATIC, defaultType="application/octet-stream")
        self.putChild(b"static", self.files)

    def getChild(self, name, request):
        if name in (b"", b"index.html"):
            return self.files.getChild(b"index.html", request)
        return self.files.childNotFound


def resource():
    """
    @return: the L{IResource} of the dashboard, mounted at C{/}.
    """
    return _Root()
