"""The one sentence-embedding path of the project: all-MiniLM-L6-v2, fast settings, on-disk cache.

Every part of Pricer that needs text embeddings (features for the price models, the
vector store, deal retrieval) goes through :class:`Embedder`, so that a product text is
embedded once per model+settings and the settings are the same everywhere.

Why these settings (``bench/embed.py``: 2,000 real product texts, 2 CPU cores shared with
other jobs, so compare the CPU-time ratios; see the bench for the exact figures):

* Batches cut from texts sorted by *token* count. sentence-transformers sorts by characters,
  which left 28% (batch 32) to 35% (batch 64) of the tokens it ran as padding here; sorted
  by tokens it is ~1%. Same vectors, ~1.1-1.25x less CPU in fp32.
* ``precision="auto"``: bfloat16 autocast where the CPU has native bf16 dot products
  (AVX512-BF16 / AMX), float32 elsewhere (emulated bf16 would be slower). With the sorting,
  ~2.3x less CPU per text than the plain fp32 call, 99.4% of the top-10 neighbours the same,
  and the same 10-NN price error.
* ``max_tokens=256`` (the model's own limit). These texts are ~165 tokens (median 161, 96%
  above 128): a 128-token cap drops 23% of the tokens and, with bf16, gave 3.6x, but only 71%
  of the top-10 neighbours stayed the same and the 10-NN price error rose (0.794 vs 0.781).
  A 192 cap drops 2% of the tokens (no real gain) and kept 96%.
* ``batch_size=32``: 16 and 32 took the least CPU per text; 64 ~10% more, 128 much more.
* Not kept: int8 dynamic quantisation (torch: 2.1x, 84% of neighbours; ONNX Runtime
  per-channel: 1.6-1.9x, 91%), the ONNX Runtime fp32 backend (same speed as torch),
  ``torch.compile`` (+5% over bf16 after a 70 s compile).

No setting reached 5x at >= 0.9 recall@10 on this CPU: a 165-token forward pass is ~3.5
GFLOP per text, and bf16 is the cheapest arithmetic that keeps the neighbours. What makes
catalog work fast is the cache: unchanged products are never embedded twice.

Other kinds (``kind: static``, ``pricer.models.static_embeddings``) share this cached path
(``embedding_cache.CachedEmbedder``); :func:`embedder_for` builds the one a config
(``pricer.core.embedding.EmbeddingConfig``) names.

The cache is a SQLite table ``sha256(model_id + text) -> float32 vector`` (``<cache_dir>/
embeddings.sqlite``, ~1.7 KB a text): only misses are computed, identical texts in one call
are computed once, and a fully cached call never loads the model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import TypeAdapter
from sklearn.base import BaseEstimator, TransformerMixin

from pricer.core.config import validate
from pricer.core.embedding import EmbeddingConfig, MiniLMEmbedding
from pricer.models.embedding_cache import (
    DEFAULT_CACHE_DIR,
    EMBEDDING_DIM,
    CachedEmbedder,
    as_texts,
    default_model_path,
    model_fingerprint,
    normalise,
)
from pricer.models.static_embeddings import StaticEmbedder, get_static_embedder

__all__ = ["DEFAULT_CACHE_DIR", "EMBEDDING_DIM", "Embedder", "EmbeddingFeatures", "default_model_path",
           "embedder_for", "get_embedder"]

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 32

Precision = Literal["auto", "fp32", "bf16"]


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX)."""
    try:
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # private torch API: fall back to the kernel's CPU flags
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


class Embedder(CachedEmbedder):
    """Texts -> float32, L2-normalised all-MiniLM-L6-v2 vectors, shape ``(n, 384)``.

    The model loads lazily on the first cache miss. ``cache_dir=None`` turns the cache off.
    ``hits`` / ``misses`` count texts served from the cache / computed since construction
    (``last_hits`` / ``last_misses`` for the latest call). Pickles without the model.
    """

    _SETTINGS = ("cache_dir", "max_tokens", "batch_size", "precision", "model_path", "num_threads")

    def __init__(
        self,
        cache_dir: Path | str | None = DEFAULT_CACHE_DIR,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: Precision = "auto",
        model_path: Path | str | None = None,
        num_threads: int | None = None,
    ) -> None:
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        self.precision = precision
        self.model_path = Path(model_path) if model_path is not None else None
        self.num_threads = num_threads
        self._init_runtime()

    # --- identity -------------------------------------------------------------------------

    @property
    def resolved_precision(self) -> Literal["fp32", "bf16"]:
        if self.precision == "auto":
            return "bf16" if cpu_has_native_bf16() else "fp32"
        return self.precision

    @property
    def resolved_model_path(self) -> Path:
        return self.model_path if self.model_path is not None else default_model_path()

    @property
    def model_id(self) -> str:
        """Model and every setting that changes the vectors; part of each cache key and an MLflow param."""
        if self._model_id is None:
            path = self.resolved_model_path
            name = MODEL_NAME if self.model_path is None else path.name
            self._model_id = (f"{name}@{model_fingerprint(path)}|max_tokens={self.max_tokens}"
                              f"|{self.resolved_precision}|mean|l2")
        return self._model_id

    @property
    def dim(self) -> int:
        if self._model is not None:
            get_dim = getattr(self._model, "get_embedding_dimension", None) or \
                self._model.get_sentence_embedding_dimension
            return int(get_dim())
        return EMBEDDING_DIM

    def params(self) -> dict[str, Any]:
        """Flat settings for experiment tracking."""
        return {"embedding_model_id": self.model_id, "embedding_max_tokens": self.max_tokens,
                "embedding_precision": self.resolved_precision, "embedding_batch_size": self.batch_size}

    # --- model ----------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The SentenceTransformer, loaded on first use."""
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                import torch
                from sentence_transformers import SentenceTransformer

                if self.num_threads:
                    torch.set_num_threads(self.num_threads)  # process-wide
                model = SentenceTransformer(str(self.resolved_model_path), device="cpu", local_files_only=True)
                model.max_seq_length = min(self.max_tokens, model.tokenizer.model_max_length or self.max_tokens)
                model.eval()
                self._model = model
            return self._model

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text after truncation to the model's ``max_seq_length`` (special tokens included)."""
        model = self.model
        ids = model.tokenizer(list(texts), truncation=True, max_length=model.max_seq_length,
                              add_special_tokens=True)["input_ids"]
        return np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(texts))

    def compute(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` with the model, bypassing the cache.

        Batches are cut from the texts sorted by token count, so a batch pads almost nothing
        (sentence-transformers sorts by characters: 28-35% padding on product texts).
        """
        if len(texts) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        import torch

        model = self.model
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if self.resolved_precision == "bf16"
                    else contextlib.nullcontext())
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            order = np.argsort(-self.token_lengths(texts), kind="stable")
            batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
            progress = _progress(len(batches), show_progress)
            with torch.inference_mode(), autocast:
                for batch in batches:
                    vectors = model.encode([texts[i] for i in batch], batch_size=len(batch),
                                           show_progress_bar=False, convert_to_tensor=True,
                                           normalize_embeddings=False)
                    out[batch] = vectors.float().cpu().numpy()
                    progress.update(1)
            progress.close()
        return normalise(out)

class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, show: bool) -> Any:
    if not show:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Embedding", unit="batch")


@lru_cache(maxsize=8)
def _shared(cache_dir: Path | None, max_tokens: int, batch_size: int, precision: str,
            model_path: Path | None) -> Embedder:
    return Embedder(cache_dir=cache_dir, max_tokens=max_tokens, batch_size=batch_size,
                    precision=precision, model_path=model_path)  # type: ignore[arg-type]


def get_embedder(
    cache_dir: Path | str | None = DEFAULT_CACHE_DIR,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: Precision = "auto",
    model_path: Path | str | None = None,
) -> Embedder:
    """The process-wide :class:`Embedder` for these settings (one model load per process)."""
    return _shared(Path(cache_dir) if cache_dir is not None else None, int(max_tokens), int(batch_size),
                   precision, Path(model_path) if model_path is not None else None)


def embedder_for(config: EmbeddingConfig | None = None,
                 cache_dir: Path | str | None = DEFAULT_CACHE_DIR) -> Embedder | StaticEmbedder:
    """The process-wide embedder of the kind ``config`` names (None: MiniLM with its defaults)."""
    config = config or MiniLMEmbedding()
    if config.kind == "static":
        return get_static_embedder(cache_dir, config.pca_dims, config.sif_coefficient, config.model_path)
    return get_embedder(cache_dir, config.max_tokens, config.batch_size, config.precision, config.model_path)


_EMBEDDING_CONFIG = TypeAdapter(EmbeddingConfig)


class EmbeddingFeatures(TransformerMixin, BaseEstimator):
    """sklearn transformer: texts -> (n, dim) embeddings through the shared, cached embedder.

    ``embedding`` (an ``EmbeddingConfig`` as a dict) picks the kind and replaces the MiniLM settings;
    a dict, not the model, so ``get_params`` / ``clone`` and a pickle stay plain. ``fit`` learns
    nothing. The pickle holds only the settings: after unpickling (e.g. a Pipeline loaded from
    MLflow) the model reloads on the first ``transform``.
    """

    def __init__(
        self,
        cache_dir: str | None = str(DEFAULT_CACHE_DIR),
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: Precision = "auto",
        model_path: str | None = None,
        embedding: dict[str, Any] | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.precision = precision
        self.model_path = model_path
        self.embedding = embedding

    @property
    def embedder(self) -> Embedder | StaticEmbedder:
        # getattr: a pipeline pickled before kinds existed has no ``embedding`` and means MiniLM.
        embedding = getattr(self, "embedding", None)
        if embedding is not None:
            return embedder_for(validate(_EMBEDDING_CONFIG, embedding, "EmbeddingFeatures.embedding"), self.cache_dir)
        return get_embedder(self.cache_dir, self.max_tokens, self.batch_size, self.precision, self.model_path)

    def fit(self, X: Any = None, y: Any = None) -> EmbeddingFeatures:
        return self

    def transform(self, X: Any) -> np.ndarray:
        return self.embedder.embed(as_texts(X))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array([f"emb_{i}" for i in range(self.embedder.dim)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.requires_fit = False
        return tags

