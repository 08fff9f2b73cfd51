# -*- test-case-name: tests.test_agent_artifacts -*-
"""
Fetching artifacts into a content-addressed cache.

C{ArtifactCache.fetch} downloads a C{file://}, C{http://} or C{https://} URL
(or, as in P2's C{pkg/uri}, a local file's path without a scheme: absolute,
or relative to the agent's C{artifact_dir}) into C{<state_dir>/tmp/},
hashing while it writes, verifies the SHA-256 given directly or by a
sha256sum file, and renames the file to
C{<state_dir>/artifacts/<sha256>}.  When the digest is known up front, a
cached copy is used instead of downloading (after re-hashing it: a corrupt
cache entry is deleted and fetched again).

The cache is kept within C{maxBytes}: after each fetch, the least recently
used artifacts (a fetch or cache hit marks a file used) are deleted until
the rest fit, except those used in the last L{KEEP_RECENT} seconds (a
deploy may be about to extract them) -- the installs, not the cache, are
what pods run from.

A download file is held (C{flock}) while it is written, so the files of a
fetch cut short by a kill are recognised and deleted at the next start.

HTTP uses C{twisted.web.client.Agent} directly rather than C{treq}'s
C{HTTPClient}: the latter always decodes C{Content-Encoding: gzip}, which
servers such as C{twisted.web.static.File} and Apache put on C{.tar.gz}
files, so the bytes hashed would not be the artifact's.
"""

import fcntl
import hashlib
import os
import random
import re
import tempfile
import time
from urllib.parse import quote, unquote, urlsplit

from hyperlink import URL
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error, protocol, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent, HTTPConnectionPool, RedirectAgent, ResponseDone, ResponseFailed,
    ResponseNeverReceived)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from zope.interface import implementer

from p2twisted.agent.archive import _Background
from p2twisted.agent.interfaces import IArtifactFetcher
from p2twisted.errors import ArtifactError, DigestMismatch, FetchError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BSD_LINE = re.compile(r"^SHA256 \((.*)\) = ([0-9a-fA-F]{64})$")
_CHUNK = 1 << 20

#: Cached artifacts used this recently (seconds) are never evicted.
KEEP_RECENT = 600.0
_SCHEMES = ("file", "http", "https")

log = Logger()


def normalizeDigest(digest):
    """
    @return: C{digest} as lower-case hex.
    @raise ArtifactError: it is not a SHA-256 hex digest.
    """
    value = str(digest).strip().lower()
    if not _SHA256.match(value):
        raise ArtifactError("invalid sha256 digest %r: expected 64 hex digits" % (digest,))
    return value


def parseDigestFile(text, filename, source="digest file"):
    """
    Find an artifact's SHA-256 in a sha256sum file (lines C{<hex>  <name>},
    C{<hex> *<name>} or BSD-style C{SHA256 (<name>) = <hex>}; blank and C{#}
    lines ignored).

    @param filename: the artifact's base name; the line whose name has that
        base name is used, or else the only line.
    @param source: where the text came from, for messages.
    @return: the digest, lower-case hex.
    @raise ArtifactError: the file is malformed, ambiguous, or has no line for
        C{filename}.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        bsd = _BSD_LINE.match(line)
        if bsd:
            name, digest = bsd.group(1), bsd.group(2)
        else:
            digest, _, name = line.partition(" ")
            name = name.strip()
            name = name[1:] if name.startswith("*") else name
        if not _SHA256.match(digest.lower()):
            raise ArtifactError("%s line %d is not '<sha256>  <filename>': %r"
                                % (source, number, line[:100]))
        entries.append((digest.lower(), os.path.basename(name)))
    matching = {digest for digest, name in entries if name == filename}
    if len(matching) > 1:
        raise ArtifactError("%s lists several different digests for %s" % (source, filename))
    if matching:
        return matching.pop()
    if len(entries) == 1:
        return entries[0][0]
    raise ArtifactError("%s has no line for %s (%d lines)" % (source, filename, len(entries)))


def sha256File(path):
    """
    @return: the SHA-256 of the file at C{path}, hex (blocking).
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetchError(message, retryable):
    e = FetchError(message)
    e.retryable = retryable
    return e


def _scheme(url):
    scheme = urlsplit(str(url)).scheme.lower()
    if scheme not in _SCHEMES:
        raise ArtifactError("cannot fetch %s: unsupported URL scheme %r (use file, http or https)"
                            % (url, scheme))
    return scheme


def resolveLocation(location, artifactDir=None):
    """
    P2's meaning of a location without a scheme (C{pkg/uri}): the path of
    a local file.

    @param artifactDir: the directory a relative path is relative to, or
        C{None} to refuse relative paths.
    @return: C{location} unchanged when it has a scheme, else the path's
        C{file://} URL.
    @raise ArtifactError: a relative path without C{artifactDir}, or one
        whose C{..} leads out of it (a file elsewhere needs an absolute
        path: a relative location names a file in C{artifactDir}).
    """
    if urlsplit(location).scheme:
        return location
    path = os.path.normpath(location)
    if not os.path.isabs(path):
        if artifactDir is None:
            raise ArtifactError(
                "cannot fetch %s: it is a relative path and the agent has no artifact_dir "
                "setting to find it in; give an absolute path or a URL, or set artifact_dir "
                "in the agent's config" % (location,))
        if path == ".." or path.startswith("../"):
            raise ArtifactError(
                "cannot fetch %s: a relative location names a file in artifact_dir, and "
                "this one is outside artifact_dir %s; give its absolute path"
                % (location, artifactDir))
        path = os.path.join(artifactDir, path)
    return "file://" + quote(path)


def _localPath(url):
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path.startswith("/"):
        raise ArtifactError("cannot fetch %s: a file URL must be file:///absolute/path" % (url,))
    return path


def _basename(url):
    return unquote(urlsplit(url).path).rstrip("/").rpartition("/")[2]


def _writeAll(f, data, path):
    """
    Write C{data} to the unbuffered file C{f}, naming C{path} on failure.
    """
    try:
        view = memoryview(data)
        while view:
            view = view[f.write(view):]
    except OSError as e:
        raise ArtifactError("cannot write %s: %s" % (path, e.strerror or e))


def _copyHashing(url, out, outPath):
    """
    In a thread: copy the file named by a C{file://} URL to C{out}.

    @return: its SHA-256, hex.
    """
    path = _localPath(url)
    h = hashlib.sha256()
    try:
        src = open(path, "rb")
    except FileNotFoundError:
        raise _fetchError("cannot fetch %s: no such file" % (url,), False)
    except OSError as e:
        raise _fetchError("cannot fetch %s: %s" % (url, e.strerror), False)
    with src:
        # Written from another thread while this one hashes: both release
        # the GIL, so they overlap.
        writer = _Background(lambda chunk: _writeAll(out, chunk, outPath), 4, "copy " + path)
        try:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                writer.put(chunk)
                h.update(chunk)
        except BaseException:
            writer.close(wait=False)
            raise
        writer.close()
    return h.hexdigest()


def _readLocal(url, limit):
    path = _localPath(url)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise _fetchError("cannot fetch %s: no such file" % (url,), False)
    except OSError as e:
        raise _fetchError("cannot fetch %s: %s" % (url, e.strerror), False)
    if len(data) > limit:
        raise ArtifactError("%s is larger than %d bytes" % (url, limit))
    return data


def _describe(url, failure):
    """
    @return: C{(message, retryable)} for a failed HTTP exchange.
    """
    if failure.check(error.ConnectionRefusedError):
        return "connection refused", True
    if failure.check(error.TimeoutError):
        return "timed out connecting", True
    if failure.check(error.DNSLookupError):
        return "cannot resolve the host name", True
    if failure.check(ResponseFailed, ResponseNeverReceived):
        reasons = [r.getErrorMessage() for r in failure.value.reasons] or ["?"]
        return "connection lost (%s)" % ("; ".join(reasons),), True
    if failure.check(error.ConnectError, error.ConnectionLost):
        return failure.getErrorMessage(), True
    return failure.getErrorMessage() or failure.type.__name__, False


class _Body(protocol.Protocol):
    """
    Streams a response body into C{sink}; gives up after C{idleTimeout}
    seconds without data.  C{finished} fires with C{None} or fails.
    """

    def __init__(self, reactor, url, sink, idleTimeout):
        self.finished = defer.Deferred()
        self._reactor = reactor
        self._url = url
        self._sink = sink
        self._idle = idleTimeout
        self._failure = None

    def connectionMade(self):
        self._last = self._reactor.seconds()
        self._timer = self._reactor.callLater(self._idle, self._check)

    def _check(self):
        waited = self._reactor.seconds() - self._last
        if waited < self._idle:
            self._timer = self._reactor.callLater(self._idle - waited, self._check)
            return
        self._failure = Failure(_fetchError(
            "cannot fetch %s: no data for %gs (idle timeout)" % (self._url, self._idle), True))
        self.transport.stopProducing()

    def dataReceived(self, data):
        self._last = self._reactor.seconds()
        if self._failure is not None:
            return
        try:
            self._sink(data)
        except Exception:
            self._failure = Failure()
            self.transport.stopProducing()

    def connectionLost(self, reason=protocol.connectionDone):
        if self._timer.active():
            self._timer.cancel()
        if self._failure is not None:
            self.finished.errback(self._failure)
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(None)
        else:
            message, retryable = _describe(self._url, reason)
            self.finished.errback(_fetchError("cannot fetch %s: download cut short: %s"
                                              % (self._url, message), retryable))


@implementer(IArtifactFetcher)
class ArtifactCache(object):
    """
    Fetches artifacts into C{stateLayout.artifact(sha256)}.

    @param stateLayout: a L{p2twisted.agent.layout.StateLayout}.
    @param agent: an C{IAgent} for HTTP(S); default: a
        C{twisted.web.client.Agent} following redirects, with its own
        persistent connection pool (released by L{close}).
    @param connectTimeout: seconds to establish a connection.
    @param idleTimeout: seconds to wait for response headers (after
        connecting) and between chunks of the body.
    @param retries: further attempts after a failure that may be transient
        (connection refused or lost, timeouts, HTTP 5xx, 408, 429); not after
        404, a digest mismatch or a local error.
    @param retryDelay: seconds before the first retry; doubles each time (to
        60 s), plus up to as much again of jitter.
    @param maxDigestFileBytes: the largest digest file accepted.
    @param artifactDir: the directory in which a relative location (a path
        without a scheme) is found; C{None} refuses them.
    @ivar auth: the L{ArtifactAuth<p2twisted.agent.artifactauth.ArtifactAuth>}
        that deploys apply to what this cache fetches (C{artifact_auth:}),
        or C{None}; closed with the cache.
    """

    auth = None

    def __init__(self, stateLayout, reactor, agent=None, connectTimeout=10.0,
                 idleTimeout=60.0, retries=3, retryDelay=1.0, maxDigestFileBytes=1 << 20,
                 maxBytes=None, artifactDir=None):
        self._layout = stateLayout
        self.artifactDir = artifactDir
        self.maxBytes = maxBytes
        self._reactor = reactor
        self._pool = None
        if agent is None:
            self._pool = HTTPConnectionPool(reactor)
            agent = RedirectAgent(Agent(reactor, connectTimeout=connectTimeout, pool=self._pool))
        self._agent = agent
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.retries = retries
        self.retryDelay = retryDelay
        self.maxDigestFileBytes = maxDigestFileBytes
        self.removeLeftovers()

    def close(self):
        """
        Close idle HTTP connections (and L{auth}'s verifiers).

        @return: L{Deferred} firing with C{None} once they are closed.
        """
        closing = [] if self.auth is None else [self.auth.close()]
        if self._pool is not None:
            closing.append(self._pool.closeCachedConnections())
        return defer.gatherResults(closing).addCallback(lambda _: None)

    def _inThread(self, f, *args):
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    @defer.inlineCallbacks
    def fetch(self, url, digest=None, digestLocation=None):
        """
        Make sure the artifact at C{url} is in the cache.

        @param url: its URL, or a local path (see L{resolveLocation}).
        @param digest: its expected SHA-256 (hex), if known.
        @param digestLocation: the URL (or path) of a sha256sum file listing
            it.  With both, they must agree.
        @return: L{Deferred} firing with C{(path, sha256)} of the cached file;
            failing with L{FetchError} (not found, refused, timed out -- after
            the retries), L{DigestMismatch} (naming both sums and the URL; the
            download is discarded) or L{ArtifactError} (bad URL or digest
            file, disk full...).
        """
        url = resolveLocation(url, self.artifactDir)
        scheme = _scheme(url)
        expected = normalizeDigest(digest) if digest is not None else None
        source = "the manifest"
        if digestLocation:
            digestLocation = resolveLocation(digestLocation, self.artifactDir)
            _scheme(digestLocation)
            data = yield self._retrying(digestLocation, self._readSmall, digestLocation)
            listed = parseDigestFile(data.decode("utf-8", "replace"), _basename(url),
                                     "digest file %s" % (digestLocation,))
            if expected is not None and listed != expected:
                raise DigestMismatch("digest file %s lists sha256 %s for %s, but the manifest "
                                     "says %s" % (digestLocation, listed, url, expected))
            expected, source = listed, digestLocation
        if expected is not None:
            cached = self._layout.artifact(expected)
            valid = yield self._inThread(self._checkCached, cached, expected)
            if valid:
                log.debug("cache hit for {url}", url=url, sha=expected, event="cache-hit")
                return cached, expected
        yield self._inThread(self.removeLeftovers)
        tmp, out, sha = yield self._retrying(url, self._download, url, scheme)
        try:
            if expected is not None and sha != expected:
                raise DigestMismatch("sha256 mismatch for %s: got %s, expected %s (from %s)"
                                     % (url, sha, expected, source))
            final = self._layout.artifact(sha)
            try:
                os.makedirs(self._layout.artifactsDir, exist_ok=True)
                os.replace(tmp, final)
            except OSError as e:
                raise ArtifactError("cannot store %s at %s: %s" % (url, final, e.strerror or e))
        except Exception:
            _unlink(tmp)
            raise
        finally:
            # Its flock is held until it is no longer a download file: a
            # removeLeftovers in another thread would delete it meanwhile.
            out.close()
        log.info("fetched {url}", url=url, sha=sha, event="fetched")
        yield self._inThread(self._used, final)
        yield self._inThread(self.evict)
        return final, sha

    def fetchSmall(self, location):
        """
        Read a small file (a signature, a digest file) at C{location}, a URL
        or a path as for L{fetch}, with the same retries.

        @return: L{Deferred} firing with its bytes; failing with
            L{FetchError} (its C{retryable} says whether it may be transient)
            or L{ArtifactError} (bad location, larger than
            C{maxDigestFileBytes}).
        """
        try:
            url = resolveLocation(location, self.artifactDir)
            _scheme(url)
        except ArtifactError:
            return defer.fail()
        return self._retrying(url, self._readSmall, url)

    def _used(self, path):
        try:
            os.utime(path)
        except OSError:
            pass

    def evict(self):
        """
        Delete the least recently used cached artifacts until the cache holds
        at most C{maxBytes} (no limit when C{None}), sparing those used in the
        last L{KEEP_RECENT} seconds.  Runs in the calling thread.

        @return: the paths deleted.
        """
        if self.maxBytes is None:
            return []
        try:
            entries = [(e.stat().st_mtime, e.stat().st_size, e.path)
                       for e in os.scandir(self._layout.artifactsDir)
                       if _SHA256.match(e.name) and e.is_file(follow_symlinks=False)]
        except OSError:
            return []
        total = sum(size for _, size, _ in entries)
        recent = time.time() - KEEP_RECENT
        removed = []
        for mtime, size, path in sorted(entries):
            if total <= self.maxBytes or mtime > recent:
                break
            _unlink(path)
            total -= size
            removed.append(path)
            log.info("evicted {path} from the artifact cache", path=path, event="evicted")
        return removed

    @defer.inlineCallbacks
    def _retrying(self, url, attempt, *args):
        delays = backoffPolicy(self.retryDelay, 60.0, 2.0,
                               jitter=lambda: random.random() * self.retryDelay)
        for number in range(self.retries + 1):
            delay = delays(number)
            try:
                result = yield attempt(*args)
                return result
            except FetchError as e:
                if not getattr(e, "retryable", False) or number == self.retries:
                    if number:
                        e.args = ("%s (%d attempts)" % (e, number + 1),)
                    raise
                log.warn("{error}; retrying in {delay}s", error=str(e), delay=delay, url=url,
                         event="fetch-retry")
            yield task.deferLater(self._reactor, delay, lambda: None)

    def _checkCached(self, path, expected):
        # Marked used before the (possibly long) re-hash, so that another
        # fetch's eviction meanwhile spares it.
        self._used(path)
        try:
            if sha256File(path) == expected:
                return True
        except FileNotFoundError:
            return False
        except OSError as e:
            log.warn("cannot read cached {path}: {error}", path=path, error=e.strerror)
            return False
        log.warn("cached {path} is corrupt; fetching it again", path=path, event="cache-corrupt")
        _unlink(path)
        return False

    def removeLeftovers(self):
        """
        Delete the download files (C{<state_dir>/tmp/artifact-*.part}) that no
        download holds: leftovers of an agent killed during a fetch.  A live
        download holds an exclusive C{flock} on its file, so this is safe at
        any time; it runs when the cache is created (agent start) and before
        each download.  Runs in the calling thread.

        @return: the paths deleted.
        """
        removed = []
        try:
            entries = [e.path for e in os.scandir(self._layout.tmpDir)
                       if e.name.startswith("artifact-") and e.name.endswith(".part")]
        except FileNotFoundError:
            return removed
        except OSError as e:
            log.warn("cannot list {path}: {error}", path=self._layout.tmpDir, error=e.strerror)
            return removed
        for path in entries:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue        # a download in progress
            else:
                _unlink(path)
                removed.append(path)
            finally:
                os.close(fd)
        if removed:
            log.info("removed {count} unfinished download(s) from {path}", count=len(removed),
                     path=self._layout.tmpDir, event="leftovers-removed")
        return removed

    def _openTemp(self):
        """
        @return: C{(path, unbuffered binary file)} of a new download file.
        """
        while True:
            try:
                os.makedirs(self._layout.tmpDir, exist_ok=True)
                fd, path = tempfile.mkstemp(prefix="artifact-", suffix=".part",
                                            dir=self._layout.tmpDir)
            except OSError as e:
                raise ArtifactError("cannot create a download file in %s: %s"
                                    % (self._layout.tmpDir, e.strerror or e))
            # Held until the file is closed: removeLeftovers spares it.  It
            # may have been removed between mkstemp and flock: then again.
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink:
                return path, os.fdopen(fd, "wb", buffering=0)
            os.close(fd)

    @defer.inlineCallbacks
    def _download(self, url, scheme):
        """
        @return: L{Deferred} firing with C{(temporary path, its file, sha256)};
            the caller closes the file once the path is renamed (see
            L{removeLeftovers}).
        """
        path, out = self._openTemp()
        try:
            if scheme == "file":
                sha = yield self._inThread(_copyHashing, url, out, path)
            else:
                h = hashlib.sha256()

                def sink(data):
                    h.update(data)
                    _writeAll(out, data, path)
                yield self._get(url, sink)
                sha = h.hexdigest()
        except Exception:
            out.close()
            _unlink(path)
            raise
        return path, out, sha

    def _readSmall(self, url):
        """
        @return: L{Deferred} firing with the (small) content at C{url}.
        """
        limit = self.maxDigestFileBytes
        if _scheme(url) == "file":
            return self._inThread(_readLocal, url, limit)
        chunks = []

        def sink(data):
            chunks.append(data)
            if sum(map(len, chunks)) > limit:
                raise ArtifactError("%s is larger than %d bytes" % (url, limit))
        return self._get(url, sink).addCallback(lambda _: b"".join(chunks))

    @defer.inlineCallbacks
    def _get(self, url, sink):
        """
        GET C{url}, passing the body to C{sink}.

        @return: L{Deferred} firing with C{None} after the whole body.
        """
        timedOut = []
        requested = self._agent.request(
            b"GET", URL.from_text(url).to_uri().to_text().encode("ascii"),
            Headers({b"User-Agent": [b"p2twisted-agent"], b"Accept-Encoding": [b"identity"]}))

        def giveUp():
            timedOut.append(True)
            requested.cancel()
        timer = self._reactor.callLater(self.connectTimeout + self.idleTimeout, giveUp)
        try:
            response = yield requested
        except Exception:
            if timedOut:
                raise _fetchError("cannot fetch %s: no response within %gs (idle timeout)"
                                  % (url, self.connectTimeout + self.idleTimeout), True)
            message, retryable = _describe(url, Failure())
            raise _fetchError("cannot fetch %s: %s" % (url, message), retryable)
        finally:
            if timer.active():
                timer.cancel()
        if response.code != 200:
            retryable = response.code >= 500 or response.code in (408, 429)
            body = _Body(self._reactor, url, _discardBeyond(65536), self.idleTimeout)
            response.deliverBody(body)
            yield body.finished.addErrback(lambda _: None)
            raise _fetchError("cannot fetch %s: HTTP %d %s" % (
                url, response.code, response.phrase.decode("latin-1")), retryable)
        body = _Body(self._reactor, url, sink, self.idleTimeout)
        response.deliverBody(body)
        yield body.finished


def _discardBeyond(limit):
    seen = [0]

    def sink(data):
        seen[0] += len(data)
        if seen[0] > limit:
            raise ValueError("error body too large")
    return sink


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass
