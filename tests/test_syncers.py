"""
The syncer seam: discovery through the C{p2twisted.syncers} entry points,
and the C{json} syncer's service-discovery files (written atomically).
"""

import json
import os

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from p2twisted.orchestrate.podcluster import Member
from p2twisted.orchestrate.syncers import (
    IPodClusterSyncer, MemorySyncer, SyncerError, available, loadSyncers)
from p2twisted.records.podcluster import PodCluster
from p2twisted.syncers.jsonfile import JSONFileSyncer

PC = PodCluster("web-az1-prod", "web", "az1", "prod", annotations={"port": 8080})
MEMBERS = [Member("n1", "web", "10.0.0.1:8080", True), Member("n2", "web", "10.0.0.2:8080", False)]


class DiscoveryTests(unittest.TestCase):

    def test_entryPoints(self):
        """The built-in syncers are found through the entry-point group."""
        self.assertTrue({"haproxy", "json"} <= set(available()))
        found = loadSyncers({"json": {"directory": "x"}}, None)
        self.assertEqual([type(s) for s in found], [JSONFileSyncer])
        self.assertEqual(found[0].name, "json")

    def test_plugin(self):
        """A syncer of another package is loaded by the name it is given."""
        found = loadSyncers({"mine": None}, None,
                            known={"mine": lambda settings, reactor: MemorySyncer()})
        self.assertEqual(found[0].name, "mine")
        self.assertTrue(verifyObject(IPodClusterSyncer, found[0]))

    def test_badSettings(self):
        """Settings that are no mapping are a one-line error naming them."""
        for settings, named in (([], "syncers: expected a mapping"),
                                ({"json": 3}, "syncers.json: expected a mapping"),
                                ({"json": {}}, "syncers.json.directory is required"),
                                ({"json": {"directory": 5}}, "syncers.json.directory")):
            e = self.assertRaises(SyncerError, loadSyncers, settings, None)
            self.assertIn(named, str(e))


class JSONFileTests(unittest.TestCase):

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        self.syncer = JSONFileSyncer(os.path.join(self.directory, "sd"))

    def test_syncAndDelete(self):
        """
        A sync writes the cluster, its members and its healthy addresses to
        <id>.json (making the directory), leaving no temporary file; delete
        removes it; the syncer lists the clusters it holds.
        """
        self.assertTrue(verifyObject(IPodClusterSyncer, self.syncer))
        self.successResultOf(self.syncer.sync(PC, MEMBERS))
        path = os.path.join(self.directory, "sd", "web-az1-prod.json")
        with open(path) as f:
            data = json.load(f)
        self.assertEqual(data["healthy"], ["10.0.0.1:8080"])
        self.assertEqual([m["node"] for m in data["members"]], ["n1", "n2"])
        self.assertEqual((data["pod_id"], data["availability_zone"], data["cluster_name"],
                          data["annotations"]), ("web", "az1", "prod", {"port": 8080}))
        self.assertEqual(os.listdir(os.path.dirname(path)), ["web-az1-prod.json"])
        self.assertEqual(self.successResultOf(self.syncer.initialClusters()), ["web-az1-prod"])
        self.successResultOf(self.syncer.delete("web-az1-prod"))
        self.successResultOf(self.syncer.delete("web-az1-prod"))
        self.assertEqual(self.successResultOf(self.syncer.initialClusters()), [])

    def test_unwritable(self):
        """A directory that cannot be made fails the sync, naming the path."""
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, "sd"), "w") as f:
            f.write("a file")
        failure = self.failureResultOf(self.syncer.sync(PC, MEMBERS), SyncerError)
        self.assertIn("cannot write", failure.getErrorMessage())
        self.assertIn("web-az1-prod.json", failure.getErrorMessage())
