"""The vLLM command that serves a registered specialist: its base model, with its LoRA adapter on top.

``vllm_plan`` downloads the registered version's adapter folder from MLflow, names the base model a
server can load (``servable_base``) and builds the command line of vLLM's OpenAI-compatible server, the
adapter served under one name (``--lora-modules pricer-specialist=DIR``). The deal agents then ask that
name over ``/v1/completions`` (``pricer.agents.remote``) with the prompt the adapter was trained on.

vLLM must find the base model by itself: a hub id (``hf``, at the pinned revision), the converted Gemma
folder (``gemma-gguf``), or, for the ``tiny`` model that exists only as a seeded config, the same seeded
weights written out once with the builtin tokenizer, so the adapter trained on them applies unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pricer.core.errors import ModelNotFound
from pricer.core.files import cache_root, staged_dir
from pricer.data.tokenizer import builtin_tokenizer
from pricer.llm.config import BaseModelConfig, GemmaGGUFModelConfig, HFModelConfig, TinyModelConfig
from pricer.llm.loading import base_model_id, build_tiny_model, gemma_safetensors_dir, read_base_spec
from pricer.serving.specialist import download_adapter

# The LoRA ranks vLLM's --max-lora-rank accepts; its default, 16, refuses a larger adapter.
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class VllmPlan:
    """The server to start for one registered specialist: the argv, and what a reader should know."""

    model_uri: str
    adapter_dir: Path
    base_model: str
    argv: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def servable_base(spec: BaseModelConfig) -> tuple[str, list[str]]:
    """What a server is given as the base model, and the options that pin it (``--revision``)."""
    match spec:
        case HFModelConfig():
            return spec.name_or_path, ["--revision", spec.revision] if spec.revision else []
        case GemmaGGUFModelConfig():
            return str(gemma_safetensors_dir()), []
        case TinyModelConfig():
            return str(tiny_folder(spec)), []
    raise ValueError(f"unknown base model kind: {spec!r}")


def tiny_folder(spec: TinyModelConfig) -> Path:
    """The seeded tiny model and its tokenizer as a transformers folder (written once, then reused)."""
    key = hashlib.sha1(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:10]
    folder = cache_root() / "models" / f"{base_model_id(spec)}-{key}"
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        return folder
    tokenizer = builtin_tokenizer(spec.vocab_size)
    with staged_dir(folder) as staging:
        build_tiny_model(spec, len(tokenizer)).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return folder


def pinned_uri(reference: str) -> str:
    """``name@alias`` (or ``models:/name@alias``; a bare name: its champion) -> ``models:/name/<version>`` as the
    alias stands now, so that what is downloaded and served is one version; ``name/3``, ``models:/name/3``
    and ``runs:/`` URIs as they are."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if reference.startswith("runs:/"):
        return reference
    bare = reference.removeprefix("models:/")
    if "/" in bare:
        return f"models:/{bare}"
    name, _, alias = bare.partition("@")
    try:
        return f"models:/{name}/{MlflowClient().get_model_version_by_alias(name, alias or 'champion').version}"
    except MlflowException as error:
        raise ModelNotFound(f"{reference}: {error.message}") from None


def adapter_folder(root: Path, model_uri: str) -> Path:
    """Where one registered version's adapter is kept: one folder per version, so versions never mix."""
    return Path(root) / re.sub(r"[^A-Za-z0-9._-]+", "-", model_uri.removeprefix("models:/")).strip("-")


def vllm_plan(model_uri: str, root: Path, *, served_name: str = "pricer-specialist", host: str = "0.0.0.0",
              port: int = 8000, extra: Sequence[str] = ()) -> VllmPlan:
    """Download ``model_uri``'s adapter under ``root`` and build the ``vllm serve`` command for it."""
    model_uri = pinned_uri(model_uri)
    # Absolute: the printed command may be run from another folder.
    adapter_dir = download_adapter(model_uri, adapter_folder(root, model_uri)).resolve()
    spec, _, raw = read_base_spec(adapter_dir)
    base, pinning = servable_base(spec)
    argv = ["vllm", "serve", base, *pinning, "--enable-lora", "--lora-modules", f"{served_name}={adapter_dir}"]
    notes = []
    lora = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    rank = int(lora.get("r") or 16)
    if rank > 16:
        argv += ["--max-lora-rank", str(next((r for r in _LORA_RANKS if r >= rank), rank))]
    if lora.get("modules_to_save"):
        notes.append(f"the adapter also saves whole modules ({', '.join(lora['modules_to_save'])}); a vLLM that "
                     "loads LoRA weights only refuses it or answers unlike the registered model")
    if (raw.get("inference") or {}).get("method", "generate") != "generate":
        notes.append("the registered model prices by the probability-weighted estimator; over the server it "
                     "prices by greedy generation")
    argv += ["--host", host, "--port", str(port), *extra]
    return VllmPlan(model_uri, adapter_dir, base, argv, notes)
