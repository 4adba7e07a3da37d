"""Should the models be retrained? Compare newly arrived items with the training split.

Three shifts, each a number a reviewer can read: the price distribution (population
stability index over log-price bins and the two-sample KS statistic), the category mix
(total variation distance), and the text (cosine distance between mean embeddings).
Retraining is due when any shift or the volume of new items crosses its threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pydantic import Field

from pricer.core.config import StrictModel

Embed = Callable[[Sequence[str]], np.ndarray]
_LOG_PRICE_BINS = np.linspace(np.log1p(0.5), np.log1p(1000.0), 11)


class DriftThresholds(StrictModel):
    price_psi: float = Field(0.2, gt=0)  # the usual "significant shift" mark for PSI
    price_ks: float = Field(0.15, gt=0)
    category_tvd: float = Field(0.2, gt=0)
    embedding_cosine: float = Field(0.05, gt=0)
    min_new_items: int = Field(1000, ge=0)  # enough new volume alone justifies retraining


@dataclass(frozen=True)
class DriftReport:
    n_reference: int
    n_new: int
    price_psi: float
    price_ks: float
    category_tvd: float
    embedding_cosine: float | None
    retrain: bool
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def population_stability(reference: np.ndarray, new: np.ndarray, bins: np.ndarray = _LOG_PRICE_BINS) -> float:
    edges = np.concatenate([[-np.inf], bins[1:-1], [np.inf]])
    expected = np.histogram(reference, edges)[0] / max(len(reference), 1)
    actual = np.histogram(new, edges)[0] / max(len(new), 1)
    expected, actual = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)  # empty bins: finite PSI
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_statistic(reference: np.ndarray, new: np.ndarray) -> float:
    values = np.sort(np.concatenate([reference, new]))
    cdf_reference = np.searchsorted(np.sort(reference), values, side="right") / len(reference)
    cdf_new = np.searchsorted(np.sort(new), values, side="right") / len(new)
    return float(np.max(np.abs(cdf_reference - cdf_new)))


def category_distance(reference: pd.Series, new: pd.Series) -> float:
    shares = pd.concat([reference.value_counts(normalize=True), new.value_counts(normalize=True)], axis=1).fillna(0)
    return float(0.5 * np.abs(shares.iloc[:, 0] - shares.iloc[:, 1]).sum())


def embedding_distance(reference: np.ndarray, new: np.ndarray) -> float:
    a, b = reference.mean(axis=0), new.mean(axis=0)
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def measure_drift(reference: pd.DataFrame, new: pd.DataFrame, thresholds: DriftThresholds,
                  embed: Embed | None = None, sample: int = 2000, seed: int = 0) -> DriftReport:
    """Both frames need ``price``, ``category`` and ``text``; embeddings use a seeded sample of each."""
    if reference.empty:
        raise ValueError("the reference (training) split is empty")
    if new.empty:
        return DriftReport(len(reference), 0, 0.0, 0.0, 0.0, None, False, ())
    ref_log, new_log = np.log1p(reference["price"].to_numpy(float)), np.log1p(new["price"].to_numpy(float))
    psi, ks = population_stability(ref_log, new_log), ks_statistic(ref_log, new_log)
    tvd = category_distance(reference["category"], new["category"])
    cosine = None
    if embed is not None:
        pick = lambda frame: frame["text"].sample(min(sample, len(frame)), random_state=seed).tolist()
        cosine = embedding_distance(embed(pick(reference)), embed(pick(new)))
    checks = {
        f"price PSI {psi:.3f} > {thresholds.price_psi}": psi > thresholds.price_psi,
        f"price KS {ks:.3f} > {thresholds.price_ks}": ks > thresholds.price_ks,
        f"category TVD {tvd:.3f} > {thresholds.category_tvd}": tvd > thresholds.category_tvd,
        f"embedding cosine {cosine or 0:.4f} > {thresholds.embedding_cosine}": (cosine or 0) > thresholds.embedding_cosine,
        f"{len(new)} new items >= {thresholds.min_new_items}": len(new) >= thresholds.min_new_items,
    }
    reasons = tuple(reason for reason, crossed in checks.items() if crossed)
    return DriftReport(len(reference), len(new), psi, ks, tvd, cosine, bool(reasons), reasons)
