# -*- test-case-name: tests.test_snapshot -*-
"""
Orchestration (DESIGN.md, "Orchestrators"): a read model of the store
(L{p2twisted.orchestrate.snapshot}), pure decisions over it, and the farms
that apply them.  Import the submodules; this package imports nothing (the
CLI loads the snapshot without the farms' reactor machinery).
"""
