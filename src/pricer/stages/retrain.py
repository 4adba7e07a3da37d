"""The retraining decision and what a retrain takes in: new inbox files, judged against the training split.

``judge_inbox`` cleans the new files with the curation rules and measures their drift from the training
split (``pricer.data.drift``); the same report compares the deal agents' live estimates with the training
prices (a warning section, never a reason to retrain). When the decision is to retrain, ``accept_files``
copies the judged files into ``curate.accepted_dir`` (``data/accepted``), which params.yaml names and
dvc.yaml declares as a dep of the curate stage: DVC itself sees new input and re-runs curation, which
reads the accepted files after the configured source. So no one edits params.yaml, nothing is forced,
and ``dvc status`` stays true: the curated data is what its declared inputs make, and dvc.lock records
the accepted folder's digest. Files not (yet) accepted never reach training, even when a plain
``dvc repro`` runs while they wait in the inbox.

The schedule lives in one place, ``schedule.retrain_cron`` of ``configs/agents.yaml``, beside the deal
agents' own: ``python -m flows.deployments`` serves both.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field, model_validator

from pricer.core.config import StrictModel, load_config
from pricer.core.files import atomic_write_text, file_digest, staged_file
from pricer.data.config import CurateConfig
from pricer.data.curate import clean_file
from pricer.data.drift import DriftReport, DriftThresholds, live_drift, measure_drift
from pricer.data.sources import JSONL_SUFFIXES
from pricer.stages.params import Params

_FLOW_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class RetrainConfig(StrictModel):
    """``configs/retrain.yaml``: where new data arrives, when it is worth retraining, and what a retrain runs."""

    inbox: Path = Field(Path("data/inbox"), description="new .jsonl/.jsonl.gz drops land here")
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds, description="what makes a retrain due")
    state_path: Path = Field(Path("data/inbox/.seen.json"), description="digests of the files already accepted")
    embedding_sample: int = Field(2000, ge=0, description=(
        "texts of each side embedded (MiniLM) for the text shift; 0: skip the text shift"))
    live_window_days: float = Field(30.0, gt=0, description=(
        "the live section compares the deals priced in the last this many days with the training prices"))
    pipeline: str = Field("flows.pipeline:pipeline_flow", pattern=_FLOW_PATH, description=(
        "the flow a retrain runs once the files are accepted (module:function, called with root and params_path)"))

    @model_validator(mode="before")
    @classmethod
    def _no_schedule_here(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cron" in data:
            raise ValueError("cron is not read here: the retraining schedule is schedule.retrain_cron in "
                             "configs/agents.yaml (python -m flows.deployments serves it)")
        return data


def load_retrain_config(path: Path, root: Path | None = None) -> RetrainConfig:
    """The config, its inbox and state paths under ``root`` when they are relative."""
    config = load_config(RetrainConfig, path)
    if root is None:
        return config
    return config.model_copy(update={"inbox": root / config.inbox, "state_path": root / config.state_path})


def new_files(config: RetrainConfig) -> list[Path]:
    """Inbox files whose content has not been accepted before (a renamed copy is not new)."""
    seen = set(json.loads(config.state_path.read_text())) if config.state_path.exists() else set()
    if not config.inbox.exists():
        return []
    files = sorted(p for p in config.inbox.iterdir() if p.name.endswith(JSONL_SUFFIXES))
    return [path for path in files if file_digest(path) not in seen]


def mark_seen(config: RetrainConfig, files: list[Path]) -> None:
    seen = set(json.loads(config.state_path.read_text())) if config.state_path.exists() else set()
    seen |= {file_digest(path) for path in files}
    atomic_write_text(config.state_path, json.dumps(sorted(seen)))


def judge(files: list[Path], train: pd.DataFrame, curate: CurateConfig, thresholds: DriftThresholds,
          embed: Callable | None = None, sample: int = 2000) -> tuple[DriftReport, dict[str, int]]:
    """Drift of the new items against training; also the count of new records rejected by curation."""
    frames, rejected = [], 0
    for path in files:
        items, report = clean_file(path, curate)
        frames.append(items)
        rejected += report["rejected"]
    new = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["price", "category", "text"])
    report = measure_drift(train, new, thresholds, embed=embed if sample > 0 else None, sample=max(sample, 1))
    return report, {"new_items": len(new), "rejected": rejected}


def judge_inbox(files: list[Path], root: Path, params: Params, config: RetrainConfig,
                live: pd.DataFrame | None = None) -> dict[str, Any]:
    """Judge new files against the training split, and the live deals (``Memory.estimates``) when given;
    recorded as one MLflow run (``retrain-check``) whose id the decision carries."""
    import mlflow

    from pricer.tracking.runs import stage_run

    curate, thresholds = params.curate, config.thresholds
    train = pd.read_parquet(root / curate.output_dir / "train.parquet", columns=["price", "category", "text"])
    embed = None
    if files and config.embedding_sample > 0:
        from pricer.models.embeddings import get_embedder

        embed = get_embedder().embed
    report, counts = judge(files, train, curate, thresholds, embed=embed, sample=config.embedding_sample)
    if live is not None:
        report = replace(report, live=live_drift(train["price"], live["estimate"], live["price"], thresholds,
                                                 int(live["opportunity"].sum())))
    decision = {**report.as_dict(), **counts, "files": [str(path) for path in files]}
    tags = {"pricer.retrain": str(report.retrain).lower(), "pricer.retrain.reasons": "; ".join(report.reasons) or "none"}
    if report.live is not None:
        tags["pricer.retrain.live_warnings"] = "; ".join(report.live.warnings) or "none"
    with stage_run("retrain-check", tags=tags, experiment=params.tracking.experiment,
                   tracking_uri=params.tracking.tracking_uri) as run:
        mlflow.log_metrics(_numbers(decision))
        mlflow.log_dict(decision, "retrain/decision.json")
    decision["run_id"] = run.info.run_id
    return decision


def _numbers(decision: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in decision.items():
        if isinstance(value, dict):
            flat.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[prefix + key] = float(value)
    return flat


def accept_files(files: list[Path], root: Path, curate: CurateConfig, run_id: str | None = None) -> list[dict[str, str]]:
    """Copy judged files into ``curate.accepted_dir`` (content-named, so a file accepted twice is one file;
    written aside and renamed, so curation never reads half of one); recorded on the check's run."""
    if curate.accepted_dir is None:
        raise ValueError("curate.accepted_dir is null in params.yaml: a retrain has nowhere to put new data")
    folder = root / curate.accepted_dir
    accepted = []
    for path in files:
        digest = file_digest(path)
        target = folder / f"{digest[:12]}-{_UNSAFE.sub('_', path.name)}"
        if not target.exists():
            with staged_file(target) as staging:
                shutil.copyfile(path, staging)
        accepted.append({"file": target.name, "from": str(path), "md5": digest})
    if run_id is not None:
        from mlflow import MlflowClient

        client = MlflowClient()
        client.log_dict(run_id, {"accepted": accepted, "at": time.time()}, "retrain/accepted.json")
        client.set_tag(run_id, "pricer.retrain.accepted", ", ".join(item["file"] for item in accepted)[:5000])
    return accepted


def decision_markdown(decision: dict[str, Any]) -> str:
    lines = [f"**Retrain: {'yes' if decision['retrain'] else 'no'}**", "", "| measure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in decision.items() if k not in ("files", "reasons", "live", "accepted")]
    lines += ["", "Reasons: " + ("; ".join(decision["reasons"]) or "none crossed its threshold")]
    if accepted := decision.get("accepted"):
        lines += ["", "Accepted into training: " + ", ".join(item["file"] for item in accepted)]
    live = decision.get("live")
    lines += ["", "### Live deals vs the training prices", ""]
    if live is None:
        lines.append("No memory of live deals was read.")
        return "\n".join(lines)
    lines += ["| measure | value |", "| --- | --- |"]
    lines += [f"| {k} | {_shown(v)} |" for k, v in live.items() if k != "warnings"]
    lines += ["", "Warnings (not retrain reasons): " + ("; ".join(live["warnings"]) or "none")]
    return "\n".join(lines)


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
