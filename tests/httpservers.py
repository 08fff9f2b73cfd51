"""
Test HTTP servers whose connections a test can see and close, so that the
reactor is clean when the test ends.
"""

from twisted.internet import defer
from twisted.protocols.policies import WrappingFactory


class TrackingFactory(WrappingFactory):
    """
    Tracks a server's connections, so a test can wait until they are all
    closed.
    """

    def __init__(self, wrapped):
        WrappingFactory.__init__(self, wrapped)
        self._emptied = []
        self.connections = 0

    def registerProtocol(self, p):
        WrappingFactory.registerProtocol(self, p)
        self.connections += 1

    def unregisterProtocol(self, p):
        WrappingFactory.unregisterProtocol(self, p)
        if not self.protocols:
            waiting, self._emptied = self._emptied, []
            for d in waiting:
                d.callback(None)

    def whenEmpty(self):
        """
        @return: L{Deferred} firing once no connection is open.
        """
        if not self.protocols:
            return defer.succeed(None)
        d = defer.Deferred()
        self._emptied.append(d)
        return d

    def closeAll(self):
        for p in list(self.protocols):
            p.transport.abortConnection()
        return self.whenEmpty()
