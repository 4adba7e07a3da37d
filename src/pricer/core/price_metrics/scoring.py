"""The arithmetic behind Pricer's price metrics, in plain numpy.

Kept apart from the ``evaluate`` wrapper so that the harness can colour items and the
metric module can score them with one set of thresholds, without importing ``evaluate``
where only a colour is needed. ``evaluate.load`` copies this file next to the metric
script because the script imports it relatively.

Unparseable estimates (None, NaN, +-inf, anything ``float()`` rejects) are misses: they
are red and count against ``hit_rate``, but they are left out of ``mae``, ``rmsle`` and
``r2``, which measure the size of the errors a model does make; ``unparseable`` reports
how many there were. With no parseable estimate those three are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

HIT_ABS_USD = 40.0
HIT_REL = 0.20
NEAR_ABS_USD = 80.0
NEAR_REL = 0.40

GREEN = "green"
ORANGE = "orange"
RED = "red"
COLOURS = (GREEN, ORANGE, RED)


def to_estimate(value: object) -> float:
    """A model's answer as a finite float, NaN when there is no usable number."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def colour_bands(truth: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Green (a hit), orange (near) or red for each item; NaN estimates are red."""
    error = np.abs(estimate - truth)
    # A zero price makes every relative error infinite rather than a division warning.
    relative = np.divide(error, truth, out=np.full_like(error, np.inf), where=truth > 0)
    # Comparisons with NaN are False, so an unparseable estimate falls through to red.
    green = (error < HIT_ABS_USD) | (relative < HIT_REL)
    orange = ~green & ((error < NEAR_ABS_USD) | (relative < NEAR_REL))
    return np.where(green, GREEN, np.where(orange, ORANGE, RED))


def colour_band(truth: float, estimate: float | None) -> str:
    """The colour of one estimate against its true price: "green", "orange" or "red"."""
    return str(colour_bands(np.array([float(truth)]), np.array([to_estimate(estimate)]))[0])


def _references(values: Sequence[float]) -> np.ndarray:
    truth = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(truth)) or np.any(truth < 0):
        raise ValueError("true prices must be finite and non-negative")
    return truth


def _r2(truth: np.ndarray, estimate: np.ndarray) -> float:
    # Undefined for fewer than two items or a constant truth; NaN says so instead of a made-up 0 or 1.
    if truth.size < 2:
        return math.nan
    total = float(np.sum((truth - truth.mean()) ** 2))
    if total == 0.0:
        return math.nan
    return 1.0 - float(np.sum((truth - estimate) ** 2)) / total


def summarise(references: Sequence[float], predictions: Sequence[object]) -> dict[str, float | int]:
    """mae, rmsle, hit_rate, r2, unparseable, n and the green/orange/red counts."""
    truth = _references(references)
    estimate = np.array([to_estimate(value) for value in predictions], dtype=float)
    if estimate.shape != truth.shape:
        raise ValueError(f"{estimate.size} predictions for {truth.size} references")
    n = int(truth.size)
    bands = colour_bands(truth, estimate)
    counts = {colour: int(np.sum(bands == colour)) for colour in COLOURS}
    parsed = ~np.isnan(estimate)
    t, e = truth[parsed], estimate[parsed]
    has_any = bool(parsed.any())
    return {
        "mae": float(np.mean(np.abs(e - t))) if has_any else math.nan,
        # A negative price has no logarithm; clipping at 0 scores it as a free item.
        "rmsle": float(np.sqrt(np.mean((np.log1p(np.clip(e, 0.0, None)) - np.log1p(t)) ** 2)))
        if has_any
        else math.nan,
        "hit_rate": counts[GREEN] / n if n else math.nan,
        "r2": _r2(t, e),
        "unparseable": n - int(parsed.sum()),
        "n": n,
        **counts,
    }
