# -*- test-case-name: tests.test_agent_p2exec -*-
"""
C{p2-exec}: the only way a pod or hook process starts (DESIGN.md, "Machine
agent"; reference/p2.md section 4).

    p2-exec [-e ENVDIR]... [--extra-env K=V]... [-u USER] [--clear-env] [-n]
            [--umask 022] [--chdir DIR] [--cgroup NAME] [--cpus N]
            [--memory BYTES] [--pids N] -- COMMAND [ARGS...]

Plain Python and the standard library only (no Twisted): it runs for every
process start, so it must start fast and run under any Python that can read
this file.  In order, as P2's C{p2-exec}:

 1. C{umask} (default C{022}).
 2. C{--clear-env}: start from an empty environment holding only
    C{PATH=/usr/local/bin:/usr/bin:/bin}.
 3. C{-e DIR} (repeatable, in order): chpst/envdir semantics.  Each file is a
    variable; its value is the file's first line with trailing spaces and tabs
    stripped and NUL bytes turned into newlines; an empty file unsets the
    variable.  Names starting with C{.} and sub-directories are skipped; a
    name holding C{=} is an error.
 4. C{--extra-env K=V} (repeatable).
 5. C{-n}: for CPU, FSIZE, DATA, RSS, NPROC, NOFILE, MEMLOCK, AS, LOCKS,
    SIGPENDING and MSGQUEUE the soft limit is raised to the hard limit; as root
    NOFILE's hard (and soft) limit is first raised to C{fs.nr_open}.  STACK and
    CORE are left alone on purpose (an unlimited stack changes the memory
    layout, unlimited cores fill disks).
 6. C{--cgroup NAME} with any of C{--cpus}, C{--memory}, C{--pids}: create (or
    reuse) and join the cgroup C{p2/NAME}.  cgroup v2 when a cgroup2 mount
    offers every needed controller: C{<cgroup2 root>/p2/NAME} with
    C{cpu.max}, C{memory.max}, C{pids.max}.  Otherwise cgroup v1, per
    controller hierarchy, nested under the cgroup this process is already in
    (the hierarchy root when p2-exec runs in the root cgroup, as on a plain
    runit host): C{memory.limit_in_bytes}; C{cpu.cfs_period_us} and
    C{cpu.cfs_quota_us} (quota = cpus x period); C{pids.max}.  v2 uses the
    mount root because its "no internal processes" rule forbids enabling
    controllers below a cgroup that holds processes; v1 nests so that a
    containerised host's own limits keep applying.  Whatever cannot be
    applied (no cgroup filesystem, controller missing, not permitted) is
    reported in ONE warning line on stderr, and the command runs anyway.
 7. C{-u USER} (name or numeric uid): as root, initgroups + setgid + setuid.
    Not as root: when USER is not the current user, one warning line and the
    command runs as the current user.
 8. C{--chdir DIR}.
 9. New session and process group: C{os.setsid()} unless this process already
    leads its process group (then it keeps that group, which is already its
    own, and setsid would fail).  Killing the group kills everything the
    command started.
 10. C{execvp}, searching the resulting environment's C{PATH}.

Any failure before the exec (bad arguments, unknown user, missing command,
unreadable env dir) prints one line C{p2-exec: ...} on stderr and exits 111,
runit's convention for "could not exec"; never a traceback.
"""

import errno
import os
import pwd
import resource
import sys
# Nothing may be imported after the user switch: the new user may not be able
# to read this file's directory or the interpreter's standard library (a
# checkout or a Python under /root).  os.execvpe searches PATH with
# os.get_exec_path, which imports warnings lazily, so import it now.
import warnings  # noqa: F401

EXIT_CANNOT_EXEC = 111

DEFAULT_PATH = b"/usr/local/bin:/usr/bin:/bin"

#: The v1 CFS period, in microseconds (the kernel's default).
CFS_PERIOD_US = 100000

#: The resources C{-n} raises (soft limit := hard limit).
NOLIMIT_RESOURCES = tuple(
    getattr(resource, "RLIMIT_" + _name)
    for _name in ("CPU", "FSIZE", "DATA", "RSS", "NPROC", "NOFILE", "MEMLOCK",
                  "AS", "LOCKS", "SIGPENDING", "MSGQUEUE")
    if hasattr(resource, "RLIMIT_" + _name))

_CGROUP_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@-")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ExecError(Exception):
    """
    p2-exec cannot start the command; C{str()} is the one line to print.
    """


# -- arguments ---------------------------------------------------------------

def _size(text):
    text = text.strip()
    digits, unit = (text[:-1], text[-1:].lower()) if text[-1:].isalpha() else (text, "")
    if not (digits.isdigit() and digits.isascii()) or unit not in _SIZE_UNITS:
        raise ValueError("invalid size %r (bytes, or a number with K, M, G or T)" % (text,))
    return int(digits) * _SIZE_UNITS[unit]


def _positiveFloat(text):
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("invalid CPU count %r" % (text,))
    return value


def _positiveInt(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError("invalid count %r" % (text,))
    return value


def _umask(text):
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise ValueError("invalid umask %r (octal)" % (text,))
    return value


def _extraEnv(text):
    name, sep, value = text.partition("=")
    if not sep or not name or "\0" in text:
        raise ValueError("invalid --extra-env %r (want NAME=VALUE)" % (text,))
    return (name, value)


#: p2-exec's options: C{{long name: (attribute, converter, repeatable,
#: default, metavar, help)}}; a converter of C{None} marks a flag.  Parsed by
#: hand rather than with argparse, whose import alone costs a pod start about
#: 13 ms (argparse only prints C{--help}, from this table).
_OPTIONS = {
    "--env-dir": ("envDirs", str, True, None, "ENVDIR",
                  "load variables from ENVDIR (chpst -e); repeatable"),
    "--extra-env": ("extraEnv", _extraEnv, True, None, "K=V",
                    "set one variable after the env dirs; repeatable"),
    "--user": ("user", str, False, None, "USER", "run as USER (name or uid); needs root"),
    "--clear-env": ("clearEnv", None, False, False, None,
                    "start from an empty environment (PATH only)"),
    "--nolimit": ("nolimit", None, False, False, None,
                  "raise soft rlimits to the hard limits"),
    "--umask": ("umask", _umask, False, 0o022, "OCTAL", "umask (default 022)"),
    "--chdir": ("chdir", str, False, None, "DIR", "change to DIR before the exec"),
    "--cgroup": ("cgroup", str, False, None, "NAME",
                 "join cgroup p2/NAME with the limits below"),
    "--cpus": ("cpus", _positiveFloat, False, None, "N", "CPU quota in CPUs (e.g. 0.5)"),
    "--memory": ("memory", _size, False, None, "BYTES", "memory limit (e.g. 512M)"),
    "--pids": ("pids", _positiveInt, False, None, "N", "maximum number of tasks"),
}
_SHORT = {"-e": "--env-dir", "-u": "--user", "-n": "--nolimit"}


class Options(object):
    """
    Parsed p2-exec options (attributes as in L{_OPTIONS}, plus C{command}).
    """

    def __init__(self):
        for attribute, _, repeatable, default, _, _ in _OPTIONS.values():
            setattr(self, attribute, [] if repeatable else default)
        self.command = []


def _parseOptions(options):
    """
    @return: the L{Options} of C{options} (the arguments before the command).
    @raise ExecError: for an unknown option, a missing or bad value.
    """
    args = Options()
    unknown = []
    rest = list(options)
    while rest:
        arg = rest.pop(0)
        if arg in ("-h", "--help"):
            buildParser().print_help()
            sys.exit(0)
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
        elif arg[:2] in _SHORT and len(arg) > 2 and _OPTIONS[_SHORT[arg[:2]]][1]:
            name, eq, value = arg[:2], "=", arg[2:]  # -eDIR
            if value.startswith("="):
                raise ExecError("argument %s: write %s VALUE or %s=VALUE"
                                % (name, name, _SHORT[name]))
        else:
            name, eq, value = arg, "", None
        long = _SHORT.get(name, name)
        if long not in _OPTIONS:
            unknown.append(arg)
            continue
        attribute, convert, repeatable = _OPTIONS[long][:3]
        if convert is None:
            if eq:
                raise ExecError("argument %s: takes no value" % (long,))
            setattr(args, attribute, True)
            continue
        if not eq:
            if not rest:
                raise ExecError("argument %s: expected one argument" % (long,))
            value = rest.pop(0)
        try:
            value = convert(value)
        except ValueError as e:
            raise ExecError("argument %s: %s" % (long, e))
        if repeatable:
            getattr(args, attribute).append(value)
        else:
            setattr(args, attribute, value)
    if unknown:
        raise ExecError("unrecognized arguments: %s" % (" ".join(unknown),))
    return args


def buildParser():
    """
    @return: an C{ArgumentParser} describing p2-exec's options, for
        C{--help} (parsing is L{_parseOptions}).
    """
    import argparse
    parser = argparse.ArgumentParser(
        prog="p2-exec",
        usage="p2-exec [options] -- COMMAND [ARGS...]",
        description="Start a pod or hook process: env dirs, rlimits, cgroup, "
                    "user, new process group, exec.")
    shorts = {name: short for short, name in _SHORT.items()}
    for name, (_, convert, _, _, metavar, text) in _OPTIONS.items():
        flags = [shorts[name], name] if name in shorts else [name]
        if convert is None:
            parser.add_argument(*flags, action="store_true", help=text)
        else:
            parser.add_argument(*flags, metavar=metavar, help=text)
    return parser


def parseArgs(argv):
    """
    Parse p2-exec's arguments (without the program name).

    @return: the options namespace, with C{command} the list after C{--}.
    @raise ExecError: on any bad or missing argument.
    """
    if "--" in argv:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1:]
    else:
        options, command = argv, []
        for index, arg in enumerate(argv):
            if not arg.startswith("-"):
                # Tolerate a command without "--" if no option value precedes.
                previous = argv[index - 1] if index else ""
                if previous in _VALUED_FLAGS:
                    continue
                options, command = argv[:index], argv[index:]
                break
    args = _parseOptions(options)
    args.command = command
    if not command:
        raise ExecError("no command given (usage: p2-exec [options] -- COMMAND)")
    limits = (args.cpus, args.memory, args.pids)
    if args.cgroup is None:
        if limits != (None, None, None):
            raise ExecError("--cpus, --memory and --pids need --cgroup NAME")
    elif not args.cgroup or set(args.cgroup) - _CGROUP_CHARS or args.cgroup in (".", ".."):
        raise ExecError("invalid cgroup name %r (letters, digits, . _ : @ -)"
                        % (args.cgroup,))
    return args


_VALUED_FLAGS = frozenset(
    [name for name, spec in _OPTIONS.items() if spec[1]]
    + [short for short, name in _SHORT.items() if _OPTIONS[name][1]])


# -- environment -------------------------------------------------------------

def readEnvDir(path, env):
    """
    Apply the env dir C{path} to C{env} (a dict of bytes to bytes) with chpst
    C{-e} semantics (see the module docstring).

    @raise ExecError: if the directory or one of its files cannot be read, or
        a file name holds C{=}.
    """
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise ExecError("cannot read env dir %s: %s" % (path, e.strerror))
    for name in names:
        if name.startswith("."):
            continue
        filePath = os.path.join(path, name)
        if os.path.isdir(filePath):
            continue
        if "=" in name:
            raise ExecError("invalid variable name %r in env dir %s" % (name, path))
        try:
            with open(filePath, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ExecError("cannot read %s: %s" % (filePath, e.strerror))
        key = os.fsencode(name)
        if not data:
            env.pop(key, None)
            continue
        value = data.split(b"\n", 1)[0].rstrip(b" \t").replace(b"\0", b"\n")
        env[key] = value
    return env


def buildEnv(args, environ):
    """
    @param environ: the starting environment (bytes to bytes).
    @return: the command's environment after C{--clear-env}, the env dirs and
        C{--extra-env}, as a new dict of bytes to bytes.
    """
    if args.clearEnv:
        env = {b"PATH": DEFAULT_PATH}
    else:
        env = dict(environ)
    for path in args.envDirs:
        readEnvDir(path, env)
    for name, value in args.extraEnv:
        env[os.fsencode(name)] = os.fsencode(value)
    return env


# -- rlimits -----------------------------------------------------------------

def _nrOpen():
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def raiseLimits(isRoot):
    """
    C{-n}: raise every soft limit in L{NOLIMIT_RESOURCES} to its hard limit;
    as root first raise NOFILE's hard limit to C{fs.nr_open}.  A limit that
    cannot be changed is left as it is.
    """
    if isRoot:
        nrOpen = _nrOpen()
        if nrOpen:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nrOpen, nrOpen))
            except (OSError, ValueError):
                pass
    for res in NOLIMIT_RESOURCES:
        try:
            soft, hard = resource.getrlimit(res)
            if soft != hard:
                resource.setrlimit(res, (hard, hard))
        except (OSError, ValueError):
            pass


# -- cgroups -----------------------------------------------------------------

def _unescape(field):
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    import re
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parseMountinfo(text):
    """
    @return: a list of C{(fstype, mountPoint, root, superOptions)} for every
        cgroup or cgroup2 mount in C{text} (the format of
        C{/proc/self/mountinfo}); C{superOptions} is a set of strings.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-")
            fstype = fields[dash + 1]
            superOptions = set(fields[dash + 3].split(","))
            root, mountPoint = _unescape(fields[3]), _unescape(fields[4])
        except (ValueError, IndexError):
            continue
        if fstype in ("cgroup", "cgroup2"):
            mounts.append((fstype, mountPoint, root, superOptions))
    return mounts


def parseProcCgroup(text):
    """
    @return: C{(v1, v2path)} from C{/proc/self/cgroup} text: C{v1} maps each
        v1 controller name to this process's cgroup path; C{v2path} is the
        unified hierarchy's path or C{None}.
    """
    v1, v2 = {}, None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        else:
            for controller in controllers.split(","):
                v1[controller] = path
    return v1, v2


def _v2Controllers(mountPoint):
    try:
        with open(os.path.join(mountPoint, "cgroup.controllers")) as f:
            return set(f.read().split())
    except OSError:
        return set()


def _under(mountPoint, mountRoot, path):
    # The directory of cgroup `path` in a hierarchy mounted from `mountRoot`.
    if mountRoot != "/" and (path == mountRoot or path.startswith(mountRoot + "/")):
        path = path[len(mountRoot):]
    elif mountRoot != "/":
        path = "/"
    return os.path.join(mountPoint, path.lstrip("/"))


def _v1Dir(mountPoint, mountRoot, v1Paths, controller, name):
    # p2/<name> below this process's cgroup in a v1 hierarchy.
    base = _under(mountPoint, mountRoot, v1Paths.get(controller, "/"))
    return os.path.join(base, "p2", name)


def _mkdirs(path):
    try:
        os.makedirs(path)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise


def _write(directory, name, value):
    with open(os.path.join(directory, name), "w") as f:
        f.write(value)


def _join(directory, pid):
    # cgroup.procs moves the whole process; v1 hierarchies always have it,
    # `tasks` is the older per-thread file.
    procs = os.path.join(directory, "cgroup.procs")
    target = procs if os.path.exists(procs) else os.path.join(directory, "tasks")
    with open(target, "w") as f:
        f.write("%d\n" % (pid,))


def _why(e):
    if isinstance(e, OSError) and e.strerror:
        where = " (%s)" % (e.filename,) if e.filename else ""
        return e.strerror.lower() + where
    return str(e)


def _neededControllers(cpus, memory, pids):
    needed = []
    if cpus is not None:
        needed.append("cpu")
    if memory is not None:
        needed.append("memory")
    if pids is not None:
        needed.append("pids")
    return needed


def _procCgroupFiles(mountinfo, procCgroup):
    """
    @return: C{(mountinfo, procCgroup)}, each read from C{/proc/self} when
        C{None}.
    @raise OSError: if one cannot be read.
    """
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    if procCgroup is None:
        with open("/proc/self/cgroup") as f:
            procCgroup = f.read()
    return mountinfo, procCgroup


def setupCgroup(name, cpus=None, memory=None, pids=None, mountinfo=None,
                procCgroup=None, pid=None):
    """
    Create or reuse the cgroup C{p2/<name>}, write the limits given, and move
    process C{pid} (default: this one) into it.

    @param cpus: CPU quota in CPUs, or C{None}.
    @param memory: memory limit in bytes, or C{None}.
    @param pids: maximum number of tasks, or C{None}.
    @param mountinfo: C{/proc/self/mountinfo} text (read when C{None}).
    @param procCgroup: C{/proc/self/cgroup} text (read when C{None}).

    @return: C{(version, applied, warning)}: C{version} is C{2}, C{1} or
        C{None} (nothing applied); C{applied} maps each controller applied to
        its cgroup directory; C{warning} is one line naming what could not be
        applied and why, or C{None}.  Never raises.
    """
    needed = _neededControllers(cpus, memory, pids)
    if not needed:
        return None, {}, None
    if pid is None:
        pid = os.getpid()
    try:
        mountinfo, procCgroup = _procCgroupFiles(mountinfo, procCgroup)
    except OSError as e:
        return None, {}, _warning(name, needed, "cannot read /proc: " + _why(e))
    mounts = parseMountinfo(mountinfo)
    v1Paths, _ = parseProcCgroup(procCgroup)

    for fstype, mountPoint, root, _ in mounts:
        if fstype == "cgroup2" and set(needed) <= _v2Controllers(mountPoint):
            return _setupV2(name, mountPoint, needed, cpus, memory, pids, pid)

    applied, problems = {}, []
    hierarchies = {}
    for controller in needed:
        for fstype, mountPoint, root, options in mounts:
            if fstype == "cgroup" and controller in options:
                hierarchies[controller] = (mountPoint, root)
                break
        else:
            problems.append("no cgroup v1 or v2 %s controller" % (controller,))
    for controller in needed:
        if controller not in hierarchies:
            continue
        mountPoint, root = hierarchies[controller]
        directory = _v1Dir(mountPoint, root, v1Paths, controller, name)
        try:
            _mkdirs(directory)
            if controller == "memory":
                _write(directory, "memory.limit_in_bytes", "%d" % (memory,))
            elif controller == "cpu":
                _write(directory, "cpu.cfs_period_us", "%d" % (CFS_PERIOD_US,))
                _write(directory, "cpu.cfs_quota_us",
                       "%d" % (max(1000, int(round(cpus * CFS_PERIOD_US))),))
            elif controller == "pids":
                _write(directory, "pids.max", "%d" % (pids,))
            _join(directory, pid)
        except OSError as e:
            problems.append("%s: %s" % (controller, _why(e)))
            continue
        applied[controller] = directory
    warning = None
    if problems:
        warning = _warning(name, [c for c in needed if c not in applied],
                           "; ".join(problems))
    return (1 if applied else None), applied, warning


def cgroupDirs(name, mountinfo=None, procCgroup=None):
    """
    @return: every directory L{setupCgroup} may use for C{p2/<name>} when
        run by this process (or a child in the same cgroups): v2's and each
        v1 hierarchy's with a controller it applies.
    """
    mountinfo, procCgroup = _procCgroupFiles(mountinfo, procCgroup)
    v1Paths, _ = parseProcCgroup(procCgroup)
    dirs = []
    for fstype, mountPoint, root, options in parseMountinfo(mountinfo):
        if fstype == "cgroup2":
            dirs.append(os.path.join(mountPoint, "p2", name))
            continue
        controllers = sorted(set(options) & {"cpu", "memory", "pids"})
        if controllers:
            dirs.append(_v1Dir(mountPoint, root, v1Paths, controllers[0], name))
    return dirs


def removeCgroup(name, mountinfo=None, procCgroup=None):
    """
    Remove the (empty) cgroup C{p2/<name>} from every hierarchy.

    @return: C{(removed, problems)}: the directories removed, and one line
        for each that exists but could not be removed (still has processes).
    """
    removed, problems = [], []
    try:
        dirs = cgroupDirs(name, mountinfo, procCgroup)
    except OSError as e:
        return [], ["cannot read /proc: " + _why(e)]
    for directory in dirs:
        try:
            os.rmdir(directory)
        except OSError as e:
            if e.errno != errno.ENOENT:
                problems.append("%s: %s" % (directory, _why(e)))
            continue
        removed.append(directory)
    return removed, problems


def _setupV2(name, mountPoint, needed, cpus, memory, pids, pid):
    enable = " ".join("+" + c for c in needed)
    parent = os.path.join(mountPoint, "p2")
    directory = os.path.join(parent, name)
    try:
        _write(mountPoint, "cgroup.subtree_control", enable)
        _mkdirs(directory)
        _write(parent, "cgroup.subtree_control", enable)
        if cpus is not None:
            quota = max(1000, int(round(cpus * CFS_PERIOD_US)))
            _write(directory, "cpu.max", "%d %d" % (quota, CFS_PERIOD_US))
        if memory is not None:
            _write(directory, "memory.max", "%d" % (memory,))
        if pids is not None:
            _write(directory, "pids.max", "%d" % (pids,))
        _join(directory, pid)
    except OSError as e:
        return None, {}, _warning(name, needed, "cgroup v2: " + _why(e))
    return 2, dict((c, directory) for c in needed), None


def _warning(name, controllers, why):
    return ("p2-exec: warning: cgroup p2/%s: %s limit not applied: %s"
            % (name, "/".join(controllers), why))


# -- user --------------------------------------------------------------------

def lookupUser(user):
    """
    @return: the C{pwd} entry for C{user} (a name, or a numeric uid).
    @raise ExecError: if there is no such user.
    """
    try:
        return pwd.getpwnam(user)
    except KeyError:
        pass
    if user.isdigit():
        try:
            return pwd.getpwuid(int(user))
        except KeyError:
            pass
    raise ExecError("unknown user %r" % (user,))


def switchUser(entry):
    """
    Become the user of C{pwd} entry C{entry}: supplementary groups, gid, uid.
    """
    try:
        os.initgroups(entry.pw_name, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as e:
        raise ExecError("cannot switch to user %s: %s" % (entry.pw_name, e.strerror))


# -- main --------------------------------------------------------------------

def run(argv, stderr):
    """
    Do everything up to the exec, then exec.  Returns only on failure.

    @raise ExecError: if the command cannot be started.
    """
    args = parseArgs(argv)
    os.umask(args.umask)
    env = buildEnv(args, os.environb)
    isRoot = os.geteuid() == 0
    if args.nolimit:
        raiseLimits(isRoot)
    entry = lookupUser(args.user) if args.user is not None else None
    if args.cgroup is not None:
        _, _, warning = setupCgroup(args.cgroup, args.cpus, args.memory, args.pids)
        if warning:
            stderr.write(warning + "\n")
            stderr.flush()
    if entry is not None:
        if isRoot:
            switchUser(entry)
        elif entry.pw_uid != os.geteuid():
            stderr.write("p2-exec: warning: not running as root; ignoring -u %s, "
                         "running as uid %d\n" % (args.user, os.geteuid()))
            stderr.flush()
    if args.chdir is not None:
        try:
            os.chdir(args.chdir)
        except OSError as e:
            raise ExecError("cannot chdir to %s: %s" % (args.chdir, e.strerror))
    if os.getpgrp() != os.getpid():
        os.setsid()
    try:
        os.execvpe(args.command[0], args.command, env)
    except OSError as e:
        raise ExecError("cannot exec %s: %s" % (args.command[0], e.strerror))


def main(argv=None):
    """
    The C{p2-exec} console script.
    """
    if argv is None:
        argv = sys.argv[1:]
    try:
        run(argv, sys.stderr)
    except ExecError as e:
        message = str(e)
    except Exception as e:  # never a traceback
        message = "internal error: %s: %s" % (type(e).__name__, e)
    sys.stderr.write("p2-exec: %s\n" % (" ".join(message.split()),))
    sys.stderr.flush()
    return EXIT_CANNOT_EXEC


if __name__ == "__main__":
    sys.exit(main())
