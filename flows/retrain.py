"""Prefect flow: scheduled retraining, only when new data drifted or piled up enough to matter.

Served by ``python -m flows.deployments`` on ``schedule.retrain_cron`` of ``configs/agents.yaml``. Each run
judges the inbox's new files and the live deals (a report artifact and a ``retrain-check`` MLflow run);
a retrain accepts the files into ``curate.accepted_dir``, a declared DVC input of curation, and runs the
configured pipeline, whose DVC curate stage then re-runs because its input changed
(``pricer.stages.retrain``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.deployments import load_flow
from pricer.agents.config import load_agents_config
from pricer.agents.memory import seen_estimates
from pricer.stages.params import load_params
from pricer.stages.retrain import (
    RetrainConfig,
    accept_files,
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
def live_estimates(root: str, agents_config: str, window_days: float) -> pd.DataFrame:
    memory = load_agents_config(Path(root) / agents_config).memory.path
    return seen_estimates(Path(root) / memory, since=time.time() - window_days * 86400)


@task
def judge_drift(files: list[str], root: str, params_path: str, inbox_config: RetrainConfig,
                live: pd.DataFrame) -> dict:
    return judge_inbox([Path(f) for f in files], Path(root), load_params(Path(root) / params_path), inbox_config,
                       live)


@task
def accept(files: list[str], root: str, params_path: str, run_id: str) -> list[dict]:
    return accept_files([Path(f) for f in files], Path(root), load_params(Path(root) / params_path).curate, run_id)


@task
def publish_decision(decision: dict) -> None:
    create_markdown_artifact(key="retrain-decision", markdown=decision_markdown(decision), description="Drift check")


@flow(name="retrain", log_prints=True)
def retrain_flow(root: str = ".", params_path: str = "params.yaml", config: str = "configs/retrain.yaml",
                 agents_config: str = "configs/agents.yaml") -> dict:
    """Judge the inbox's new files and the live deals; retrain when drift or volume says so."""
    root_path = Path(root).resolve()
    inbox_config = load_retrain_config(root_path / config, root_path)
    files = find_new_files(inbox_config)
    live = live_estimates(str(root_path), agents_config, inbox_config.live_window_days)
    decision = judge_drift(files, str(root_path), params_path, inbox_config, live)
    decision["accepted"] = []
    if decision["retrain"]:
        decision["accepted"] = accept(files, str(root_path), params_path, decision["run_id"])
        load_flow(inbox_config.pipeline)(str(root_path), params_path)
        mark_seen(inbox_config, [Path(f) for f in files])  # after the retrain: a kill before it judges them again
    publish_decision(decision)
    return decision


if __name__ == "__main__":
    retrain_flow()
