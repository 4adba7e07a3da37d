"""Batches prepared in worker processes, handed back in the order they were read.

Tokenizing and cleaning are CPU-bound Python and Rust that hold the GIL, so threads do not help;
processes do. At most ``workers + 1`` batches are in flight (one for each worker, and the next one
ready for whichever finishes first), so memory stays flat however long the stream is, and the source
is read only that far ahead of what has been written.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from pricer.data.config import CurateConfig
from pricer.data.prepare import Outcome, Preparer
from pricer.data.sources import RawRecord

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
    pending: deque[Future[list[Outcome]]] = deque()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                             initializer=_start, initargs=(config,)) as pool:
        try:
            for batch in batches:
                pending.append(pool.submit(_prepare, batch))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
