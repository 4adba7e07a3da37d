"""MLflow plumbing shared by every stage: where the store is, one run per stage, lineage tags.

The store defaults to SQLite under ``mlruns/`` (MLflow 3 refuses a bare file store and
the registry needs a database); ``MLFLOW_TRACKING_URI`` overrides it. A stage started
from the pipeline nests under the pipeline's run, found in ``PRICER_PARENT_RUN_ID``
so that DVC-launched subprocesses nest too. Runs are started with explicit ids
rather than relying on MLflow's per-thread active run, which Prefect's threads break.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import Field

from pricer.core.config import StrictModel
from pricer.core.secrets import REDACTED, is_secret_name, without_credentials
from pricer.core.wandb_settings import WandbSettings

PARENT_RUN_ENV = "PRICER_PARENT_RUN_ID"
DEFAULT_EXPERIMENT = "pricer"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # which view the MLflow UI opens the experiment in
MODEL_TRAINING_KIND = "custom_model_development"


class TrackingConfig(StrictModel):
    """Which MLflow store and experiment the stages record into."""

    experiment: str = Field(DEFAULT_EXPERIMENT, description="the MLflow experiment of the stages' runs")
    tracking_uri: str | None = Field(None, description=(
        "MLflow's tracking URI; MLFLOW_TRACKING_URI wins; null: SQLite under mlruns/"))
    wandb: WandbSettings = Field(default_factory=WandbSettings, description=(
        "Weights & Biases beside MLflow for every stage: params, metrics, evaluation charts"))


def default_tracking_uri(root: Path | None = None) -> str:
    root = (root or Path.cwd()) / "mlruns"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root.resolve() / 'mlflow.db'}"


def configure(tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at the project store and make sure the experiment exists; returns its id."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # a store from before: open it in the same view
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return found.experiment_id
    artifact_root = None
    if uri.startswith("sqlite:///"):
        # Artifacts beside the database, so that mlruns/ holds the whole record.
        artifact_root = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    # The model-training view (runs, params, metric charts), not the GenAI one MLflow infers from traces.
    return client.create_experiment(experiment, artifact_location=artifact_root,
                                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings -> flat MLflow params: every setting, by its dotted name. A value a secret-named key
    holds is logged as ``<redacted>``, and a password inside a URL is blanked."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple) and value and all(isinstance(item, Mapping) for item in value):
            # A list of settings blocks (the baselines' models): each block by its name (its kind, else its
            # position), so a reviewer compares ``baselines.models.xgboost.max_depth``, not one long string.
            labels = [str(item.get("name") or item.get("kind") or index) for index, item in enumerate(value)]
            if len(set(labels)) < len(labels):
                labels = [str(index) for index in range(len(value))]
            flat.update(flatten(dict(zip(labels, value, strict=True)), f"{name}."))
        else:
            flat[name] = REDACTED if is_secret_name(str(key)) else without_credentials(str(value))[:6000]
    return flat


def _resumable(run_id: str, experiment_id: str) -> bool:
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        return False  # another store, or a run deleted since
    return run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active"


@contextmanager
def stage_run(
    stage: str,
    params: Mapping[str, Any] | None = None,
    *,
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    resume_run_id: str | None = None,
    wandb: WandbSettings | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run for one execution of a stage, nested under the pipeline run when there is one.
    ``resume_run_id`` reopens the run a killed process left unfinished, so a resumed stage is one run.
    With ``wandb`` on, the run and the runs nested in it are mirrored to W&B when it ends."""
    experiment_id = configure(tracking_uri, experiment)
    if resume_run_id is not None and _resumable(resume_run_id, experiment_id):
        mlflow.set_experiment(experiment_id=experiment_id)  # MLflow refuses to resume under another active one
        with mlflow.start_run(run_id=resume_run_id, nested=mlflow.active_run() is not None) as run:
            mlflow.set_tags(dict(tags or {}))
            yield run
        return
    parent = os.environ.get(PARENT_RUN_ENV) or None
    all_tags = {"pricer.stage": stage}
    if commit := git_commit():
        all_tags["git.commit"] = commit
    all_tags.update(tags or {})
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name or stage,
        parent_run_id=parent,
        nested=mlflow.active_run() is not None,
        tags=all_tags,
    ) as run:
        if params:
            mlflow.log_params(flatten(params))
        yield run
    if wandb is not None and wandb.enabled and parent is None:  # a pipeline mirrors its whole tree at its end
        from pricer.tracking.mirror import mirror_tree  # wandb's import costs seconds: only when on

        mirror_tree(run.info.run_id, wandb)
