"""MLflow spans of the frontier's chat calls, for the price client and the tool-calling chat alike.

A CHAT_MODEL span names its model and message format and, for a billed call, its token usage and cost
under MLflow's own attribute keys (the trace UI totals them); never the key or the headers.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from pricer.frontier.config import FrontierConfig


def tracing_wanted(config: FrontierConfig, run_id: str | None) -> bool:
    """Whether calls are traced: only into a store someone chose, since MLflow's fallback would drop an
    mlflow.db into the working directory."""
    if not config.trace:
        return False
    if run_id is not None or os.environ.get("MLFLOW_TRACKING_URI"):
        return True
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    return is_tracking_uri_set()


def start_span(traced: bool, name: str, span_type: str, *, run_id: str | None = None) -> AbstractContextManager:
    """A span under the active one; with no span active, a new trace, logged to ``run_id`` where one is
    given. ``nullcontext(None)`` when calls are not traced."""
    if not traced:
        return nullcontext(None)
    import mlflow

    kwargs: dict[str, Any] = {"name": name, "span_type": span_type}
    if run_id is not None and mlflow.get_current_active_span() is None:
        kwargs["run_id"] = run_id
    return mlflow.start_span(**kwargs)


def chat_attributes(config: FrontierConfig) -> dict[str, Any]:
    from mlflow.tracing.constant import SpanAttributeKey

    return {SpanAttributeKey.MODEL: config.model, SpanAttributeKey.MESSAGE_FORMAT: "openai"}


def usage_attributes(config: FrontierConfig, input_tokens: int, output_tokens: int, cost_usd: float) -> dict[str, Any]:
    from mlflow.tracing.constant import SpanAttributeKey

    return {
        SpanAttributeKey.CHAT_USAGE: {"input_tokens": input_tokens, "output_tokens": output_tokens,
                                      "total_tokens": input_tokens + output_tokens},
        SpanAttributeKey.LLM_COST: {"input_cost": input_tokens * config.usd_per_1m_input / 1e6,
                                    "output_cost": output_tokens * config.usd_per_1m_output / 1e6,
                                    "total_cost": cost_usd},
    }
