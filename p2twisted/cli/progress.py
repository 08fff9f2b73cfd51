# -*- test-case-name: tests.test_cli_progress -*-
"""
The live progress line of C{p2 replicate} and C{p2 roll status --follow}.
"""

import shutil


class Progress(object):
    """
    A progress line: on a terminal rewritten in place, all of it even when
    it is wider than the terminal (the rewrite goes back up the rows the
    last line wrapped onto, so nothing is cut and no row is left behind);
    elsewhere a line per change.

    @param out: where to write.
    @param live: if false, a line per change on a terminal too (JSON lines).
    @param columns: callable returning the terminal's width.
    """

    def __init__(self, out, live=True, columns=lambda: shutil.get_terminal_size().columns):
        self.out = out
        self.tty = live and hasattr(out, "isatty") and out.isatty()
        self.columns = columns
        self.rows = 0  # the rows of the terminal the line shown takes
        self.last = self.lastChange = None

    def _erase(self):
        """
        @return: what takes the cursor back to the start of the line shown
            and clears the screen from there.
        """
        return "\r" + ("\x1b[%dA" % (self.rows - 1,) if self.rows > 1 else "") + "\x1b[J"

    def show(self, line, change=None):
        """
        Show C{line}.  Not on a terminal, only if C{change} (C{line} unless
        given: what a new line is worth printing for) differs from the last.
        """
        change = line if change is None else change
        if self.tty:
            if line == self.last:
                return
            self.out.write(self._erase() + line)
            self.rows = max(-(-len(line) // max(self.columns(), 1)), 1)
        elif change != self.lastChange:
            self.out.write(line + "\n")
        else:
            return
        self.last, self.lastChange = line, change
        self.out.flush()

    def end(self, text):
        """
        Replace the line with C{text}, a line of its own.
        """
        self.out.write((self._erase() if self.tty else "") + text + "\n")
        self.out.flush()
        self.rows, self.last, self.lastChange = 0, None, None
