"""The one switch for Weights & Biases, the optional second tracker: the same settings wherever W&B is used.

``tracking.wandb`` in params.yaml turns it on for the pipeline's stages (each stage's MLflow runs are
mirrored: params, metrics, evaluation charts); a fine-tuning config's own ``wandb`` section does the same
for that stage and for the trainer's or the API job's live metrics. ``mode: offline`` needs no account
(``wandb sync`` uploads later).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pricer.core.config import StrictModel


class WandbSettings(StrictModel):
    """Weights & Biases beside MLflow; off unless ``enabled``."""

    enabled: bool = Field(False, description="mirror runs to W&B as well as MLflow")
    project: str = Field("pricer", description="the W&B project")
    mode: Literal["offline", "online"] = Field("offline", description="offline: files under dir, no account")
    entity: str | None = Field(None, description="the W&B team or user (null: the account's default)")
    dir: Path = Field(Path("wandb"), description="where W&B writes its run files")
