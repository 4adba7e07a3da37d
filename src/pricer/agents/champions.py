"""The champions a long-running server prices with: resolved, loaded, and swapped whole when the registry moves.

A deal cycle reads the registry each time it prices (``Planner.pricing``). A server answering many requests a
second cannot pay that on every request, nor let a model change under a request that is half done. So
``Champions`` holds one ``Pricing``: the agents, each pinned to the model version it prices with (a member
that follows its ``@champion`` is pinned too, to the version the alias names at that moment), loaded, and
the ensemble's weights. ``refresh`` resolves the registry again and, only when a version changed, loads what
is new (versions already loaded are reused) and swaps the whole snapshot in with one assignment: a request
prices with the snapshot it started with, to its end. ``start`` refreshes every ``check_every_s`` seconds in
a daemon thread, so a promoted champion is served without a restart.

A refresh that cannot read the registry, or whose new champions all fail to load, keeps the snapshot it
has (and says why in ``reason``): a registry outage never takes a loaded server down.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pricer.agents.estimators import PriceAgent
from pricer.agents.roster import pinned_agent
from pricer.models.ensemble import EnsembleWeights
from pricer.tracking.registry import champion_uri

if TYPE_CHECKING:
    from pricer.agents.planner import Planner

log = logging.getLogger(__name__)

_REGISTERED = "registered:"  # EnsembleWeights.source of the weights read from an ensemble champion


@dataclass(frozen=True)
class Pricing:
    """One consistent set of loaded agents and the weights that combine them."""

    agents: tuple[PriceAgent, ...]
    weights: EnsembleWeights
    models: dict[str, str]  # agent -> the model URI it prices with (models:/pricer-regressor/3)
    ensemble: str | None  # the ensemble champion these members and weights are pinned by, if any
    skipped: tuple[str, ...]  # agents that could not be loaded, each with its reason
    loaded_at: float

    @property
    def pair(self) -> tuple[list[PriceAgent], EnsembleWeights]:
        """What ``Planner.estimate(pricing=...)`` takes."""
        return list(self.agents), self.weights

    def key(self) -> tuple[Any, ...]:
        return (tuple(sorted(self.models.items())), tuple(sorted(self.weights.weights.items())), self.ensemble)

    def as_dict(self) -> dict[str, Any]:
        return {"models": dict(self.models), "ensemble": self.ensemble, "weights": dict(self.weights.weights),
                "skipped": list(self.skipped), "loaded_at": self.loaded_at}


def _model_of(agent: PriceAgent) -> str:
    # A registry agent names its pinned version; an agent a caller built itself is known by its name.
    return str(getattr(agent, "pinned", None) or getattr(agent, "model_uri", None) or agent.name)


def ensemble_of(weights: EnsembleWeights) -> str | None:
    """The ensemble champion's URI that ``weights`` were read from, or None (equal or given weights)."""
    return weights.source.removeprefix(_REGISTERED) if weights.source.startswith(_REGISTERED) else None


class Champions:
    """The current ``Pricing`` of a planner's agents, refreshed from the registry (see the module doc)."""

    def __init__(self, planner: Planner, *, check_every_s: float = 30.0) -> None:
        self.planner = planner
        self.check_every_s = check_every_s
        self.current: Pricing | None = None
        self.reason: str | None = "the champions are not loaded yet"
        self.checked_at: float | None = None
        self.swaps = 0
        self._followers: dict[tuple[str, str], PriceAgent] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._checked = threading.Event()  # set once the first check has finished, loaded or not
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.current is not None

    def _resolve(self) -> tuple[list[PriceAgent], EnsembleWeights, list[str]]:
        """This moment's agents, each pinned to a version, and the weights; agents without a champion skipped."""
        agents, weights = self.planner.pricing()
        pinned: list[PriceAgent] = []
        skipped: list[str] = []
        for agent in agents:
            registered = getattr(agent, "registered_name", None)
            if registered is not None and getattr(agent, "pinned", None) is None:
                # A follower would reload in place when its alias moves: pin it, so a move is a new snapshot.
                uri = champion_uri(registered)
                if uri is None:
                    skipped.append(f"{agent.name}: no @champion registered for {registered}")
                    continue
                if (agent.name, uri) not in self._followers:
                    self._followers[(agent.name, uri)] = pinned_agent(self.planner.config, agent.name, uri)
                agent = self._followers[(agent.name, uri)]
            pinned.append(agent)
        return pinned, weights, skipped

    def refresh(self) -> bool:
        """Resolve the registry; load and swap in a new snapshot when a version changed. True when it swapped."""
        try:
            return self._refresh()
        finally:
            self._checked.set()

    def _refresh(self) -> bool:
        with self._lock:
            self.checked_at = time.time()
            try:
                agents, weights, skipped = self._resolve()
            except Exception as error:  # noqa: BLE001 - a registry outage keeps the loaded champions serving
                self.reason = f"cannot read the model registry ({type(error).__name__}: {error})"
                log.warning("champions not refreshed: %s", self.reason)
                return False
            models = {agent.name: _model_of(agent) for agent in agents}
            wanted = Pricing(tuple(agents), weights, models, ensemble_of(weights), tuple(skipped), time.time())
            if self.current is not None and wanted.key() == self.current.key():
                return False
            ready, not_ready = self.planner.ready_agents(agents)
            if not ready:
                self.reason = "no price agent could be loaded" + (
                    f" ({'; '.join([*skipped, *not_ready])})" if skipped or not_ready else " (none configured)")
                log.warning("champions not swapped: %s", self.reason)
                return False
            names = {agent.name for agent in ready}
            snapshot = Pricing(tuple(ready), weights, {n: u for n, u in models.items() if n in names},
                               wanted.ensemble, (*skipped, *(f"{n}: failed to load" for n in not_ready)),
                               time.time())
            previous, self.current, self.reason = self.current, snapshot, None
            self.swaps += 1
            # Followers of versions no longer served are dropped, so their models can be freed.
            self._followers = {key: agent for key, agent in self._followers.items() if agent in snapshot.agents}
            log.info("champions %s: %s", "swapped" if previous else "loaded",
                     ", ".join(f"{n} {u}" for n, u in snapshot.models.items())
                     + (f" (ensemble {snapshot.ensemble})" if snapshot.ensemble else ""))
            return True

    # ---- the background check -----------------------------------------------------------------

    def start(self) -> Champions:
        """Load now in the background (so a server answers its probes while models load), then check every
        ``check_every_s`` seconds."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="champions", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # a bug in one check must not end the checks
                log.exception("champions check failed")
            self._stop.wait(self.check_every_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def wait_ready(self, timeout_s: float) -> bool:
        """Ready now, or once the first check (started by ``start``) has loaded the champions."""
        self._checked.wait(timeout_s)
        return self.ready
