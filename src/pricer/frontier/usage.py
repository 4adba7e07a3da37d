"""What each frontier call cost and how the endpoint behaved: one ``CallResult`` per call, summed in
``UsageTotals`` for a run's MLflow metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class CallResult:
    content: str | None
    price: float | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    ttft_s: float | None = None
    cached: bool = False
    attempts: int = 0
    error: str | None = None


@dataclass
class UsageTotals:
    """Sums over every call a client made: what a run cost and how the endpoint behaved."""

    calls: int = 0
    cache_hits: int = 0
    billed_calls: int = 0
    failed_calls: int = 0
    unparseable: int = 0
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    malformed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def bump(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def add_wall(self, seconds: float) -> None:
        with self._lock:
            self.wall_s += seconds

    def merge(self, other: UsageTotals) -> None:
        """Add another client's totals to these (a model that opens one client per call sums them)."""
        with self._lock:
            for item in fields(self):
                mine, theirs = getattr(self, item.name), getattr(other, item.name)
                setattr(self, item.name, mine + list(theirs) if isinstance(mine, list) else mine + theirs)

    def add(self, result: CallResult) -> None:
        with self._lock:
            self.calls += 1
            self.attempts += result.attempts
            self.retries += max(0, result.attempts - 1)
            if result.price is None:
                self.unparseable += 1
            if result.cached:
                self.cache_hits += 1
                return
            if result.error is not None:
                self.failed_calls += 1
                return
            self.billed_calls += 1
            self.input_tokens += result.input_tokens
            self.output_tokens += result.output_tokens
            self.cost_usd += result.cost_usd
            self.latencies.append(result.latency_s)
            if result.ttft_s is not None:
                self.ttfts.append(result.ttft_s)

    def metrics(self, prefix: str = "frontier.") -> dict[str, float]:
        with self._lock:
            values: dict[str, float] = {
                name: float(getattr(self, name))
                for name in ("calls", "cache_hits", "billed_calls", "failed_calls", "unparseable", "attempts",
                             "retries", "rate_limited", "server_errors", "timeouts", "malformed",
                             "input_tokens", "output_tokens", "cost_usd", "wall_s")
            }
            if self.latencies:
                ordered = sorted(self.latencies)
                values["latency_mean_s"] = sum(ordered) / len(ordered)
                values["latency_p50_s"] = ordered[len(ordered) // 2]
                values["latency_p95_s"] = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            if self.ttfts:
                values["ttft_mean_s"] = sum(self.ttfts) / len(self.ttfts)
            if self.wall_s > 0:
                values["items_per_s"] = self.calls / self.wall_s
        return {f"{prefix}{key}": value for key, value in values.items()}
