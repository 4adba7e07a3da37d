"""Should the models be retrained? Compare newly arrived items with the training split.

Three shifts, each a number a reviewer can read: the price distribution (population
stability index over log-price bins and the two-sample KS statistic), the category mix
(total variation distance), and the text (cosine distance between mean embeddings).
Retraining is due when any shift or the volume of new items crosses its threshold.

A second section compares what the deal agents see live with the same training prices: the ensemble's
estimates of the deals they priced, and the deals' own prices (PSI and KS again). It is a warning, not
a reason to retrain: it needs no labels, so it can only say that the models now price another market
than the one they learned (a feed that sells dearer things, an estimate gone wrong), which retraining on
the same data would not change.
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
    min_live_estimates: int = Field(
        30, ge=1, description="fewer live estimates than this are reported but not judged: too few for a PSI")


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
    live: LiveDrift | None = None  # the live deals' section, when the memory was read

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class LiveDrift:
    """The deals the agents priced against the training prices: ``shifted`` and its ``warnings``."""

    n_estimates: int
    n_opportunities: int
    median_train_price: float
    median_estimate: float | None
    median_deal_price: float | None
    estimate_psi: float | None
    estimate_ks: float | None
    deal_price_psi: float | None
    deal_price_ks: float | None
    shifted: bool
    warnings: tuple[str, ...]


def live_drift(train_prices: Sequence[float], estimates: Sequence[float], deal_prices: Sequence[float],
               thresholds: DriftThresholds, n_opportunities: int = 0) -> LiveDrift:
    """Live estimates and deal prices (one per deal priced) against the training split's prices, on log prices
    like the inbox check; below ``min_live_estimates`` the figures are left out rather than trusted."""
    train = np.log1p(np.asarray(train_prices, dtype=float))
    if train.size == 0:
        raise ValueError("the reference (training) split is empty")
    live, prices = np.asarray(estimates, dtype=float), np.asarray(deal_prices, dtype=float)
    def median(values: np.ndarray) -> float | None:
        return float(np.median(values)) if values.size else None

    base = {"n_estimates": int(live.size), "n_opportunities": int(n_opportunities),
            "median_train_price": float(np.median(np.expm1(train))), "median_estimate": median(live),
            "median_deal_price": median(prices)}
    if live.size < thresholds.min_live_estimates:
        note = f"{live.size} live estimates < {thresholds.min_live_estimates}: not judged"
        return LiveDrift(**base, estimate_psi=None, estimate_ks=None, deal_price_psi=None, deal_price_ks=None,
                         shifted=False, warnings=(note,))
    live_log, price_log = np.log1p(live), np.log1p(prices)
    figures = {"estimate": (population_stability(train, live_log), ks_statistic(train, live_log)),
               "deal price": (population_stability(train, price_log), ks_statistic(train, price_log))}
    warnings = tuple(
        warning for what, (psi, ks) in figures.items() for warning, crossed in (
            (f"live {what} PSI {psi:.3f} > {thresholds.price_psi}", psi > thresholds.price_psi),
            (f"live {what} KS {ks:.3f} > {thresholds.price_ks}", ks > thresholds.price_ks)) if crossed)
    return LiveDrift(**base, estimate_psi=figures["estimate"][0], estimate_ks=figures["estimate"][1],
                     deal_price_psi=figures["deal price"][0], deal_price_ks=figures["deal price"][1],
                     shifted=bool(warnings), warnings=warnings)


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
