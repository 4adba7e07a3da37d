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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from pricer.core.errors import PricerError
from pricer.core.files import file_digest
from pricer.frontier.config import load_frontier_config, resolve_api_key
from pricer.stages.ensemble import EnsembleConfig
from pricer.tracking.registry import CHAMPION, TAG_MAE
from pricer.tracking.runs import PARENT_RUN_ENV, TrackingConfig, configure, default_tracking_uri

REGISTERED_MODELS = ("pricer-regressor", "pricer-specialist", "pricer-frontier", "pricer-ensemble")


@contextmanager
def pipeline_run(tracking: TrackingConfig) -> Iterator[Any]:
    """The parent MLflow run of one pipeline execution: every stage run started inside, in this process or a
    subprocess DVC launches, nests under it (the run id travels in ``PRICER_PARENT_RUN_ID``)."""
    experiment_id = configure(tracking.tracking_uri, tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name="pipeline", tags={"pricer.stage": "pipeline"}) as run:
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        try:
            yield run
        finally:
            os.environ.pop(PARENT_RUN_ENV, None)


def log_leaderboard(run_id: str, markdown: str) -> None:
    MlflowClient().log_text(run_id, markdown, "leaderboard.md")


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
