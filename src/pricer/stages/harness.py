"""One evaluation harness for every Pricer model on the same test split.

A model is a ``Predictor``: a frame of test rows in, one price per row out, None or NaN for an
answer it could not give. ``evaluate_model`` predicts in batches, survives any bad batch, scores
the estimates with the project's metric arithmetic, writes the reports DVC tracks, and records
the result in MLflow (when given a run) and in Prefect (when running inside a flow or task). The
stage protocol (``pricer.stages.protocol``) hands it the logged model itself.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from tqdm import tqdm

from pricer.core.files import atomic_write_json
from pricer.core.metrics import COLOURS, GREEN, ORANGE, RED, colour_bands, compute_metrics, to_estimate
from pricer.tracking.lineage import MODEL_TAG, TEST_DIGEST_TAG
from pricer.tracking.scores import ItemScores

logger = logging.getLogger(__name__)

Predictor = Callable[[pd.DataFrame], Sequence[float | None]]

PRICE_BAND_EDGES = (0.0, 25.0, 50.0, 100.0, 250.0, 500.0, math.inf)
PRICE_BAND_LABELS = ("<$25", "$25-50", "$50-100", "$100-250", "$250-500", "$500+")
REQUIRED_COLUMNS = ("id", "title", "category", "price")
DVC_METRICS = ("mae", "hit_rate", "rmsle")
PLOT_FILES = ("predictions.csv", "per_band.csv")

# The name becomes a file name, an MLflow artifact folder and part of a Prefect key.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PLOT_COLOURS = {GREEN: "#2ca02c", ORANGE: "#ff7f0e", RED: "#d62728"}
# Log axes cannot show a zero or negative price; such points sit on this floor instead.
_LOG_FLOOR_USD = 0.1


@dataclass
class EvaluationResult:
    name: str
    metrics: dict[str, float | int]
    predictions: pd.DataFrame  # id, title, category, price, estimate, error (estimate - price), band
    per_band: pd.DataFrame  # price_band, n, mae, hit_rate, unparseable
    per_category: pd.DataFrame  # category, n, mae, hit_rate, unparseable
    paths: dict[str, Path] = field(default_factory=dict)


def evaluate_model(
    name: str,
    predict: Predictor,
    test: pd.DataFrame,
    *,
    batch_size: int = 256,
    reports_dir: Path = Path("reports"),
    run_id: str | None = None,
    test_digest: str | None = None,
) -> EvaluationResult:
    """Score one model on the test split, write its reports and record them.

    Writes ``<reports_dir>/metrics/<name>.json`` (mae, hit_rate, rmsle; NaN as null, for DVC) and
    ``<reports_dir>/eval/<name>/`` (predictions, per-band and per-category CSVs, scatter
    and error histogram). With ``run_id`` the metrics, files, predictions table and the
    tags ``pricer.model`` / ``pricer.test_digest`` go to that MLflow run: one run per model.
    """
    _check_inputs(name, test, batch_size)
    estimates = predict_prices(predict, test, batch_size=batch_size, desc=f"evaluate {name}")
    predictions = _predictions_table(test, estimates)
    result = EvaluationResult(
        name=name,
        metrics=compute_metrics(predictions["price"].tolist(), estimates),
        predictions=predictions,
        per_band=per_price_band(predictions),
        per_category=per_category(predictions),
    )
    result.paths = _write_reports(result, Path(reports_dir))
    if run_id is not None:
        _log_to_mlflow(run_id, result, test_digest)
    _publish_to_prefect(result)
    logger.info(
        "%s: mae %s, hit rate %s, unparseable %d of %d",
        name,
        _usd(result.metrics["mae"]),
        _percent(result.metrics["hit_rate"]),
        result.metrics["unparseable"],
        result.metrics["n"],
    )
    return result


def predict_prices(predict: Predictor, items: pd.DataFrame, *, batch_size: int = 256,
                   desc: str = "predict") -> list[float]:
    """The model's estimate for every item, NaN where it gave no usable number; never raises for it."""
    estimates: list[float] = []
    with tqdm(total=len(items), desc=desc, unit="item") as progress:
        for start in range(0, len(items), batch_size):
            batch = items.iloc[start:start + batch_size]
            estimates.extend(_predict_batch(predict, batch, start))
            progress.update(len(batch))
    return estimates


def _predict_batch(predict: Predictor, batch: pd.DataFrame, start: int) -> list[float]:
    span = f"items {start}-{start + len(batch) - 1}"
    try:
        answers = list(predict(batch))
    except Exception:  # a model failing on one batch must not lose the whole evaluation
        logger.exception("predictor failed on %s; counting them unparseable", span)
        return [math.nan] * len(batch)
    if len(answers) != len(batch):
        logger.error(
            "predictor gave %d answers for %d %s; counting them unparseable", len(answers), len(batch), span
        )
        return [math.nan] * len(batch)
    return [to_estimate(answer) for answer in answers]


def _check_inputs(name: str, test: pd.DataFrame, batch_size: int) -> None:
    text_column = "text"
    if not _MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"model name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    missing = [column for column in (*REQUIRED_COLUMNS, text_column) if column not in test.columns]
    if missing:
        raise ValueError(f"the test split lacks column(s) {missing}")
    if test.empty:
        raise ValueError("the test split is empty")
    prices = pd.to_numeric(test["price"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(prices) | (prices < 0)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} test item(s) have no valid price, e.g. id {test['id'][bad].iloc[0]!r}"
        )
    if test[text_column].isna().any():
        raise ValueError(f"{int(test[text_column].isna().sum())} test item(s) have no {text_column!r}")


def _predictions_table(test: pd.DataFrame, estimates: list[float]) -> pd.DataFrame:
    truth = pd.to_numeric(test["price"]).to_numpy(dtype=float)
    estimate = np.asarray(estimates, dtype=float)
    return pd.DataFrame(
        {
            "id": test["id"].astype(str).to_numpy(),
            "title": test["title"].to_numpy(),
            "category": test["category"].to_numpy(),
            "price": truth,
            "estimate": estimate,
            "error": estimate - truth,
            "band": colour_bands(truth, estimate),
        }
    )


def per_price_band(predictions: pd.DataFrame) -> pd.DataFrame:
    """n, mae, hit_rate and unparseable per true-price band, every band listed even when empty."""
    band = pd.cut(
        predictions["price"], bins=list(PRICE_BAND_EDGES), labels=list(PRICE_BAND_LABELS), right=False
    ).rename("price_band")
    return _group_summary(predictions, band)


def per_category(predictions: pd.DataFrame) -> pd.DataFrame:
    """n, mae, hit_rate and unparseable per category, largest first."""
    table = _group_summary(predictions, predictions["category"])
    return table.sort_values(["n", "category"], ascending=[False, True], ignore_index=True)


def _group_summary(predictions: pd.DataFrame, key: pd.Series) -> pd.DataFrame:
    scored = predictions.assign(
        abs_error=predictions["error"].abs(),
        hit=predictions["band"].eq(GREEN),
        unparseable=predictions["estimate"].isna(),
    )
    # Same definitions as the metric module: unparseable items miss, and have no error to average.
    return (
        scored.groupby(key, observed=False, dropna=False)
        .agg(
            n=("price", "size"),
            mae=("abs_error", "mean"),
            hit_rate=("hit", "mean"),
            unparseable=("unparseable", "sum"),
        )
        .reset_index()
    )


def publish_plot_data(reports_dir: Path, name: str) -> Path:
    """Copy model ``name``'s test predictions and per-band errors to ``<reports_dir>/plots/``, the fixed
    paths dvc.yaml draws its plots from (so ``dvc plots diff`` compares a stage's registered candidate)."""
    plots = Path(reports_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for file in PLOT_FILES:
        shutil.copyfile(Path(reports_dir) / "eval" / name / file, plots / file)
    return plots


def _write_reports(result: EvaluationResult, reports_dir: Path) -> dict[str, Path]:
    eval_dir = reports_dir / "eval" / result.name
    paths = {
        "metrics": reports_dir / "metrics" / f"{result.name}.json",
        "predictions": eval_dir / "predictions.csv",
        "per_band": eval_dir / "per_band.csv",
        "per_category": eval_dir / "per_category.csv",
        "scatter": eval_dir / "scatter.png",
        "error_hist": eval_dir / "error_hist.png",
    }
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    # The figures a reviewer diffs, numbers only (NaN as null): one compact row per model in ``dvc metrics
    # show``; every metric and the identifiers are on the MLflow run.
    atomic_write_json(paths["metrics"], {name: result.metrics[name] for name in DVC_METRICS})
    result.predictions.to_csv(paths["predictions"], index=False)
    result.per_band.to_csv(paths["per_band"], index=False)
    result.per_category.to_csv(paths["per_category"], index=False)
    _scatter_chart(result).savefig(paths["scatter"], dpi=120)
    _error_histogram(result).savefig(paths["error_hist"], dpi=120)
    return paths


# Charts are built on bare Figure objects (Agg canvas), not pyplot: pyplot's global state is
# not thread-safe, and Prefect runs tasks in threads.
def _scatter_chart(result: EvaluationResult) -> Figure:
    predictions = result.predictions
    shown = predictions.dropna(subset=["estimate"])
    truth = shown["price"].clip(lower=_LOG_FLOOR_USD)
    estimate = shown["estimate"].clip(lower=_LOG_FLOOR_USD)
    figure = Figure(figsize=(7, 7), layout="constrained")
    axes = figure.add_subplot()
    for colour in COLOURS:
        mask = shown["band"].eq(colour)
        axes.scatter(
            truth[mask],
            estimate[mask],
            s=8,
            alpha=0.6,
            color=_PLOT_COLOURS[colour],
            label=f"{colour} ({int(mask.sum())})",
        )
    top = float(np.nanmax([predictions["price"].max(), predictions["estimate"].max(), 1.0]))
    axes.plot(
        [_LOG_FLOOR_USD, top], [_LOG_FLOOR_USD, top], color="grey", linestyle="--", linewidth=1, label="y = x"
    )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("true price (USD)")
    axes.set_ylabel("estimate (USD)")
    metrics = result.metrics
    axes.set_title(
        f"{result.name}: MAE {_usd(metrics['mae'])}, hit rate {_percent(metrics['hit_rate'])}, "
        f"unparseable {metrics['unparseable']} (not shown)"
    )
    axes.legend(loc="upper left")
    return figure


def _error_histogram(result: EvaluationResult) -> Figure:
    errors = result.predictions["error"].dropna()
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.add_subplot()
    # Errors that all but agree (an exact model: float noise around 0) get one bar, not 50 empty slivers,
    # which matplotlib refuses.
    spread = float(errors.max() - errors.min()) if len(errors) else 0.0
    centre = float(errors.mean()) if len(errors) else 0.0
    axes.hist(errors, bins=50 if spread >= 1.0 else 1, color="#1f77b4",
              range=None if spread >= 1.0 else (centre - 0.5, centre + 0.5))
    axes.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("estimate - true price (USD)")
    axes.set_ylabel("items")
    axes.set_title(
        f"{result.name}: errors of {len(errors)} parseable estimates, MAE {_usd(result.metrics['mae'])}"
    )
    return figure


def _usd(value: float) -> str:
    return "n/a" if math.isnan(value) else f"${value:,.2f}"


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def _log_to_mlflow(run_id: str, result: EvaluationResult, test_digest: str | None) -> None:
    # MlflowClient with an explicit run id: the fluent API's active run is per thread, and
    # Prefect runs tasks in other threads than the one that started the run.
    client = MlflowClient()
    now = int(time.time() * 1000)
    tags = {MODEL_TAG: result.name}
    if test_digest:
        tags[TEST_DIGEST_TAG] = test_digest
    client.log_batch(
        run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in result.metrics.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
    )
    artifact_dir = f"eval/{result.name}"
    for path in result.paths.values():
        client.log_artifact(run_id, str(path), artifact_path=artifact_dir)
    # MLflow appends to an existing table file: evaluating the same model twice in one run adds rows.
    client.log_table(run_id, data=result.predictions, artifact_file=f"{artifact_dir}/predictions_table.json")
    if test_digest:  # what the promotion gate compares, item by item
        predictions = result.predictions
        ItemScores.of(test_digest, predictions["id"].tolist(), predictions["price"].tolist(),
                      predictions["estimate"].tolist()).log(run_id, client)


def prefect_artifact_key(name: str) -> str:
    """The Prefect artifact key for a model's evaluation: lowercase letters, digits and dashes only."""
    return "eval-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _publish_to_prefect(result: EvaluationResult) -> None:
    # Only a process that has imported Prefect can be inside one of its runs; checking that
    # first spares every other caller the ~2 s import.
    if "prefect" not in sys.modules:
        return
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    create_table_artifact(
        table=[{"metric": key, "value": value} for key, value in result.metrics.items()],
        key=prefect_artifact_key(result.name),
        description=f"Price metrics of `{result.name}` on the test split",
    )
