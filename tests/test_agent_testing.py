"""
The public fakes of the agent's seams provide their interfaces and behave
as the agent expects.
"""

from twisted.trial import unittest
from zope.interface.verify import verifyClass, verifyObject

from p2twisted.agent.interfaces import (
    IArtifactFetcher, IPodOperations, ISupervisor, ServiceSpec)
from p2twisted.agent.pods import PodOperations
from p2twisted.agent.testing import FakeFetcher, FakePods, FakeSupervisor
from p2twisted.errors import DigestMismatch, FetchError


class InterfaceTests(unittest.TestCase):

    def test_fakePods(self):
        self.assertTrue(verifyObject(IPodOperations, FakePods()))

    def test_podOperations(self):
        """
        The real pod operations declare and provide the interface the agent
        uses (no C{getattr} probing).
        """
        self.assertTrue(verifyClass(IPodOperations, PodOperations))
        self.assertTrue(IPodOperations.implementedBy(PodOperations))

    def test_fakeSupervisor(self):
        self.assertTrue(verifyObject(ISupervisor, FakeSupervisor()))

    def test_fakeFetcher(self):
        self.assertTrue(verifyObject(IArtifactFetcher, FakeFetcher()))


class FakeSupervisorTests(unittest.TestCase):

    def test_lifecycle(self):
        """
        A started service is running and listed; stopped, it is down but
        defined; removed, it is unknown.
        """
        sup = FakeSupervisor()
        spec = ServiceSpec(name="web__app__launch", argv=["true"])
        status = self.successResultOf(sup.start(spec))
        self.assertTrue(status.running)
        self.assertEqual(self.successResultOf(sup.services()), ["web__app__launch"])
        self.successResultOf(sup.stop(spec.name, 1.0))
        self.assertFalse(self.successResultOf(sup.status(spec.name)).running)
        self.successResultOf(sup.remove(spec.name, 1.0))
        self.assertIsNone(self.successResultOf(sup.status(spec.name)))
        self.assertEqual(self.successResultOf(sup.services()), [])


class FakeFetcherTests(unittest.TestCase):

    def test_answers(self):
        fetcher = FakeFetcher({"file:///a.tar.gz": ("/cache/x", "ab" * 32)})
        self.assertEqual(self.successResultOf(fetcher.fetch("file:///a.tar.gz", "ab" * 32)),
                         ("/cache/x", "ab" * 32))
        self.failureResultOf(fetcher.fetch("file:///a.tar.gz", "cd" * 32), DigestMismatch)
        self.failureResultOf(fetcher.fetch("file:///b.tar.gz"), FetchError)
        self.assertEqual(fetcher.fetched, ["file:///a.tar.gz"] * 2 + ["file:///b.tar.gz"])
