"""The ensemble stage: pin each member's champion, fit the weights on val, score the logged ensemble, gate it.

Members are registered models (``pricer-specialist``, ``pricer-frontier``, ``pricer-regressor``, or
any other names the config lists). Each member's current champion is pinned by version; a member with
no champion yet is left out. The weights are fitted on the val split from the pinned members' own
predictions (``pricer.models.ensemble.fit_weights``), the ensemble is logged with those pins
(``pricer.serving.ensemble``), and the logged model is scored and gated through the stage protocol as
``pricer-ensemble``. So the champion prices with exactly the members and weights it was scored with.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from pydantic import Field

from pricer.core.comparison import GateSettings
from pricer.core.config import StrictModel
from pricer.core.errors import ModelNotFound
from pricer.core.wandb_settings import WandbSettings
from pricer.models.ensemble import EnsembleWeights, fit_weights
from pricer.serving.ensemble import log_ensemble_model, member_estimates
from pricer.stages.protocol import StageResult, evaluate_and_gate, load_split
from pricer.tracking.lineage import MODEL_TAG, TEST_DIGEST_TAG
from pricer.tracking.registry import champion_uri
from pricer.tracking.runs import stage_run

log = logging.getLogger(__name__)


def _default_members() -> dict[str, str]:
    return {"specialist": "pricer-specialist", "frontier": "pricer-frontier", "regressor": "pricer-regressor"}


class EnsembleConfig(StrictModel):
    """The combiner: weights fitted on the validation split, registered as ``registered_name``."""

    registered_name: str = Field("pricer-ensemble", description="the registered model the ensemble becomes")
    members: dict[str, str] = Field(default_factory=_default_members, min_length=1,
                                    description="member name -> the registered model whose champion it pins")
    data_dir: Path = Field(Path("data/curated"), description="the curated splits")
    reports_dir: Path = Field(Path("reports"), description="the evaluation reports")
    max_val_items: int | None = Field(300, gt=0, description="val rows the weights are fitted on (null: all)")
    max_test_items: int | None = Field(None, gt=0, description="test rows it is scored on (null: all)")
    register_model: bool = Field(True, description="register and gate (false: fit and score only)")
    gate: GateSettings = Field(default_factory=GateSettings, description=(
        "how sure the promotion gate must be that a candidate beats the champion"))


@dataclass
class EnsembleFit:
    weights: EnsembleWeights
    members: dict[str, str]  # member -> pinned model URI
    val_mae: dict[str, float]
    result: StageResult

    @property
    def test_metrics(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.result.candidate.metrics.items()}


def pinned_members(settings: EnsembleConfig) -> dict[str, str]:
    """Each member's current champion, pinned by version (``models:/<name>/<version>``); members without one left out."""
    pinned = {}
    for member, registered in settings.members.items():
        uri = champion_uri(registered)
        if uri is None:
            log.info("ensemble member %s left out: no @champion registered for %s", member, registered)
            continue
        pinned[member] = uri
    return pinned


def _mae(estimates: list[float], truth: list[float]) -> float:
    est, y = np.asarray(estimates, dtype=float), np.asarray(truth, dtype=float)
    ok = np.isfinite(est)
    return float(np.abs(est[ok] - y[ok]).mean()) if ok.any() else math.nan


def fit_ensemble(settings: EnsembleConfig, wandb: WandbSettings | None = None) -> EnsembleFit:
    """Fit the weights of the pinned members on val, log the ensemble, score it on test, register and gate."""
    members = pinned_members(settings)
    if not members:
        raise ModelNotFound("no ensemble member has a champion: register one of "
                            + ", ".join(settings.members.values()))
    val = load_split(settings.data_dir, "val", settings.max_val_items)
    test = load_split(settings.data_dir, "test", settings.max_test_items)
    loaded = {member: mlflow.pyfunc.load_model(uri) for member, uri in members.items()}
    val_estimates = member_estimates(loaded, val.frame)
    weights = fit_weights(val_estimates, val.prices)
    val_mae = {name: _mae(values, val.prices) for name, values in val_estimates.items()}
    val_mae["ensemble"] = _mae(list(weights.combine(val_estimates)), val.prices)
    del loaded

    params: dict[str, Any] = {**settings.model_dump(mode="json"), "members": members,
                              "data": {"val_digest": val.digest, "test_digest": test.digest}}
    with stage_run("ensemble", params, tags={MODEL_TAG: "ensemble", TEST_DIGEST_TAG: test.digest},
                   wandb=wandb) as run:
        mlflow.log_params({f"weight.{name}": round(value, 6) for name, value in weights.weights.items()})
        mlflow.log_metrics({f"val_mae.{name}": value for name, value in val_mae.items() if math.isfinite(value)})
        info = log_ensemble_model(weights, members)
        result = evaluate_and_gate("ensemble", info.model_uri, test, run_id=run.info.run_id,
                                   reports_dir=settings.reports_dir,
                                   register_as=settings.registered_name if settings.register_model else None,
                                   settings=settings.gate)
    return EnsembleFit(weights, members, val_mae, result)
