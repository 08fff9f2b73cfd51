# -*- test-case-name: tests.test_web_tap -*-
"""
C{p2 ui}: serve the HTTP API and the dashboard from this process
(L{p2twisted.web.tap.APIService}, as C{twistd p2-api} does) on loopback,
print the URL, and run until interrupted.
"""

from twisted.internet import defer

from p2twisted.errors import P2Error, UsageError


def register(subparsers):
    ui = subparsers.add_parser(
        "ui", help="serve the dashboard and API here and print the URL",
        description="Serve the fleet's dashboard and JSON API (as 'twistd p2-api' does) on "
                    "this machine's loopback, print the URL to open, and run until Ctrl-C. "
                    "Writes need the bearer token of --token-file; without it the API is "
                    "read-only.")
    ui.add_argument("--port", type=int, default=8080, metavar="PORT",
                    help="loopback port (default 8080; 0 picks a free one)")
    ui.add_argument("--listen", default=None, metavar="ENDPOINT",
                    help="a Twisted endpoint instead of --port, e.g. "
                         "tcp:8080:interface=0.0.0.0 (not loopback: anyone reaching it reads "
                         "the fleet)")
    ui.add_argument("--token-file", default=None, metavar="FILE",
                    help="a file holding the bearer token that writes need")
    ui.set_defaults(run=runUI)


@defer.inlineCallbacks
def runUI(options):
    from twisted.internet.error import CannotListenError

    from p2twisted.web.tap import APIService, apiConfig, url
    if not 0 <= options.port <= 65535:
        raise UsageError("--port must be from 0 to 65535, got %d" % (options.port,))
    listen = options.listen or "tcp:%d:interface=127.0.0.1" % (options.port,)
    config = apiConfig(options.config, options.store, listen, options.token_file)
    reactor = options.reactor

    def say(line):
        options.err.write("p2 ui: %s\n" % (line,))
        options.err.flush()
    service = APIService(config, reactor, say=say)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    try:
        port = yield service.listening
    except CannotListenError as e:
        yield service.stopService()
        raise P2Error("cannot listen at %s: %s" % (listen, e.socketError or e))
    options.out.write("p2 ui: the dashboard is at %s (API under /api/v1/, %s); Ctrl-C stops "
                      "it\n" % (url(port.getHost()), "writes need the token of %s"
                                % (options.token_file,) if config.token else "read-only"))
    options.out.flush()
    yield defer.Deferred()  # until Ctrl-C stops the reactor
