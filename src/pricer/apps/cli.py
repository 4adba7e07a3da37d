"""The ``pricer`` command line: every stage, the same functions DVC and Prefect call.

One error handler for every command: a ``PricerError`` (a bad file, setting, key or model name) is
one red line on stderr and exit code 2, with the traceback only under ``-v``; any other exception is
a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from pricer.apps.cli_agents import commands as agent_commands
from pricer.apps.cli_options import DataOption, ParamsOption, console
from pricer.core.errors import ConfigError, PricerError


class _Commands(TyperGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PricerError as error:
            if ctx.meta.get("pricer.verbose"):
                console.print(traceback.format_exc(), markup=False, highlight=False)
            lines = str(error).splitlines() or [type(error).__name__]
            # Soft wrap: one error is one line, however narrow the terminal; escaped: "[...]" in a message
            # is text, not markup.
            console.print(f"[red]error:[/red] {escape(lines[0])}" + (" (-v shows more)" if len(lines) > 1 else ""),
                          highlight=False, soft_wrap=True)
            for line in lines[1:] if ctx.meta.get("pricer.verbose") or len(lines) <= 12 else lines[1:12]:
                console.print(f"  {line.strip()}", markup=False, highlight=False)
            raise typer.Exit(2) from None


app = typer.Typer(help="Pricer: estimate product prices from text, track every run, hunt deals.",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=_Commands)


@app.callback()
def main(ctx: typer.Context,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging, and tracebacks of errors.")]
         = False) -> None:
    ctx.meta["pricer.verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def curate(
    params: ParamsOption = Path("params.yaml"),
    source: Annotated[Optional[str], typer.Option(help="Override the source kind: demo, jsonl or hf.")] = None,  # noqa: UP045
    data: DataOption = None,
) -> None:
    """Parse, clean, filter, truncate, balance and split products into data/curated/."""
    from pricer.stages.curate import run_curate

    summary = run_curate(params, data=data, source=source)
    table = Table(title="curation")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in ("read", "kept", "rejected"):
        table.add_row(key, f"{summary[key]:,}")
    for reason, count in summary["rejected_by_reason"].items():
        table.add_row(f"  rejected: {reason}", f"{count:,}")
    for split, count in summary["splits"].items():
        table.add_row(f"  split: {split}", f"{count:,}")
    Console().print(table)


@app.command()
def baselines(
    params: ParamsOption = Path("params.yaml"),
    data: Annotated[Optional[Path], typer.Option("--data-dir", help="Curated splits (default: params).")] = None,  # noqa: UP045
    only: Annotated[Optional[list[str]], typer.Option(help="Train only these model names.")] = None,  # noqa: UP045
) -> None:
    """Train the traditional models, log each to MLflow, register the best as pricer-regressor."""
    from pricer.stages.baselines import run_baselines

    summary = run_baselines(params, data_dir=data, only=only)
    table = Table(title="baselines (test split)")
    for column in ("model", "val MAE", "test MAE", "hit rate", "fit s", "predict items/s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, row in sorted(summary["models"].items(), key=lambda item: item[1]["test"]["mae"]):
        table.add_row(name, f"{row['val_mae']:.2f}", f"{row['test']['mae']:.2f}", f"{row['test']['hit_rate']:.1%}",
                      f"{row['fit_seconds']:.1f}", f"{row['predict_items_per_s']:,.0f}")
    Console().print(table)
    promotion = summary["promotion"]
    console.print(f"{promotion['name']} v{promotion['version']}: {promotion['decision']} ({promotion['reason']})")


@app.command()
def leaderboard(
    output: Annotated[Path, typer.Option(help="Where to write the markdown leaderboard.")] = Path(
        "reports/leaderboard.md"),
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "pricer",
) -> None:
    """Leaderboard of every evaluated model (latest run per model, from MLflow)."""
    from pricer.tracking.leaderboard import leaderboard as board_of
    from pricer.tracking.leaderboard import to_markdown
    from pricer.tracking.runs import configure

    configure(experiment=experiment)
    markdown = to_markdown(board_of(experiment))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown + "\n", encoding="utf-8")
    print(markdown)


@app.command()
def compare(
    runs: Annotated[Optional[list[str]], typer.Option("--runs", help="Two pipeline run ids, older first.")] = None,  # noqa: UP045
    last: Annotated[int, typer.Option(help="Without --runs: the last N finished pipeline runs (the first and last).")] = 2,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "pricer",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """What changed between two pipeline runs (params, data, code) and what came of it (MAE deltas, gate)."""
    from mlflow.tracking import MlflowClient

    from pricer.apps.comparing import print_comparison
    from pricer.tracking.comparison import compare_runs, pipeline_runs
    from pricer.tracking.runs import configure

    configure(experiment=experiment)
    client = MlflowClient()
    if runs is not None and len(runs) != 2:
        raise ConfigError(f"--runs takes two pipeline run ids (--runs A --runs B), got {len(runs)}")
    ids = runs or pipeline_runs(client, experiment, max(2, last))
    comparison = compare_runs(client, ids[0], ids[-1])
    if as_json:
        print(json.dumps(comparison.as_dict()))
        return
    print_comparison(comparison, Console())


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="name@alias, models:/ URI or runs:/ URI.")],
    data: Annotated[Path, typer.Option(help="A .jsonl or .jsonl.gz file of products with prices.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Score a model on a product file cleaned by the curation rules (no balancing, no split)."""
    from pricer.stages.params import load_params
    from pricer.stages.scoring import score_file
    from pricer.tracking.runs import configure

    loaded = load_params(params)
    configure(loaded.tracking.tracking_uri, loaded.tracking.experiment)
    result = score_file(model, data, loaded.curate)
    if as_json:
        print(json.dumps({key: value for key, value in result.items() if key != "rejected_by_reason"}))
        return
    table = Table(title=f"{model} on {data.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


@app.command()
def price(
    text: Annotated[str, typer.Argument(help="The product text: title, description, details.")],
    model: Annotated[str, typer.Option(help="name@alias or a models:/ URI.")] = "pricer-regressor@champion",
) -> None:
    """Price one product text with a registered model (the champion by default)."""
    import pandas as pd

    from pricer.stages.scoring import load_registered
    from pricer.tracking.runs import configure

    configure()
    print(f"${float(load_registered(model).predict(pd.DataFrame({'text': [text]}))[0]):,.2f}")


FrontierConfigOption = Annotated[Path, typer.Option("--config", help="An endpoint config under configs/frontier/.")]


def _frontier_config(path: Path, k_neighbours: int | None = None):
    from pricer.core.config import validate
    from pricer.frontier.config import FrontierConfig, load_frontier_config

    config = load_frontier_config(path)
    if k_neighbours is not None:  # re-validated, so a bad value fails like a bad file
        config = validate(FrontierConfig, {**config.safe_dict(), "k_neighbours": k_neighbours}, str(path))
    return config


def _print_frontier_summary(summary: dict) -> None:
    metrics, usage = summary["metrics"], summary["usage"]
    table = Table(title=f"{summary['name']} ({summary['model']}) on {summary['n']} test items")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("mae", "rmsle", "hit_rate", "r2", "unparseable"):
        value = metrics[key]
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    for key in ("calls", "cache_hits", "retries", "input_tokens", "output_tokens", "cost_usd", "items_per_s"):
        value = usage.get(f"frontier.{key}")
        if value is not None:
            table.add_row(key, f"{value:.4f}" if key == "cost_usd" else f"{value:,.1f}")
    Console().print(table)
    if summary.get("registered"):
        reg = summary["registered"]
        console.print(f"{reg['name']} v{reg['version']}: {reg['decision']} ({reg['reason']})")


@app.command()
def frontier(
    config: FrontierConfigOption = Path("configs/frontier/gpt-4o-mini.yaml"),
    limit: Annotated[Optional[int], typer.Option(help="Test items to price (default: evaluation.limit).")] = None,  # noqa: UP045
    k_neighbours: Annotated[Optional[int], typer.Option("--k-neighbours", help="Similar priced training items in the prompt (0: none).")] = None,  # noqa: UP045
    no_register: Annotated[bool, typer.Option("--no-register", help="Evaluate only; leave the registry alone.")] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Zero-shot evaluation of an OpenAI-compatible endpoint; registers pricer-frontier through the gate."""
    from pricer.stages.frontier import run_frontier_eval
    from pricer.stages.params import load_params

    loaded = load_params(params)
    summary = run_frontier_eval(
        _frontier_config(config, k_neighbours), limit=limit if limit is not None else "config",
        register=False if no_register else None, experiment=loaded.tracking.experiment,
        tracking_uri=loaded.tracking.tracking_uri, wandb=loaded.tracking.wandb)
    _print_frontier_summary(summary)


@app.command("frontier-finetune")
def frontier_finetune(
    config: FrontierConfigOption = Path("configs/frontier/gpt-4o-mini.yaml"),
    no_evaluate: Annotated[bool, typer.Option("--no-evaluate", help="Stop once the job has succeeded.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Start a new job if this data's last one failed.")] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """API fine-tuning: validate the data, check the budget, run or resume the job, evaluate and register it."""
    from pricer.stages.frontier_finetune import run_finetune
    from pricer.stages.params import load_params

    loaded = load_params(params)
    summary = run_finetune(_frontier_config(config), evaluate=not no_evaluate, retry_failed=retry_failed,
                           experiment=loaded.tracking.experiment, tracking_uri=loaded.tracking.tracking_uri)
    resumed = " (resumed)" if summary["resumed"] else ""
    console.print(f"job {summary['job_id']}{resumed}: {summary['status']} -> {summary['fine_tuned_model']} "
                  f"(estimated ${summary['estimated_cost_usd']:.4f})")
    if summary["evaluation"]:
        _print_frontier_summary(summary["evaluation"])


@app.command()
def finetune(
    config: Annotated[Path, typer.Option("--config", help="A configs/finetune/*.yaml file.")] = Path(
        "configs/finetune/tiny.yaml"),
    data: Annotated[Optional[Path], typer.Option("--data-dir", help="Curated splits (default: the config's).")] = None,  # noqa: UP045
    resume: Annotated[bool, typer.Option("--resume/--no-resume",
                                         help="Continue from the last checkpoint of the same settings.")] = True,
) -> None:
    """LoRA/QLoRA fine-tune an open model, score base vs fine-tuned, register + gate pricer-specialist."""
    from pricer.stages.specialist import run_finetune

    summary = run_finetune(config, data_dir=data, resume=resume)
    if not summary:  # another rank of a multi-process launch: rank 0 reports
        return

    def number(value, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    table = Table(title=f"fine-tuning {summary['base_model']} (test split)")
    for column in ("model", "MAE", "RMSLE", "hit rate", "unparseable"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for label, key in (("base", "base"), ("fine-tuned", "finetuned")):
        row = summary[key]
        table.add_row(label, number(row.get("mae"), ",.2f"), number(row.get("rmsle"), ".3f"),
                      number(row.get("hit_rate"), ".1%"), f"{row.get('unparseable')} of {row.get('n')}")
    Console().print(table)
    train = summary["train"]
    console.print(f"{train['global_step']} steps, train loss {number(train['train_loss_first'], '.3f')} -> "
                  f"{number(train['train_loss_last'], '.3f')}, {number(train['tokens_per_s'], ',.0f')} tokens/s"
                  + (f", resumed from {train['resumed_from']}" if train.get("resumed_from") else ""))
    promotion = summary["promotion"]
    console.print(f"{promotion['name']} v{promotion['version']}: {promotion['decision']} ({promotion['reason']})")


@app.command("show-params")
def show_params(
    params: ParamsOption = Path("params.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the values alone, as one JSON object.")] = False,
) -> None:
    """Validate params.yaml and print every setting, defaults filled in, with what it means."""
    from pricer.core.config import commented_yaml
    from pricer.stages.params import load_params

    loaded = load_params(params)
    print(json.dumps(loaded.model_dump(mode="json"), indent=2) if as_json else "\n".join(commented_yaml(loaded)))


app.registered_commands.extend(agent_commands.registered_commands)

if __name__ == "__main__":
    app()
