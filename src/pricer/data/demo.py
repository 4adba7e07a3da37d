"""A built-in, seeded product catalog so the whole pipeline runs offline with no data on disk.

``generate_catalog`` streams records in the raw Amazon Reviews 2023 metadata layout
(``main_category``, ``title``, ``features``, ``description``, ``price``, ``details``,
``store``, ``categories``, ``parent_asin``). ``main_category`` holds the Hugging Face
subset name (``"Tools_and_Home_Improvement"``) so category handling is the same for every source.

The hidden pricing rule, which a model has to recover from the text alone::

    price = base(product type)            # "Cordless Drill" ~ $90, "Guitar Picks" ~ $4
          * brand multiplier              # premium ~1.8-2.6x, mid ~0.9-1.2x, budget ~0.45-0.65x
          * spec multipliers              # capacity, wattage, voltage, size, pieces, pack count...
          * modifier multiplier           # "Mini" 0.7x ... "Commercial Grade" 1.9x
          * exp(N(0, 0.25))               # irreducible noise
    then rounded to a .99 ending (cents are kept below $1).

Every factor shows up in the title, bullets, description or details, so the text carries the
price up to the noise. Well-formed prices span about $0.20 to $3,000 with a median near $50.

About ``malformed_fraction`` of the records are broken the way scraped data is: missing,
textual, non-positive or ``"$1,299.99"``-style prices, empty titles, too little text, mojibake,
wrong field types, and a few values that are not dicts at all. About 0.5% are exact duplicates of
an earlier record and 0.5% repeat an earlier title at a different price. Nothing in a record says
which it is: finding them is the curation stage's job.

Record ``i`` depends only on ``(seed, i)``: the Mersenne Twister is reseeded from both for every
item, so a longer catalog starts with the shorter one and the stream holds nothing but the
current record (a duplicate regenerates its original instead of remembering it).
"""

from __future__ import annotations

import json
import math
import random
from _random import Random as _MersenneTwister  # the C base class of random.Random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pricer.data.damage import RawRecord, malform

__all__ = ["CATEGORIES", "RawRecord", "generate_catalog"]

NOISE_SIGMA = 0.25
DUPLICATE_FRACTION = 0.005
VARIANT_FRACTION = 0.005
# Duplicates point back at most this far, like re-listings that appear close together in a crawl.
_DUP_WINDOW = 2000
# Keeps per-item seeds of different catalog seeds apart (item indices stay far below 2**40).
_SEED_STRIDE = 1 << 40
_SOFT_CAP = 800.0
_TAU = 2.0 * math.pi
_mt_seed = _MersenneTwister.seed


# --- vocabulary: demo_catalog.json ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Axis:
    """One price-relevant spec: each option is (title token, multiplier)."""

    key: str | None  # the details key that repeats the token; None keeps it out of details
    options: tuple[tuple[str, float], ...]
    before_type: bool = False  # "55-Inch 4K Smart TV" reads better than "4K Smart TV, 55-Inch"


@dataclass(frozen=True, slots=True)
class _Type:
    name: str
    base: float  # dollars for a mid-tier brand, reference specs, no modifier
    weight_lb: float
    axes: tuple[_Axis, ...]
    path: tuple[str, ...]  # the "categories" breadcrumb below the department
    pick: float = 1.0  # how often it appears, relative to its category's other types
    modifiers: bool = True
    colored: bool = True
    part_number: bool = False  # replacement parts name the part they replace in the title


@dataclass(frozen=True, slots=True)
class _Category:
    name: str  # Hugging Face subset name, used as main_category
    display: str  # department name as Amazon shows it in breadcrumbs and sales ranks
    pick: float
    types: tuple[_Type, ...]
    premium: tuple[tuple[str, float], ...]
    mid: tuple[tuple[str, float], ...]
    budget: tuple[tuple[str, float], ...]
    hooks: tuple[str, ...]  # short selling points that pad titles: no price signal
    bullets: tuple[str, ...]
    sentences: tuple[str, ...]


def _pairs(rows: list[list[Any]]) -> tuple[tuple[str, float], ...]:
    return tuple((str(token), float(value)) for token, value in rows)


def _axis(spec: dict[str, Any]) -> _Axis:
    return _Axis(spec["key"], _pairs(spec["options"]), spec.get("before_type", False))


def _load_vocabulary() -> dict[str, Any]:
    """The catalog's words and numbers, from the data file shipped beside this module."""
    data = json.loads((Path(__file__).with_name("demo_catalog.json")).read_text(encoding="utf-8"))
    axes = {name: _axis(spec) for name, spec in data["axes"].items()}
    # One knob for the whole catalog's price level, so the bases in the file stay readable round numbers.
    level = float(data["price_level"])
    categories = tuple(
        _Category(
            category["name"], category["display"], float(category["pick"]),
            tuple(
                _Type(kind["name"], kind["base"] * level, float(kind["weight_lb"]),
                      tuple(axes[a] if isinstance(a, str) else _axis(a) for a in kind["axes"]),
                      tuple(kind["path"]), float(kind.get("pick", 1.0)), kind.get("modifiers", True),
                      kind.get("colored", True), kind.get("part_number", False))
                for kind in category["types"]
            ),
            _pairs(category["premium"]), _pairs(category["mid"]), _pairs(category["budget"]),
            tuple(category["hooks"]), tuple(category["bullets"]), tuple(category["sentences"]),
        )
        for category in data["categories"]
    )
    return {**data, "categories": categories}


_VOCABULARY = _load_vocabulary()
_CATALOG: tuple[_Category, ...] = _VOCABULARY["categories"]
_MODIFIERS = _pairs(_VOCABULARY["modifiers"])
_COLORS: tuple[str, ...] = tuple(_VOCABULARY["colors"])
_GENERIC_BULLETS: tuple[str, ...] = tuple(_VOCABULARY["generic_bullets"])
_GENERIC_SENTENCES: tuple[str, ...] = tuple(_VOCABULARY["generic_sentences"])
_MONTHS: tuple[str, ...] = tuple(_VOCABULARY["months"])
_NON_NUMERIC_PRICES: tuple[str, ...] = tuple(_VOCABULARY["non_numeric_prices"])
CATEGORIES: tuple[str, ...] = tuple(c.name for c in _CATALOG)

_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_ASIN_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASIN_PAIRS: tuple[str, ...] = tuple(a + b for a in _ASIN_CHARS for b in _ASIN_CHARS)  # 36**2 == 1296

# A flat (category, type) table with cumulative weights makes the per-record pick one bisect.
_PAIRS: tuple[tuple[_Category, _Type], ...] = tuple((c, t) for c in _CATALOG for t in c.types)
_CUM: list[float] = []
_acc = 0.0
for _c, _ty in _PAIRS:
    _acc += _c.pick * _ty.pick / sum(t.pick for t in _c.types)
    _CUM.append(_acc)
_TOTAL = _acc
del _acc

# Doubled pools let a record take k consecutive entries from a random start with one slice.
_BULLET_POOLS: dict[str, tuple[str, ...]] = {c.name: (c.bullets + _GENERIC_BULLETS) * 2 for c in _CATALOG}
_SENTENCE_POOLS: dict[str, tuple[str, ...]] = {
    c.name: (c.sentences + _GENERIC_SENTENCES) * 2 for c in _CATALOG
}


# --- one record -------------------------------------------------------------------------------


def _round_price(p: float) -> float:
    if p > _SOFT_CAP:
        # Big-ticket prices grow with the square root of the rule above the cap: a $5,000
        # fridge-sized tail would otherwise dominate any squared-error metric.
        p = _SOFT_CAP * math.sqrt(p / _SOFT_CAP)
    # Shelf prices: .99 endings above a dollar, dimes-plus-nine below it.
    if p >= 1.0:
        return round(math.floor(p) + 0.99, 2)
    return round(max(0.09, math.floor(p * 10) / 10 + 0.09), 2)


def _fill(template: str, fields: dict[str, str]) -> str:
    return template.format_map(fields) if "{" in template else template


def _weight_text(lb: float) -> str:
    if lb < 1.0:
        return f"{lb * 16:.1f} ounces" if lb >= 0.0625 else f"{lb * 16:.2f} ounces"
    return f"{lb:.2f} pounds" if lb < 10 else f"{lb:.1f} pounds"


def _asin(r: Callable[[], float]) -> str:
    return (
        f"B0{_ASIN_PAIRS[int(r() * 1296)]}{_ASIN_PAIRS[int(r() * 1296)]}"
        f"{_ASIN_PAIRS[int(r() * 1296)]}{_ASIN_PAIRS[int(r() * 1296)]}"
    )


def _clean_record(rng: random.Random) -> dict[str, Any]:
    """A well-formed record, priced by the hidden rule."""
    r = rng.random
    cat, pt = _PAIRS[bisect_right(_CUM, r() * _TOTAL)]

    tier = r()
    if tier < 0.25:
        brands = cat.premium
    elif tier < 0.7:
        brands = cat.mid
    else:
        brands = cat.budget
    brand, mult = brands[int(r() * len(brands))]

    pre: list[str] = []
    post: list[str] = []
    spec_details: list[tuple[str, str]] = []
    size = 1.0
    for axis in pt.axes:
        token, m = axis.options[int(r() * len(axis.options))]
        mult *= m
        size *= m
        if token:
            (pre if axis.before_type else post).append(token)
            if axis.key is not None:
                spec_details.append((axis.key, token))
    if pt.part_number:
        post.append(
            f"Replacement for {_LETTERS[int(r() * 23)]}{_LETTERS[int(r() * 23)]}{int(r() * 100):02d}X"
            f"{int(r() * 100000):05d}"
        )
    if pt.modifiers:
        modifier, m = _MODIFIERS[int(r() * len(_MODIFIERS))]
        mult *= m
        if modifier:
            pre.insert(0, modifier)
    color = _COLORS[int(r() * len(_COLORS))] if pt.colored else ""

    # Box-Muller by hand: Random.gauss caches its second value on the instance, which would tie
    # one record's noise to the next once the instance is reseeded and reused.
    noise = math.sqrt(-2.0 * math.log(1.0 - r())) * math.cos(_TAU * r())
    price = _round_price(pt.base * mult * math.exp(NOISE_SIGMA * noise))

    name = " ".join((*pre, pt.name)) if pre else pt.name
    hooks = cat.hooks
    hook = hooks[int(r() * len(hooks))]
    specs = ", ".join(post)
    style = r()  # text length: title-only, bullets-only, medium, long
    shape = int(r() * 4)
    if shape == 0:
        title = (
            f"{brand} {name}"
            + (f", {specs}" if specs else "")
            + f", {hook}"
            + (f", {color}" if color else "")
        )
    elif shape == 1:
        title = (
            f"{brand} {name} - {hook}" + (f", {specs}" if specs else "") + (f" ({color})" if color else "")
        )
    elif shape == 2:
        title = (
            f"{name} by {brand}"
            + (f" - {specs}" if specs else "")
            + f", {hook}"
            + (f", {color}" if color else "")
        )
    else:
        title = f"{brand} {name}" + (f" {specs}" if specs else "") + f" | {hook}"
    if style < 0.15:
        # Title-only listings on Amazon pack their selling points into the title.
        h = hooks.index(hook)
        extra = 1
        while len(title) < 70 and extra < len(hooks):
            title = f"{title}, {hooks[(h + extra) % len(hooks)]}"
            extra += 1
        title = f"{title} for {cat.display}" if len(title) < 70 else title

    fields = {"brand": brand, "pt": pt.name.lower(), "specs": specs or pt.name}
    features: list[str]
    description: list[str]
    if style < 0.15:
        features, description = [], []
    else:
        bpool = _BULLET_POOLS[cat.name]
        half = len(bpool) // 2
        start = int(r() * half)
        long_text = style >= 0.7
        k = 5 + int(r() * 4) if long_text else 2 + int(r() * 4)
        features = [_fill(b, fields) for b in bpool[start : start + k]]
        if specs and r() < 0.6:
            features.insert(int(r() * len(features)), f"SPECIFICATIONS: {name}, {specs}.")
        spool = _SENTENCE_POOLS[cat.name]
        shalf = len(spool) // 2
        if long_text:
            description = []
            for _ in range(2 + int(r() * 3)):
                s0 = int(r() * shalf)
                description.append(" ".join(_fill(s, fields) for s in spool[s0 : s0 + 3 + int(r() * 3)]))
        elif style < 0.3:
            description = []  # bullets only, as many real listings are
        else:
            s0 = int(r() * shalf)
            description = [" ".join(_fill(s, fields) for s in spool[s0 : s0 + 2 + int(r() * 3)])]

    weight = pt.weight_lb * (size**0.5) * (0.85 + 0.3 * r())
    side = (weight + 0.05) ** (1 / 3) * 6.0
    details: dict[str, Any] = {
        "Brand": brand,
        "Item Weight": _weight_text(weight),
        "Product Dimensions": f"{side * (0.8 + 0.8 * r()):.1f} x {side * (0.5 + 0.6 * r()):.1f} x "
        f"{side * (0.2 + 0.6 * r()):.1f} inches",
    }
    for key, value in spec_details:
        details[key] = value
    if color and r() < 0.5:
        details["Color"] = color
    if r() < 0.45:
        details["Item model number"] = (
            f"{_LETTERS[int(r() * 23)]}{_LETTERS[int(r() * 23)]}-{int(r() * 10000):04d}"
            f"{_LETTERS[int(r() * 23)]}{int(r() * 10)}"
        )
    rank = int(math.exp(2 + 11 * r()))
    bsr: dict[str, int] = {cat.display: rank}
    if r() < 0.7:
        bsr[pt.path[-1]] = max(1, rank // (5 + int(r() * 50)))
    details["Best Sellers Rank"] = bsr
    details["Date First Available"] = f"{_MONTHS[int(r() * 12)]} {1 + int(r() * 28)}, {2010 + int(r() * 14)}"
    if r() < 0.3:
        details["Is Discontinued By Manufacturer"] = "No"

    store_roll = r()
    store = brand if store_roll < 0.8 else (f"{brand} Store" if store_roll < 0.95 else None)
    return {
        # A sliver of real listings have no department.
        "main_category": cat.name if r() >= 0.01 else None,
        "title": title,
        "features": features,
        "description": description,
        "price": price,
        "details": details,
        "store": store,
        "categories": [cat.display, *pt.path] if r() < 0.75 else [],
        "parent_asin": _asin(r),
    }


# --- the stream -------------------------------------------------------------------------------


def _item(seed: int, i: int, malformed_fraction: float, rng: random.Random) -> RawRecord:
    # Seeding the C generator directly: constructing a random.Random per item costs a sixth of
    # the whole record, and nothing here uses the Python-level state (gauss) that seed() resets.
    _mt_seed(rng, (seed % (1 << 64)) * _SEED_STRIDE + i)
    r = rng.random
    # Drawn before anything else so a duplicate's choice never shifts the record's own content.
    role = r()
    back = r()
    if i > 0 and role < DUPLICATE_FRACTION + VARIANT_FRACTION:
        j = i - 1 - int(back * min(i, _DUP_WINDOW))
        original = _item(seed, j, malformed_fraction, random.Random())
        if role < DUPLICATE_FRACTION:
            return original
        if isinstance(original, dict):
            price = original.get("price")
            if isinstance(price, float) and price > 0 and isinstance(original.get("title"), str):
                # The same product re-listed by another seller: same text, its own price and ASIN.
                ratio = 1.1 + 0.4 * r()
                price *= ratio if r() < 0.5 else 1 / ratio
                return {**original, "price": _round_price(price), "parent_asin": _asin(r)}
    rec = _clean_record(rng)
    if r() < malformed_fraction:
        return malform(rng, rec, _NON_NUMERIC_PRICES)
    return rec


def generate_catalog(n_items: int, seed: int = 42, malformed_fraction: float = 0.03) -> Iterator[RawRecord]:
    """Stream ``n_items`` raw catalog records; mostly dicts, a few malformed values of any type.

    Record ``i`` depends only on ``(seed, i)``, so generating ``n + k`` items starts with the
    same ``n``. Memory use does not grow with ``n_items``. Bad arguments raise ``ValueError`` here,
    at the call, not at the first ``next``.
    """
    if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 0:
        raise ValueError(f"n_items must be a non-negative int, got {n_items!r}")
    if not 0.0 <= malformed_fraction <= 1.0:
        raise ValueError(f"malformed_fraction must be within [0, 1], got {malformed_fraction!r}")
    return _stream(n_items, seed, malformed_fraction)


def _stream(n_items: int, seed: int, malformed_fraction: float) -> Iterator[RawRecord]:
    rng = random.Random()
    for i in range(n_items):
        yield _item(seed, i, malformed_fraction, rng)
