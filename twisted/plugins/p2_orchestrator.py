"""
The C{twistd p2-orchestrator} plugin: the farms of replication controllers
and rolling updates (L{p2twisted.orchestrate.tap}).
"""

from twisted.application.service import ServiceMaker

p2orchestrator = ServiceMaker(
    "p2 orchestrator", "p2twisted.orchestrate.tap",
    "Claim replication controllers and rolling updates and converge them.", "p2-orchestrator")
