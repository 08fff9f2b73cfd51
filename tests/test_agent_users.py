"""
The accounts pods run as (L{p2twisted.agent.users}): no privilege by name,
accounts the agent created deleted once unused, and never one it did not
create.  As root these tests create and delete real accounts (C{p2t...}).
"""

import json
import os
import pwd
import subprocess
import uuid

from twisted.trial import unittest

from p2twisted.agent import runtime
from p2twisted.agent.users import COMMENT, NOLOGIN_SHELLS, PodUsers
from p2twisted.errors import AgentError
from p2twisted.manifest import parseManifest


def manifest(podId, runAs=None):
    text = "id: %s\n" % (podId,)
    if runAs is not None:
        text += "run_as: %s\n" % (runAs,)
    text += "launchables:\n  web:\n    launchable_type: hoist\n    location: file:///x.tar.gz\n"
    return parseManifest(text.encode())


def exists(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


class NotRootTests(unittest.SynchronousTestCase):
    """
    Not as root, every pod runs as the agent's user.
    """

    def test_agentUser(self):
        """
        C{run_as} is ignored (and the result says so); nothing is created or
        deleted.
        """
        base = os.path.abspath(self.mktemp())
        users = PodUsers(os.path.join(base, "state"), os.path.join(base, "pods"), isRoot=False)
        me = runtime.currentUser()
        self.assertEqual(users.ensure(manifest("web", "p2t-someone"), "/x"), (me, True, False))
        self.assertEqual(users.ensure(manifest("web", me), "/x"), (me, False, False))
        self.assertEqual(users.removeUnused(set()), ([], []))
        self.assertFalse(os.path.exists(users.recordPath))


class RootTests(unittest.SynchronousTestCase):
    """
    As root: what a pod may run as, and the accounts' lifecycle.
    """

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("creating accounts needs root")
        if not any(os.path.exists(os.path.join(d, "useradd")) for d in ("/usr/sbin", "/sbin")):
            raise unittest.SkipTest("no useradd on this machine")
        base = os.path.abspath(self.mktemp())
        self.podRoot = os.path.join(base, "pods")
        self.users = self.make()

    def make(self, **kwargs):
        return PodUsers(os.path.join(os.path.dirname(self.podRoot), "state"), self.podRoot,
                        **kwargs)

    def newName(self):
        name = "p2t" + uuid.uuid4().hex[:8]
        self.addCleanup(subprocess.call, ["userdel", name],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return name

    def home(self, podId):
        return os.path.join(self.podRoot, podId)

    def test_rootByPodId(self):
        """
        A pod with no C{run_as} whose id names an existing account (C{id:
        root}) is refused, even when that account is in C{allowed_run_as}:
        only an explicit C{run_as} may name it.
        """
        for users in (self.users, self.make(allowed=["root"])):
            error = self.assertRaises(AgentError, users.ensure, manifest("root"),
                                      self.home("root"))
            self.assertEqual(
                str(error), "pod root has no run_as, and its id names the existing account "
                            "root (uid 0), which the agent did not create; set run_as to an "
                            "account for this pod (a missing one is created)")

    def test_systemAccountNeedsAllowing(self):
        """
        An explicit C{run_as} naming root or another existing account the
        agent did not create is refused unless C{allowed_run_as} lists it.
        """
        for name in ("root", "nobody"):
            error = self.assertRaises(AgentError, self.users.ensure, manifest("web", name),
                                      self.home("web"))
            self.assertIn("pod web: run_as %s is an existing account (uid %d) the agent did "
                          "not create; list it in allowed_run_as" % (name, exists(name).pw_uid),
                          str(error))
        allowed = self.make(allowed=["root", "nobody"])
        self.assertEqual(allowed.ensure(manifest("web", "root"), "/x"), ("root", False, False))
        self.assertEqual(allowed.ensure(manifest("web", "nobody"), "/x"),
                         ("nobody", False, False))
        self.assertEqual(allowed.created(), {})

    def test_createdUsedAndDeleted(self):
        """
        A missing account (named by C{run_as} or, without it, by the pod id)
        is created as a system account with the pod home and no login,
        recorded with its uid, used again as it is, and deleted once no pod
        uses it.
        """
        byId = self.newName()
        named = self.newName()
        self.assertEqual(self.users.ensure(manifest(byId), self.home(byId)),
                         (byId, False, True))
        self.assertEqual(self.users.ensure(manifest("web", named), self.home("web")),
                         (named, False, True))
        entry = exists(byId)
        self.assertEqual((entry.pw_dir, entry.pw_gecos), (self.home(byId), COMMENT))
        self.assertIn(entry.pw_shell, NOLOGIN_SHELLS)
        self.assertTrue(entry.pw_uid < 1000, entry.pw_uid)
        self.assertFalse(os.path.exists(self.home(byId)))
        with open(self.users.recordPath) as f:
            self.assertEqual(json.load(f), {"created": {byId: entry.pw_uid,
                                                        named: exists(named).pw_uid}})
        self.assertEqual(self.users.ensure(manifest(byId), self.home(byId)),
                         (byId, False, False))

        self.assertEqual(self.users.removeUnused({named}), ([byId], []))
        self.assertIsNone(exists(byId))
        self.assertIsNotNone(exists(named))
        self.assertEqual(self.users.removeUnused(set()), ([named], []))
        self.assertIsNone(exists(named))
        self.assertEqual(self.users.created(), {})

    def test_missingNotCreated(self):
        """
        A missing account with C{create_users: false} is a clear error.
        """
        name = "p2t" + uuid.uuid4().hex[:8]
        error = self.assertRaises(AgentError, self.make(create=False).ensure,
                                  manifest("web", name), "/x")
        self.assertEqual(
            str(error), "run_as user %s does not exist and create_users is false; "
                        "create the user or set create_users: true in the agent "
                        "config" % (name,))

    def test_useraddFails(self):
        """
        A C{useradd} failure is an error quoting its output.
        """
        users = self.make()
        fake = manifest("web", "p2t-x")
        object.__setattr__(fake, "runAs", "bad:name")
        error = self.assertRaises(AgentError, users.ensure, fake, "/x")
        self.assertIn("cannot create run_as user bad:name: useradd exited", str(error))

    def test_notOursNeverDeleted(self):
        """
        An account the agent did not create is never deleted, and neither is
        one recorded whose uid changed (deleted and made again by someone
        else): it is forgotten.
        """
        mine = self.newName()
        self.users.ensure(manifest("web", mine), self.home("web"))
        subprocess.check_call(["userdel", mine])
        subprocess.check_call(["useradd", "--system", "--uid", "3999", "--no-create-home",
                               "--home-dir", "/nonexistent", mine])
        theirs = self.newName()
        subprocess.check_call(["useradd", "--system", "--no-create-home", theirs])
        self.assertEqual(self.users.removeUnused(set()), ([], []))
        self.assertIsNotNone(exists(mine))
        self.assertIsNotNone(exists(theirs))
        self.assertEqual(self.users.created(), {})

    def test_runningProcessKeepsAccount(self):
        """
        An unused account that still runs a process is kept (and said why);
        once the process has ended (even if not yet reaped) it is deleted.
        """
        name = self.newName()
        self.users.ensure(manifest("web", name), self.home("web"))
        entry = exists(name)
        process = subprocess.Popen(["sleep", "1000"], preexec_fn=lambda: os.setuid(entry.pw_uid))
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        removed, kept = self.users.removeUnused(set())
        self.assertEqual(removed, [])
        self.assertEqual(kept, [(name, "process %d (sleep 1000) still runs as it"
                                 % (process.pid,))])
        process.kill()
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # a zombie now
        self.assertEqual(self.users.removeUnused(set()), ([name], []))

    def test_adoptsEarlierAgentsAccount(self):
        """
        An account an earlier agent made without a record (home directly
        under the pod root, no-login shell) is the agent's: usable by default
        and deleted when unused.
        """
        name = self.newName()
        subprocess.check_call(["useradd", "--system", "--no-create-home", "--home-dir",
                               self.home(name), "--shell", NOLOGIN_SHELLS[0], name])
        self.assertEqual(self.users.ensure(manifest(name), self.home(name)),
                         (name, False, False))
        self.assertEqual(self.users.created(), {name: exists(name).pw_uid})
        self.assertEqual(self.users.removeUnused(set()), ([name], []))

    def test_anotherAgentsAccount(self):
        """
        An account another agent of this host created for pods (its GECOS,
        no-login shell and system uid say so) may be used, but is not this
        agent's to delete.
        """
        name = self.newName()
        other = PodUsers(os.path.abspath(self.mktemp()), os.path.abspath(self.mktemp()))
        other.ensure(manifest(name), "/elsewhere/" + name)
        self.assertEqual(self.users.ensure(manifest(name), self.home(name)),
                         (name, False, False))
        self.assertEqual(self.users.removeUnused(set()), ([], []))
        self.assertIsNotNone(exists(name))
        self.assertEqual(other.removeUnused(set()), ([name], []))
