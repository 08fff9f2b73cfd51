# -*- test-case-name: tests.test_templates -*-
"""
Service templates: plugins that turn a service's settings into a pod
manifest and the hoist artifact it runs.

A template provides L{ITemplate}.  Templates are found in two places: the
built-ins of this package (L{BUILTINS}), always available, and every entry
point of the C{p2twisted.templates} group of the installed distributions
(an entry point names a template object, or a class to instantiate).

    from p2twisted.templates import getTemplate
    template = getTemplate("static")
    raw = template.render("web", {"port": 8080, "directory": "/srv/www"},
                          "/var/lib/p2/artifacts-build",
                          "file:///var/lib/p2/artifacts-build")
"""

import difflib

import attr
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from p2twisted.errors import UsageError

log = Logger()

#: The entry point group third-party templates register under.
ENTRY_POINT_GROUP = "p2twisted.templates"

#: Built-in templates: C{name: "module:attribute"}.
BUILTINS = {
    "static": "p2twisted.templates.static:template",
    "command": "p2twisted.templates.command:template",
    "python": "p2twisted.templates.python:template",
}


class UnknownTemplate(UsageError):
    """
    No template has the asked-for name (a usage error: exit status 2).
    """


class SettingsError(UsageError):
    """
    A service's settings do not fit its template (a usage error: exit
    status 2).
    """


@attr.s(frozen=True)
class Option(object):
    """
    One setting of a template.

    @ivar name: the setting's name, as used in settings (C{status_path});
        the command line spells it C{--status-path}.
    @ivar type: C{"int"}, C{"str"}, C{"path"} (made absolute) or C{"list"}
        (space- or comma-separated text, or a list).
    @ivar default: the value when unset; C{None} for none.
    @ivar help: one line for C{p2 describe}.
    @ivar required: whether a service must set it.
    """

    name = attr.ib()
    type = attr.ib(default="str")
    default = attr.ib(default=None)
    help = attr.ib(default="")
    required = attr.ib(default=False)

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")


class ITemplate(Interface):
    """
    A kind of service: options, tasks, and how to render a pod.
    """

    name = Attribute("The template's name, as given to 'p2 add --template'.")
    description = Attribute("One line describing what the template runs.")
    options = Attribute("A list of L{Option}s.")
    tasks = Attribute("C{{task name: one line of help}} for 'p2 run'.")

    def settings(given):
        """
        Check and complete settings.

        @param given: C{{option name: value}} as set by the user.
        @return: the settings with defaults filled in and values coerced.
        @raise SettingsError: for an unknown option, a bad value or a
            missing required option.
        """

    def render(serviceName, settings, artifactDir, artifactBaseURL):
        """
        Build the service's hoist artifact into C{artifactDir} and return the
        manifest that runs it.  The same settings give the same bytes (and
        the same artifact), so an unchanged service restarts nothing.

        @param artifactBaseURL: the URL at which agents reach
            C{artifactDir} (C{file://...} on one host).
        @return: the manifest's bytes.
        """


def _load(spec):
    import importlib
    moduleName, _, attribute = spec.partition(":")
    obj = getattr(importlib.import_module(moduleName), attribute)
    return obj() if isinstance(obj, type) else obj


def _entryPoints():
    from importlib import metadata
    try:
        found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python < 3.10
        found = metadata.entry_points().get(ENTRY_POINT_GROUP, [])
    return list(found)


def allTemplates():
    """
    @return: C{{name: template}} of every available template; a plugin
        cannot replace a built-in, and a broken plugin is skipped (logged
        with its traceback).
    """
    templates = {name: _load(spec) for name, spec in BUILTINS.items()}
    for entryPoint in _entryPoints():
        if entryPoint.name in templates:
            continue
        try:
            obj = entryPoint.load()
            templates[entryPoint.name] = obj() if isinstance(obj, type) else obj
        except Exception:
            log.failure("template plugin {name} ({value}) cannot be loaded; skipped",
                        name=entryPoint.name, value=entryPoint.value)
    return templates


def getTemplate(name, templates=None):
    """
    @return: the template called C{name}.
    @raise UnknownTemplate: naming the known ones.
    """
    templates = allTemplates() if templates is None else templates
    if name not in templates:
        close = difflib.get_close_matches(name, list(templates), n=1)
        hint = " (did you mean %s?)" % (close[0],) if close else ""
        raise UnknownTemplate("unknown template %r%s; known templates: %s"
                              % (name, hint, ", ".join(sorted(templates))))
    return templates[name]


def closestOption(name, options):
    """
    @param options: L{Option}s.
    @return: the name of the option closest to C{name}, or C{None}.
    """
    names = [o.name for o in options]
    close = difflib.get_close_matches(name.replace("-", "_"), names, n=1, cutoff=0.5)
    return close[0] if close else None
