"""
twistd plugins of p2twisted: C{twistd p2-agent}.
"""

from twisted.application.service import ServiceMaker

p2agent = ServiceMaker(
    "p2 machine agent", "p2twisted.agent.tap",
    "Converge this node's intent into running pods.", "p2-agent")
