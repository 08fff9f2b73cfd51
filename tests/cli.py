"""
Running the real C{p2} command in tests, against a C{local://} store of the
test's own.
"""

import os
import sys

from twisted.internet import defer, utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class P2CommandMixin(object):
    """
    For trial C{TestCase}s: C{self.p2(...)}, C{self.succeed(...)} and
    C{self.p2Fails(...)} run C{p2 --store URL ...} as a subprocess.  (Not
    C{fail}: that would shadow C{TestCase.fail}, through which C{assertEqual}
    of lists, tuples, dicts and strings reports, so those never failed.)
    """

    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.url = "local://" + os.path.abspath(os.path.join(directory, "state.db"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("P2_")}
        self.env["HOME"] = os.path.abspath(directory)

    def p2(self, *args, **kw):
        """
        Run C{p2 --store URL ARGS...}.

        @param kw: C{stdin}: bytes for its standard input (then closed).
        @return: L{Deferred} firing with C{(stdout, stderr, exit code)}.
        """
        argv = ["-m", "p2twisted.cli", "--store", self.url] + list(args)
        d = utils.getProcessOutputAndValue(sys.executable, argv, env=self.env, path=ROOT,
                                           stdinBytes=kw.get("stdin"))
        return d.addCallback(lambda r: (r[0].decode("utf-8"), r[1].decode("utf-8"), r[2]))

    @defer.inlineCallbacks
    def succeed(self, *args):
        """
        Run C{p2} and check it succeeded quietly.

        @return: L{Deferred} firing with its standard output.
        """
        out, err, code = yield self.p2(*args)
        self.assertEqual((code, err), (0, ""), "p2 %s: %s" % (" ".join(args), err))
        return out

    @defer.inlineCallbacks
    def p2Fails(self, *args):
        """
        Run C{p2} and check it failed with one line on standard error (besides
        argparse's "see --help" hint) and no traceback.

        @return: L{Deferred} firing with C{(that line, exit code)}.
        """
        out, err, code = yield self.p2(*args)
        self.assertNotEqual(code, 0, "p2 %s succeeded: %s" % (" ".join(args), out))
        self.assertNotIn("Traceback", err)
        self.assertEqual(out, "")
        lines = [line for line in err.splitlines() if not line.startswith("(see ")]
        self.assertEqual(len(lines), 1, err)
        return lines[0], code

