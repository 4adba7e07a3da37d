"""Tracing of the deal cycle: one MLflow trace per cycle, a span per step and per agent.

Spans are opened only when the cycle is traced (``tracking.trace``); the frontier client's own
CHAT_MODEL spans nest under the agent's span, across the threads the agents run in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from pricer.agents.config import AgentsConfig
from pricer.agents.estimators import AgentResult

log = logging.getLogger(__name__)


@contextmanager
def cycle_trace(config: AgentsConfig, experiment_id: str, cycle_id: str) -> Iterator[Any]:
    """The cycle's root span (None when tracing is off)."""
    if not config.tracking.trace:
        yield None
        return
    import mlflow

    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_span(name="deals.cycle", span_type="CHAIN") as root:
        root.set_inputs({"cycle_id": cycle_id, "feeds": len(config.feeds),
                         "threshold": config.planner.discount_threshold})
        mlflow.update_current_trace(tags={"pricer.cycle_id": cycle_id, "pricer.component": "deals"})
        yield root


def step_span(name: str, span_type: str, traced: bool) -> Any:
    if not traced:
        return nullcontext(None)
    import mlflow

    return mlflow.start_span(name=name, span_type=span_type)


def flush_traces(config: AgentsConfig) -> None:
    if not config.tracking.trace:
        return
    try:
        import mlflow

        mlflow.flush_trace_async_logging()
    except Exception:  # flushing is best effort: the trace is already handed to MLflow
        log.debug("trace flush failed", exc_info=True)


def rounded(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 2)


def annotate_agent(agent_span: Any, result: AgentResult, n: int) -> None:
    agent_span.set_inputs({"items": n, "model": result.model})
    attributes: dict[str, Any] = {"latency_s": result.latency_s, "answered": result.answered, "items": n}
    if result.model:
        attributes["model"] = result.model
    if result.input_tokens or result.output_tokens or result.cost_usd:
        # Plain attributes: the client's own CHAT_MODEL spans carry the usage MLflow sums per trace.
        attributes.update({"input_tokens": result.input_tokens, "output_tokens": result.output_tokens,
                           "cost_usd": result.cost_usd})
    if result.error:
        attributes["error"] = result.error
    attributes.update({f"extra.{k}": v for k, v in result.extra.items()})
    agent_span.set_attributes(attributes)
    agent_span.set_outputs({"estimates": [rounded(v) for v in result.estimates]})
