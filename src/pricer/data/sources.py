"""Data sources, chosen by ``kind``: each yields ``(origin, raw)`` pairs, one per record read.

``raw`` is whatever the source holds (bytes of a JSONL line, a dict from the hub or the
demo generator); ``pricer.data.records`` turns it into a product or a rejection, the same
way for every source. Sources stream: nothing holds a whole file in memory.

Every source is a ``SourceStream``: it counts the records it hands out, apart from whatever
consumes them, so curation can prove that each record read reached an output. A file that cannot
be read to its end (a truncated or corrupt ``.gz``) is a ``SourceFault`` of the stream, not a record.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from pricer.core.errors import SourceError
from pricer.data.config import DemoSourceConfig, HFSourceConfig, JsonlSourceConfig, SourceConfig

RawRecord = tuple[str, Any]
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")


@dataclass(frozen=True, slots=True)
class SourceFault:
    """Part of a source that could not be read: no record stands for it, so it is reported instead."""

    origin: str
    reason: str


class SourceStream(Iterator[RawRecord]):
    """A source's records and its own count of them, kept where they are handed out.

    The count is the curation check's independent side: the curator's kept + rejected must equal it,
    which a record lost between here and the outputs breaks.
    """

    def __init__(self, records: Iterable[RawRecord], faults: list[SourceFault] | None = None) -> None:
        self._records = iter(records)
        self.read = 0
        self.faults = faults if faults is not None else []

    def __next__(self) -> RawRecord:
        record = next(self._records)
        self.read += 1
        return record


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.name.endswith(JSONL_SUFFIXES)))
        elif path.exists():
            files.append(path)
        else:
            raise SourceError(f"jsonl source: {path} does not exist")
    if not files:
        raise SourceError(f"jsonl source: no {', '.join(JSONL_SUFFIXES)} files under {[str(p) for p in paths]}")
    return files


def jsonl_files(config: JsonlSourceConfig) -> list[Path]:
    """The files a jsonl source reads, in the order it reads them."""
    return _expand(config.paths)


def check_source(config: SourceConfig) -> None:
    """Fail now, with a SourceError naming the path, if a local source has nothing to read."""
    if isinstance(config, JsonlSourceConfig):
        _expand(config.paths)


def read_jsonl(config: JsonlSourceConfig) -> SourceStream:
    faults: list[SourceFault] = []

    def lines() -> Iterator[RawRecord]:
        for path in _expand(config.paths):
            gz = path.suffix == ".gz"
            number = 0
            try:
                with (gzip.open if gz else open)(path, "rb") as handle:
                    for number, line in enumerate(handle, start=1):
                        if line.strip():
                            yield f"{path.name}:{number}", line
            # A damaged file ends that file, not the run: its whole lines still count as read, and the
            # damage is reported as such rather than as a record that was never in the file.
            except EOFError as error:
                faults.append(SourceFault(path.name, f"truncated gzip: {error} (after line {number})"))
            except (OSError, zlib.error) as error:
                kind = "corrupt gzip" if gz else "unreadable file"
                faults.append(SourceFault(path.name, f"{kind}: {error} (after line {number})"))

    return SourceStream(islice(lines(), config.limit), faults)


def read_hf(config: HFSourceConfig) -> Iterator[RawRecord]:
    """Amazon Reviews 2023 ``raw_meta_<Category>`` subsets, streamed from the hub's JSONL files.

    The dataset's loading script cannot run under datasets >= 4, so the raw files are read
    with the generic ``json`` builder; its rows are the same records the ``jsonl`` source reads.
    """
    from datasets import load_dataset

    revision = f"@{config.revision}" if config.revision else ""
    for category in config.categories:
        url = f"hf://datasets/{config.dataset}{revision}/raw/meta_categories/meta_{category}.jsonl"
        try:
            dataset = load_dataset("json", data_files=url, split="train", streaming=config.streaming)
        except Exception as error:
            raise SourceError(f"hf source: cannot load raw_meta_{category} from {config.dataset}: {error}") from error
        for number, record in enumerate(islice(dataset, config.limit_per_category), start=1):
            yield f"raw_meta_{category}:{number}", record


def read_demo(config: DemoSourceConfig) -> Iterator[RawRecord]:
    from pricer.data.demo import generate_catalog

    for number, record in enumerate(generate_catalog(config.n_items, config.seed, config.malformed_fraction), 1):
        yield f"demo:{number}", record


def accepted_files(folder: Path | None) -> list[Path]:
    """The jsonl files in the accepted folder, in name order (none when it is unset or absent)."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(JSONL_SUFFIXES))


def chain_streams(streams: list[SourceStream]) -> SourceStream:
    """One stream of several, counted where it hands records out; each part's faults join it once read."""
    faults: list[SourceFault] = []

    def records() -> Iterator[RawRecord]:
        for stream in streams:
            yield from stream
            faults.extend(stream.faults)

    return SourceStream(records(), faults)


def read_source(config: SourceConfig) -> SourceStream:
    match config:
        case DemoSourceConfig():
            return SourceStream(read_demo(config))
        case JsonlSourceConfig():
            return read_jsonl(config)
        case HFSourceConfig():
            return SourceStream(read_hf(config))
    raise SourceError(f"unknown source kind: {config!r}")
