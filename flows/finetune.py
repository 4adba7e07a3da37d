"""Prefect flow: QLoRA/LoRA fine-tuning of an open model, its evaluation and its promotion.

Thin: each task is one step function of ``pricer.llm.stage`` (the same ones ``pricer finetune``
and DVC run), and tasks hand each other paths, run ids, model URIs and metric dicts, never
models. The MLflow stage run is opened here and its id passed down explicitly (tasks may run
in other threads, where MLflow's active run is not visible). Training resumes from its last
checkpoint, so a retried or re-run flow continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from pricer.stages import specialist as stage


@task(retries=1, retry_delay_seconds=10)
def train_adapter(config: str, root: str, run_id: str) -> dict:
    """Train (or resume) the adapter; returns the training summary with ``adapter_dir``."""
    return stage.train_step(config, run_id=run_id, root=root, resume=True)


@task
def evaluate(config: str, root: str, which: str, parent_run_id: str, adapter_dir: str | None = None) -> dict:
    """Score the base or the fine-tuned model on the test split; returns metrics (and model URI)."""
    return stage.evaluate_step(config, which=which, adapter_dir=adapter_dir, parent_run_id=parent_run_id,
                               root=root)


@task(retries=2, retry_delay_seconds=5)
def register_and_gate(config: str, root: str, model_uri: str, metrics: dict, run_id: str) -> dict:
    """Register the adapter as pricer-specialist and run the promotion gate (idempotent)."""
    return stage.register_step(config, model_uri=model_uri, metrics=metrics, run_id=run_id, root=root)


@task
def publish_report(summary: dict) -> str:
    rows = ["| metric | base | fine-tuned |", "| --- | --- | --- |"]
    for key in ("mae", "rmsle", "hit_rate", "r2", "unparseable", "n"):
        rows.append(f"| {key} | {_fmt(summary['base'].get(key))} | {_fmt(summary['finetuned'].get(key))} |")
    train = summary["train"]
    promotion = summary["promotion"]
    markdown = "\n".join([
        f"## Fine-tuning {summary['base_model']}",
        f"Steps {train['global_step']}, train loss {_fmt(train['train_loss_first'])} -> "
        f"{_fmt(train['train_loss_last'])}, {_fmt(train['tokens_per_s'])} tokens/s"
        + (f", resumed from `{Path(train['resumed_from']).name}`" if train.get("resumed_from") else ""),
        "",
        *rows,
        "",
        f"**{promotion['name']} v{promotion['version']}: {promotion['decision']}** ({promotion['reason']})",
    ])
    create_markdown_artifact(key="finetune-report", markdown=markdown,
                             description="Base vs fine-tuned open model on the test split")
    return markdown


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.3f}" if isinstance(value, float) else str(value)


@flow(name="finetune")  # no log_prints: datasets/dill print bytecode that Prefect would log
def finetune_flow(config: str = "configs/finetune/tiny.yaml", root: str = ".") -> dict:
    """Fine-tune the configured open model, score base and fine-tuned, register and gate it."""
    root_path = Path(root).resolve()
    resolved = stage.resolve_config(config, root=root_path)
    with stage.finetune_run(resolved, config, root_path, runner="prefect") as run:
        run_id = run.info.run_id
        trained = train_adapter(config, str(root_path), run_id)
        base = evaluate(config, str(root_path), "base", run_id)
        tuned = evaluate(config, str(root_path), "finetuned", run_id, trained["adapter_dir"])
        promotion = register_and_gate(config, str(root_path), tuned["model_uri"], tuned["metrics"], tuned["run_id"])
        summary = stage.write_summary(resolved, config, trained, base, tuned, promotion)
        stage.log_stage_result(run_id, summary)
    publish_report(summary)
    return summary


if __name__ == "__main__":
    finetune_flow()
