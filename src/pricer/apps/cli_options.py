"""What the CLI's command modules share: the error console and the options several commands take."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console(stderr=True)

ParamsOption = Annotated[Path, typer.Option("--params", help="The parameters file DVC tracks.")]
DataOption = Annotated[
    Optional[list[Path]],  # noqa: UP045 - typer needs Optional here
    typer.Option("--data", help="A .jsonl/.jsonl.gz file or folder in the Amazon 2023 layout (repeatable)."),
]
