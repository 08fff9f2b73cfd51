"""
A log observer for C{twistd --logger=bench._mslog.observer}: the usual text
lines on standard output, stamped to the microsecond, so a benchmark's agent
log shows where a deploy's milliseconds go.
"""

import sys

from twisted.logger import textFileLogObserver


def observer():
    return textFileLogObserver(sys.stdout, timeFormat="%H:%M:%S.%f")
