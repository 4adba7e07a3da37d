"""What makes a paid API call never paid twice: a response cache and an append-only cost log.

The cache maps a request key (model, messages, sampling parameters) to the answer, one JSON file per
key written atomically, so a re-run is served from disk. The cost log holds one line per billable
call, keyed by its idempotency key, so a retried call is never recorded twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pricer.core.files import atomic_write_text
from pricer.frontier.messages import Messages

log = logging.getLogger(__name__)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(model: str, messages: Messages, params: Mapping[str, Any]) -> str:
    """The cache key of one request: sha256 of (model, messages, sampling parameters).

    The endpoint URL is not part of it: the same model name behind another URL (a proxy, a
    region) is taken to be the same model. Give local models distinct names.
    """
    payload = _canonical({"model": model, "messages": messages, "params": dict(params)})
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    """One JSON file per request key (sharded by its first two hex digits), written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("unreadable cache entry %s; it will be fetched again", path.name)
            return None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        atomic_write_text(self._path(key), _canonical(value))

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.exists() else 0


class CostLog:
    """Append-only JSONL, one line per billed response (by its id); a response already recorded is never
    recorded again, so a server's replay of an answer it already billed costs nothing here either."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._seen.add(entry.get("response_id") or entry["idempotency_key"])
                except (ValueError, KeyError, TypeError):
                    continue

    def record(self, entry: Mapping[str, Any]) -> bool:
        key = entry.get("response_id") or entry["idempotency_key"]
        line = (_canonical(entry) + "\n").encode("utf-8")
        with self._lock:
            if key in self._seen:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One write() on an O_APPEND descriptor: lines from several processes never interleave.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            self._seen.add(key)
            return True
