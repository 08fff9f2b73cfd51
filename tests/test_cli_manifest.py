"""
Tests for C{p2 manifest}, run as a real C{p2} process.
"""

import os
import subprocess
import sys

import yaml
from twisted.trial.unittest import SynchronousTestCase

from p2twisted.manifest import parseManifest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VALID = b"""\
id: billing-api   # the pod
launchables:
  web:
    launchable_type: hoist
    location: https://artifacts.example.com/web_3c021aff048ca8117593f9c71e03b87cf72fd440.tar.gz
    restart_timeout: 1m30s
    colour: red
config: {db: {host: db1.example.com}}
"""

INVALID = b"""\
launchables:
  web:
    launchable_type: docker
    restart_policy: sometimes
"""


class ManifestCommandTests(SynchronousTestCase):
    """
    C{p2 manifest check}, C{sha} and C{normalize}.
    """

    def write(self, data):
        """
        @return: the absolute path of a new file holding C{data}.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def p2(self, *args, stdin=b""):
        """
        Run C{p2 manifest ARGS...}.

        @return: C{(stdout, stderr, exit code)}, after checking that stderr
            has no traceback.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
        env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
        result = subprocess.run([sys.executable, "-m", "p2twisted.cli", "manifest"] + list(args),
                                input=stdin, capture_output=True, env=env, cwd=ROOT, timeout=60)
        out, err = result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
        self.assertNotIn("Traceback", err)
        return out, err, result.returncode

    def test_checkValid(self):
        """
        C{check} of a valid manifest prints C{ok: ID SHA}, with warnings on
        standard error, and exits 0.
        """
        path = self.write(VALID)
        out, err, code = self.p2("check", path)
        self.assertEqual((out, code), ("ok: billing-api %s\n" % (parseManifest(VALID).sha(),), 0))
        self.assertEqual(err, "warning: %s: launchables.web.colour: unknown field; ignored\n"
                         % (path,))

    def test_checkInvalid(self):
        """
        C{check} of an invalid manifest lists every problem, one a line,
        after the file name, and exits 1.
        """
        path = self.write(INVALID)
        out, err, code = self.p2("check", path)
        self.assertEqual((out, code), ("", 1))
        self.assertEqual(err.splitlines(), [path + ": " + problem for problem in [
            "id: required",
            "launchables.web: needs exactly one of location or version, got neither",
            "launchables.web.launchable_type: expected a supported launchable type (hoist), "
            "got 'docker'",
            "launchables.web.restart_policy: expected always or never, got 'sometimes'",
        ]])

    def test_checkGarbage(self):
        """
        C{check} of bytes that are not YAML fails with a one-line problem.
        """
        for data in (b"", b"\xff\xfe\x00garbage", b"id: [unclosed\n", b"- a list\n"):
            out, err, code = self.p2("check", self.write(data))
            self.assertEqual((out, code, len(err.splitlines())), ("", 1, 1), err)

    def test_checkStdin(self):
        """
        C{-} reads standard input, named C{<stdin>} in messages.
        """
        self.assertEqual(self.p2("check", "-", stdin=VALID)[0],
                         "ok: billing-api %s\n" % (parseManifest(VALID).sha(),))
        out, err, code = self.p2("check", "-", stdin=INVALID)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("<stdin>: id: required\n"), err)

    def test_missingFile(self):
        """
        A file that cannot be read is a one-line error and exit code 1.
        """
        path = os.path.abspath(self.mktemp())
        for command in ("check", "sha", "normalize"):
            out, err, code = self.p2(command, path)
            self.assertEqual((out, err, code), (
                "", "p2: cannot read %s: No such file or directory\n" % (path,), 1))

    def test_sha(self):
        """
        C{sha} prints the hex digest only.
        """
        out, err, code = self.p2("sha", self.write(VALID))
        self.assertEqual((out, err, code), (parseManifest(VALID).sha() + "\n", "", 0))

    def test_shaInvalid(self):
        """
        C{sha} of an invalid manifest prints its problems on one line and
        exits 1.
        """
        path = self.write(INVALID)
        out, err, code = self.p2("sha", path)
        self.assertEqual((out, code), ("", 1))
        self.assertEqual(len(err.splitlines()), 1)
        self.assertTrue(err.startswith("p2: %s: id: required; launchables.web: " % (path,)), err)

    def test_normalize(self):
        """
        C{normalize} prints the canonical YAML, which has the same SHA.
        """
        out, err, code = self.p2("normalize", self.write(VALID))
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(out.encode("utf-8"), parseManifest(VALID).canonicalYAML())
        self.assertEqual(yaml.safe_load(out)["launchables"]["web"]["restart_timeout"], 90.0)
        self.assertEqual(self.p2("sha", "-", stdin=out.encode("utf-8"))[0],
                         parseManifest(VALID).sha() + "\n")

    def test_noCommand(self):
        """
        C{p2 manifest} alone is a usage error.
        """
        out, err, code = self.p2()
        self.assertEqual((out, code), ("", 2))
        self.assertIn("needs a command: check, sha or normalize", err)

    def test_help(self):
        """
        C{p2 manifest --help} names the commands.
        """
        out, err, code = self.p2("--help")
        self.assertEqual(code, 0)
        for command in ("check", "sha", "normalize"):
            self.assertIn(command, out)
