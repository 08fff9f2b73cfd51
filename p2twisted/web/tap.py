# -*- test-case-name: tests.test_web_tap -*-
"""
C{twistd p2-api}: options, settings, and the service serving
L{p2twisted.web.app.API} -- it listens at once (loopback by default) and
opens the store meanwhile, retrying while it cannot be reached (requests
are answered 503 until then).
"""

import attr
from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, endpoints, task
from twisted.logger import Logger
from twisted.python import usage

from p2twisted.errors import P2Error, UsageError
from p2twisted.listen import isLoopback, url  # noqa: F401 (url: p2 ui, tests)

log = Logger()

#: Where p2-api listens unless told: loopback only.
DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"

#: The most seconds between attempts to open the store.
MAX_RETRY = 30.0

class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Serve the p2 HTTP API (JSON under /api/v1/, /openapi.json) and the dashboard "
                "(/) over the coordination store. Binds loopback unless --listen says "
                "otherwise; writes need the bearer token in --token-file.")
    optParameters = [
        ["config", "c", None, "config file (YAML; only its store: is used)"],
        ["store", None, None, "coordination store URL (default: $P2_STORE, the config file, "
                              "else the embedded local store)"],
        ["listen", None, DEFAULT_LISTEN, "where to listen (a Twisted endpoint description)"],
        ["token-file", None, None, "a file holding the bearer token writes need (without "
                                   "it, writes are refused)"],
    ]

    def postOptions(self):
        try:
            self.settings = apiConfig(self["config"], self["store"], self["listen"],
                                      self["token-file"])
        except P2Error as e:
            raise usage.UsageError(str(e))

@attr.s(repr=False)
class APIConfig(object):
    """
    @ivar token: the bearer token (bytes), or C{None}; left out of C{repr}.
    """

    store = attr.ib()
    listen = attr.ib(default=DEFAULT_LISTEN)
    token = attr.ib(default=None)

    def __repr__(self):
        return "APIConfig(listen=%r, token=%s)" % (self.listen, "set" if self.token else None)

def readToken(path):
    """
    @return: the token in the file C{path} (bytes, surrounding whitespace
        removed).
    @raise UsageError: naming the file, when it cannot be read or is empty
        (never showing its content).
    """
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as e:
        raise UsageError("cannot read the token file %s: %s" % (path, e.strerror or e))
    if not token:
        raise UsageError("the token file %s is empty" % (path,))
    if len(token.split()) != 1:
        raise UsageError("the token file %s must hold one token (no spaces or lines)" % (path,))
    return token

def apiConfig(path=None, store=None, listen=None, tokenFile=None, environ=None):
    """
    @return: the L{APIConfig} of the config file at C{path} (its store) and
        the flags.
    @raise UsageError: for a bad token file or listen description.
    """
    from p2twisted.config import loadConfig
    listen = listen or DEFAULT_LISTEN
    try:
        endpoints.serverFromString(None, listen)  # parsed only: no reactor needed
    except (ValueError, TypeError, KeyError, OSError) as e:  # (OSError: ssl:'s key file)
        raise UsageError("--listen %s: %s; expected an endpoint like %s"
                         % (listen, e, DEFAULT_LISTEN))
    return APIConfig(store=loadConfig(path, environ).storeURL(store), listen=listen,
                     token=None if tokenFile is None else readToken(tokenFile))

class APIService(service.Service):
    """
    Listens for the API and opens its store.

    @param store: an open L{IStore} to use instead of opening
        C{config.store} (closed when the service stops).
    @param say: called with a line (text) when the store cannot be
        opened, and with another once it is after all (C{p2 ui} shows them;
        the log has every retry).
    @ivar api: the L{API}.
    @ivar listening: a L{Deferred} firing with the L{IListeningPort} once
        listening (failing when it cannot listen).
    """

    def __init__(self, config, reactor, store=None, say=None):
        from p2twisted.web.app import API
        self.config = config
        self.reactor = reactor
        self.say = say
        self.api = API(store, token=config.token, loopbackOnly=isLoopback(config.listen))
        self.listening = None
        self._port = None
        self._delays = backoffPolicy(1.0, MAX_RETRY)
        self._opening = None

    def privilegedStartService(self):
        """
        Listen (before twistd drops privileges); when that fails at once
        (the port is taken, not allowed), end C{twistd} with one line
        saying why rather than run serving nothing.
        """
        service.Service.privilegedStartService(self)
        self._listen()
        failed = []
        self.listening.addErrback(failed.append)
        if failed:
            raise SystemExit("p2-api cannot listen at %s: %s" % (
                self.config.listen, getattr(failed[0].value, "socketError", None)
                or failed[0].getErrorMessage()))

    def startService(self):
        service.Service.startService(self)
        if self.listening is None:
            self._listen()
        self._opening = self._open().addErrback(self._openFailed)

    def _listen(self):
        from twisted.web.server import Site

        from p2twisted.web.app import BoundedRequest
        if not isLoopback(self.config.listen):
            log.warn("p2-api listens at {listen}: not on loopback only; anyone who reaches it "
                     "reads the fleet", listen=self.config.listen)
        if self.config.token is None:
            log.info("p2-api has no --token-file: writes are refused")
        site = Site(self.api.resource(), requestFactory=BoundedRequest)
        site.displayTracebacks = False
        endpoint = endpoints.serverFromString(self.reactor, self.config.listen)
        self.listening = endpoint.listen(site)

        def listening(port):
            self._port = port
            address = port.getHost()
            log.info("p2-api serving at {url} from store {store}", url=url(address),
                     store=_shown(self.config.store), event="start")
            return port
        self.listening.addCallback(listening)

    def _openFailed(self, failure):
        if not failure.check(defer.CancelledError):
            log.failure("p2-api failed to open its store", failure)

    @defer.inlineCallbacks
    def _open(self):
        from p2twisted.store import openStore
        attempts = 0
        while self.api.store is None and self.running:
            try:
                store = yield openStore(self.config.store, self.reactor)
            except Exception as e:
                delay = self._delays(attempts)
                attempts += 1
                log.warn("cannot open store {url}: {error}; retrying in {delay:.1f}s",
                         url=_shown(self.config.store), error=str(e), delay=delay)
                if attempts == 1 and self.say is not None:
                    self.say("cannot reach the store %s: %s; retrying every %d s (backing off "
                             "to %d s); the API answers 503 meanwhile"
                             % (_shown(self.config.store), e, int(delay), MAX_RETRY))
                yield task.deferLater(self.reactor, delay, lambda: None)
                continue
            if not self.running:
                yield store.close()
                return
            self.api.store = store
            if attempts and self.say is not None:
                self.say("connected to the store %s" % (_shown(self.config.store),))

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        if self._opening is not None:
            self._opening.cancel()  # a wait to retry opening the store
        if self._port is not None:
            port, self._port = self._port, None
            yield port.stopListening()
        self.api.stop()
        if self.api.store is not None:
            store, self.api.store = self.api.store, None
            yield store.close()
        log.info("p2-api stopped", event="stop")

def _shown(storeURL):
    from p2twisted.web.views import safeURL
    return safeURL(storeURL)

def makeService(options, reactor=None):
    """
    @return: the p2-api L{IService}.
    """
    if reactor is None:
        from twisted.internet import reactor
    return APIService(options.settings, reactor)
