"""The keys curation has already seen, on disk: an exact duplicate test whose memory does not grow.

A set in memory grows with every record read; SQLite keeps the keys in a file with a bounded page
cache, so a crawl of millions costs disk, not RAM. The answer is exact (a Bloom filter would drop a
false positive silently, and then kept + rejected would no longer be read).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Self

# SQLite's own default: a million keys (about 30 MB of file) cost ~8 us a record with it, ~7 with 8 MB,
# against ~1 ms a record for the rest of curation; pages beyond it are read back from the OS's file cache.
CACHE_KIB = 2048


class SeenKeys:
    """``add(identity, price)`` is True the first time a key is added and False ever after.

    Use it as a context manager around one batch (``with seen:``): the batch's inserts are one
    transaction, which is what makes per-key inserts fast.
    """

    def __init__(self, path: Path) -> None:
        # A scratch file for one run: nothing to recover after a crash, so no journal and no fsync.
        self._db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE",
                       f"cache_size = -{CACHE_KIB}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (identity TEXT NOT NULL, price REAL NOT NULL, "
                         "PRIMARY KEY (identity, price)) WITHOUT ROWID")

    def add(self, identity: str, price: float) -> bool:
        cursor = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (identity, price))
        return cursor.rowcount == 1

    def __enter__(self) -> Self:
        self._db.execute("BEGIN")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")

    def close(self) -> None:
        self._db.close()
