"""Prefect flow: scheduled retraining, only when new data drifted or piled up enough to matter."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.curate import repro_stage
from flows.pipeline import pipeline_flow
from pricer.stages.params import load_params
from pricer.stages.retrain import (
    RetrainConfig,
    decision_markdown,
    judge_inbox,
    load_retrain_config,
    mark_seen,
    new_files,
)


@task
def find_new_files(inbox_config: RetrainConfig) -> list[str]:
    return [str(path) for path in new_files(inbox_config)]


@task
def judge_drift(files: list[str], root: str, params_path: str, inbox_config: RetrainConfig) -> dict:
    params = load_params(Path(root) / params_path)
    decision = judge_inbox([Path(f) for f in files], Path(root), params.curate, inbox_config.thresholds)
    create_markdown_artifact(key="retrain-decision", markdown=decision_markdown(decision), description="Drift check")
    return decision


@flow(name="retrain", log_prints=True)
def retrain_flow(root: str = ".", params_path: str = "params.yaml", config: str = "configs/retrain.yaml") -> dict:
    """Judge the inbox's new files; retrain the whole pipeline when drift or volume says so."""
    root_path = Path(root).resolve()
    inbox_config = load_retrain_config(root_path / config)
    inbox_config = inbox_config.model_copy(update={"inbox": root_path / inbox_config.inbox,
                                                   "state_path": root_path / inbox_config.state_path})
    files = find_new_files(inbox_config)
    if not files:
        print("no new files in the inbox: nothing to judge")
        return {"retrain": False, "files": []}
    decision = judge_drift(files, str(root_path), params_path, inbox_config)
    if decision["retrain"]:
        # The inbox is part of the jsonl source; DVC cannot see a folder's new files, so curation is forced.
        repro_stage("curate", str(root_path), force=True)
        pipeline_flow(str(root_path), params_path)
        mark_seen(inbox_config, [Path(f) for f in files])
    return decision


if __name__ == "__main__":
    retrain_flow()
