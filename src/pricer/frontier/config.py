"""Typed configuration of a frontier model endpoint (``configs/frontier/*.yaml``), and its API key.

One YAML file picks the endpoint (OpenAI, Anthropic's OpenAI-compatible API, a local vLLM / Ollama /
llama.cpp server) and how to call it. The config holds the *name* of the environment variable with
the API key, never the key; the key is read when a client is made, so a registered model reads it at
predict time and a rotated key needs no redeploy.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from pricer.core.comparison import GateSettings
from pricer.core.config import StrictModel, load_config
from pricer.core.embedding import EmbeddingConfig, MiniLMEmbedding
from pricer.core.errors import RemoteAPIError
from pricer.core.retry import RetrySettings
from pricer.core.secrets import without_credentials
from pricer.core.wandb_settings import WandbSettings

DEFAULT_SYSTEM_PROMPT = (
    "You estimate the prices of products from their descriptions. "
    "Reply only with the price in US dollars, for example 'Price is $99.00', with no explanation."
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER_KEY = "not-needed"  # local servers ignore the key; the SDK insists on one


class FineTuneConfig(StrictModel):
    """An API fine-tuning job: which base model, how much data, and the most it may cost."""

    base_model: str = Field(description="the provider's model to fine-tune")
    n_train: int | None = Field(500, gt=0, description="examples from the train split (null: all)")
    n_val: int | None = Field(50, ge=0, description="examples from the val split (0: no validation file)")
    n_epochs: int = Field(1, ge=1, le=50)
    suffix: str = Field("pricer", pattern=r"^[A-Za-z0-9_-]{1,40}$", description="part of the tuned model's name")
    seed: int = 42
    usd_per_1m_training: float = Field(3.0, ge=0, description="the price of one million trained tokens")
    tuned_usd_per_1m_input: float | None = Field(None, ge=0, description="what calling the tuned model costs")
    tuned_usd_per_1m_output: float | None = Field(None, ge=0)
    budget_usd: float = Field(5.0, ge=0, description="a job estimated above this is refused before anything is sent")
    max_example_len: int = Field(4096, gt=0, description="tokens per example")
    min_examples: int = Field(10, ge=1)
    out_dir: Path = Path("data/frontier")
    state_dir: Path = Path("data/frontier/jobs")
    poll_initial_s: float = Field(5.0, gt=0)
    poll_max_s: float = Field(60.0, gt=0)
    poll_timeout_s: float = Field(6 * 3600.0, gt=0)
    wandb: WandbSettings = Field(default_factory=WandbSettings)


class FrontierEvalConfig(StrictModel):
    """Which test items the endpoint prices, and where its model is registered."""

    data_dir: Path = Path("data/curated")
    reports_dir: Path = Path("reports")
    limit: int | None = Field(250, gt=0, description="test items to price (null: the whole split); costs money")
    batch_size: int = Field(256, gt=0)
    register_as: str = "pricer-frontier"
    register_model: bool = Field(True, description="register as register_as and run the promotion gate")
    gate: GateSettings = Field(default_factory=GateSettings, description=(
        "how sure the promotion gate must be that a candidate beats the champion"))


class FrontierConfig(RetrySettings):
    """One OpenAI-compatible chat endpoint and how to call it (``configs/frontier/*.yaml``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="its label in reports and runs")
    model: str = Field(description="the model name the endpoint knows")
    base_url: str | None = Field(None, description="null: api.openai.com")
    api_key_env: str | None = Field("OPENAI_API_KEY", description=(
        "the NAME of the environment variable holding the key; null for keyless local servers"))
    usd_per_1m_input: float = Field(0.0, ge=0)
    usd_per_1m_output: float = Field(0.0, ge=0)
    max_concurrency: int = Field(8, ge=1, le=1024)
    requests_per_minute: float | None = Field(None, gt=0, description="request starts are spaced to this rate")
    timeout_s: float = Field(30.0, gt=0, description="seconds one attempt may take (a whole stream included)")
    max_retries: int = Field(6, ge=0, le=50, description="retries after the first attempt")
    max_retry_after_s: float = Field(120.0, ge=0, description="a longer Retry-After gives the item up")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(16, gt=0, description="the longest answer, in tokens")
    seed: int | None = 42
    stream: bool = False
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    cache_dir: Path | None = Field(Path(".cache/frontier"), description="the response cache (null: none)")
    cost_log: Path | None = Path("reports/frontier/cost_log.jsonl")
    k_neighbours: int = Field(0, ge=0, le=50, description="similar training items (with prices) in the prompt")
    embedding: EmbeddingConfig = Field(default_factory=MiniLMEmbedding, description=(
        "the sentence embedding the k_neighbours are found with: kind minilm (the transformer) or static "
        "(model2vec); the logged model keeps it, so it queries its index in the space it was built in"))
    trace: bool = Field(True, description="an MLflow trace of every call")
    evaluation: FrontierEvalConfig = Field(default_factory=FrontierEvalConfig)
    finetune: FineTuneConfig | None = None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            # Deliberately not echoing the value: it may be a pasted key.
            raise ValueError(
                "must be the NAME of an environment variable holding the key (e.g. OPENAI_API_KEY), "
                "never the key itself"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{without_credentials(value)!r} is not an http(s) URL")
        if value is not None and without_credentials(value) != value:
            # Never echoing it: a URL's password would reach every record that names the endpoint.
            raise ValueError("holds a user:password: put the credential in the variable api_key_env names")
        return value.rstrip("/") if value else value

    def safe_dict(self) -> dict[str, Any]:
        """The config as plain JSON data: it holds no secret by construction (only the env var's name)."""
        return self.model_dump(mode="json")

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """What a call with these token counts costs at this endpoint's prices."""
        return (input_tokens * self.usd_per_1m_input + output_tokens * self.usd_per_1m_output) / 1e6


def load_frontier_config(path: str | Path) -> FrontierConfig:
    return load_config(FrontierConfig, path)


class FrontierError(RemoteAPIError):
    """The endpoint cannot be used at all (no key, bad key, unknown model...)."""


class FrontierAuthError(FrontierError):
    """The endpoint refused the credentials (401/403): no point pricing further items."""


def resolve_api_key(config: FrontierConfig) -> str:
    """The API key from the environment variable the config names (read now, never stored)."""
    if config.api_key_env is None:
        return _PLACEHOLDER_KEY
    key = os.environ.get(config.api_key_env)
    if not key:
        raise FrontierError(
            f"environment variable {config.api_key_env} is not set: it must hold the API key for "
            f"{config.name} ({config.base_url or 'api.openai.com'})"
        )
    return key
