"""
The whole product on each engine (issue 12, item 6), with a replication
controller: real C{twistd p2-agent} processes, a real C{twistd
p2-orchestrator} and the real C{p2} command on a real etcd and on the
Consul test server (L{tests.consulserver}; no real Consul here).  The RC is
created, scaled up and down to nothing through C{p2 rc}, and the pods it
places answer over HTTP and report their health on every step.  (The same
stories run on the local store and ZooKeeper in L{tests.test_fleet_e2e}.)
"""

import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.store import keys, openStore
from tests.consulserver import ConsulServer
from tests.store_contract import waitFor
from tests.test_fleet_e2e import FleetBase


class EngineRCMixin(FleetBase):
    """
    An RC's life on the engine of C{openStore()}.
    """

    timeout = 300

    @defer.inlineCallbacks
    def test_replicationController(self):
        """
        C{p2 rc create} of 2 replicas over three labelled nodes places two
        pods that serve and pass health; C{p2 rc scale web 3} adds the third;
        C{p2 rc scale web 0} removes them all; the orchestrator's status and
        audit record say so.
        """
        fleet = yield self.fleet()
        yield self.createRC(fleet, 2)
        yield fleet.waitFleet({"n1": "1", "n2": "1", "n3": None})
        self.assertEqual(sorted((yield fleet.podChanges())),
                         [("schedule", "n1"), ("schedule", "n2")])

        yield self.succeed("rc", "scale", "web", "3")
        yield fleet.waitFleet({"n1": "1", "n2": "1", "n3": "1"})

        @defer.inlineCallbacks
        def counted():
            status = yield fleet.status("rc", "web")
            return status is not None and (status["desired"], status["healthy"]) == (3, 3)
        yield fleet.waitKey(keys.status("rc", "web"))
        yield waitFor(counted, timeout=120, what="the RC's status to count 3 healthy pods")

        yield self.succeed("rc", "scale", "web", "0")
        yield fleet.waitFleet({"n1": None, "n2": None, "n3": None})
        self.assertEqual(sorted(a for a, _ in (yield fleet.podChanges())),
                         ["schedule"] * 3 + ["unschedule"] * 3)


class EtcdEngineTests(EngineRCMixin, unittest.TestCase):
    """
    On a real etcd (Debian's etcd-server).
    """

    def openStore(self):
        from tests.etcdserver import sharedServer
        self.url = sharedServer().url("/fleet-%s" % (uuid.uuid4().hex[:12],))
        return openStore(self.url, reactor)


class ConsulEngineTests(EngineRCMixin, unittest.TestCase):
    """
    On the Consul test server, in this process.
    """

    def openStore(self):
        server = ConsulServer(reactor, sessionTTLMin=0.5)
        server.start()
        self.addCleanup(server.stop)
        self.url = "consul://%s/p2" % (server.address,)
        return openStore(self.url, reactor)
