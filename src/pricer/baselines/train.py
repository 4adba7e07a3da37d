"""Train, evaluate, log and register price models: the baselines stage, reused by every model family.

Each model is one MLflow run (nested under the stage's run): its params, fit time, predict
throughput, validation MAE, the harness's test metrics and charts, and the model itself as a
pyfunc that takes raw item text. The best model *by validation MAE* (the test split only
ever scores) becomes the registry candidate, and the promotion gate decides on test MAE.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from pricer.baselines.models import PriceModel, Stack, build_model
from pricer.config import ModelSpec
from pricer.evaluation.harness import evaluate_model
from pricer.evaluation.metrics import compute_metrics
from pricer.serving.pyfunc import log_price_model, model_inputs
from pricer.tracking.registry import PromotionDecision, promote_if_better, register_candidate
from pricer.tracking.runs import file_digest

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    test_digest: str

    @classmethod
    def load(cls, data_dir: Path) -> Splits:
        paths = {split: data_dir / f"{split}.parquet" for split in SPLITS}
        missing = [str(path) for path in paths.values() if not path.exists()]
        if missing:
            raise FileNotFoundError(f"curated data missing: {missing}; run `pricer curate` first")
        frames = {split: pd.read_parquet(path) for split, path in paths.items()}
        for split, frame in frames.items():
            if frame.empty:
                raise ValueError(f"the {split} split in {data_dir} is empty")
        return cls(**frames, test_digest=file_digest(paths["test"]))


@dataclass(frozen=True)
class TrainedModel:
    name: str
    kind: str
    run_id: str
    model_uri: str
    val_mae: float
    fit_seconds: float
    predict_items_per_s: float
    test: dict[str, float | int]


def train_and_log(spec: ModelSpec, splits: Splits, reports_dir: Path,
                  fitted: Mapping[str, PriceModel] | None = None) -> tuple[TrainedModel, PriceModel]:
    """Fit one model, score it on val (for selection) and test (the harness), log it all to one run.

    A stack blends the models of ``fitted`` (by label) as they are instead of training them again."""
    tags = {"pricer.model": spec.label, "pricer.kind": spec.kind, "pricer.test_digest": splits.test_digest}
    parent = mlflow.active_run()
    # A nested run does not inherit its parent's experiment: name it, or it lands in "Default".
    with mlflow.start_run(run_name=spec.label, nested=True, tags=tags,
                          experiment_id=parent.info.experiment_id if parent else None) as run:
        mlflow.log_params({"kind": spec.kind, **{f"model.{k}": v for k, v in spec.params.items()},
                           "n_train": len(splits.train), "n_val": len(splits.val)})
        model = build_model(spec.kind, **spec.params)
        if isinstance(model, Stack) and fitted:
            model = model.reusing(fitted)
        started = time.perf_counter()
        model.fit(splits.train, splits.val)
        fit_seconds = time.perf_counter() - started

        started = time.perf_counter()
        val_estimates = model.predict(splits.val)
        predict_items_per_s = len(splits.val) / max(time.perf_counter() - started, 1e-9)
        val_mae = float(compute_metrics(splits.val["price"].tolist(), list(val_estimates))["mae"])
        mlflow.log_metrics({"fit_seconds": fit_seconds, "predict_items_per_s": predict_items_per_s,
                            "val_mae": val_mae})

        result = evaluate_model(spec.label, model.predict, splits.test, text_column=None,
                                reports_dir=reports_dir, run_id=run.info.run_id, test_digest=splits.test_digest)
        info = log_price_model(model, splits.test)
    trained = TrainedModel(spec.label, spec.kind, run.info.run_id, info.model_uri, val_mae, fit_seconds,
                           predict_items_per_s, result.metrics)
    log.info("%s: val MAE %.2f, test MAE %.2f, fit %.1fs", spec.label, val_mae, result.metrics["mae"], fit_seconds)
    return trained, model


def champion_rescorer(test: pd.DataFrame):
    """Scores a registered model on this test split, for a champion evaluated on an older one."""

    def rescore(model_uri: str) -> float:
        model = mlflow.pyfunc.load_model(model_uri)
        estimates = model.predict(model_inputs(test))
        return float(compute_metrics(test["price"].tolist(), list(np.asarray(estimates, dtype=float)))["mae"])

    return rescore


def register_best(candidates: list[TrainedModel], registered_name: str, splits: Splits) -> PromotionDecision:
    """Register the model with the lowest validation MAE and put it through the promotion gate."""
    best = min(candidates, key=lambda model: model.val_mae)
    metrics = {key: float(value) for key, value in best.test.items() if key in ("rmsle", "hit_rate", "r2")}
    version = register_candidate(best.model_uri, registered_name, mae=float(best.test["mae"]),
                                 test_digest=splits.test_digest, metrics=metrics)
    decision = promote_if_better(registered_name, version.version, rescore_champion=champion_rescorer(splits.test))
    log.info("%s v%s (%s): %s, %s", registered_name, version.version, best.name, decision.decision, decision.reason)
    return decision


def write_summary(path: Path, trained: list[TrainedModel], decision: PromotionDecision | None) -> dict:
    summary = {
        "models": {model.name: {key: value for key, value in asdict(model).items() if key != "name"}
                   for model in trained},
        "promotion": asdict(decision) if decision else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary
