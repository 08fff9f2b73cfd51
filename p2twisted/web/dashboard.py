# -*- test-case-name: tests.test_web_api -*-
"""
The dashboard page served at C{/} by C{twistd p2-api} (a stub until the
dashboard lands: a plain page pointing at the API).
"""

from twisted.web.resource import Resource

PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>p2twisted</title></head>
<body><h1>p2twisted</h1><p>The JSON API is at <a href="/api/v1/nodes">/api/v1/</a>;
its description at <a href="/openapi.json">/openapi.json</a>.</p></body></html>
"""


class _Page(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return PAGE


def resource():
    """
    @return: the L{IResource} of the dashboard, mounted at C{/}.
    """
    return _Page()
