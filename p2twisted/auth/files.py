# -*- test-case-name: tests.test_auth_gpg,tests.test_auth_ssh -*-
"""
Handing a signature and its data to a verifying program as files.
"""

import contextlib
import os
import shutil
import tempfile

from twisted.python.filepath import FilePath


@contextlib.contextmanager
def signatureFiles(data, signature, directory=None):
    """
    Write C{signature} (and C{data}, unless it is a L{FilePath} already) to
    files in a new private directory below C{directory} (default: the
    system's temporary directory), removed on exit.

    @return: a context manager giving C{(signature path, data path)}.
    """
    work = tempfile.mkdtemp(prefix="p2-verify-", dir=directory)
    try:
        sigPath = os.path.join(work, "signature")
        with open(sigPath, "wb") as f:
            f.write(signature)
        if isinstance(data, FilePath):
            dataPath = data.path
        else:
            dataPath = os.path.join(work, "data")
            with open(dataPath, "wb") as f:
                f.write(data)
        yield sigPath, dataPath
    finally:
        shutil.rmtree(work, ignore_errors=True)
