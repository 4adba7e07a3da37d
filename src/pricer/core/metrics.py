"""Price metrics for any model, computed by the arithmetic of the repo's ``evaluate`` metric module.

``compute_metrics`` calls that arithmetic (``price_metrics/scoring.py``) directly: no buffer, no
lock, no Arrow round trip. ``evaluate`` stays the metric's public face for anyone who wants it:
``evaluate.load(str(METRIC_PATH))`` loads the same module by path, offline, and computes the same
numbers (a test holds them equal). Definitions, including how unparseable estimates count, live in
``scoring.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pricer.core.price_metrics.scoring import (
    COLOURS,
    GREEN,
    ORANGE,
    RED,
    colour_band,
    colour_bands,
    summarise,
    to_estimate,
)

__all__ = ["COLOURS", "GREEN", "METRIC_PATH", "ORANGE", "RED", "colour_band", "colour_bands", "compute_metrics",
           "to_estimate"]

METRIC_PATH = Path(__file__).resolve().parent / "price_metrics"


def compute_metrics(y_true: Sequence[float], y_pred: Sequence[object]) -> dict[str, float | int]:
    """mae, rmsle, hit_rate, r2, unparseable, n, green, orange, red for one model's estimates."""
    return summarise(y_true, y_pred)
