"""Score a registered model on any product file, cleaned by the curation rules (no balance, no split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow

from pricer.config import CurateConfig
from pricer.data.curate import clean_file
from pricer.evaluation.harness import predict_prices
from pricer.evaluation.metrics import compute_metrics
from pricer.serving.pyfunc import as_items, model_inputs


def model_uri(reference: str) -> str:
    """``name@alias``, ``name/3``, ``models:/...`` or ``runs:/...`` -> an MLflow model URI."""
    if reference.startswith(("models:/", "runs:/")):
        return reference
    if "@" in reference or "/" in reference:
        return f"models:/{reference}"
    raise ValueError(f"--model {reference!r}: use name@alias (e.g. pricer-regressor@champion), "
                     "models:/name/version or runs:/<run_id>/model")


def score_file(reference: str, path: Path, config: CurateConfig) -> dict[str, Any]:
    items, report = clean_file(path, config)
    if items.empty:
        raise ValueError(f"{path}: no usable items ({report['rejected_by_reason']})")
    model = mlflow.pyfunc.load_model(model_uri(reference))
    estimates = predict_prices(lambda batch: model.predict(as_items(batch)), model_inputs(items),
                               desc=f"price {path.name}")
    metrics = compute_metrics(items["price"].tolist(), estimates)
    return {
        "mae": metrics["mae"], "rmsle": metrics["rmsle"], "hit_rate": metrics["hit_rate"], "r2": metrics["r2"],
        "unparseable": metrics["unparseable"], "n_scored": metrics["n"], "n_rejected": report["rejected"],
        "rejected_by_reason": report["rejected_by_reason"],
    }
