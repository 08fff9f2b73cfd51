"""
p2twisted: intent-driven deployment on Twisted.
"""

__version__ = "0.1.0"
