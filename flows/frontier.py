"""Prefect flow: frontier models, zero-shot and API fine-tuned, evaluated and gated like the rest.

Two task chains; the logic lives in ``pricer.stages.frontier`` / ``frontier_finetune``:

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

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from pricer.stages import frontier_finetune as steps
from pricer.stages.frontier import zero_shot_step


@task(retries=1, retry_delay_seconds=30)
def zero_shot(config_path: str, data_dir: str | None = None, limit: int | None = None) -> dict[str, Any]:
    return zero_shot_step(config_path, data_dir, limit)


@task
def prepare_finetune(config_path: str, data_dir: str | None = None) -> dict[str, Any]:
    return steps.prepare_step(config_path, data_dir)


@task  # no retries: over budget or invalid data stays so
def validate_and_budget(config_path: str, prepared: dict[str, Any]) -> dict[str, Any]:
    return steps.budget_step(config_path, prepared)


@task(retries=3, retry_delay_seconds=20)
def submit_finetune(config_path: str, prepared: dict[str, Any], retry_failed: bool = False) -> dict[str, Any]:
    return steps.submit_step(config_path, prepared, retry_failed)


@task(retries=3, retry_delay_seconds=60)
def wait_finetune(config_path: str, state: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
    return steps.wait_step(config_path, state, checked)


@task
def evaluate_finetuned(config_path: str, state: dict[str, Any], data_dir: str | None = None,
                       limit: int | None = None) -> dict[str, Any]:
    return steps.evaluate_step(config_path, state, data_dir, limit)


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
