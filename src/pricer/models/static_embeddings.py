"""``kind: static``: a model2vec static embedding distilled once from a local transformer folder.

A static model is one vector per token (the transformer's own output for that token alone, reduced by
PCA and weighted by SIF); a text is the mean of its tokens' vectors. No forward pass runs, so it embeds
~100x faster than MiniLM on these CPUs; the price is context: on product texts only about a third of
its 10 nearest neighbours are MiniLM's, while its 10-NN price error stays about the same (bench/embed.py).

Distilling runs the transformer over its whole vocabulary (~30k tokens: 15 s to 2 min on 2 shared
cores), so its result is kept under ``<cache_dir>/static/<source name>-<key>``, the key hashing the
source's name and fingerprint, the distill settings and the model2vec version: a second use loads
that folder in milliseconds. The folder is written under a temporary name and renamed into place,
so a crashed or concurrent distillation never leaves a half-written model for the next process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pricer.models.embedding_cache import (
    DEFAULT_CACHE_DIR,
    CachedEmbedder,
    default_model_path,
    model_fingerprint,
    normalise,
)

STATIC_DIR = "static"
MANIFEST = "pricer_static.json"
DEFAULT_PCA_DIMS = 256
DEFAULT_SIF = 1e-4
# Texts per StaticModel.encode call; its own default (1024) is fine, multiprocessing is not: with 2
# shared cores the worker start-up costs more than it saves.
_BATCH = 1024


def _model2vec_version() -> str:
    from importlib.metadata import version

    return version("model2vec")


class StaticEmbedder(CachedEmbedder):
    """Texts -> float32, L2-normalised vectors of a model2vec static model distilled from ``model_path``
    (default: the shipped all-MiniLM-L6-v2), through the same vector cache as the MiniLM embedder.

    ``distilled`` is True once this instance distilled the model itself (False: it loaded the kept one).
    """

    _SETTINGS = ("cache_dir", "pca_dims", "sif_coefficient", "model_path", "artifact_dir")

    def __init__(
        self,
        cache_dir: Path | str | None = DEFAULT_CACHE_DIR,
        pca_dims: int | None = DEFAULT_PCA_DIMS,
        sif_coefficient: float | None = DEFAULT_SIF,
        model_path: Path | str | None = None,
        artifact_dir: Path | str | None = None,
    ) -> None:
        if pca_dims is not None and pca_dims < 2:
            raise ValueError(f"pca_dims must be >= 2 or None, got {pca_dims}")
        if sif_coefficient is not None and not 0 < sif_coefficient < 1:
            raise ValueError(f"sif_coefficient must be in (0, 1) or None, got {sif_coefficient}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.pca_dims = pca_dims
        self.sif_coefficient = sif_coefficient
        self.model_path = Path(model_path) if model_path is not None else None
        # Without a vector cache the distilled model is still worth keeping: it costs minutes to redo.
        self.artifact_dir = (Path(artifact_dir) if artifact_dir is not None
                             else (self.cache_dir or DEFAULT_CACHE_DIR) / STATIC_DIR)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self.distilled = False
        super()._init_runtime()

    # --- identity -------------------------------------------------------------------------

    @property
    def resolved_model_path(self) -> Path:
        return self.model_path if self.model_path is not None else default_model_path()

    @property
    def source_name(self) -> str:
        return "all-MiniLM-L6-v2" if self.model_path is None else self.resolved_model_path.name

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self._model_id = (f"static:{self.source_name}@{model_fingerprint(self.resolved_model_path)}"
                              f"|pca={self.pca_dims}|sif={self.sif_coefficient}"
                              f"|model2vec={_model2vec_version()}|mean|l2")
        return self._model_id

    @property
    def dim(self) -> int:
        """Known before the model loads (the cache needs it): PCA keeps ``pca_dims`` unless the source is narrower."""
        if self._model is not None:
            return int(self._model.dim)
        config = json.loads((self.resolved_model_path / "config.json").read_text(encoding="utf-8"))
        width = int(config.get("hidden_size") or config.get("dim") or config["d_model"])
        return width if self.pca_dims is None else min(self.pca_dims, width)

    @property
    def artifact_path(self) -> Path:
        key = hashlib.sha256(self.model_id.encode()).hexdigest()[:16]
        return self.artifact_dir / f"{self.source_name}-{key}"

    def params(self) -> dict[str, Any]:
        """Flat settings for experiment tracking."""
        return {"embedding_model_id": self.model_id, "embedding_kind": "static",
                "embedding_pca_dims": self.pca_dims, "embedding_sif_coefficient": self.sif_coefficient}

    # --- model ----------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The StaticModel: loaded from the kept folder, distilled into it first when absent."""
        with self._lock:
            if self._model is None:
                from model2vec import StaticModel

                folder = self.artifact_path
                if not (folder / MANIFEST).is_file():
                    self._distil(folder)
                    self.distilled = True
                self._model = StaticModel.from_pretrained(folder, normalize=True, quantize_to="float32",
                                                           force_download=False)
            return self._model

    def _distil(self, folder: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from model2vec.distill import distill

        static = distill(model_name=str(self.resolved_model_path), pca_dims=self.pca_dims,
                         sif_coefficient=self.sif_coefficient, device="cpu")
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            static.save_pretrained(staging)
            # mkdtemp makes a private folder: the kept model is for every process that reads this cache.
            staging.chmod(0o755)
            for file in staging.iterdir():
                file.chmod(0o644)
            # The manifest is written last: its presence is what says the folder is whole.
            (staging / MANIFEST).write_text(json.dumps({"model_id": self.model_id}, indent=1), encoding="utf-8")
            try:
                staging.rename(folder)
            except OSError:
                if not (folder / MANIFEST).is_file():  # not a concurrent winner: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def compute(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` with the static model, bypassing the cache."""
        if len(texts) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        model = self.model
        with self._lock:
            vectors = model.encode(list(texts), batch_size=_BATCH, use_multiprocessing=False,
                                   show_progress_bar=show_progress)
        return normalise(vectors)


@lru_cache(maxsize=8)
def _shared(cache_dir: Path | None, pca_dims: int | None, sif_coefficient: float | None,
            model_path: Path | None) -> StaticEmbedder:
    return StaticEmbedder(cache_dir=cache_dir, pca_dims=pca_dims, sif_coefficient=sif_coefficient,
                          model_path=model_path)


def get_static_embedder(
    cache_dir: Path | str | None = DEFAULT_CACHE_DIR,
    pca_dims: int | None = DEFAULT_PCA_DIMS,
    sif_coefficient: float | None = DEFAULT_SIF,
    model_path: Path | str | None = None,
) -> StaticEmbedder:
    """The process-wide :class:`StaticEmbedder` for these settings (one load per process)."""
    return _shared(Path(cache_dir) if cache_dir is not None else None, pca_dims, sif_coefficient,
                   Path(model_path) if model_path is not None else None)
