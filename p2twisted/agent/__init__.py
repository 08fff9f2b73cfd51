"""
The machine agent: converges this node's intent into reality.
"""
