"""
Real servers for integration tests: what happens when one is missing.

Locally a missing server (ZooKeeper, runit, etcd, gpg, ...) skips the tests
that need it, with the reason.  In CI (C{P2_REQUIRE_REAL_SERVERS=1}) a missing
server is an error, so a broken image cannot quietly skip a whole suite.
"""

import os

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

#: Environment variable that turns "skip" into "fail" for missing servers.
REQUIRE_ENV = "P2_REQUIRE_REAL_SERVERS"


class MissingServer(Exception):
    """
    A real server the tests need is missing and this run requires it.
    """


def serversRequired():
    """
    @return: whether this run requires every real server (CI).
    """
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0")


def requireServer(what, reason, install=None):
    """
    Give up on a test needing the real server C{what}, which is unusable
    because of C{reason}.

    @param install: how to install it, e.g. C{"apt-get install zookeeper"};
        by default C{"apt-get install <what>"}.
    @raise unittest.SkipTest: normally.
    @raise MissingServer: when C{P2_REQUIRE_REAL_SERVERS=1}.
    """
    if serversRequired():
        raise MissingServer(
            "%s not available: %s; CI requires it (%s=1): install it with `%s`"
            % (what, reason, REQUIRE_ENV, install or "apt-get install %s" % (what,)))
    raise unittest.SkipTest("%s not available: %s" % (what, reason))


def failOnStoreWarnings(testCase, unless=lambda: False):
    """
    Make C{testCase} fail if a store module logs a warning while it runs
    (say, a watch round failing and being retried: in a test without
    outages that is a bug that retries would otherwise hide), unless
    C{unless()} is true at the end.
    """
    warnings = []

    def observe(event):
        if event.get("log_level", LogLevel.info) >= LogLevel.warn and \
                event.get("log_namespace", "").startswith("p2twisted.store"):
            warnings.append(formatEvent(event))

    def check():
        globalLogPublisher.removeObserver(observe)
        if not unless():
            testCase.assertEqual(warnings, [])
    globalLogPublisher.addObserver(observe)
    testCase.addCleanup(check)
