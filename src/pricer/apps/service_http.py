"""The REST service's plumbing: its body limit, its Prometheus metrics, and what it reads beside the models.

Both middlewares are plain ASGI, so they see every request, the ones FastAPI refuses included.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from pricer.agents.champions import Champions
    from pricer.agents.config import AgentsConfig
    from pricer.agents.memory import Memory
    from pricer.agents.quote import Quote
    from pricer.agents.vectorstore import ProductStore

log = logging.getLogger(__name__)

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with a 413, by its Content-Length or, when it has none
    (chunked), as soon as the bytes read pass the limit; nothing past the limit is buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = JSONResponse({"detail": f"the request body is larger than {self.max_bytes:,} bytes"},
                              status_code=413, headers={"Connection": "close"})
        await answer(scope, receive, send)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app, so apps in one process,
    as in the tests, never share counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pricer_http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("pricer_http_request_seconds", "Time to answer an HTTP request",
                                 ["method", "route"], buckets=_BUCKETS, registry=self.registry)
        self.products = Counter("pricer_products_priced_total", "Products priced (quotes returned)",
                                registry=self.registry)
        self.estimates = Counter("pricer_agent_estimates_total", "Estimates per agent: answered or not",
                                 ["agent", "outcome"], registry=self.registry)
        self.loaded = Gauge("pricer_champion_loaded", "1 for each agent's model version being served",
                            ["agent", "model"], registry=self.registry)
        self.ready = Gauge("pricer_champions_ready", "1 once the champions are loaded", registry=self.registry)
        self.swaps = Gauge("pricer_champion_loads", "Champion sets loaded since start (1 + swaps)",
                           registry=self.registry)

    def count(self, quotes: Sequence[Quote]) -> None:
        self.products.inc(len(quotes))
        for item in quotes:
            for agent, value in item.agents.items():
                self.estimates.labels(agent, "answered" if value is not None else "no_answer").inc()
            if item.estimate is not None:
                self.estimates.labels("ensemble", "answered").inc()
            else:
                self.estimates.labels("ensemble", "no_answer").inc()

    def response(self, champions: Champions) -> Response:
        current = champions.current
        self.ready.set(1 if current is not None else 0)
        self.swaps.set(champions.swaps)
        self.loaded.clear()
        for agent, model in (current.models.items() if current is not None else ()):
            self.loaded.labels(agent, model).set(1)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Counts each request by method, route template (``/v1/price``, never a raw path) and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        # The app's own paths: a request refused before routing (a 413) still counts under its route.
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or (
                scope.get("path") if scope.get("path") in self.paths else "unmatched")  # no label per stray path
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status[0])).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


# --------------------------------------------------------------------------- what the service reads


def open_store(config: AgentsConfig) -> ProductStore | None:
    """The configured vector store, when one has been built (``pricer vectorstore``); None: no citations."""
    from pricer.agents.vectorstore import configured_store

    settings = config.vectorstore
    if settings.server is None and not settings.path.exists():
        log.warning("no vector store at %s (pricer vectorstore builds it): quotes cite no neighbours", settings.path)
        return None
    # No disk cache for the queries: a caller's product is embedded once, and a cache write per request cost
    # 35-400 ms on a busy disk here against 10 ms for the embedding itself. Same model and settings as the
    # store was built with, so the same vectors.
    return configured_store(settings, cache_dir=None)


def store_warm_up(state: dict[str, Any]) -> None:
    """Open ``state["store"]`` and load its embedder before the first request needs them, then set
    ``state["store_ready"]`` (readiness waits on it). A store that fails is dropped: it costs the citations,
    not the service."""
    store = state.get("store")
    try:
        if store is not None and store.count() > 0:
            store.neighbours(["warm-up"], 1)
    except Exception:
        log.exception("the vector store could not be opened: quotes cite no neighbours")
        state["store"] = None
    finally:
        state["store_ready"].set()


def deals_records(memory: Memory, limit: int) -> list[dict[str, Any]]:
    """The surfaced opportunities as JSON-ready rows (each agent's estimates decoded, no NaN)."""
    frame = memory.opportunities(limit)
    rows = []
    for row in frame.to_dict("records"):
        row["estimates"] = json.loads(row["estimates"]) if row.get("estimates") else {}
        rows.append({key: None if isinstance(value, float) and not math.isfinite(value) else value
                     for key, value in row.items()})
    return rows
