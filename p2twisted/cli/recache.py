# -*- test-case-name: tests.test_cli_recache -*-
"""
The regular expressions of an earlier run of C{p2}, kept on disk.

Starting C{p2} is mostly importing, and importing compiles the regular
expressions of the modules imported (PyYAML's reader and resolver, Twisted's,
attrs', ours): a sixth of C{p2 manifest sha}'s run, a tenth of C{p2
status}'s.  What C{re} compiles a pattern into (the code of its C{_sre}
engine) depends only on the pattern, its flags and the Python, so once
L{install}ed, C{re} takes it from a file written by an earlier run when it is
there, and compiles the others as always, remembering those a module
compiled while imported (not those a verb makes of its input).  The patterns
behave exactly the same: only the work of making them is saved.

The file is per Python (its version and C{_sre.MAGIC} are in its name), in
C{$XDG_CACHE_HOME/p2twisted} (else C{~/.cache/p2twisted}).  Like bytecode,
it is not written when Python writes none (C{PYTHONDONTWRITEBYTECODE},
C{-B}); a missing, unreadable, damaged or unwritable file only costs the
compiling.
"""

import os
import sys

#: The most patterns kept (one run of C{p2} compiles a few hundred).
LIMIT = 4096


def cachePath(environ=os.environ):
    """
    @return: the file of this Python's compiled patterns.
    """
    import _sre
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "p2twisted", "regex-%x-%d.marshal" % (sys.hexversion, _sre.MAGIC))


def install(path=None):
    """
    Have C{re} compile patterns from the file C{path} (default
    L{cachePath}) when it has them, and write those it had not to it at
    exit.  Does nothing on a Python whose C{re} is not built as 3.11's.
    """
    try:
        import _sre
        from re import _compiler
        parse, generate, debug = _compiler._parser.parse, _compiler._code, _compiler.SRE_FLAG_DEBUG
    except (ImportError, AttributeError):
        return
    if getattr(_compiler.compile, "_p2cache", False):
        return
    path = path or cachePath()
    known = _load(path)
    learned = {}
    original = _compiler.compile

    def compile(p, flags=0):
        # What _compiler.compile does, but for the code of a known pattern.
        if not isinstance(p, (str, bytes)) or flags & debug:
            return original(p, flags)
        key = (p, int(flags))
        arguments = known.get(key)
        if arguments is not None:
            try:
                return _sre.compile(p, *arguments)
            except Exception:
                del known[key]  # damaged: compiled again below
        parsed = parse(p, flags)
        groupIndex = dict(parsed.state.groupdict)
        indexGroup = [None] * parsed.state.groups
        for name, index in groupIndex.items():
            indexGroup[index] = name
        arguments = (int(flags | parsed.state.flags), [int(c) for c in generate(parsed, flags)],
                     parsed.state.groups - 1, groupIndex, tuple(indexGroup))
        if _importing(sys._getframe(1)):
            learned[key] = arguments
        return _sre.compile(p, *arguments)

    compile._p2cache = True
    _compiler.compile = compile
    if not sys.dont_write_bytecode:
        import atexit
        atexit.register(_save, path, known, learned)


def _importing(frame):
    """
    @return: whether C{frame} runs in the import of a module (C{importlib}'s
        own frames are among its callers).
    """
    while frame is not None:
        name = frame.f_code.co_filename
        if "importlib" in name and "_bootstrap" in name:
            return True
        frame = frame.f_back
    return False


def _load(path):
    import marshal
    try:
        with open(path, "rb") as f:
            data = f.read()  # at once: marshal.load(f) reads a file in tiny pieces
        known = marshal.loads(data)
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    return known if isinstance(known, dict) else {}


def _save(path, known, learned):
    """
    Write the patterns C{known} and C{learned} to C{path} (only those
    C{learned} when they are more than L{LIMIT}), if some were learned.
    """
    import marshal
    if not learned:
        return
    patterns = dict(known) if len(known) + len(learned) <= LIMIT else {}
    patterns.update(learned)
    temporary = "%s.%d" % (path, os.getpid())
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as f:
            marshal.dump(patterns, f)
        os.replace(temporary, path)
    except (OSError, ValueError):
        try:
            os.unlink(temporary)
        except OSError:
            pass
