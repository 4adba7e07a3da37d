"""The price agents: each prices product texts with one registered model, loaded as an MLflow pyfunc.

What the agents serve is what the gate scored. When ``pricer-ensemble`` has a champion, the agents are
its pinned members (``models:/pricer-regressor/3``, ...) and it supplies the weights
(``registered_ensemble``); only before any ensemble is registered do they follow each member's current
``@champion`` (``pricer.agents.roster.build_agents``), with equal weights. Every agent hands its model what
the ensemble hands its members (``pricer.serving.ensemble.member_inputs``): the deal's text.

An agent that cannot run (no champion registered, a model that fails to load) says so in one log line,
is skipped, and says so again only if the reason changes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pricer.models.ensemble import EnsembleWeights
from pricer.serving.ensemble import METADATA_MEMBERS, METADATA_WEIGHTS, member_inputs
from pricer.tracking.registry import champion_uri

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
    """Prices with one registered model: a pinned version (``model_uri``), or the ``@champion`` of a name,
    looked up each time the agent is asked whether it is ready and reloaded when the alias moved."""

    def __init__(self, name: str, registered_name: str | None = None, *, model_uri: str | None = None) -> None:
        if (registered_name is None) == (model_uri is None):
            raise ValueError("give a registered name or a pinned model URI, not both")
        self.name = name
        self.registered_name = registered_name
        self.pinned = model_uri
        self.model_uri: str | None = None
        self._model: Any = None
        self._skip = _SkipLog(name)

    def _wanted(self) -> str | None:
        return self.pinned if self.pinned is not None else champion_uri(self.registered_name)

    def ready(self) -> bool:
        try:
            uri = self._wanted()
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
        started = time.perf_counter()
        if self._model is None and not self.ready():
            return AgentResult(self.name, [math.nan] * len(texts), 0.0, error="not ready")
        usage = getattr(self._model.unwrap_python_model(), "usage", None)
        spent_before = _spent(usage)
        try:
            values = self._model.predict(member_inputs(pd.DataFrame({"text": [str(text) for text in texts]})))
            estimates, error = as_estimates(values, len(texts)), None
        except Exception as exc:  # one agent failing leaves the others to price the deals
            log.exception("agent %s failed on %d items", self.name, len(texts))
            estimates, error = [math.nan] * len(texts), f"{type(exc).__name__}: {exc}"
        spent = [after - before for after, before in zip(_spent(usage), spent_before, strict=True)]
        return AgentResult(self.name, estimates, time.perf_counter() - started, model=self.model_uri,
                           input_tokens=int(spent[0]), output_tokens=int(spent[1]), cost_usd=spent[2], error=error)


def _spent(usage: Any) -> tuple[float, float, float]:
    """Tokens in, tokens out and dollars a model has spent so far (an API model keeps ``usage``)."""
    if usage is None:
        return 0.0, 0.0, 0.0
    return float(usage.input_tokens), float(usage.output_tokens), float(usage.cost_usd)


@dataclass(frozen=True)
class RegisteredEnsemble:
    """The ensemble champion: its URI, weights and pinned members, read from its MLmodel metadata."""

    uri: str
    weights: EnsembleWeights
    members: dict[str, str]


def registered_ensemble(registered_name: str = "pricer-ensemble") -> RegisteredEnsemble | None:
    """The ``@champion`` of ``registered_name``, or None when there is none (or it names no members)."""
    from mlflow.models import get_model_info

    uri = champion_uri(registered_name)
    if uri is None:
        return None
    metadata = get_model_info(uri).metadata or {}
    weights, members = metadata.get(METADATA_WEIGHTS), metadata.get(METADATA_MEMBERS)
    if not isinstance(weights, dict) or not isinstance(members, dict) or not members:
        log.warning("%s names no pinned members in its metadata; ignoring it", uri)
        return None
    return RegisteredEnsemble(uri, EnsembleWeights({str(k): float(v) for k, v in weights.items()},
                                                   f"registered:{uri}"), {str(k): str(v) for k, v in members.items()})
