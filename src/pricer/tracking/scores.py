"""Per-item scores: what a model answered for each test item, kept on the run that scored it.

The promotion gate compares two models item by item on the same rows, so each scoring run stores
its answers under ``pricer/scores/<test digest>.json``: the items' ids and true prices, and the
estimates, with ``null`` where the answer had no usable number. A version of a registered model
names the run that holds its scores in the ``pricer.scores_run`` tag.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pricer.core.price_metrics.scoring import to_estimate

SCORES_DIR = "pricer/scores"


@dataclass(frozen=True)
class ItemScores:
    """One model's answers on one set of test rows (named by their digest); NaN marks no answer."""

    digest: str
    ids: tuple[str, ...]
    prices: np.ndarray
    estimates: np.ndarray

    @classmethod
    def of(cls, digest: str, ids: Sequence[object], prices: Sequence[float],
           estimates: Sequence[object]) -> ItemScores:
        values = np.array([to_estimate(value) for value in estimates], dtype=float)
        truth = np.asarray(prices, dtype=float)
        if not (len(ids) == truth.size == values.size):
            raise ValueError(f"{len(ids)} ids, {truth.size} prices and {values.size} estimates")
        return cls(digest, tuple(str(item) for item in ids), truth, values)

    def answered_by(self, estimates: Sequence[object]) -> ItemScores:
        """The same rows answered by another model."""
        return ItemScores.of(self.digest, self.ids, self.prices, estimates)

    @property
    def unparseable(self) -> int:
        return int(np.isnan(self.estimates).sum())

    def errors(self, unparseable_estimate_usd: float) -> np.ndarray:
        """Absolute errors, an item without an answer scored as if it had answered the fallback."""
        answered = np.where(np.isnan(self.estimates), unparseable_estimate_usd, self.estimates)
        return np.abs(answered - self.prices)

    @property
    def artifact_file(self) -> str:
        return f"{SCORES_DIR}/{self.digest}.json"

    def to_dict(self) -> dict[str, object]:
        return {"digest": self.digest, "ids": list(self.ids), "prices": self.prices.tolist(),
                "estimates": [None if math.isnan(value) else value for value in self.estimates.tolist()]}

    def log(self, run_id: str, client: MlflowClient | None = None) -> str:
        """Store on ``run_id`` (rewriting the same file: scoring again on the same rows replaces it)."""
        (client or MlflowClient()).log_dict(run_id, self.to_dict(), self.artifact_file)
        return self.artifact_file

    @classmethod
    def load(cls, run_id: str | None, digest: str, client: MlflowClient | None = None) -> ItemScores | None:
        """The scores ``run_id`` stored for these rows, or None where it stored none."""
        if not run_id:
            return None
        client = client or MlflowClient()
        try:
            path = client.download_artifacts(run_id, f"{SCORES_DIR}/{digest}.json")
        except (MlflowException, OSError):
            return None
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return cls.of(data["digest"], data["ids"], data["prices"], data["estimates"])
