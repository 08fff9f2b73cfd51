"""
A helper process for the session-expiry contract test:

    python -m tests.holder STORE_URL TTL KEY [KEY ...]

opens a session, creates each KEY as an ephemeral key (keys under C{locks/}
as locks) holding C{b"held"}, prints L{READY}, and waits to be killed.
"""

import sys

from twisted.internet import defer, task

from p2twisted.store import openStore

#: What it prints once it holds its keys: a word no error message holds (a
#: traceback naming AlreadyLocked holds "ready").
READY = "HOLDER-READY"


@defer.inlineCallbacks
def hold(reactor, url, ttl, *keys):
    store = yield openStore(url, reactor)
    session = yield store.session(float(ttl))
    for key in keys:
        if key.startswith("locks/"):
            yield session.lock(key, b"held")
        else:
            yield session.createEphemeral(key, b"held")
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    yield defer.Deferred()


if __name__ == "__main__":
    task.react(hold, sys.argv[1:])
