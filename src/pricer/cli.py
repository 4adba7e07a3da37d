"""The ``pricer`` command line: every stage, the same functions DVC and Prefect call."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from pricer.config import ConfigError

app = typer.Typer(help="Pricer: estimate product prices from text, track every run, hunt deals.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True)

ParamsOption = Annotated[Path, typer.Option("--params", help="The parameters file DVC tracks.")]
DataOption = Annotated[
    Optional[list[Path]],  # noqa: UP045 - typer needs Optional here
    typer.Option("--data", help="A .jsonl/.jsonl.gz file or folder in the Amazon 2023 layout (repeatable)."),
]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {error}")
    raise typer.Exit(2)


@app.command()
def curate(
    params: ParamsOption = Path("params.yaml"),
    source: Annotated[Optional[str], typer.Option(help="Override the source kind: demo, jsonl or hf.")] = None,  # noqa: UP045
    data: DataOption = None,
) -> None:
    """Parse, clean, filter, truncate, balance and split products into data/curated/."""
    from pricer.stages import run_curate

    try:
        summary = run_curate(params, data=data, source=source)
    except (ConfigError, OSError) as error:
        _fail(error)
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


@app.command("show-params")
def show_params(params: ParamsOption = Path("params.yaml")) -> None:
    """Validate params.yaml and print it with every default filled in."""
    from pricer.config import load_params

    try:
        print(json.dumps(load_params(params).model_dump(mode="json"), indent=2))
    except ConfigError as error:
        _fail(error)


if __name__ == "__main__":
    app()
