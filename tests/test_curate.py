"""Curation: each source, each reject reason, the hash split, token truncation, bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import requires_shared_data

from pricer.core.config import load_config, validate
from pricer.core.errors import ConfigError, SourceError
from pricer.data.config import (
    BalanceConfig,
    CurateConfig,
    DemoSourceConfig,
    HFSourceConfig,
    JsonlSourceConfig,
)
from pricer.data.curate import curate
from pricer.data.records import Reason, normalise_category, parse_price
from pricer.data.sources import read_source
from pricer.data.text import FULL_TEXT_CHARS, scrub
from pricer.data.tokenizer import builtin_tokenizer, truncate_to_tokens

LONG_TEXT = "A sturdy stainless steel kettle that boils water fast and keeps it warm for hours. "


def product(title: str, price, **extra) -> dict:
    return {"main_category": "Home_and_Kitchen", "title": title, "features": ["1.7 litre capacity"],
            "description": [LONG_TEXT * 2], "price": price, "details": {"Brand": "Acme"}, **extra}


def write_jsonl_gz(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as handle:
        for line in lines:
            handle.write(line + b"\n")
    return path


def config_for(tmp_path: Path, source, **overrides) -> CurateConfig:
    return CurateConfig(
        source=source,
        output_dir=tmp_path / "curated",
        quarantine_path=tmp_path / "quarantine.jsonl",
        report_path=tmp_path / "curation.json",
        **overrides,
    )


def read_split(tmp_path: Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "curated" / f"{split}.parquet")


def all_rows(tmp_path: Path) -> pd.DataFrame:
    return pd.concat([read_split(tmp_path, s).assign(split=s) for s in ("train", "val", "test")], ignore_index=True)


def quarantine(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]


def test_malformed_jsonl_gz_ends_in_quarantine_with_a_reason_per_row(tmp_path: Path) -> None:
    good = [json.dumps(product(f"Electric Kettle Model {i}", 20 + i)).encode() for i in range(5)]
    lines = [
        *good,
        b'{"title": "half a record", "price": ',                                          # bad JSON
        b'["a", "list", "not", "an", "object"]',                                           # not an object
        json.dumps(product("Kettle", 30.0)).encode().replace(b"Kettle", b"K\xe9ttle\xff"),  # not UTF-8
        json.dumps(product("Giant Manual", 12.0, description=["x" * 5_000_000])).encode(),   # 5 MB description
        json.dumps(product("No Price Kettle", None)).encode(),
        json.dumps(product("Priceless Kettle", "Currently unavailable")).encode(),
        json.dumps(product("Range Kettle", "10.99 - 24.99")).encode(),
        json.dumps(product("Dict Price Kettle", {"amount": 3})).encode(),                  # wrong type
        json.dumps(product("Cheap Kettle", 0.2)).encode(),
        json.dumps(product("Gold Kettle", 25_000)).encode(),
        json.dumps({"title": "Tiny", "price": 5.0}).encode(),                             # too little text
        json.dumps({"title": None, "price": 5.0, "description": [LONG_TEXT]}).encode(),
        json.dumps(product("Ã©Ã¨ Kettle Ã© â€™ Ã", 15.0)).encode(),                      # mojibake
        good[0],                                                                          # duplicate
        json.dumps(product("String Features Kettle", "$899.99", features="one string", details=["x"])).encode(),
    ]
    path = write_jsonl_gz(tmp_path / "bad.jsonl.gz", lines)

    report = curate(config_for(tmp_path, JsonlSourceConfig(paths=[path])))

    assert report["read"] == len(lines)
    assert report["kept"] + report["rejected"] == report["read"]
    assert report["kept"] == 6  # the five good ones and the "$899.99" one with odd field types
    assert report["rejected_by_reason"] == {
        "broken_encoding": 2, "duplicate": 1, "invalid_json": 1, "missing_price": 1, "missing_title": 1,
        "not_an_object": 1, "oversized_record": 1, "price_out_of_band": 2, "too_little_text": 1,
        "unparseable_price": 3,
    }
    rows = quarantine(tmp_path)
    assert len(rows) == report["rejected"]
    assert all(row["reason"] and row["detail"] and row["origin"].startswith("bad.jsonl.gz:") for row in rows)
    oversized = next(row for row in rows if row["reason"] == "oversized_record")
    assert len(json.dumps(oversized)) < 2000  # the 5 MB text is not copied into quarantine
    kept = all_rows(tmp_path)
    assert 899.99 in set(kept["price"])
    assert json.loads((tmp_path / "curation.json").read_text()) == report


def test_prompt_and_completion_follow_the_design(tmp_path: Path) -> None:
    path = write_jsonl_gz(tmp_path / "one.jsonl.gz", [json.dumps(product("Steel Kettle", 42.49)).encode()])
    curate(config_for(tmp_path, JsonlSourceConfig(paths=[path]), split={"test_fraction": 0.1, "val_fraction": 0.0}))
    row = all_rows(tmp_path).iloc[0]
    assert row["prompt"] == f"How much does this cost to the nearest dollar?\n\n{row['text']}\n\nPrice is $"
    assert row["completion"] == "42.00"
    assert row["text"].startswith("Steel Kettle")
    assert row["category"] == "Home_and_Kitchen" and row["brand"] == "Acme"


def test_demo_source_fills_every_split_and_quarantines_its_malformed_records(tmp_path: Path) -> None:
    report = curate(config_for(tmp_path, DemoSourceConfig(n_items=1500, seed=3)))
    assert report["read"] == 1500
    assert report["kept"] + report["rejected"] == 1500
    assert report["rejected"] > 0
    assert all(report["splits"][split] > 0 for split in ("train", "val", "test"))
    assert report["splits"]["train"] > 5 * report["splits"]["test"]
    assert len(report["categories"]) >= 8


def test_hash_split_is_stable_when_records_are_added(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    curate(config_for(first, DemoSourceConfig(n_items=800, seed=5)))
    curate(config_for(second, DemoSourceConfig(n_items=1600, seed=5)))
    before = all_rows(first).set_index(["id", "price"])["split"]
    after = all_rows(second).set_index(["id", "price"])["split"]
    assert len(after) > len(before)
    assert (after.loc[before.index] == before).all()


def test_variants_of_one_product_share_a_split(tmp_path: Path) -> None:
    lines = [json.dumps(product(f"Kettle {i % 40}", 10 + i)).encode() for i in range(400)]
    curate(config_for(tmp_path, JsonlSourceConfig(paths=[write_jsonl_gz(tmp_path / "v.jsonl.gz", lines)])))
    assert (all_rows(tmp_path).groupby("id")["split"].nunique() == 1).all()


def test_truncation_respects_the_token_budget(tmp_path: Path) -> None:
    tokenizer = builtin_tokenizer()
    long_text, short_text = "word " * 500, "a short text"
    texts, counts = truncate_to_tokens(tokenizer, [long_text, short_text], 32)
    assert counts[1] < 32 and texts[1] == short_text
    assert counts[0] == 32 and len(tokenizer(texts[0], add_special_tokens=False)["input_ids"]) <= 32
    assert long_text.startswith(texts[0])

    lines = [json.dumps(product("Long Kettle", 50.0, description=[LONG_TEXT * 40])).encode()]
    report = curate(config_for(tmp_path, JsonlSourceConfig(paths=[write_jsonl_gz(tmp_path / "l.jsonl.gz", lines)]),
                               max_tokens=24))
    row = all_rows(tmp_path).iloc[0]
    assert row["token_count"] == 24 and report["tokens"]["at_budget"] == 1
    assert len(tokenizer(row["text"], add_special_tokens=False)["input_ids"]) <= 25
    # The traditional models' text keeps the description the token budget cut, up to a deal's length.
    assert row["full_text"].startswith(row["text"]) and len(row["full_text"]) > 4 * len(row["text"])
    assert len(row["full_text"]) <= FULL_TEXT_CHARS


def test_balance_downsamples_the_configured_band_deterministically(tmp_path: Path) -> None:
    source = DemoSourceConfig(n_items=1500, seed=9)
    full = curate(config_for(tmp_path / "full", source))
    cfg = config_for(tmp_path / "balanced", source, balance=BalanceConfig(band_keep={25.0: 0.25}))
    balanced, again = curate(cfg), curate(cfg)
    assert balanced == again
    assert 0 < balanced["rejected_by_reason"]["balanced_out"] < full["kept"]
    cheap = lambda root: (all_rows(root)["price"] < 25).sum()
    assert cheap(tmp_path / "balanced") < 0.4 * cheap(tmp_path / "full")
    assert (all_rows(tmp_path / "balanced")["price"] >= 25).sum() == (all_rows(tmp_path / "full")["price"] >= 25).sum()


def test_text_scrub_drops_part_numbers_and_boilerplate() -> None:
    assert scrub("Product Description Fits model WPW10314173 and ABC-12345X perfectly  .") == "Fits model and perfectly."
    assert scrub("𝐁𝐎𝐋𝐃 claims") == "BOLD claims"
    assert scrub("short 1234 and 2.5mm stay") == "short 1234 and 2.5mm stay"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(12.5, 12.5), ("$1,299.99", 1299.99), ("19", 19.0), (None, None), ("None", None), ("", None)],
)
def test_parse_price_accepts_what_sources_write(raw, expected) -> None:
    assert parse_price(raw) == expected


@pytest.mark.parametrize("raw", ["N/A", "10 - 20", "from $5", float("nan"), [3]])
def test_parse_price_rejects_what_is_not_one_price(raw) -> None:
    assert parse_price(raw).reason is Reason.UNPARSEABLE_PRICE


def test_categories_from_different_sources_are_harmonised() -> None:
    assert normalise_category("Toys & Games") == normalise_category("Toys_and_Games") == "Toys_and_Games"
    assert normalise_category(None) == "Unknown"


def test_a_bad_config_names_the_field_and_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"curate\.max_price"):
        bad = tmp_path / "params.yaml"
        bad.write_text("curate:\n  max_price: -3\n")
        from pricer.stages.params import Params

        load_config(Params, bad)
    with pytest.raises(ConfigError, match="source"):
        validate(CurateConfig, {"source": {"kind": "ftp"}})
    with pytest.raises(ConfigError, match="min_price"):
        validate(CurateConfig, {"min_price": 50, "max_price": 10})


def test_missing_jsonl_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        list(read_source(JsonlSourceConfig(paths=[tmp_path / "nope.jsonl"])))


def test_hf_source_reads_the_hub_files_and_fails_clearly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SourceError, match="raw_meta_Appliances"):
        next(read_source(HFSourceConfig(categories=["Appliances"], limit_per_category=5)))


def test_real_amazon_file_curates_without_losing_rows(tmp_path: Path) -> None:
    path = requires_shared_data("amazon_us.jsonl.gz")
    report = curate(config_for(tmp_path, JsonlSourceConfig(paths=[path], limit=3000)))
    assert report["read"] == 3000 and report["kept"] + report["rejected"] == 3000
    assert report["kept"] > 2900
