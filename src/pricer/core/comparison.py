"""A paired bootstrap over test items: how sure a gain in mean error is, item for item.

Two models scored on the same items differ per item; resampling those differences (with
replacement, the same items for both models) gives the spread of the mean gain that another draw
of test items would show. The candidate is better with confidence ``c`` when the ``1 - c`` quantile of
the resampled gains is above zero: a one-sided test, since only "better" moves a champion.
``GateSettings`` are the promotion gate's choices (``pricer.tracking.gate``), set per model family
beside the name it registers as.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from pricer.core.config import StrictModel

_CHUNK_CELLS = 4_000_000  # resampled indices held at once: ~32 MB, whatever the split's size


class GateSettings(StrictModel):
    """How sure the gate must be before a candidate replaces the champion."""

    confidence: float = Field(0.9, gt=0.5, lt=1.0, description=(
        "promote only when the paired bootstrap puts the candidate's gain above zero with this confidence"))
    resamples: int = Field(2000, ge=100, le=100_000, description="bootstrap resamples of the test items")
    unparseable_estimate_usd: float = Field(0.0, ge=0.0, description=(
        "the estimate an item without a usable answer is scored at (0: its whole price is the error)"))


@dataclass(frozen=True)
class PairedGain:
    """The mean per-item gain (baseline error - candidate error) and its bootstrap bounds."""

    mean: float
    low: float  # the (1 - confidence) quantile of the resampled mean gains
    high: float  # the confidence quantile
    confidence: float
    resamples: int
    n: int

    @property
    def better(self) -> bool:
        return self.low > 0.0


def paired_gain(baseline_errors: np.ndarray, candidate_errors: np.ndarray, *, confidence: float,
                resamples: int, seed: int) -> PairedGain:
    """Bootstrap the mean of ``baseline_errors - candidate_errors`` (one value per item, same items)."""
    baseline = np.asarray(baseline_errors, dtype=float)
    candidate = np.asarray(candidate_errors, dtype=float)
    if baseline.shape != candidate.shape or baseline.ndim != 1 or baseline.size == 0:
        raise ValueError(f"paired errors need the same non-empty items, got {baseline.shape} and {candidate.shape}")
    if not (np.all(np.isfinite(baseline)) and np.all(np.isfinite(candidate))):
        raise ValueError("errors must be finite: score unparseable answers at a fallback first")
    gains = baseline - candidate
    n = gains.size
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    rows = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, rows):
        count = min(rows, resamples - start)
        means[start:start + count] = gains[rng.integers(0, n, size=(count, n))].mean(axis=1)
    low, high = np.quantile(means, [1.0 - confidence, confidence])
    return PairedGain(float(gains.mean()), float(low), float(high), confidence, resamples, n)
