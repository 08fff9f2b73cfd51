"""
Real headless Chromium for tests, driven through its DevTools protocol over
a pipe (C{--remote-debugging-pipe}: JSON messages ending in a NUL byte,
commands on the browser's fd 3, answers and events on its fd 4) -- so no
websocket client is needed.

A test calls L{launch} (which skips, or fails under
C{P2_REQUIRE_REAL_SERVERS=1}, when there is no Chromium), opens a
L{Page}, and waits on the page with L{Page.waitFor}: a JavaScript condition
re-checked on every change of the page's DOM (no polling, no sleeping),
with a timeout.  The browser runs with a profile (and C{HOME}) of the
test's own and is closed (killed if it will not close) when the test ends.
"""

import base64
import itertools
import json
import os
import shutil

from twisted.internet import defer, error, protocol, reactor

from tests.servers import requireServer

#: What the browser is called, in the order looked for.
NAMES = ("chromium", "chromium-browser")

#: Flags for a browser that stays quiet and leaves nothing behind.
FLAGS = ("--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe")

#: Wait until the expression C{%s} is truthy, checking it now and after each
#: change of the DOM; resolves with its value.
_WAIT = """new Promise((resolve) => {
  const check = () => { try { return (%s); } catch (e) { return null; } };
  const first = check();
  if (first) { resolve(first); return; }
  const observer = new MutationObserver(() => {
    const value = check();
    if (value) { observer.disconnect(); resolve(value); }
  });
  observer.observe(document, {subtree: true, childList: true, attributes: true,
                              characterData: true});
})"""


class ChromiumError(Exception):
    """
    The browser answered a command with an error, or a script threw.
    """


def findChromium():
    """
    @return: the path of the Chromium executable.
    @raise unittest.SkipTest: when there is none (L{MissingServer} under
        C{P2_REQUIRE_REAL_SERVERS=1}).
    """
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    requireServer("chromium", "no chromium on PATH", install="apt-get install chromium")


class _Pipe(protocol.ProcessProtocol):

    def __init__(self, browser):
        self.browser = browser
        self.buffer = b""
        self.errors = b""

    def childDataReceived(self, fd, data):
        if fd != 4:
            self.errors = (self.errors + data)[-4000:]
            return
        self.buffer += data
        while b"\0" in self.buffer:
            message, self.buffer = self.buffer.split(b"\0", 1)
            self.browser._received(json.loads(message.decode("utf-8")))

    def processEnded(self, reason):
        self.browser._ended(reason)


class Chromium(object):
    """
    A running headless Chromium.

    @ivar version: what C{Browser.getVersion} said.
    """

    def __init__(self, clock=reactor):
        self.clock = clock
        self.pipe = _Pipe(self)
        self._ids = itertools.count(1)
        self._pending = {}
        self._listeners = []
        self._exited = defer.Deferred()
        self.running = False

    @classmethod
    @defer.inlineCallbacks
    def launch(cls, test, clock=reactor):
        """
        Start a browser for C{test}, closed when the test ends.

        @return: L{Deferred} firing with the L{Chromium}.
        """
        executable = findChromium()
        profile = os.path.abspath(test.mktemp())
        os.makedirs(profile)
        args = [executable] + list(FLAGS) + ["--user-data-dir=" + profile, "about:blank"]
        if os.getuid() == 0:
            args.insert(1, "--no-sandbox")  # (Chromium's sandbox refuses root)
        browser = cls(clock)
        browser.process = reactor.spawnProcess(
            browser.pipe, executable, args, env=dict(os.environ, HOME=profile),
            childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"})
        browser.running = True
        test.addCleanup(browser.close)
        browser.version = yield browser.send("Browser.getVersion")
        return browser

    # -- the protocol --------------------------------------------------------

    def send(self, method, params=None, session=None, timeout=60):
        """
        Send the command C{method}.

        @param session: the page's session id, for a page's command.
        @return: L{Deferred} firing with its result (a dict); failing with
            L{ChromiumError}, or C{TimeoutError} after C{timeout} seconds.
        """
        if not self.running:
            return defer.fail(ChromiumError("%s: the browser is not running (%s)"
                                            % (method, self.pipe.errors[-500:])))
        messageId = next(self._ids)
        message = {"id": messageId, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        d = self._pending[messageId] = defer.Deferred()
        self.process.writeToChild(3, json.dumps(message).encode("utf-8") + b"\0")
        return d.addTimeout(timeout, self.clock)

    def _received(self, message):
        if "id" in message:
            d = self._pending.pop(message["id"], None)
            if d is None:
                return
            if "error" in message:
                d.errback(ChromiumError(message["error"].get("message", message["error"])))
            else:
                d.callback(message.get("result", {}))
            return
        for listener in list(self._listeners):
            method, session, d = listener
            if message.get("method") == method and message.get("sessionId") == session:
                self._listeners.remove(listener)
                d.callback(message.get("params", {}))

    def event(self, method, session=None, timeout=60):
        """
        @return: L{Deferred} firing with the parameters of the next event
            C{method} (of the page C{session}).
        """
        d = defer.Deferred()
        self._listeners.append((method, session, d))
        return d.addTimeout(timeout, self.clock)

    def _ended(self, reason):
        self.running = False
        for d in list(self._pending.values()):
            d.errback(ChromiumError("the browser exited (%s)" % (self.pipe.errors[-500:],)))
        self._pending.clear()
        self._exited.callback(None)

    # -- pages ---------------------------------------------------------------

    @defer.inlineCallbacks
    def newPage(self, width=1100, height=720):
        """
        Open a tab of C{width} x C{height} CSS pixels.

        @return: L{Deferred} firing with its L{Page}.
        """
        target = yield self.send("Target.createTarget", {"url": "about:blank"})
        attached = yield self.send("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        yield page.send("Page.enable")
        yield page.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page

    @defer.inlineCallbacks
    def close(self):
        """
        Close the browser (kill it if it does not go within 15 seconds).
        """
        if not self.running:
            return
        exited = self._exited
        try:
            yield self.send("Browser.close", timeout=15)
        except Exception:
            pass
        timer = self.clock.callLater(15, self._kill)
        yield exited
        if timer.active():
            timer.cancel()

    def _kill(self):
        try:
            self.process.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass


class Page(object):
    """
    One tab of a L{Chromium}.
    """

    def __init__(self, browser, session):
        self.browser = browser
        self.session = session

    def send(self, method, params=None, timeout=60):
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    @defer.inlineCallbacks
    def navigate(self, url, timeout=60):
        """
        Load C{url} and wait for its C{load} event.
        """
        loaded = self.browser.event("Page.loadEventFired", self.session, timeout)
        result = yield self.send("Page.navigate", {"url": url}, timeout)
        if result.get("errorText"):
            raise ChromiumError("%s: %s" % (url, result["errorText"]))
        yield loaded

    @defer.inlineCallbacks
    def evaluate(self, expression, timeout=60):
        """
        Run the JavaScript C{expression} in the page (awaiting it if it is a
        promise).

        @return: L{Deferred} firing with its value (JSON-able values only).
        """
        result = yield self.send("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True}, timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise ChromiumError("%s: %s" % (
                details.get("exception", {}).get("description") or details.get("text"),
                expression[:200]))
        return result["result"].get("value")

    @defer.inlineCallbacks
    def waitFor(self, condition, what, timeout=120):
        """
        Wait until the JavaScript expression C{condition} is truthy,
        checking it after every change of the page's DOM.

        @param what: what is awaited, for the failure message.
        @return: L{Deferred} firing with the condition's value; failing
            after C{timeout} seconds with what the page showed.
        """
        try:
            value = yield self.evaluate(_WAIT % (condition,), timeout)
        except defer.TimeoutError:
            shown = yield self.evaluate("document.body.innerText")
            raise AssertionError("timed out after %ds waiting for %s; the page shows:\n%s"
                                 % (timeout, what, shown))
        return value

    @defer.inlineCallbacks
    def screenshot(self, path):
        """
        Save a PNG of what the page shows to C{path}.
        """
        result = yield self.send("Page.captureScreenshot", {"format": "png"})
        with open(path, "wb") as f:
            f.write(base64.b64decode(result["data"]))
        return path
