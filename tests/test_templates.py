"""
Tests for L{p2twisted.templates}: discovery, settings, deterministic
rendering.
"""

import os
import tarfile

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from p2twisted.manifest import parseManifest
from p2twisted.templates import (
    ITemplate, SettingsError, UnknownTemplate, allTemplates, closestOption, getTemplate)

SETTINGS = {
    "static": {"port": 8081, "directory": "/srv/www"},
    "command": {"command": "sleep 1000", "port": 9000},
    "python": {"wsgi": "app:application", "requirements": "six==1.16.0"},
}


class DiscoveryTests(unittest.TestCase):
    def test_builtins(self):
        """
        The built-in templates are there, and each provides L{ITemplate}.
        """
        templates = allTemplates()
        self.assertTrue({"static", "command", "python"} <= set(templates))
        for template in templates.values():
            self.assertTrue(verifyObject(ITemplate, template))

    def test_unknownListsKnown(self):
        e = self.assertRaises(UnknownTemplate, getTemplate, "statik")
        self.assertIn("did you mean static?", str(e))
        self.assertIn("command, python, static", str(e))

    def test_entryPoint(self):
        """
        A template registered under the C{p2twisted.templates} entry point
        group is found.
        """
        from importlib import metadata
        import p2twisted.templates as module
        entry = metadata.EntryPoint("mine", "p2twisted.templates.command:template",
                                    module.ENTRY_POINT_GROUP)
        self.patch(module, "_entryPoints", lambda: [entry])
        self.assertIn("mine", allTemplates())


class SettingsTests(unittest.TestCase):
    def test_defaults(self):
        settings = getTemplate("static").settings({"directory": "/srv"})
        self.assertEqual(settings["port"], 8080)

    def test_coerced(self):
        self.assertEqual(getTemplate("static").settings(
            {"directory": "/srv", "port": "9000"})["port"], 9000)

    def test_badInteger(self):
        e = self.assertRaises(SettingsError, getTemplate("static").settings,
                              {"directory": "/srv", "port": "eighty"})
        self.assertIn("--port must be an integer", str(e))

    def test_required(self):
        e = self.assertRaises(SettingsError, getTemplate("command").settings, {})
        self.assertIn("needs --command", str(e))

    def test_mistyped(self):
        e = self.assertRaises(SettingsError, getTemplate("static").settings,
                              {"directory": "/srv", "prot": "1"})
        self.assertIn("did you mean --port?", str(e))
        self.assertEqual(closestOption("status-pth", getTemplate("command").options),
                         "status_path")

    def test_pythonNeedsOneEntryPoint(self):
        self.assertRaises(SettingsError, getTemplate("python").settings, {})
        self.assertRaises(SettingsError, getTemplate("python").settings,
                          {"wsgi": "a:b", "module": "c"})


class RenderTests(unittest.TestCase):
    def render(self, name, settings, service="svc", directory=None):
        directory = directory or os.path.abspath(self.mktemp())
        raw = getTemplate(name).render(service, settings, directory, "file://" + directory)
        return parseManifest(raw), directory

    def test_deterministic(self):
        """
        The same settings give the same manifest SHA, and the same artifact
        bytes in a fresh directory too; other settings give another SHA.
        """
        for name, settings in SETTINGS.items():
            first, dir1 = self.render(name, settings)
            second, _ = self.render(name, settings, directory=dir1)
            self.assertEqual(first.sha(), second.sha(), name)
            _, dir2 = self.render(name, settings)
            self.assertEqual(sorted(os.listdir(dir1)), sorted(os.listdir(dir2)))
            changed = dict(settings, port=12345)
            third, _ = self.render(name, changed, directory=dir1)
            self.assertNotEqual(first.sha(), third.sha(), name)
            self.assertEqual(first.warnings, ())

    def test_manifest(self):
        manifest, directory = self.render("static", SETTINGS["static"], "web")
        self.assertEqual(manifest.id, "web")
        self.assertEqual(manifest.config["settings"]["port"], 8081)
        launchable = manifest.launchables["app"]
        self.assertEqual(launchable.env["PORT"], "8081")
        self.assertEqual(manifest.status.port, 8081)
        path = launchable.location[len("file://"):]
        self.assertTrue(os.path.exists(path))
        with tarfile.open(path) as archive:
            names = archive.getnames()
        self.assertIn("bin/launch", names)
        self.assertIn("serve.py", names)

    def test_pythonTasks(self):
        manifest, _ = self.render("python", SETTINGS["python"])
        path = manifest.launchables["app"].location[len("file://"):]
        with tarfile.open(path) as archive:
            names = archive.getnames()
            requirements = archive.extractfile("requirements.txt").read()
        self.assertIn("tasks/install", names)
        self.assertIn("tasks/packages", names)
        self.assertEqual(requirements, b"six==1.16.0\n")


class BrokenPluginTests(unittest.TestCase):

    def test_brokenPluginLogged(self):
        """
        A template plugin that cannot be loaded is skipped, and its error is
        logged with its traceback rather than dropped.
        """
        from importlib import metadata
        import p2twisted.templates as module
        entry = metadata.EntryPoint("broken", "p2twisted.templates.nonexistent_module:template",
                                    module.ENTRY_POINT_GROUP)
        self.patch(module, "_entryPoints", lambda: [entry])
        self.assertNotIn("broken", allTemplates())
        self.assertEqual(len(self.flushLoggedErrors(ImportError)), 1)


class PodAddressTests(unittest.TestCase):
    """
    The built-in servers listen where the agent's health check and other
    nodes reach the pod: the node's pod address, unless C{--bind} says.
    """

    def serve(self, **env):
        import socket
        import subprocess
        import sys
        from p2twisted.templates.base import resource
        script = self.mktemp()
        with open(script, "wb") as f:
            f.write(resource("static_serve.py"))
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        environ = {name: value for name, value in os.environ.items()
                   if name not in ("BIND", "POD_ADDRESS")}
        environ.update(env, PORT=str(port), DIRECTORY=os.path.abspath("."))
        process = subprocess.Popen([sys.executable, script], env=environ,
                                   stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        self.addCleanup(process.stderr.close)
        process.stderr.readline()  # "serving ..." once it listens
        return port

    def get(self, address, port):
        import urllib.request
        with urllib.request.urlopen("http://%s:%d/_status" % (address, port), timeout=10) as r:
            return r.status

    def test_podAddress(self):
        """
        With no C{--bind}, the static server listens on C{$POD_ADDRESS}
        (and not on 127.0.0.1).
        """
        port = self.serve(POD_ADDRESS="127.0.0.3")
        self.assertEqual(self.get("127.0.0.3", port), 200)
        self.assertRaises(OSError, self.get, "127.0.0.1", port)

    def test_bindWins(self):
        """
        C{--bind} (C{$BIND}) overrides the pod address.
        """
        port = self.serve(POD_ADDRESS="127.0.0.3", BIND="127.0.0.4")
        self.assertEqual(self.get("127.0.0.4", port), 200)
        self.assertRaises(OSError, self.get, "127.0.0.3", port)

    def test_noBindSetting(self):
        """
        A service that leaves C{--bind} unset passes no C{BIND} to its pod.
        """
        for name in ("static", "python"):
            env = getTemplate(name).env("svc", getTemplate(name).settings(SETTINGS[name]))
            self.assertNotIn("BIND", env)
