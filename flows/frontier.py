"""Prefect flow: frontier models, zero-shot and API fine-tuned, evaluated and gated like the rest.

Two task chains; the logic lives in ``pricer.llm.frontier_eval`` / ``frontier_finetune``:

- zero-shot: price the test split through the endpoint (with retrieval when the config asks),
  register ``pricer-frontier`` and run the promotion gate;
- fine-tune: write and validate the JSONL, check the budget (refusal is final, no retries),
  upload + create the job (resumable: the job id is kept in a state file keyed by the
  training file's hash, so a retried task or a re-run flow finds it), poll until it ends,
  then evaluate and register the fine-tuned model id.

Tasks pass paths, keys and plain dicts, never clients or frames; the API key is read from the
environment variable the config names, in each task, and never becomes a task argument.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from pricer.llm.frontier import FrontierConfig, load_frontier_config
from pricer.llm.frontier_eval import run_frontier_eval
from pricer.llm.frontier_finetune import (
    CostEstimate,
    JobState,
    PreparedData,
    check_budget,
    evaluate_fine_tuned,
    prepare_data,
    submit_job,
    track_job,
)


def _config(config_path: str, limit: int | None) -> FrontierConfig:
    config = load_frontier_config(config_path)
    if limit is not None:
        evaluation = config.evaluation.model_copy(update={"limit": limit})
        config = config.model_copy(update={"evaluation": evaluation})
    return config


@task(retries=1, retry_delay_seconds=30)
def zero_shot(config_path: str, data_dir: str | None = None, limit: int | None = None) -> dict[str, Any]:
    # A retry re-sends only what is not in the response cache: nothing is paid twice.
    return run_frontier_eval(_config(config_path, limit), data_dir=Path(data_dir) if data_dir else None)


@task
def prepare_finetune(config_path: str, data_dir: str | None = None) -> dict[str, Any]:
    return asdict(prepare_data(load_frontier_config(config_path), Path(data_dir) if data_dir else None))


@task  # no retries: over budget or invalid data stays so
def validate_and_budget(config_path: str, prepared: dict[str, Any]) -> dict[str, Any]:
    estimate, validation = check_budget(load_frontier_config(config_path), PreparedData(**prepared))
    return {"estimate": asdict(estimate), "validation": validation}


@task(retries=3, retry_delay_seconds=20)
def submit_finetune(config_path: str, prepared: dict[str, Any], retry_failed: bool = False) -> dict[str, Any]:
    config = load_frontier_config(config_path)
    return asdict(submit_job(config, PreparedData(**prepared), retry_failed=retry_failed))


@task(retries=3, retry_delay_seconds=60)
def wait_finetune(config_path: str, state: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
    config = load_frontier_config(config_path)
    # Reload the saved state: a retried task continues from the last poll, not from submission.
    saved = JobState.load(config.finetune.state_dir, state["key"]) if config.finetune else None
    job = saved or JobState(**state)
    job.resumed = state.get("resumed", False)
    done, run_id = track_job(config, job, estimate=CostEstimate(**checked["estimate"]),
                             validation=checked["validation"])
    return {**asdict(done), "finetune_run_id": run_id}


@task
def evaluate_finetuned(config_path: str, state: dict[str, Any], data_dir: str | None = None,
                       limit: int | None = None) -> dict[str, Any]:
    fields = {key: value for key, value in state.items() if key in JobState.__dataclass_fields__}
    return evaluate_fine_tuned(_config(config_path, limit), JobState(**fields),
                               data_dir=Path(data_dir) if data_dir else None)


@task
def publish(summaries: list[dict[str, Any]]) -> str:
    rows = ["| model | MAE | hit rate | unparseable | cost (USD) | calls / cache hits | registry |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for summary in summaries:
        metrics, usage, registered = summary["metrics"], summary["usage"], summary.get("registered")
        registry = "-"
        if registered:
            registry = f"{registered['name']} v{registered['version']}: {registered['decision']}"
        rows.append(
            f"| {summary['name']} ({summary['model']}) | {metrics['mae']:.2f} | {metrics['hit_rate']:.1%} "
            f"| {metrics['unparseable']} | {usage.get('frontier.cost_usd', 0.0):.4f} "
            f"| {usage.get('frontier.calls', 0):.0f} / {usage.get('frontier.cache_hits', 0):.0f} "
            f"| {registry} |"
        )
    markdown = "\n".join(rows)
    create_markdown_artifact(key="frontier-models", markdown=markdown,
                             description="Frontier models on the test split, with what they cost")
    return markdown


@flow(name="frontier", log_prints=True)
def frontier_flow(
    config: str = "configs/frontier/gpt-4o-mini.yaml",
    zero_shot_eval: bool = True,
    finetune: bool = False,
    data_dir: str | None = None,
    limit: int | None = None,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Zero-shot evaluation and/or an API fine-tuning job for one endpoint config."""
    results: dict[str, Any] = {}
    summaries = []
    if zero_shot_eval:
        results["zero_shot"] = zero_shot(config, data_dir, limit)
        summaries.append(results["zero_shot"])
    if finetune:
        prepared = prepare_finetune(config, data_dir)
        checked = validate_and_budget(config, prepared)
        state = submit_finetune(config, prepared, retry_failed)
        done = wait_finetune(config, state, checked)
        results["finetune"] = done
        if done["status"] == "succeeded":
            results["fine_tuned"] = evaluate_finetuned(config, done, data_dir, limit)
            summaries.append(results["fine_tuned"])
        else:
            print(f"fine-tuning job {done['job_id']} ended {done['status']}: {done.get('error')}")
    if summaries:
        publish(summaries)
    return results


if __name__ == "__main__":
    frontier_flow()
