"""The built-in demo catalog: deterministic, streaming, realistically messy, and learnable."""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections import Counter
from itertools import islice
from typing import Any

import numpy as np
import pytest

from pricer.data.demo import CATEGORIES, generate_catalog

# Independent of the generator: what a curation stage would have to notice on its own.
_MOJIBAKE_MARKS = ("\ufffd", "Ã", "â€", "â„")


def _well_formed(rec: Any) -> bool:
    if not isinstance(rec, dict):
        return False
    price, title = rec.get("price"), rec.get("title")
    if not isinstance(price, float) or price <= 0:
        return False
    if not isinstance(title, str) or len(title.split()) < 3:
        return False
    for key, kind in (("features", list), ("description", list), ("details", dict), ("categories", list)):
        if not isinstance(rec.get(key), kind):
            return False
    text = " ".join([title, *rec["features"], *rec["description"]])
    return len(text) >= 60 and not any(mark in text for mark in _MOJIBAKE_MARKS)


def _text(rec: dict[str, Any]) -> str:
    return " ".join([rec["title"], *rec["features"], *rec["description"]])


@pytest.fixture(scope="module")
def clean() -> list[dict[str, Any]]:
    return list(generate_catalog(20_000, seed=42, malformed_fraction=0.0))


@pytest.fixture(scope="module")
def messy() -> list[Any]:
    return list(generate_catalog(4_000, seed=3, malformed_fraction=0.5))


def test_same_seed_same_sequence_and_other_seed_differs() -> None:
    first = list(generate_catalog(300, seed=7))
    assert first == list(generate_catalog(300, seed=7))
    assert first != list(generate_catalog(300, seed=8))


def test_longer_catalog_starts_with_shorter_one() -> None:
    assert list(generate_catalog(250, seed=11)) == list(generate_catalog(300, seed=11))[:250]
    # Negative seeds are valid and distinct.
    assert list(generate_catalog(20, seed=-11)) != list(generate_catalog(20, seed=11))


def test_streams_lazily() -> None:
    stream = generate_catalog(10**12)
    assert len(list(islice(stream, 5))) == 5  # would never return if it built the catalog first


@pytest.mark.parametrize(
    ("fraction", "n", "tolerance"), [(0.0, 3_000, 0.0), (0.03, 8_000, 0.012), (0.2, 3_000, 0.035)]
)
def test_malformed_share_follows_the_setting(fraction: float, n: int, tolerance: float) -> None:
    records = list(generate_catalog(n, seed=5, malformed_fraction=fraction))
    share = sum(not _well_formed(r) for r in records) / n
    assert abs(share - fraction) <= tolerance


def test_every_kind_of_damage_shows_up(messy: list[Any]) -> None:
    dicts = [r for r in messy if isinstance(r, dict)]
    prices = [r.get("price", "absent") for r in dicts]
    assert any(isinstance(r, str) for r in messy)
    assert any(isinstance(r, list) for r in messy)
    assert "absent" in prices and None in prices
    assert {"N/A", "Currently unavailable."} & {p for p in prices if isinstance(p, str)}
    assert any(isinstance(p, (int, float)) and p <= 0 for p in prices if p is not None and p != "absent")
    dollar = [p for p in prices if isinstance(p, str) and p.startswith("$")]
    assert any("," in p for p in dollar)
    assert all(float(p[1:].replace(",", "")) > 0 for p in dollar)  # such prices stay recoverable
    assert any(r.get("title") in (None, "", "   ") for r in dicts)
    assert any(isinstance(r.get("title"), str) and len(r["title"].split()) == 2 for r in dicts)
    assert any(isinstance(r.get("title"), str) and "\ufffd" in r["title"] for r in dicts)
    assert any(isinstance(r.get("title"), str) and "â" in r["title"] for r in dicts)
    assert any(isinstance(r.get("features"), str) for r in dicts)
    assert any(isinstance(r.get("details"), list) for r in dicts)


def test_well_formed_records_have_the_raw_layout(clean: list[dict[str, Any]]) -> None:
    assert all(_well_formed(r) for r in clean)
    keys = {
        "main_category",
        "title",
        "features",
        "description",
        "price",
        "details",
        "store",
        "categories",
        "parent_asin",
    }
    assert all(set(r) == keys for r in clean)
    assert all(re.fullmatch(r"B0[0-9A-Z]{8}", r["parent_asin"]) for r in clean)
    weight = re.compile(r"\d+(\.\d+)? (pounds|ounces)")
    for r in clean[:2000]:
        d = r["details"]
        assert d["Brand"] and weight.fullmatch(d["Item Weight"])
        assert re.fullmatch(r"[\d.]+ x [\d.]+ x [\d.]+ inches", d["Product Dimensions"])
        assert isinstance(d["Best Sellers Rank"], dict)
        assert all(isinstance(v, int) and v > 0 for v in d["Best Sellers Rank"].values())
        assert re.fullmatch(r"[A-Z][a-z]+ \d{1,2}, \d{4}", d["Date First Available"])
    models = [r["details"]["Item model number"] for r in clean if "Item model number" in r["details"]]
    assert 0.3 < len(models) / len(clean) < 0.6
    assert all(re.fullmatch(r"[A-Z]{2}-\d{4}[A-Z]\d", m) for m in models)


def test_at_least_eight_categories_and_varied_text(clean: list[dict[str, Any]]) -> None:
    seen = Counter(r["main_category"] for r in clean)
    assert len(CATEGORIES) >= 8
    assert set(CATEGORIES) <= set(seen)
    assert all(seen[c] > 0.04 * len(clean) for c in CATEGORIES)
    title_only = sum(not r["features"] and not r["description"] for r in clean)
    long_text = sum(len(r["description"]) >= 3 and len(r["features"]) >= 5 for r in clean)
    assert 0.1 < title_only / len(clean) < 0.2
    assert long_text / len(clean) > 0.1
    lengths = [len(_text(r)) for r in clean]
    assert min(lengths) < 150 and max(lengths) > 1500


def test_prices_span_a_wide_range(clean: list[dict[str, Any]]) -> None:
    prices = sorted(r["price"] for r in clean)
    n = len(prices)
    assert 40 <= statistics.median(prices) <= 60
    assert prices[n // 20] < 10 and prices[n * 19 // 20] > 200
    assert 0 < sum(p < 0.5 for p in prices) < 0.01 * n  # some work for the curation band filter
    assert 0 < sum(p > 999.49 for p in prices) < 0.03 * n
    assert max(prices) < 5000
    assert all(p < 1 or round(p % 1, 2) == 0.99 for p in prices)


def test_duplicates_and_repriced_variants(clean: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    exact = 0
    prices_by_title: dict[str, set[float]] = {}
    for r in clean:
        key = json.dumps(r, sort_keys=True)
        exact += key in seen
        seen.add(key)
        prices_by_title.setdefault(r["title"], set()).add(r["price"])
    assert 0.002 < exact / len(clean) < 0.01
    repriced = sum(len(p) > 1 for p in prices_by_title.values())
    assert 0.002 < repriced / len(clean) < 0.02


def test_a_simple_text_model_learns_the_price(clean: list[dict[str, Any]]) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    rows = clean[:3_500]
    texts = [_text(r) for r in rows]
    y = np.log([r["price"] for r in rows])
    # Single-character tokens kept: "6 Quart" and "2 Pack" carry price.
    vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform(texts[:3_000])
    model = Ridge(alpha=0.3).fit(x_train, y[:3_000])
    predicted = model.predict(vectorizer.transform(texts[3_000:]))
    mae_model = float(np.mean(np.abs(predicted - y[3_000:])))
    mae_mean = float(np.mean(np.abs(y[:3_000].mean() - y[3_000:])))
    assert mae_model < 0.7 * mae_mean  # about 0.4x at seed 42; the noise alone leaves ~0.2 in log MAE


def test_throughput_is_not_pathological() -> None:
    start = time.process_time()
    count = sum(1 for _ in generate_catalog(10_000, seed=1))
    rate = count / max(time.process_time() - start, 1e-9)
    assert rate > 5_000  # ~60k/s on one core; a loose floor that still catches per-record blowups


@pytest.mark.parametrize(
    "bad",
    [
        {"n_items": -1},
        {"n_items": 2.5},
        {"n_items": 10, "malformed_fraction": 1.5},
        {"n_items": 10, "malformed_fraction": -0.1},
    ],
)
def test_rejects_bad_arguments(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        generate_catalog(**bad)


def test_prices_are_plain_floats_with_cents(clean: list[dict[str, Any]]) -> None:
    assert all(math.isfinite(r["price"]) and r["price"] == round(r["price"], 2) for r in clean[:5000])
