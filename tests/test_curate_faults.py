"""Curation under faults: memory that does not grow with the duplicate keys, runs that fail without
touching the previous outputs, damaged gzip files, and a count of what was read that a lost row breaks."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.test_curate import LONG_TEXT, all_rows, config_for, product, quarantine, write_jsonl_gz

import pricer.data.curate as curation
from pricer.core.errors import DataError
from pricer.core.files import file_digest
from pricer.data.config import BalanceConfig, CurateConfig, DemoSourceConfig, JsonlSourceConfig
from pricer.data.curate import clean_file, curate
from pricer.data.sources import read_source


def outputs(root: Path) -> dict[str, str]:
    """Every file under root (staging files included) with its digest."""
    return {str(path.relative_to(root)): file_digest(path) for path in sorted(root.rglob("*")) if path.is_file()}


def published(tmp_path: Path) -> dict[str, str]:
    curate(config_for(tmp_path, DemoSourceConfig(n_items=300, seed=1), batch_size=100))
    before = outputs(tmp_path)
    assert set(before) == {"curated/train.parquet", "curated/val.parquet", "curated/test.parquet",
                           "quarantine.jsonl", "curation.json", "curation/metrics.json"}
    return before


def unique_products(n: int) -> Iterator[tuple[str, dict]]:
    for i in range(n):
        yield f"gen:{i}", {"title": f"Steel Kettle Model {i}", "price": 10.0 + i % 500, "main_category": "Home",
                           "description": [LONG_TEXT], "details": {"Brand": "Acme"}}


def test_duplicate_keys_do_not_grow_memory(tmp_path: Path) -> None:
    # Every record is new and then balanced out, so the only state that could grow with the count is
    # the record of keys already seen (no rows, no tokenizing, one quarantine line each on disk).
    config = config_for(tmp_path, DemoSourceConfig(), balance=BalanceConfig(band_keep={1000.0: 0.0}), batch_size=1000)
    peaks = {}
    tracemalloc.start()
    try:
        for n in (3_000, 24_000):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            report = curate(config, records=unique_products(n))
            peaks[n] = tracemalloc.get_traced_memory()[1] - base
            assert report["rejected_by_reason"] == {"balanced_out": n}
    finally:
        tracemalloc.stop()
    # A set of (id, price) keys in memory costs ~200 bytes a key: 21,000 more keys would be ~4 MB.
    assert peaks[24_000] - peaks[3_000] < 1_000_000, peaks


def test_duplicates_are_found_within_and_across_batches(tmp_path: Path) -> None:
    lines = [json.dumps(product(f"Kettle {i % 7}", 20.0 + (i % 3))).encode() for i in range(50)]
    path = write_jsonl_gz(tmp_path / "dups.jsonl.gz", lines)
    report = curate(config_for(tmp_path, JsonlSourceConfig(paths=[path]), batch_size=4))
    assert report["kept"] == 21 and report["rejected_by_reason"] == {"duplicate": 29}
    first = {(f"Kettle {i % 7}", 20.0 + i % 3): f"dups.jsonl.gz:{i + 1}" for i in reversed(range(50))}
    assert set(all_rows(tmp_path)["origin"]) == set(first.values())  # the first of each, not a later copy


def test_a_source_that_fails_mid_way_leaves_previous_outputs_and_no_staging_file(tmp_path: Path) -> None:
    before = published(tmp_path)

    def failing() -> Iterator[tuple[str, object]]:
        for number, record in enumerate(read_source(DemoSourceConfig(n_items=500, seed=2)), start=1):
            if number == 250:
                raise RuntimeError("the feed went away")
            yield record

    with pytest.raises(RuntimeError, match="went away"):
        curate(config_for(tmp_path, DemoSourceConfig(), batch_size=100), records=failing())
    assert outputs(tmp_path) == before


def test_an_output_that_cannot_be_written_fails_before_any_output_is_replaced(tmp_path: Path) -> None:
    before = published(tmp_path)
    (tmp_path / "reports").write_text("a file where the report's folder should be")
    before["reports"] = file_digest(tmp_path / "reports")
    config = config_for(tmp_path, DemoSourceConfig(n_items=200, seed=3)).model_copy(
        update={"report_path": tmp_path / "reports" / "c.json"})
    with pytest.raises(OSError):
        curate(config)
    assert outputs(tmp_path) == before


def test_a_rename_that_fails_puts_back_the_outputs_already_replaced(tmp_path: Path) -> None:
    before = published(tmp_path)
    (tmp_path / "report-dir").mkdir()  # a folder where the report should go: os.replace onto it fails
    config = config_for(tmp_path, DemoSourceConfig(n_items=200, seed=3)).model_copy(
        update={"report_path": tmp_path / "report-dir"})
    with pytest.raises(OSError):
        curate(config)
    assert outputs(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curated", "curation", "curation.json",
                                                          "quarantine.jsonl", "report-dir"]


def truncated_gzip(path: Path, n_lines: int) -> tuple[Path, int]:
    lines = [json.dumps(product(f"Electric Kettle Model {i}", 20 + i % 50)).encode() for i in range(n_lines)]
    data = gzip.compress(b"\n".join(lines) + b"\n")
    path.write_bytes(data[: len(data) // 2])
    # The whole lines that the cut left, decompressed without the gzip reader under test.
    whole = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2]).count(b"\n")
    assert 0 < whole < n_lines
    return path, whole


def test_a_truncated_gzip_is_a_source_error_not_a_record(tmp_path: Path) -> None:
    path, whole = truncated_gzip(tmp_path / "cut.jsonl.gz", 400)
    report = curate(config_for(tmp_path, JsonlSourceConfig(paths=[path])))
    assert report["read"] == whole and report["kept"] + report["rejected"] == whole
    assert report["rejected_by_reason"].get("invalid_json", 0) == 0
    assert all(row["origin"] != "cut.jsonl.gz:eof" for row in quarantine(tmp_path))
    [error] = report["source_errors"]
    assert error["origin"] == "cut.jsonl.gz" and error["reason"].startswith("truncated gzip: ")
    assert f"after line {whole}" in error["reason"]


def test_a_file_that_is_not_gzip_is_a_source_error(tmp_path: Path) -> None:
    good = write_jsonl_gz(tmp_path / "good.jsonl.gz", [json.dumps(product("Steel Kettle", 30.0)).encode()])
    (tmp_path / "plain.jsonl.gz").write_text(json.dumps(product("Copper Kettle", 40.0)) + "\n")
    report = curate(config_for(tmp_path, JsonlSourceConfig(paths=[good, tmp_path / "plain.jsonl.gz"])))
    assert (report["read"], report["kept"], report["rejected"]) == (1, 1, 0)
    [error] = report["source_errors"]
    assert error["origin"] == "plain.jsonl.gz" and error["reason"].startswith("corrupt gzip: ")


def test_the_source_counts_what_it_hands_out_on_its_own() -> None:
    stream = read_source(DemoSourceConfig(n_items=50))
    assert stream.read == 0
    taken = [next(stream) for _ in range(20)]
    assert stream.read == len(taken) == 20
    assert sum(1 for _ in stream) == 30 and stream.read == 50


def lose_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """A curator fault: one record of the second batch disappears between the source and the screens."""
    batches = curation._batches

    def leaky(records, size):
        for number, batch in enumerate(batches(records, size)):
            yield batch[1:] if number == 1 else batch

    monkeypatch.setattr(curation, "_batches", leaky)


def test_a_row_lost_by_the_curator_fails_the_check_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = published(tmp_path)
    lose_a_row(monkeypatch)
    with pytest.raises(DataError, match=r"lost records: the source read 300, but kept \d+ \+ rejected \d+ = 299"):
        curate(config_for(tmp_path, DemoSourceConfig(n_items=300, seed=4), batch_size=100))
    assert outputs(tmp_path) == before


def test_a_row_lost_while_cleaning_a_file_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [json.dumps(product(f"Electric Kettle Model {i}", 20 + i)).encode() for i in range(30)]
    path = write_jsonl_gz(tmp_path / "new.jsonl.gz", lines)
    config = CurateConfig(batch_size=10)
    items, report = clean_file(path, config)
    assert len(items) == report["kept"] == 30 and report["read"] == 30
    lose_a_row(monkeypatch)
    with pytest.raises(DataError, match="lost records"):
        clean_file(path, config)
