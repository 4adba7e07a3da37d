"""The curation stage as the CLI, DVC and Prefect run it: one MLflow run around ``pricer.data.curate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from pricer.core.errors import ConfigError
from pricer.core.files import file_digest
from pricer.core.schema import SPLITS
from pricer.data.config import CurateConfig, DemoSourceConfig, JsonlSourceConfig
from pricer.data.curate import curate
from pricer.data.sources import check_source
from pricer.stages.sections import curate_sections
from pricer.tracking.runs import stage_run


def curate_config(config: CurateConfig, data: list[Path] | None = None, source: str | None = None) -> CurateConfig:
    """params.yaml's curation settings, with the source optionally replaced from the command line."""
    if data:
        return config.model_copy(update={"source": JsonlSourceConfig(paths=data)})
    if source is None or source == config.source.kind:
        return config
    if source == "demo":
        return config.model_copy(update={"source": DemoSourceConfig()})
    raise ConfigError(f"--source {source}: set curate.source (kind: {source}, with its settings) in params.yaml")


def output_digests(paths: list[Path]) -> dict[str, str]:
    """Each output's md5 by file name: what DVC records for it."""
    return {path.name: file_digest(path) for path in paths}


def run_curate(params_path: Path = Path("params.yaml"), data: list[Path] | None = None,
               source: str | None = None, root: Path | None = None) -> dict[str, Any]:
    settings, tracking = curate_sections(params_path)
    config = curate_config(settings, data, source)
    root = root or Path.cwd()
    check_source(config.source)  # a missing file fails here: no run opened, nothing written
    with stage_run("curate", {"curate": config.model_dump(mode="json")}, experiment=tracking.experiment,
                   tracking_uri=tracking.tracking_uri, wandb=tracking.wandb):
        summary = curate(config, root)
        log_curation(config, root, summary)
    return summary


def log_curation(config: CurateConfig, root: Path, summary: dict[str, Any]) -> None:
    """A curation's counts, output hashes, report and splits on the active MLflow run."""
    mlflow.log_metrics(
        {"read": summary["read"], "kept": summary["kept"], "rejected": summary["rejected"],
         "source_errors": len(summary["source_errors"]), "accepted_files": len(summary["accepted_files"]),
         **{f"rejected.{reason}": count for reason, count in summary["rejected_by_reason"].items()},
         **{f"split.{name}": count for name, count in summary["splits"].items()}}
    )
    mlflow.set_tags({f"dvc.md5.{name}": digest for name, digest in summary["outputs"].items()})
    mlflow.set_tags({f"pricer.accepted.{name}": digest for name, digest in summary["accepted_files"].items()})
    mlflow.log_dict(summary, "curation.json")
    for split in SPLITS:
        path = root / config.output_dir / f"{split}.parquet"
        # The texts stay out: they are nearly all of a split's memory, and reading them made the stage's peak
        # grow with the catalog (+0.5 GB at 400k products, bench/scale.py). The digest is the file's md5,
        # what DVC records, so a change to any text still shows.
        frame = pd.read_parquet(path, columns=["id", "category", "price"])
        dataset = mlflow.data.from_pandas(frame, source=str(path), name=f"curated-{split}", targets="price",
                                          digest=summary["outputs"][f"{split}.parquet"])
        mlflow.log_input(dataset, context=split)
