"""Price metrics for any model: ``compute_metrics`` runs the repo's ``evaluate`` metric module.

The module is loaded by path (``evaluate.load("mae")`` would fetch a script from the hub,
which is unreachable here) once per process and reused. Definitions, including how
unparseable estimates count, live in ``price_metrics/scoring.py``.
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pricer.evaluation.price_metrics.scoring import (
    COLOURS,
    GREEN,
    ORANGE,
    RED,
    colour_band,
    colour_bands,
    to_estimate,
)

if TYPE_CHECKING:
    import evaluate

__all__ = [
    "COLOURS",
    "GREEN",
    "METRIC_PATH",
    "ORANGE",
    "RED",
    "colour_band",
    "colour_bands",
    "compute_metrics",
    "load_price_metric",
    "to_estimate",
]

METRIC_PATH = Path(__file__).resolve().parent / "price_metrics"

# An evaluate module buffers predictions between add and compute: one caller at a time.
_compute_lock = threading.Lock()


def _import_evaluate() -> ModuleType:
    """Import ``evaluate`` without the ~7 s it spends importing torch through transformers.

    ``evaluate/__init__`` imports ``evaluate.evaluator``, which imports
    ``transformers.pipelines`` (and so torch) only to offer pipeline evaluators, and
    falls back to ``TRANSFORMERS_AVAILABLE = False`` on ImportError. Hiding that one
    module during the import takes the fallback; the entry is removed afterwards, so a
    later ``import transformers.pipelines`` elsewhere works as usual. Only
    ``evaluate.evaluator()`` is affected, and Pricer does not use it.
    """
    if "evaluate" in sys.modules or "transformers.pipelines" in sys.modules:
        return importlib.import_module("evaluate")
    sys.modules["transformers.pipelines"] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("evaluate")
    finally:
        sys.modules.pop("transformers.pipelines", None)


def load_price_metric() -> evaluate.EvaluationModule:
    """A fresh instance of the repo's metric module, loaded by path: no network involved."""
    # keep_in_memory: no Arrow cache files and file locks under ~/.cache for a few thousand floats.
    return _import_evaluate().load(str(METRIC_PATH), keep_in_memory=True)


_shared_metric = lru_cache(maxsize=1)(load_price_metric)


def compute_metrics(y_true: Sequence[float], y_pred: Sequence[float | None]) -> dict[str, float | int]:
    """mae, rmsle, hit_rate, r2, unparseable, n, green, orange, red for one model's estimates."""
    # Arrow takes None as a missing float; a string or inf from a sloppy model would fail the encoding.
    predictions = [None if math.isnan(estimate) else estimate for estimate in map(to_estimate, y_pred)]
    references = [float(price) for price in y_true]
    with _compute_lock, _prints_kept_out_of_run_logs():
        return _shared_metric().compute(predictions=predictions, references=references)


@contextmanager
def _prints_kept_out_of_run_logs() -> Iterator[None]:
    """Inside a Prefect run with ``log_prints``, turn it off for this block.

    ``evaluate`` fingerprints its buffer with ``datasets``' dill pickler, and dill finds a function's
    globals by printing its disassembly into a captured stdout. Prefect's print patch sends such
    prints to the run log instead: about fifteen lines of pyarrow bytecode at INFO in the main job.
    """
    from prefect.context import FlowRunContext, TaskRunContext

    with ExitStack() as contexts:
        for context in (FlowRunContext.get(), TaskRunContext.get()):
            if context is not None and context.log_prints:
                contexts.enter_context(context.model_copy(update={"log_prints": False}))
        yield
