"""
The HTTP side of p2twisted: the JSON API of C{twistd p2-api}
(L{p2twisted.web.app}), its read-model views (L{p2twisted.web.views}) and
the dashboard it serves (L{p2twisted.web.dashboard},
L{p2twisted.web.events}).
"""
