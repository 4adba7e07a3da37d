"""Layer 2: the deal-hunting agents: scanner -> planner -> price agents + ensemble -> messenger, with a memory.

See ``planner`` for one cycle end to end and ``configs/agents.yaml`` for every setting.
"""
