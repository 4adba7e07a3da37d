"""Which sentence embedding a consumer uses: ``kind: minilm`` or ``kind: static``, with typed settings.

The choice lives here, below every layer, because its consumers sit in sibling layers that may not
import each other (the model families in ``models``, the frontier's RAG config in ``frontier``, the
vector store in ``agents``). ``pricer.models.embeddings.embedder_for`` builds the embedder a choice names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field

from pricer.core.config import StrictModel


class MiniLMEmbedding(StrictModel):
    """all-MiniLM-L6-v2 run as a transformer (``pricer.models.embeddings.Embedder``): 384 dims."""

    kind: Literal["minilm"] = "minilm"
    max_tokens: int = Field(256, ge=2, description="tokens read per text (the model's own limit is 256)")
    batch_size: int = Field(32, gt=0, description="texts per forward pass, cut from texts sorted by tokens")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 where the CPU multiplies it natively, else fp32")
    model_path: Path | None = Field(None, description="a sentence-transformers folder (null: the shipped MiniLM)")


class StaticEmbedding(StrictModel):
    """A static (token-lookup) model distilled once from a transformer with model2vec
    (``pricer.models.static_embeddings``): a mean of per-token vectors, no forward pass."""

    kind: Literal["static"] = "static"
    pca_dims: int | None = Field(256, ge=2, description="dimensions kept by PCA at distillation (null: all)")
    sif_coefficient: float | None = Field(1e-4, gt=0, lt=1, description=(
        "SIF down-weighting of frequent tokens at distillation (null: none)"))
    model_path: Path | None = Field(None, description=(
        "the transformer folder distilled from (null: the shipped MiniLM)"))


EmbeddingConfig = Annotated[Union[MiniLMEmbedding, StaticEmbedding], Field(discriminator="kind")]  # noqa: UP007
