"""Stage entry points: the one way the CLI, DVC stages and Prefect tasks run a stage.

Each wraps the plain stage logic in one MLflow run (nested under the pipeline run when
there is one) and records what reviewers compare: params, metrics, lineage tags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from pricer.config import ConfigError, CurateConfig, DemoSourceConfig, JsonlSourceConfig, Params, load_params
from pricer.data.curate import curate
from pricer.tracking.runs import stage_run


def curate_config(params: Params, data: list[Path] | None = None, source: str | None = None) -> CurateConfig:
    """params.yaml's curation settings, with the source optionally replaced from the command line."""
    if data:
        return params.curate.model_copy(update={"source": JsonlSourceConfig(paths=data)})
    if source is None or source == params.curate.source.kind:
        return params.curate
    if source == "demo":
        return params.curate.model_copy(update={"source": DemoSourceConfig()})
    raise ConfigError(f"--source {source}: set curate.source (kind: {source}, with its settings) in params.yaml")


def run_curate(params_path: Path = Path("params.yaml"), data: list[Path] | None = None,
               source: str | None = None, root: Path | None = None) -> dict[str, Any]:
    params = load_params(params_path)
    config = curate_config(params, data, source)
    root = root or Path.cwd()
    with stage_run("curate", {"curate": config.model_dump(mode="json")}, experiment=params.tracking.experiment,
                   tracking_uri=params.tracking.tracking_uri):
        summary = curate(config, root)
        mlflow.log_metrics(
            {"read": summary["read"], "kept": summary["kept"], "rejected": summary["rejected"],
             **{f"rejected.{reason}": count for reason, count in summary["rejected_by_reason"].items()},
             **{f"split.{name}": count for name, count in summary["splits"].items()}}
        )
        mlflow.set_tags({f"dvc.md5.{name}": digest for name, digest in summary["outputs"].items()})
        mlflow.log_dict(summary, "curation.json")
        for split in ("train", "val", "test"):
            path = root / config.output_dir / f"{split}.parquet"
            frame = pd.read_parquet(path, columns=["id", "category", "price", "text"])
            dataset = mlflow.data.from_pandas(frame, source=str(path), name=f"curated-{split}", targets="price")
            mlflow.log_input(dataset, context=split)
    return summary


def run_baselines(params_path: Path = Path("params.yaml"), data_dir: Path | None = None,
                  only: list[str] | None = None) -> dict[str, Any]:
    """Train every configured model, register the best as ``pricer-regressor`` through the gate."""
    from pricer.baselines.train import Splits, register_best, train_and_log, write_summary

    params = load_params(params_path)
    config = params.baselines
    specs = [spec for spec in config.models if not only or spec.label in only]
    if not specs:
        raise ConfigError(f"--only {only}: no such model in baselines.models")
    splits = Splits.load(data_dir or config.data_dir)
    with stage_run("baselines", {"baselines": config.model_dump(mode="json")}, experiment=params.tracking.experiment,
                   tracking_uri=params.tracking.tracking_uri,
                   tags={"pricer.test_digest": splits.test_digest}):
        trained, fitted = [], {}
        for spec in specs:
            result, fitted[spec.label] = train_and_log(spec, splits, config.reports_dir, fitted)
            trained.append(result)
        decision = register_best(trained, config.register_as, splits)
        mlflow.set_tags({"pricer.registered": config.register_as, "pricer.gate.decision": decision.decision,
                         "pricer.gate.reason": decision.reason})
        return write_summary(config.summary_path, trained, decision)
