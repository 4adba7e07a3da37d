"""The retraining decision: new files in the inbox, cleaned like curation, compared with the training split."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from pricer.core.config import StrictModel, load_config
from pricer.core.files import atomic_write_text, file_digest
from pricer.data.config import CurateConfig
from pricer.data.curate import clean_file
from pricer.data.drift import DriftReport, DriftThresholds, measure_drift
from pricer.data.sources import JSONL_SUFFIXES


class RetrainConfig(StrictModel):
    inbox: Path = Path("data/inbox")
    cron: str = "0 3 * * *"
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
    state_path: Path = Path("data/inbox/.seen.json")


def load_retrain_config(path: Path) -> RetrainConfig:
    return load_config(RetrainConfig, path)


def new_files(config: RetrainConfig) -> list[Path]:
    """Inbox files whose content has not been judged before (a renamed copy is not new)."""
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
          embed: Callable | None = None) -> tuple[DriftReport, dict[str, int]]:
    """Drift of the new items against training; also the count of new records rejected by curation."""
    frames, rejected = [], 0
    for path in files:
        items, report = clean_file(path, curate)
        frames.append(items)
        rejected += report["rejected"]
    new = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["price", "category", "text"])
    return measure_drift(train, new, thresholds, embed=embed), {"new_items": len(new), "rejected": rejected}


def judge_inbox(files: list[Path], root: Path, curate: CurateConfig, thresholds: DriftThresholds) -> dict[str, Any]:
    """Judge new files against the training split (MiniLM for the text shift), recorded as an MLflow run."""
    import mlflow

    from pricer.models.embeddings import get_embedder
    from pricer.tracking.runs import stage_run

    train = pd.read_parquet(root / curate.output_dir / "train.parquet", columns=["price", "category", "text"])
    report, counts = judge(files, train, curate, thresholds, embed=get_embedder().embed)
    decision = {**report.as_dict(), **counts, "files": [str(path) for path in files]}
    with stage_run("retrain-check", tags={"pricer.retrain": str(report.retrain).lower(),
                                          "pricer.retrain.reasons": "; ".join(report.reasons) or "none"}):
        mlflow.log_metrics({k: float(v) for k, v in decision.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
    return decision


def decision_markdown(decision: dict[str, Any]) -> str:
    lines = [f"**Retrain: {'yes' if decision['retrain'] else 'no'}**", "", "| measure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in decision.items() if k not in ("files", "reasons")]
    lines += ["", "Reasons: " + ("; ".join(decision["reasons"]) or "none crossed its threshold")]
    return "\n".join(lines)
