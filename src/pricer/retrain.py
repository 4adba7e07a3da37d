"""The retraining decision: new files in the inbox, cleaned like curation, compared with the training split."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from pydantic import Field

from pricer.config import CurateConfig, StrictModel, load_config
from pricer.data.curate import clean_file
from pricer.data.sources import JSONL_SUFFIXES
from pricer.drift import DriftReport, DriftThresholds, measure_drift
from pricer.tracking.runs import file_digest


class RetrainConfig(StrictModel):
    inbox: Path = Path("data/inbox")
    cron: str = "0 3 * * *"
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
    state_path: Path = Path("data/inbox/.seen.json")


def load_retrain_config(path: Path) -> RetrainConfig:
    return load_config(RetrainConfig, path) if path.exists() else RetrainConfig()


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
    config.state_path.parent.mkdir(parents=True, exist_ok=True)
    staging = config.state_path.with_suffix(".tmp")
    staging.write_text(json.dumps(sorted(seen)))
    staging.replace(config.state_path)


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
