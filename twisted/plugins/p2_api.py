"""
The C{twistd p2-api} plugin: the HTTP API and dashboard
(L{p2twisted.web.tap}).
"""

from twisted.application.service import ServiceMaker

p2api = ServiceMaker(
    "p2 HTTP API", "p2twisted.web.tap",
    "Serve the fleet's JSON API and dashboard over the coordination store.", "p2-api")
