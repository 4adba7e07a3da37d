"""One raw product record -> a validated ``Product`` or a ``Rejection`` with its reason.

The parsing here is shared by every source (hub, local JSONL, demo): they all speak
the Amazon Reviews 2023 metadata layout, and they must reject the same things the
same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from typing import Any

from pricer.core.parsing import parse_amount

try:
    import orjson

    _loads = orjson.loads
    _JSONError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - orjson comes with prefect
    _loads = json.loads
    _JSONError = (ValueError,)


class Reason(StrEnum):
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    BROKEN_ENCODING = "broken_encoding"
    OVERSIZED = "oversized_record"
    MISSING_TITLE = "missing_title"
    MISSING_PRICE = "missing_price"
    UNPARSEABLE_PRICE = "unparseable_price"
    PRICE_OUT_OF_BAND = "price_out_of_band"
    TOO_LITTLE_TEXT = "too_little_text"
    DUPLICATE = "duplicate"
    BALANCED_OUT = "balanced_out"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str
    origin: str
    record: Any = None


@dataclass(frozen=True, slots=True)
class Product:
    title: str
    price: float
    category: str
    brand: str | None
    features: tuple[str, ...]
    description: tuple[str, ...]
    details: dict[str, Any] = field(hash=False)
    origin: str = ""
    source: str = ""


UNKNOWN_CATEGORY = "Unknown"
# Mojibake left by UTF-8 bytes decoded as cp1252/latin-1, and the replacement character.
_MOJIBAKE = re.compile("\ufffd|Ã[\u0080-\u00bf]|â€|Â[\u00a0-\u00bf]")
# How sources write "no price": read as a missing price, not as a price that failed to parse.
_ABSENT_PRICES = frozenset({"", "none", "null", "nan", "-", "—"})
_CATEGORY_SEPARATORS = re.compile(r"[\s_]+")


def decode_line(raw: bytes | str, origin: str) -> Any | Rejection:
    """Bytes of one JSONL line -> the decoded JSON value, or why it cannot be read."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return Rejection(Reason.BROKEN_ENCODING, f"not UTF-8: {error.reason} at byte {error.start}", origin,
                             raw[:500].decode("utf-8", "replace"))
    try:
        return _loads(raw)
    except _JSONError as error:
        return Rejection(Reason.INVALID_JSON, str(error)[:200], origin, raw[:500])


def parse_price(value: Any) -> float | None | Rejection:
    """A record's price: dollars, None when absent ("None", "null", ""), or a Rejection when it is not one
    non-negative US amount (a range, prose, another currency: guessing would train on noise)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _ABSENT_PRICES):
        return None
    amount = parse_amount(value)
    if amount is None:
        return Rejection(Reason.UNPARSEABLE_PRICE, f"price {str(value)[:80]!r} is not one amount in dollars", "")
    return amount


def _strings(value: Any) -> tuple[str, ...]:
    """Lists of text in the wild are sometimes one string, sometimes nested or holding non-strings."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, list | tuple):
        return tuple(str(item) for item in value if item is not None and str(item).strip())
    return (str(value),)


def normalise_category(value: Any) -> str:
    """'Toys & Games', 'Toys_and_Games' and 'toys and games' are one category."""
    if not isinstance(value, str) or not value.strip():
        return UNKNOWN_CATEGORY
    words = _CATEGORY_SEPARATORS.split(value.replace("&", " and ").strip())
    return "_".join(word.capitalize() if word.lower() != "and" else "and" for word in words if word)


def _details(value: Any) -> dict[str, Any]:
    """A dict, or a JSON string of one (the hub's loader); the hub's struct columns fill absent keys with None."""
    if isinstance(value, str):
        try:
            value = _loads(value)
        except _JSONError:
            return {}
    if not isinstance(value, dict):
        return {}
    return {str(key): item for key, item in value.items() if item is not None}


def _brand(record: dict[str, Any], details: dict[str, Any]) -> str | None:
    for candidate in (details.get("Brand"), details.get("Manufacturer"), record.get("store")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def parse_record(record: Any, origin: str, max_raw_chars: int) -> Product | Rejection:
    """Validate one decoded record; the price band and text length are checked after cleaning."""
    if not isinstance(record, dict):
        return Rejection(Reason.NOT_AN_OBJECT, f"a record must be a JSON object, got {type(record).__name__}",
                         origin, str(record)[:500])
    title = record.get("title")
    if not isinstance(title, str) or not title.strip():
        return Rejection(Reason.MISSING_TITLE, "no title", origin, record)
    features, description = _strings(record.get("features")), _strings(record.get("description"))
    size = len(title) + sum(map(len, features)) + sum(map(len, description))
    if size > max_raw_chars:
        # Keep the quarantine row small: the reason and the title say enough.
        return Rejection(Reason.OVERSIZED, f"{size:,} characters of text (limit {max_raw_chars:,})", origin,
                         {"title": title[:300]})
    price = parse_price(record.get("price"))
    if price is None:
        return Rejection(Reason.MISSING_PRICE, "no price", origin, record)
    if isinstance(price, Rejection):
        return Rejection(price.reason, price.detail, origin, record)
    details = _details(record.get("details"))
    return Product(
        title=title.strip(),
        price=price,
        category=normalise_category(record.get("main_category")),
        brand=_brand(record, details),
        features=features,
        description=description,
        details=details,
        origin=origin,
        source=str(record.get("source") or ""),
    )


def has_broken_encoding(text: str) -> bool:
    """Mojibake all through the text, not the lone U+FFFD that a cut through an emoji leaves."""
    damage = sum(1 for _ in islice(_MOJIBAKE.finditer(text), 64))
    return damage >= 3 or damage * 200 > len(text)
