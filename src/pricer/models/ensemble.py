"""The ensemble's arithmetic: a weighted geometric mean of whatever member estimates are available.

Weights are fitted on the validation split by non-negative least squares in log space,
``log1p(price) ~ sum_i w_i * log1p(estimate_i)``, with a stiff extra row that makes them sum
to one. At inference the weights of the members that answered for an item are renormalised
to sum to one, so a member that has no answer simply drops out. The combiner is generic:
members are names, estimates a dict of name -> values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_STIFFNESS = 1e3  # weight of the sum-to-one row relative to the data rows


@dataclass(frozen=True)
class EnsembleWeights:
    """Member name -> non-negative weight (summing to 1 over the fitted members)."""

    weights: dict[str, float]
    source: str = "fitted"  # fitted | registered:<uri> | equal

    @classmethod
    def equal(cls, names: Sequence[str]) -> EnsembleWeights:
        names = list(dict.fromkeys(names))
        return cls({name: 1.0 / len(names) for name in names} if names else {}, "equal")

    def combine(self, estimates: Mapping[str, Sequence[float | None]]) -> np.ndarray:
        """Per item: the weighted geometric mean (in log1p space) over the members that answered.

        Members without a weight are used only when no weighted member answered (equally).
        An item no member answered gets NaN.
        """
        columns = {name: _as_array(values) for name, values in estimates.items()}
        if not columns:
            return np.array([], dtype=float)
        lengths = {len(values) for values in columns.values()}
        if len(lengths) != 1:
            raise ValueError(
                f"members gave different numbers of estimates: { {k: len(v) for k, v in columns.items()} }"
            )
        n = lengths.pop()
        names = list(columns)
        matrix = np.column_stack([columns[name] for name in names])  # (n, m)
        answered = np.isfinite(matrix) & (matrix > 0)
        logs = np.where(answered, np.log1p(np.where(answered, matrix, 0.0)), 0.0)
        weights = np.array([max(0.0, self.weights.get(name, 0.0)) for name in names])
        out = np.full(n, np.nan)
        for i in range(n):
            mask = answered[i]
            if not mask.any():
                continue
            w = np.where(mask, weights, 0.0)
            if w.sum() <= 0:  # no weighted member answered: the others, equally
                w = mask.astype(float)
            out[i] = math.expm1(float((w * logs[i]).sum() / w.sum()))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"weights": self.weights, "source": self.source}


def _as_array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if value is None else float(value) for value in values], dtype=float)


def fit_weights(estimates: Mapping[str, Sequence[float | None]], truth: Sequence[float]) -> EnsembleWeights:
    """NNLS in log1p space with sum-to-one, on the rows every member answered.

    A member that answered no row, or whose estimates never help, gets weight 0.
    """
    from scipy.optimize import nnls

    names = list(estimates)
    if not names:
        raise ValueError("no member estimates to fit")
    y = np.asarray(truth, dtype=float)
    matrix = np.column_stack([_as_array(estimates[name]) for name in names])
    if matrix.shape[0] != len(y):
        raise ValueError(f"{matrix.shape[0]} estimates per member for {len(y)} true prices")
    usable = [j for j in range(len(names)) if np.isfinite(matrix[:, j]).any()]
    if not usable:
        raise ValueError("no member answered any validation item")
    sub = matrix[:, usable]
    rows = np.isfinite(sub).all(axis=1) & (sub > 0).all(axis=1) & np.isfinite(y) & (y > 0)
    if rows.sum() < 2:
        log.warning(
            "only %d validation rows answered by every member; falling back to equal weights", rows.sum()
        )
        return EnsembleWeights.equal([names[j] for j in usable])
    a = np.log1p(sub[rows])
    b = np.log1p(y[rows])
    a_aug = np.vstack([a, np.full((1, a.shape[1]), _STIFFNESS)])
    b_aug = np.concatenate([b, [_STIFFNESS]])
    solution, _ = nnls(a_aug, b_aug)
    total = solution.sum()
    if total <= 0:
        return EnsembleWeights.equal([names[j] for j in usable])
    weights = {name: 0.0 for name in names}
    for j, value in zip(usable, solution, strict=True):
        weights[names[j]] = float(value / total)
    log.info(
        "ensemble weights fitted on %d validation items: %s",
        int(rows.sum()),
        ", ".join(f"{name} {value:.3f}" for name, value in weights.items()),
    )
    return EnsembleWeights(weights, "fitted")
