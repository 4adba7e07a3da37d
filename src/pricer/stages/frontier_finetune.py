"""The API fine-tuning stage: data, budget, a resumable job and its MLflow run, then the tuned model gated.

The chain, each step a plain function that a Prefect task wraps (``flows/frontier.py``):
``prepare_data`` -> ``check_budget`` -> ``submit_job`` -> ``track_job`` -> ``evaluate_fine_tuned``,
which scores the fine-tuned model id through the frontier stage (``run_frontier_eval``) and so through
the one stage protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from pricer.frontier.config import FrontierConfig, load_frontier_config
from pricer.frontier.finetune import (
    CostEstimate,
    JobFailed,
    PreparedData,
    check_budget,
    finetune_settings,
    prepare_data,
)
from pricer.frontier.jobs import JobState, fine_tuned_config, submit_job, wait_for_job
from pricer.stages.frontier import endpoint_config, run_frontier_eval
from pricer.tracking.runs import stage_run


def track_job(
    config: FrontierConfig,
    state: JobState,
    *,
    estimate: CostEstimate | None = None,
    validation: dict[str, Any] | None = None,
    experiment: str = "pricer",
    tracking_uri: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[JobState, str]:
    """Wait for the job inside its own MLflow run (params, estimate, events, outcome); returns the run id."""
    ft = finetune_settings(config)
    params = {"finetune": ft.model_dump(mode="json"), "model": config.model,
              "endpoint": config.base_url or "openai"}
    tags = {"pricer.ft.job_id": state.job_id or "", "pricer.ft.train_sha256": state.train_sha256,
            "pricer.ft.resumed": str(state.resumed).lower()}
    with stage_run("frontier-finetune", params, run_name=f"ft-{config.name}", experiment=experiment,
                   tracking_uri=tracking_uri, tags=tags, resume_run_id=state.run_id) as run:
        run_id = state.run_id = run.info.run_id
        state.save(finetune_settings(config).state_dir)
        client = MlflowClient()
        if estimate is not None:
            client.log_metric(run_id, "ft.estimated_cost_usd", estimate.usd)
            client.log_metric(run_id, "ft.estimated_training_tokens", estimate.billed_tokens)
        if validation is not None:
            client.log_dict(run_id, validation, "finetune/validation.json")
        state = wait_for_job(config, state, run_id=run_id, sleep=sleep)
    return state, run_id


def run_finetune(
    config: FrontierConfig,
    *,
    data_dir: Path | None = None,
    reports_dir: Path | None = None,
    evaluate: bool = True,
    retry_failed: bool = False,
    experiment: str = "pricer",
    tracking_uri: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The whole chain in one process (the CLI); the flow runs the same steps as separate tasks."""
    prepared = prepare_data(config, data_dir)
    estimate, validation = check_budget(config, prepared)
    state = submit_job(config, prepared, retry_failed=retry_failed)
    state, run_id = track_job(config, state, estimate=estimate, validation=validation, experiment=experiment,
                              tracking_uri=tracking_uri, sleep=sleep)
    summary: dict[str, Any] = {"job_id": state.job_id, "status": state.status, "resumed": state.resumed,
                               "fine_tuned_model": state.fine_tuned_model, "estimated_cost_usd": estimate.usd,
                               "finetune_run_id": run_id, "evaluation": None}
    if state.status != "succeeded":
        raise JobFailed(f"job {state.job_id} ended {state.status}: {state.error or 'no reason given'}")
    if evaluate:
        summary["evaluation"] = evaluate_fine_tuned(config, state, data_dir=data_dir, reports_dir=reports_dir,
                                                    experiment=experiment, tracking_uri=tracking_uri)
    return summary


def evaluate_fine_tuned(
    config: FrontierConfig,
    state: JobState,
    *,
    data_dir: Path | None = None,
    reports_dir: Path | None = None,
    experiment: str = "pricer",
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Score the fine-tuned model id on the test split and register it through the gate."""
    ft = finetune_settings(config)
    return run_frontier_eval(fine_tuned_config(config, state), data_dir=data_dir, reports_dir=reports_dir,
                             experiment=experiment, tracking_uri=tracking_uri,
                             tags={"pricer.ft.job_id": state.job_id or "",
                                   "pricer.ft.base_model": ft.base_model})


# --- the same chain, step by step, in plain values: what the Prefect tasks of flows/frontier.py run ---


def prepare_step(config_path: str, data_dir: str | None = None) -> dict[str, Any]:
    return asdict(prepare_data(load_frontier_config(config_path), Path(data_dir) if data_dir else None))


def budget_step(config_path: str, prepared: dict[str, Any]) -> dict[str, Any]:
    estimate, validation = check_budget(load_frontier_config(config_path), PreparedData(**prepared))
    return {"estimate": asdict(estimate), "validation": validation}


def submit_step(config_path: str, prepared: dict[str, Any], retry_failed: bool = False) -> dict[str, Any]:
    return asdict(submit_job(load_frontier_config(config_path), PreparedData(**prepared), retry_failed=retry_failed))


def wait_step(config_path: str, state: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
    config = load_frontier_config(config_path)
    # Reload the saved state: a retried task continues from the last poll, not from submission.
    saved = JobState.load(finetune_settings(config).state_dir, state["key"])
    job = saved or JobState(**_job_fields(state))
    job.resumed = state.get("resumed", False)
    done, run_id = track_job(config, job, estimate=CostEstimate(**checked["estimate"]),
                             validation=checked["validation"])
    return {**asdict(done), "finetune_run_id": run_id}


def evaluate_step(config_path: str, state: dict[str, Any], data_dir: str | None = None,
                  limit: int | None = None) -> dict[str, Any]:
    return evaluate_fine_tuned(endpoint_config(config_path, limit), JobState(**_job_fields(state)),
                               data_dir=Path(data_dir) if data_dir else None)


def _job_fields(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if key in JobState.__dataclass_fields__}
