"""The planner: one cycle = scan -> estimate (each agent) -> ensemble -> pick -> remember -> notify.

A deal becomes an opportunity when ``(estimate - price) / estimate`` exceeds
``planner.discount_threshold`` (and the estimate is at least ``planner.min_estimate_usd``), its price
is not low-trust text and the discount is not implausible (``pricer.agents.deals.verdict``). Every
priced deal that is not surfaced is counted in ``CycleReport.rejected`` under its reason, so
``deals == unpriced + len(opportunities) + sum(rejected)``.
Every deal that got an estimate is remembered, so the next cycle's scan skips it; the
opportunities and their pending notifications are written in the same transaction, then the
messenger delivers whatever is pending, including what an earlier, interrupted cycle left.

The agents and weights are those of the ``pricer-ensemble`` champion: its pinned members, so the
estimates are the ones the gate scored (see ``pricer.agents.estimators``).

With ``planner.llm`` set, an LLM chooses what to notify among the deals these rules surface, calling the
scan and the pricing as tools (``pricer.agents.autonomous``); when it cannot, the rules decide, and
``CycleReport.planner`` says which did and why.

Each cycle is one MLflow trace (``deals.cycle``) with a span for the scan, one per agent
(latency, items answered, and tokens and cost when an API was called), one for the ensemble
and one for the messenger (and with an LLM planner, one per LLM call and per tool call).
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pricer.agents.autonomous import AutonomousPlanner, Ledger, decide
from pricer.agents.config import AgentsConfig, load_agents_config
from pricer.agents.deals import OPPORTUNITY, Deal, Opportunity, deal_text, verdict
from pricer.agents.estimators import AgentResult, PriceAgent, registered_ensemble
from pricer.agents.memory import Memory
from pricer.agents.messenger import Messenger
from pricer.agents.roster import build_agents, pinned_agent
from pricer.agents.scanner import Scanner
from pricer.agents.tracing import annotate_agent, cycle_trace, flush_traces, rounded, step_span
from pricer.models.ensemble import EnsembleWeights
from pricer.tracking.runs import configure

log = logging.getLogger(__name__)


@dataclass
class CycleReport:
    cycle_id: str
    scan: dict[str, Any] = field(default_factory=dict)
    deals: int = 0
    priced: int = 0
    unpriced: int = 0
    opportunities: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)  # priced, not surfaced: why
    new_opportunities: int = 0
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped_agents: list[str] = field(default_factory=list)
    ensemble_weights: dict[str, float] = field(default_factory=dict)
    delivery: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(
        default_factory=dict
    )  # seconds per step: scan, estimate, memory, messenger
    seconds: float = 0.0
    trace_id: str | None = None
    planner: dict[str, Any] = field(default_factory=dict)  # which planner decided (kind) and why (reason)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "rejected": dict(self.rejected)}


@dataclass
class Estimate:
    """Every agent's answers for a batch of texts and the ensemble's combination of them."""

    results: dict[str, AgentResult]
    ensemble: np.ndarray
    weights: EnsembleWeights
    skipped: list[str]


class Planner:
    """Runs cycles over the configured scanner, agents, memory and messenger (each replaceable)."""

    def __init__(
        self,
        config: AgentsConfig,
        *,
        scanner: Scanner | None = None,
        agents: Sequence[PriceAgent] | None = None,
        memory: Memory | None = None,
        messenger: Messenger | None = None,
        weights: EnsembleWeights | None = None,
    ) -> None:
        self.config = config
        # The registry the agents read and the store the traces go to.
        self.experiment_id = configure(config.tracking.tracking_uri, config.tracking.experiment)
        self.scanner = scanner or Scanner(config.scanner, config.feeds)
        self._given_agents = list(agents) if agents is not None else None
        self._followers = build_agents(config)  # before any ensemble is registered
        self._pinned: dict[tuple[str, str], PriceAgent] = {}
        self.autonomous = AutonomousPlanner.from_config(config)  # None: the rules decide every cycle
        self.memory = memory or Memory(config.memory.path)
        self.messenger = messenger or Messenger(
            config.messenger, max_age_s=config.memory.pending_max_age_hours * 3600
        )
        self._fixed_weights = weights
        self._lock = threading.Lock()
        self._no_agent_logged = False

    @classmethod
    def from_config(cls, path: str | Path = "configs/agents.yaml", **kwargs: Any) -> Planner:
        return cls(load_agents_config(path), **kwargs)

    def close(self) -> None:
        self.scanner.close()
        self.messenger.close()
        self.memory.close()

    # ---- estimating ---------------------------------------------------------------------------

    def pricing(self) -> tuple[list[PriceAgent], EnsembleWeights]:
        """The agents and weights of this cycle: those given, else the ensemble champion's pinned members and
        weights, else every member's current champion with equal weights."""
        agents = self._given_agents
        if agents is None:
            try:
                release = registered_ensemble(self.config.ensemble.registered_name)
            except Exception as error:  # noqa: BLE001 - the registry is unreachable: follow the champions
                log.warning("the ensemble champion could not be read (%s); pricing with each member's champion",
                            error)
                release = None
            if release is not None:
                agents = [self._pinned_agent(name, uri) for name, uri in release.members.items()]
                return agents, self._fixed_weights or release.weights
            agents = self._followers
        return agents, self._fixed_weights or EnsembleWeights.equal([agent.name for agent in agents])

    def _pinned_agent(self, name: str, uri: str) -> PriceAgent:
        # Kept across cycles, so a pinned model loads once.
        if (name, uri) not in self._pinned:
            self._pinned[(name, uri)] = pinned_agent(self.config, name, uri)
        return self._pinned[(name, uri)]

    @staticmethod
    def ready_agents(agents: Sequence[PriceAgent]) -> tuple[list[PriceAgent], list[str]]:
        ready, skipped = [], []
        for agent in agents:
            try:
                ok = agent.ready()
            except Exception:
                log.exception("agent %s could not be prepared; skipped", agent.name)
                ok = False
            (ready if ok else skipped).append(agent if ok else agent.name)
        return ready, skipped

    def estimate(
        self,
        texts: Sequence[str],
        *,
        traced: bool = False,
        pricing: tuple[Sequence[PriceAgent], EnsembleWeights] | None = None,
    ) -> Estimate:
        """Every agent's estimates of ``texts`` and their ensemble. ``pricing``: the agents and weights to use,
        already resolved (a server's loaded champions); by default ``pricing()`` reads the registry now."""
        candidates, weights = pricing if pricing is not None else self.pricing()
        agents, skipped = self.ready_agents(candidates)
        texts = list(texts)
        if self.config.planner.parallel_agents and len(agents) > 1:
            # Each agent in its own thread, in a copy of this context so its span nests under the cycle's.
            with ThreadPoolExecutor(len(agents), thread_name_prefix="agent") as pool:
                futures = [
                    pool.submit(contextvars.copy_context().run, self._run_agent, agent, texts, traced)
                    for agent in agents
                ]
                done = [future.result() for future in futures]
        else:
            done = [self._run_agent(agent, texts, traced) for agent in agents]
        results = {result.name: result for result in done}
        with step_span("ensemble", "CHAIN", traced) as span:
            combined = (
                weights.combine({name: r.estimates for name, r in results.items()})
                if results
                else np.full(len(texts), np.nan)
            )
            if span is not None:
                span.set_inputs(
                    {"members": list(results), "weights": weights.weights, "source": weights.source}
                )
                span.set_outputs(
                    {"estimates": [None if not math.isfinite(v) else round(float(v), 2) for v in combined]}
                )
        return Estimate(results, combined, weights, skipped)

    def _run_agent(self, agent: PriceAgent, texts: list[str], traced: bool) -> AgentResult:
        with step_span(f"agent.{agent.name}", "AGENT", traced) as span:
            result = agent.estimate(texts)
            if span is not None:
                annotate_agent(span, result, len(texts))
        log.info(
            "agent %s priced %d of %d items in %.2f s%s",
            agent.name,
            result.answered,
            len(texts),
            result.latency_s,
            f" (${result.cost_usd:.4f}, {result.input_tokens + result.output_tokens} tokens)"
            if result.input_tokens
            else "",
        )
        return result

    def price(self, text: str) -> dict[str, Any]:
        """One product text -> each agent's estimate and the ensemble's (the UI's price box)."""
        estimate = self.estimate([text])
        rows = {name: _first(result.estimates) for name, result in estimate.results.items()}
        return {
            "agents": rows,
            "latency_s": {name: result.latency_s for name, result in estimate.results.items()},
            "ensemble": _first(list(estimate.ensemble)),
            "skipped": estimate.skipped,
            "weights": estimate.weights.weights,
        }

    # ---- one cycle ----------------------------------------------------------------------------

    def run_cycle(self) -> CycleReport:
        with self._lock:
            cycle_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
            started = time.perf_counter()
            report = CycleReport(cycle_id)
            with cycle_trace(self.config, self.experiment_id, cycle_id) as root:
                try:
                    self._cycle(report, root is not None)
                finally:
                    report.seconds = time.perf_counter() - started
                    if root is not None:
                        report.trace_id = root.trace_id
                        root.set_outputs(
                            {
                                k: report.as_dict()[k]
                                for k in (
                                    "deals",
                                    "priced",
                                    "unpriced",
                                    "rejected",
                                    "new_opportunities",
                                    "opportunities",
                                    "delivery",
                                    "skipped_agents",
                                    "planner",
                                )
                            }
                        )
                        root.set_attributes({"cycle_id": cycle_id, "seconds": report.seconds})
            flush_traces(self.config)
            log.info(
                "cycle %s: %d deals, %d priced, %d new opportunities, %d notified in %.1f s",
                cycle_id,
                report.deals,
                report.priced,
                report.new_opportunities,
                report.delivery.get("sent", 0),
                report.seconds,
            )
            return report

    def _cycle(self, report: CycleReport, traced: bool) -> None:
        # The scan and the pricing run when the deciding planner first needs them, and once.
        ledger = Ledger(lambda: self._scan(report, traced), lambda deals: self._judge(deals, report, traced))
        opportunities, priced = decide(self.autonomous, ledger, report, traced)
        self._remember_and_notify(report, priced, opportunities, traced)

    def _scan(self, report: CycleReport, traced: bool) -> list[Deal]:
        clock = time.perf_counter()
        with step_span("scanner", "TOOL", traced) as span:
            deals, scan = self.scanner.scan(known=self.memory.known_keys())
            report.scan = scan.as_dict()
            if span is not None:
                span.set_inputs({"feeds": [feed.name for feed in self.scanner.feeds]})
                span.set_outputs(report.scan)
                span.set_attributes({"latency_s": scan.seconds})
        report.deals = len(deals)
        report.timings["scan"] = time.perf_counter() - clock
        return deals

    def _judge(
        self, deals: list[Deal], report: CycleReport, traced: bool
    ) -> tuple[list[Opportunity], list[tuple[Deal, float]]]:
        """Price the deals and apply the rules: the opportunities (best first, capped), every other priced deal."""
        settings = self.config.planner
        clock = time.perf_counter()
        opportunities: list[Opportunity] = []
        priced: list[tuple[Deal, float]] = []
        if deals:
            texts = [deal_text(deal, self.config.scanner.max_description_chars) for deal in deals]
            estimate = self.estimate(texts, traced=traced)
            report.skipped_agents = estimate.skipped
            report.ensemble_weights = estimate.weights.weights
            report.agents = {name: _agent_summary(result) for name, result in estimate.results.items()}
            if not estimate.results and not self._no_agent_logged:
                log.error(
                    "no price agent is available (%s): deals stay unpriced and will be scanned again",
                    ", ".join(estimate.skipped) or "none configured",
                )
                self._no_agent_logged = True
            for i, (deal, value) in enumerate(zip(deals, estimate.ensemble, strict=True)):
                value = float(value)
                if not math.isfinite(value) or value <= 0:
                    report.unpriced += 1
                    continue
                report.priced += 1
                outcome = verdict(deal, value, settings)
                if outcome == OPPORTUNITY:
                    per_agent = {
                        name: rounded(result.estimates[i]) for name, result in estimate.results.items()
                    }
                    opportunities.append(Opportunity(deal=deal, estimate=value, estimates=per_agent))
                    continue
                report.rejected[outcome] += 1
                priced.append((deal, value))  # remembered as seen, so not scanned again
                if outcome in ("price_from_text", "implausible_discount"):
                    log.warning("deal %s not surfaced (%s): $%.2f (%s) against an estimate of $%.2f",
                                deal.url, outcome, deal.price, deal.price_source, value)
            opportunities.sort(key=lambda opp: opp.discount, reverse=True)
            if settings.max_opportunities_per_cycle is not None:
                for opp in opportunities[settings.max_opportunities_per_cycle :]:
                    priced.append((opp.deal, opp.estimate))  # remembered as seen, not surfaced
                    report.rejected["over_cycle_limit"] += 1
                opportunities = opportunities[: settings.max_opportunities_per_cycle]

        report.timings["estimate"] = time.perf_counter() - clock
        return opportunities, priced

    def _remember_and_notify(
        self, report: CycleReport, priced: list[tuple[Deal, float]], opportunities: list[Opportunity], traced: bool
    ) -> None:
        clock = time.perf_counter()
        with step_span("memory", "TOOL", traced) as span:
            new = self.memory.record_cycle(
                report.cycle_id, priced, opportunities, notifier=self.messenger.kind
            )
            report.new_opportunities = len(new)
            if span is not None:
                span.set_attributes({"deals_remembered": len(priced) + len(opportunities), "new": len(new)})
        report.opportunities = [
            {
                "url": opp.deal.url,
                "title": opp.deal.title,
                "price": opp.deal.price,
                "price_source": opp.deal.price_source,
                "estimate": round(opp.estimate, 2),
                "discount": round(opp.discount, 4),
            }
            for opp in opportunities
        ]
        for opp in opportunities:
            log.info(
                "opportunity: %s at $%.2f, estimated $%.2f (%.0f%% below)",
                opp.deal.title[:80],
                opp.deal.price,
                opp.estimate,
                100 * opp.discount,
            )

        report.timings["memory"] = time.perf_counter() - clock
        clock = time.perf_counter()
        with step_span("messenger", "TOOL", traced) as span:
            delivery = self.messenger.deliver(self.memory)
            report.delivery = delivery.as_dict()
            if span is not None:
                span.set_attributes({"kind": self.messenger.kind, "latency_s": delivery.seconds})
                span.set_outputs(report.delivery)
        report.timings["messenger"] = time.perf_counter() - clock


def _agent_summary(result: AgentResult) -> dict[str, Any]:
    return {
        "latency_s": round(result.latency_s, 4),
        "answered": result.answered,
        "model": result.model,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "cost_usd": result.cost_usd,
        "error": result.error,
    }


def _first(values: Sequence[float]) -> float | None:
    return rounded(values[0]) if len(values) else None


def run_cycle(config_path: str | Path = "configs/agents.yaml") -> CycleReport:
    """One planner cycle from a config file (what the CLI and the Prefect flow call)."""
    planner = Planner.from_config(config_path)
    try:
        return planner.run_cycle()
    finally:
        planner.close()
