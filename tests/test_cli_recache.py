"""
The compiled regular expressions kept between runs of C{p2}
(L{p2twisted.cli.recache}): patterns taken from the file behave as compiled
ones, a damaged file is ignored, none is written without bytecode.
"""

import marshal
import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial import unittest

from p2twisted.cli import recache
from tests.cli import ROOT

#: Compiles and uses patterns (str and bytes, flags, named groups) after
#: installing the cache at the path given, and prints what they found.
USE = r"""
import re, sys
from p2twisted.cli import recache
recache.install(sys.argv[1])
found = []
for pattern, flags, text in [
        (r"(?P<word>[a-z]+)-(?P<n>\d+)", 0, "abc-42"), (r"HELLO\s+(\w+)", re.I, "hello world"),
        (rb"[\x00-\x1f]+(?P<tail>.*)", 0, b"\x01\x02rest"), (r"[^\t\n\r -~\x85]", 0, "a\u00e9"),
        ("^a.b$", re.M | re.S, "x\na\nb\ny")]:
    compiled = re.compile(pattern, flags)
    match = compiled.search(text)
    found.append((compiled.groupindex == re.compile(pattern, flags).groupindex,
                  compiled.flags, match and match.group(0), match and match.groups()))
print(repr(found))
"""


def run(path, code=USE, **env):
    """
    Run C{code} as the module C{using} imported by a fresh Python (the
    patterns it compiles are a module's), with C{path} as C{sys.argv[1]}.

    @return: its standard output.
    """
    directory = tempfile.mkdtemp()
    try:
        with open(os.path.join(directory, "using.py"), "w") as f:
            f.write(code)
        environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        environ.update(env)
        result = subprocess.run(
            [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]); import using",
             path, directory], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
    finally:
        shutil.rmtree(directory)
    if result.returncode:
        raise AssertionError(result.stderr.decode())
    return result.stdout


class RegexCacheTests(unittest.TestCase):

    def setUp(self):
        self.path = os.path.join(os.path.abspath(self.mktemp()), "regex.marshal")

    def test_sameResults(self):
        """
        The patterns a run compiled are written at its exit, and a run
        taking them from the file finds what compiling them finds.
        """
        plain = run(self.path, USE.replace("recache.install(sys.argv[1])", ""))
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual(run(self.path), plain)
        with open(self.path, "rb") as f:
            known = marshal.loads(f.read())
        self.assertIn((rb"[\x00-\x1f]+(?P<tail>.*)", 0), known)
        self.assertEqual(run(self.path), plain)

    def test_fileUsed(self):
        """
        What the file holds for a pattern is what C{re} uses (the file is
        read, not only written).
        """
        code = ("import re, sys\n"
                "from p2twisted.cli import recache\n"
                "recache.install(sys.argv[1])\n"
                "print(bool(re.compile('x+').fullmatch('yyy')), bool(re.compile('y+').match('y')))\n")
        self.assertEqual(run(self.path, code), b"False True\n")
        with open(self.path, "rb") as f:
            known = marshal.loads(f.read())
        known[("x+", 0)] = known[("y+", 0)]
        with open(self.path, "wb") as f:
            marshal.dump(known, f)
        self.assertEqual(run(self.path, code), b"True True\n")

    def test_onlyImports(self):
        """
        Only the patterns compiled in the import of a module are written, not
        those compiled later (made of a verb's input, say).
        """
        code = ("import re, sys\n"
                "from p2twisted.cli import recache\n"
                "recache.install(sys.argv[1])\n"
                "re.compile('imported')\n"
                "def later():\n"
                "    re.compile('later')\n")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "compiling.py"), "w") as f:
            f.write(code)
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                        "import compiling; compiling.later()" % (directory,), self.path],
                       cwd=ROOT, env={k: v for k, v in os.environ.items()
                                      if k != "PYTHONDONTWRITEBYTECODE"}, check=True)
        with open(self.path, "rb") as f:
            known = marshal.loads(f.read())
        self.assertEqual(sorted(known), [("imported", 0)])

    def test_damagedFile(self):
        """
        A file that is not the cache, or holds a pattern's code damaged,
        costs only the compiling.
        """
        plain = run(self.path, USE.replace("recache.install(sys.argv[1])", ""))
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "wb") as f:
            f.write(b"\x00not marshal data")
        self.assertEqual(run(self.path), plain)
        with open(self.path, "rb") as f:
            known = marshal.loads(f.read())
        known[(r"HELLO\s+(\w+)", 2)] = (2, [999, 1, 2], 1, {}, (None, None))
        with open(self.path, "wb") as f:
            marshal.dump(known, f)
        self.assertEqual(run(self.path), plain)

    def test_noBytecodeNoFile(self):
        """
        Like bytecode, the file is not written when Python writes none; an
        unwritable place is no error.
        """
        run(self.path, PYTHONDONTWRITEBYTECODE="1")
        self.assertFalse(os.path.exists(self.path))
        os.makedirs(os.path.dirname(self.path))
        with open(os.path.dirname(self.path) + "/file", "w"):
            pass
        run(os.path.dirname(self.path) + "/file/regex.marshal")

    def test_path(self):
        """
        The file is per Python, in C{$XDG_CACHE_HOME/p2twisted}, else in
        C{~/.cache/p2twisted}.
        """
        path = recache.cachePath({"XDG_CACHE_HOME": "/somewhere"})
        self.assertEqual(os.path.dirname(path), "/somewhere/p2twisted")
        self.assertIn("%x" % (sys.hexversion,), os.path.basename(path))
        self.assertEqual(os.path.dirname(recache.cachePath({})),
                         os.path.join(os.path.expanduser("~"), ".cache", "p2twisted"))
