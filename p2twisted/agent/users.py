# -*- test-case-name: tests.test_agent_users -*-
"""
The Unix accounts pods run as: no privilege by name (DESIGN.md, "Least
privilege by default").

As root, a pod's C{run_as} (the pod id when the manifest gives none) may
resolve only to:

    - an account this agent created for pods (missing accounts are created,
      as system users whose home is the pod home, unless C{create_users} is
      false), or another agent of this host did (its GECOS says so), or
    - an existing account the manifest names explicitly in C{run_as} I{and}
      the agent config lists in C{allowed_run_as} (C{root}, C{nobody}, a
      service account made by hand).

Anything else (C{id: root} without C{run_as}, a pod id that happens to name
a system account, C{run_as: root} on an agent that does not allow it) is
refused with an L{AgentError} that says why and what to do.

The accounts the agent created are recorded, with their uid, in
C{<state_dir>/users.json}; they are deleted (C{userdel}) once no installed pod
uses them and no process of theirs runs, and only while they still have the
recorded uid: the agent never deletes an account it did not create.  An
account an earlier agent made without recording it (home directly under the
pod root, a no-login shell) is adopted.

Not as root, every pod runs as the agent's own user; nothing is created or
deleted.

Everything here is synchronous (C{useradd}, C{userdel}, reading C{/proc}):
call it from a thread.
"""

import json
import os
import pwd
import subprocess

from p2twisted.agent.runtime import atomicWrite, currentUser
from p2twisted.errors import AgentError

#: The login shells given to the accounts the agent creates.
NOLOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")

#: The GECOS field of the accounts the agent creates (for people reading
#: /etc/passwd; the record in the state directory is what the agent trusts).
COMMENT = "p2 pod account"

#: The record of the accounts the agent created, in its state directory.
RECORD_FILE = "users.json"


def _nologin():
    for shell in NOLOGIN_SHELLS:
        if os.path.exists(shell):
            return shell
    return NOLOGIN_SHELLS[-1]


def _program(name):
    # The agent's PATH may lack the sbin directories.
    for directory in ("/usr/sbin", "/sbin"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return name


def _entry(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _run(argv):
    """
    @return: C{(exit code, output as one line)}.
    @raise OSError: if the program cannot be run.
    """
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    return result.returncode, " ".join(result.stdout.decode("utf-8", "replace").split())


def processesOf(uid):
    """
    @return: the pids of the live (not zombie) processes whose real,
        effective or saved uid is C{uid}.
    """
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/status" % (entry,)) as f:
                for line in f:
                    if line.startswith("State:") and line.split()[1] == "Z":
                        break
                    if line.startswith("Uid:"):
                        if str(uid) in line.split()[1:4]:
                            pids.append(int(entry))
                        break
        except (OSError, IndexError):
            continue
    return pids


def podAccount(entry):
    """
    @return: whether the passwd C{entry} is an account some p2 agent created
        for pods (another agent of this host, with another state directory):
        L{COMMENT} as its GECOS, a no-login shell and a system uid.  Such an
        account may be used, but only the agent that recorded it deletes it.
    """
    return (entry.pw_gecos == COMMENT and entry.pw_shell in NOLOGIN_SHELLS
            and 0 < entry.pw_uid < 1000)


def describeProcess(pid):
    """
    @return: C{"process <pid> (<command line>)"}, for logs.
    """
    try:
        with open("/proc/%d/cmdline" % (pid,), "rb") as f:
            argv = f.read().split(b"\0")
        command = b" ".join(argv).strip().decode("utf-8", "replace")[:80]
    except OSError:
        command = "gone"
    return "process %d (%s)" % (pid, command)


class PodUsers(object):
    """
    Resolves, creates and deletes the accounts of this agent's pods.

    @param stateDir: the agent's state directory (holds L{RECORD_FILE}).
    @param podRoot: the agent's pod root (the homes of its accounts).
    @param create: the config's C{create_users}.
    @param allowed: the config's C{allowed_run_as}: existing accounts a
        manifest may name in C{run_as}.
    @param isRoot: whether the agent runs as root (default: C{geteuid() == 0}).
    """

    def __init__(self, stateDir, podRoot, create=True, allowed=(), isRoot=None):
        self.recordPath = os.path.join(stateDir, RECORD_FILE)
        self.podRoot = os.path.abspath(podRoot)
        self.create = create
        self.allowed = frozenset(allowed)
        self.isRoot = (os.geteuid() == 0) if isRoot is None else isRoot

    # -- the record ------------------------------------------------------------

    def created(self):
        """
        @return: C{{name: uid}} of the accounts this agent created.
        """
        try:
            with open(self.recordPath) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise AgentError("cannot read the agent's account record %s: %s; fix or delete it "
                             "(the accounts it lists are then kept)" % (self.recordPath, e))
        return {str(k): int(v) for k, v in (data.get("created") or {}).items()}

    def _write(self, created):
        os.makedirs(os.path.dirname(self.recordPath), exist_ok=True)
        atomicWrite(self.recordPath, json.dumps({"created": created}, sort_keys=True,
                                                indent=1).encode() + b"\n", mode=0o600)

    def _ours(self, name, entry, created):
        """
        @return: whether C{entry} is an account this agent created: recorded
            with its uid, or made by an earlier agent that kept no record
            (home directly under the pod root, no-login shell), which is then
            recorded.
        """
        if created.get(name) == entry.pw_uid:
            return True
        if (name not in created and os.path.dirname(os.path.normpath(entry.pw_dir))
                == self.podRoot and entry.pw_shell in NOLOGIN_SHELLS):
            created[name] = entry.pw_uid
            self._write(created)
            return True
        return False

    # -- resolve ---------------------------------------------------------------

    def ensure(self, manifest, home):
        """
        Resolve the account C{manifest}'s pod runs as, creating it if it is
        missing.

        @param home: the pod home (a created account's home directory).
        @return: C{(user, runAsIgnored, createdNow)}: the account, whether
            C{run_as} was ignored (the agent is not root), and whether it was
            created by this call.
        @raise AgentError: if the account may not be used (saying why and
            what to do), is missing and C{create_users} is false, or
            C{useradd} fails.
        """
        name = manifest.runAs
        if not self.isRoot:
            user = currentUser()
            return user, user != name, False
        explicit = getattr(manifest, "runAsGiven", True)
        created = self.created()
        entry = _entry(name)
        if entry is not None:
            if self._ours(name, entry, created) or podAccount(entry):
                return name, False, False
            if explicit and name in self.allowed:
                return name, False, False
            if not explicit:
                raise AgentError(
                    "pod %s has no run_as, and its id names the existing account %s (uid %d), "
                    "which the agent did not create; set run_as to an account for this pod "
                    "(a missing one is created)" % (manifest.id, name, entry.pw_uid))
            raise AgentError(
                "pod %s: run_as %s is an existing account (uid %d) the agent did not create; "
                "list it in allowed_run_as in the agent config to let pods run as it, or "
                "choose another run_as (a missing one is created)"
                % (manifest.id, name, entry.pw_uid))
        if not self.create:
            raise AgentError(
                "run_as user %s does not exist and create_users is false; create "
                "the user or set create_users: true in the agent config" % (name,))
        argv = [_program("useradd"), "--system", "--home-dir", home, "--no-create-home",
                "--shell", _nologin(), "--comment", COMMENT, name]
        try:
            code, output = _run(argv)
        except OSError as e:
            raise AgentError("cannot create run_as user %s: cannot run useradd: %s"
                             % (name, e.strerror))
        entry = _entry(name)
        if code != 0 or entry is None:
            # (Another agent creating the same name at once is not ours.)
            raise AgentError("cannot create run_as user %s: useradd exited %d: %s"
                             % (name, code, output or "no output"))
        created[name] = entry.pw_uid
        self._write(created)
        return name, False, True

    # -- delete ----------------------------------------------------------------

    def removeUnused(self, inUse):
        """
        Delete the accounts this agent created that are not in C{inUse} and
        run no process.  An account whose uid is no longer the recorded one
        (deleted and made again by someone else) is forgotten, not deleted.

        @param inUse: the names of the accounts pods use or are about to.
        @return: C{(removed, kept)}: the names deleted, and C{(name, why)} of
            the unused ones kept.
        """
        if not self.isRoot:
            return [], []
        created = self.created()
        removed, kept, forgotten = [], [], False
        for name, uid in sorted(created.items()):
            if name in inUse:
                continue
            entry = _entry(name)
            if entry is None or entry.pw_uid != uid:
                del created[name]
                forgotten = True
                continue
            running = processesOf(uid)
            if running:
                kept.append((name, "%s still run%s as it" % (
                    ", ".join(describeProcess(pid) for pid in running[:3]),
                    "s" if len(running) == 1 else "")))
                continue
            try:
                code, output = _run([_program("userdel"), name])
            except OSError as e:
                code, output = -1, e.strerror
            if code != 0 and _entry(name) is not None:
                kept.append((name, "userdel exited %d: %s" % (code, output or "no output")))
                continue
            del created[name]
            removed.append(name)
        if removed or forgotten:
            self._write(created)
        return removed, kept
