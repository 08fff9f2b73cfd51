"""
Helpers that build small hoist artifacts (C{.tar.gz}) for tests.

    sha = buildHoist(path, files={"bin/launch": (b"#!/bin/sh\\n", 0o755)},
                     symlinks={"bin/python": "/usr/bin/python3"})

Members are written in this order: C{dirs}, C{files}, C{symlinks},
C{hardlinks}, then C{extra} exactly as given -- so a hostile archive (a member
written through a symlink, a device file, a duplicate) is built by putting
L{member} tuples in C{extra}.
"""

import hashlib
import io
import tarfile

_KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
}


def member(name, kind="file", content=b"", mode=None, target="", mtime=1700000000):
    """
    Describe one archive member for L{buildHoist}'s C{extra}.

    @param name: the member's name, written as given (may be absolute or hold
        C{..}: that is the point).
    @param kind: C{"file"}, C{"dir"}, C{"symlink"}, C{"hardlink"},
        C{"fifo"}, C{"chardev"} or C{"blockdev"}.
    @param content: a regular file's bytes (or text, encoded as UTF-8).
    @param mode: permission bits; default 0o755 for directories and files
        under C{bin/}, 0o777 for symlinks, else 0o644.
    @param target: a link's target.
    @return: a C{(TarInfo, bytes or None)} pair.
    """
    info = tarfile.TarInfo(name)
    info.type = _KINDS[kind]
    info.mtime = mtime
    info.uname = info.gname = "root"
    if mode is None:
        if kind == "dir" or (kind == "file" and name.startswith("bin/")):
            mode = 0o755
        elif kind == "symlink":
            mode = 0o777
        else:
            mode = 0o644
    info.mode = mode
    data = None
    if kind == "file":
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        info.size = len(data)
    elif kind in ("symlink", "hardlink"):
        info.linkname = target
    elif kind in ("chardev", "blockdev"):
        info.devmajor, info.devminor = 1, 3
    return info, data


def buildHoist(path, files=None, symlinks=None, dirs=None, hardlinks=None,
               extra=(), format=tarfile.GNU_FORMAT, compress=True):
    """
    Write a hoist artifact.

    @param files: C{{relpath: content}} or C{{relpath: (content, mode)}};
        content is bytes or text.
    @param symlinks: C{{relpath: target}}.
    @param dirs: C{{relpath: mode}}, or an iterable of relpaths (mode 0o755).
    @param hardlinks: C{{relpath: target member name}}.
    @param extra: L{member} tuples appended last, in order.
    @param format: a C{tarfile} format constant.
    @param compress: C{False} writes a plain (uncompressed) tar.
    @return: the artifact's SHA-256, hex.
    """
    members = []
    if dirs:
        items = dirs.items() if isinstance(dirs, dict) else ((d, 0o755) for d in dirs)
        members.extend(member(name, "dir", mode=mode) for name, mode in items)
    for name, spec in (files or {}).items():
        content, mode = spec if isinstance(spec, tuple) else (spec, None)
        members.append(member(name, "file", content, mode))
    for name, target in (symlinks or {}).items():
        members.append(member(name, "symlink", target=target))
    for name, target in (hardlinks or {}).items():
        members.append(member(name, "hardlink", target=target))
    members.extend(extra)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w", format=format) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    with open(path, "wb") as f:
        f.write(raw)
    return hashlib.sha256(raw).hexdigest()


def simpleHoist(path, script=b"#!/bin/sh\nexec sleep 1000\n", **kwargs):
    """
    Write a hoist whose only entry point is an executable C{bin/launch}.

    @return: the artifact's SHA-256, hex.
    """
    files = dict(kwargs.pop("files", {}))
    files.setdefault("bin/launch", (script, 0o755))
    return buildHoist(path, files=files, **kwargs)


def sha256(path):
    """
    @return: the SHA-256 of the file at C{path}, hex.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
