"""
Orchestration: the read model's snapshot, pure decisions over it, and the
farms that apply them.
"""
