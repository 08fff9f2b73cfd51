"""
A pod's runtime files: config file, env dirs, the p2-exec command line (the
run_as accounts: tests.test_agent_users).
"""

import os
import pwd
import resource
import stat
import subprocess
import sys
import uuid

from twisted.trial import unittest

import p2twisted
from p2twisted.agent import fsutil, p2exec, runtime
from p2twisted.agent.layout import PodLayout
from p2twisted.errors import AgentError
from tests.reachable import reachableDirectory

IS_ROOT = os.geteuid() == 0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(p2twisted.__file__)))


def read(path):
    with open(path, "rb") as f:
        return f.read()


class ConfigTests(unittest.SynchronousTestCase):
    """
    L{runtime.writeConfig}.
    """

    def setUp(self):
        self.layout = PodLayout(os.path.abspath(self.mktemp()), "web")

    def test_written(self):
        """
        The config bytes land in C{config/<pod>_<sha>.yaml} (mode 0644), and
        the path is returned; no temporary file is left behind.
        """
        path = runtime.writeConfig(self.layout, "abc123", b"port: 8080\n")
        self.assertEqual(path, os.path.join(self.layout.home, "config",
                                            "web_abc123.yaml"))
        self.assertEqual(read(path), b"port: 8080\n")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)
        self.assertEqual(os.listdir(self.layout.configDir), ["web_abc123.yaml"])

    def test_replacedAtomically(self):
        """
        Rewriting replaces the file by rename (a new inode: a reader holding
        the old file keeps reading complete old content); when writing fails
        the old content stays and no temporary file is left.
        """
        path = runtime.writeConfig(self.layout, "abc", b"a: 1\n")
        with open(path, "rb") as reader:
            runtime.writeConfig(self.layout, "abc", b"a: 2\n")
            self.assertEqual(reader.read(), b"a: 1\n")
        self.assertEqual(read(path), b"a: 2\n")

        def broken(fd):
            raise OSError(5, "Input/output error")
        self.patch(os, "fsync", broken)
        self.patch(runtime, "syncFilesystem", broken)
        error = self.assertRaises(AgentError, runtime.writeConfig,
                                  self.layout, "abc", b"a: 3\n")
        self.assertIn("cannot write config file " + path, str(error))
        self.assertEqual(read(path), b"a: 2\n")
        self.assertEqual(os.listdir(self.layout.configDir), ["web_abc.yaml"])

    def test_pruned(self):
        """
        Config files of other SHAs are removed, except the most recently
        written one (the running version's); other files are left alone.
        """
        first = runtime.writeConfig(self.layout, "sha1", b"v: 1\n")
        os.utime(first, (1000, 1000))
        second = runtime.writeConfig(self.layout, "sha2", b"v: 2\n")
        os.utime(second, (2000, 2000))
        other = os.path.join(self.layout.configDir, "README")
        with open(other, "w") as f:
            f.write("keep")
        third = runtime.writeConfig(self.layout, "sha3", b"v: 3\n")
        self.assertEqual(sorted(os.listdir(self.layout.configDir)),
                         ["README", "web_sha2.yaml", "web_sha3.yaml"])
        self.assertEqual(read(third), b"v: 3\n")


class EnvDirTests(unittest.SynchronousTestCase):
    """
    L{runtime.writeEnvDir}, read back with p2-exec's own reader.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())

    def test_contents(self):
        """
        One file per variable, its value and a newline; newlines in a value
        are written as NUL bytes; an empty value is a one-line file (set to
        empty), not an empty file (unset).
        """
        runtime.writeEnvDir(self.dir, {"A": "plain", "B": "two\nlines",
                                       "C": "", "D": 30})
        self.assertEqual(sorted(os.listdir(self.dir)), ["A", "B", "C", "D"])
        self.assertEqual(read(os.path.join(self.dir, "A")), b"plain\n")
        self.assertEqual(read(os.path.join(self.dir, "B")), b"two\0lines\n")
        self.assertEqual(read(os.path.join(self.dir, "C")), b"\n")
        self.assertEqual(read(os.path.join(self.dir, "D")), b"30\n")
        self.assertEqual(p2exec.readEnvDir(self.dir, {b"C": b"old"}),
                         {b"A": b"plain", b"B": b"two\nlines", b"C": b"",
                          b"D": b"30"})

    def test_replaced(self):
        """
        Rewriting leaves exactly the new variables: stale ones (and stray
        temporary files) are removed, unchanged files are not rewritten.
        """
        runtime.writeEnvDir(self.dir, {"KEEP": "same", "OLD": "x", "CHANGE": "1"})
        keepInode = os.stat(os.path.join(self.dir, "KEEP")).st_ino
        with open(os.path.join(self.dir, ".CHANGE.abc.tmp"), "w") as f:
            f.write("crash leftover")
        runtime.writeEnvDir(self.dir, {"KEEP": "same", "CHANGE": "2", "NEW": "n"})
        self.assertEqual(sorted(os.listdir(self.dir)), ["CHANGE", "KEEP", "NEW"])
        self.assertEqual(os.stat(os.path.join(self.dir, "KEEP")).st_ino, keepInode)
        self.assertEqual(p2exec.readEnvDir(self.dir, {}),
                         {b"KEEP": b"same", b"CHANGE": b"2", b"NEW": b"n"})

    def test_invalid(self):
        """
        Names an env dir cannot hold, and values ending in a space or tab
        (which chpst strips), are refused with the variable named; nothing is
        written.
        """
        for name in ["A=B", "a/b", ".hidden", ""]:
            error = self.assertRaises(AgentError, runtime.writeEnvDir,
                                      self.dir, {name: "v"})
            self.assertIn("invalid environment variable name %r" % (name,),
                          str(error))
        error = self.assertRaises(AgentError, runtime.writeEnvDir,
                                  self.dir, {"OK": "1", "PAD": "v "})
        self.assertIn("environment variable PAD", str(error))
        self.assertFalse(os.path.exists(self.dir))


class StagedFilesTests(unittest.SynchronousTestCase):
    """
    L{runtime.StagedFiles}: a deploy's runtime files written under
    temporary names while its artifacts install, renamed into place once
    they all installed.
    """

    def setUp(self):
        self.layout = PodLayout(os.path.abspath(self.mktemp()), "web")
        runtime.writeConfig(self.layout, "sha1", b"v: 1\n")
        runtime.writeEnvDir(self.layout.envDir, {"A": "1", "GONE": "x"})
        self.before = self.snapshot()

    def snapshot(self):
        found = {}
        for directory in (self.layout.envDir, self.layout.configDir):
            for name in os.listdir(directory):
                found[os.path.join(directory, name)] = read(os.path.join(directory, name))
        return found

    def stage(self):
        staged = runtime.StagedFiles()
        path = runtime.writeConfig(self.layout, "sha2", b"v: 2\n", staged=staged)
        runtime.writeEnvDir(self.layout.envDir, {"A": "2", "CONFIG_PATH": path},
                            staged=staged)
        return staged, path

    def visible(self):
        return {path: data for path, data in self.snapshot().items()
                if not os.path.basename(path).startswith(".")}

    def test_invisibleUntilCommitted(self):
        """
        Staged files change no name until C{commit}; then every one does, and
        the variables no longer wanted are removed.
        """
        staged, path = self.stage()
        self.assertEqual(self.visible(), self.before)
        staged.commit()
        self.assertEqual(self.snapshot(), {
            os.path.join(self.layout.envDir, "A"): b"2\n",
            os.path.join(self.layout.envDir, "CONFIG_PATH"): path.encode() + b"\n",
            self.layout.configPath("sha1"): b"v: 1\n",
            path: b"v: 2\n"})

    def test_aborted(self):
        """
        C{abort} (an install failed) deletes the staged files and leaves
        every file as it was.
        """
        staged, _ = self.stage()
        staged.abort()
        self.assertEqual(self.snapshot(), self.before)

    def test_flushedOnceOrNot(self):
        """
        C{commit} flushes the staged files to disk before renaming them:
        with one C{syncfs}, or none when one began since they were written
        (an install's).
        """
        flushes = []
        real = runtime.syncFilesystem
        self.patch(runtime, "syncFilesystem", lambda path: flushes.append(path) or real(path))
        staged, _ = self.stage()
        staged.commit()
        self.assertEqual(len(flushes), 1)
        staged = runtime.StagedFiles()
        runtime.writeEnvDir(self.layout.envDir, {"A": "3"}, staged=staged)
        fsutil.syncFilesystem(self.layout.envDir)
        staged.commit()
        self.assertEqual(len(flushes), 1)
        self.assertEqual(read(os.path.join(self.layout.envDir, "A")), b"3\n")

    def test_failedFlushRenamesNothing(self):
        """
        When the flush fails, no name changes and no staged file remains.
        """
        def broken(path):
            raise OSError(5, "Input/output error")
        self.patch(runtime, "syncFilesystem", broken)
        staged, _ = self.stage()
        self.assertRaises(OSError, staged.commit)
        self.assertEqual(self.snapshot(), self.before)


class EnvTests(unittest.SynchronousTestCase):
    """
    L{runtime.podEnv} and L{runtime.launchableEnv}.
    """

    layout = PodLayout("/data/pods", "web")

    def test_podEnv(self):
        """
        The pod env holds the pod id (also as its unique key), its home and
        its config path.
        """
        self.assertEqual(
            runtime.podEnv(self.layout, "web", "/data/pods/web/config/web_s.yaml"),
            {"POD_ID": "web", "POD_HOME": "/data/pods/web",
             "CONFIG_PATH": "/data/pods/web/config/web_s.yaml",
             "POD_UNIQUE_KEY": "web", "POD_ADDRESS": "127.0.0.1"})
        self.assertEqual(runtime.podEnv(self.layout, "web", "c.yaml", "127.0.0.2")["POD_ADDRESS"],
                         "127.0.0.2")

    def test_launchableEnv(self):
        """
        The launchable env holds its id, its root (the C{current} link), the
        restart timeout in whole seconds (rounded up), then the user's env.
        """
        self.assertEqual(
            runtime.launchableEnv(self.layout, "app", 2.5,
                                  {"PORT": 8080, "DEBUG": True, "NAME": "x"}),
            {"LAUNCHABLE_ID": "app", "LAUNCHABLE_ROOT": "/data/pods/web/app/current",
             "RESTART_TIMEOUT": "3", "PORT": "8080", "DEBUG": "true", "NAME": "x"})
        self.assertEqual(runtime.launchableEnv(self.layout, "app", 60, None)
                         ["RESTART_TIMEOUT"], "60")

    def test_reservedRejected(self):
        """
        A user env setting one of P2's variables is refused (the launchable
        env dir is loaded after the pod's, so it would silently win).
        """
        for name in ["POD_ID", "CONFIG_PATH", "LAUNCHABLE_ROOT", "ENTRY_POINT"]:
            error = self.assertRaises(AgentError, runtime.launchableEnv,
                                      self.layout, "app", 60, {name: "x"})
            self.assertEqual(
                str(error), "launchable app of pod web: env may not set %s, "
                            "which P2 sets; rename the variable in the manifest"
                            % (name,))


class ExecArgvTests(unittest.TestCase):
    """
    L{runtime.execArgv}.
    """

    layout = PodLayout("/data/pods", "web")

    def test_plain(self):
        """
        Without a cgroup: -n, the user, both env dirs, ENTRY_POINT, then the
        entry point under the C{current} link.
        """
        self.assertEqual(
            runtime.execArgv("/usr/bin/p2-exec", self.layout, "app", "web",
                             "bin/launch", None, 2, 1024),
            ["/usr/bin/p2-exec", "-n", "-u", "web",
             "-e", "/data/pods/web/env", "-e", "/data/pods/web/app/env",
             "--extra-env", "ENTRY_POINT=bin/launch",
             "--", "/data/pods/web/app/current/bin/launch"])

    def test_cgroup(self):
        """
        With a cgroup name the given limits follow it; a command of several
        words is accepted; the entry point is normalized.
        """
        self.assertEqual(
            runtime.execArgv(["py", "-m", "p2exec"], self.layout, "app", "web",
                             "./bin//worker", "web__app", 1.0, 512 << 20, pids=50),
            ["py", "-m", "p2exec", "-n", "-u", "web",
             "-e", "/data/pods/web/env", "-e", "/data/pods/web/app/env",
             "--extra-env", "ENTRY_POINT=bin/worker",
             "--cgroup", "web__app", "--cpus", "1", "--memory", "536870912",
             "--pids", "50", "--", "/data/pods/web/app/current/bin/worker"])
        argv = runtime.execArgv("p2-exec", self.layout, "app", "web", "bin/x",
                                "web__app", 0.5, None)
        self.assertEqual(argv[argv.index("--cgroup"):argv.index("--")],
                         ["--cgroup", "web__app", "--cpus", "0.5"])

    def test_badEntryPoint(self):
        """
        Entry points outside the launchable are refused.
        """
        for entry in ["/bin/sh", "../other/bin/x", "", "."]:
            self.assertRaises(AgentError, runtime.execArgv, "p2-exec",
                              self.layout, "app", "web", entry, None, None, None)

    def test_endToEnd(self):
        """
        The env dirs and command line built here, run through the real
        p2-exec, give the entry point every P2 variable and the user's env.
        """
        layout = PodLayout(os.path.abspath(self.mktemp()), "web")
        install = layout.installDir("app", "1")
        os.makedirs(os.path.join(install, "bin"))
        os.symlink(install, layout.current("app"))
        launch = os.path.join(install, "bin", "launch")
        with open(launch, "w") as f:
            f.write("#!/bin/sh\nexec env -0\n")
        os.chmod(launch, 0o755)
        config = runtime.writeConfig(layout, "sha", b"a: 1\n")
        runtime.writeEnvDir(layout.envDir, runtime.podEnv(layout, "web", config))
        runtime.writeEnvDir(layout.launchableEnvDir("app"), runtime.launchableEnv(
            layout, "app", 30, {"GREETING": "hello\nworld"}))
        user = runtime.currentUser()
        argv = runtime.execArgv([sys.executable, "-m", "p2twisted.agent.p2exec"],
                                layout, "app", user, "bin/launch", None, None, None)
        result = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=60)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        env = dict(item.decode().split("=", 1)
                   for item in result.stdout.split(b"\0") if item)
        expected = {
            "POD_ID": "web", "POD_HOME": layout.home, "CONFIG_PATH": config,
            "POD_UNIQUE_KEY": "web", "LAUNCHABLE_ID": "app",
            "LAUNCHABLE_ROOT": layout.current("app"), "RESTART_TIMEOUT": "30",
            "ENTRY_POINT": "bin/launch", "GREETING": "hello\nworld"}
        self.assertEqual(dict((k, env.get(k)) for k in expected), expected)


#: An entry point reporting, as JSON on stdout, what its start gave it.
REPORT = """#!/usr/bin/python3
import json, os, resource
NOLIMIT_RESOURCES = [getattr(resource, "RLIMIT_" + name) for name in %r]
umask = os.umask(0)
print(json.dumps({
    "env": dict(os.environ), "uid": os.getuid(), "gid": os.getgid(),
    "groups": sorted(os.getgroups()), "umask": umask,
    "leader": os.getsid(0) == os.getpid() and os.getpgrp() == os.getpid(),
    "limits": [list(resource.getrlimit(r)) for r in NOLIMIT_RESOURCES]}))
"""


#: p2exec.NOLIMIT_RESOURCES by name.
LIMIT_NAMES = [name for name in ("CPU", "FSIZE", "DATA", "RSS", "NPROC", "NOFILE", "MEMLOCK",
                                 "AS", "LOCKS", "SIGPENDING", "MSGQUEUE")
               if getattr(resource, "RLIMIT_" + name, None) in p2exec.NOLIMIT_RESOURCES]


def _lowerLimits():
    """
    In a child before exec: soft limits below the hard ones, as a supervisor
    could hand them down.
    """
    import resource
    for res in p2exec.NOLIMIT_RESOURCES:
        soft, hard = resource.getrlimit(res)
        lower = 1 << 40 if hard == resource.RLIM_INFINITY else hard // 2
        if lower:
            try:
                resource.setrlimit(res, (lower, hard))
            except (OSError, ValueError):
                pass
    os.umask(0o077)


class PodAddressTests(unittest.TestCase):
    """
    A pod learns its node's pod address however it is started: from its env
    dir (p2-exec) or from the environment chpst starts it with.
    """

    def test_chpstStart(self):
        from twisted.internet import reactor
        from p2twisted.agent.pods import PodOperations
        from p2twisted.agent.testing import FakeSupervisor
        from p2twisted.manifest import parseManifest
        from tests.test_agent_hooks import makeConfig
        config = makeConfig(os.path.abspath(self.mktemp()), podAddress="127.0.0.12")
        ops = PodOperations(config, reactor, FakeSupervisor(), None, None, p2exec=["true"],
                            isRoot=False)
        ops.chpst = "/usr/bin/chpst"
        manifest = parseManifest(b"id: web\nlaunchables:\n  app:\n    launchable_type: hoist\n"
                                 b"    location: file:///a/web_1.tar.gz\n")
        layout = PodLayout(config.podRoot, "web")
        argv, env = ops._startArgv(manifest, layout, "app", "root", "bin/launch")
        self.assertIn("/usr/bin/chpst", argv)
        self.assertEqual(env["POD_ADDRESS"], "127.0.0.12")
        self.assertEqual(ops._podEnv(manifest, layout, "c.yaml")["POD_ADDRESS"], "127.0.0.12")


class ChpstArgvTests(unittest.TestCase):
    """
    L{runtime.chpstArgv}: a pod started by chpst gets what p2-exec gives it.
    """

    layout = PodLayout("/data/pods", "web")

    def test_argv(self):
        """
        umask 022, a new session, the user's uid and groups, soft limits
        raised, then the entry point; the env dirs' variables and
        C{ENTRY_POINT} in the environment (no env dir is read).
        """
        argv, env = runtime.chpstArgv("/usr/bin/chpst", self.layout, "app", "root",
                                      "./bin//launch", {"POD_ID": "web", "A": "x\ny"})
        self.assertEqual(argv, ["/bin/sh", "-c", 'umask 022 && exec "$@"', "p2-start",
                                "/usr/bin/chpst", "-P", "-u", runtime.chpstUser("root"),
                                "/data/pods/web/app/current/bin/launch"])
        self.assertEqual(env, {"ENTRY_POINT": "bin/launch", "POD_ID": "web", "A": "x\ny"})
        argv, _ = runtime.chpstArgv("chpst", self.layout, "app", "root", "bin/launch", {},
                                    switchUser=False)
        self.assertNotIn("-u", argv)
        self.assertRaises(AgentError, runtime.chpstArgv, "chpst", self.layout, "app", "root",
                          "../x", {})

    def test_argvLeavesToP2exec(self):
        """
        Variables an environment cannot hold as they are (bytes, NUL), that
        are no shell name, or that a program run as root must not see (the
        loader's, libc's, the shell's) are left to p2-exec (C{None}).
        """
        for name, value in [("A", b"bytes"), ("A", "nul\0"), ("LD_PRELOAD", "/x.so"),
                            ("GCONV_PATH", "/x"), ("IFS", "x"), ("MALLOC_ARENA_MAX", "1"),
                            ("UID", "0"), ("NOT-A-NAME", "x")]:
            self.assertIsNone(runtime.chpstArgv("/usr/bin/chpst", self.layout, "app", "root",
                                                "bin/launch", {name: value}), name)

    def test_chpstUser(self):
        """
        Numeric: uid, primary gid, then the other groups the user is in.
        """
        entry = pwd.getpwnam("root")
        fields = runtime.chpstUser("root").split(":")
        self.assertEqual(fields[:3], ["", str(entry.pw_uid), str(entry.pw_gid)])
        self.assertEqual(sorted(int(g) for g in fields[2:]),
                         sorted(set(os.getgrouplist("root", entry.pw_gid))))
        self.assertRaises(AgentError, runtime.chpstUser, "no-such-user-%s" % (uuid.uuid4().hex[:8],))

    def test_tooManyGroups(self):
        """
        chpst takes at most L{runtime.CHPST_MAX_GROUPS} groups (it refuses
        more and the pod would never start): a user in more is started by
        p2-exec instead (L{runtime.chpstArgv} returns C{None}).
        """
        import shutil
        chpst = shutil.which("chpst")
        if chpst is not None and IS_ROOT:
            def runs(count):
                groups = ":".join(str(g) for g in range(1000, 1000 + count))
                return subprocess.run([chpst, "-u", ":65534:" + groups, "true"],
                                      stderr=subprocess.PIPE, timeout=60).returncode == 0
            self.assertTrue(runs(runtime.CHPST_MAX_GROUPS))
            self.assertFalse(runs(runtime.CHPST_MAX_GROUPS + 1))
        self.patch(os, "getgrouplist",
                   lambda name, gid: [gid] + list(range(1000, 1000 + runtime.CHPST_MAX_GROUPS)))
        self.assertIsNone(runtime.chpstUser("root"))
        self.assertIsNone(runtime.chpstArgv("chpst", self.layout, "app", "root", "bin/launch",
                                            {}))
        argv, _ = runtime.chpstArgv("chpst", self.layout, "app", "root", "bin/launch", {},
                                    switchUser=False)
        self.assertEqual(argv[-1], "/data/pods/web/app/current/bin/launch")

    def start(self, argv, env=None):
        result = subprocess.run(
            argv, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
            preexec_fn=_lowerLimits,
            env=dict(env or {}, PATH="/usr/local/bin:/usr/bin:/bin", PYTHONPATH=REPO))
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        import json
        return json.loads(result.stdout)

    def reportingPod(self, limitNames):
        """
        Skip unless chpst and C{/usr/bin/python3} are here; else make the
        pod C{web} whose launchable C{app} runs C{bin/launch}, a L{REPORT}
        of the limits C{limitNames}, in a directory C{nobody} can reach
        (outside the maybe private checkout).

        @return: C{(chpst's path, the pod's layout)}.
        """
        import shutil
        chpst = shutil.which("chpst")
        if chpst is None:
            raise unittest.SkipTest("chpst (runit) is not installed")
        if not os.path.exists("/usr/bin/python3"):
            raise unittest.SkipTest("the pod here is a /usr/bin/python3 script")
        layout = PodLayout(reachableDirectory(self, "p2-chpst-"), "web")
        install = layout.installDir("app", "1")
        os.makedirs(os.path.join(install, "bin"))
        os.symlink(install, layout.current("app"))
        launch = os.path.join(install, "bin", "launch")
        with open(launch, "w") as f:
            f.write(REPORT % (list(limitNames),))
        os.chmod(launch, 0o755)
        return chpst, layout

    def test_sameAsP2exec(self):
        """
        The same pod started by p2-exec and by chpst sees the same
        environment, user, groups, umask and session; chpst raises the soft
        limits of NOFILE, NPROC, CPU, FSIZE, DATA and RSS as p2-exec does
        (the others it inherits: see L{test_raiseOwnLimits}).  As root the
        pod runs as C{nobody}.
        """
        chpst, layout = self.reportingPod(LIMIT_NAMES)
        config = runtime.writeConfig(layout, "sha", b"a: 1\n")
        runtime.writeEnvDir(layout.envDir, runtime.podEnv(layout, "web", config))
        runtime.writeEnvDir(layout.launchableEnvDir("app"), runtime.launchableEnv(
            layout, "app", 30, {"GREETING": "hello\nworld"}))
        user = "nobody" if IS_ROOT else runtime.currentUser()
        byP2exec = self.start(runtime.execArgv(
            [sys.executable, "-S", "-E", p2exec.__file__], layout, "app", user, "bin/launch"))
        environment = runtime.podEnv(layout, "web", config)
        environment.update(runtime.launchableEnv(layout, "app", 30, {"GREETING": "hello\nworld"}))
        argv, env = runtime.chpstArgv(chpst, layout, "app", user, "bin/launch", environment,
                                      switchUser=IS_ROOT)
        self.assertEqual(argv.count(chpst), 1)
        byChpst = self.start(argv, env)
        for report in (byP2exec, byChpst):
            report["env"] = {k: v for k, v in report["env"].items()
                             if k not in ("PWD", "SHLVL", "_")}
            self.assertEqual(report["env"]["GREETING"], "hello\nworld")
            self.assertEqual(report["env"]["ENTRY_POINT"], "bin/launch")
            self.assertEqual(report["umask"], 0o022)
            self.assertTrue(report["leader"])
            if IS_ROOT:
                self.assertEqual(report["uid"], pwd.getpwnam("nobody").pw_uid)
        for report in (byP2exec, byChpst):
            report["env"].pop("PYTHONPATH", None)
        for key in ("env", "uid", "gid", "groups", "umask", "leader"):
            self.assertEqual(byChpst[key], byP2exec[key], key)
        # chpst leaves the limits it was given: the agent's, raised (below).
        self.assertEqual(byChpst["limits"], self.loweredLimits())

    def assertLoaderRunsAsPod(self, userEnv, podEnvDir=None):
        """
        Start, as root, a pod running as C{nobody} whose manifest's env is
        C{userEnv}, as the agent chooses to (chpst when it can, else
        p2-exec), with C{LD_DEBUG_OUTPUT} set to a directory (by
        C{userEnv}, or by C{podEnvDir}: what the pod's env dir holds at the
        start, which the pod's user can replace since the pod home is
        theirs).

        Every file the dynamic loader wrote there (one for each program
        started with C{LD_DEBUG_OUTPUT}, as its user) is C{nobody}'s: no
        program run as root saw the variable.  The pod sees it.
        """
        if not IS_ROOT:
            raise unittest.SkipTest("needs root (to switch user)")
        chpst, layout = self.reportingPod([])
        out = os.path.join(layout.podRoot, "out")
        os.mkdir(out)
        os.chmod(out, 0o1777)
        loader = {"LD_DEBUG": "statistics", "LD_DEBUG_OUTPUT": os.path.join(out, "ld")}
        userEnv = {name: loader.get(value, value) for name, value in userEnv.items()}
        config = runtime.writeConfig(layout, "sha", b"a: 1\n")
        environment = runtime.podEnv(layout, "web", config)
        runtime.writeEnvDir(layout.envDir, dict(
            environment, **{name: loader[value] for name, value in (podEnvDir or {}).items()}))
        launchable = runtime.launchableEnv(layout, "app", 30, userEnv)
        runtime.writeEnvDir(layout.launchableEnvDir("app"), launchable)
        environment.update(launchable)
        started = runtime.chpstArgv(chpst, layout, "app", "nobody", "bin/launch", environment)
        if started is None:
            started = (runtime.execArgv([sys.executable, "-S", "-E", p2exec.__file__],
                                        layout, "app", "nobody", "bin/launch"), {})
        argv, env = started
        subprocess.run(argv, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60, env=dict(env, PATH="/usr/bin:/bin"))
        owners = {os.lstat(os.path.join(out, name)).st_uid for name in os.listdir(out)}
        self.assertEqual(owners, {pwd.getpwnam("nobody").pw_uid})
        self.assertEqual(self.start(argv, env)["env"].get("LD_DEBUG_OUTPUT"),
                         loader["LD_DEBUG_OUTPUT"])

    def test_manifestEnvNeverReachesRoot(self):
        """
        Variables a manifest's env sets reach only the pod's process, never a
        program the agent runs as root before switching to C{run_as}: the
        dynamic loader's are left to p2-exec, which sets them after it
        switched user.
        """
        self.assertLoaderRunsAsPod({"LD_DEBUG": "LD_DEBUG", "LD_DEBUG_OUTPUT": "LD_DEBUG_OUTPUT"})

    def test_podUsersEnvDirNeverReachesRoot(self):
        """
        The pod's user can replace the env dirs (the pod home is theirs):
        what they hold reaches only the pod's process, also when the
        manifest's env holds a value the run script cannot export (bytes).
        """
        self.assertLoaderRunsAsPod({"RAW": b"\xff"}, podEnvDir={
            "LD_DEBUG": "LD_DEBUG", "LD_DEBUG_OUTPUT": "LD_DEBUG_OUTPUT"})

    def loweredLimits(self):
        code = ("import json, resource\n"
                "print(json.dumps([resource.getrlimit(getattr(resource, 'RLIMIT_' + n)) "
                "for n in %r]))\n" % (LIMIT_NAMES,))
        result = subprocess.run(["/usr/bin/python3", "-c", code], timeout=60,
                                stdout=subprocess.PIPE, preexec_fn=_lowerLimits)
        import json
        return [list(limit) for limit in json.loads(result.stdout)]

    def test_raiseOwnLimits(self):
        """
        L{runtime.raiseOwnLimits} raises this process's soft limits as
        p2-exec's C{-n} does (so that what it starts inherits them).
        """
        code = ("import json, resource\n"
                "from p2twisted.agent import runtime, p2exec\n"
                "assert runtime.raiseOwnLimits(False)\n"
                "print(json.dumps([resource.getrlimit(r) for r in p2exec.NOLIMIT_RESOURCES]))\n")
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60,
                                stdout=subprocess.PIPE, preexec_fn=_lowerLimits,
                                env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"})
        import json
        limits = json.loads(result.stdout)
        self.assertEqual(len(limits), len(p2exec.NOLIMIT_RESOURCES))
        for soft, hard in limits:
            self.assertEqual(soft, hard)
