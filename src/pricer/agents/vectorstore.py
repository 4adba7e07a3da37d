"""The products the frontier agent retrieves from: a Chroma collection of the curated training split.

Built with the project's embedding path (the kind ``vectorstore.embedding`` names, through
``pricer.models.embeddings.embedder_for``: unit-length vectors, so cosine distance = 1 - dot
product) and persisted under ``data/vectorstore``. The build is incremental: ids already in the
collection are never embedded again, and a source file whose digest matches the one recorded at
the last sync is not even re-read beyond its hash. The collection records which embedder filled
it: another one lives in another space, so it rebuilds the store. Each record keeps the product text (the document), its price, category and title.

The text embedded and stored is each product's longest one (``pricer.core.schema.texts``: the curated
``full_text``, up to 2,000 characters), not the token-budgeted ``text``: a deal is priced, and looked up,
with a text that long, and the baselines have already embedded exactly these texts with the same
settings, so after ``pricer baselines`` building the store reads the embedding cache instead of
running MiniLM again (minutes on the demo's 4,600 training products on 2 cores).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pricer.agents.config import ChromaServerConfig
from pricer.core.files import file_digest
from pricer.core.schema import texts as product_texts
from pricer.core.secrets import secret_from_env
from pricer.models.embedding_cache import DEFAULT_CACHE_DIR

log = logging.getLogger(__name__)

_SYNC_META = "pricer_source_digest"
_EMBEDDER_META = "pricer_embedder"


def default_embedder() -> Any:
    from pricer.models.embeddings import embedder_for

    return embedder_for()


def configured_store(settings: Any, root: Path | None = None,
                     cache_dir: Path | str | None = DEFAULT_CACHE_DIR) -> ProductStore:
    """The store a ``VectorStoreConfig`` describes, with the embedder its ``embedding`` names (relative paths
    under ``root``; ``cache_dir``: the embedder's vector cache, default the shared one, None for none)."""
    from pricer.models.embeddings import embedder_for

    embedder = embedder_for(settings.embedding, cache_dir)
    return ProductStore((root or Path()) / settings.path, settings.collection, embedder=embedder,
                        batch_size=settings.batch_size, server=settings.server)


@dataclass
class SyncReport:
    source_rows: int
    already_present: int
    added: int
    seconds: float
    skipped_unchanged: bool = False
    products: int = 0  # in the store after the sync


class ProductStore:
    """A persistent Chroma collection of products with prices; ``neighbours`` answers RAG queries."""

    def __init__(
        self, path: str | Path, collection: str = "products", embedder: Any = None, batch_size: int = 256,
        server: ChromaServerConfig | None = None,
    ) -> None:
        self.path = Path(path)
        self.server = server
        self.collection_name = collection
        self.batch_size = batch_size
        self._embedder = embedder
        self._client: Any = None
        self._collection: Any = None

    # ---- plumbing ---------------------------------------------------------------------------

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    @property
    def collection(self) -> Any:
        if self._collection is None:
            import chromadb
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False, allow_reset=False)
            if self.server is not None:
                token = secret_from_env("vectorstore.server.token_env", self.server.token_env)
                self._client = chromadb.HttpClient(
                    host=self.server.host, port=self.server.port, ssl=self.server.ssl, settings=settings,
                    headers={"Authorization": f"Bearer {token}"} if token else None)
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
            # embedding_function=None: vectors always come from our embedder, never Chroma's download.
            self._collection = self._client.get_or_create_collection(
                self.collection_name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
            )
        return self._collection

    @property
    def location(self) -> str:
        """Where the collection lives, for logs: the server's address or the embedded store's folder."""
        if self.server is None:
            return str(self.path)
        return f"{'https' if self.server.ssl else 'http'}://{self.server.host}:{self.server.port}"

    def count(self) -> int:
        return int(self.collection.count())

    def _max_batch(self) -> int:
        self.collection  # noqa: B018 - opens the client
        try:
            return max(1, min(self.batch_size, int(self._client.get_max_batch_size())))
        except Exception:  # noqa: BLE001 - older clients lack it: our own batch size is safe
            return self.batch_size

    # ---- building ---------------------------------------------------------------------------

    def _existing(self, ids: Sequence[str]) -> set[str]:
        present: set[str] = set()
        step = self._max_batch()
        for start in range(0, len(ids), step):
            got = self.collection.get(ids=list(ids[start : start + step]), include=[])
            present.update(got["ids"])
        return present

    def sync(self, source: str | Path | pd.DataFrame, *, digest: str | None = None) -> SyncReport:
        """Add the products of ``source`` (a parquet path or a frame with id, text, price) not yet stored."""
        started = time.perf_counter()
        if not isinstance(source, pd.DataFrame):
            path = Path(source)
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist: curate the data first (pricer curate)")
            digest = digest or file_digest(path)
            stored = (self.collection.metadata or {}).get(_SYNC_META)
            if stored == digest and self.count() > 0 and not self._other_embedder():
                return SyncReport(self.count(), self.count(), 0, time.perf_counter() - started, True, self.count())
            items = pd.read_parquet(path)
        else:
            items = source
        missing = [column for column in ("id", "text", "price") if column not in items.columns]
        if missing:
            raise ValueError(f"the vector store needs columns id, text and price; missing {missing}")
        items = items.drop_duplicates("id").reset_index(drop=True)
        self._drop_if_other_embedder()
        ids = items["id"].astype(str).tolist()
        present = self._existing(ids)
        new = items[~items["id"].astype(str).isin(present)].reset_index(drop=True)
        step = self._max_batch()
        for start in range(0, len(new), step):
            batch = new.iloc[start : start + step]
            documents = product_texts(batch)
            vectors = np.asarray(self.embedder.embed(documents), dtype=np.float32)
            if vectors.shape[0] != len(batch):
                raise ValueError(f"the embedder returned {vectors.shape[0]} vectors for {len(batch)} texts")
            self.collection.upsert(
                ids=batch["id"].astype(str).tolist(),
                embeddings=vectors,
                documents=documents,
                metadatas=[_metadata(row) for row in batch.to_dict("records")],
            )
            log.info("vector store: embedded %d of %d new products", min(start + step, len(new)), len(new))
        self._record_sync(digest)
        report = SyncReport(len(items), len(present), len(new), time.perf_counter() - started, products=self.count())
        log.info(
            "vector store %s: %d products, %d added, %d already there (%.1f s)",
            self.location,
            self.count(),
            report.added,
            report.already_present,
            report.seconds,
        )
        return report

    def _record_sync(self, digest: str | None) -> None:
        metadata = dict(self.collection.metadata or {})
        metadata.pop("hnsw:space", None)  # the space lives in the configuration, not the metadata
        if digest is not None:
            metadata[_SYNC_META] = digest
        if (model_id := getattr(self.embedder, "model_id", None)) is not None:
            metadata[_EMBEDDER_META] = model_id
        if metadata:
            self.collection.modify(metadata=metadata)

    def _other_embedder(self) -> bool:
        stored = (self.collection.metadata or {}).get(_EMBEDDER_META)
        if stored is not None:
            return stored != getattr(self.embedder, "model_id", stored)
        # A store built before the embedder was recorded: only a width that differs gives another one away.
        dim = getattr(self.embedder, "dim", None)
        if dim is None or self.count() == 0:
            return False
        return len(self.collection.get(limit=1, include=["embeddings"])["embeddings"][0]) != dim

    def _drop_if_other_embedder(self) -> None:
        # Vectors of another embedder live in another space (another width, even): an incremental sync
        # would mix them, so the store starts again.
        if self._other_embedder():
            log.warning("vector store %s was built with another embedding: rebuilding it", self.location)
            self._client.delete_collection(self.collection_name)
            self._collection = None

    # ---- querying ---------------------------------------------------------------------------

    def neighbours(
        self, texts: Sequence[str], k: int, *, max_chars: int | None = None, vectors: np.ndarray | None = None
    ) -> list[list[tuple[str, float]]]:
        """The k most similar stored products of each text, as (text, price), best first."""
        if k <= 0 or not texts:
            return [[] for _ in texts]
        if vectors is None:
            vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        # No count() first: Chroma answers a store smaller than k + 1 (or empty) with what it has, and
        # the count cost as much as the query's own search (bench/scale.py).
        found = self.collection.query(query_embeddings=vectors, n_results=k + 1, include=["documents", "metadatas"])
        results: list[list[tuple[str, float]]] = []
        for text, documents, metadatas in zip(texts, found["documents"], found["metadatas"], strict=True):
            pairs = [
                (document[:max_chars] if max_chars else document, float(meta["price"]))
                for document, meta in zip(documents, metadatas, strict=True)
                if document != text  # never show a model the very item it prices
            ]
            results.append(pairs[:k])
        return results

    def projection(self, max_points: int = 3000, seed: int = 0, dims: int = 3) -> pd.DataFrame:
        """A PCA of (up to ``max_points``) stored vectors to ``dims`` axes: pc1..pcN, category, title, price."""
        axes = [f"pc{i + 1}" for i in range(dims)]
        columns = [*axes, "category", "title", "price"]
        total = self.count()
        if total == 0:
            return pd.DataFrame(columns=columns)
        got = self.collection.get(include=["embeddings", "metadatas"], limit=total)
        vectors = np.asarray(got["embeddings"], dtype=np.float32)
        metas = got["metadatas"]
        if len(vectors) > max_points:
            keep = np.sort(np.random.default_rng(seed).choice(len(vectors), max_points, replace=False))
            vectors = vectors[keep]
            metas = [metas[i] for i in keep]
        centred = vectors - vectors.mean(axis=0, keepdims=True)
        if len(centred) >= 2:
            _, _, components = np.linalg.svd(centred, full_matrices=False)
            points = centred @ components[:dims].T
            if points.shape[1] < dims:  # fewer points than axes: the missing ones are flat
                points = np.pad(points, ((0, 0), (0, dims - points.shape[1])))
        else:
            points = np.zeros((len(centred), dims), dtype=np.float32)
        return pd.DataFrame(
            {
                **{axis: points[:, i].astype(float) for i, axis in enumerate(axes)},
                "category": [str(meta.get("category") or "Unknown") for meta in metas],
                "title": [str(meta.get("title") or "") for meta in metas],
                "price": [float(meta.get("price") or 0.0) for meta in metas],
            }
        )


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "price": float(row["price"]),
        "category": str(row.get("category") or "Unknown"),
        "title": str(row.get("title") or "")[:300],
    }


def sync_store(config: Any, root: Path | None = None) -> SyncReport:
    """Build or update the store ``config.vectorstore`` (an ``AgentsConfig``) describes, from its source;
    its relative paths are under ``root`` (default: the working directory)."""
    settings, root = config.vectorstore, root or Path.cwd()
    return configured_store(settings, root).sync(root / settings.source)
