"""Weights & Biases beside MLflow: a finished stage's MLflow runs copied to W&B, one W&B run per MLflow run.

MLflow stays the record (the registry and the gate read it); W&B gets the same params (as config), every
metric's history, and the evaluation charts (the PNG artifacts), grouped by the pipeline run, or by the
stage run outside one. Mirroring after the stage, not while it runs, keeps every stage's code free of a
second tracker and makes a mirror a function of what MLflow holds: the same run mirrored twice resumes
the same W&B run.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pricer.core.wandb_settings import WandbSettings
from pricer.tracking.lineage import MODEL_TAG, descendants

log = logging.getLogger(__name__)


def _pngs(client: MlflowClient, run_id: str, path: str | None = None) -> Iterator[str]:
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            yield from _pngs(client, run_id, item.path)
        elif item.path.endswith(".png"):
            yield item.path


def mirror_run(client: MlflowClient, run: Run, settings: WandbSettings, group: str) -> None:
    import wandb

    tags = run.data.tags
    settings.dir.mkdir(parents=True, exist_ok=True)
    mirrored = wandb.init(
        project=settings.project, entity=settings.entity, mode=settings.mode, dir=str(settings.dir),
        id=run.info.run_id, resume="allow", name=run.info.run_name, group=group,
        job_type=tags.get("pricer.stage") or ("model" if MODEL_TAG in tags else "run"),
        config=dict(run.data.params), tags=[tags[MODEL_TAG]] if MODEL_TAG in tags else None,
        notes=f"MLflow run {run.info.run_id}", reinit="finish_previous")
    try:
        points = sorted((metric.step, metric.timestamp, key, metric.value) for key in run.data.metrics
                        for metric in client.get_metric_history(run.info.run_id, key))
        for step, _, key, value in points:
            mirrored.log({key: value}, step=step)
        mirrored.summary.update(dict(run.data.metrics))
        with tempfile.TemporaryDirectory() as scratch:
            for path in _pngs(client, run.info.run_id):
                local = client.download_artifacts(run.info.run_id, path, scratch)
                mirrored.log({path.removesuffix(".png"): wandb.Image(local)}, commit=False)
    finally:
        mirrored.finish()


def mirror_tree(run_id: str, settings: WandbSettings, client: MlflowClient | None = None) -> int:
    """Mirror ``run_id`` and every run nested under it; returns how many runs went to W&B."""
    client = client or MlflowClient()
    root = client.get_run(run_id)
    group = root.data.tags.get("mlflow.parentRunId") or run_id
    runs = [root, *descendants(client, root)]
    for run in runs:
        mirror_run(client, run, settings, group)
    import wandb

    wandb.teardown()  # W&B's service writes behind: done means on disk (or uploaded) before we go on
    log.info("mirrored %d MLflow run(s) to W&B project %s (%s, %s)", len(runs), settings.project, settings.mode,
             Path(settings.dir))
    return len(runs)

