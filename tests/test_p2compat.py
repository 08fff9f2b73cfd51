"""
P2's own material runs on p2twisted (issue 16): P2's test manifests pass
C{p2 manifest check}; P2's extraction test tarballs behave as P2's
C{pkg/gzip/gzip_test.go} expects; an artifact built like P2's
C{hoisted-hello} (a real HTTPS server with TLS of 2015) deployed from a
schemeless location passes its health check; a C{version:} launchable
without C{artifact_name} fails at deploy time naming the missing artifact
registry.  The files come from P2 (C{tests/p2data/README.rst}).
"""

import json
import os
import subprocess
import sys

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted import intent
from p2twisted.agent.install import Installer
from p2twisted.agent.layout import PodLayout
from p2twisted.errors import UnsafeArchive
from p2twisted.manifest import parseManifest
from p2twisted.store import keys, openStore
from tests.agentharness import AgentHarness, freePort
from tests.p2hello import (
    LOOPBACK, P2DATA, PAGE, buildHoistedHello, gnutlsServ, listeningAddresses)
from tests.reachable import reachableDirectory
from tests.store_contract import waitFor
from tests.test_agent_e2e import requireRunit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFESTS = os.path.join(P2DATA, "manifests")
TARBALLS = os.path.join(P2DATA, "gzip")

#: The file name of P2's hoisted-hello artifact (pkg/pods/testdata).
HELLO_NAME = "hoisted-hello_3c021aff048ca8117593f9c71e03b87cf72fd440.tar.gz"


class ManifestTests(unittest.SynchronousTestCase):
    """
    P2's test manifests, as they are.
    """

    def check(self, name):
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
        env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
        result = subprocess.run(
            [sys.executable, "-m", "p2twisted.cli", "manifest", "check",
             os.path.join(MANIFESTS, name)], capture_output=True, env=env, cwd=ROOT, timeout=60)
        return (result.returncode, result.stdout.decode("utf-8"),
                result.stderr.decode("utf-8"))

    def test_everyManifestPasses(self):
        """
        Every P2 test manifest passes C{p2 manifest check}: schemeless
        locations, a C{version} without C{artifact_name}; P2's
        C{launchable_id} (a field P2's own code does not read) is warned
        about, not refused.
        """
        names = sorted(os.listdir(MANIFESTS))
        self.assertEqual(len(names), 5)
        for name in names:
            code, out, err = self.check(name)
            self.assertEqual(code, 0, (name, out, err))
            self.assertIn("ok: hello" if "current" not in name else "ok: some-app", out)
            for line in err.splitlines():
                self.assertIn("launchable_id: unknown field; ignored", line)

    def test_readAsP2ReadsThem(self):
        """
        The locations are kept as written (relative paths, P2's meaning: a
        local file), and the artifact of a C{version} is named by its
        launchable id.
        """
        with open(os.path.join(MANIFESTS, "pods_test_manifest.yaml"), "rb") as f:
            hello = parseManifest(f.read())
        self.assertEqual(hello.launchables["app"].location, HELLO_NAME)
        with open(os.path.join(MANIFESTS, "preparer_test_current_manifest.yaml"), "rb") as f:
            current = parseManifest(f.read())
        version = current.launchables["some-app"].version
        self.assertEqual((version.id, version.artifactName, version.tags),
                         ("asdf", "some-app", {"directory": "deployable"}))


class ExtractionTests(unittest.TestCase):
    """
    P2's four extraction cases (C{pkg/gzip/gzip_test.go}), through the
    agent's installer and GNU tar.
    """

    timeout = 60

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        self.pod = PodLayout(os.path.join(self.root, "pods"), "pod")

    def install(self, name):
        return Installer(reactor).install(self.pod, "app", "1", os.path.join(TARBALLS, name))

    @defer.inlineCallbacks
    def test_selfHardLink(self):
        """
        C{a} then a hard link C{a} -> C{a} extracts: C{a} is there.
        """
        installDir = yield self.install("file_with_selflink.tar.gz")
        self.assertTrue(os.path.isfile(os.path.join(installDir, "a")))

    @defer.inlineCallbacks
    def test_fileWithoutDir(self):
        """
        C{a/b} without an entry for C{a/} extracts, its directory made.
        """
        installDir = yield self.install("file_without_dir.tar.gz")
        with open(os.path.join(installDir, "a", "b"), "rb") as f:
            self.assertEqual(len(f.read()), 1)

    @defer.inlineCallbacks
    def assertRefused(self, name, why, outside):
        e = yield self.assertFailure(self.install(name), UnsafeArchive)
        self.assertIn(why, str(e))
        self.assertFalse(os.path.lexists(os.path.join(self.pod.installsDir("app"), outside)))
        self.assertEqual(os.listdir(self.pod.installsDir("app")), [])

    def test_pathWithParent(self):
        """
        A C{../b} member is refused and nothing is written outside.
        """
        return self.assertRefused("path_with_parent.tar.gz", "'..'", "b")

    def test_escapingSymlink(self):
        """
        C{dir -> ..} then C{dir/file} is refused: nothing is written
        through the link.
        """
        return self.assertRefused("escaping_symlink.tar.gz",
                                  "through the symbolic link 'dir'", "file")


class DeployTests(unittest.TestCase):
    """
    An agent (runit, local store) deploying P2-style pods.
    """

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        requireRunit()
        gnutlsServ()
        # The artifact must be readable where the pods' user can reach it.
        self.drop = reachableDirectory(self, "p2-compat-")
        self.url = "local://%s/state.db" % (os.path.abspath(self.mktemp()),)
        self.store = yield openStore(self.url)
        self.addCleanup(self.store.close)

    def helloManifest(self, location, port):
        """
        A P2 manifest of the hello pod: its config gives the port (as P2's
        hello reads it), P2's legacy C{status_port}/C{status_http} fields
        ask for an HTTPS check.
        """
        return parseManifest((
            "id: hello\nrun_as: nobody\nlaunchables:\n  app:\n    launchable_type: hoist\n"
            "    launchable_id: app\n    location: %s\nconfig:\n  port: %d\n"
            "status_port: %d\nstatus_http: false\n" % (location, port, port)).encode("utf-8"))

    def health(self, podId="hello", node="n1"):
        def get():
            return self.store.get(keys.health(podId, node)).addCallback(
                lambda entry: entry and json.loads(entry.value.decode("utf-8")))
        return get

    @defer.inlineCallbacks
    def deployHello(self, location, **settings):
        harness = AgentHarness(self, self.url, **settings).start()
        port = freePort()
        manifest = self.helloManifest(location, port)
        yield intent.schedule(self.store, "n1", manifest)
        health = yield waitFor(lambda: self.health()().addCallback(
            lambda h: h if h and h["status"] == "passing" else None),
            timeout=60, what="hello's health to pass")
        self.assertEqual(health["sha"], manifest.sha())
        self.assertEqual(health["output"],
                         "GET https://127.0.0.1:%d/_status: HTTP 200 %s"
                         % (port, PAGE.decode("ascii").strip()))
        self.assertIn("0100007F", listeningAddresses(port))
        self.assertLessEqual(listeningAddresses(port), LOOPBACK)
        yield harness.whenConverged()
        reality = yield self.store.get(keys.reality("n1", "hello"))
        self.assertEqual(parseManifest(reality.value).sha(), manifest.sha())

    def test_hoistedHelloAbsolutePath(self):
        """
        An artifact like P2's hoisted-hello, named by an absolute path
        without a scheme, installs, runs under runit, and passes its HTTPS
        health check although its TLS lacks secure renegotiation.
        """
        path = os.path.join(self.drop, HELLO_NAME)
        buildHoistedHello(path)
        return self.deployHello(path)

    def test_hoistedHelloRelativePath(self):
        """
        A relative location, as in P2's test manifests, is found in the
        agent's C{artifact_dir}.
        """
        buildHoistedHello(os.path.join(self.drop, HELLO_NAME))
        return self.deployHello(HELLO_NAME, artifactDir=self.drop)

    @defer.inlineCallbacks
    def test_versionNeedsRegistry(self):
        """
        P2's manifest with a C{version} (and no C{artifact_name}) is
        accepted, and its deploy fails with one line naming the artifact
        registry it needs; nothing runs.
        """
        AgentHarness(self, self.url).start()
        with open(os.path.join(MANIFESTS, "preparer_test_current_manifest.yaml"), "rb") as f:
            manifest = parseManifest(f.read())
        yield intent.schedule(self.store, "n1", manifest)

        def failed():
            d = self.store.get(keys.status("pods", "n1", "some-app"))
            return d.addCallback(lambda e: e and json.loads(e.value.decode("utf-8")).get("error"))
        error = yield waitFor(failed, timeout=30, what="some-app's deploy to fail")
        self.assertIn("artifact registry", error)
        self.assertIn("some-app", error)
        self.assertNotIn("\n", error)
        self.assertIsNone((yield self.store.get(keys.reality("n1", "some-app"))))
