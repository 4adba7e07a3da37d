"""The price agents: each turns product texts into price estimates with one model family.

- ``RegistryAgent``: the ``@champion`` of a registered model (``pricer-specialist``,
  ``pricer-regressor``, or any other name), loaded as an MLflow pyfunc. The champion is looked
  up every time the agent is asked whether it is ready, and reloaded when the alias moved.
- ``FrontierAgent``: a frontier model behind an OpenAI-compatible endpoint
  (``configs/frontier/*.yaml``) with the k most similar curated products and their prices in
  the prompt, retrieved from the Chroma ``ProductStore``. The product text goes into the
  prompt only inside a delimited data block (``untrusted_block``).

An agent that cannot run (no champion registered, no endpoint configured, no API key) says
so in one log line, is skipped, and says so again only if the reason changes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pricer.agents.deals import UNTRUSTED_SYSTEM_SUFFIX, untrusted_block

log = logging.getLogger(__name__)


@dataclass
class AgentResult:
    """One agent's answers for a batch: NaN where it had none, plus what the call cost."""

    name: str
    estimates: list[float]
    latency_s: float
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return sum(1 for value in self.estimates if _usable(value))


class PriceAgent(Protocol):
    name: str

    def ready(self) -> bool: ...

    def estimate(self, texts: Sequence[str]) -> AgentResult: ...


def _usable(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def as_estimates(values: Any, n: int) -> list[float]:
    """Whatever a model returned -> n floats, NaN for anything that is not a positive finite price."""
    array = np.asarray(values, dtype=object).reshape(-1) if values is not None else np.array([])
    if len(array) != n:
        raise ValueError(f"the model returned {len(array)} estimates for {n} items")
    return [float(value) if _usable(value) else math.nan for value in array]


class _SkipLog:
    """Logs why an agent is skipped once, and again only when the reason (or readiness) changes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reason: str | None = None
        self.ready_as: str | None = None

    def skip(self, reason: str) -> bool:
        if reason != self.reason:
            log.warning("agent %s skipped: %s", self.name, reason)
            self.reason = reason
        return False

    def ok(self, what: str) -> bool:
        if self.reason is not None or what != self.ready_as:
            log.info("agent %s ready: %s", self.name, what)
        self.reason, self.ready_as = None, what
        return True


class RegistryAgent:
    """Prices with the ``@champion`` of one registered model (a pyfunc taking texts)."""

    def __init__(self, name: str, registered_name: str) -> None:
        self.name = name
        self.registered_name = registered_name
        self.model_uri: str | None = None
        self._model: Any = None
        self._skip = _SkipLog(name)

    def ready(self) -> bool:
        from pricer.tracking.registry import champion_uri

        try:
            uri = champion_uri(self.registered_name)
        except Exception as error:  # noqa: BLE001 - the registry itself is unreachable: skip, say why
            return self._skip.skip(f"cannot read the model registry ({type(error).__name__}: {error})")
        if uri is None:
            self._model, self.model_uri = None, None
            return self._skip.skip(f"no @champion registered for {self.registered_name}")
        if uri == self.model_uri and self._model is not None:
            return True
        try:
            import mlflow.pyfunc

            started = time.perf_counter()
            model = mlflow.pyfunc.load_model(uri)
        except Exception as error:  # noqa: BLE001 - any load failure skips the agent with its reason
            return self._skip.skip(f"{uri} failed to load ({type(error).__name__}: {error})")
        self._model, self.model_uri = model, uri
        return self._skip.ok(f"loaded {uri} in {time.perf_counter() - started:.1f} s")

    def estimate(self, texts: Sequence[str]) -> AgentResult:
        import pandas as pd

        started = time.perf_counter()
        if self._model is None and not self.ready():
            return AgentResult(self.name, [math.nan] * len(texts), 0.0, error="not ready")
        try:
            values = self._model.predict(pd.DataFrame({"text": [str(text) for text in texts]}))
            estimates = as_estimates(values, len(texts))
            error = None
        except Exception as exc:  # one agent failing leaves the others to price the deals
            log.exception("agent %s failed on %d items", self.name, len(texts))
            estimates, error = [math.nan] * len(texts), f"{type(exc).__name__}: {exc}"
        return AgentResult(
            self.name, estimates, time.perf_counter() - started, model=self.model_uri, error=error
        )


class FrontierAgent:
    """A frontier model with retrieval: similar curated products and their prices in the prompt."""

    def __init__(
        self,
        name: str,
        config_path: str | Path | None,
        store: Any = None,
        k_neighbours: int = 5,
        neighbour_chars: int | None = 1500,
        source: str | Path | None = None,
    ) -> None:
        self.name = name
        self.config_path = Path(config_path) if config_path else None
        self.store = store
        self.k = k_neighbours
        self.neighbour_chars = neighbour_chars
        self.source = Path(source) if source else None
        self.config: Any = None
        self._synced = False
        self._skip = _SkipLog(name)

    @property
    def model(self) -> str | None:
        return None if self.config is None else f"{self.config.name}:{self.config.model}"

    def ready(self) -> bool:
        from pricer.llm.frontier import FrontierError, load_frontier_config, resolve_api_key

        if self.config_path is None:
            return self._skip.skip("no frontier endpoint configured (agents.frontier.config is null)")
        if self.config is None:
            try:
                config = load_frontier_config(self.config_path)
            except Exception as error:  # noqa: BLE001 - a missing or bad file: skip, say why
                return self._skip.skip(str(error).splitlines()[0])
            # The scraped text is data: the system prompt says so, the user prompt fences it.
            self.config = config.model_copy(
                update={"system_prompt": config.system_prompt + UNTRUSTED_SYSTEM_SUFFIX}
            )
        try:
            resolve_api_key(self.config)  # only to check it is set; the client reads it again
        except FrontierError as error:
            return self._skip.skip(str(error))
        if self.k and self.store is not None and not self._synced:
            try:
                if self.source is not None:
                    self.store.sync(self.source)
                self._synced = True
            except Exception as error:  # noqa: BLE001 - price without neighbours rather than not at all
                log.warning(
                    "agent %s: the vector store could not be synced (%s); pricing without neighbours",
                    self.name,
                    error,
                )
                self._synced = True
                self.k = 0
        return self._skip.ok(
            f"{self.config.name} ({self.config.model} at {self.config.base_url or 'api.openai.com'})"
            f", {self.k} neighbours per prompt"
        )

    def neighbours(self, texts: Sequence[str]) -> list[list[tuple[str, float]]] | None:
        if not self.k or self.store is None:
            return None
        return self.store.neighbours(list(texts), self.k, max_chars=self.neighbour_chars)

    def estimate(self, texts: Sequence[str]) -> AgentResult:
        from pricer.llm.frontier import FrontierClient

        started = time.perf_counter()
        if self.config is None and not self.ready():
            return AgentResult(self.name, [math.nan] * len(texts), 0.0, error="not ready")
        try:
            neighbours = self._retrieve(texts)
            client = FrontierClient(self.config)
            prices = client.price_texts([untrusted_block(text) for text in texts], neighbours)
            estimates = as_estimates(prices, len(texts))
            totals = client.totals
            return AgentResult(
                self.name,
                estimates,
                time.perf_counter() - started,
                model=self.model,
                input_tokens=totals.input_tokens,
                output_tokens=totals.output_tokens,
                cost_usd=totals.cost_usd,
                extra={
                    "cache_hits": totals.cache_hits,
                    "failed_calls": totals.failed_calls,
                    "neighbours": self.k if neighbours else 0,
                },
            )
        except Exception as exc:
            log.exception("agent %s failed on %d items", self.name, len(texts))
            return AgentResult(
                self.name,
                [math.nan] * len(texts),
                time.perf_counter() - started,
                model=self.model,
                error=f"{type(exc).__name__}: {exc}",
            )

    def _retrieve(self, texts: Sequence[str]) -> list[list[tuple[str, float]]] | None:
        if not self.k or self.store is None:
            return None
        import mlflow

        if mlflow.get_current_active_span() is None:  # traced only inside a planner cycle's trace
            return self.neighbours(texts)
        with mlflow.start_span(name="vectorstore.neighbours", span_type="RETRIEVER") as span:
            started = time.perf_counter()
            found = self.neighbours(texts)
            span.set_inputs({"items": len(texts), "k": self.k})
            span.set_attributes({"latency_s": time.perf_counter() - started})
            span.set_outputs({"neighbours": [len(item) for item in found or []]})
            return found


def build_agents(config: Any, *, store: Any = None) -> list[PriceAgent]:
    """The agents ``configs/agents.yaml`` enables, in the order specialist, frontier, regressor."""
    from pricer.agents.vectorstore import ProductStore

    section = config.agents
    agents: list[PriceAgent] = []
    for name in ("specialist", "frontier", "regressor"):
        if getattr(section, name) is None:
            log.info("agent %s disabled: agents.%s is null in the config", name, name)
    if section.specialist is not None:
        agents.append(RegistryAgent("specialist", section.specialist.model))
    if section.frontier is not None:
        if store is None and section.frontier.k_neighbours:
            vs = config.vectorstore
            store = ProductStore(vs.path, vs.collection, batch_size=vs.batch_size)
        agents.append(
            FrontierAgent(
                "frontier",
                section.frontier.config,
                store,
                section.frontier.k_neighbours,
                config.vectorstore.max_text_chars,
                config.vectorstore.source,
            )
        )
    if section.regressor is not None:
        agents.append(RegistryAgent("regressor", section.regressor.model))
    return agents
