"""Layer 3: the stages, each the one way the CLI, DVC and Prefect run it, and the protocol they share.

``protocol`` scores a logged candidate on the test split, registers and gates it; ``harness`` predicts, scores and
reports; one module per stage.
"""
