"""Sharded curation: a jsonl source cut into shards, each curated on its own (anywhere: a dask worker),
then merged into outputs equal to one process's ``pricer.data.curate.curate`` on the same input.

A shard is one file of the source, or a range of its lines when ``shards.lines_per_shard`` asks for it;
the accepted inbox files follow as shards of their own, as one process reads them after the source.

What a shard cannot know is what came before it, so the merge settles the two rules that depend on it:

- duplicates: one process keeps the first occurrence in source order. Each shard drops its own
  duplicates; the merge walks the shards in source order with one key store and turns a row whose
  key an earlier shard already held into a ``duplicate`` rejection.
- balancing: the decision is a hash of the item alone (``pricer.data.prepare.balance_keeps``), but one
  process tests for a duplicate first, so a down-sampled item still claims its key. Shards therefore
  curate with balancing off (every first occurrence becomes a row, at the cost of tokenizing items the
  merge drops) and the merge applies the same test, in the same order: duplicate, then balance.

Every count is settled again (``kept + rejected == read``) and the outputs are published together
(``pricer.data.staging``), as by ``curate``. Quarantine lines keep source order: within a shard the
line numbers of the origins order them, and shards follow the source's file order.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import json
import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pricer.core.errors import ConfigError, DataError
from pricer.core.files import atomic_write_json, json_safe
from pricer.core.schema import SPLITS
from pricer.data.config import BalanceConfig, CurateConfig, JsonlSourceConfig
from pricer.data.curate import (
    HISTOGRAM_LABELS,
    PRICE_HISTOGRAM_EDGES,
    SCHEMA,
    CurationReport,
    curate,
    write_report,
)
from pricer.data.dedupe import SeenKeys
from pricer.data.prepare import balance_keeps, rejected
from pricer.data.records import Reason, Rejection
from pricer.data.sources import SourceFault, SourceStream, accepted_files, jsonl_files, read_jsonl
from pricer.data.staging import Staging

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Shard:
    """Lines ``start`` (1-based) up to ``stop`` (excluded; None: the end) of one file."""

    index: int
    path: str
    start: int = 1
    stop: int | None = None

    @property
    def name(self) -> str:
        return f"{self.index:05d}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _line_count(path: Path) -> int | None:
    """Physical lines of a file (None when it cannot be read to its end: the whole file is one shard)."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            count, last = 0, b"\n"
            while chunk := handle.read(1 << 20):
                count, last = count + chunk.count(b"\n"), chunk[-1:]
            return count + (last != b"\n")
    except (OSError, EOFError, ValueError):
        return None


def plan_shards(config: CurateConfig, root: Path) -> list[Shard]:
    """The shards of the configured jsonl source, then of the accepted inbox files, in reading order."""
    source = config.source
    if not isinstance(source, JsonlSourceConfig):
        raise ConfigError(f"curate.source: sharded curation reads jsonl sources, not kind {source.kind!r}")
    if source.limit is not None:
        raise ConfigError("curate.source.limit: a limit counts records across files; sharded curation needs null")
    files = jsonl_files(source)
    if config.accepted_dir is not None:
        files += accepted_files(root / config.accepted_dir)
    step = config.shards.lines_per_shard
    shards: list[Shard] = []
    for path in files:
        lines = _line_count(path) if step else None
        if lines is None or step is None or lines <= step:
            shards.append(Shard(len(shards), str(path.resolve())))
            continue
        for start in range(1, lines + 1, step):
            stop = start + step if start + step <= lines else None
            shards.append(Shard(len(shards), str(path.resolve()), start, stop))
    return shards


def _line_number(origin: str) -> int:
    return int(origin.rsplit(":", 1)[1])


def shard_stream(shard: Shard) -> SourceStream:
    """The shard's records, counted where they are handed out; its file's faults are the stream's."""
    inner = read_jsonl(JsonlSourceConfig(paths=[Path(shard.path)]))

    def records() -> Iterator[tuple[str, Any]]:
        for origin, raw in inner:
            number = _line_number(origin)
            if shard.stop is not None and number >= shard.stop:
                return
            if number >= shard.start:
                yield origin, raw

    return SourceStream(records(), inner.faults)


def shard_dir(config: CurateConfig, root: Path, shard: Shard) -> Path:
    return root / config.shards.work_dir / shard.name


def curate_shard(config: CurateConfig, root: Path, shard: Shard) -> Path:
    """Curate one shard into its own folder (splits, quarantine, report); balancing waits for the merge.

    A shard whose folder already holds the outputs of the same lines, settings and curation code is not
    curated again: a rerun after a kill or a failed merge picks up where the last one stopped."""
    folder = shard_dir(config, root, shard)
    shard_config = config.model_copy(update={
        "source": JsonlSourceConfig(paths=[Path(shard.path)]), "balance": BalanceConfig(), "accepted_dir": None,
        "workers": 1,  # the shards are the parallelism (and a dask worker's process may not fork a pool)
        "output_dir": folder, "quarantine_path": folder / "quarantine.jsonl", "report_path": folder / "report.json",
    })
    fingerprint = json_safe(_fingerprint(shard_config, shard))
    done = folder / DONE
    if done.exists() and json.loads(done.read_text()) == fingerprint:
        log.info("shard %s: already curated from the same lines and settings", shard.name)
        return folder
    report = curate(shard_config, root, shard_stream(shard))
    atomic_write_json(done, fingerprint)  # after the outputs: a kill between the two only redoes this shard
    log.info("shard %s (%s lines %d-%s): kept %d of %d", shard.name, Path(shard.path).name, shard.start,
             shard.stop or "end", report["kept"], report["read"])
    return folder


DONE = "shard.json"  # a finished shard's fingerprint, written once its outputs are all in place


def _fingerprint(shard_config: CurateConfig, shard: Shard) -> dict[str, Any]:
    """What a shard's outputs depend on: its lines (the file's size and mtime, as make and DVC's quick check
    read them), the settings and the curation code."""
    stat = Path(shard.path).stat()
    return {"shard": shard.to_dict(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "config": shard_config.model_dump(mode="json"), "code": _curation_code_digest()}


@lru_cache(maxsize=1)
def _curation_code_digest() -> str:
    digest = hashlib.sha256()
    for package in (Path(__file__).parent, Path(__file__).parents[1] / "core"):
        for path in sorted(package.glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


class _Merge:
    """The merge's running state: the key store, the report and what was written, counted as written."""

    def __init__(self, config: CurateConfig, seen: SeenKeys) -> None:
        self.config, self.seen = config, seen
        self.report = CurationReport()
        self.written: Counter[str] = Counter()

    def rows(self, folder: Path, split: str, writer: pq.ParquetWriter, extra: Path) -> None:
        """Write the split's rows that survive the cross-shard duplicate and balance tests; the others
        go to ``extra`` as quarantine lines, each after its line number, in source order."""
        with open(extra, "w", encoding="utf-8") as lines, closing(pq.ParquetFile(folder / f"{split}.parquet")) as file:
            for batch in file.iter_batches(batch_size=self.config.batch_size):
                kept: list[dict[str, Any]] = []
                with self.seen:
                    for row in batch.to_pylist():
                        outcome = self._test(row)
                        if outcome is None:
                            kept.append(row)
                            self._count(split, row)
                        else:
                            self.report.rejected[outcome.reason] += 1
                            lines.write(f"{_line_number(row['origin'])}\t{outcome.line}\n")
                if kept:
                    writer.write_table(pa.Table.from_pylist(kept, schema=SCHEMA))
                    self.written["kept"] += len(kept)

    def _test(self, row: dict[str, Any]) -> Any:
        record = {"title": row["title"], "price": row["price"]}
        if not self.seen.add(row["id"], row["price"]):
            return rejected(Rejection(Reason.DUPLICATE, f"same product and price as item {row['id']}",
                                      row["origin"], record))
        if not balance_keeps(self.config, row["id"], row["category"], row["price"]):
            return rejected(Rejection(Reason.BALANCED_OUT, "down-sampled by the balance settings", row["origin"],
                                      record))
        return None

    def _count(self, split: str, row: dict[str, Any]) -> None:
        report = self.report
        report.kept += 1
        report.splits[split] += 1
        report.categories[row["category"]] += 1
        report.price_histogram[HISTOGRAM_LABELS[bisect_right(PRICE_HISTOGRAM_EDGES[1:], row["price"])]] += 1
        report.tokens_total += row["token_count"]
        report.truncated += row["token_count"] == self.config.max_tokens


def _numbered(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            number, text = line.rstrip("\n").split("\t", 1)
            yield int(number), text


def _quarantined(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            text = line.rstrip("\n")
            yield _line_number(json.loads(text)["origin"]), text


def merge_shards(config: CurateConfig, root: Path, folders: list[Path]) -> dict[str, Any]:
    """The shards' outputs, in shard order, as one process would have written them; published together."""
    targets = {f"{name}.parquet": root / config.output_dir / f"{name}.parquet" for name in SPLITS}
    targets["quarantine.jsonl"] = root / config.quarantine_path
    report_path, metrics_path = root / config.report_path, root / config.metrics_path
    accepted = accepted_files(root / config.accepted_dir) if config.accepted_dir is not None else []
    with (
        Staging([*targets.values(), report_path, metrics_path]) as staging,
        closing(SeenKeys(staging.scratch("merge-seen.sqlite"))) as seen,
        ExitStack() as files,
    ):
        staged = {name: staging.path(path) for name, path in targets.items()}
        merge = _Merge(config, seen)
        writers = {name: pq.ParquetWriter(staged[f"{name}.parquet"], SCHEMA, compression="zstd") for name in SPLITS}
        for writer in writers.values():
            files.callback(writer.close)
        quarantine = files.enter_context(open(staged["quarantine.jsonl"], "w", encoding="utf-8"))
        faults: dict[tuple[str, str], None] = {}
        for folder in folders:
            shard = json.loads((folder / "report.json").read_text())
            merge.report.read += shard["read"]
            merge.report.rejected.update(shard["rejected_by_reason"])
            faults.update(dict.fromkeys((fault["origin"], fault["reason"]) for fault in shard["source_errors"]))
            extras = [staging.scratch(f"merge-{split}.lines") for split in SPLITS]
            for split, extra in zip(SPLITS, extras):
                merge.rows(folder, split, writers[split], extra)
            streams = [_quarantined(folder / "quarantine.jsonl"), *map(_numbered, extras)]
            for _, line in heapq.merge(*streams, key=lambda item: item[0]):
                quarantine.write(line + "\n")
                merge.written["rejected"] += 1
        for writer in writers.values():
            writer.close()
        quarantine.close()
        report = merge.report
        # A file cut into line ranges reports its damage from every range read up to it: once is enough.
        report.source_faults = [SourceFault(origin, reason) for origin, reason in faults]
        rejected_total = sum(report.rejected.values())
        written = (merge.written["kept"], merge.written["rejected"])
        if written != (report.kept, rejected_total) or report.kept + rejected_total != report.read:
            raise DataError(
                f"sharded curation lost records: the shards read {report.read:,}, but kept {report.kept:,} + "
                f"rejected {rejected_total:,} (written: {written[0]:,} rows, {written[1]:,} quarantine lines); "
                "no output was published")
        summary = write_report(report, staged, accepted, staging.path(report_path), staging.path(metrics_path))
        staging.publish()
    log.info("merged %d shards: kept %d of %d records (%d rejected)", len(folders), report.kept, report.read,
             summary["rejected"])
    return summary


def curate_sharded(config: CurateConfig, root: Path | None = None) -> dict[str, Any]:
    """Every shard in this process, one after another, then the merge: what the dask flow does, serially."""
    root = root or Path.cwd()
    folders = [curate_shard(config, root, shard) for shard in plan_shards(config, root)]
    return merge_shards(config, root, folders)
