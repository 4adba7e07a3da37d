"""params.yaml, typed: the settings of the stages DVC runs, each model as a typed spec.

Unknown keys are refused at every level and a missing file is an error, so a typo or a wrong path
fails at start, with the field and the reason, before anything is trained.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from pricer.core.comparison import GateSettings
from pricer.core.config import StrictModel, load_config
from pricer.data.config import CurateConfig
from pricer.models.base import PriceModelSpec
from pricer.models.specs import SPEC_CLASSES, ModelSpec
from pricer.tracking.runs import TrackingConfig

# The stack comes last: it blends the members trained before it as they are.
DEFAULT_MODELS = ("random", "mean", "features_lr", "tfidf_lr", "embed_lr", "embed_svr", "embed_rf", "xgboost",
                  "boost", "stack")


def _default_models() -> list[PriceModelSpec]:
    return [SPEC_CLASSES[kind]() for kind in DEFAULT_MODELS]


class BaselinesConfig(StrictModel):
    """Train every listed model; the best by val MAE is registered through the promotion gate."""

    data_dir: Path = Field(Path("data/curated"), description="the curated splits")
    reports_dir: Path = Field(Path("reports/baselines"), description="each model's evaluation reports")
    summary_path: Path = Field(Path("reports/baselines.json"), description="DVC's metrics file for the stage")
    models: list[ModelSpec] = Field(default_factory=_default_models, min_length=1,
                                    description="the models to train, each chosen by kind with its settings")
    register_as: str = Field("pricer-regressor", description="the registered model the best one becomes")
    gate: GateSettings = Field(default_factory=GateSettings, description=(
        "how sure the promotion gate must be that a candidate beats the champion"))

    @model_validator(mode="after")
    def _unique_names(self) -> BaselinesConfig:
        labels = [spec.label for spec in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"model names must be unique (give a second model of a kind a name), got {labels}")
        return self


class Params(StrictModel):
    """The whole of params.yaml."""

    curate: CurateConfig = Field(default_factory=CurateConfig, description="the curation stage")
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig, description="the baselines stage")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="where runs are recorded")


def load_params(path: str | Path = "params.yaml") -> Params:
    return load_config(Params, path)
