"""Prefect flow: scheduled retraining, only when new data drifted or piled up enough to matter."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.curate import repro_stage
from flows.pipeline import pipeline_flow
from pricer.config import load_params
from pricer.retrain import RetrainConfig, judge, load_retrain_config, mark_seen, new_files
from pricer.tracking.runs import stage_run


@task
def find_new_files(inbox_config: RetrainConfig) -> list[str]:
    return [str(path) for path in new_files(inbox_config)]


@task
def judge_drift(files: list[str], root: str, params_path: str, inbox_config: RetrainConfig) -> dict:
    from pricer.embeddings import get_embedder

    params = load_params(Path(root) / params_path)
    train = pd.read_parquet(Path(root) / params.curate.output_dir / "train.parquet", columns=["price", "category", "text"])
    report, counts = judge([Path(f) for f in files], train, params.curate, inbox_config.thresholds,
                           embed=get_embedder().embed)
    decision = {**report.as_dict(), **counts, "files": files}
    with stage_run("retrain-check", tags={"pricer.retrain": str(report.retrain).lower(),
                                          "pricer.retrain.reasons": "; ".join(report.reasons) or "none"}):
        mlflow.log_metrics({k: float(v) for k, v in decision.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
    lines = [f"**Retrain: {'yes' if report.retrain else 'no'}**", "", "| measure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in decision.items() if k not in ("files", "reasons")]
    lines += ["", "Reasons: " + ("; ".join(report.reasons) or "none crossed its threshold")]
    create_markdown_artifact(key="retrain-decision", markdown="\n".join(lines), description="Drift check")
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
