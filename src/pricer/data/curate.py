"""The curation stage: raw records in, curated train/val/test Parquet, a quarantine file and a
report out. Streams in batches, so memory stays flat in the number of records: rows go to disk as
each batch ends, and the keys that find duplicates live in an SQLite file (``pricer.data.dedupe``).

Every record read ends in exactly one place: a split, or the quarantine file with its
reason. ``kept + rejected == read``, with ``read`` counted by the source itself, is checked
before the outputs are published (``pricer.data.staging``: all together, or none).
"""

from __future__ import annotations

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
from pricer.core.schema import SPLITS
from pricer.data.config import BalanceConfig, CurateConfig, JsonlSourceConfig
from pricer.data.dedupe import SeenKeys
from pricer.data.pool import prepared_batches
from pricer.data.prepare import Outcome, Prepared, rejected
from pricer.data.records import Reason, Rejection
from pricer.data.sources import (
    RawRecord,
    SourceFault,
    SourceStream,
    accepted_files,
    chain_streams,
    read_source,
)
from pricer.data.staging import Staging

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


class Curator:
    """Turns batches of raw records into curated rows and quarantine lines, batch by batch, in order.

    Batches are prepared apart (``pricer.data.prepare``, in worker processes when ``workers`` asks for
    them); the duplicate test and the counts happen here, in record order, as they must.
    """

    def __init__(self, config: CurateConfig, seen: SeenKeys) -> None:
        self.config = config
        self.report = CurationReport()
        self._seen = seen

    def run(self, batches: Iterable[list[RawRecord]]) -> Iterator[tuple[dict[str, list[dict[str, Any]]], list[str]]]:
        """Each batch's rows by split and its quarantine lines."""
        for outcomes in prepared_batches(self.config, batches):
            with self._seen:
                result = self._settle(outcomes)
            yield result

    def _settle(self, outcomes: list[Outcome]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
        lines: list[str] = []
        for outcome in outcomes:
            if isinstance(outcome, Prepared):
                if not self._seen.add(outcome.identity, outcome.price):
                    outcome = rejected(Rejection(Reason.DUPLICATE, f"same product and price as item {outcome.identity}",
                                                 outcome.origin, {"title": outcome.title, "price": outcome.price}))
                elif outcome.row is None:
                    outcome = rejected(Rejection(Reason.BALANCED_OUT, "down-sampled by the balance settings",
                                                 outcome.origin, {"title": outcome.title, "price": outcome.price}))
                else:
                    self._keep(outcome.row, rows)
                    continue
            self.report.rejected[outcome.reason] += 1
            lines.append(outcome.line)
        return rows, lines

    def _keep(self, row: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> None:
        split = row.pop("split")
        rows[split].append(row)
        count = row["token_count"]
        self.report.kept += 1
        self.report.splits[split] += 1
        self.report.categories[row["category"]] += 1
        self.report.price_histogram[_histogram_label(row["price"])] += 1
        self.report.tokens_total += count
        self.report.truncated += count == self.config.max_tokens


def _batches(records: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


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
        summary = write_report(report, staged, accepted, staging.path(report_path), staging.path(metrics_path))
        staging.publish()
    for fault in report.source_faults:
        log.warning("source error in %s: %s", fault.origin, fault.reason)
    log.info("curated %d of %d records (%d rejected)", report.kept, report.read, summary["rejected"])
    return summary


def write_report(report: CurationReport, staged: dict[str, Path], accepted: list[Path], report_path: Path,
                 metrics_path: Path) -> dict[str, Any]:
    """Write the report (counts, output digests, accepted inbox files) and its numbers-only metrics file."""
    report.outputs = {name: file_digest(path) for name, path in staged.items()}
    summary = report.to_dict()
    # Which accepted inbox files this data holds, by content: what a reviewer traces a retrain to.
    summary["accepted_files"] = {path.name: file_digest(path) for path in accepted}
    atomic_write_json(report_path, summary)
    atomic_write_json(metrics_path, {
        "read": summary["read"], "kept": summary["kept"], "rejected": summary["rejected"],
        "source_errors": len(summary["source_errors"]), **summary["splits"]})
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
        for rows, lines in curator.run(_batches(stream, batch_size)):
            for name, split_rows in rows.items():
                if split_rows:
                    table = pa.Table.from_pylist(split_rows, schema=SCHEMA)
                    writers[name].write_table(table)
                    written["kept"] += table.num_rows
            quarantine.writelines(line + "\n" for line in lines)
            written["rejected"] += len(lines)
            progress.update(sum(map(len, rows.values())) + len(lines))
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
        for rows, lines in curator.run(_batches(stream, config.batch_size)):
            kept.extend(row for split_rows in rows.values() for row in split_rows)
            written["rejected"] += len(lines)
    written["kept"] = len(kept)
    curator.report.settle(stream, written)
    return pd.DataFrame(kept, columns=SCHEMA.names), curator.report.to_dict()
