"""Drift measures: no shift on a same-distribution sample, clear shifts when prices or categories move."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pricer.data.drift import (
    DriftThresholds,
    category_distance,
    ks_statistic,
    measure_drift,
    population_stability,
)


def frame(prices: np.ndarray, categories: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"price": prices, "category": categories, "text": ["item"] * len(prices)})


def test_same_distribution_does_not_trigger_and_shifts_do() -> None:
    rng = np.random.default_rng(0)
    cats = ["A", "B", "C"]
    reference = frame(np.exp(rng.normal(3.5, 1.0, 4000)), list(rng.choice(cats, 4000)))
    same = frame(np.exp(rng.normal(3.5, 1.0, 500)), list(rng.choice(cats, 500)))
    pricier = frame(np.exp(rng.normal(4.5, 1.0, 500)), list(rng.choice(cats, 500)))
    other_mix = frame(np.exp(rng.normal(3.5, 1.0, 500)), ["D"] * 400 + ["A"] * 100)
    thresholds = DriftThresholds(min_new_items=1000)

    calm = measure_drift(reference, same, thresholds)
    assert not calm.retrain and calm.reasons == ()
    shifted = measure_drift(reference, pricier, thresholds)
    assert shifted.retrain and any("PSI" in r for r in shifted.reasons) and any("KS" in r for r in shifted.reasons)
    mixed = measure_drift(reference, other_mix, thresholds)
    assert mixed.retrain and mixed.reasons == (f"category TVD {mixed.category_tvd:.3f} > 0.2",)
    volume = measure_drift(reference, same, DriftThresholds(min_new_items=100))
    assert volume.reasons == ("500 new items >= 100",)


def test_measures_against_hand_computed_values() -> None:
    assert ks_statistic(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 1.0
    assert category_distance(pd.Series(["a", "a", "b", "b"]), pd.Series(["a", "a", "a", "a"])) == 0.5
    sample = np.log1p(np.array([5.0, 50.0, 500.0]))
    assert population_stability(sample, sample) == 0.0


def test_embedding_shift_uses_the_given_embedder() -> None:
    reference, new = frame(np.full(50, 20.0), ["A"] * 50), frame(np.full(50, 20.0), ["A"] * 50)
    reference["text"], new["text"] = "old", "new"
    embed = lambda texts: np.array([[1.0, 0.0] if t == "old" else [0.0, 1.0] for t in texts])
    report = measure_drift(reference, new, DriftThresholds(min_new_items=1000), embed=embed)
    assert report.embedding_cosine == 1.0 and report.retrain


def test_live_estimates_are_compared_with_the_training_prices_and_only_warn() -> None:
    from pricer.data.drift import live_drift

    rng = np.random.default_rng(1)
    train = np.exp(rng.normal(3.5, 1.0, 4000))
    thresholds = DriftThresholds(min_live_estimates=30)
    alike = np.exp(rng.normal(3.5, 1.0, 300))
    calm = live_drift(train, alike, alike * 0.9, thresholds, n_opportunities=4)
    assert not calm.shifted and calm.warnings == () and calm.n_estimates == 300 and calm.n_opportunities == 4
    assert calm.estimate_psi < 0.2 and abs(calm.median_estimate - np.median(alike)) < 1e-9
    dearer = np.exp(rng.normal(5.0, 0.5, 300))  # a feed that sells dearer things than the models learned
    shifted = live_drift(train, dearer, dearer, thresholds)
    assert shifted.shifted and any(w.startswith("live estimate PSI") for w in shifted.warnings)
    assert any(w.startswith("live deal price KS") for w in shifted.warnings)
    few = live_drift(train, dearer[:10], dearer[:10], thresholds)
    assert not few.shifted and few.estimate_psi is None and few.warnings == ("10 live estimates < 30: not judged",)
