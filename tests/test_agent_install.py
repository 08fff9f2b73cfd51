"""
Tests for L{p2twisted.agent.install}: archive checks, extraction with GNU tar,
activation, pruning and entry points.
"""

import gzip
import io
import os
import stat

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2twisted.agent.archive import NoSpace
from p2twisted.agent.fsutil import syncFilesystem
from p2twisted.agent.install import (
    Installer, checkArchive, diskUsage, entryPoints, processUmask)
from p2twisted.agent.layout import PodLayout
from p2twisted.errors import ArtifactError, DigestMismatch, UnsafeArchive
from tests.artifacts import buildHoist, member, simpleHoist

TIMEOUT = 30


def _header(name, kind=b"0", size=0):
    """
    @return: a plain ustar header block.
    """
    import tarfile
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime, info.mode = kind, size, 1700000000, 0o644
    return info.tobuf(tarfile.USTAR_FORMAT)


def _extension(kind, data, padding=b""):
    """
    @return: an extension header of type C{kind} (long name, PAX...)
        carrying C{data}, then C{padding} and NULs to a whole block.
    """
    body = data + padding
    return _header("ext", kind, len(data)) + body + bytes(-len(body) % 512)


def _record(keyword, value):
    """
    @return: a PAX record (its length right, unless C{keyword} starts with
        a blank: then one more than the length field says).
    """
    body = b" %s=%s\n" % (keyword, value)
    length = len(body) + len(str(len(body) + 2))
    return b"%d%s" % (length, body)


class CheckArchiveTests(unittest.TestCase):
    """
    L{checkArchive} accepts ordinary hoists and names the member it refuses.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "a.tar.gz")

    def refused(self, name, why, **kwargs):
        """
        Build an archive from C{kwargs}; assert it is refused naming C{name}.
        """
        limits = {"maxBytes": kwargs.pop("maxBytes")} if "maxBytes" in kwargs else {}
        buildHoist(self.path, **kwargs)
        e = self.assertRaises(UnsafeArchive, checkArchive, self.path, **limits)
        self.assertIn(repr(name), str(e))
        self.assertIn(why, str(e))
        self.assertIn(self.path, str(e))
        self.assertNotIn("\n", str(e))
        return e

    def test_ordinary(self):
        """
        Directories, files, a symlink pointing outside (a virtualenv's
        python), a hard link to an earlier file, a regular file given twice,
        a long name and the C{./} root entry are all accepted.
        """
        longName = "lib/" + "x" * 150 + "/mod.py"
        buildHoist(self.path, dirs=[".", "bin", "lib"],
                   files={"bin/launch": (b"#!/bin/sh\n", 0o755), "lib/a": b"a", longName: b"m"},
                   symlinks={"bin/python": "/usr/bin/python3", "lib/rel": "../bin"},
                   hardlinks={"lib/b": "lib/a"},
                   extra=[member("lib/a", content=b"again"), member("./lib/./c", content=b"c")])
        names = checkArchive(self.path)
        self.assertIn("bin/python", names)
        self.assertIn(longName, names)
        self.assertEqual(len(names), 11)

    def test_paxFormat(self):
        """
        PAX archives (long names in extended headers) are read too.
        """
        import tarfile
        longName = "d/" + "y" * 200
        buildHoist(self.path, files={longName: b"z"}, format=tarfile.PAX_FORMAT)
        self.assertEqual(checkArchive(self.path), [longName])

    def test_absolute(self):
        """
        An absolute member path is refused.
        """
        self.refused("/etc/cron.d/evil", "absolute", extra=[member("/etc/cron.d/evil")])

    def test_dotDot(self):
        """
        A member path with C{..} is refused.
        """
        self.refused("bin/../../evil", "'..'", extra=[member("bin/../../evil")])

    def test_throughSymlink(self):
        """
        A member written through a symlink of the archive is refused, also
        deeper under it and through a symlink to a directory of the archive.
        """
        self.refused("link/x", "through the symbolic link 'link'",
                     symlinks={"link": "/tmp"}, extra=[member("link/x")])
        self.refused("a/link/sub/x", "through the symbolic link 'a/link'",
                     dirs=["a", "a/real"], symlinks={"a/link": "real"},
                     extra=[member("a/link/sub/x")])

    def test_underRegularFile(self):
        """
        A member under a regular file is refused.
        """
        self.refused("f/x", "'f', which is a regular file", files={"f": b""},
                     extra=[member("f/x")])

    def test_hardLinkOutside(self):
        """
        Hard links to absolute paths, to C{..}, to members not in the archive
        (yet), to symlinks, directories or themselves are refused.
        """
        self.refused("h", "absolute", hardlinks={"h": "/etc/shadow"})
        self.refused("h", "'..'", hardlinks={"h": "../../etc/shadow"})
        self.refused("h", "not a regular file earlier", hardlinks={"h": "later"},
                     files={"x": b""}, extra=[member("later")])
        self.refused("h", "not a regular file earlier", symlinks={"s": "/etc/shadow"},
                     hardlinks={"h": "s"})
        self.refused("h", "not a regular file earlier", dirs=["d"], hardlinks={"h": "d"})
        self.refused("h", "not a regular file earlier", hardlinks={"h": "h"})
        self.refused("h", "not a regular file earlier", symlinks={"s": "/etc"},
                     hardlinks={"h": "s/shadow"})
        self.refused("h", "would replace a directory", dirs=["h"], hardlinks={"h": "h"})
        self.refused("s", "would replace a symbolic link", symlinks={"s": "/etc/shadow"},
                     hardlinks={"s": "s"})

    def test_devices(self):
        """
        Character and block devices and FIFOs are refused.
        """
        self.refused("dev/mem", "device file", extra=[member("dev/mem", "chardev")])
        self.refused("dev/sda", "device file", extra=[member("dev/sda", "blockdev")])
        self.refused("run/pipe", "FIFO", extra=[member("run/pipe", "fifo")])

    def test_setuid(self):
        """
        Setuid and setgid bits are refused, on files and directories.
        """
        self.refused("bin/su", "setuid", files={"bin/su": (b"", 0o4755)})
        self.refused("bin/sg", "setuid/setgid", files={"bin/sg": (b"", 0o2755)})
        self.refused("shared", "setuid/setgid", dirs={"shared": 0o2775})

    def test_tooLarge(self):
        """
        The member taking the expanded size past the limit is named.
        """
        self.refused("c", "limit of 10 bytes", files={"a": b"1234", "b": b"1234", "c": b"1234"},
                     maxBytes=10)
        buildHoist(self.path, files={"a": b"1234", "b": b"1234"})
        self.assertEqual(len(checkArchive(self.path, maxBytes=8)), 2)

    def test_replaceKinds(self):
        """
        A member replacing an earlier one of another kind (symlink and
        directory, file and directory, file and symlink) is refused.
        """
        self.refused("a", "replace a symbolic link with a directory",
                     symlinks={"a": "/tmp"}, extra=[member("a", "dir")])
        self.refused("a", "replace a directory with a symbolic link",
                     dirs=["a"], symlinks={"a": "/tmp"})
        self.refused("a", "replace a directory with a regular file",
                     files={"a/x": b""}, extra=[member("a")])
        self.refused("a", "replace a regular file with a symbolic link",
                     files={"a": b""}, symlinks={"a": "/tmp"})
        self.refused(".", "install directory itself", extra=[member(".", "symlink", target="/")])

    def test_ambiguousHeaders(self):
        """
        Headers GNU tar would read differently from Python are refused: a
        name prefix under old-GNU magic, sparse markers, a global header
        renaming members.
        """
        import tarfile
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
            info, data = member("passwd", content=b"x")
            archive.addfile(info, io.BytesIO(data))
        header = bytearray(raw.getvalue()[:512])
        header[345:348] = b"zzz"
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % (sum(header),)
        with gzip.open(self.path, "wb") as f:
            f.write(bytes(header) + raw.getvalue()[512:])
        e = self.assertRaises(UnsafeArchive, checkArchive, self.path)
        self.assertIn("'zzz/passwd'", str(e))
        self.assertIn("read differently", str(e))

        info, data = member("safe", content=b"x")
        info.pax_headers = {"GNU.sparse.name": "link/x"}
        self.refused("link/x", "sparse", format=tarfile.PAX_FORMAT, extra=[(info, data)])

        with tarfile.open(self.path, "w:gz", format=tarfile.PAX_FORMAT,
                          pax_headers={"path": "x"}) as archive:
            info, data = member("a", content=b"x")
            archive.addfile(info, io.BytesIO(data))
        e = self.assertRaises(UnsafeArchive, checkArchive, self.path)
        self.assertIn("global header", str(e))
        with tarfile.open(self.path, "w:gz", format=tarfile.PAX_FORMAT,
                          pax_headers={"comment": "git commit id"}) as archive:
            info, data = member("a", content=b"x")
            archive.addfile(info, io.BytesIO(data))
        self.assertEqual(len(checkArchive(self.path)), 1)

    def rawArchive(self, blocks, patch):
        """
        Write a gzipped tar of C{blocks} (bytes of a plain tar), after
        C{patch(blocks)} changed them in place, with each header's checksum
        set again.
        """
        data = bytearray(blocks)
        patch(data)
        for offset in range(0, len(data), 512):
            header = data[offset:offset + 512]
            if header[257:262] == b"ustar":
                header[148:156] = b" " * 8
                header[148:156] = b"%06o\0 " % (sum(header),)
                data[offset:offset + 512] = header
        with gzip.open(self.path, "wb") as f:
            f.write(bytes(data))

    def test_numbersReadAlike(self):
        """
        Number fields Python and GNU tar read differently (a sign, a '_', a
        leading NUL) are refused, in the member's header or in the long-name
        header before it, rather than letting tar see other members.
        """
        import tarfile
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
            for name in ("a", "b/" + "x" * 120):
                info, data = member(name, content=b"x" * 600)
                archive.addfile(info, io.BytesIO(data))
        plain = raw.getvalue()

        def field(offset, value):
            def patch(data):
                data[offset:offset + len(value)] = value
            return patch
        for offset, value in [(124, b"0000000_1130"), (124, b"\0000000001130"),
                              (124, b"+0000001130\0"), (100, b"0_00644\0")]:
            self.rawArchive(plain, field(offset, value))
            e = self.assertRaises(UnsafeArchive, checkArchive, self.path)
            self.assertIn("'a'", str(e))
            self.assertIn("read differently", str(e))
        # The GNU long-name header of the second member, after a's 2 blocks.
        self.rawArchive(plain, field(3 * 512 + 124, b"0000000_0171"))
        e = self.assertRaises(UnsafeArchive, checkArchive, self.path)
        self.assertIn("extension headers that tar implementations read differently", str(e))
        self.rawArchive(plain, lambda data: None)
        self.assertEqual(checkArchive(self.path), ["a", "b/" + "x" * 120])

    def test_paxRecordsReadAlike(self):
        """
        PAX records GNU tar reads differently from Python are refused: a
        record longer than the header's data (GNU tar drops it and uses the
        ustar name), two blanks after a length (only GNU tar reads the
        record), a record in the padding after the data (only Python reads
        it), and a size that only GNU tar reads, which would have it take a
        file's content for headers never checked (here a device file).
        Records both read alike, in PAX archives of Python and of GNU tar,
        are accepted.
        """
        import subprocess
        import tarfile
        header, record = _header, _record

        def pax(data, padding=b""):
            return _extension(tarfile.XHDTYPE, data, padding)

        device = tarfile.TarInfo("disk")
        device.type, device.devmajor, device.mode = tarfile.CHRTYPE, 8, 0o666
        content = device.tobuf(tarfile.USTAR_FORMAT) + bytes(512)
        long = record(b"path", b"checked")
        cases = [("checked", ["other"], pax(long[:-3], long[-3:]) + header("other")),
                 ("other", ["unchecked"], pax(record(b" path", b"unchecked")) + header("other")),
                 ("unchecked", ["other"],
                  pax(record(b"comment", b"x"), record(b"path", b"unchecked")) + header("other")),
                 ("carrier", ["carrier", "disk"], pax(record(b" size", b"0"))
                  + header("carrier", size=len(content)) + content)]
        self.refusedChains(cases)

        with gzip.open(self.path, "wb") as f:
            f.write(pax(record(b"path", b"fine") + record(b"comment", b"a=b c")) + header("other")
                    + bytes(1024))
        self.assertEqual(checkArchive(self.path), ["fine"])
        tree = os.path.join(self.dir, "tree")
        deep = os.path.join(tree, "d" * 150, "\u00fcn\u00ef c\u00f6d\u00e9")
        os.makedirs(deep)
        with open(os.path.join(deep, "f" * 120), "w") as f:
            f.write("x")
        subprocess.run(["tar", "--format=pax", "-czf", self.path, "-C", tree, "."], check=True)
        self.assertEqual(len(checkArchive(self.path)), 4)

    def refusedChains(self, cases):
        """
        Assert each archive of C{cases} (C{(name Python reads, what GNU tar
        lists, tar blocks)}) is listed so by C{tar -tv}, and is refused
        naming C{name}.
        """
        import subprocess
        for name, listing, blocks in cases:
            data = blocks + bytes(1024)
            listed = subprocess.run(["tar", "-tvf", "-"], input=data, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL).stdout.decode().splitlines()
            self.assertEqual([line.split(None, 5)[5] for line in listed], listing)
            with gzip.open(self.path, "wb") as f:
                f.write(data)
            e = self.assertRaises(UnsafeArchive, checkArchive, self.path)
            self.assertIn(repr(name), str(e))
            self.assertIn("read differently", str(e))

    def test_extensionChainsReadAlike(self):
        """
        Of two long names (or link names, or PAX headers) for one member,
        Python reads the first and GNU tar the last; of a long name then a
        PAX path, Python reads the long name and GNU tar the path: refused.
        So is a global header with records only GNU tar reads.  A PAX path
        then a long name (both read the path) is accepted.
        """
        import tarfile
        L, K, X = tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE
        self.refusedChains([
            ("first", ["second"],
             _extension(L, b"first\0") + _extension(L, b"second\0") + _header("x")),
            ("n", ["n -> second"], _extension(K, b"first\0") + _extension(K, b"second\0")
             + _header("n", tarfile.SYMTYPE)),
            ("first", ["second"], _extension(X, _record(b"path", b"first"))
             + _extension(X, _record(b"path", b"second")) + _header("x")),
            ("first", ["second"], _extension(L, b"first\0")
             + _extension(X, _record(b"path", b"second")) + _header("x"))])
        # A global header's records are checked too: only GNU tar reads this
        # size, and would take the file's content for a header.
        device = tarfile.TarInfo("disk")
        device.type, device.devmajor, device.mode = tarfile.CHRTYPE, 8, 0o666
        content = device.tobuf(tarfile.USTAR_FORMAT) + bytes(512)
        self.refusedChains([
            ("carrier", ["carrier", "disk"], _extension(tarfile.XGLTYPE, _record(b" size", b"0"))
             + _header("carrier", size=len(content)) + content)])
        with gzip.open(self.path, "wb") as f:
            f.write(_extension(X, _record(b"path", b"first")) + _extension(L, b"second\0")
                    + _header("x") + bytes(1024))
        self.assertEqual(checkArchive(self.path), ["first"])

    def test_fileNamedLikeDirectory(self):
        """
        A regular file (type '0') whose name (or PAX path) ends with '/' is a
        directory to GNU tar but a file to Python: refused; so is the
        reverse.
        """
        self.refused("d/", "directory's name", extra=[member("d/", content=b"")])
        import tarfile
        info, data = member("d", content=b"x")
        info.pax_headers = {"path": "d/"}
        self.refused("d", "directory's name", format=tarfile.PAX_FORMAT, extra=[(info, data)])
        # Type NUL and a header name ending with '/' (a directory to Python)
        # but a long name or PAX path without (a regular file to GNU tar).
        old = bytearray(_header("d/"))
        old[156:157], old[148:156] = b"\0", b" " * 8
        old[148:156] = b"%06o\0 " % (sum(old),)
        self.refusedChains([
            ("file", ["file"], _extension(tarfile.GNUTYPE_LONGNAME, b"file\0") + old),
            ("file", ["file"], _extension(tarfile.XHDTYPE, _record(b"path", b"file")) + old)])

    def test_notGzip(self):
        """
        A file that is not gzip, a truncated one, an empty one and a plain
        tar all fail with an L{ArtifactError} naming the file.
        """
        with open(self.path, "wb") as f:
            f.write(b"<html>404 Not Found</html>\n")
        e = self.assertRaises(ArtifactError, checkArchive, self.path)
        self.assertIn("not a valid gzip", str(e))
        simpleHoist(self.path, files={"big": os.urandom(100000)})
        with open(self.path, "rb") as f:
            data = f.read()
        with open(self.path, "wb") as f:
            f.write(data[:len(data) // 2])
        e = self.assertRaises(ArtifactError, checkArchive, self.path)
        self.assertIn(self.path, str(e))
        open(self.path, "wb").close()
        self.assertIn("empty", str(self.assertRaises(ArtifactError, checkArchive, self.path)))
        buildHoist(self.path, files={"a": b"a"}, compress=False)
        self.assertRaises(ArtifactError, checkArchive, self.path)

    def test_notTar(self):
        """
        Gzipped data that is not a tar archive is refused.
        """
        with gzip.open(self.path, "wb") as f:
            f.write(b"just some text, not a tar header" * 40)
        e = self.assertRaises(ArtifactError, checkArchive, self.path)
        self.assertIn("not a valid tar archive", str(e))


class InstallerTestCase(unittest.TestCase):
    """
    Common setup: a pod layout and artifacts in a temporary directory.
    """

    timeout = TIMEOUT

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.pod = PodLayout(os.path.join(self.root, "pods"), "pod")
        self.installer = Installer(reactor)

    def artifact(self, name="a.tar.gz", **kwargs):
        path = os.path.join(self.root, name)
        simpleHoist(path, **kwargs)
        return path

    def installed(self, version, **kwargs):
        return self.installer.install(self.pod, "app", version, self.artifact(**kwargs))

    def assertNothingInstalled(self):
        installs = self.pod.installsDir("app")
        self.assertEqual(os.listdir(installs) if os.path.isdir(installs) else [], [])
        self.assertFalse(os.path.lexists(self.pod.current("app")))


class InstallTests(InstallerTestCase):
    """
    L{Installer.install}.
    """

    @defer.inlineCallbacks
    def test_install(self):
        """
        The artifact is extracted into C{installs/<launchable>_<version>}:
        contents, exec bits (under the umask), a symlink pointing outside and
        a hard link all as in the archive; no temporary directory remains.
        """
        path = os.path.join(self.root, "a.tar.gz")
        sha = buildHoist(path, dirs=["bin", "lib"],
                         files={"bin/launch": (b"#!/bin/sh\n", 0o775), "lib/a": (b"data", 0o666)},
                         symlinks={"bin/python": "/usr/bin/python3"}, hardlinks={"lib/b": "lib/a"})
        installDir = yield self.installer.install(self.pod, "app", "1.0", path, digest=sha)
        self.assertEqual(installDir, self.pod.installDir("app", "1.0"))
        self.assertEqual(os.listdir(self.pod.installsDir("app")), ["app_1.0"])
        with open(os.path.join(installDir, "lib/a"), "rb") as f:
            self.assertEqual(f.read(), b"data")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(installDir, "bin/launch")).st_mode), 0o755)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(installDir, "lib/a")).st_mode), 0o644)
        self.assertEqual(os.readlink(os.path.join(installDir, "bin/python")), "/usr/bin/python3")
        self.assertTrue(os.path.samefile(os.path.join(installDir, "lib/a"),
                                         os.path.join(installDir, "lib/b")))
        self.assertEqual(stat.S_IMODE(os.stat(installDir).st_mode), 0o755)

    @defer.inlineCallbacks
    def test_umaskOtherThanTheAgents(self):
        """
        Files are created under the installer's umask also when it is not
        the agent's own (tar is then started under it): with C{0o077}
        nobody else may read them.
        """
        self.assertNotEqual(processUmask(), 0o077)
        installer = Installer(reactor, umask=0o077)
        path = os.path.join(self.root, "a.tar.gz")
        sha = buildHoist(path, files={"bin/launch": (b"#!/bin/sh\n", 0o775),
                                      "lib/a": (b"data", 0o666)})
        installDir = yield installer.install(self.pod, "app", "1.0", path, digest=sha)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(installDir, "bin/launch")).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(installDir, "lib/a")).st_mode), 0o600)

    @defer.inlineCallbacks
    def test_hardLinksKeepTheirFiles(self):
        """
        A regular file given after a hard link of the same name replaces the
        link, not the file linked to; a self link (C{./a} -> C{a}, as in
        P2's tests) keeps its file.
        """
        path = os.path.join(self.root, "a.tar.gz")
        buildHoist(path, files={"bin/launch": (b"#!/bin/sh\n", 0o755), "a": b"original"},
                   hardlinks={"b": "a"},
                   extra=[member("b", content=b"replaced"), member("./a", "hardlink", target="a")])
        installDir = yield self.installer.install(self.pod, "app", "1", path)
        for name, content in (("a", b"original"), ("b", b"replaced")):
            with open(os.path.join(installDir, name), "rb") as f:
                self.assertEqual(f.read(), content)
        self.assertFalse(os.path.samefile(os.path.join(installDir, "a"),
                                          os.path.join(installDir, "b")))

    @defer.inlineCallbacks
    def test_writeThroughSymlinkRefused(self):
        """
        An archive writing through a symlink to a directory outside fails
        with L{UnsafeArchive}; nothing is written there and nothing is left
        in C{installs/}.
        """
        outside = os.path.join(self.root, "outside")
        os.makedirs(outside)
        path = os.path.join(self.root, "evil.tar.gz")
        buildHoist(path, files={"bin/launch": b"ok"}, symlinks={"link": outside},
                   extra=[member("link/x", content=b"owned")])
        e = yield self.assertFailure(self.installer.install(self.pod, "app", "1", path), UnsafeArchive)
        self.assertIn("'link/x'", str(e))
        self.assertEqual(os.listdir(outside), [])
        self.assertNothingInstalled()

    @defer.inlineCallbacks
    def test_unsafeMembersRefused(self):
        """
        Each kind of unsafe member fails the install, leaving nothing.
        """
        cases = [dict(extra=[member("/abs")]), dict(extra=[member("../up")]),
                 dict(hardlinks={"h": "/etc/passwd"}), dict(extra=[member("p", "fifo")]),
                 dict(files={"s": (b"", 0o4755)}), dict(files={"big": b"x" * 2000})]
        installer = Installer(reactor, maxExpandedBytes=1000)
        for number, case in enumerate(cases):
            path = os.path.join(self.root, "bad%d.tar.gz" % (number,))
            buildHoist(path, **case)
            yield self.assertFailure(installer.install(self.pod, "app", str(number), path),
                                     UnsafeArchive)
        self.assertNothingInstalled()

    @defer.inlineCallbacks
    def test_digestMismatch(self):
        """
        An artifact not matching C{digest} is not installed.
        """
        e = yield self.assertFailure(
            self.installer.install(self.pod, "app", "1", self.artifact(), digest="0" * 64),
            DigestMismatch)
        self.assertIn("0" * 64, str(e))
        self.assertNothingInstalled()

    @defer.inlineCallbacks
    def test_notGzip(self):
        """
        A file that is not a tar.gz fails with L{ArtifactError}.
        """
        path = os.path.join(self.root, "page.html")
        with open(path, "wb") as f:
            f.write(b"<html>Not Found</html>")
        yield self.assertFailure(self.installer.install(self.pod, "app", "1", path), ArtifactError)
        self.assertNothingInstalled()

    @defer.inlineCallbacks
    def test_tarFails(self):
        """
        When tar fails (here a stand-in reporting a full disk without reading
        its input), the install fails with its message and the install path,
        leaving nothing.
        """
        fake = os.path.join(self.root, "tar")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\necho 'tar: ./big: Cannot write: No space left on device' >&2\n"
                    "echo 'tar: Exiting with failure status due to previous errors' >&2\nexit 2\n")
        os.chmod(fake, 0o755)
        installer = Installer(reactor, tar=fake)
        e = yield self.assertFailure(
            installer.install(self.pod, "app", "1", self.artifact(files={"big": os.urandom(1 << 20)})),
            ArtifactError)
        self.assertIn("No space left on device", str(e))
        self.assertIn(self.pod.installsDir("app"), str(e))
        self.assertNothingInstalled()

    def recordingTar(self):
        """
        @return: C{(tar, runs)}: a GNU tar wrapper that keeps a copy of its
            input in C{runs} (one file per run), and the list of those files.
        """
        wrapper = os.path.join(self.root, "tar-recording")
        record = os.path.join(self.root, "tar-input")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nn=1\nwhile [ -e "%s.$n" ]; do n=$((n+1)); done\n'
                    'tee "%s.$n" | tar "$@"\n' % (record, record))
        os.chmod(wrapper, 0o755)

        def runs():
            return sorted(name for name in os.listdir(self.root) if name.startswith("tar-input."))
        return wrapper, runs

    @defer.inlineCallbacks
    def test_noSpace(self):
        """
        An artifact whose files do not fit in the free space of the pod's
        disk fails with a "disk full" L{ArtifactError} naming the sizes,
        before the member that does not fit reaches tar; a retry fails at
        once, without extracting again; once space is freed, it installs.
        """
        tar, runs = self.recordingTar()
        free = [64 * 1024]
        installer = Installer(reactor, tar=tar, freeSpace=lambda path: free[0])
        marker = b"does-not-fit" * 100
        path = self.artifact(files={"lib/small": b"s" * 1000, "lib/zbig": marker * 100})
        e = yield self.assertFailure(installer.install(self.pod, "app", "1", path), NoSpace)
        self.assertIn("disk full", str(e))
        self.assertTrue(str(e).endswith("65536 are free in %s" % (self.pod.installsDir("app"),)))
        self.assertIn("'lib/zbig'", str(e))
        self.assertEqual(len(runs()), 1)
        with open(os.path.join(self.root, runs()[0]), "rb") as f:
            self.assertNotIn(marker, f.read())
        self.assertNothingInstalled()

        e = yield self.assertFailure(installer.install(self.pod, "app", "1", path), NoSpace)
        self.assertIn("earlier attempt", str(e))
        self.assertEqual(len(runs()), 1)
        self.assertNothingInstalled()

        free[0] = 10 << 20
        installDir = yield installer.install(self.pod, "app", "1", path)
        with open(os.path.join(installDir, "lib/zbig"), "rb") as f:
            self.assertEqual(f.read(), marker * 100)

    @defer.inlineCallbacks
    def test_gzipBombPerPodLimit(self):
        """
        A small artifact of zeros expanding past the pod's own
        C{max_expanded_bytes} is refused before the zeros reach tar, and at
        once when tried again; another pod gets the agent's default limit.
        """
        tar, runs = self.recordingTar()
        installer = Installer(reactor, tar=tar, podMaxExpandedBytes={"pod": 1 << 20})
        path = os.path.join(self.root, "bomb.tar.gz")
        buildHoist(path, files={"bin/launch": (b"#!/bin/sh\n", 0o755),
                                "zeros": b"\0" * (8 << 20)})
        self.assertLess(os.path.getsize(path), 64 * 1024)
        e = yield self.assertFailure(installer.install(self.pod, "app", "1", path), UnsafeArchive)
        self.assertIn("'zeros'", str(e))
        self.assertIn("limit of 1048576 bytes", str(e))
        self.assertLess(os.path.getsize(os.path.join(self.root, runs()[0])), 1 << 20)
        e = yield self.assertFailure(installer.install(self.pod, "app", "1", path), UnsafeArchive)
        self.assertIn("earlier attempt", str(e))
        self.assertEqual(len(runs()), 1)
        self.assertNothingInstalled()

        other = PodLayout(self.pod.podRoot, "other")
        installDir = yield installer.install(other, "app", "1", path)
        self.assertEqual(os.path.getsize(os.path.join(installDir, "zeros")), 8 << 20)

    @defer.inlineCallbacks
    def test_reuse(self):
        """
        Installing a version already installed reuses its directory without
        reading the artifact.
        """
        first = yield self.installed("1")
        second = yield self.installer.install(self.pod, "app", "1", "/nonexistent.tar.gz")
        self.assertEqual(first, second)

    @defer.inlineCallbacks
    def test_leftoverTemporaryRemoved(self):
        """
        A C{.tmp-*} directory left by a crash is removed by the next install
        of the launchable, and cannot be activated.
        """
        leftover = os.path.join(self.pod.installsDir("app"), ".tmp-crashed")
        os.makedirs(os.path.join(leftover, "bin"))
        yield self.assertFailure(self.installer.activate(self.pod, "app", leftover), ArtifactError)
        installDir = yield self.installed("2")
        self.assertFalse(os.path.exists(leftover))
        yield self.installer.activate(self.pod, "app", installDir)
        self.assertEqual(os.readlink(self.pod.current("app")), "installs/app_2")

    def test_badNames(self):
        """
        A version or launchable id that is not a plain name is refused.
        """
        return defer.gatherResults([
            self.assertFailure(self.installer.install(self.pod, "app", "../x", "a"), ArtifactError),
            self.assertFailure(self.installer.install(self.pod, "a/b", "1", "a"), ArtifactError),
            self.assertFailure(self.installer.install(self.pod, "app", ".tmp-x", "a"), ArtifactError)])


class ActivateTests(InstallerTestCase):
    """
    L{Installer.activate} flips C{current} and C{last}.
    """

    @defer.inlineCallbacks
    def test_activate(self):
        """
        C{current} becomes a relative link to the install; no previous.
        """
        installDir = yield self.installed("1")
        previous = yield self.installer.activate(self.pod, "app", installDir)
        self.assertIsNone(previous)
        self.assertEqual(os.readlink(self.pod.current("app")), "installs/app_1")
        self.assertFalse(os.path.lexists(self.pod.last("app")))
        self.assertEqual(entryPoints(self.pod.current("app")), ["bin/launch"])

    @defer.inlineCallbacks
    def test_upgrade(self):
        """
        Activating a new version moves the old C{current} to C{last};
        activating it again changes nothing; rolling back swaps them.
        """
        v1 = yield self.installed("1")
        v2 = yield self.installed("2")
        yield self.installer.activate(self.pod, "app", v1)
        previous = yield self.installer.activate(self.pod, "app", v2)
        self.assertEqual(previous, v1)
        yield self.installer.activate(self.pod, "app", v2)
        self.assertEqual(os.readlink(self.pod.current("app")), "installs/app_2")
        self.assertEqual(os.readlink(self.pod.last("app")), "installs/app_1")
        yield self.installer.activate(self.pod, "app", v1)
        self.assertEqual(os.readlink(self.pod.current("app")), "installs/app_1")
        self.assertEqual(os.readlink(self.pod.last("app")), "installs/app_2")
        self.assertEqual([n for n in os.listdir(self.pod.launchableDir("app"))
                          if n.startswith(".")], [])

    @defer.inlineCallbacks
    def test_notAnInstall(self):
        """
        Only a directory in the launchable's C{installs/} can be activated.
        """
        os.makedirs(os.path.join(self.root, "elsewhere"))
        yield self.assertFailure(
            self.installer.activate(self.pod, "app", os.path.join(self.root, "elsewhere")),
            ArtifactError)
        yield self.assertFailure(
            self.installer.activate(self.pod, "app", self.pod.installDir("app", "9")), ArtifactError)


class PruneTests(InstallerTestCase):
    """
    L{Installer.prune} keeps the launchable's installs within its budget.
    """

    @defer.inlineCallbacks
    def installMany(self, count):
        dirs = []
        for number in range(1, count + 1):
            installDir = yield self.installed(str(number), files={"data": os.urandom(20000)})
            os.utime(installDir, (1000000 + number, 1000000 + number))
            dirs.append(installDir)
        return dirs

    @defer.inlineCallbacks
    def test_keepsCurrentAndLast(self):
        """
        Even with a budget of zero, C{current} and C{last} stay -- also when
        they are the oldest installs.
        """
        v1, v2, v3, v4 = yield self.installMany(4)
        yield self.installer.activate(self.pod, "app", v2)
        yield self.installer.activate(self.pod, "app", v1)
        self.installer.diskBudget = 0
        removed = yield self.installer.prune(self.pod, "app")
        self.assertEqual(removed, [v3, v4])
        self.assertEqual(sorted(os.listdir(self.pod.installsDir("app"))), ["app_1", "app_2"])

    @defer.inlineCallbacks
    def test_oldestFirst(self):
        """
        Installs are deleted oldest first, only until the budget is met.
        """
        v1, v2, v3, v4 = yield self.installMany(4)
        yield self.installer.activate(self.pod, "app", v3)
        yield self.installer.activate(self.pod, "app", v4)
        sizes = [diskUsage(d) for d in (v1, v2, v3, v4)]
        self.installer.diskBudget = sum(sizes) - sizes[0]
        removed = yield self.installer.prune(self.pod, "app")
        self.assertEqual(removed, [v1])
        self.installer.diskBudget = sum(sizes)
        removed = yield self.installer.prune(self.pod, "app")
        self.assertEqual(removed, [])

    @defer.inlineCallbacks
    def test_reuseCountsAsRecent(self):
        """
        Reinstalling (reusing) an old version makes it the most recent.
        """
        v1, v2, v3 = yield self.installMany(3)
        yield self.installed("1")
        yield self.installer.activate(self.pod, "app", v3)
        sizes = [diskUsage(d) for d in (v1, v2, v3)]
        self.installer.diskBudget = sum(sizes) - 1
        removed = yield self.installer.prune(self.pod, "app")
        self.assertEqual(removed, [v2])

    def test_noInstalls(self):
        """
        Pruning a launchable with no installs does nothing.
        """
        return self.installer.prune(self.pod, "app").addCallback(self.assertEqual, [])


class EntryPointTests(unittest.TestCase):
    """
    L{entryPoints} expands and checks a launchable's entry points.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.dir, "bin"))

    def write(self, rel, mode=0o755):
        path = os.path.join(self.dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(path, mode)

    def test_default(self):
        """
        Without declared entry points, C{bin/launch} is the one.
        """
        self.write("bin/launch")
        self.assertEqual(entryPoints(self.dir), ["bin/launch"])
        self.assertEqual(entryPoints(self.dir, []), ["bin/launch"])

    def test_directory(self):
        """
        A directory expands into its executable files, sorted; dotfiles,
        non-executable files and subdirectories are skipped.
        """
        for name in ("web", "worker", "cron", ".hidden"):
            self.write("bin/launch/" + name)
        self.write("bin/launch/README", 0o644)
        os.makedirs(os.path.join(self.dir, "bin/launch/sub"))
        self.write("bin/extra")
        self.assertEqual(entryPoints(self.dir, ["bin/launch", "./bin/extra", "bin/launch/web"]),
                         ["bin/launch/cron", "bin/launch/web", "bin/launch/worker", "bin/extra"])

    def test_missing(self):
        """
        A missing entry point is an L{ArtifactError} naming it.
        """
        e = self.assertRaises(ArtifactError, entryPoints, self.dir, ["bin/serve"])
        self.assertIn("bin/serve does not exist", str(e))

    def test_notExecutable(self):
        """
        A non-executable entry point is an L{ArtifactError} giving its mode.
        """
        self.write("bin/launch", 0o644)
        e = self.assertRaises(ArtifactError, entryPoints, self.dir)
        self.assertIn("bin/launch", str(e))
        self.assertIn("not executable (mode 0644)", str(e))

    def test_emptyDirectory(self):
        """
        A directory without executables is an L{ArtifactError}.
        """
        self.write("bin/launch/README", 0o644)
        e = self.assertRaises(ArtifactError, entryPoints, self.dir)
        self.assertIn("holds no executable", str(e))

    def test_outside(self):
        """
        Absolute entry points and C{..} are refused.
        """
        for entry in ("/bin/sh", "../bin/launch", "bin/../../x", ""):
            self.assertRaises(ArtifactError, entryPoints, self.dir, [entry])


class SyncFilesystemTests(unittest.TestCase):
    """
    L{syncFilesystem}: C{sync -f} without a process.
    """

    def test_flushes(self):
        """
        A directory or a file on a filesystem can be flushed; a missing path
        is an C{OSError}.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        with open(os.path.join(path, "f"), "w") as f:
            f.write("x")
        syncFilesystem(path)
        syncFilesystem(os.path.join(path, "f"))
        self.assertRaises(OSError, syncFilesystem, os.path.join(path, "missing"))
