# -*- test-case-name: tests.test_templates -*-
"""
The C{python} template: a virtualenv of pip requirements, made by the pod
itself on its first start (C{$POD_HOME/venv}, remade when the requirements
change), running a WSGI application or a module.

Tasks (C{p2 run NAME TASK ...}): C{install PKG==VER ...} and C{packages},
as pop's PythonEnvironment.
"""

import os

from p2twisted.templates import Option, SettingsError
from p2twisted.templates.base import BaseTemplate, resource


class PythonTemplate(BaseTemplate):
    name = "python"
    description = "a virtualenv of pip requirements running a WSGI app or a module"
    options = [
        Option("requirements", "list", [],
               "pip requirements: specs separated by spaces or commas, or the path of a "
               "requirements file (its content is part of the service)"),
        Option("wsgi", "str", None, "a WSGI application, module:callable (served on --port)"),
        Option("module", "str", None, "a module to run as __main__ instead of --wsgi"),
        Option("port", "int", 8080, "the HTTP port (GET /_status answers 200 with --wsgi)"),
        Option("bind", "str", None, "the address to listen on (default: the node's pod address, "
                                     "$POD_ADDRESS; 0.0.0.0: every one)"),
        Option("path", "list", [], "directories added to sys.path (readable by the pod's user)"),
    ]
    tasks = {
        "install": "install PKG[==VERSION] ... into the service's virtualenv",
        "packages": "list the virtualenv's packages: name, version, install time, source",
    }

    def check(self, settings):
        if bool(settings["wsgi"]) == bool(settings["module"]):
            raise SettingsError("template python needs exactly one of --wsgi and --module")
        if not 0 < settings["port"] < 65536:
            raise SettingsError("option --port must be between 1 and 65535, got %d"
                                % (settings["port"],))
        settings["path"] = [os.path.abspath(p) for p in settings["path"]]

    def hostProblems(self, settings):
        problems = ["--path %s %s on this host" % (
            p, "is not a directory" if os.path.exists(p) else "does not exist")
            for p in settings["path"] if not os.path.isdir(p)]
        name = (settings["wsgi"] or settings["module"] or "").partition(":")[0]
        top = name.partition(".")[0]
        if top and not settings["requirements"] and not problems and not _findable(
                top, settings["path"]):
            problems.append("module %s is not in --path (%s) nor in Python's standard library; "
                            "set --path to the directory holding it, or --requirements to "
                            "install it" % (top, " ".join(settings["path"]) or "none"))
        return problems

    def requirements(self, settings):
        specs = settings["requirements"]
        if len(specs) == 1 and os.path.isfile(specs[0]):
            with open(specs[0], "rb") as f:
                return f.read()
        return "".join(s + "\n" for s in specs).encode("utf-8")

    def files(self, serviceName, settings):
        return {
            "bin/launch": (resource("python_launch.sh"), 0o755),
            "p2_run.py": (resource("python_run.py"), 0o644),
            "requirements.txt": (self.requirements(settings), 0o644),
            "tasks/install": (resource("python_task_install.sh"), 0o755),
            "lib/venv-ready.sh": (resource("python_venv_ready.sh"), 0o644),
            "tasks/packages": (b"#!/bin/sh\nset -e\n. \"$LAUNCHABLE_ROOT/lib/venv-ready.sh\"\n"
                               b"exec \"$VENV/bin/python\" "
                               b"\"$LAUNCHABLE_ROOT/tasks/packages.py\" \"$@\"\n", 0o755),
            "tasks/packages.py": (resource("python_task_packages.py"), 0o644),
        }

    def statusCheck(self, settings):
        # A module serves nothing we know of: only a WSGI app answers /_status.
        if not settings["wsgi"]:
            return None
        return BaseTemplate.statusCheck(self, settings)

    def env(self, serviceName, settings):
        env = {"PORT": settings["port"], "APP_PATH": ":".join(settings["path"])}
        if settings["bind"]:
            env["BIND"] = settings["bind"]
        if settings["wsgi"]:
            env["WSGI"] = settings["wsgi"]
        else:
            env["MODULE"] = settings["module"]
        return env


def _findable(module, path):
    """
    @return: whether the top-level C{module} is in a directory of C{path}
        or in the standard library (what a pod's virtualenv without
        requirements can import).
    """
    import importlib.machinery
    import sys
    import sysconfig
    if module in sys.builtin_module_names:
        return True
    stdlib = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]]
    dynload = [os.path.join(p, "lib-dynload") for p in stdlib]
    return importlib.machinery.PathFinder.find_spec(module, list(path) + stdlib + dynload) \
        is not None


template = PythonTemplate()
