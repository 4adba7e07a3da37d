"""Score any registered model on any product file (``pricer evaluate``), or price one text (``pricer price``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from pricer.core.errors import ConfigError, DataError, ModelNotFound
from pricer.core.metrics import compute_metrics
from pricer.data.config import CurateConfig, JsonlSourceConfig
from pricer.data.curate import clean_file
from pricer.data.sources import check_source
from pricer.stages.harness import predict_prices
from pricer.stages.protocol import pyfunc_predictor


def model_uri(reference: str) -> str:
    """``name@alias``, ``name/3``, ``models:/...`` or ``runs:/...`` -> an MLflow model URI."""
    if reference.startswith(("models:/", "runs:/")):
        return reference
    if "@" in reference or "/" in reference:
        return f"models:/{reference}"
    raise ConfigError(f"--model {reference!r}: use name@alias (e.g. pricer-regressor@champion), "
                      "models:/name/version or runs:/<run_id>/model")


def load_registered(reference: str) -> Any:
    """A registered (or logged) model by reference; ModelNotFound names it when MLflow has no such model."""
    try:
        return mlflow.pyfunc.load_model(model_uri(reference))
    except MlflowException as error:
        raise ModelNotFound(f"{reference}: {error.message}") from None


def score_file(reference: str, path: Path, config: CurateConfig) -> dict[str, Any]:
    """Score a registered model on any product file, cleaned by the curation rules (no balance, no split)."""
    check_source(JsonlSourceConfig(paths=[path]))
    items, report = clean_file(path, config)
    if items.empty:
        raise DataError(f"{path}: no usable items ({report['rejected_by_reason']})")
    model = load_registered(reference)
    estimates = predict_prices(pyfunc_predictor(model), items, desc=f"price {path.name}")
    metrics = compute_metrics(items["price"].tolist(), estimates)
    return {
        "mae": metrics["mae"], "rmsle": metrics["rmsle"], "hit_rate": metrics["hit_rate"], "r2": metrics["r2"],
        "unparseable": metrics["unparseable"], "n_scored": metrics["n"], "n_rejected": report["rejected"],
        "rejected_by_reason": report["rejected_by_reason"],
    }
