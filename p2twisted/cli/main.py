# -*- test-case-name: tests.test_cli_main -*-
"""
The C{p2} command.

Each verb lives in its own module of this package, which has a
C{register(subparsers)} function adding its parser(s); a parser sets
C{run=function}, and C{function(options)} returns an exit code or a Deferred
firing with one.  A verb needing the store calls C{options.openStore()}; one that writes
says so (C{writes=True} in its parser's defaults), and the store's
namespace marker is then made if absent.  One that reads no store says
C{offline=True} and runs without a reactor.

Errors: a L{P2Error} is printed as one line (C{p2: ...}), with the traceback
only under C{-v}.
"""

import argparse
import sys

from p2twisted import __version__
from p2twisted.errors import P2Error, SelectorError, UsageError

#: Verb modules, in the order C{p2 --help} lists them.
VERB_MODULES = ("namespace", "service", "services_fleet", "services_agent", "services_tasks", "services_inspect", "node", "schedule", "manifest", "label",
                "hook", "bin2pod", "rc", "roll", "ds", "replicate", "pc", "audit", "store", "sign", "ui")

#: C{(verb, module, help)} of every verb, in the order C{p2 --help} lists
#: them.  Only the module of the verb given is imported (so C{p2 --help} or
#: C{p2 manifest sha} loads nothing of Twisted); the help here must be the
#: one the module registers (a test checks).
VERBS = (
    ("init", "namespace", "create the p2 namespace in the store"),
    ("dump", "namespace", "print every key in the store"),
    ("list", "service", "list the service templates"),
    ("describe", "service", "show a template's options and tasks"),
    ("add", "service", "define a service from a template"),
    ("config", "service", "show or change a service's settings"),
    ("deploy", "service", "run a service on nodes"),
    ("scale", "services_fleet", "set how many nodes run a service"),
    ("undeploy", "service", "stop running a service on nodes"),
    ("remove", "service", "delete a service's definition"),
    ("status", "service", "show services: nodes, intent vs reality, health, errors"),
    ("start", "services_agent", "start this host's agent in the background"),
    ("fg", "services_agent", "run this host's agent in the foreground"),
    ("stop-agent", "services_agent", "stop the background agent"),
    ("run", "services_tasks", "run a template's task on every node of a service"),
    ("logs", "services_tasks", "show a service's logs on every node"),
    ("inspect", "services_inspect", "show every pod on every node: intent vs reality, health"),
    ("node", "node", "manage nodes"),
    ("nodes", "node", "list nodes: marker, agent presence, pods"),
    ("schedule", "schedule", "write a pod manifest into a node's intent"),
    ("unschedule", "schedule", "remove a pod from a node's intent"),
    ("manifest", "manifest", "check, hash and normalize pod manifests"),
    ("label", "label", "change, show and select labels"),
    ("hook", "hook", "schedule, list and remove hook pods"),
    ("bin2pod", "bin2pod", "wrap an executable into an artifact and a pod manifest"),
    ("rc", "rc", "manage replication controllers"),
    ("roll", "roll", "start, follow and abort rolling updates"),
    ("ds", "ds", "manage daemon sets"),
    ("replicate", "replicate", "roll a manifest out to nodes, health-gated"),
    ("pc", "pc", "manage pod clusters"),
    ("audit", "audit", "show the audit log: what orchestrators and people changed"),
    ("store", "store", "copy a namespace between coordination stores"),
    ("sign", "sign", "sign a pod manifest (GPG or SSH); its SHA stays the same"),
    ("verify", "sign", "say who signed a pod manifest"),
    ("ui", "ui", "serve the dashboard and API here and print the URL"),
)

EXIT_CODES = """exit codes:
  0  success
  1  failure (the error is printed on one line; -v adds the traceback)
  2  usage error (bad arguments)
  3  the coordination store could not be reached
  130  interrupted (Ctrl-C) or terminated before it was done
"""

#: The exit status of a verb interrupted by Ctrl-C or SIGTERM (as shells do).
EXIT_INTERRUPTED = 130

#: Options of C{p2} itself also accepted after the verb: C{(flags, dest,
#: keyword arguments)}.
GLOBAL_OPTIONS = (
    (("-v", "--verbose"), "verbose", dict(action="store_true", help="show tracebacks on errors")),
    (("--store",), "store", dict(metavar="URL", help="coordination store URL (else $P2_STORE, "
                                 "else the config file's store:, else the embedded local store)")),
    (("--json",), "json", dict(action="store_true", help="print JSON (the verbs that can)")),
)
#: Their values when not given.
GLOBAL_DEFAULTS = {"verbose": False, "store": None, "json": False, "config": None}


def didYouMean(word, choices, spelling="'%s'"):
    """
    @param spelling: how to show the choice, a C{%s} format.
    @return: C{"; did you mean 'X'?"} for the choice closest to C{word}, or
        C{""} when none is close.
    """
    import difflib
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return "; did you mean %s?" % (spelling % (close[0],),) if close else ""


class Parser(argparse.ArgumentParser):
    """
    An argument parser whose errors are one line and exit with status 2,
    suggesting the closest choice for a misspelled one; a verb's parser also
    accepts C{p2}'s own options (L{GLOBAL_OPTIONS}) after the verb.
    """

    #: Whether this is C{p2}'s own parser (not a verb's).
    top = False

    def error(self, message):
        import re
        match = re.match(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)$",
                         message)
        if match:
            argument, given = match.group(1), match.group(2)
            # Some Pythons (3.12.9, 3.13.2 and later) list them unquoted: "(choose from a, b)".
            hint = didYouMean(given, [c.strip().strip("'") for c in match.group(3).split(", ")])
            if argument.startswith("-"):
                message = "invalid %s %r%s" % (argument.split("/")[-1], given, hint)
            else:
                message = "unknown command %r%s" % (given, hint)
        self.exit(2, "%s: %s\n(see '%s --help')\n" % (self.prog, message, self.prog))

    def _addGlobals(self):
        if getattr(self, "_globalsAdded", False):
            return
        self._globalsAdded = True
        native = self._option_string_actions.get("--json")
        if native is not None:
            native.default = argparse.SUPPRESS
        self.set_defaults(_json_native=native is not None)
        for flags, dest, kwargs in GLOBAL_OPTIONS:
            flags = [f for f in flags if f not in self._option_string_actions]
            if flags:
                kwargs = dict(kwargs, help=argparse.SUPPRESS, default=argparse.SUPPRESS)
                self.add_argument(*flags, dest=dest, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        if not self.top:
            self._addGlobals()
        return argparse.ArgumentParser.parse_known_args(self, args, namespace)


class _TopParser(Parser):
    top = True


class _Verbs(argparse._SubParsersAction):
    """
    The verbs of C{p2}: a verb whose module is not imported is a
    placeholder, its name and help (what C{p2 --help} lists, the choices a
    misspelled verb is matched against) and the name of its module, not a
    parser: building the parsers of every verb took a tenth of C{p2 --help}.
    A placeholder argparse comes to parse after all (L{findVerb} did not
    see it, as in C{p2 -- status}) is replaced by its module's parser then.
    """

    def addPlaceholder(self, name, module, helpText):
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), helpText))
        self._name_parser_map[name] = module

    def __call__(self, parser, namespace, values, option_string=None):
        module = self._name_parser_map.get(values[0])
        if isinstance(module, str):
            import importlib
            scratch = _Verbs([], prog=self._prog_prefix, parser_class=self._parser_class)
            importlib.import_module("p2twisted.cli." + module).register(scratch)
            for name, verbParser in scratch._name_parser_map.items():
                if isinstance(self._name_parser_map.get(name), str):
                    self._name_parser_map[name] = verbParser
        argparse._SubParsersAction.__call__(self, parser, namespace, values, option_string)


def findVerb(argv):
    """
    @return: the verb in C{argv} (its first word that is not an option of
        C{p2}'s own), or C{None}.
    """
    withValue = {"--store", "--config"}
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--":
            return None
        elif arg.startswith("-"):
            skip = arg in withValue
        else:
            return arg
    return None


def buildParser(verb=None, everything=False):
    """
    @param verb: the verb given: only its module is imported, the other
        verbs appear by name and help.
    @param everything: import every verb module.
    """
    import importlib
    parser = _TopParser(
        prog="p2",
        description="p2twisted: write deployment intent into the coordination store and inspect it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="p2twisted " + __version__)
    for flags, dest, kwargs in GLOBAL_OPTIONS:
        parser.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, **kwargs)
    parser.add_argument("--config", metavar="FILE",
                        help="config file (else $P2_CONFIG, else /etc/p2/p2.yaml if present)")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser,
                                       action=_Verbs)
    modules = {module for name, module, helpText in VERBS if everything or verb == name}
    modules.update(m for m in VERB_MODULES if m not in {v[1] for v in VERBS})
    done = set()
    for name, module, helpText in VERBS:
        if module not in modules:
            subparsers.addPlaceholder(name, module, helpText)
        elif module not in done:
            done.add(module)
            importlib.import_module("p2twisted.cli." + module).register(subparsers)
    for module in modules - done:  # added to VERB_MODULES by a test or a plugin
        importlib.import_module("p2twisted.cli." + module).register(subparsers)
    return parser


def parseArguments(argv):
    """
    @return: the options of C{argv} (global defaults filled in).
    @raise SystemExit: with status 2 for a usage error.
    """
    verb = findVerb(argv)
    known = {name for name, module, helpText in VERBS}
    parser = buildParser(verb if verb in known else None)
    if verb is not None and verb not in known and verb not in parser._subparsers._group_actions[0].choices:
        parser.error("unknown verb %r%s" % (verb, didYouMean(verb, known)))
    options = parser.parse_args(argv)
    for dest, default in GLOBAL_DEFAULTS.items():
        if not hasattr(options, dest):
            setattr(options, dest, default)
    if not getattr(options, "run", None):
        parser.print_help(sys.stderr)
        sys.exit(2)
    if options.json and not getattr(options, "_json_native", True):
        parser.exit(2, "p2: p2 %s has no JSON output (remove --json)\n" % (options.verb,))
    return options


def _storeOpener(options, reactor):
    def openStore():
        from p2twisted.config import loadConfig
        from p2twisted.store import openStore as open_
        config = loadConfig(options.config)
        url = config.storeURL(options.store)
        d = open_(url, reactor)
        if getattr(options, "writes", False):
            d.addCallback(_withNamespace)
        return d
    return openStore


def _withNamespace(store):
    """
    Make the namespace marker if absent (before a verb writes), then
    give C{store}.
    """
    from p2twisted.cli.namespace import ensureNamespace
    return ensureNamespace(store).addCallback(lambda created: store)


def withStore(options, use):
    """
    Open the store, run C{use(store)} and close the store, also when
    C{use} fails.  For verbs that wait long: when Ctrl-C stops the reactor
    meanwhile, the unfinished verb is closed at exit without waiting for
    anything (a C{yield} then would only print a warning).

    @return: L{Deferred} firing with what C{use} returned.
    """
    from twisted.internet import defer

    @defer.inlineCallbacks
    def run():
        store = yield options.openStore()
        try:
            result = yield use(store)
        except GeneratorExit:
            store = None
            raise
        finally:
            if store is not None:
                yield store.close()
        return result
    return run()


def _exitCode(error):
    from p2twisted.errors import StoreUnavailable
    if isinstance(error, StoreUnavailable):
        return 3
    if isinstance(error, (UsageError, SelectorError)):
        return 2
    return 1


#: Modules that importing Twisted's reactor and Deferreds loads but that no
#: verb uses on the local store (C{http.cookiejar} and its C{urllib.request},
#: C{http.client} and C{email}, imported by C{twisted.python.compat};
#: C{pickle}, for C{twisted.python.reflect}'s C{fullyQualifiedName} of a
#: function; C{random}, for C{twisted.internet.protocol}'s reconnecting
#: client factory; the reactor's TCP, UDP and Unix-socket modules): about a
#: fifth of their import time.  L{main} has them loaded on first use instead.
LAZY_MODULES = ("http.cookiejar", "pickle", "random", "twisted.internet.tcp",
                "twisted.internet.udp", "twisted.internet.unix")


class _LazyFinder(object):
    """
    A C{sys.meta_path} finder giving the modules C{names}, when first
    imported, a loader that runs them only when one of their attributes is
    first used (C{importlib.util.LazyLoader}): importing them binds a name,
    using them (e.g. C{tcp.Connector} for a ZooKeeper store) loads them.
    """

    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, name, path, target=None):
        if name not in self.names and name != "twisted.internet.defer":
            return None
        import importlib.machinery
        import importlib.util
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return None
        if name == "twisted.internet.defer":
            spec.loader = _WithoutAsyncio(spec.loader)
        else:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


class _WithoutAsyncio(object):
    """
    The loader of C{twisted.internet.defer}, running it beside a stand-in
    for C{asyncio} (L{_asyncioStandIn}) when nothing has imported asyncio:
    Deferreds take three names from it, used only when they meet asyncio
    (C{asFuture}, C{fromFuture}, which get the real one from their
    arguments) or in annotations, and importing it (with C{ssl},
    C{concurrent.futures}, C{subprocess}) was a twentieth of a store verb's
    start.  Anything else importing asyncio afterwards gets the real one.
    """

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        if "asyncio" in sys.modules:
            return self.loader.exec_module(module)
        sys.modules["asyncio"] = standIn = _asyncioStandIn()
        try:
            self.loader.exec_module(module)
        finally:
            if sys.modules.get("asyncio") is standIn:
                del sys.modules["asyncio"]


def _asyncioStandIn():
    """
    @return: a module giving what C{twisted.internet.defer} imports from
        asyncio: C{iscoroutine} (asyncio's own once it is loaded, until then
        the same test: a coroutine, generator or C{Coroutine}) and, for its
        annotations, placeholders of C{AbstractEventLoop} and C{Future}.
        Any other name loads the real asyncio and is taken from it.
    """
    import collections.abc
    import types

    class StandIn(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)  # __path__, asked by every from-import
            import importlib
            if sys.modules.get("asyncio") is self:
                del sys.modules["asyncio"]
            return getattr(importlib.import_module("asyncio"), name)

    standIn = StandIn("asyncio", "Stands in for asyncio while Deferreds are imported.")
    coroutineTypes = (types.CoroutineType, types.GeneratorType, collections.abc.Coroutine)

    def iscoroutine(value):
        real = sys.modules.get("asyncio")
        if real is not None and real is not standIn:
            return real.iscoroutine(value)
        return isinstance(value, coroutineTypes)

    standIn.iscoroutine = iscoroutine
    standIn.AbstractEventLoop = type("AbstractEventLoop", (object,), {})
    standIn.Future = type("Future", (object,), {})
    return standIn


def main(argv=None):
    """
    Entry point of the C{p2} console script: parse C{argv}, run the verb
    (on the reactor, unless it is offline: reads no store) and exit with its
    code.
    """
    import gc

    lazy = _LazyFinder(name for name in LAZY_MODULES if name not in sys.modules)
    sys.meta_path.insert(0, lazy)
    # Starting is importing: thousands of objects, no garbage.  The cyclic
    # collector, run every few hundred allocations meanwhile, cost a twentieth
    # of the start; it runs again once the verb's modules are loaded.
    collecting = gc.isenabled()
    gc.disable()

    started = gc.enable if collecting else (lambda: None)
    try:
        return _main(argv, started)
    finally:
        started()
        sys.meta_path.remove(lazy)


def _main(argv, started=lambda: None):
    options = parseArguments(sys.argv[1:] if argv is None else argv)
    options.out = sys.stdout
    options.err = sys.stderr
    options.interrupted = False
    if getattr(options, "offline", False):
        started()
        try:
            code = options.run(options)
        except P2Error as e:
            code = _reportError(options, e, sys.exc_info()[2])
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:
            code = _reportError(options, e, sys.exc_info()[2])
        options.out.flush()
        raise SystemExit(code or 0)
    _importReactor(options)
    from twisted.internet import task
    started()
    try:
        task.react(lambda reactor: runVerb(options, reactor))
    except SystemExit as e:
        if options.interrupted and not e.code:
            raise SystemExit(EXIT_INTERRUPTED)
        raise


def _importReactor(options):
    """
    Install the default reactor without loading pyOpenSSL (a fifth of
    C{p2 status}'s run time, about 50 ms), unless the verb says it needs
    C{startTLS} on a TCP connection (C{tls=True} in its parser's defaults):
    no verb does.  The reactor's modules only probe for TLS when imported
    and remember its absence; L{_lazyTLS} gives it back, loaded on first
    use, so HTTPS clients (C{twisted.web.client.Agent}, treq), C{connectSSL},
    C{listenSSL} and the C{ssl:} endpoints all work.
    """
    if getattr(options, "tls", False) or "twisted.internet.reactor" in sys.modules:
        return
    blocked = [name for name in ("OpenSSL", "twisted.protocols.tls") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None
    try:
        from twisted.internet import reactor  # noqa: F401
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    _lazyTLS()


def _lazyTLS():
    """
    Give a reactor whose modules were imported without TLS its
    C{connectSSL} and C{listenSSL} back: C{twisted.internet.posixbase}
    found no C{twisted.protocols.tls} and left them failing with "SSL
    support is not present"; it now gets a stand-in that imports it on first
    use.  Only C{startTLS} on a plain TCP connection stays unavailable
    (C{twisted.internet.tcp} chose its classes' bases at import).
    """
    import types

    from zope.interface import classImplements

    from twisted.internet import posixbase
    from twisted.internet.interfaces import IReactorSSL
    if getattr(posixbase, "tls", None) is not None:
        return

    class LazyTLS(types.ModuleType):
        def __getattr__(self, name):
            import importlib
            real = importlib.import_module("twisted.protocols.tls")
            posixbase.tls = real
            return getattr(real, name)

    posixbase.tls = LazyTLS("twisted.protocols.tls")
    classImplements(posixbase.PosixReactorBase, IReactorSSL)


def writeJSON(out, value):
    """
    Write C{value} to C{out} as indented JSON (keys sorted) and a newline:
    what C{--json} prints.

    @return: 0, the exit code.
    """
    import json
    json.dump(value, out, indent=2, sort_keys=True)
    out.write("\n")
    return 0


def _reportError(options, error, tb):
    """
    Print C{error} as one line (with its traceback C{tb} under C{-v}, or
    when it is not a L{P2Error}).

    @return: its exit code.
    """
    import traceback
    if isinstance(error, P2Error):
        options.err.write("p2: %s\n" % (error,))
        if options.verbose:
            traceback.print_exception(type(error), error, tb, file=options.err)
    else:
        options.err.write("p2: internal error: %s\n" % (error,))
        traceback.print_exception(type(error), error, tb, file=options.err)
    return _exitCode(error)


def runVerb(options, reactor):
    """
    Run C{options.run} and turn its outcome into C{SystemExit}.

    @return: L{Deferred} failing with L{SystemExit} carrying the exit code.
    """
    from twisted.internet import defer
    options.openStore = _storeOpener(options, reactor)
    options.reactor = reactor
    d = defer.maybeDeferred(options.run, options)

    def interrupted():
        # The reactor stops before the verb is done: Ctrl-C or SIGTERM.
        options.interrupted = not d.called
    reactor.addSystemEventTrigger("before", "shutdown", interrupted)

    def failed(f):
        if f.check(SystemExit):
            return f
        if f.check(P2Error):
            options.err.write("p2: %s\n" % (f.value,))
            if options.verbose:
                f.printTraceback(options.err)
        else:
            options.err.write("p2: internal error: %s\n" % (f.getErrorMessage(),))
            f.printTraceback(options.err)
        return _exitCode(f.value)

    def exit(code):
        options.out.flush()
        raise SystemExit(code or 0)
    d.addErrback(failed)
    d.addCallback(exit)
    return d
