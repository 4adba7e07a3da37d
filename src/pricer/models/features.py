"""Feature engineering shared by the baseline models.

Every function here works from the ``text`` column alone: ``category``, ``brand``, ``title`` and
``details`` (a JSON string or a dict) are used when a frame carries them, because a deal scraped from
the web has nothing but text. Numbers missing from an item come out as NaN, so each model decides
how to impute them (tree models read NaN natively).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from pricer.core.schema import column, texts

__all__ = [
    "UNKNOWN_CATEGORY",
    "EngineeredFeatures",
    "best_sellers_ranks",
    "brand_of",
    "details_of",
    "log_prices",
    "parse_weight_pounds",
    "prompt_texts",
    "row_keys",
    "title_groups",
    "to_prices",
    "unit_features",
    "weight_pounds",
]

UNKNOWN_CATEGORY = "Unknown"


# --- the target: every log-space model goes through these two ------------------------------------


def log_prices(frame: pd.DataFrame) -> np.ndarray:
    """log1p of the prices: errors on a $5 cable and a $500 TV weigh alike, as MAE on skewed prices needs."""
    return np.log1p(frame["price"].to_numpy(dtype=float))


def to_prices(log_values: np.ndarray) -> np.ndarray:
    return np.clip(np.expm1(np.asarray(log_values, dtype=float)), 0.0, None)


# --- columns -----------------------------------------------------------------------------------------


def prompt_texts(items: pd.DataFrame) -> list[str]:
    """The ``text`` column alone: the language models' token-budgeted text, as the course's models read."""
    return [str(v) if v is not None else "" for v in column(items, "text")]


def row_keys(items: pd.DataFrame) -> list[str]:
    """A stable fingerprint per row (its text), to check which rows a fit has seen."""
    return [hashlib.sha1(t.encode()).hexdigest()[:16] for t in texts(items)]


def title_groups(items: pd.DataFrame) -> np.ndarray:
    """Group ids for out-of-fold splits: variants of one product share a title and must share a fold,
    or a leave-one-out price feature would read a sibling's price that the test split never offers."""
    pairs = zip(column(items, "title"), texts(items), strict=True)
    keys = [(str(title) if title else text.split("\n", 1)[0]).strip().lower() for title, text in pairs]
    return pd.factorize(pd.Series(keys))[0]


def details_of(items: pd.DataFrame) -> list[dict[str, Any]]:
    return [_as_dict(v) for v in column(items, "details")]


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


# --- single facts -----------------------------------------------------------------------------------

_NUMBER = r"(\d+(?:[.,]\d+)?)"
_POUNDS_PER = {"pound": 1.0, "lb": 1.0, "ounce": 1 / 16, "oz": 1 / 16, "kilogram": 2.20462, "kg": 2.20462,
               "gram": 0.00220462, "g": 0.00220462}
_WEIGHT = re.compile(rf"(?i){_NUMBER}\s*(pounds?|lbs?|ounces?|oz|kilograms?|kg|grams?|g)\b")
_TEXT_WEIGHT = re.compile(rf"(?i)\b(?:item |package |shipping )?weight\W{{0,3}}{_NUMBER}\s*"
                          r"(pounds?|lbs?|ounces?|oz|kilograms?|kg|grams?|g)\b")
_BRAND_IN_TEXT = re.compile(r"(?i)\bbrand:\s*([^;\n]{1,40})")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _pounds(match: re.Match[str] | None) -> float | None:
    return _number(match.group(1)) * _POUNDS_PER[match.group(2).lower().rstrip("s")] if match else None


def parse_weight_pounds(text: str) -> float | None:
    """The first weight in a string ("2 pounds", "12 ounces", "1.5 kg") in pounds."""
    return _pounds(_WEIGHT.search(text))


def weight_pounds(details: Mapping[str, Any], text: str) -> float | None:
    """Weight from details ("Item Weight", else the weight after ';' in "Product Dimensions"), else a
    "Weight: ..." phrase in the text, which is where curation put the details of text-only items."""
    for key in ("Item Weight", "Product Dimensions", "Package Dimensions"):
        value = details.get(key)
        if isinstance(value, str) and (pounds := parse_weight_pounds(value)) is not None:
            return pounds
    return _pounds(_TEXT_WEIGHT.search(text))


def best_sellers_ranks(details: Mapping[str, Any]) -> list[float]:
    ranks = details.get("Best Sellers Rank")
    if not isinstance(ranks, Mapping):
        return []
    out = []
    for value in ranks.values():
        try:
            out.append(float(str(value).replace(",", "")))
        except ValueError:
            continue
    return out


def brand_of(brand: Any, details: Mapping[str, Any], text: str) -> str | None:
    """Brand from the column, else details, else a "Brand: X" phrase in the text; lower-cased."""
    candidate = brand or details.get("Brand")
    if not candidate and (match := _BRAND_IN_TEXT.search(text)):
        candidate = match.group(1)
    candidate = str(candidate).strip().lower() if candidate else ""
    return candidate or None


# --- numbers and units that set a price: pack counts, watts, storage, screen size -----------------

_LITERS_PER = {"quart": 0.946, "qt": 0.946, "liter": 1.0, "litre": 1.0, "l": 1.0,
               "gallon": 3.785, "gal": 3.785}
# name -> (pattern, multiplier per unit word); a pattern without a unit group needs no multiplier.
_UNITS: dict[str, tuple[re.Pattern[str], Mapping[str, float] | None]] = {
    "pack_count": (re.compile(rf"(?i)\b(?:pack|set|box|case|bag|lot) of {_NUMBER}\b|\b{_NUMBER}[\s-]*"
                              r"(?:pack|pk|pcs|pieces?|count|ct|sets?|pairs?)\b"), None),
    "watts": (re.compile(rf"(?i)\b{_NUMBER}\s*(?:w|watts?)\b"), None),
    "volts": (re.compile(rf"(?i)\b{_NUMBER}\s*(?:v|volts?)\b"), None),
    "mah": (re.compile(rf"(?i)\b{_NUMBER}\s*mah\b"), None),
    "storage_gb": (re.compile(rf"(?i)\b{_NUMBER}\s*(gb|tb)\b"), {"gb": 1.0, "tb": 1000.0}),
    # Not a bare "in": "2 in 1" is everywhere in titles.
    "inches": (re.compile(rf"(?i)\b{_NUMBER}\s*(?:-?\s*inch(?:es)?\b|\")"), None),
    "feet": (re.compile(rf"(?i)\b{_NUMBER}\s*-?\s*(?:ft|feet|foot)\b"), None),
    "liters": (re.compile(rf"(?i)\b{_NUMBER}\s*(quarts?|qt|liters?|litres?|l|gallons?|gal)\b"), _LITERS_PER),
    "cubic_feet": (re.compile(rf"(?i)\b{_NUMBER}\s*(?:cu\.? ?ft|cubic feet)\b"), None),
}
_DIMENSIONS = re.compile(rf"(?i){_NUMBER}\s*\"?\s*[lwhd]?\s*x\s*{_NUMBER}\s*\"?\s*[lwhd]?\s*x\s*{_NUMBER}")
_TITLE_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _largest(pattern: re.Pattern[str], per_unit: Mapping[str, float] | None, text: str) -> float:
    values = []
    for match in pattern.finditer(text):
        number, *unit = [g for g in match.groups() if g is not None]
        values.append(_number(number) * (per_unit[unit[0].lower().rstrip("s")] if per_unit else 1.0))
    return max(values, default=math.nan)


def unit_features(text: str) -> dict[str, float]:
    """log1p of the largest value of each unit in the text (NaN when absent), the product volume in
    cubic inches from "L x W x H", and the count and size of numbers in the first (title) line."""
    out = {name: math.log1p(_largest(pattern, scale, text)) for name, (pattern, scale) in _UNITS.items()}
    dims = _DIMENSIONS.search(text)
    out["volume"] = math.log1p(math.prod(_number(g) for g in dims.groups())) if dims else math.nan
    numbers = [float(n) for n in _TITLE_NUMBER.findall(text.split("\n", 1)[0])]
    out["title_numbers"] = float(len(numbers))
    out["title_max_number"] = math.log1p(max(numbers)) if numbers else math.nan
    return out


# --- the transformer ----------------------------------------------------------------------------------


class EngineeredFeatures(TransformerMixin, BaseEstimator):
    """Hand-made numeric features: text size, weight, best-sellers rank, brand, category one-hot and
    unit numbers. ``n_top_brands`` most frequent training brands set the top-brand flag; categories
    seen at least ``min_category_count`` times get a one-hot column (others and missing: none)."""

    def __init__(self, n_top_brands: int = 50, min_category_count: int = 20) -> None:
        self.n_top_brands = n_top_brands
        self.min_category_count = min_category_count

    def fit(self, items: pd.DataFrame, y: Any = None) -> Self:
        rows = self._rows(items)
        brands = Counter(b for b in (r["brand"] for r in rows) if b)
        self.top_brands_ = frozenset(b for b, _ in brands.most_common(self.n_top_brands))
        categories = Counter(_category(c) for c in column(items, "category"))
        self.categories_ = sorted(
            c for c, n in categories.items() if n >= self.min_category_count and c != UNKNOWN_CATEGORY
        )
        empty = {"text": "", "details": {}, "brand": None}
        self.feature_names_ = [*self._numeric(empty), *(f"category={c}" for c in self.categories_)]
        return self

    def transform(self, items: pd.DataFrame) -> np.ndarray:
        rows = self._rows(items)
        index = {c: i for i, c in enumerate(self.categories_)}
        numeric = np.array([list(self._numeric(r).values()) for r in rows], dtype=float)
        numeric = numeric.reshape(len(rows), -1)
        onehot = np.zeros((len(rows), len(self.categories_)))
        for i, category in enumerate(_category(c) for c in column(items, "category")):
            if category in index:
                onehot[i, index[category]] = 1.0
        return np.hstack([numeric, onehot])

    def get_feature_names_out(self, input_features: Iterable[str] | None = None) -> np.ndarray:
        return np.asarray(self.feature_names_, dtype=object)

    @staticmethod
    def _rows(items: pd.DataFrame) -> list[dict[str, Any]]:
        rows = []
        for text, details, brand in zip(texts(items), details_of(items), column(items, "brand"), strict=True):
            rows.append({"text": text, "details": details, "brand": brand_of(brand, details, text)})
        return rows

    def _numeric(self, row: dict[str, Any]) -> dict[str, float]:
        text, details, brand = row["text"], row["details"], row["brand"]
        ranks = best_sellers_ranks(details)
        weight = weight_pounds(details, text)
        return {
            "log_text_chars": math.log1p(len(text)),
            "text_words": float(len(text.split())),
            "has_details": float(bool(details)),
            "log_weight_lb": math.log1p(weight) if weight is not None else math.nan,
            "log_rank_mean": math.log1p(float(np.mean(ranks))) if ranks else math.nan,
            "log_rank_min": math.log1p(min(ranks)) if ranks else math.nan,
            "has_brand": float(brand is not None),
            "top_brand": float(brand in self.top_brands_),
            **unit_features(text),
        }


def _category(value: Any) -> str:
    return str(value) if value else UNKNOWN_CATEGORY
