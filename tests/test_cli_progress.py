# -*- test-case-name: tests.test_cli_progress -*-
"""
Tests for L{p2twisted.cli.progress}: the live line of C{p2 replicate} and
C{p2 roll status --follow}.
"""

import io

from twisted.trial import unittest

from p2twisted.cli.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


class ProgressTests(unittest.TestCase):

    def test_rewrittenInPlace(self):
        """
        On a terminal the line is rewritten in place, unchanged lines not
        at all, and the end is a line of its own.
        """
        out = Terminal()
        progress = Progress(out, columns=lambda: 80)
        progress.show("0/3 done")
        progress.show("0/3 done")
        progress.show("1/3 done")
        progress.end("done")
        self.assertEqual(out.getvalue(),
                         "\r\x1b[J0/3 done" "\r\x1b[J1/3 done" "\r\x1b[Jdone\n")

    def test_widerThanTheTerminal(self):
        """
        A line wider than the terminal is shown whole, and its rewrite goes
        back up the rows it wrapped onto before clearing them: a roll's
        line is over 200 characters, and rewriting only the last row left
        a copy of its first rows behind at every change.
        """
        out = Terminal()
        progress = Progress(out, columns=lambda: 40)
        first = "x" * 90  # three rows of 40
        progress.show(first)
        progress.show("y" * 40)  # exactly one row
        progress.show("z" * 10)
        progress.end("done")
        self.assertEqual(out.getvalue(), "\r\x1b[J" + first + "\r\x1b[2A\x1b[J" + "y" * 40
                         + "\r\x1b[J" + "z" * 10 + "\r\x1b[Jdone\n")

    def test_notATerminal(self):
        """
        Elsewhere each change is a whole line, and a line whose C{change}
        is that of the last (a new ETA alone) is not printed.
        """
        out = io.StringIO()
        progress = Progress(out)
        progress.show("rolling; ETA 10s", "rolling")
        progress.show("rolling; ETA 9s", "rolling")
        progress.show("rolled; ETA 0s", "rolled")
        progress.end("done")
        self.assertEqual(out.getvalue(), "rolling; ETA 10s\nrolled; ETA 0s\ndone\n")

    def test_notLive(self):
        """
        Not live (JSON lines), a terminal gets a line per change too.
        """
        out = Terminal()
        progress = Progress(out, live=False)
        progress.show("{}")
        progress.end("{}")
        self.assertEqual(out.getvalue(), "{}\n{}\n")
