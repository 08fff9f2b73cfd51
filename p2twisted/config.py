# -*- test-case-name: tests.test_config -*-
"""
Configuration files and where the store is.

The store URL comes from, in order: the C{--store} flag, the C{P2_STORE}
environment variable, the config file's C{store:}, and finally the embedded
local store in the default state directory.

The config file is C{--config FILE}, else C{$P2_CONFIG}, else
C{/etc/p2/p2.yaml} when it exists.  Every setting has a default, so no file is
needed.
"""

import os

from p2twisted.errors import UsageError

SYSTEM_CONFIG = "/etc/p2/p2.yaml"


def defaultStateDir(environ=None, uid=None):
    """
    @return: C{$P2_STATE_DIR}, else C{/var/lib/p2} for root, else
        C{$XDG_STATE_HOME/p2} (default C{~/.local/state/p2}).
    """
    environ = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    if environ.get("P2_STATE_DIR"):
        return environ["P2_STATE_DIR"]
    if uid == 0:
        return "/var/lib/p2"
    base = environ.get("XDG_STATE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "p2")


class Config(object):
    """
    A loaded configuration.

    @ivar data: the parsed mapping.
    @ivar path: the file it came from, or C{None}.
    """

    def __init__(self, data=None, path=None, environ=None):
        self.data = data or {}
        self.path = path
        self.environ = os.environ if environ is None else environ

    def get(self, name, default=None):
        return self.data.get(name, default)

    def storeURL(self, flag=None):
        """
        @param flag: the C{--store} flag's value, or C{None}.
        @return: the store URL to use.
        @raise UsageError: it names no kind of store there is.
        """
        from p2twisted.store import checkStoreURL
        for given in (flag, self.environ.get("P2_STORE"), self.data.get("store")):
            if given:
                return checkStoreURL(str(given))
        stateDir = self.data.get("state_dir") or defaultStateDir(self.environ)
        return "local://" + os.path.join(os.path.abspath(stateDir), "state.db")


def loadConfig(path=None, environ=None):
    """
    Load the config file.

    @param path: an explicit file (the C{--config} flag), or C{None}.
    @return: a L{Config}.
    @raise UsageError: if an explicit file is missing or the file is not a
        YAML mapping.
    """
    environ = os.environ if environ is None else environ
    explicit = path or environ.get("P2_CONFIG")
    if not explicit:
        if not os.path.exists(SYSTEM_CONFIG):
            return Config(environ=environ)
        explicit = SYSTEM_CONFIG
    import yaml  # only when there is a file: every store verb of the CLI loads this
    try:
        with open(explicit, "rb") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise UsageError("cannot read config file %s: %s" % (explicit, e.strerror))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = " line %d" % (mark.line + 1,) if mark else ""
        raise UsageError("config file %s%s is not valid YAML: %s"
                         % (explicit, where, getattr(e, "problem", e)))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError("config file %s must hold a mapping of settings, got %s"
                         % (explicit, type(data).__name__))
    return Config(data, explicit, environ)
