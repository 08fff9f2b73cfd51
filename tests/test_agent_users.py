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

from twisted.internet import defer, task, threads
from twisted.trial import unittest

from p2twisted.agent import runtime
from p2twisted.agent.users import COMMENT, NOLOGIN_SHELLS, PodUsers
from p2twisted.errors import AgentError
from p2twisted.manifest import parseManifest
from tests.store_contract import waitFor


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

    def test_badRecord(self):
        """
        A record that is not C{{"created": {name: uid}}} JSON is a one-line
        error saying what to do, whatever is wrong with it.
        """
        base = os.path.abspath(self.mktemp())
        users = PodUsers(os.path.join(base, "state"), os.path.join(base, "pods"), isRoot=True)
        os.makedirs(os.path.dirname(users.recordPath))
        for text in ("{", "[]", '{"created": {"web": "x"}}', '{"created": [1]}'):
            with open(users.recordPath, "w") as f:
                f.write(text)
            error = self.assertRaises(AgentError, users.created)
            self.assertIn("cannot read the agent's account record %s: " % (users.recordPath,),
                          str(error))
            self.assertIn("; fix or delete it", str(error))

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
        self.assertEqual(users.removeUnused(set()), ([], [], []))
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

        self.assertEqual(self.users.removeUnused({named}), ([byId], [], []))
        self.assertIsNone(exists(byId))
        self.assertIsNotNone(exists(named))
        self.assertEqual(self.users.removeUnused(set()), ([named], [], []))
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
        self.assertEqual(self.users.removeUnused(set()), ([], [], []))
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
        removed, kept, failed = self.users.removeUnused(set())
        self.assertEqual((removed, failed), ([], []))
        self.assertEqual(kept, [(name, "process %d (sleep 1000) still runs as it"
                                 % (process.pid,))])
        process.kill()
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # a zombie now
        self.assertEqual(self.users.removeUnused(set()), ([name], [], []))

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
        self.assertEqual(self.users.removeUnused(set()), ([name], [], []))

    def test_personNotAdopted(self):
        """
        A non-system account (uid 1000 or more: a person's) is not adopted
        even with its home under the pod root and no login shell: a pod
        whose id names it is refused, and it is neither recorded nor deleted.
        """
        name = self.newName()
        subprocess.check_call(["useradd", "--uid", "4242", "--no-create-home", "--home-dir",
                               self.home(name), "--shell", NOLOGIN_SHELLS[0], name])
        error = self.assertRaises(AgentError, self.users.ensure, manifest(name),
                                  self.home(name))
        self.assertIn("its id names the existing account %s (uid 4242), which the agent "
                      "did not create" % (name,), str(error))
        self.assertEqual(self.users.created(), {})
        self.assertEqual(self.users.removeUnused(set()), ([], [], []))
        self.assertIsNotNone(exists(name))

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
        self.assertEqual(self.users.removeUnused(set()), ([], [], []))
        self.assertIsNotNone(exists(name))
        self.assertEqual(other.removeUnused(set()), ([name], [], []))


class ClockedReactor(object):
    """
    The real reactor (its thread pool, C{callFromThread}) but for time, which
    is a L{task.Clock}'s: nothing waits unless the test advances it.
    """

    def __init__(self, reactor, clock):
        self._reactor = reactor
        self._clock = clock

    def seconds(self):
        return self._clock.seconds()

    def callLater(self, *args, **kwargs):
        return self._clock.callLater(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._reactor, name)


class RemovalTests(unittest.TestCase):
    """
    The pod operations' deletion of unused accounts (L{PodOperations}).
    """

    @defer.inlineCallbacks
    def test_userdelFailureNotRetried(self):
        """
        An account C{userdel} fails to delete is kept and the removal ends at
        once (it is tried again at the next removal), instead of running
        C{userdel} again every half second for ten seconds.
        """
        if os.geteuid() != 0:
            raise unittest.SkipTest("creating accounts needs root")
        from twisted.internet import reactor
        from p2twisted.agent import users
        from p2twisted.agent.pods import PodOperations
        from p2twisted.agent.testing import FakeSupervisor
        from tests.test_agent_hooks import makeConfig
        config = makeConfig(os.path.abspath(self.mktemp()))
        ops = PodOperations(config, ClockedReactor(reactor, task.Clock()), FakeSupervisor(),
                            None, None, p2exec=["true"], isRoot=True)
        name = "p2t" + uuid.uuid4().hex[:8]
        self.addCleanup(subprocess.call, ["userdel", name],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield threads.deferToThread(ops.users.ensure, manifest("web", name),
                                    os.path.join(config.podRoot, "web"))
        real = users._program
        self.patch(users, "_program", lambda p: "/bin/false" if p == "userdel" else real(p))
        removal = ops._removeUnusedUsers()
        yield waitFor(lambda: removal.called, what="the removal to end")
        self.assertEqual(self.successResultOf(removal), [])
        self.assertIsNotNone(exists(name))
        self.assertEqual(list(ops.users.created()), [name])

        self.patch(users, "_program", real)
        self.assertEqual((yield ops._removeUnusedUsers()), [name])
        self.assertIsNone(exists(name))


class BadRecordRemovalTests(unittest.TestCase):
    """
    A pod is removed even when the account record cannot be read.
    """

    @defer.inlineCallbacks
    def test_removedAnyway(self):
        """
        The removal of a pod ends (its home gone) with the unreadable record
        logged: accounts are then kept, and the pod's removal is not failed
        (and retried, hooks and all) until someone fixes the record.
        """
        from twisted.internet import reactor
        from p2twisted.agent.pods import PodOperations
        from p2twisted.agent.testing import FakeSupervisor
        from tests.test_agent_hooks import makeConfig
        config = makeConfig(os.path.abspath(self.mktemp()))
        home = os.path.join(config.podRoot, "web")
        os.makedirs(home)
        ops = PodOperations(config, reactor, FakeSupervisor(), None, None, p2exec=["true"],
                            isRoot=True)
        os.makedirs(config.stateDir, exist_ok=True)
        with open(ops.users.recordPath, "w") as f:
            f.write("{")
        yield ops.remove(None, "web")
        self.assertFalse(os.path.exists(home))


class NotRootScriptsTests(unittest.TestCase):
    """
    Not as root, the scripts the agent runs for a pod run as its own user,
    like the pod.
    """

    @defer.inlineCallbacks
    def test_disableAsAgentUser(self):
        """
        C{bin/disable} of a pod being removed runs as the agent's user, not
        as its C{run_as}, which need not exist (p2-exec would refuse it).
        """
        from twisted.internet import reactor
        from p2twisted.agent.layout import PodLayout
        from p2twisted.agent.pods import PodOperations
        from p2twisted.agent.testing import FakeSupervisor
        from tests.test_agent_hooks import makeConfig
        config = makeConfig(os.path.abspath(self.mktemp()))
        record = os.path.abspath(self.mktemp())
        p2exec = os.path.abspath(self.mktemp())
        with open(p2exec, "w") as f:
            f.write('#!/bin/sh\necho "$@" >> %s\n' % (record,))
        os.chmod(p2exec, 0o755)
        pod = manifest("web", "p2t-nowhere")
        layout = PodLayout(config.podRoot, "web")
        disable = os.path.join(layout.current("web"), "bin", "disable")
        os.makedirs(os.path.dirname(disable))
        with open(disable, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(disable, 0o755)
        ops = PodOperations(config, reactor, FakeSupervisor(), None, None, p2exec=[p2exec],
                            isRoot=False)
        yield ops.remove(pod, "web")
        with open(record) as f:
            words = f.read().split()
        self.assertEqual(words[words.index("-u") + 1], runtime.currentUser())
        self.assertEqual(words[-1], disable)
