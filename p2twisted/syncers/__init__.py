"""
The built-in pod cluster syncers (L{p2twisted.orchestrate.syncers}): C{haproxy}
and C{json}.
"""
