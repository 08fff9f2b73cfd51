"""
A tiny WSGI application for C{make demo}'s python service:
C{p2 add hello --template python --path .../templates/files --wsgi demo_hello:application}.
"""

import sys


def application(environ, start_response):
    body = ("hello from a p2 python service (Python %s)\n" % (sys.version.split()[0],)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
