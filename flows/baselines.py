"""Prefect flow: the baselines stage through DVC, then the leaderboard as a markdown artifact."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.curate import repro_stage
from pricer.stages import pipeline
from pricer.stages.params import load_params


@task
def publish_leaderboard(experiment: str) -> str:
    markdown = pipeline.leaderboard_markdown(experiment)
    create_markdown_artifact(key="leaderboard", markdown=markdown, description="Every evaluated model, by test MAE")
    return markdown


@flow(name="baselines", log_prints=True)
def baselines_flow(root: str = ".", params_path: str = "params.yaml") -> dict:
    """Train the traditional models (when their inputs changed) and publish the leaderboard."""
    root_path = Path(root).resolve()
    params = load_params(root_path / params_path)
    repro_stage("baselines", str(root_path))
    publish_leaderboard(params.tracking.experiment)
    return json.loads((root_path / params.baselines.summary_path).read_text())


if __name__ == "__main__":
    baselines_flow()
