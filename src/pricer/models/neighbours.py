"""Nearest priced products: one cosine top-k search, shared by the kNN features and the frontier's retrieval.

``top_k`` is the search: rows are unit length (dense embeddings or sparse TF-IDF), so cosine is a dot
product, taken in blocks so memory stays bounded. ``NearestPrices`` summarises the neighbours' prices
as features; ``KnnPrice`` prices with them alone; ``NeighbourIndex`` returns the neighbours' texts and
prices themselves, for a prompt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from pydantic import Field
from scipy import sparse
from scipy.sparse import csr_matrix
from sklearn.base import BaseEstimator

from pricer.models.base import EmbeddingSpec, LogPriceModel, embed, sample_rows


def top_k(queries: np.ndarray | csr_matrix, vectors: np.ndarray | csr_matrix, k: int,
          block: int = 2048) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per block of queries: (first row, indices (rows, k), similarities (rows, k)), best first."""
    import torch  # its topk takes ~1/20 of numpy's argpartition + argsort on a (2048, 10k) block

    k = min(k, vectors.shape[0])
    for start in range(0, queries.shape[0], block):
        sims = queries[start:start + block] @ vectors.T
        sims = np.ascontiguousarray(sims.toarray() if sparse.issparse(sims) else sims)
        top_sims, top = torch.topk(torch.from_numpy(sims), k, dim=1)
        yield start, top.numpy(), top_sims.numpy()


class NearestPrices(BaseEstimator):
    """Cosine nearest neighbours summarised as log-price features: the similarity-weighted mean and
    median of the k nearest log prices, their spread, the nearest one's log price and similarity, and
    the mean similarity (how familiar the item is).

    The search is exact, so it costs queries x reference rows: ``max_reference`` keeps a seeded sample of
    at most that many reference rows (None: all), which keeps a large catalog's cost linear in N."""

    n_features = 6

    def __init__(self, k: int = 15, temperature: float = 0.05, max_reference: int | None = None,
                 seed: int = 0) -> None:
        self.k = k
        self.temperature = temperature
        self.max_reference = max_reference
        self.seed = seed

    def fit(self, vectors: np.ndarray | csr_matrix, y: np.ndarray) -> Self:
        vectors = sparse.csr_matrix(vectors) if sparse.issparse(vectors) else np.asarray(vectors, np.float32)
        y = np.asarray(y, dtype=float)
        rows = sample_rows(vectors.shape[0], self.max_reference, self.seed)
        sampled = len(rows) < vectors.shape[0]  # no copy of a whole reference set
        self.vectors_, self.y_ = (vectors[rows], y[rows]) if sampled else (vectors, y)
        return self

    def transform(self, vectors: np.ndarray | csr_matrix) -> np.ndarray:
        out = np.empty((vectors.shape[0], self.n_features))
        for start, top, top_sims in top_k(vectors, self.vectors_, self.k):
            prices = self.y_[top]
            # Softmax over similarity: a near-duplicate outweighs a loosely related item by far.
            weights = np.exp((top_sims - top_sims[:, :1]) / self.temperature)
            weights /= weights.sum(axis=1, keepdims=True)
            mean = (weights * prices).sum(axis=1)
            spread = np.sqrt((weights * (prices - mean[:, None]) ** 2).sum(axis=1))
            out[start:start + len(top)] = np.column_stack([
                mean, _weighted_median(prices, weights), spread,
                prices[:, 0], top_sims[:, 0], top_sims.mean(axis=1),
            ])
        return out


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    order = np.argsort(values, axis=1)
    values, weights = np.take_along_axis(values, order, 1), np.take_along_axis(weights, order, 1)
    below_half = np.cumsum(weights, axis=1) < 0.5 * weights.sum(axis=1, keepdims=True)
    return values[np.arange(len(values)), below_half.sum(axis=1)]


NEIGHBOUR_POOL = ("search neighbours among a seeded sample of at most this many training items (null: all): "
                  "the exact search costs N x pool, so without one a catalog's fit grows as N^2 (bench/scale.py)")


class KnnSpec(EmbeddingSpec):
    """The similarity-weighted mean log price of the k nearest training items in embedding space."""

    kind: Literal["knn"] = "knn"
    k: int = Field(15, gt=0, description="neighbours per item")
    temperature: float = Field(0.05, gt=0, description="the softmax temperature over similarities")
    neighbour_pool: int | None = Field(None, gt=0, description=NEIGHBOUR_POOL)

    def build(self) -> KnnPrice:
        return KnnPrice(self)


class KnnPrice(LogPriceModel):
    spec: KnnSpec

    def _fit_log(self, train: pd.DataFrame, y: np.ndarray) -> None:
        self.neighbours_ = NearestPrices(self.spec.k, self.spec.temperature,
                                        self.spec.neighbour_pool).fit(embed(train, self.spec.embedding), y)

    def predict_log(self, items: pd.DataFrame) -> np.ndarray:
        return self.neighbours_.transform(embed(items, self.spec.embedding))[:, 0]


@dataclass
class NeighbourIndex:
    """Training items, their prices and their unit vectors: the k nearest of a text, as (text, price)."""

    texts: list[str]
    prices: np.ndarray
    vectors: np.ndarray  # (n, d) float32, rows L2-normalised

    @classmethod
    def build(cls, items: pd.DataFrame, embedder: Any) -> NeighbourIndex:
        texts = items["text"].astype(str).tolist()
        vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
        if vectors.shape[0] != len(texts):
            raise ValueError(f"the embedder returned {vectors.shape[0]} vectors for {len(texts)} texts")
        return cls(texts, items["price"].to_numpy(dtype=float), vectors)

    def neighbours(self, texts: Sequence[str], k: int, embedder: Any) -> list[list[tuple[str, float]]]:
        if k <= 0 or not self.texts:
            return [[] for _ in texts]
        queries = np.asarray(embedder.embed(list(texts)), dtype=np.float32)
        found: list[list[tuple[str, float]]] = [[] for _ in texts]
        for start, top, _ in top_k(queries, self.vectors, k + 1):
            for row, indices in enumerate(top):
                text = texts[start + row]
                # Never show the model the very item it is asked about (it may be in the index).
                chosen = [int(i) for i in indices if self.texts[int(i)] != text][:k]
                found[start + row] = [(self.texts[i], float(self.prices[i])) for i in chosen]
        return found

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"text": self.texts, "price": self.prices}).to_parquet(folder / "items.parquet", index=False)
        np.save(folder / "vectors.npy", self.vectors)
        return folder

    @classmethod
    def load(cls, folder: Path) -> NeighbourIndex:
        items = pd.read_parquet(Path(folder) / "items.parquet")
        return cls(items["text"].tolist(), items["price"].to_numpy(dtype=float), np.load(Path(folder) / "vectors.npy"))
