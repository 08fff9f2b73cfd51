# -*- test-case-name: tests.test_web_api -*-
"""
C{GET /api/v1/events}: the store's changes as Server-Sent Events (a stub
until the dashboard's event stream lands: it answers 503).
"""

import json


class EventStream(object):
    """
    The event stream of C{store}.

    @param store: an open L{IStore}.
    """

    def __init__(self, store):
        self.store = store

    def render(self, request):
        """
        Answer C{request} (a klein handler's return value).
        """
        request.setResponseCode(503)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"error": "the event stream is not available yet"}).encode() + b"\n"
