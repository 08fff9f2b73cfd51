"""
Helper processes that a test starts and waits for: running until they print
a marker, killed at cleanup.
"""

import signal

from twisted.internet import defer, protocol, reactor


class _UntilMarker(protocol.ProcessProtocol):
    """
    Fires C{ready} once C{marker} is in the output (stdout or stderr),
    C{ended} when the process exits.
    """

    def __init__(self, marker):
        self.marker = marker
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        self.output = b""

    def outReceived(self, data):
        self.output += data
        if not self.ready.called and self.marker in self.output:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(AssertionError("%s ended before saying %r: %s" % (
                self.name, self.marker, self.output.decode("utf-8", "replace").strip())))
        self.ended.callback(None)


@defer.inlineCallbacks
def startUntil(testCase, marker, executable, argv, env, timeout=30.0):
    """
    Start C{argv} and wait until it prints C{marker}; it is killed (SIGKILL)
    when C{testCase} ends.

    @return: L{Deferred} firing with a function that kills it now and
        returns a L{Deferred} firing once it has exited; failing if it exits
        before printing C{marker}, or at C{timeout} seconds.
    """
    proto = _UntilMarker(marker)
    proto.name = argv[0]
    transport = reactor.spawnProcess(proto, executable, argv, env=env)

    def kill():
        if not proto.ended.called:
            try:
                transport.signalProcess(signal.SIGKILL)
            except Exception:
                pass
        return proto.ended
    testCase.addCleanup(kill)
    yield proto.ready.addTimeout(timeout, reactor)
    return kill
