"""The curation stage: raw records in, curated train/val/test Parquet, a quarantine file and a
report out. Streams in batches, so memory stays flat in the number of records: rows go to disk as
each batch ends, and the keys that find duplicates live in an SQLite file (``pricer.data.dedupe``).

Every record read ends in exactly one place: a split, or the quarantine file with its
reason. ``kept + rejected == read``, with ``read`` counted by the source itself, is checked
before the outputs are published (``pricer.data.staging``: all together, or none).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from itertools import islice, pairwise
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pricer.core.errors import DataError
from pricer.core.files import atomic_write_json, file_digest
from pricer.core.prompt import build_prompt, completion
from pricer.core.schema import SPLITS
from pricer.data.config import BalanceConfig, CurateConfig, JsonlSourceConfig
from pricer.data.dedupe import SeenKeys
from pricer.data.records import Product, Reason, Rejection, decode_line, has_broken_encoding, parse_record
from pricer.data.sources import (
    RawRecord,
    SourceFault,
    SourceStream,
    accepted_files,
    chain_streams,
    read_source,
)
from pricer.data.split import assign_split, item_id, unit_hash
from pricer.data.staging import Staging
from pricer.data.text import FULL_TEXT_CHARS, product_text
from pricer.data.tokenizer import load_tokenizer, truncate_to_tokens

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("text", pa.string()),
        ("full_text", pa.string()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("token_count", pa.int32()),
        ("details", pa.string()),
        ("source", pa.string()),
        ("origin", pa.string()),
    ]
)
# No tokenizer here averages more than this many characters per token on product text, so
# cutting the raw text to max_tokens * this before cleaning and tokenizing loses nothing.
CHARS_PER_TOKEN_CEILING = 6
PRICE_HISTOGRAM_EDGES = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, float("inf"))


@dataclass
class CurationReport:
    read: int = 0
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    price_histogram: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    tokens_total: int = 0
    source_faults: list[SourceFault] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": self.kept,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            # Parts of the source that held no readable record (a truncated .gz): not rows, so not in
            # read, kept or rejected, but never silent.
            "source_errors": [{"origin": fault.origin, "reason": fault.reason} for fault in self.source_faults],
            "splits": {name: self.splits[name] for name in SPLITS},
            "categories": dict(self.categories.most_common()),
            "price_histogram": {label: self.price_histogram[label] for label in HISTOGRAM_LABELS},
            "tokens": {
                "mean": round(self.tokens_total / self.kept, 2) if self.kept else 0.0,
                "at_budget": self.truncated,  # texts that filled the budget: nearly all were cut
            },
            "outputs": self.outputs,
        }

    def settle(self, source: SourceStream, written: Counter[str]) -> None:
        """Take the source's own count as ``read`` and check that every record read was written once.

        The two sides are counted apart: ``read`` where the source hands records out, kept and
        rejected where rows and quarantine lines are written, so a record lost in between fails here.
        """
        self.read, self.source_faults = source.read, list(source.faults)
        rejected = sum(self.rejected.values())
        if (written["kept"], written["rejected"]) != (self.kept, rejected) or self.kept + rejected != self.read:
            raise DataError(
                f"curation lost records: the source read {self.read:,}, but kept {self.kept:,} + rejected "
                f"{rejected:,} = {self.kept + rejected:,} (written: {written['kept']:,} rows, "
                f"{written['rejected']:,} quarantine lines); no output was published"
            )


HISTOGRAM_LABELS = tuple(
    f"{lo:g}-{hi:g}" if hi != float("inf") else f"{lo:g}+"
    for lo, hi in pairwise(PRICE_HISTOGRAM_EDGES)
)


def _histogram_label(price: float) -> str:
    for label, upper in zip(HISTOGRAM_LABELS, PRICE_HISTOGRAM_EDGES[1:]):
        if price < upper:
            return label
    raise ValueError(price)  # unreachable: the last edge is infinite


def _keep_fraction(config: CurateConfig, product: Product) -> float:
    fraction = config.balance.category_keep.get(product.category, 1.0)
    for upper, band_fraction in sorted(config.balance.band_keep.items()):
        if product.price < upper:
            return fraction * band_fraction
    return fraction


class Curator:
    """Turns a stream of raw records into curated rows and rejections, batch by batch."""

    def __init__(self, config: CurateConfig, seen: SeenKeys) -> None:
        self.config = config
        self.tokenizer = load_tokenizer(config.tokenizer)
        self.report = CurationReport()
        self._seen = seen

    def _screen(self, origin: str, raw: Any) -> Product | Rejection:
        record = decode_line(raw, origin) if isinstance(raw, bytes | str) else raw
        if isinstance(record, Rejection):
            return record
        product = parse_record(record, origin, self.config.max_raw_chars)
        if isinstance(product, Rejection):
            return product
        if not self.config.min_price <= product.price <= self.config.max_price:
            band = f"${self.config.min_price:g} to ${self.config.max_price:g}"
            return Rejection(Reason.PRICE_OUT_OF_BAND, f"price {product.price:g} outside {band}", origin, record)
        return product

    def _truncate(self, candidates: list[tuple[Product, str, str]]) -> tuple[list[str], list[int]]:
        budget = self.config.max_tokens
        texts, counts = truncate_to_tokens(self.tokenizer, [text for _, _, text in candidates], budget)
        # A text cut to characters that then ran short of the budget is redone in full (rare).
        short = [i for i, (product, _, text) in enumerate(candidates)
                 if counts[i] < budget and len(text) >= budget * CHARS_PER_TOKEN_CEILING - 1]
        if short:
            redone = truncate_to_tokens(self.tokenizer, [product_text(candidates[i][0]) for i in short], budget)
            for i, text, count in zip(short, *redone, strict=True):
                texts[i], counts[i] = text, count
        return texts, counts

    def process(self, batch: list[RawRecord]) -> tuple[dict[str, list[dict[str, Any]]], list[Rejection]]:
        with self._seen:
            rejections, candidates = self._filter(batch)
        return self._rows(candidates), self._count(rejections)

    def _filter(self, batch: list[RawRecord]) -> tuple[list[Rejection], list[tuple[Product, str, str]]]:
        rejections: list[Rejection] = []
        candidates: list[tuple[Product, str, str]] = []
        for origin, raw in batch:
            product = self._screen(origin, raw)
            if isinstance(product, Rejection):
                rejections.append(product)
                continue
            if has_broken_encoding(product.title + " ".join(product.description) + " ".join(product.features)):
                rejections.append(Rejection(Reason.BROKEN_ENCODING, "mojibake or U+FFFD in the text", origin, raw))
                continue
            text = product_text(product, self.config.max_tokens * CHARS_PER_TOKEN_CEILING)
            if len(text) < self.config.min_chars:
                detail = f"{len(text)} characters after cleaning (minimum {self.config.min_chars})"
                rejections.append(Rejection(Reason.TOO_LITTLE_TEXT, detail, origin, raw))
                continue
            identity = item_id(product.title, product.brand)
            if not self._seen.add(identity, product.price):
                rejections.append(Rejection(Reason.DUPLICATE, f"same product and price as item {identity}", origin,
                                            {"title": product.title, "price": product.price}))
                continue
            if unit_hash(self.config.split.salt, "balance", identity, f"{product.price}") >= _keep_fraction(
                self.config, product
            ):
                rejections.append(Rejection(Reason.BALANCED_OUT, "down-sampled by the balance settings", origin,
                                            {"title": product.title, "price": product.price}))
                continue
            candidates.append((product, identity, text))
        return rejections, candidates

    def _rows(self, candidates: list[tuple[Product, str, str]]) -> dict[str, list[dict[str, Any]]]:
        texts, counts = self._truncate(candidates)
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
        for (product, identity, _), text, count in zip(candidates, texts, counts, strict=True):
            split = assign_split(identity, self.config.split)
            rows[split].append(
                {
                    "id": identity,
                    "title": product.title,
                    "category": product.category,
                    "brand": product.brand,
                    "price": product.price,
                    "text": text,
                    "full_text": product_text(product, FULL_TEXT_CHARS),
                    "prompt": build_prompt(text),
                    "completion": completion(product.price),
                    "token_count": count,
                    "details": json.dumps(product.details, ensure_ascii=False, sort_keys=True, default=str),
                    "source": product.source,
                    "origin": product.origin,
                }
            )
            self.report.kept += 1
            self.report.splits[split] += 1
            self.report.categories[product.category] += 1
            self.report.price_histogram[_histogram_label(product.price)] += 1
            self.report.tokens_total += count
            self.report.truncated += count == self.config.max_tokens
        return rows

    def _count(self, rejections: list[Rejection]) -> list[Rejection]:
        for rejection in rejections:
            self.report.rejected[rejection.reason.value] += 1
        return rejections


def _batches(records: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


def _quarantine_line(rejection: Rejection) -> str:
    record = rejection.record
    if isinstance(record, bytes):
        record = record[:2000].decode("utf-8", "replace")
    entry = {"origin": rejection.origin, "reason": rejection.reason.value, "detail": rejection.detail, "record": record}
    return json.dumps(entry, ensure_ascii=False, default=str)


def curate(config: CurateConfig, root: Path | None = None, records: Iterable[RawRecord] | None = None) -> dict[str, Any]:
    """Run the stage; outputs appear only when all are complete (written aside, then renamed into place
    together), and a run that fails leaves the previous outputs and no staging file behind."""
    root = root or Path.cwd()
    targets = {f"{name}.parquet": root / config.output_dir / f"{name}.parquet" for name in SPLITS}
    targets["quarantine.jsonl"] = root / config.quarantine_path
    report_path, metrics_path = root / config.report_path, root / config.metrics_path
    accepted = accepted_files(root / config.accepted_dir) if config.accepted_dir is not None and records is None else []
    stream = _stream(config, records, accepted)
    with (
        Staging([*targets.values(), report_path, metrics_path]) as staging,
        closing(SeenKeys(staging.scratch("seen.sqlite"))) as seen,
    ):
        staged = {name: staging.path(path) for name, path in targets.items()}
        curator = Curator(config, seen)
        written = _write(curator, stream, staged, config.batch_size)
        report = curator.report
        report.settle(stream, written)
        report.outputs = {name: file_digest(path) for name, path in staged.items()}
        summary = report.to_dict()
        # Which accepted inbox files this data holds, by content: what a reviewer traces a retrain to.
        summary["accepted_files"] = {path.name: file_digest(path) for path in accepted}
        atomic_write_json(staging.path(report_path), summary)
        atomic_write_json(staging.path(metrics_path), {
            "read": summary["read"], "kept": summary["kept"], "rejected": summary["rejected"],
            "source_errors": len(summary["source_errors"]), **summary["splits"]})
        staging.publish()
    for fault in report.source_faults:
        log.warning("source error in %s: %s", fault.origin, fault.reason)
    log.info("curated %d of %d records (%d rejected)", report.kept, report.read, summary["rejected"])
    return summary


def _stream(config: CurateConfig, records: Iterable[RawRecord] | None, accepted: list[Path]) -> SourceStream:
    if isinstance(records, SourceStream):
        return records
    if records is not None:
        return SourceStream(records)
    if not accepted:
        return read_source(config.source)
    return chain_streams([read_source(config.source), read_source(JsonlSourceConfig(paths=accepted))])


def _write(curator: Curator, stream: SourceStream, staged: dict[str, Path], batch_size: int) -> Counter[str]:
    """Curate the stream into the staged files; what was written, counted as it is written."""
    written: Counter[str] = Counter()
    with ExitStack() as files:
        writers: dict[str, pq.ParquetWriter] = {}
        for name in SPLITS:
            writers[name] = pq.ParquetWriter(staged[f"{name}.parquet"], SCHEMA, compression="zstd")
            files.callback(writers[name].close)
        quarantine = files.enter_context(open(staged["quarantine.jsonl"], "w", encoding="utf-8"))
        progress = files.enter_context(tqdm(desc="curate", unit=" records", mininterval=2.0, disable=None))
        for batch in _batches(stream, batch_size):
            rows, rejections = curator.process(batch)
            for name, split_rows in rows.items():
                if split_rows:
                    table = pa.Table.from_pylist(split_rows, schema=SCHEMA)
                    writers[name].write_table(table)
                    written["kept"] += table.num_rows
            quarantine.writelines(_quarantine_line(r) + "\n" for r in rejections)
            written["rejected"] += len(rejections)
            progress.update(len(batch))
    return written


def clean_file(path: Path, config: CurateConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every usable item of one file under the curation rules, without balancing or writing splits,
    and the report of what was rejected and why (for scoring or drift checks on new data)."""
    config = config.model_copy(update={"source": JsonlSourceConfig(paths=[path]), "balance": BalanceConfig()})
    stream = read_source(config.source)
    kept: list[dict[str, Any]] = []
    written: Counter[str] = Counter()
    with (
        TemporaryDirectory(prefix="pricer-clean-") as scratch,
        closing(SeenKeys(Path(scratch) / "seen.sqlite")) as seen,
    ):
        curator = Curator(config, seen)
        for batch in _batches(stream, config.batch_size):
            rows, rejections = curator.process(batch)
            kept.extend(row for split_rows in rows.values() for row in split_rows)
            written["rejected"] += len(rejections)
    written["kept"] = len(kept)
    curator.report.settle(stream, written)
    return pd.DataFrame(kept, columns=SCHEMA.names), curator.report.to_dict()
