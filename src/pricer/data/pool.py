"""Batches prepared in worker processes, handed back in the order they were read.

Tokenizing and cleaning are CPU-bound Python and Rust that hold the GIL, so threads do not help;
processes do. Each batch goes to the workers in chunks (``CHUNKS_PER_WORKER`` each), so they finish
it together rather than one idling while the other ends a whole batch, and at most two batches are in
flight (the one being waited for and the next, queued behind it), so memory stays flat however long
the stream is, and the source is read only that far ahead of what has been written. A record's
outcome does not depend on the records prepared with it, so the chunking changes no output.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from math import ceil

from pricer.data.config import CurateConfig
from pricer.data.prepare import Outcome, Preparer
from pricer.data.sources import RawRecord

CHUNKS_PER_WORKER = 8

_preparer: Preparer | None = None


def resolve_workers(workers: int) -> int:
    return workers or os.cpu_count() or 1


def _start(config: CurateConfig) -> None:
    global _preparer
    _preparer = Preparer(config)


def _prepare(batch: list[RawRecord]) -> list[Outcome]:
    assert _preparer is not None, "the pool's initializer sets the preparer"
    return _preparer(batch)


def prepared_batches(config: CurateConfig, batches: Iterable[list[RawRecord]]) -> Iterator[list[Outcome]]:
    """Each batch's outcomes, one per record, in order; in this process when one worker is asked for."""
    workers = resolve_workers(config.workers)
    if workers == 1:
        preparer = Preparer(config)
        for batch in batches:
            yield preparer(batch)
        return
    # fork, where there is one: a worker starts in milliseconds with the tokenizer already loaded,
    # where spawn would import transformers again in each.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pending: deque[list[Future[list[Outcome]]]] = deque()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                             initializer=_start, initargs=(config,)) as pool:
        try:
            for batch in batches:
                size = ceil(len(batch) / (workers * CHUNKS_PER_WORKER))
                pending.append([pool.submit(_prepare, batch[i:i + size]) for i in range(0, len(batch), size)])
                if len(pending) > 1:
                    yield _joined(pending.popleft())
            while pending:
                yield _joined(pending.popleft())
        finally:
            for futures in pending:
                for future in futures:
                    future.cancel()


def _joined(chunks: list[Future[list[Outcome]]]) -> list[Outcome]:
    return [outcome for chunk in chunks for outcome in chunk.result()]
