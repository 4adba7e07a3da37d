"""The baselines stage: train every configured model, score each through its logged pyfunc, register the best.

Each model is one MLflow run (nested under the stage's run): every hyperparameter of its spec and, as
``effective.*``, every one the fitted estimators run with (library defaults included), the digests of
the splits it was fed, fit
time, predict throughput, validation MAE, the harness's test metrics and charts, and the model
itself as a pyfunc that takes raw item text. The best model *by validation MAE* (the test split
only ever scores) goes through the stage protocol's gate as ``pricer-regressor``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from pricer.core.errors import ConfigError, DataError
from pricer.core.files import atomic_write_json
from pricer.core.metrics import compute_metrics
from pricer.core.schema import SPLITS
from pricer.models.base import PriceModel, PriceModelSpec, effective_params
from pricer.models.stack import Stack, StackSpec
from pricer.serving.price_model import log_price_model
from pricer.stages.harness import publish_plot_data
from pricer.stages.params import BaselinesConfig, load_params
from pricer.stages.protocol import Candidate, ScoredSplit, StageResult, gate, load_split, score_candidate
from pricer.tracking.lineage import MODEL_TAG, TEST_DIGEST_TAG
from pricer.tracking.runs import flatten, stage_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    train: Any
    val: Any
    test: ScoredSplit
    digests: dict[str, str]  # split -> the content digest of its rows: what each model run was fed

    @classmethod
    def load(cls, data_dir: Path) -> Splits:
        loaded = {split: load_split(data_dir, split) for split in SPLITS}
        return cls(loaded["train"].frame, loaded["val"].frame, loaded["test"],
                   {split: found.digest for split, found in loaded.items()})


@dataclass(frozen=True)
class TrainedModel:
    spec: PriceModelSpec
    candidate: Candidate
    val_mae: float
    fit_seconds: float
    predict_items_per_s: float

    @property
    def name(self) -> str:
        return self.spec.label

    def summary(self) -> dict[str, Any]:
        return {"kind": self.spec.kind, "run_id": self.candidate.run_id, "model_uri": self.candidate.model_uri,
                "val_mae": self.val_mae, "fit_seconds": self.fit_seconds,
                "predict_items_per_s": self.predict_items_per_s, "test": self.candidate.metrics}


def train_and_log(spec: PriceModelSpec, splits: Splits, reports_dir: Path,
                  fitted: Sequence[PriceModel] = ()) -> tuple[TrainedModel, PriceModel]:
    """Fit one model, score it on val (for selection), log it, and score the logged model on test.

    A stack takes its members from ``fitted`` where one has the member's settings, instead of training it again."""
    tags = {MODEL_TAG: spec.label, "pricer.kind": spec.kind, TEST_DIGEST_TAG: splits.test.digest}
    parent = mlflow.active_run()
    # A nested run does not inherit its parent's experiment: name it, or it lands in "Default".
    with mlflow.start_run(run_name=spec.label, nested=True, tags=tags,
                          experiment_id=parent.info.experiment_id if parent else None) as run:
        mlflow.log_params({**flatten(spec.model_dump(mode="json"), "model."),
                           "n_train": len(splits.train), "n_val": len(splits.val)})
        model = spec.build()
        if isinstance(model, Stack):
            model = model.reusing(fitted)
        started = time.perf_counter()
        model.fit(splits.train, splits.val)
        fit_seconds = time.perf_counter() - started
        mlflow.log_params({**flatten(effective_params(model), "effective."),
                           **{f"data.{split}_digest": digest for split, digest in splits.digests.items()}})

        started = time.perf_counter()
        val_estimates = model.predict(splits.val)
        predict_items_per_s = len(splits.val) / max(time.perf_counter() - started, 1e-9)
        val_mae = float(compute_metrics(splits.val["price"].tolist(), list(val_estimates))["mae"])
        mlflow.log_metrics({"fit_seconds": fit_seconds, "predict_items_per_s": predict_items_per_s,
                            "val_mae": val_mae})
        info = log_price_model(model)
        candidate = score_candidate(spec.label, info.model_uri, splits.test, run_id=run.info.run_id,
                                    reports_dir=reports_dir)
    trained = TrainedModel(spec, candidate, val_mae, fit_seconds, predict_items_per_s)
    log.info("%s: val MAE %.2f, test MAE %.2f, fit %.1fs", spec.label, val_mae, candidate.mae, fit_seconds)
    return trained, model


def stack_may_reuse(model: PriceModel, specs: Sequence[PriceModelSpec]) -> bool:
    """Whether a stack among ``specs`` has a member with this model's settings (``Stack.reusing`` takes it)."""
    return any(model.spec.same_model(member) for spec in specs if isinstance(spec, StackSpec)
               for member in spec.members)


def write_summary(path: Path, trained: list[TrainedModel], result: StageResult | None) -> dict[str, Any]:
    summary = {"models": {model.name: model.summary() for model in trained},
               "promotion": result.summary() if result is not None else None}
    atomic_write_json(path, summary)
    return summary


def run_baselines(params_path: Path = Path("params.yaml"), data_dir: Path | None = None,
                  only: list[str] | None = None) -> dict[str, Any]:
    """Train every configured model, register the best as ``pricer-regressor`` through the gate."""
    params = load_params(params_path)
    config: BaselinesConfig = params.baselines
    specs = [spec for spec in config.models if not only or spec.label in only]
    if not specs:
        raise ConfigError(f"--only {only}: no such model in baselines.models "
                          f"({', '.join(spec.label for spec in config.models)})")
    splits = Splits.load(data_dir or config.data_dir)
    if splits.val.empty:
        raise DataError("the val split is empty: the best model is chosen on it")
    with stage_run("baselines", {"baselines": config.model_dump(mode="json")}, experiment=params.tracking.experiment,
                   tracking_uri=params.tracking.tracking_uri, tags={TEST_DIGEST_TAG: splits.test.digest},
                   wandb=params.tracking.wandb):
        trained: list[TrainedModel] = []
        fitted: list[PriceModel] = []
        for spec in specs:
            result, model = train_and_log(spec, splits, config.reports_dir, fitted)
            trained.append(result)
            if stack_may_reuse(model, specs):
                fitted.append(model)  # the rest are freed once logged: at 400k items a forest alone is GBs
        best = min(trained, key=lambda model: model.val_mae)
        publish_plot_data(config.reports_dir, best.name)
        outcome = gate(best.candidate, config.register_as, splits.test, config.gate)
        mlflow.set_tags({"pricer.registered": config.register_as, "pricer.gate.decision": outcome.decision_name,
                         "pricer.gate.reason": outcome.summary()["reason"]})
        return write_summary(config.summary_path, trained, outcome)
