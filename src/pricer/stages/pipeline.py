"""What the pipeline flow needs beyond the DVC stages: the frontier step when one is configured,
the fingerprints that let Prefect cache the registry-driven steps, and the champions table.

DVC skips a file stage whose inputs did not change; the frontier evaluation and the ensemble
read the model registry instead of files, so they are cached by Prefect on a fingerprint of
everything they read: their config, the curated splits, and the exact model version (and the
run that logged it) behind each member's ``@champion``. Same fingerprint, same result.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Metric

from pricer.core.errors import PricerError
from pricer.core.files import file_digest
from pricer.frontier.config import load_frontier_config, resolve_api_key
from pricer.stages.ensemble import EnsembleConfig
from pricer.stages.params import Params
from pricer.tracking.leaderboard import leaderboard, to_markdown
from pricer.tracking.mirror import mirror_tree
from pricer.tracking.registry import CHAMPION, TAG_MAE
from pricer.tracking.runs import (
    PARENT_RUN_ENV,
    TrackingConfig,
    configure,
    default_tracking_uri,
    flatten,
    git_commit,
)

REGISTERED_MODELS = ("pricer-regressor", "pricer-specialist", "pricer-frontier", "pricer-ensemble")


@contextmanager
def pipeline_run(params: Params) -> Iterator[Any]:
    """The parent MLflow run of one pipeline execution: every stage run started inside, in this process or a
    subprocess DVC launches, nests under it (the run id travels in ``PRICER_PARENT_RUN_ID``).

    It carries every params.yaml value and the code's commit as params, so two pipeline runs side by side
    in MLflow's compare view say what changed; ``record_outcome`` adds what came of it."""
    tracking = params.tracking
    experiment_id = configure(tracking.tracking_uri, tracking.experiment)
    commit = git_commit() or "unknown"
    with mlflow.start_run(experiment_id=experiment_id, run_name="pipeline",
                          tags={"pricer.stage": "pipeline", "git.commit": commit}) as run:
        mlflow.log_params({**flatten(params.model_dump(mode="json")), "git.commit": commit})
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        try:
            yield run
        finally:
            os.environ.pop(PARENT_RUN_ENV, None)


def leaderboard_markdown(experiment: str) -> str:
    return to_markdown(leaderboard(experiment))


def record_outcome(run_id: str, tracking: TrackingConfig) -> dict[str, float]:
    """What the pipeline run came to, on the run itself: each model's test MAE and hit rate, each registered
    name's champion MAE (as metrics, for the compare view), the leaderboard, and one chart of MAE by model.
    With ``tracking.wandb`` on, the pipeline run and every run under it then go to W&B as well."""
    experiment = tracking.experiment
    board = leaderboard(experiment)
    metrics = {f"{metric}.{row['model']}": float(row[metric]) for row in board.to_dict("records")
               for metric in ("mae", "hit_rate") if pd.notna(row[metric])}
    metrics.update({f"champion_mae.{row['model']}": row["mae"] for row in champions() if row["mae"] is not None})
    client = MlflowClient()
    client.log_batch(run_id, metrics=[Metric(key, value, int(time.time() * 1000), 0)
                                      for key, value in metrics.items()])
    client.log_text(run_id, to_markdown(board), "leaderboard.md")
    if not board.empty:
        client.log_figure(run_id, mae_chart(board), "pipeline/mae_by_model.png")
    if tracking.wandb.enabled:
        mirror_tree(run_id, tracking.wandb)
    return metrics


def mae_chart(board: pd.DataFrame) -> Figure:
    """Test MAE of every model, best first: the one chart that compares the families."""
    ordered = board.dropna(subset=["mae"]).sort_values("mae", ascending=False)
    figure = Figure(figsize=(8, 0.4 * len(ordered) + 1.2), layout="constrained")
    axes = figure.add_subplot()
    axes.barh(ordered["model"], ordered["mae"], color="#1f77b4")
    for y, value in enumerate(ordered["mae"]):
        axes.text(value, y, f" ${value:,.2f}", va="center", fontsize=8)
    axes.set_xlabel("test MAE (USD)")
    axes.set_title("MAE by model, this pipeline run")
    return figure


def experiment_link(ui_url: str, experiment_id: str) -> str:
    """The experiment in the MLflow UI's model-training view: MLflow 3 opens every experiment in the view
    its sidebar switch last chose (GenAI at first), whatever the experiment's kind tag says."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def tracking_uri_shown() -> str:
    """The store the pipeline recorded into, as ``mlflow ui --backend-store-uri`` takes it."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def champion_identity(name: str, client: MlflowClient | None = None) -> str | None:
    """``name/version/run_id`` of the current champion, or None. The run id tells two stores apart
    whose version numbers happen to match (a wiped and rebuilt ``mlruns/``)."""
    client = client or MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # noqa: BLE001 - no such model or alias: no champion
        return None
    return f"{name}/{version.version}/{version.run_id}"


def store_identity() -> str:
    """Which MLflow store this is: its URI and when it was created (its Default experiment's creation time).
    A fresh store at the same path (a new clone, a wiped ``mlruns/``) must not reuse what the old one cached."""
    import mlflow

    return f"{mlflow.get_tracking_uri()}#{MlflowClient().get_experiment('0').creation_time}"


def _fingerprint(parts: dict[str, Any]) -> str:
    parts = {**parts, "store": store_identity()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _split_digests(data_dir: Path) -> dict[str, str | None]:
    return {split: file_digest(path) if (path := data_dir / f"{split}.parquet").exists() else None
            for split in ("train", "val", "test")}


def frontier_skip_reason(path: Path | None) -> str | None:
    """Why the pipeline's frontier step does not run (no config, or its key variable unset), or None."""
    if path is None:
        return "no frontier config (agents.frontier.config is null)"
    try:
        resolve_api_key(load_frontier_config(path))
    except PricerError as error:
        return str(error).splitlines()[0]
    return None


def frontier_fingerprint(path: Path | None, data_dir: Path) -> str:
    """What the frontier step reads: its config file, whether it can run, and the curated splits."""
    return _fingerprint({"config": file_digest(path) if path is not None and path.exists() else None,
                         "skip": frontier_skip_reason(path), "splits": _split_digests(data_dir)})


def ensemble_fingerprint(settings: EnsembleConfig) -> str:
    """What the ensemble step reads: its settings, each member's champion and the curated splits."""
    return _fingerprint({
        "ensemble": settings.model_dump(mode="json"),
        "members": {member: champion_identity(name) for member, name in settings.members.items()},
        "splits": _split_digests(Path(settings.data_dir)),
    })


def champions(names: tuple[str, ...] = REGISTERED_MODELS) -> list[dict[str, Any]]:
    """One row per registered model: its champion version, the run behind it and its test MAE."""
    client = MlflowClient()
    rows = []
    for name in names:
        identity = champion_identity(name, client)
        if identity is None:
            rows.append({"model": name, "champion": "none registered", "mae": None, "run_id": None})
            continue
        _, version, run_id = identity.split("/")
        mae = client.get_model_version(name, version).tags.get(TAG_MAE)
        rows.append({"model": name, "champion": f"v{version}", "mae": float(mae) if mae else None,
                     "run_id": run_id})
    return rows
