"""Files: content digests, JSON that any strict parser reads, and writes that are never seen half done.

Every output of the project is written aside and renamed into place (``os.replace`` is atomic on
POSIX), so a reader, or a process killed mid-write, sees the old content or the new, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """md5 of a file's bytes: the hash DVC records for an output, so the two can be matched."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where derived, rebuildable files go (tokenizers, converted models): ``$PRICER_CACHE`` or ~/.cache."""
    return Path(os.environ.get("PRICER_CACHE", Path.home() / ".cache" / "pricer"))


def json_safe(value: Any) -> Any:
    """Plain JSON data: NaN and infinities become null, paths strings, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _staging(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """A staging path to write ``path`` through: renamed into place when the block ends, removed if it raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging(path)
    try:
        yield staging
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write (and fsync) a file so that a reader sees the old content or the new, never half of it."""
    with staged_file(Path(path)) as staging, open(staging, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(data), indent=2) + "\n")


@contextmanager
def staged_dir(folder: Path, *, replace: bool = False) -> Iterator[Path]:
    """A staging folder that becomes ``folder`` when the block ends (removed if it raises).

    With ``replace``, an existing ``folder`` is swapped out (renamed aside, then removed); without it,
    a ``folder`` that another process published first is kept and this copy dropped: callers build
    the same content from the same inputs.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging, retired = _staging(folder), _staging(folder)
    try:
        staging.mkdir()
        yield staging
        if replace and folder.exists():
            folder.replace(retired)
        try:
            staging.replace(folder)
        except OSError:
            if not folder.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
