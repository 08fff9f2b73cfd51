# -*- test-case-name: tests.test_metrics,tests.test_web_tap -*-
"""
Where a server of ours listens: a setting holding a port (bound to
127.0.0.1: loopback unless told otherwise) or a Twisted endpoint
description, and whether that is loopback only.
"""

import ipaddress
import re

from twisted.internet import endpoints

from p2twisted.errors import UsageError

_LOOPBACK_NAMES = ("localhost",)


def listenSetting(value, setting):
    """
    @param value: a port number (an int or digits), a Twisted server
        endpoint description (e.g. C{tcp:9120:interface=0.0.0.0}), or
        C{None}.
    @param setting: what to call it in an error, e.g. C{"agent config
        metrics_listen"}.
    @return: the endpoint description (strports) of C{value}: a port is
        that port on 127.0.0.1; C{None} when C{value} is.
    @raise UsageError: a one-line error naming C{setting}.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, str) and value.isdigit()):
        if not 0 < int(value) < 65536:
            raise UsageError("%s: expected a port (1-65535), got %r" % (setting, value))
        return "tcp:%d:interface=127.0.0.1" % (int(value),)
    if isinstance(value, str) and ":" in value:
        try:
            endpoints.serverFromString(None, value)  # parsed only: no reactor needed
        except (ValueError, TypeError, KeyError, OSError) as e:  # (OSError: ssl:'s key file)
            raise UsageError("%s: %r is not an endpoint: %s" % (setting, value, e))
        return value
    raise UsageError("%s: expected a port or an endpoint such as "
                     "tcp:9120:interface=127.0.0.1, got %r" % (setting, value))


def isLoopback(description):
    """
    @return: whether the endpoint C{description} listens on loopback only
        (a TCP one with C{interface=} a loopback address, or a UNIX socket).
    """
    parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", description)]
    if parts[0] == "unix":
        return True
    for part in parts[1:]:
        if part.startswith("interface="):
            address = part[len("interface="):].strip("[]")
            if address in _LOOPBACK_NAMES:
                return True
            try:
                return ipaddress.ip_address(address).is_loopback
            except ValueError:
                return False
    return False


def url(address):
    """
    @return: the URL of the listening C{address} (an L{IAddress}).
    """
    host = getattr(address, "host", None)
    if host is None:
        return "unix:%s" % (getattr(address, "name", "?"),)
    if ":" in host:
        host = "[%s]" % (host,)
    elif host == "0.0.0.0":
        host = "127.0.0.1"
    return "http://%s:%d/" % (host, address.port)
