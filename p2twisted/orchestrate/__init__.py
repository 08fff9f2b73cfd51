"""
Orchestration: pure functions from a L{snapshot.Snapshot} of the store to a
L{plan.Plan} of changes (Nomad's scheduler shape), and the farms that apply
them.
"""
