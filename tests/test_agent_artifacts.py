"""
Tests for L{p2twisted.agent.artifacts}: fetching into the content-addressed
cache over C{file://} and real loopback HTTP.
"""

import errno
import hashlib
import os
import time

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server, static

from p2twisted.agent import artifacts
from p2twisted.agent.artifacts import KEEP_RECENT, ArtifactCache, parseDigestFile, sha256File
from p2twisted.agent.layout import StateLayout
from p2twisted.errors import ArtifactError, DigestMismatch, FetchError
from tests.artifacts import simpleHoist
from tests.httpservers import TrackingFactory
from tests.p2hello import legacyTLSServer

#: Failing tests must still finish.
TIMEOUT = 20


class Counting(resource.Resource):
    """
    Counts requests, then serves C{child} -- after answering the first
    C{failures} requests with 503.
    """

    isLeaf = True

    def __init__(self, child, failures=0):
        resource.Resource.__init__(self)
        self.child = child
        self.failures = failures
        self.requests = []

    def render(self, request):
        self.requests.append(request.path)
        if len(self.requests) <= self.failures:
            request.setResponseCode(503)
            return b"try later"
        return self.child.getChildForRequest(request).render(request)


class Hanging(resource.Resource):
    """
    Answers nothing (C{sendHeaders=False}) or headers and a little of the
    body, then nothing more.
    """

    isLeaf = True

    def __init__(self, sendHeaders=False):
        resource.Resource.__init__(self)
        self.sendHeaders = sendHeaders

    def render_GET(self, request):
        if self.sendHeaders:
            request.setHeader(b"content-length", b"1000")
            request.write(b"x" * 100)
        return server.NOT_DONE_YET


class FetchTests(unittest.TestCase):
    """
    L{ArtifactCache.fetch}.
    """

    timeout = TIMEOUT

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        self.serve = os.path.join(self.root, "serve")
        os.makedirs(self.serve)
        self.state = StateLayout(os.path.join(self.root, "state"))
        self.name = "web_3c021aff.tar.gz"
        self.artifact = os.path.join(self.serve, self.name)
        self.sha = simpleHoist(self.artifact)

    def cache(self, **kwargs):
        kwargs.setdefault("retryDelay", 0)
        cache = ArtifactCache(self.state, reactor, **kwargs)
        self.addCleanup(cache.close)
        return cache

    def test_interface(self):
        """
        L{ArtifactCache} provides L{IArtifactFetcher}.
        """
        from zope.interface.verify import verifyObject

        from p2twisted.agent.interfaces import IArtifactFetcher
        verifyObject(IArtifactFetcher, self.cache())

    def listen(self, root):
        """
        Serve C{root} on 127.0.0.1.

        @return: the base URL.
        """
        tracking = TrackingFactory(server.Site(root))
        port = reactor.listenTCP(0, tracking, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(tracking.closeAll)
        return "http://127.0.0.1:%d/" % (port.getHost().port,)

    def serveDir(self, failures=0):
        """
        @return: C{(base URL, Counting resource)} serving C{self.serve}.
        """
        counting = Counting(static.File(self.serve), failures)
        return self.listen(counting), counting

    def fileURL(self, path=None):
        return "file://" + (path or self.artifact)

    @defer.inlineCallbacks
    def test_fileURL(self):
        """
        A C{file://} artifact is copied into the cache under its SHA-256.
        """
        path, sha = yield self.cache().fetch(self.fileURL())
        self.assertEqual((path, sha), (self.state.artifact(self.sha), self.sha))
        with open(path, "rb") as a, open(self.artifact, "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.assertEqual(os.listdir(self.state.tmpDir), [])

    @defer.inlineCallbacks
    def test_path(self):
        """
        A location without a scheme is a local file's path, as in P2: an
        absolute one as it is, a relative one in the cache's
        C{artifactDir}; a digest location may be a path too.
        """
        path, sha = yield self.cache().fetch(self.artifact)
        self.assertEqual((path, sha), (self.state.artifact(self.sha), self.sha))
        sums = os.path.join(self.serve, "sums")
        with open(sums, "w") as f:
            f.write("%s  %s\n" % (self.sha, self.name))
        cache = self.cache(artifactDir=self.serve)
        path, sha = yield cache.fetch(self.name, digestLocation="sums")
        self.assertEqual((path, sha), (self.state.artifact(self.sha), self.sha))

    @defer.inlineCallbacks
    def test_relativePathWithoutArtifactDir(self):
        """
        A relative path without an C{artifactDir} fails with one line naming
        it and the setting; a missing file under C{artifactDir} is a
        L{FetchError} naming where it was looked for.
        """
        e = yield self.assertFailure(self.cache().fetch(self.name), ArtifactError)
        self.assertIn(self.name, str(e))
        self.assertIn("artifact_dir", str(e))
        self.assertNotIn("\n", str(e))
        e = yield self.assertFailure(self.cache(artifactDir=self.serve).fetch("nope.tar.gz"),
                                     FetchError)
        self.assertIn(os.path.join(self.serve, "nope.tar.gz"), str(e))

    @defer.inlineCallbacks
    def test_relativePathStaysInArtifactDir(self):
        """
        A relative path is a file in C{artifactDir}: one whose C{..} leads
        out of it is refused in one line naming the location and the
        setting, though the file it names exists; C{..} that stays inside
        is fine.
        """
        drop = os.path.join(self.serve, "drop")
        os.makedirs(os.path.join(drop, "sub"))
        cache = self.cache(artifactDir=drop)
        for location in ("../" + self.name, "sub/../../" + self.name,
                         "../../serve/" + self.name):
            e = yield self.assertFailure(cache.fetch(location), ArtifactError)
            self.assertIn(location, str(e))
            self.assertIn("outside artifact_dir %s" % (drop,), str(e))
            self.assertNotIn("\n", str(e))
        self.assertFalse(os.path.exists(self.state.artifact(self.sha)))
        os.rename(self.artifact, os.path.join(drop, self.name))
        path, sha = yield cache.fetch("sub/../" + self.name)
        self.assertEqual((path, sha), (self.state.artifact(self.sha), self.sha))

    @defer.inlineCallbacks
    def test_legacyTLSServerRefused(self):
        """
        An HTTPS artifact server without secure renegotiation is refused:
        only the health check, which verifies nothing and sends nothing,
        accepts such servers (L{p2twisted.agent.health}).
        """
        port, stop = yield legacyTLSServer(self)
        e = yield self.assertFailure(
            self.cache(retries=0).fetch("https://127.0.0.1:%d/%s" % (port, self.name)),
            FetchError)
        self.assertIn("unsafe legacy renegotiation disabled", str(e))
        yield stop()

    @defer.inlineCallbacks
    def test_http(self):
        """
        An C{http://} artifact is streamed into the cache byte for byte, even
        though C{static.File} labels C{.tar.gz} with C{Content-Encoding: gzip}.
        """
        base, counting = self.serveDir()
        path, sha = yield self.cache().fetch(base + self.name)
        self.assertEqual(sha, self.sha)
        self.assertEqual(artifacts.sha256File(path), self.sha)
        self.assertEqual(len(counting.requests), 1)

    @defer.inlineCallbacks
    def test_cacheHit(self):
        """
        With the digest known up front, a cached artifact is not fetched
        again: the server sees one request for two fetches.
        """
        base, counting = self.serveDir()
        cache = self.cache()
        first = yield cache.fetch(base + self.name, digest=self.sha)
        second = yield cache.fetch(base + self.name, digest=self.sha.upper())
        self.assertEqual(first, second)
        self.assertEqual(len(counting.requests), 1)

    @defer.inlineCallbacks
    def test_corruptCacheEntryRefetched(self):
        """
        A cache entry whose content no longer matches its name is replaced.
        """
        base, counting = self.serveDir()
        os.makedirs(self.state.artifactsDir)
        with open(self.state.artifact(self.sha), "wb") as f:
            f.write(b"truncated")
        path, sha = yield self.cache().fetch(base + self.name, digest=self.sha)
        self.assertEqual(artifacts.sha256File(path), self.sha)
        self.assertEqual(len(counting.requests), 1)

    @defer.inlineCallbacks
    def test_digestMismatch(self):
        """
        A wrong digest fails with L{DigestMismatch} naming both sums and the
        URL, and nothing is cached.
        """
        wrong = hashlib.sha256(b"other").hexdigest()
        url = self.fileURL()
        e = yield self.assertFailure(self.cache().fetch(url, digest=wrong), DigestMismatch)
        for part in (url, wrong, self.sha):
            self.assertIn(part, str(e))
        self.assertFalse(os.path.exists(self.state.artifact(self.sha)))
        self.assertEqual(os.listdir(self.state.tmpDir), [])

    def test_invalidDigest(self):
        """
        A digest that is not 64 hex digits is refused before fetching.
        """
        return self.assertFailure(self.cache().fetch(self.fileURL(), digest="abc"), ArtifactError)

    @defer.inlineCallbacks
    def test_digestLocation(self):
        """
        The digest comes from the sha256sum file line naming the artifact.
        """
        sums = os.path.join(self.serve, "sums")
        with open(sums, "w") as f:
            f.write("%s  other.tar.gz\n%s  ./%s\n" % ("0" * 64, self.sha, self.name))
        base, counting = self.serveDir()
        cache = self.cache()
        path, sha = yield cache.fetch(base + self.name, digestLocation=base + "sums")
        self.assertEqual(sha, self.sha)
        yield cache.fetch(base + self.name, digestLocation=self.fileURL(sums))
        self.assertEqual(counting.requests, [b"/sums", b"/" + self.name.encode()])

    @defer.inlineCallbacks
    def test_digestLocationMismatch(self):
        """
        An artifact that does not match its digest file is refused.
        """
        sums = os.path.join(self.root, "sums")
        with open(sums, "w") as f:
            f.write("%s *%s\n" % ("ab" * 32, self.name))
        e = yield self.assertFailure(
            self.cache().fetch(self.fileURL(), digestLocation=self.fileURL(sums)), DigestMismatch)
        self.assertIn("ab" * 32, str(e))
        self.assertIn(self.sha, str(e))

    @defer.inlineCallbacks
    def test_digestLocationTooLarge(self):
        """
        A digest file over C{maxDigestFileBytes} is refused mid-download.
        """
        with open(os.path.join(self.serve, "sums"), "w") as f:
            f.write(("%s  x\n" % (self.sha,)) * 2000)
        base, counting = self.serveDir()
        e = yield self.assertFailure(
            self.cache(maxDigestFileBytes=1000).fetch(base + self.name, digestLocation=base + "sums"),
            ArtifactError)
        self.assertIn("larger than 1000 bytes", str(e))
        self.assertEqual(counting.requests, [b"/sums"])

    def test_parseDigestFile(self):
        """
        The matching line wins; a single line is used whatever its name;
        BSD-style lines are understood; no match among several is an error.
        """
        a, b = "a" * 64, "B" * 64
        self.assertEqual(parseDigestFile("%s  x.tgz\n%s  y.tgz\n" % (a, b), "y.tgz"), b.lower())
        self.assertEqual(parseDigestFile("# sums\n\n%s  build/x.tgz\n" % (a,), "z.tgz"), a)
        self.assertEqual(parseDigestFile("SHA256 (x.tgz) = %s\n" % (b,), "x.tgz"), b.lower())
        e = self.assertRaises(ArtifactError, parseDigestFile,
                              "%s  x.tgz\n%s  y.tgz\n" % (a, b), "z.tgz", "sums")
        self.assertIn("no line for z.tgz", str(e))
        self.assertRaises(ArtifactError, parseDigestFile, "nothex  x.tgz\n", "x.tgz")

    @defer.inlineCallbacks
    def test_notFound(self):
        """
        HTTP 404 fails at once (no retry) with L{FetchError} naming the URL
        and the status.
        """
        base, counting = self.serveDir()
        url = base + "missing.tar.gz"
        e = yield self.assertFailure(self.cache(retries=3).fetch(url), FetchError)
        self.assertIn(url, str(e))
        self.assertIn("404", str(e))
        self.assertEqual(len(counting.requests), 1)

    @defer.inlineCallbacks
    def test_missingFile(self):
        """
        A missing C{file://} artifact fails with L{FetchError}.
        """
        url = self.fileURL(self.artifact + ".nope")
        e = yield self.assertFailure(self.cache().fetch(url), FetchError)
        self.assertIn(url, str(e))

    @defer.inlineCallbacks
    def test_connectionRefused(self):
        """
        A refused connection fails with L{FetchError} after the retries.
        """
        port = reactor.listenTCP(0, server.Site(resource.Resource()), interface="127.0.0.1")
        number = port.getHost().port
        yield port.stopListening()
        url = "http://127.0.0.1:%d/x.tar.gz" % (number,)
        e = yield self.assertFailure(self.cache(retries=2).fetch(url), FetchError)
        self.assertIn("connection refused", str(e))
        self.assertIn("3 attempts", str(e))

    @defer.inlineCallbacks
    def test_noResponseTimeout(self):
        """
        A server that accepts but never answers fails the fetch with
        L{FetchError} once the short timeout passes.
        """
        base = self.listen(Hanging())
        cache = self.cache(connectTimeout=0.2, idleTimeout=0.2, retries=0)
        e = yield self.assertFailure(cache.fetch(base + "x.tar.gz"), FetchError)
        self.assertIn("timeout", str(e))
        self.assertIn(base, str(e))

    @defer.inlineCallbacks
    def test_idleBodyTimeout(self):
        """
        A body that stops flowing fails the fetch after C{idleTimeout}, and
        the partial download is deleted.
        """
        base = self.listen(Hanging(sendHeaders=True))
        cache = self.cache(idleTimeout=0.2, retries=0)
        e = yield self.assertFailure(cache.fetch(base + "x.tar.gz"), FetchError)
        self.assertIn("idle timeout", str(e))
        self.assertEqual(os.listdir(self.state.tmpDir), [])

    @defer.inlineCallbacks
    def test_retry(self):
        """
        A server failing once (503) and then answering is retried.
        """
        base, counting = self.serveDir(failures=1)
        path, sha = yield self.cache(retries=2).fetch(base + self.name, digest=self.sha)
        self.assertEqual(sha, self.sha)
        self.assertEqual(len(counting.requests), 2)

    def test_unsupportedScheme(self):
        """
        Only file, http and https URLs are fetched.
        """
        return self.assertFailure(self.cache().fetch("ftp://example.com/x.tar.gz"), ArtifactError)

    @defer.inlineCallbacks
    def test_diskFull(self):
        """
        A write error (ENOSPC) fails with an L{ArtifactError} naming the file
        written, removes it, and is not retried.
        """
        cache = self.cache(retries=3)
        opened = []
        part = os.path.join(self.root, "download.part")

        def openFull():
            opened.append(True)
            open(part, "wb").close()
            return part, FullFile()
        self.patch(cache, "_openTemp", openFull)
        e = yield self.assertFailure(cache.fetch(self.fileURL()), ArtifactError)
        self.assertIn(part, str(e))
        self.assertIn("No space left", str(e))
        self.assertFalse(os.path.exists(part))
        self.assertEqual(len(opened), 1)


    def test_leftoversRemovedAtStart(self):
        """
        The download file of a fetch cut short by a kill (any age) is deleted
        when the cache is created, that is when the agent starts; a file
        still held by a live download is not.
        """
        os.makedirs(self.state.tmpDir)
        leftover = os.path.join(self.state.tmpDir, "artifact-k1lled.part")
        with open(leftover, "wb") as f:
            f.write(b"half an artifact")
        live, out = self.cache()._openTemp()
        self.addCleanup(out.close)
        other = os.path.join(self.state.tmpDir, "unrelated")
        open(other, "wb").close()
        self.cache()
        self.assertEqual(sorted(os.listdir(self.state.tmpDir)),
                         sorted([os.path.basename(live), "unrelated"]))

    def test_leftoverOfLiveDownloadKept(self):
        """
        A fetch does not delete the file another fetch is writing.
        """
        cache = self.cache()
        live, out = cache._openTemp()
        self.addCleanup(out.close)
        self.assertEqual(cache.removeLeftovers(), [])
        self.assertTrue(os.path.exists(live))
        out.close()
        self.assertEqual(cache.removeLeftovers(), [live])
        self.assertFalse(os.path.exists(live))


    @defer.inlineCallbacks
    def test_finishedDownloadNotTakenForLeftover(self):
        """
        A download that is complete but not yet in the cache is not deleted
        by another fetch's look for leftovers (in another thread) at that
        moment: it is held until renamed.
        """
        cache = self.cache()
        openTemp = cache._openTemp
        swept = []

        class Closing(object):
            # The download file; at its close, another fetch sweeps.
            def __init__(self, f):
                self._f = f

            def write(self, data):
                return self._f.write(data)

            def close(self):
                self._f.close()
                swept.extend(cache.removeLeftovers())

        def opening():
            path, out = openTemp()
            return path, Closing(out)
        self.patch(cache, "_openTemp", opening)
        path, sha = yield cache.fetch(self.fileURL(), digest=self.sha)
        self.assertEqual(swept, [])
        self.assertEqual(sha256File(path), self.sha)


class FullFile(object):
    """
    A file on a full disk.
    """

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self):
        pass


class EvictionTests(unittest.TestCase):
    """
    The artifact cache stays within C{maxBytes}, least recently used first,
    sparing what was used lately.
    """

    def setUp(self):
        root = os.path.abspath(self.mktemp())
        self.serve = os.path.join(root, "serve")
        os.makedirs(self.serve)
        self.state = StateLayout(os.path.join(root, "state"))

    def artifact(self, name):
        """
        @return: C{(file URL, sha256)} of a new 4 KiB artifact.
        """
        path = os.path.join(self.serve, name)
        with open(path, "wb") as f:
            f.write(os.urandom(4096))
        return "file://" + path, sha256File(path)

    def age(self, sha, seconds):
        path = self.state.artifact(sha)
        then = time.time() - seconds
        os.utime(path, (then, then))

    @defer.inlineCallbacks
    def test_leastRecentlyUsedFirst(self):
        """
        Past the limit, the artifacts used longest ago are deleted until the
        rest fit; a cache hit counts as a use.
        """
        cache = ArtifactCache(self.state, reactor, maxBytes=3 * 4096)
        fetched = []
        for name in ("a", "b", "c"):
            url, sha = self.artifact(name)
            yield cache.fetch(url)
            fetched.append((url, sha))
        self.age(fetched[0][1], 3000)
        self.age(fetched[1][1], 2000)
        self.age(fetched[2][1], 1000)
        yield cache.fetch(fetched[0][0], digest=fetched[0][1])  # a used again: newest
        url, sha = self.artifact("d")
        yield cache.fetch(url)
        self.assertEqual(sorted(os.listdir(self.state.artifactsDir)),
                         sorted([fetched[0][1], fetched[2][1], sha]))
        # A fetch of an evicted artifact downloads it again.
        path, again = yield cache.fetch(fetched[1][0], digest=fetched[1][1])
        self.assertEqual((again, os.path.exists(path)), (fetched[1][1], True))

    @defer.inlineCallbacks
    def test_recentlyUsedKept(self):
        """
        Artifacts used in the last ten minutes stay even over the limit (a
        deploy may be about to extract them); no limit keeps everything.
        """
        cache = ArtifactCache(self.state, reactor, maxBytes=4096)
        shas = []
        for name in ("a", "b", "c"):
            url, sha = self.artifact(name)
            yield cache.fetch(url)
            shas.append(sha)
        self.assertEqual(sorted(os.listdir(self.state.artifactsDir)), sorted(shas))
        self.age(shas[0], KEEP_RECENT + 60)
        self.assertEqual(cache.evict(), [self.state.artifact(shas[0])])
        unlimited = ArtifactCache(self.state, reactor)
        for sha in shas[1:]:
            self.age(sha, KEEP_RECENT + 60)
        self.assertEqual(unlimited.evict(), [])
        self.assertEqual(sorted(os.listdir(self.state.artifactsDir)), sorted(shas[1:]))

    @defer.inlineCallbacks
    def test_hitSparedDuringRehash(self):
        """
        A cached artifact being re-hashed for a cache hit is marked used
        first, so an eviction meanwhile (another pod's fetch) spares it.
        """
        from p2twisted.agent import artifacts
        cache = ArtifactCache(self.state, reactor, maxBytes=0)
        url, sha = self.artifact("a")
        yield cache.fetch(url)
        self.age(sha, KEEP_RECENT + 60)
        evicted = []
        original = artifacts.sha256File

        def hashing(path):
            evicted.extend(cache.evict())
            return original(path)
        self.patch(artifacts, "sha256File", hashing)
        path, got = yield cache.fetch(url, digest=sha)
        self.assertEqual((evicted, got, os.path.exists(path)), ([], sha, True))
