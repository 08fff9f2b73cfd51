"""
Run the p2 'python' template's app: a WSGI application ($WSGI =
"module:callable", served on $BIND:$PORT with GET /_status answering 200) or
a module ($MODULE, run as __main__).
"""

import importlib
import os
import runpy
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


def withStatus(app):
    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") == "/_status":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        return app(environ, start_response)
    return wrapped


class QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        # The agent's health check asks every second: only its failures are news.
        if self.path == "/_status" and str(getattr(code, "value", code))[:1] == "2":
            return
        super().log_request(code, size)

    def log_message(self, format, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


def _address():
    """
    Where to listen: the service's --bind, else the node's pod address (the
    agent's health check and other nodes reach the pod there).
    """
    return os.environ.get("BIND") or os.environ.get("POD_ADDRESS") or "127.0.0.1"


def main():
    for path in reversed([p for p in os.environ.get("APP_PATH", "").split(":") if p]):
        sys.path.insert(0, path)
    if os.environ.get("WSGI"):
        moduleName, _, name = os.environ["WSGI"].partition(":")
        app = getattr(importlib.import_module(moduleName), name or "application")
        server = make_server(_address(), int(os.environ["PORT"]),
                             withStatus(app), handler_class=QuietHandler)
        sys.stderr.write("serving %s on port %s\n" % (os.environ["WSGI"], os.environ["PORT"]))
        sys.stderr.flush()
        server.serve_forever()
    else:
        runpy.run_module(os.environ["MODULE"], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
