# -*- test-case-name: tests.test_syncers_haproxy -*-
"""
The C{haproxy} syncer: one backend section per pod cluster, in
C{<directory>/<cluster id>.cfg} (HAProxy loads every C{*.cfg} of a directory
given with C{-f}), listing the cluster's healthy members; then HAProxy is
reloaded gracefully.

Each sync first has HAProxy check the whole configuration as it would be
(C{haproxy -c} with a candidate copy of the directory, a hidden
subdirectory HAProxy skips, in place of the directory; a failing check
fails the sync, naming HAProxy's complaint, and changes nothing), then
installs the file with one atomic rename -- so the directory never holds a
file HAProxy refuses, whenever the orchestrator dies -- and reloads HAProxy:
C{SIGUSR2} to the master process of HAProxy's master-worker mode (C{haproxy
-W -p PIDFILE}, as Debian's haproxy.service runs it), whose new workers take
over the listening sockets while the old ones finish their connections -- or
runs C{reload_command}.  A master that loads the new configuration forks a
new worker; one that fails to (a port it cannot bind) keeps its old workers:
a sync whose reload brings no new child of the master within
C{reload_timeout} seconds fails, and is retried.

The section (annotations of the pod cluster adjust it)::

    # p2 pod cluster <id> (pod <pod_id>, <az>/<cluster_name>): written by p2; edits are lost
    backend <haproxy_backend annotation, else the cluster id>
        <each line of the haproxy_options annotation, else balance roundrobin,
         option redispatch, retries 3, retry-on conn-failure empty-response>
        server <node> <host:port> <haproxy_server_options annotation, else check inter 1s
                                   init-addr libc,none>

(a node with several members names each C{<node>:<pod_id>}).

Settings (orchestrator config, C{syncers: {haproxy: {...}}}):
  - C{directory} (required): where the backend files go;
  - C{configs}: the files and directories C{haproxy -c} checks, as HAProxy
    loads them, naming C{directory} (default C{[/etc/haproxy/haproxy.cfg,
    <directory>]});
  - C{pid_file}: the master process's pid file (default C{/run/haproxy.pid});
  - C{reload_command}: an argument list to run instead of signalling it;
  - C{haproxy}: the HAProxy program (default C{haproxy});
  - C{reload_timeout}: how long a reload may take to start a new worker
    (default 10 seconds).
"""

import os
import re
import shutil
import signal
import tempfile

from twisted.internet import defer, task, utils
from twisted.logger import Logger
from zope.interface import implementer

from p2twisted.orchestrate.syncers import IPodClusterSyncer, SyncerError, setting

log = Logger()

SUFFIX = ".cfg"
HEADER = "# p2 pod cluster "
#: A request a server refused or closed without answering (a pod halted
#: mid-request) goes to another server, up to 3 times.
DEFAULT_OPTIONS = ("balance roundrobin", "option redispatch", "retries 3",
                   "retry-on conn-failure empty-response")
#: A server whose host does not resolve is disabled rather than refusing
#: the whole configuration (HAProxy resolves at load).
DEFAULT_SERVER_OPTIONS = "check inter 1s init-addr libc,none"
_NAME = re.compile(r"^[A-Za-z0-9._:-]+$")
#: The prefix of the hidden candidate directories HAProxy checks.
CANDIDATE = ".p2-candidate-"
#: The temporary files of an atomic write of a backend file.
#: How often, and how long at most (seconds), to look for HAProxy's new
#: worker after a reload.
RELOAD_POLL = 0.1
RELOAD_TIMEOUT = 10.0
_TEMPORARY = re.compile(r"^\..+\.cfg\..+\.tmp$")


def _annotation(cluster, key, default):
    value = cluster.annotations.get(key, default)
    return default if value is None else value


def render(cluster, members):
    """
    @return: the text of C{cluster}'s backend file for C{members} (the
        healthy ones with an address are its servers).
    @raise SyncerError: for an annotation HAProxy would not take.
    """
    backend = _annotation(cluster, "haproxy_backend", cluster.id)
    options = _annotation(cluster, "haproxy_options", list(DEFAULT_OPTIONS))
    serverOptions = _annotation(cluster, "haproxy_server_options", DEFAULT_SERVER_OPTIONS)
    if not isinstance(backend, str) or not _NAME.match(backend):
        raise SyncerError("pod cluster %s: annotation haproxy_backend %r is no HAProxy name "
                          "([A-Za-z0-9._:-]+)" % (cluster.id, backend))
    if isinstance(options, str):
        options = [options]
    if not isinstance(options, list) or not all(
            isinstance(o, str) and "\n" not in o for o in options):
        raise SyncerError("pod cluster %s: annotation haproxy_options must be a list of "
                          "one-line texts, got %r" % (cluster.id, options))
    if not isinstance(serverOptions, str) or "\n" in serverOptions:
        raise SyncerError("pod cluster %s: annotation haproxy_server_options must be one "
                          "line of text, got %r" % (cluster.id, serverOptions))
    lines = ["%s%s (pod %s, %s/%s): written by p2; edits are lost"
             % (HEADER, cluster.id, cluster.pod_id, cluster.availability_zone,
                cluster.cluster_name),
             "backend %s" % (backend,)]
    lines += ["    %s" % (o,) for o in options]
    servers = [m for m in members if m.healthy and m.address]
    nodes = [m.node for m in servers]
    for member in servers:
        # HAProxy refuses two servers of one name: a node with several
        # members (a selector matching two pod ids) names each by its pod.
        name = member.node if nodes.count(member.node) == 1 else "%s:%s" % (member.node,
                                                                            member.pod_id)
        lines.append(("    server %s %s %s" % (name, member.address, serverOptions)).rstrip())
    return "\n".join(lines) + "\n"


@implementer(IPodClusterSyncer)
class HAProxySyncer(object):
    """
    @ivar directory: where the backend files are.
    @ivar configs: what C{haproxy -c} checks.
    @ivar reloads: how many reloads it asked for.
    """

    name = "haproxy"

    def __init__(self, reactor, directory, configs=None, pidFile="/run/haproxy.pid",
                 reloadCommand=None, program="haproxy", reloadTimeout=RELOAD_TIMEOUT):
        self.reactor = reactor
        self.directory = directory
        self.configs = list(configs) if configs else ["/etc/haproxy/haproxy.cfg", directory]
        self.pidFile = pidFile
        self.reloadCommand = reloadCommand
        self.program = program
        self.reloadTimeout = reloadTimeout
        self.reloads = 0
        self._lock = defer.DeferredLock()
        #: Whether a file may have changed since HAProxy last reloaded: true
        #: at first, since a process that died between writing a file and
        #: reloading left HAProxy running the old one.
        self._stale = True

    def path(self, clusterId):
        return os.path.join(self.directory, clusterId + SUFFIX)

    def sync(self, cluster, members):
        try:
            text = render(cluster, members)
        except SyncerError:
            return defer.fail()
        return self._lock.run(self._replace, cluster.id, text.encode("utf-8"))

    def delete(self, clusterId):
        return self._lock.run(self._replace, clusterId, None)

    def initialClusters(self):
        found = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            names = []
        for name in names:
            if not name.endswith(SUFFIX) or name.startswith("."):
                continue
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    first = f.readline().decode("utf-8", "replace")
            except OSError:
                continue
            if first.startswith(HEADER):
                found.append(name[:-len(SUFFIX)])
        return defer.succeed(found)

    @defer.inlineCallbacks
    def _replace(self, clusterId, data):
        """
        Have HAProxy check the configuration with C{data} (C{None}: no file)
        as C{clusterId}'s file, then install it with one atomic rename (or
        unlink) and reload: HAProxy's directory never holds a file it
        refuses, whenever this process dies.
        """
        from p2twisted.agent.runtime import atomicWrite
        path = self.path(clusterId)
        try:
            os.makedirs(self.directory, exist_ok=True)
            if self._stale:
                self._removeLeftovers()
            with open(path, "rb") as f:
                old = f.read()
        except FileNotFoundError:
            old = None
        except OSError as e:
            raise SyncerError("haproxy syncer: cannot read %s: %s" % (path, e.strerror or e))
        if old == data and not self._stale:
            return
        try:
            candidate = self._candidate(clusterId, data)
        except OSError as e:
            raise SyncerError("haproxy syncer: cannot write a candidate configuration in %s: %s"
                              % (self.directory, e.strerror or e))
        try:
            error = yield self._check(self._candidateConfigs(candidate))
        finally:
            shutil.rmtree(candidate, ignore_errors=True)
        if error is not None:
            raise SyncerError("haproxy syncer: HAProxy refuses the configuration with %s: %s"
                              % (path, error))
        try:
            self._put(path, data, atomicWrite)
        except OSError as e:
            raise SyncerError("haproxy syncer: cannot write %s: %s" % (path, e.strerror or e))
        self._stale = True
        yield self._reload()
        self._stale = False
        log.info("haproxy syncer: {path} {what}; HAProxy reloaded", path=path,
                 what="removed" if data is None else "written", event="haproxy-reload")

    def _removeLeftovers(self):
        """
        Remove the candidate directories and temporary files a syncer that
        died left in the directory (HAProxy skips them: it loads the
        directory's unhidden C{*.cfg} files only).
        """
        for name in os.listdir(self.directory):
            where = os.path.join(self.directory, name)
            if name.startswith(CANDIDATE):
                shutil.rmtree(where, ignore_errors=True)
            elif _TEMPORARY.match(name):
                try:
                    os.unlink(where)
                except OSError:
                    pass

    def _candidate(self, clusterId, data):
        """
        @return: a new hidden directory inside the directory (HAProxy skips
            it) holding the directory's backend files as they would be with
            C{data} (C{None}: none) for C{clusterId}.
        """
        candidate = tempfile.mkdtemp(prefix=CANDIDATE, dir=self.directory)
        try:
            for name in os.listdir(self.directory):
                source = os.path.join(self.directory, name)
                if (name.endswith(SUFFIX) and not name.startswith(".")
                        and name != clusterId + SUFFIX and os.path.isfile(source)):
                    shutil.copyfile(source, os.path.join(candidate, name))
            if data is not None:
                with open(os.path.join(candidate, clusterId + SUFFIX), "wb") as f:
                    f.write(data)
        except OSError:
            shutil.rmtree(candidate, ignore_errors=True)
            raise
        return candidate

    def _candidateConfigs(self, candidate):
        """@return: C{configs} with the candidate directory in place of the directory."""
        directory = os.path.realpath(self.directory)
        return [candidate if os.path.realpath(c) == directory else c for c in self.configs]

    def _put(self, path, data, atomicWrite):
        if data is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            atomicWrite(path, data)

    @defer.inlineCallbacks
    def _check(self, configs):
        """
        @return: L{Deferred} firing with C{None} when C{haproxy -c} accepts
            C{configs}, else with its complaint (one line).
        """
        program = shutil.which(self.program)
        if program is None:
            return "cannot find the program %r" % (self.program,)
        args = ["-c"]
        for config in configs:
            args += ["-f", config]
        try:
            out, err, code = yield utils.getProcessOutputAndValue(
                program, args, env=os.environ, reactor=self.reactor)
        except OSError as e:
            return "cannot run %s: %s" % (program, e)
        if code == 0:
            return None
        lines = [re.sub(r"^\[ALERT\]\s*\(\d+\)\s*:\s*", "", line.strip())
                 for line in (err + out).decode("utf-8", "replace").splitlines()
                 if line.startswith("[ALERT]")] or ["exit status %s" % (code,)]
        return lines[0]

    @defer.inlineCallbacks
    def _reload(self):
        self.reloads += 1
        if self.reloadCommand:
            out, err, code = yield utils.getProcessOutputAndValue(
                self.reloadCommand[0], self.reloadCommand[1:], env=os.environ,
                reactor=self.reactor)
            if code != 0:
                raise SyncerError("haproxy syncer: %s failed (exit %s): %s" % (
                    " ".join(self.reloadCommand), code,
                    (err or out).decode("utf-8", "replace").strip()[:200]))
            return
        try:
            with open(self.pidFile) as f:
                pid = int(f.read().split()[0])
            self._checkHAProxy(pid)
            workers = _children(pid)
            os.kill(pid, signal.SIGUSR2)
        except (OSError, ValueError, IndexError) as e:
            raise SyncerError("haproxy syncer: cannot reload HAProxy through its master's pid "
                              "file %s: %s (is HAProxy running as 'haproxy -W -p %s'?)"
                              % (self.pidFile, getattr(e, "strerror", None) or e, self.pidFile))
        if workers is not None:
            yield self._newWorker(pid, workers)

    @defer.inlineCallbacks
    def _newWorker(self, master, workers):
        """
        Wait for the master's new worker: the master of HAProxy's
        master-worker mode forks new workers once it loaded the new
        configuration, and keeps the old ones alone when it fails to (a
        port it cannot bind, a file gone).

        @param workers: the master's children before the reload.
        @raise SyncerError: when none came within C{reloadTimeout} seconds.
        """
        deadline = self.reactor.seconds() + self.reloadTimeout
        while True:
            children = _children(master)
            if children is None:
                raise SyncerError("haproxy syncer: HAProxy's master (process %d) exited on "
                                  "reload; see its log" % (master,))
            if children - workers:
                return
            if self.reactor.seconds() >= deadline:
                raise SyncerError(
                    "haproxy syncer: HAProxy started no new worker within %gs of the reload "
                    "signal: it failed to load the new configuration (e.g. a port it cannot "
                    "bind), its old workers serve the old one; its log says why"
                    % (self.reloadTimeout,))
            yield task.deferLater(self.reactor, RELOAD_POLL, lambda: None)

    def _checkHAProxy(self, pid):
        """
        @raise SyncerError: when process C{pid} is not HAProxy (a stale pid
            file's pid taken by another program, which C{SIGUSR2} would
            kill).
        """
        try:
            with open("/proc/%d/comm" % (pid,)) as f:
                name = f.read().strip()
        except FileNotFoundError:
            if os.path.isdir("/proc/self"):
                raise ProcessLookupError("no process %d" % (pid,))
            return  # no /proc to ask
        if not (name.startswith("haproxy") or name == os.path.basename(self.program)[:15]):
            raise SyncerError("haproxy syncer: process %d of the pid file %s is not HAProxy "
                              "(it is %r); is HAProxy running as 'haproxy -W -p %s'?"
                              % (pid, self.pidFile, name, self.pidFile))


def _children(pid):
    """
    @return: the set of the pids of process C{pid}'s children, C{None} when
        C{pid} is gone or there is no C{/proc} to ask.
    """
    if not os.path.isdir("/proc/%d" % (pid,)):
        return None
    children = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % (name,), "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and fields[1] == b"%d" % (pid,):
            children.add(int(name))
    return children


def syncer(settings, reactor):
    """The C{haproxy} entry point."""
    directory = setting("haproxy", settings, "directory", str, required=True)
    configs = setting("haproxy", settings, "configs", list)
    command = setting("haproxy", settings, "reload_command", list)
    for name, value in (("configs", configs), ("reload_command", command)):
        if value is not None and (not value or not all(isinstance(v, str) for v in value)):
            raise SyncerError("orchestrator config syncers.haproxy.%s: expected a list of "
                              "texts, got %r" % (name, value))
    if configs is not None and os.path.realpath(directory) not in [
            os.path.realpath(c) for c in configs]:
        raise SyncerError("orchestrator config syncers.haproxy.configs: %r does not name the "
                          "directory %s, so HAProxy's check would not see the backends"
                          % (configs, directory))
    timeout = setting("haproxy", settings, "reload_timeout", (int, float), RELOAD_TIMEOUT)
    return HAProxySyncer(reactor, directory, configs,
                         setting("haproxy", settings, "pid_file", str, "/run/haproxy.pid"),
                         command, setting("haproxy", settings, "haproxy", str, "haproxy"),
                         timeout)
