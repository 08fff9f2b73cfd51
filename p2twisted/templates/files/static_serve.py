"""
Serve $DIRECTORY over HTTP on $BIND (else $POD_ADDRESS):$PORT; GET /_status answers 200.
Shipped in the artifact of the p2 'static' template; runs on the system Python.
"""

import functools
import http.server
import os
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?", 1)[0] == "/_status":
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        return super().do_GET()

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
    directory = os.environ["DIRECTORY"]
    handler = functools.partial(Handler, directory=directory)
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer(
        (_address(), int(os.environ["PORT"])), handler)
    sys.stderr.write("serving %s on port %s\n" % (directory, os.environ["PORT"]))
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
