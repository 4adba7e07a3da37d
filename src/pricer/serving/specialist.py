"""The fine-tuned specialist as an MLflow pyfunc: the LoRA adapter, never merged base weights.

The logged model holds the adapter folder as its one artifact (LoRA weights and config,
and ``pricer_base.json``, which names the base model: kind, hub id or shape, revision). At load
time the base model is rebuilt or fetched from that description and the adapter is applied,
so a registry version costs megabytes, not the gigabytes of a merged model. The base model's
identity is also in the MLflow model's ``metadata`` (and in the run's params), so a reviewer
sees what a version needs without opening it.

Input: a DataFrame with a ``text`` column (the product text, cut to ``inference.max_text_tokens``,
the curation's token budget; the training prompt is built from it, "How much does this cost to the
nearest dollar?\n\n{text}\n\nPrice is $") and optionally a ``prompt`` column (used as is when
present), a list of texts, or one text. Output: one price per row, NaN where the model's answer had
no number.

How an adapter is prompted (``adapter_prompting``: the token budget texts are cut to, the answer length)
is read from its folder, so the in-process model and a server that serves the same adapter
(``pricer.agents.remote``, over ``download_adapter``) build the same prompts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models.model import ModelInfo

from pricer.core.files import staged_dir
from pricer.core.prompt import build_prompt
from pricer.data.config import DEFAULT_MAX_TEXT_TOKENS
from pricer.data.tokenizer import truncate_to_tokens
from pricer.llm.inference import make_predictor
from pricer.llm.loading import BASE_SPEC_FILE, load_adapter_model, load_base_tokenizer, read_base_spec
from pricer.serving.schema import as_items, log_pyfunc

ADAPTER_ARTIFACT = "adapter"


def prompts_from(model_input: Any, shorten: Callable[[list[str]], list[str]] | None = None) -> list[str]:
    """Whatever a caller hands in -> the prompts the model was trained on, texts cut by ``shorten``."""
    if isinstance(model_input, pd.DataFrame) and "prompt" in model_input.columns and model_input["prompt"].notna().all():
        return model_input["prompt"].astype(str).tolist()
    texts = [str(text) for text in as_items(model_input)["text"].tolist()]
    return [build_prompt(text) for text in (shorten(texts) if shorten else texts)]


@dataclass(frozen=True)
class AdapterPrompting:
    """How an adapter is asked: texts cut to its training token budget, and its inference settings."""

    shorten: Callable[[list[str]], list[str]]
    method: str
    batch_size: int
    max_new_tokens: int


def adapter_prompting(adapter_dir: Path, tokenizer: Any = None) -> AdapterPrompting:
    """The prompting an adapter folder states (``tokenizer``: the base model's, loaded when not given)."""
    spec, _, raw = read_base_spec(Path(adapter_dir))
    inference = raw.get("inference") or {}
    tokenizer = tokenizer if tokenizer is not None else load_base_tokenizer(spec)
    # A deal's text runs far past the token budget the adapter was trained on: cut it as curation did.
    # An adapter saved before the setting existed does not say: assume the default budget.
    budget = int(inference.get("max_text_tokens", DEFAULT_MAX_TEXT_TOKENS))
    return AdapterPrompting(lambda texts: truncate_to_tokens(tokenizer, texts, budget)[0],
                            str(inference.get("method", "generate")), int(inference.get("batch_size", 16)),
                            int(inference.get("max_new_tokens", 6)))


def download_adapter(model_uri: str, dst: Path) -> Path:
    """The adapter folder of one registered specialist version (``models:/pricer-specialist/3``), downloaded into
    ``dst`` once: a version's artifacts never change, and a download cut short never takes ``dst``'s place."""
    dst = Path(dst)
    if not dst.is_dir():
        with staged_dir(dst) as staging:
            mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(staging))
    found = sorted(dst.rglob(BASE_SPEC_FILE))
    if not found:
        raise FileNotFoundError(f"{model_uri} holds no adapter folder ({BASE_SPEC_FILE}): not a pricer-specialist")
    return found[0].parent


class SpecialistPyfunc(mlflow.pyfunc.PythonModel):
    """Base model + LoRA adapter, loaded from the adapter artifact; prices by batched generation."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        adapter_dir = Path(context.artifacts[ADAPTER_ARTIFACT])
        model, tokenizer = load_adapter_model(adapter_dir)
        prompting = adapter_prompting(adapter_dir, tokenizer)
        self.shorten = prompting.shorten
        self.predictor = make_predictor(model, tokenizer, method=prompting.method, batch_size=prompting.batch_size,
                                        max_new_tokens=prompting.max_new_tokens)

    # No type hints on predict: MLflow would try to derive a schema from them (the signature is explicit).
    def predict(self, context, model_input, params=None):
        answers = self.predictor(prompts_from(model_input, self.shorten))
        return np.asarray([np.nan if value is None else float(value) for value in answers], dtype=float)


def log_specialist(adapter_dir: Path, name: str = "model") -> ModelInfo:
    """Log the adapter as a pyfunc in the active MLflow run, with the base model in its metadata."""
    _, _, raw = read_base_spec(Path(adapter_dir))
    metadata = {
        "pricer.base_model": raw["base_model"],
        "pricer.base_kind": raw["model"]["kind"],
        "pricer.base_revision": raw["model"].get("revision") or "",
        "pricer.base_spec": json.dumps(raw["model"], sort_keys=True),
        "pricer.weights": "lora-adapter",
    }
    return log_pyfunc(SpecialistPyfunc(), {ADAPTER_ARTIFACT: str(adapter_dir)}, name=name, metadata=metadata)
