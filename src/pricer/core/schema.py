"""The curated data's columns and splits, and the one view of them that every model and scorer shares.

A curated split holds, per product: ``id``, ``title``, ``category``, ``brand``, ``price`` (the target),
``text`` (cleaned and cut to the language models' token budget), ``full_text`` (the same cleaned text
up to a deal's 2,000 characters), ``prompt`` and ``completion`` (the language models' pair),
``token_count``, ``details`` (JSON), ``source`` and ``origin``.

What a registered model reads is ``MODEL_INPUTS``: ``text`` always, the others when a caller has them
(a deal scraped from the web has only text). ``model_inputs`` picks exactly those columns, so the
candidate, the champion it is compared with and every consumer are handed the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

SPLITS = ("train", "val", "test")
MODEL_INPUTS = ("text", "full_text", "category", "details", "prompt")


def column(items: pd.DataFrame, name: str) -> list[Any]:
    """The column's values, or Nones when the frame lacks it (NaN reads as None too)."""
    if name not in items.columns:
        return [None] * len(items)
    return [None if _missing(v) else v for v in items[name].tolist()]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def texts(items: pd.DataFrame) -> list[str]:
    """The longest text each item has: the curated ``full_text`` where present, else ``text`` (what a
    deal or an API caller sends, already up to a full description long)."""
    return [str(full if full is not None else short or "")
            for full, short in zip(column(items, "full_text"), column(items, "text"), strict=True)]


def model_inputs(items: pd.DataFrame) -> pd.DataFrame:
    """The columns of ``items`` that a registered model reads, in one order, index reset."""
    return items[[name for name in MODEL_INPUTS if name in items.columns]].reset_index(drop=True)


def rows_digest(items: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """sha256 of exactly these rows (every column, or ``columns``), in order: the identity of what was scored.

    Canonical JSON per row, so the digest does not depend on the file format, the pandas version or
    the rows around them: the same rows cut from a bigger split give the same digest.
    """
    names = sorted(columns if columns is not None else items.columns)
    digest = hashlib.sha256(json.dumps(names).encode())
    for row in items[names].itertuples(index=False, name=None):
        values = [None if _missing(value) else value for value in row]
        digest.update(json.dumps(values, default=str, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
