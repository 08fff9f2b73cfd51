# -*- test-case-name: tests.test_web_api -*-
"""
The klein application of C{twistd p2-api}: JSON under C{/api/v1/} read
from the store through the read model (L{Snapshot}, turned into dicts by
L{p2twisted.web.views} only), the dashboard at C{/}
(L{p2twisted.web.dashboard}) and its event stream at C{/api/v1/events}
(L{p2twisted.web.events}).
"""

import json

from klein import Klein
from twisted.internet import defer

from p2twisted.orchestrate.snapshot import Snapshot
from p2twisted.web import views


def _json(request, value, code=200):
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(value, sort_keys=True, indent=2).encode() + b"\n"


class NotFound(Exception):
    """
    An unknown object: answered 404 with C{{"error": message}}.
    """


class API(object):
    """
    The HTTP API over one open store.

    @param store: an open L{IStore}.
    """

    app = Klein()

    def __init__(self, store):
        self.store = store
        self._events = None

    def resource(self):
        """@return: the L{IResource} serving everything."""
        return self.app.resource()

    def _read(self):
        return Snapshot.read(self.store, views.API_TREES)

    # -- errors ------------------------------------------------------------

    @app.handle_errors(NotFound)
    def _notFound(self, request, failure):
        return _json(request, {"error": str(failure.value)}, 404)

    # -- the dashboard -----------------------------------------------------

    @app.route("/", branch=True, methods=["GET", "HEAD"])
    def dashboard(self, request):
        from p2twisted.web import dashboard
        return dashboard.resource()

    @app.route("/api/v1/events", methods=["GET"])
    def events(self, request):
        if self._events is None:
            from p2twisted.web.events import EventStream
            self._events = EventStream(self.store)
        return self._events.render(request)

    # -- reads -------------------------------------------------------------

    @app.route("/api/v1/nodes", methods=["GET"])
    @defer.inlineCallbacks
    def nodes(self, request):
        snapshot = yield self._read()
        return _json(request, {"nodes": views.nodes(snapshot)})

    @app.route("/api/v1/nodes/<name>", methods=["GET"])
    @defer.inlineCallbacks
    def node(self, request, name):
        snapshot = yield self._read()
        if name not in snapshot.nodes():
            raise NotFound("there is no node %s" % (name,))
        return _json(request, views.node(snapshot, name))

    @app.route("/api/v1/pods", methods=["GET"])
    @defer.inlineCallbacks
    def pods(self, request):
        snapshot = yield self._read()
        return _json(request, {"pods": views.pods(snapshot)})
