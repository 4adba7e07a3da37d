"""The one stage protocol: score a candidate on the test split, log it, register it, gate it, summarise it.

Every registering stage (baselines, specialist, frontier zero-shot and RAG, the API fine-tuned model,
the ensemble) logs its model in its own run, then does the same steps here and nowhere else:

1. ``load_split``: the rows to score (the first ``limit`` rows when a stage prices fewer) and their
   one identity, the content digest of exactly those rows. Two candidates compare directly only when
   their digests are equal; otherwise the gate rescores the champion on the candidate's rows.
2. ``score_candidate``: the *logged* model is loaded back from MLflow and predicts through the
   evaluation harness (metrics, reports and charts to the run), so what the gate scored is what
   consumers load.
3. ``gate``: register the version (tagged with its scores and digest) and put it through the
   promotion gate, with ``rescorer``, which feeds the champion the same model inputs
   (``pricer.core.schema.model_inputs``) as the candidate.
4. The outcome comes back typed (``StageResult``), for the stage's summary and the CLI.

``evaluate_and_gate`` is steps 2 and 3 in one call.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from pricer.core.errors import DataError
from pricer.core.schema import model_inputs, rows_digest
from pricer.stages.harness import Predictor, evaluate_model, predict_prices
from pricer.tracking.gate import (
    ChampionUnloadable,
    GateSettings,
    PromotionDecision,
    Rescorer,
    promote_if_better,
)
from pricer.tracking.registry import register_candidate

log = logging.getLogger(__name__)

GATE_METRICS = ("rmsle", "hit_rate", "r2")
NOT_REGISTERED = "not-registered"


@dataclass(frozen=True)
class ScoredSplit:
    """The rows candidates are scored on, and the digest that names exactly them."""

    frame: pd.DataFrame
    digest: str
    path: Path

    @property
    def prices(self) -> list[float]:
        return self.frame["price"].astype(float).tolist()


def load_split(data_dir: Path, split: str = "test", limit: int | None = None) -> ScoredSplit:
    """A curated split (its first ``limit`` rows when given) and its content digest."""
    path = Path(data_dir) / f"{split}.parquet"
    if not path.exists():
        raise DataError(f"curated split missing: {path}; run `pricer curate` first")
    frame = pd.read_parquet(path)
    if limit is not None:
        frame = frame.head(limit)
    frame = frame.reset_index(drop=True)
    if frame.empty:
        raise DataError(f"the {split} split in {data_dir} is empty")
    return ScoredSplit(frame, rows_digest(frame), path)


def pyfunc_predictor(model: Any) -> Predictor:
    """A loaded MLflow model as the harness's predictor: each batch's model inputs in, prices out."""
    return lambda batch: np.asarray(model.predict(model_inputs(batch)), dtype=float)


def load_model(model_uri: str) -> Any:
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except Exception as error:
        raise ChampionUnloadable(f"{model_uri} cannot be loaded ({type(error).__name__}: {error})") from error


def rescorer(split: ScoredSplit) -> Rescorer:
    """Prices these rows with a registered model, fed the inputs every candidate is fed."""

    def rescore(model_uri: str) -> list[float]:
        return predict_prices(pyfunc_predictor(load_model(model_uri)), split.frame, desc="rescore champion")

    return rescore


@dataclass(frozen=True)
class Candidate:
    """A logged model and its scores on the split, read back through the model itself."""

    label: str
    model_uri: str
    run_id: str
    metrics: dict[str, float | int]
    model: Any = field(repr=False, compare=False, default=None)

    @property
    def mae(self) -> float:
        return float(self.metrics["mae"])


def score_candidate(label: str, model_uri: str, split: ScoredSplit, *, run_id: str, reports_dir: Path,
                    batch_size: int = 256, model: Any = None) -> Candidate:
    """Load the logged model (``model``: already loaded from ``model_uri``) and score it with the harness;
    metrics, reports and charts go to ``run_id``."""
    model = model if model is not None else mlflow.pyfunc.load_model(model_uri)
    result = evaluate_model(label, pyfunc_predictor(model), split.frame, batch_size=batch_size,
                            reports_dir=reports_dir, run_id=run_id, test_digest=split.digest)
    return Candidate(label, model_uri, run_id, dict(result.metrics), model)


@dataclass(frozen=True)
class StageResult:
    """What the gate made of a candidate: its version and the decision (both None when not registered)."""

    registered_name: str | None
    candidate: Candidate
    test_digest: str
    version: str | None = None
    decision: PromotionDecision | None = None
    reason: str = ""

    @property
    def decision_name(self) -> str:
        return self.decision.decision if self.decision is not None else NOT_REGISTERED

    def summary(self) -> dict[str, Any]:
        """Plain data for a stage's summary file and the CLI."""
        return {
            "name": self.registered_name, "version": self.version, "decision": self.decision_name,
            "reason": self.decision.reason if self.decision is not None else self.reason,
            "promoted": bool(self.decision and self.decision.promoted), "model": self.candidate.label,
            "candidate_mae": self.candidate.mae,
            "model_uri": self.candidate.model_uri, "run_id": self.candidate.run_id, "test_digest": self.test_digest,
            "champion_mae": self.decision.champion_mae if self.decision is not None else None,
        }


def gate(candidate: Candidate, register_as: str, split: ScoredSplit,
         settings: GateSettings | None = None) -> StageResult:
    """Register the candidate as a version of ``register_as`` and run the promotion gate (its scores on
    ``split`` are on the candidate's run: the harness stored them when it scored the model there)."""
    mae = candidate.mae
    if not math.isfinite(mae):
        reason = "every answer was unparseable: no MAE to register"
        log.warning("%s not registered: %s", register_as, reason)
        return StageResult(register_as, candidate, split.digest, reason=reason)
    metrics = {key: float(candidate.metrics[key]) for key in GATE_METRICS
               if math.isfinite(float(candidate.metrics[key]))}
    version = register_candidate(candidate.model_uri, register_as, mae=mae, test_digest=split.digest,
                                 scores_run_id=candidate.run_id, metrics=metrics)
    decision = promote_if_better(register_as, version.version, rescore_champion=rescorer(split),
                                 settings=settings)
    log.info("%s v%s (%s): %s, %s", register_as, version.version, candidate.label, decision.decision,
             decision.reason)
    return StageResult(register_as, candidate, split.digest, str(version.version), decision)


def evaluate_and_gate(label: str, model_uri: str, split: ScoredSplit, *, run_id: str, reports_dir: Path,
                      register_as: str | None, batch_size: int = 256,
                      settings: GateSettings | None = None) -> StageResult:
    """``score_candidate``, then ``gate`` unless ``register_as`` is None."""
    candidate = score_candidate(label, model_uri, split, run_id=run_id, reports_dir=reports_dir,
                                batch_size=batch_size)
    if register_as is None:
        return StageResult(None, candidate, split.digest, reason="registration is off")
    return gate(candidate, register_as, split, settings)
