"""Data sources, chosen by ``kind``: each yields ``(origin, raw)`` pairs, one per record read.

``raw`` is whatever the source holds (bytes of a JSONL line, a dict from the hub or the
demo generator); ``pricer.data.records`` turns it into a product or a rejection, the same
way for every source. Sources stream: nothing holds a whole file in memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from pricer.core.errors import SourceError
from pricer.data.config import DemoSourceConfig, HFSourceConfig, JsonlSourceConfig, SourceConfig

RawRecord = tuple[str, Any]
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")


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


def check_source(config: SourceConfig) -> None:
    """Fail now, with a SourceError naming the path, if a local source has nothing to read."""
    if isinstance(config, JsonlSourceConfig):
        _expand(config.paths)


def read_jsonl(config: JsonlSourceConfig) -> Iterator[RawRecord]:
    def lines() -> Iterator[RawRecord]:
        for path in _expand(config.paths):
            opener = gzip.open if path.suffix == ".gz" else open
            try:
                with opener(path, "rb") as handle:
                    for number, line in enumerate(handle, start=1):
                        if line.strip():
                            yield f"{path.name}:{number}", line
            except (OSError, EOFError) as error:
                # A truncated .gz ends the file, not the run: what was read still counts.
                yield f"{path.name}:eof", f"<unreadable remainder: {error}>".encode()

    return islice(lines(), config.limit)


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


def read_source(config: SourceConfig) -> Iterator[RawRecord]:
    match config:
        case DemoSourceConfig():
            return read_demo(config)
        case JsonlSourceConfig():
            return read_jsonl(config)
        case HFSourceConfig():
            return read_hf(config)
    raise SourceError(f"unknown source kind: {config!r}")
