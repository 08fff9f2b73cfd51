# -*- test-case-name: tests.test_cli_pc,tests.test_cli_ds -*-
"""
What C{p2} verbs that change where pods run share: showing the change and
asking before applying it (C{--yes} skips the question), and naming the
records too damaged to read, with the verb that removes them.
"""

from twisted.internet import defer


def ask(options, question):
    """
    @return: L{Deferred} firing with whether the person answered yes on
        standard input (end of input is no: without a person, nothing
        changes).
    """
    import sys
    import threading
    options.out.write(question)
    options.out.flush()
    stdin = getattr(options, "stdin", None) or sys.stdin
    reactor = options.reactor
    d = defer.Deferred()

    def read():
        try:
            line = stdin.readline()
        except (OSError, ValueError):
            line = ""
        reactor.callFromThread(d.callback, line)
    # A daemon thread, not the reactor's pool, which is joined at shutdown:
    # Ctrl-C at the question would wait for an Enter.
    threading.Thread(target=read, name="p2 question", daemon=True).start()
    return d.addCallback(lambda line: line.strip().lower() in ("y", "yes"))


@defer.inlineCallbacks
def confirm(options, groups, row, unchanged):
    """
    Write the change, one line per item (C{"  + item"}), and ask whether to
    apply it unless C{options.yes}; a change touching nothing is applied
    without asking.

    @param groups: C{[(sign, items)]}, e.g. C{[("+", added), ("-", removed)]}.
    @param row: callable giving an item's text.
    @param unchanged: what to say when no group has an item.
    @return: L{Deferred} firing with whether to apply it (having said
        C{not changed} when not).
    """
    out = options.out
    for sign, items in groups:
        for item in items:
            out.write("  %s %s\n" % (sign, row(item)))
    if not any(items for sign, items in groups):
        out.write("  (%s)\n" % (unchanged,))
        return True
    if options.yes:
        return True
    yes = yield ask(options, "apply? [y/N] ")
    if not yes:
        out.write("not changed\n")
    return yes


def writeUnreadable(options, snapshot, ids, one, what, verb):
    """
    Name on standard error each record of C{ids} that C{one(id)} cannot
    read, with the verb that removes it.

    @return: how many were unreadable.
    """
    from p2twisted import records
    count = 0
    for objectId in ids:
        try:
            one(objectId)
        except records.CorruptRecord as e:
            count += 1
            options.err.write("p2: %s %s: %s ('%s %s' removes it)\n"
                              % (what, objectId, e, verb, objectId))
    return count
