# -*- test-case-name: tests.test_cli_namespace -*-
"""
The C{p2} command.

Each verb lives in its own module of this package, which has a
C{register(subparsers)} function adding its parser(s); a parser sets
C{run=function}, and C{function(options)} returns an exit code or a Deferred
firing with one.  A verb needing the store calls C{options.openStore()}.

Errors: a L{P2Error} is printed as one line (C{p2: ...}), with the traceback
only under C{-v}.
"""

import argparse
import sys

from twisted.internet import defer, task

from p2twisted import __version__
from p2twisted.errors import P2Error, SelectorError, UsageError

#: Verb modules, in the order C{p2 --help} lists them.
VERB_MODULES = ("namespace", "service", "services_agent", "services_tasks", "services_inspect", "node", "schedule", "manifest", "label",
                "hook", "bin2pod")

EXIT_CODES = """exit codes:
  0  success
  1  failure (the error is printed on one line; -v adds the traceback)
  2  usage error (bad arguments)
  3  the coordination store could not be reached
  130  interrupted (Ctrl-C) or terminated before it was done
"""

#: The exit status of a verb interrupted by Ctrl-C or SIGTERM (as shells do).
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """
    An argument parser whose errors are one line and exit with status 2.
    """

    def error(self, message):
        self.exit(2, "%s: %s\n(see '%s --help')\n" % (self.prog, message, self.prog))


def buildParser():
    import importlib
    parser = Parser(
        prog="p2",
        description="p2twisted: write deployment intent into the coordination store and inspect it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="p2twisted " + __version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--store", metavar="URL",
                        help="coordination store URL (else $P2_STORE, else the config file's "
                             "store:, else the embedded local store)")
    parser.add_argument("--config", metavar="FILE",
                        help="config file (else $P2_CONFIG, else /etc/p2/p2.yaml if present)")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    for name in VERB_MODULES:
        importlib.import_module("p2twisted.cli." + name).register(subparsers)
    return parser


def _storeOpener(options, reactor):
    def openStore():
        from p2twisted.config import loadConfig
        from p2twisted.store import openStore as open_
        config = loadConfig(options.config)
        url = config.storeURL(options.store)
        return open_(url, reactor)
    return openStore


@defer.inlineCallbacks
def withStore(options, use):
    """
    Open the store, run C{use(store)} and close the store, also when
    C{use} fails.  For verbs that wait long: when Ctrl-C stops the reactor
    meanwhile, the unfinished verb is closed at exit without waiting for
    anything (a C{yield} then would only print a warning).

    @return: L{Deferred} firing with what C{use} returned.
    """
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


def _exitCode(error):
    from p2twisted.errors import StoreUnavailable
    if isinstance(error, StoreUnavailable):
        return 3
    if isinstance(error, (UsageError, SelectorError)):
        return 2
    return 1


def main(argv=None):
    """
    Entry point of the C{p2} console script: parse C{argv}, run the verb on
    the reactor, and exit with its code.
    """
    parser = buildParser()
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not getattr(options, "run", None):
        parser.print_help(sys.stderr)
        sys.exit(2)
    options.out = sys.stdout
    options.err = sys.stderr
    options.interrupted = False
    try:
        task.react(lambda reactor: runVerb(options, reactor))
    except SystemExit as e:
        if options.interrupted and not e.code:
            raise SystemExit(EXIT_INTERRUPTED)
        raise


def runVerb(options, reactor):
    """
    Run C{options.run} and turn its outcome into C{SystemExit}.

    @return: L{Deferred} failing with L{SystemExit} carrying the exit code.
    """
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
