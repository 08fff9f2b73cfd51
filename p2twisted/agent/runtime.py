# -*- test-case-name: tests.test_agent_runtime -*-
"""
A pod's runtime files: its config file, its env dirs and the C{p2-exec}
command line its services run (DESIGN.md, "Machine agent"; reference/p2.md
section 4, "Write config").  The accounts pods run as are
L{p2twisted.agent.users}'s.

Everything here is synchronous and quick (small files); call it from the
reactor's thread pool (C{deferToThreadPool}) when blocking the reactor
matters.  Files are written atomically: a temporary file in the same
directory, C{fsync}, C{os.replace}, then an C{fsync} of the directory.  A
deploy writes its runtime files as L{StagedFiles}: all under temporary
names while its artifacts install, one flush (usually the install's own)
and the renames once they installed.
"""

import errno
import math
import os
import posixpath
import pwd
import re
import tempfile
import time

from p2twisted.agent.fsutil import flushedSince, fsyncDir, syncFilesystem
from p2twisted.agent.layout import cgroupName as launchableCgroup
from p2twisted.errors import AgentError

#: The variables P2 sets in a pod's env dirs and command line.  A launchable's
#: C{env} may not set them: the launchable env dir is loaded after the pod's,
#: so a user value would silently replace P2's (as it did in P2).
RESERVED_ENV = frozenset([
    "POD_ID", "POD_HOME", "POD_UNIQUE_KEY", "CONFIG_PATH", "POD_ADDRESS",
    "LAUNCHABLE_ID", "LAUNCHABLE_ROOT", "RESTART_TIMEOUT", "ENTRY_POINT",
])


# -- atomic files --------------------------------------------------------------

def _fsyncDir(path):
    try:
        fsyncDir(path)
    except OSError:
        pass


def atomicWrite(path, data, mode=0o644, owner=None, syncDir=True):
    """
    Replace the file C{path} with C{data} (bytes) atomically: readers see the
    old content or the new one, never a part.

    @param mode: the new file's permission bits.
    @param owner: C{(uid, gid)} to give the file, or C{None} to leave it
        owned by this process.
    @param syncDir: whether to fsync the directory afterwards (callers writing
        many files in one directory sync it once themselves).
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp", dir=directory)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, owner[0], owner[1])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if syncDir:
        _fsyncDir(directory)
    return path


class StagedFiles(object):
    """
    Files replaced together with as few flushes as crash safety allows:
    L{add} writes each under a temporary name in its directory (nothing
    reads those), L{commit} makes sure they are on disk (one C{syncfs}, none
    when one began since they were written, e.g. an install's), then
    renames each over its name.  A crash leaves every file old or new,
    never a part.  The renames themselves are not flushed: the caller
    flushes them (L{fsutil.syncFilesystem}, L{fsutil.fsyncDir}) before it
    relies on them surviving a crash.
    """

    def __init__(self):
        self._pending = []
        self._removals = []
        self._prunes = []
        #: When the last file was written (C{time.monotonic()}).
        self.writtenAt = None

    def add(self, path, data, mode=0o644, owner=None):
        """
        Write C{data} (bytes) to a temporary file beside C{path}.

        @param owner: C{(uid, gid)} to give the file, or C{None}.
        @raise OSError: if it cannot be written (nothing of it remains).
        """
        directory = os.path.dirname(path) or "."
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp", dir=directory)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, mode)
                if owner is not None:
                    os.fchown(fd, owner[0], owner[1])
            finally:
                os.close(fd)
        except BaseException:
            _unlink(tmp)
            raise
        self._pending.append((tmp, path))
        self.writtenAt = time.monotonic()

    def removeOthers(self, directory, keep):
        """
        At L{commit}, after the renames, delete the files of C{directory}
        not named in C{keep} (subdirectories stay).
        """
        self._removals.append((directory, frozenset(keep)))

    def pruneConfigs(self, podLayout, path):
        """
        At L{commit}: prune the pod's config files but C{path} and the most
        recently written other (L{writeConfig}).
        """
        self._prunes.append((podLayout, path))

    def commit(self):
        """
        Flush the temporary files (unless a flush began since they were
        written), rename them into place, then do the removals.

        @raise OSError: if the flush or a rename fails (the files not
            renamed are deleted).
        """
        try:
            if self._pending and not flushedSince(self._pending[0][0], self.writtenAt):
                syncFilesystem(self._pending[0][0])
            while self._pending:
                tmp, path = self._pending[0]
                os.replace(tmp, path)
                self._pending.pop(0)
        finally:
            self.abort()
        for directory, keep in self._removals:
            for name in os.listdir(directory):
                if name not in keep:
                    path = os.path.join(directory, name)
                    if os.path.isdir(path) and not os.path.islink(path):
                        continue
                    os.unlink(path)
        for podLayout, path in self._prunes:
            _pruneConfigs(podLayout, path)

    def abort(self):
        """
        Delete the temporary files not renamed yet.
        """
        while self._pending:
            _unlink(self._pending.pop()[0])


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _makedirs(path, mode=0o755):
    try:
        os.makedirs(path, mode)
    except OSError as e:
        if e.errno != errno.EEXIST or not os.path.isdir(path):
            raise AgentError("cannot create directory %s: %s" % (path, e.strerror))


# -- config --------------------------------------------------------------------

def writeConfig(podLayout, manifestSha, configBytes, owner=None, staged=None):
    """
    Write the pod's C{config} map (already serialized as YAML bytes) to
    C{config/<pod>_<sha>.yaml}, atomically, readable by everyone (mode 0644;
    C{owner} as in L{atomicWrite}).  Older config files of other SHAs are
    pruned, except the most recently written one (the version now running,
    which may still read its file until it is halted).

    @param staged: a L{StagedFiles} to add the file to (then it is written,
        and the others pruned, at its C{commit}), or C{None} to write it now.
    @return: the config file's path (the pod's C{CONFIG_PATH}).
    @raise AgentError: if the file cannot be written.
    """
    directory = podLayout.configDir
    _makedirs(directory)
    path = podLayout.configPath(manifestSha)
    now = staged is None
    staged = StagedFiles() if now else staged
    try:
        staged.add(path, configBytes, owner=owner)
        staged.pruneConfigs(podLayout, path)
        if now:
            staged.commit()
            _fsyncDir(directory)
    except OSError as e:
        raise AgentError("cannot write config file %s: %s" % (path, e.strerror))
    return path


def _pruneConfigs(podLayout, path):
    directory = podLayout.configDir
    prefix, suffix = podLayout.podId + "_", ".yaml"
    others = []
    for name in os.listdir(directory):
        other = os.path.join(directory, name)
        if (name.startswith(prefix) and name.endswith(suffix) and other != path):
            try:
                others.append((os.lstat(other).st_mtime_ns, name, other))
            except OSError:
                pass
    others.sort(reverse=True)
    for _, _, stale in others[1:]:
        _unlink(stale)


# -- env dirs ------------------------------------------------------------------

def _checkName(name, where):
    if (not name or "=" in name or "/" in name or "\0" in name
            or name.startswith(".")):
        raise AgentError("invalid environment variable name %r in %s "
                         "(no '=', '/', NUL, or leading '.')" % (name, where))


def envFileBytes(value):
    """
    @return: the env-dir file content for C{value} (str or bytes): newlines
        become NUL bytes (chpst turns them back), followed by one newline, so
        that an empty value is a one-line file (set to empty) and not an empty
        file (which unsets).
    @raise ValueError: if the value ends with a space or a tab, which chpst
        strips and so cannot be held by an env dir.
    """
    if not isinstance(value, bytes):
        value = str(value).encode("utf-8")
    if value.endswith((b" ", b"\t")):
        raise ValueError("ends with a space or tab")
    return value.replace(b"\n", b"\0") + b"\n"


def writeEnvDir(dirPath, mapping, staged=None):
    """
    Make the directory C{dirPath} an env dir holding exactly C{mapping}
    (names to str or bytes values): one file per variable, each replaced
    atomically (files whose content is unchanged are not rewritten), then
    files of variables no longer in C{mapping} removed.  A reader running
    meanwhile sees every variable either old or new.

    @param staged: a L{StagedFiles} to add the changed files to (then the
        directory changes at its C{commit}), or C{None} to change it now.
    @raise AgentError: for an invalid name or value (named in the message),
        or when the directory cannot be written.
    """
    files = {}
    for name, value in mapping.items():
        _checkName(name, dirPath)
        try:
            files[name] = envFileBytes(value)
        except ValueError as e:
            raise AgentError("environment variable %s in %s: value %s, which "
                             "an env dir cannot hold" % (name, dirPath, e))
    _makedirs(dirPath)
    now = staged is None
    staged = StagedFiles() if now else staged
    try:
        for name, data in sorted(files.items()):
            path = os.path.join(dirPath, name)
            try:
                with open(path, "rb") as f:
                    if f.read() == data:
                        continue
            except OSError:
                pass
            staged.add(path, data)
        staged.removeOthers(dirPath, files)
        if now:
            staged.commit()
    except OSError as e:
        staged.abort()
        raise AgentError("cannot write env dir %s: %s" % (dirPath, e.strerror))
    if now:
        _fsyncDir(dirPath)
    return dirPath


def podEnv(podLayout, podId, configPath, address="127.0.0.1"):
    """
    @param address: the node's pod address (agent setting C{pod_address}).
    @return: the pod env dir's variables: C{POD_ID}, C{POD_HOME},
        C{CONFIG_PATH}, C{POD_UNIQUE_KEY} (the pod id: pods are keyed by id),
        C{POD_ADDRESS} (where the pod should listen: its health is checked
        there; several agents on one host each have their own).
    """
    return {
        "POD_ID": podId,
        "POD_HOME": podLayout.home,
        "CONFIG_PATH": configPath,
        "POD_UNIQUE_KEY": podId,
        "POD_ADDRESS": address,
    }


def launchableEnv(podLayout, launchableId, restartTimeout, userEnv):
    """
    @param restartTimeout: seconds (int or float; rounded up to whole
        seconds).
    @param userEnv: the launchable's C{env} map, or C{None}.

    @return: the launchable env dir's variables: C{LAUNCHABLE_ID},
        C{LAUNCHABLE_ROOT} (the launchable's C{current} link), C{RESTART_TIMEOUT}
        (whole seconds), then C{userEnv}'s (values converted with C{str}).
    @raise AgentError: if C{userEnv} sets one of L{RESERVED_ENV} or an invalid
        name: P2's variables are never overridden.
    """
    env = {
        "LAUNCHABLE_ID": launchableId,
        "LAUNCHABLE_ROOT": podLayout.current(launchableId),
        "RESTART_TIMEOUT": "%d" % (int(math.ceil(restartTimeout)),),
    }
    for name, value in sorted((userEnv or {}).items()):
        name = str(name)
        if name in RESERVED_ENV:
            raise AgentError(
                "launchable %s of pod %s: env may not set %s, which P2 sets; "
                "rename the variable in the manifest"
                % (launchableId, podLayout.podId, name))
        _checkName(name, "launchable %s env" % (launchableId,))
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif value is None:
            value = ""
        env[name] = value if isinstance(value, bytes) else str(value)
    return env


# -- the run command -------------------------------------------------------------

def entryPointPath(podLayout, launchableId, entryPath):
    """
    @return: C{(relative, absolute)}: the entry point normalized relative to
        the launchable root, and its path under the C{current} link.
    @raise AgentError: if C{entryPath} is empty, absolute or leaves the
        launchable root.
    """
    rel = posixpath.normpath(entryPath or "")
    if (not entryPath or posixpath.isabs(entryPath) or rel == "."
            or rel == ".." or rel.startswith("../")):
        raise AgentError("launchable %s of pod %s: entry point %r must be a "
                         "path inside the launchable"
                         % (launchableId, podLayout.podId, entryPath))
    return rel, os.path.join(podLayout.current(launchableId), rel)


def _number(value):
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def execArgv(p2execPath, podLayout, launchableId, runAs, entryPath,
             cgroupName=None, cpus=None, memory=None, pids=None):
    """
    @param p2execPath: the C{p2-exec} command (a path, or a list for a
        command of several words such as C{[python, "-m", ...]}).
    @param entryPath: the entry point relative to the launchable root.
    @param cgroupName: the cgroup C{p2/<name>} to join, or C{None} for none
        (then C{cpus}, C{memory} and C{pids} are ignored).
    @param memory: bytes.

    @return: the argv a service's C{run} script execs:
        C{p2-exec -n -u RUN_AS -e POD_ENV -e LAUNCHABLE_ENV
        --extra-env ENTRY_POINT=REL [--cgroup NAME [--cpus N] [--memory B]
        [--pids N]] -- ABS_ENTRY}.
    @raise AgentError: for a bad entry point.
    """
    rel, absolute = entryPointPath(podLayout, launchableId, entryPath)
    if isinstance(p2execPath, (list, tuple)):
        argv = list(p2execPath)
    else:
        argv = [p2execPath]
    argv += ["-n", "-u", runAs,
             "-e", podLayout.envDir,
             "-e", podLayout.launchableEnvDir(launchableId),
             "--extra-env", "ENTRY_POINT=" + rel]
    limits = [("--cpus", cpus), ("--memory", memory), ("--pids", pids)]
    limits = [(flag, value) for flag, value in limits if value is not None]
    if cgroupName is not None and limits:
        argv += ["--cgroup", cgroupName]
        for flag, value in limits:
            argv += [flag, _number(value)]
    argv += ["--", absolute]
    return argv


#: What L{chpstArgv} runs first: p2-exec's default umask, then the rest.
_UMASK_THEN = 'umask 022 && exec "$@"'


#: The most groups chpst's C{-u :uid:gid...} takes (runit's uidgid.h): it
#: refuses more ("invalid uid/gids").
CHPST_MAX_GROUPS = 60


def chpstUser(user):
    """
    @return: chpst's C{-u} argument for the user named C{user}: numeric (a
        leading colon), its primary group first, then its other groups, as
        C{initgroups} would give them (p2-exec's C{-u}); C{None} when the
        user is in more groups than chpst takes (L{CHPST_MAX_GROUPS}).
    @raise AgentError: if there is no such user.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise AgentError("run_as user %s does not exist" % (user,))
    groups = [entry.pw_gid] + [g for g in os.getgrouplist(entry.pw_name, entry.pw_gid)
                               if g != entry.pw_gid]
    if len(groups) > CHPST_MAX_GROUPS:
        return None
    return ":%d:%s" % (entry.pw_uid, ":".join("%d" % (g,) for g in groups))


#: Variables that change what a program does before it switches user, or
#: what the shell running the C{run} script does: glibc's own list of those
#: it drops for set-user-ID programs (C{unsecvars.h}, and its C{LD_},
#: C{MALLOC_} and C{GLIBC_} families), the shell's, and bash's read-only ones
#: (assigning one stops a non-interactive C{sh} that is bash).  Given to a
#: root C{chpst} they would run the manifest's choice as root
#: (C{LD_PRELOAD}): pods setting one start by p2-exec, which sets the
#: environment only after it switched user.
_ROOT_UNSAFE_ENV = frozenset([
    "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
    "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR",
    "IFS", "ENV", "BASH_ENV", "CDPATH", "PS4", "SHELLOPTS", "BASHOPTS",
    "BASH_VERSINFO", "EUID", "UID", "PPID",
])
_ROOT_UNSAFE_PREFIXES = ("LD_", "MALLOC_", "GLIBC_")
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _inlinable(name, value):
    """
    @return: whether the run script of a pod started by chpst may export
        the variable C{name=value}: a shell name, not L{_ROOT_UNSAFE_ENV}, a
        text value a process environment holds as it is (no NUL).
    """
    return (isinstance(value, str) and "\0" not in value
            and _SHELL_NAME.fullmatch(name) is not None and name not in _ROOT_UNSAFE_ENV
            and not name.startswith(_ROOT_UNSAFE_PREFIXES))


def chpstArgv(chpst, podLayout, launchableId, runAs, entryPath, environment,
              switchUser=True):
    """
    The start of a launchable's entry point without p2-exec, when it needs
    nothing only p2-exec does (joining a cgroup, setting a variable only
    after switching user): runit's C{chpst}, a C program that starts in a
    millisecond where p2-exec's Python takes tens.  Same effect as
    L{execArgv} without a cgroup: umask 022, the pod's and the launchable's
    env dir variables, C{ENTRY_POINT} (P2's variables cannot be set by the
    env dirs, see L{RESERVED_ENV}), C{run_as}'s uid and groups, a new
    session, exec.  p2-exec's C{-n} (soft limits raised to the hard ones) is
    inherited: the agent raised its own limits (L{raiseOwnLimits}) before
    starting the supervisor.  (chpst's own limit options cannot say
    "unlimited": they would lower an unlimited soft limit to a number.)

    No env dir is read: what the pod's user can replace (the pod home is
    theirs) must not reach the programs run as root before chpst switches
    user, and a chpst C{-e} applies only to the program it starts.

    @param environment: the variables of the pod's and the launchable's env
        dirs (L{podEnv}, L{launchableEnv}), as the deploy writing them has
        them: set in the returned environment.
    @param switchUser: C{False} when the agent is not root (then, as with
        p2-exec, the pod runs as the agent's user).
    @return: C{(argv, env)}, or C{None} when chpst cannot start it: the user
        is in more groups than chpst takes, or C{environment} sets a
        variable a program run as root must not see (L{_ROOT_UNSAFE_ENV}) or
        that an environment cannot hold as it is (bytes, NUL).  Start it with
        p2-exec then: it sets the environment after switching user.
    @raise AgentError: for a bad entry point or a missing user.
    """
    rel, absolute = entryPointPath(podLayout, launchableId, entryPath)
    if not all(_inlinable(name, value) for name, value in environment.items()):
        return None
    env = dict(environment, ENTRY_POINT=rel)
    argv = ["/bin/sh", "-c", _UMASK_THEN, "p2-start", chpst, "-P"]
    if switchUser:
        user = chpstUser(runAs)
        if user is None:
            return None
        argv += ["-u", user]
    argv.append(absolute)
    return argv, env


def raiseOwnLimits(isRoot):
    """
    Raise this process's soft limits as p2-exec's C{-n} does, so that the
    supervisors it starts, and the pods they start with L{chpstArgv}, have
    them raised too.

    @return: whether every soft limit p2-exec raises now equals its hard
        limit (else pods must start through p2-exec).
    """
    import resource
    from p2twisted.agent.p2exec import NOLIMIT_RESOURCES, raiseLimits
    raiseLimits(isRoot)
    return all(soft == hard for soft, hard in map(resource.getrlimit, NOLIMIT_RESOURCES))


def launchableArgv(p2execPath, podLayout, manifest, launchableId, runAs, entryPath):
    """
    @return: the argv running C{entryPath} of a launchable of C{manifest} as
        its processes run: L{execArgv} in the launchable's cgroup
        (C{p2/<pod>@<launchable>}) with its limits, when it declares any.
    """
    cgroup = manifest.launchables[launchableId].cgroup or {}
    return execArgv(p2execPath, podLayout, launchableId, runAs, entryPath,
                    cgroupName=launchableCgroup(manifest.id, launchableId) if cgroup else None,
                    cpus=cgroup.get("cpus"), memory=cgroup.get("memory"))


def currentUser():
    """
    @return: this process's user name (or its uid as a string if it has no
        passwd entry).
    """
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def podUser(manifest, isRoot):
    """
    @param isRoot: whether the agent runs as root.
    @return: the account pod C{manifest} (and its tasks) run as here: its
        C{run_as} when the agent is root, else the agent's own user, since
        only root can switch users.  The auth policy judges a manifest or a
        request as this user.
    """
    return manifest.runAs if isRoot else currentUser()
