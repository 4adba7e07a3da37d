"""Deterministic identities, splits and sampling, all from hashes of the item itself.

A product's split depends only on its identity and the salt, never on what else is in
the data drop, so adding records never moves an old test item into training.
"""

from __future__ import annotations

import hashlib
import re

from pricer.data.config import SplitConfig

_SPACE = re.compile(r"\s+")


def item_id(title: str, brand: str | None) -> str:
    """Variants that share a title and brand share an id (and so a split): no leak across splits."""
    key = f"{_SPACE.sub(' ', title.strip().lower())}|{(brand or '').strip().lower()}"
    return hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()


def unit_hash(*parts: str) -> float:
    """A value in [0, 1) that is uniform over items and stable across runs and machines."""
    digest = hashlib.blake2b("|".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_split(identity: str, config: SplitConfig) -> str:
    position = unit_hash(config.salt, "split", identity)
    if position < config.test_fraction:
        return "test"
    if position < config.test_fraction + config.val_fraction:
        return "val"
    return "train"
