"""
C{p2-exec}, run for real as a subprocess (and its pure parts in process):
env dirs, extra env, clear env, rlimits, cgroups, user switch, new process
group, exec, and one-line errors with exit status 111.
"""

import errno
import json
import os
import pwd
import resource
import shutil
import subprocess
import sys
import uuid

from twisted.python import log
from twisted.trial import unittest

import p2twisted
from p2twisted.agent import p2exec
from tests.reachable import reachableDirectory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(p2twisted.__file__)))
P2EXEC = [sys.executable, "-m", "p2twisted.agent.p2exec"]
#: An interpreter any user may run (sys.executable may live under /root).
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = "nobody"

IS_ROOT = os.geteuid() == 0


def runP2Exec(args, env=None, python=None, asUid=None, script=None, **kw):
    """
    Run p2-exec with C{args} and wait for it (and the command it execs).

    @param python: the interpreter (default C{sys.executable}).
    @param asUid: drop to this uid (and its group) before starting p2-exec.
    @param script: run this copy of C{p2exec.py} as the agent does
        (C{python -S -E SCRIPT}), from its directory, rather than the module
        from the checkout (which another user may not be able to read).
    @return: the C{CompletedProcess}, stdout and stderr as text.
    """
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": REPO}
    if env:
        base.update(env)
    preexec = None
    if asUid is not None:
        entry = pwd.getpwuid(asUid)

        def dropPrivileges():
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        preexec = dropPrivileges
    argv = [python or sys.executable, "-m", "p2twisted.agent.p2exec"] + args
    cwd = REPO
    if script is not None:
        argv = [python or sys.executable, "-S", "-E", script] + args
        cwd = os.path.dirname(script)
    return subprocess.run(argv, env=base, cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          preexec_fn=preexec, timeout=60, **kw)


def envOf(stdout):
    """
    @return: the dict printed by C{env -0}.
    """
    result = {}
    for item in stdout.split(b"\0"):
        if item:
            name, _, value = item.partition(b"=")
            result[name.decode()] = value.decode()
    return result


def writeFiles(directory, files):
    directory = os.path.abspath(directory)
    os.makedirs(directory)
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    return directory


class EnvironmentTests(unittest.TestCase):
    """
    What the command's environment is made of.
    """

    def test_envDirs(self):
        """
        Each file of an env dir is a variable: its first line, trailing spaces
        and tabs stripped, NUL bytes turned into newlines; an empty file
        unsets the variable; dot files are skipped; later dirs win.
        """
        base = self.mktemp()
        one = writeFiles(os.path.join(base, "one"), {
            "FIRST": b"first \t\nsecond line\n",
            "MULTI": b"a\0b\0\n",
            "EMPTYVALUE": b"\n",
            "UNSETME": b"",
            "OVERRIDDEN": b"from one\n",
            ".hidden": b"no\n",
        })
        two = writeFiles(os.path.join(base, "two"), {"OVERRIDDEN": b"from two"})
        result = runP2Exec(["-e", one, "-e", two, "--", "env", "-0"],
                           env={"UNSETME": "set", "KEPT": "kept"})
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        env = envOf(result.stdout)
        self.assertEqual(env["FIRST"], "first")
        self.assertEqual(env["MULTI"], "a\nb\n")
        self.assertEqual(env["EMPTYVALUE"], "")
        self.assertNotIn("UNSETME", env)
        self.assertNotIn(".hidden", env)
        self.assertEqual(env["OVERRIDDEN"], "from two")
        self.assertEqual(env["KEPT"], "kept")

    def test_extraEnv(self):
        """
        C{--extra-env K=V} is applied after the env dirs, so it wins; the value
        may hold C{=} or be empty.
        """
        envDir = writeFiles(self.mktemp(), {"ENTRY_POINT": b"from dir\n"})
        result = runP2Exec(["-e", envDir, "--extra-env", "ENTRY_POINT=bin/launch",
                            "--extra-env", "EQ=a=b", "--extra-env", "NONE=",
                            "--", "env", "-0"])
        self.assertEqual(result.returncode, 0, result.stderr)
        env = envOf(result.stdout)
        self.assertEqual((env["ENTRY_POINT"], env["EQ"], env["NONE"]),
                         ("bin/launch", "a=b", ""))

    def test_clearEnv(self):
        """
        C{--clear-env} starts from an environment holding only the default
        C{PATH}, which finds the command; env dirs and extra env still apply.
        """
        envDir = writeFiles(self.mktemp(), {"FROM_DIR": b"yes\n"})
        result = runP2Exec(["--clear-env", "-e", envDir, "--extra-env", "X=1",
                            "--", "env", "-0"], env={"SECRET": "s"})
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(envOf(result.stdout),
                         {"PATH": "/usr/local/bin:/usr/bin:/bin",
                          "FROM_DIR": "yes", "X": "1"})

    def test_umaskAndChdir(self):
        """
        C{--umask} (octal) and C{--chdir} are applied before the exec.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        result = runP2Exec(["--umask", "027", "--chdir", directory, "--",
                            "sh", "-c", "umask; pwd"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.decode().split(), ["0027", directory])

    def test_nolimit(self):
        """
        C{-n} raises the soft NOFILE limit to the hard limit (as root the hard
        limit itself is raised to C{fs.nr_open}).
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        low = min(256, hard)

        def lower():
            resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        script = ("import resource; "
                  "print(*resource.getrlimit(resource.RLIMIT_NOFILE))")
        withLimit = subprocess.run(
            P2EXEC + ["-n", "--", sys.executable, "-c", script], cwd=REPO,
            preexec_fn=lower, stdout=subprocess.PIPE, timeout=60)
        without = subprocess.run(
            P2EXEC + ["--", sys.executable, "-c", script], cwd=REPO,
            preexec_fn=lower, stdout=subprocess.PIPE, timeout=60)
        newSoft, newHard = map(int, withLimit.stdout.split())
        self.assertEqual(newSoft, newHard)
        self.assertTrue(newHard >= hard)
        self.assertEqual(int(without.stdout.split()[0]), low)


class ProcessTests(unittest.TestCase):
    """
    Who the command runs as, and in which process group.
    """

    script = "import os; print(os.getpid(), os.getpgrp(), os.getsid(0))"

    def test_newSessionAndGroup(self):
        """
        p2-exec execs in place (same pid) as the leader of a new session and a
        new process group, so the group can be killed as a whole.
        """
        proc = subprocess.Popen(P2EXEC + ["--", sys.executable, "-c", self.script],
                                cwd=REPO, stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0)
        pid, pgrp, sid = map(int, out.split())
        self.assertEqual((pid, pgrp, sid), (proc.pid, proc.pid, proc.pid))
        self.assertNotEqual(pgrp, os.getpgrp())

    def test_alreadyGroupLeader(self):
        """
        A p2-exec that already leads its process group (here: a session
        leader) keeps it and still execs.
        """
        proc = subprocess.Popen(P2EXEC + ["--", sys.executable, "-c", self.script],
                                cwd=REPO, stdout=subprocess.PIPE,
                                start_new_session=True)
        out, _ = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(list(map(int, out.split())), [proc.pid] * 3)

    def test_switchUser(self):
        """
        As root, C{-u nobody} runs the command with nobody's uid, gid and
        supplementary groups only.
        """
        if not IS_ROOT:
            raise unittest.SkipTest("switching users needs root")
        entry = pwd.getpwnam(NOBODY)
        result = runP2Exec(["-u", NOBODY, "--", "sh", "-c", "id -u; id -g; id -G"])
        self.assertEqual(result.returncode, 0, result.stderr)
        uid, gid, groups = result.stdout.decode().splitlines()
        self.assertEqual((int(uid), int(gid)), (entry.pw_uid, entry.pw_gid))
        self.assertEqual(set(map(int, groups.split())),
                         set(os.getgrouplist(NOBODY, entry.pw_gid)))

    def test_switchUserFromPrivateDirectory(self):
        """
        p2-exec in a directory only root can read (a checkout in root's
        home) still runs a command as nobody: nothing is read from its
        directory after the user switch.
        """
        if not IS_ROOT:
            raise unittest.SkipTest("switching users needs root")
        private = os.path.abspath(self.mktemp())
        os.makedirs(private)
        os.chmod(private, 0o700)
        script = os.path.join(private, "p2exec.py")
        shutil.copyfile(p2exec.__file__, script)
        result = runP2Exec(["-u", NOBODY, "--chdir", "/", "--", "id", "-u"], script=script)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.assertEqual(result.stdout.strip(), str(pwd.getpwnam(NOBODY).pw_uid).encode())

    def test_numericUser(self):
        """
        C{-u} also takes a numeric uid that has a passwd entry.
        """
        if not IS_ROOT:
            raise unittest.SkipTest("switching users needs root")
        uid = pwd.getpwnam(NOBODY).pw_uid
        result = runP2Exec(["-u", str(uid), "--", "id", "-u"])
        self.assertEqual((result.returncode, result.stdout.strip()),
                         (0, str(uid).encode()))

    def test_notRootIgnoresUser(self):
        """
        Not running as root, C{-u} naming another user prints one warning and
        runs the command as the current user.  (As root this test starts
        p2-exec as nobody with the system interpreter: p2-exec needs only the
        standard library.)
        """
        python, asUid, script = sys.executable, None, None
        if IS_ROOT:
            python, asUid, script = _unprivilegedPython(self)
        result = runP2Exec(["-u", "root", "--", "id", "-u"], python=python,
                           asUid=asUid, script=script)
        self.assertEqual(result.returncode, 0, result.stderr)
        expected = asUid if asUid is not None else os.geteuid()
        self.assertEqual(result.stdout.strip(), str(expected).encode())
        lines = result.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith(
            "p2-exec: warning: not running as root; ignoring -u root"), lines)


def _unprivilegedPython(testCase):
    """
    @return: C{(python, uid, script)} to run p2-exec as nobody: C{script} is
        a copy of C{p2exec.py} that nobody can read wherever the checkout
        lives; or skip.
    """
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise unittest.SkipTest("no %s for running p2-exec as nobody" % (SYSTEM_PYTHON,))
    script = os.path.join(reachableDirectory(testCase, "p2-exec-"), "p2exec.py")
    shutil.copyfile(p2exec.__file__, script)
    os.chmod(script, 0o644)
    return SYSTEM_PYTHON, pwd.getpwnam(NOBODY).pw_uid, script


class ErrorTests(unittest.TestCase):
    """
    Failures before the exec: one line on stderr, exit status 111.
    """

    def assertOneLineFailure(self, result, *fragments):
        self.assertEqual(result.returncode, 111)
        self.assertEqual(result.stdout, b"")
        lines = result.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("p2-exec: "), lines)
        for fragment in fragments:
            self.assertIn(fragment, lines[0])

    def test_missingCommand(self):
        """
        A command that does not exist: exit 111 and one line naming it.
        """
        self.assertOneLineFailure(runP2Exec(["--", "/nonexistent/p2t-cmd", "x"]),
                                  "cannot exec /nonexistent/p2t-cmd",
                                  "No such file or directory")
        self.assertOneLineFailure(runP2Exec(["--", "p2t-no-such-command"]),
                                  "cannot exec p2t-no-such-command")

    def test_noCommand(self):
        """
        Nothing after C{--}: exit 111, one line.
        """
        self.assertOneLineFailure(runP2Exec(["-n", "--"]), "no command given")

    def test_unknownUser(self):
        """
        An unknown C{-u} user: exit 111, one line naming the user.
        """
        self.assertOneLineFailure(
            runP2Exec(["-u", "p2t-no-such-user", "--", "true"]),
            "unknown user 'p2t-no-such-user'")

    def test_badArguments(self):
        """
        Bad options (argparse's errors included) are one line and exit 111,
        never a usage dump or a traceback.
        """
        self.assertOneLineFailure(runP2Exec(["--memory", "lots", "--", "true"]),
                                  "invalid size 'lots'")
        self.assertOneLineFailure(runP2Exec(["--bogus", "--", "true"]),
                                  "unrecognized arguments: --bogus")
        self.assertOneLineFailure(runP2Exec(["--cpus", "1", "--", "true"]),
                                  "need --cgroup")
        self.assertOneLineFailure(
            runP2Exec(["--cgroup", "../x", "--pids", "5", "--", "true"]),
            "invalid cgroup name")

    def test_badValues(self):
        """
        A missing value, a value given to a flag, and bad sizes are one line
        naming the option.
        """
        self.assertOneLineFailure(runP2Exec(["--memory"]),
                                  "argument --memory: expected one argument")
        self.assertOneLineFailure(runP2Exec(["--nolimit=yes", "--", "true"]),
                                  "argument --nolimit: takes no value")
        self.assertOneLineFailure(runP2Exec(["-u=root", "--", "true"]),
                                  "argument -u: write -u VALUE or --user=VALUE")
        for size in ("1.5G", "", "12X", "G", "\u0661"):
            self.assertOneLineFailure(runP2Exec(["--cgroup", "c", "--memory", size, "--",
                                                 "true"]), "invalid size")

    def test_help(self):
        """
        C{--help} describes the options and exits 0.
        """
        result = runP2Exec(["--help"])
        self.assertEqual(result.returncode, 0)
        self.assertIn(b"usage: p2-exec [options] -- COMMAND", result.stdout)
        self.assertIn(b"--memory BYTES", result.stdout)

    def test_unreadableEnvDir(self):
        """
        A missing env dir: exit 111, one line naming it.
        """
        self.assertOneLineFailure(runP2Exec(["-e", "/nonexistent/env", "--", "true"]),
                                  "cannot read env dir /nonexistent/env")


class ParseTests(unittest.SynchronousTestCase):
    """
    Argument parsing, in process.
    """

    def test_commandWithoutSeparator(self):
        """
        The command may follow the options without C{--}; a value of a valued
        option is not mistaken for it.
        """
        args = p2exec.parseArgs(["-e", "envdir", "-n", "cmd", "-x"])
        self.assertEqual((args.envDirs, args.nolimit, args.command),
                         (["envdir"], True, ["cmd", "-x"]))

    def test_valueForms(self):
        """
        Values may follow their option, be joined with C{=} (long options)
        or follow a short option directly.
        """
        args = p2exec.parseArgs(["-eenv1", "--env-dir=env2", "-e", "env3", "--cgroup=c",
                                 "--memory=512k", "--pids", "7", "--umask=027",
                                 "--extra-env", "A=b=c", "-u", "nobody", "--", "cmd"])
        self.assertEqual(
            (args.envDirs, args.cgroup, args.memory, args.pids, args.umask, args.extraEnv,
             args.user, args.command),
            (["env1", "env2", "env3"], "c", 512 << 10, 7, 0o027, [("A", "b=c")], "nobody",
             ["cmd"]))

    def test_separator(self):
        """
        Everything after the first C{--} is the command, dashes included.
        """
        args = p2exec.parseArgs(["--memory", "1G", "--cgroup", "c", "--cpus",
                                 "0.5", "--", "-cmd", "--", "x"])
        self.assertEqual((args.memory, args.cpus, args.command),
                         (1 << 30, 0.5, ["-cmd", "--", "x"]))

    def test_mountinfoEscapes(self):
        """
        Mount points with escaped characters are unescaped; non-cgroup mounts
        are ignored.
        """
        text = ("30 25 0:26 / /sys/fs/cgroup/a\\040b rw - cgroup cgroup rw,memory\n"
                "31 25 0:27 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw\n"
                "32 25 8:1 / / rw - ext4 /dev/sda1 rw\n")
        self.assertEqual(p2exec.parseMountinfo(text), [
            ("cgroup", "/sys/fs/cgroup/a b", "/", set(["rw", "memory"])),
            ("cgroup2", "/sys/fs/cgroup/unified", "/", set(["rw"]))])


class FakeCgroupTests(unittest.SynchronousTestCase):
    """
    L{p2exec.setupCgroup} on fake cgroup trees (plain directories), for the
    cases this machine cannot show for real.
    """

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)

    def read(self, *path):
        with open(os.path.join(self.root, *path)) as f:
            return f.read()

    def test_v2(self):
        """
        A cgroup2 mount offering every needed controller is used: controllers
        enabled below the root and C{p2}, C{cpu.max}, C{memory.max},
        C{pids.max} written, the pid added to C{cgroup.procs}.
        """
        mount = os.path.join(self.root, "v2")
        writeFiles(mount, {"cgroup.controllers": b"cpuset cpu io memory pids\n"})
        mountinfo = "1 0 0:1 / %s rw - cgroup2 cgroup2 rw\n" % (mount,)
        version, applied, warning = p2exec.setupCgroup(
            "web", cpus=1.5, memory=1 << 20, pids=64, mountinfo=mountinfo,
            procCgroup="0::/system.slice/x\n", pid=4242)
        directory = os.path.join(mount, "p2", "web")
        self.assertEqual((version, warning), (2, None))
        self.assertEqual(applied, {"cpu": directory, "memory": directory,
                                   "pids": directory})
        self.assertEqual(self.read("v2", "cgroup.subtree_control"),
                         "+cpu +memory +pids")
        self.assertEqual(self.read("v2", "p2", "cgroup.subtree_control"),
                         "+cpu +memory +pids")
        self.assertEqual(self.read("v2", "p2", "web", "cpu.max"), "150000 100000")
        self.assertEqual(self.read("v2", "p2", "web", "memory.max"), "1048576")
        self.assertEqual(self.read("v2", "p2", "web", "pids.max"), "64")
        self.assertEqual(self.read("v2", "p2", "web", "tasks"), "4242\n")

    def test_removeEveryHierarchy(self):
        """
        L{p2exec.removeCgroup} removes C{p2/<name>} from each hierarchy
        L{p2exec.setupCgroup} used, v1 ones under this process's cgroup;
        one that still holds something is reported, not raised; one that
        does not exist is no problem.
        """
        memory, cpu = os.path.join(self.root, "memory"), os.path.join(self.root, "cpu")
        mountinfo = ("1 0 0:1 / %s rw - cgroup cgroup rw,memory\n"
                     "2 0 0:2 / %s rw - cgroup cgroup rw,cpu,cpuacct\n" % (memory, cpu))
        procCgroup = "5:memory:/agent\n4:cpu,cpuacct:/agent\n"
        made = [os.path.join(memory, "agent", "p2", "web"), os.path.join(cpu, "agent", "p2", "web")]
        self.assertEqual(p2exec.cgroupDirs("web", mountinfo, procCgroup), made)
        for directory in made:
            os.makedirs(directory)
        with open(os.path.join(made[1], "busy"), "w"):
            pass  # a plain directory with a file stands for one with a process
        removed, problems = p2exec.removeCgroup("web", mountinfo, procCgroup)
        self.assertEqual(removed, made[:1])
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith(made[1] + ": directory not empty"), problems)
        self.assertEqual(p2exec.removeCgroup("db", mountinfo, procCgroup), ([], []))

    def test_v1Nested(self):
        """
        Without a usable cgroup2 mount (here: one offering only hugetlb), v1
        hierarchies are used, nested under this process's own cgroup; a
        controller without a hierarchy is named in the single warning while
        the others are applied.
        """
        unified = writeFiles(os.path.join(self.root, "unified"),
                             {"cgroup.controllers": b"hugetlb\n"})
        memory = os.path.join(self.root, "memory")
        cpu = os.path.join(self.root, "cpu,cpuacct")
        mountinfo = (
            "1 0 0:1 / %s rw - cgroup2 cgroup2 rw\n"
            "2 0 0:2 / %s rw - cgroup cgroup rw,memory\n"
            "3 0 0:3 /outer %s rw - cgroup cgroup rw,cpu,cpuacct\n"
            % (unified, memory, cpu))
        procCgroup = "4:memory:/sandbox/1\n2:cpu,cpuacct:/outer/inner\n0::/\n"
        version, applied, warning = p2exec.setupCgroup(
            "api", cpus=0.25, memory=5000, pids=10, mountinfo=mountinfo,
            procCgroup=procCgroup, pid=77)
        self.assertEqual(version, 1)
        self.assertEqual(applied, {
            "memory": os.path.join(memory, "sandbox", "1", "p2", "api"),
            "cpu": os.path.join(cpu, "inner", "p2", "api")})
        self.assertEqual(self.read("memory", "sandbox", "1", "p2", "api",
                                   "memory.limit_in_bytes"), "5000")
        self.assertEqual(self.read("cpu,cpuacct", "inner", "p2", "api",
                                   "cpu.cfs_quota_us"), "25000")
        self.assertEqual(self.read("cpu,cpuacct", "inner", "p2", "api",
                                   "cpu.cfs_period_us"), "100000")
        self.assertEqual(warning, "p2-exec: warning: cgroup p2/api: pids limit "
                                  "not applied: no cgroup v1 or v2 pids controller")

    def test_nothing(self):
        """
        No cgroup filesystem at all: nothing applied, one warning line naming
        every limit.
        """
        version, applied, warning = p2exec.setupCgroup(
            "x", cpus=1, memory=1, mountinfo="", procCgroup="")
        self.assertEqual((version, applied), (None, {}))
        self.assertEqual(len(warning.splitlines()), 1)
        self.assertIn("cpu/memory limit not applied", warning)

    def test_noLimits(self):
        """
        Without limits there is nothing to do and nothing to warn about.
        """
        self.assertEqual(p2exec.setupCgroup("x", mountinfo="", procCgroup=""),
                         (None, {}, None))


def _cgroupDirs(name):
    """
    @return: every directory p2-exec would use for cgroup C{p2/name} from
        this process, with its C{p2} parent.
    """
    return [(d, os.path.dirname(d)) for d in p2exec.cgroupDirs(name)]


def _removeCgroup(name):
    p2exec.removeCgroup(name)
    for directory, parent in _cgroupDirs(name):
        try:
            os.rmdir(parent)
        except OSError as e:
            # EACCES/EPERM: a p2 parent another user (root) made is not
            # ours to remove.
            if e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY,
                               errno.EACCES, errno.EPERM):
                raise


def _memoryCgroupUsable():
    """
    Decide, independently of p2-exec, whether this process can create a memory
    cgroup: root, a memory controller (cgroup2 offering it, or a v1 memory
    hierarchy), and a successful probe C{mkdir} where p2-exec would create
    its C{p2} directory.

    @return: C{(usable, why)}.
    """
    if not IS_ROOT:
        return False, "not root"
    probe = "p2t-probe-" + uuid.uuid4().hex[:8]
    with open("/proc/self/mountinfo") as f:
        mounts = p2exec.parseMountinfo(f.read())
    for fstype, mountPoint, root, options in mounts:
        if fstype == "cgroup2" and "memory" in p2exec._v2Controllers(mountPoint):
            break
        if fstype == "cgroup" and "memory" in options:
            break
    else:
        return False, "no memory controller"
    for directory, parent in _cgroupDirs(probe):
        if "memory" not in directory.split(os.sep) and "memory" not in \
                p2exec._v2Controllers(directory.rsplit("/p2/", 1)[0]):
            continue
        try:
            os.makedirs(directory)
        except OSError as e:
            return False, "cannot create %s: %s" % (directory, e.strerror)
        _removeCgroup(probe)
        return True, "created and removed " + directory
    return False, "no memory cgroup directory found"


CHILD_SCRIPT = r"""
import json, os
out = {"cgroup": open("/proc/self/cgroup").read(), "limits": {}}
for line in out["cgroup"].splitlines():
    hid, controllers, path = line.split(":", 2)
    if hid == "0":
        d = "/sys/fs/cgroup" + path
        names = ["memory.max", "cpu.max", "pids.max"]
    else:
        d = "/sys/fs/cgroup/%s%s" % (controllers.split(",")[0], path)
        names = ["memory.limit_in_bytes", "cpu.cfs_quota_us",
                 "cpu.cfs_period_us", "pids.max"]
    for name in names:
        try:
            out["limits"][name] = open(os.path.join(d, name)).read().strip()
        except OSError:
            pass
print(json.dumps(out))
"""


class RealCgroupTests(unittest.TestCase):
    """
    Cgroups on this machine, for real.
    """

    def test_memoryLimit(self):
        """
        Where this process can create a memory cgroup (checked by a probe,
        independently of p2-exec): the command runs in C{.../p2/<name>} with
        the memory, CPU and pids limits, as read back from inside it.  Where
        it cannot (not root, no controller, not permitted): exactly one
        warning line and the command still runs.  Which branch ran is logged
        (C{cgroup branch: ...} in C{_trial_temp/test.log}).

        The machine this was written on has cgroup v1 (memory, cpu, cpuacct,
        pids... each its own hierarchy; the cgroup2 mount offers only
        hugetlb) and a writable memory hierarchy as root: the first branch.
        """
        usable, why = _memoryCgroupUsable()
        log.msg("cgroup branch: %s (%s)" % ("apply" if usable else "warn", why))
        name = "p2t-" + uuid.uuid4().hex[:10]
        self.addCleanup(_removeCgroup, name)
        result = runP2Exec(["--cgroup", name, "--memory", "64M", "--cpus", "0.5",
                            "--pids", "100", "--", sys.executable, "-c",
                            CHILD_SCRIPT])
        self.assertEqual(result.returncode, 0, result.stderr)
        seen = json.loads(result.stdout)
        memoryLines = [line for line in seen["cgroup"].splitlines()
                       if line.startswith("0::") or
                       "memory" in line.split(":")[1].split(",")]
        if not usable:
            lines = result.stderr.decode().splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith(
                "p2-exec: warning: cgroup p2/%s:" % (name,)), lines)
            self.assertNotIn("/p2/" + name, seen["cgroup"])
            return
        limits = seen["limits"]
        v2 = "memory.max" in limits and any(
            line.startswith("0::") and line.endswith("/p2/" + name)
            for line in memoryLines)
        if v2:
            self.assertEqual(limits["memory.max"], str(64 << 20))
            self.assertEqual(limits["cpu.max"], "50000 100000")
            self.assertEqual(limits["pids.max"], "100")
            return
        # cgroup v1: every hierarchy with one of the controllers holds the
        # command in p2/<name>; the rest may miss (then one warning).
        memoryLine = [line for line in memoryLines if not line.startswith("0::")]
        self.assertEqual(len(memoryLine), 1)
        self.assertTrue(memoryLine[0].endswith("/p2/" + name), seen["cgroup"])
        self.assertEqual(limits["memory.limit_in_bytes"], str(64 << 20))
        with open("/proc/self/cgroup") as f:
            mine = p2exec.parseProcCgroup(f.read())[0]
        theirs = p2exec.parseProcCgroup(seen["cgroup"])[0]
        self.assertEqual(theirs["memory"],
                         mine["memory"].rstrip("/") + "/p2/" + name)
        for controller, files in [("cpu", {"cpu.cfs_quota_us": "50000",
                                           "cpu.cfs_period_us": "100000"}),
                                  ("pids", {"pids.max": "100"})]:
            if theirs.get(controller, "").endswith("/p2/" + name):
                for key, value in files.items():
                    self.assertEqual(limits[key], value)
            else:
                self.assertIn(controller, result.stderr.decode())
        self.assertTrue(len(result.stderr.decode().splitlines()) <= 1)

    def test_notPermitted(self):
        """
        p2-exec running as an unprivileged user cannot create cgroups: one
        warning line naming the cgroup, and the command runs anyway.  (As root
        the test starts p2-exec as nobody with the system interpreter.)
        """
        python, asUid, script = sys.executable, None, None
        if IS_ROOT:
            python, asUid, script = _unprivilegedPython(self)
        name = "p2t-" + uuid.uuid4().hex[:10]
        self.addCleanup(_removeCgroup, name)
        result = runP2Exec(["--cgroup", name, "--memory", "64M", "--",
                            "cat", "/proc/self/cgroup"], python=python, asUid=asUid,
                           script=script)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn(b"/p2/" + name.encode(), result.stdout)
        lines = result.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith(
            "p2-exec: warning: cgroup p2/%s: memory limit not applied:" % (name,)),
            lines)
