"""``pricer serve``: a REST service over the registered champions (FastAPI, served by uvicorn).

- ``POST /v1/price``: one product (``{"product": {...}}``) or a batch (``{"products": [...]}``) -> one
  ``pricer.agents.quote.Quote`` each: the ensemble estimate, each agent's, the pinned model versions that
  priced it and the nearest training products with their prices (``neighbours``: how many).
- ``GET /v1/deals``: the opportunities the deal agents surfaced, from their memory, newest first.
- ``GET /v1/models``: the champions loaded now and each registered champion's metrics.
- ``GET /healthz``: the process answers. ``GET /readyz``: 200 once the champions are loaded, 503 before.
- ``GET /metrics``: Prometheus text (requests, latency, estimates per agent, champions loaded).
- ``/docs`` and ``/openapi.json``: FastAPI's own.

The champions load in the background at start (``pricer.agents.champions.Champions``) and are checked
every ``service.reload_s`` seconds: a moved alias is loaded and swapped in whole, without a restart, and
a request prices with the set it started with. A bad request is a 422 naming each bad field (the input is
not echoed back); a body over ``service.max_body_bytes`` is a 413 before it is parsed. With
``service.token_env`` set, ``/v1/*`` and ``/metrics`` require ``Authorization: Bearer <token>``; the
token is read from that variable once and never logged.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pricer.agents.champions import Champions
from pricer.agents.config import AgentsConfig, load_agents_config
from pricer.agents.planner import Planner
from pricer.agents.quote import Product, Quote, quote
from pricer.apps.service_http import (
    BodyLimit,
    Metrics,
    RequestMetrics,
    deals_records,
    open_store,
    store_warm_up,
)
from pricer.core.secrets import secret_from_env
from pricer.tracking.registry import champion_card

log = logging.getLogger(__name__)

# At module level: FastAPI resolves these annotations by name (``from __future__ import annotations``).
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


class PriceRequest(BaseModel):
    """One product or a batch, and how many training products to cite for each."""

    model_config = ConfigDict(extra="forbid")

    product: Product | None = Field(None, description="one product to price")
    products: list[Product] | None = Field(None, min_length=1, max_length=1000,
                                           description="a batch (at most service.max_batch)")
    neighbours: int | None = Field(None, ge=0, le=200, description="training products cited per quote "
                                   "(default: service.neighbours; at most service.max_neighbours)")

    @model_validator(mode="after")
    def _one_of(self) -> PriceRequest:
        if (self.product is None) == (self.products is None):
            raise ValueError("send either product (one) or products (a batch), not both and not neither")
        return self

    @property
    def items(self) -> list[Product]:
        return [self.product] if self.product is not None else list(self.products or [])


class PriceResponse(BaseModel):
    quotes: list[Quote]
    seconds: float = Field(description="time spent pricing, in the service")


def _invalid(where: tuple[str | int, ...], message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *where), "msg": message, "type": "value_error"}])



def create_app(config: AgentsConfig, *, planner: Planner | None = None, store: Any = None,
               champions: Champions | None = None) -> FastAPI:
    """The service's ASGI app. Without ``planner`` (and ``store``) it builds them from ``config`` at start and
    closes them at shutdown; given ones are the caller's to close. ``store=False``: cite no neighbours."""
    settings = config.service
    token = secret_from_env("service.token_env", config.service.token_env)
    metrics = Metrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = planner is None
        state["planner"] = planner or Planner(config)
        state["champions"] = champions or Champions(state["planner"], check_every_s=settings.reload_s)
        state["store"] = open_store(config) if store is None else (store or None)
        state["store_ready"] = threading.Event()
        state["champions"].start()
        threading.Thread(target=store_warm_up, args=(state,), name="store-warm-up", daemon=True).start()
        try:
            yield
        finally:
            state["champions"].stop()
            if owned:
                state["planner"].close()

    app = FastAPI(title="Pricer", version="1", lifespan=lifespan,
                  description="Prices products from their text with the registered champions, and lists the "
                              "deals the agents found.")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    paths: set[str] = set()  # filled once the routes exist
    app.add_middleware(RequestMetrics, metrics=metrics, paths=paths)
    def authorised(credentials: Credentials) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _unprocessable(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's shape without the "input": a 20 kB description is not sent back to its author.
        detail = [{"loc": list(item.get("loc", ())), "msg": item.get("msg", ""), "type": item.get("type", "")}
                  for item in error.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    def _not_ready() -> JSONResponse | None:
        champs: Champions = state["champions"]
        if champs.ready:
            return None
        return JSONResponse({"ready": False, "reason": champs.reason}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz", tags=["probes"], responses={503: {"description": "the champions are not loaded yet"}})
    def readyz() -> Any:
        champs: Champions = state["champions"]
        if not champs.ready or not state["store_ready"].is_set():
            reason = champs.reason if not champs.ready else "the vector store is loading"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503, headers={"Retry-After": "5"})
        return {"ready": True, **champs.current.as_dict(), "checked_at": champs.checked_at}

    @app.post("/v1/price", response_model=PriceResponse, tags=["pricing"], dependencies=[Depends(authorised)],
              responses={503: {"description": "the champions are not loaded yet"}})
    def price(request: PriceRequest) -> Any:
        items = request.items
        if len(items) > settings.max_batch:
            raise _invalid(("products",), f"at most {settings.max_batch} products per request, got {len(items)}")
        k = settings.neighbours if request.neighbours is None else request.neighbours
        if k > settings.max_neighbours:
            raise _invalid(("neighbours",), f"at most {settings.max_neighbours} neighbours, got {k}")
        if (busy := _not_ready()) is not None:
            return busy
        started = time.perf_counter()
        pricing = state["champions"].current  # this request's set, whatever a swap does meanwhile
        quotes = quote(state["planner"], items, pricing=pricing, store=state["store"], k=k)
        metrics.count(quotes)
        return PriceResponse(quotes=quotes, seconds=round(time.perf_counter() - started, 4))

    @app.get("/v1/deals", tags=["deals"], dependencies=[Depends(authorised)])
    def deals(limit: int = Query(50, ge=1, le=500, description="newest first, at most this many")) -> Any:
        return {"deals": deals_records(state["planner"].memory, limit)}

    @app.get("/v1/models", tags=["pricing"], dependencies=[Depends(authorised)])
    def models() -> Any:
        champs: Champions = state["champions"]
        names = sorted({*config.ensemble.members.values(), config.ensemble.registered_name})
        return {"loaded": champs.current.as_dict() if champs.current else None, "reason": champs.reason,
                "registered": {name: champion_card(name) for name in names}}

    @app.get("/metrics", tags=["probes"], dependencies=[Depends(authorised)])
    def prometheus() -> Any:
        return metrics.response(state["champions"])

    paths.update(route.path for route in app.routes)
    app.state.pricer = state  # tests and embedders reach the planner and champions here
    return app


def serve(config_path: str | Path, host: str | None = None, port: int | None = None) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    config = load_agents_config(config_path)
    host = host or config.service.host
    port = config.service.port if port is None else port
    app = create_app(config)
    if host not in ("127.0.0.1", "localhost", "::1") and config.service.token_env is None:
        log.warning("serving on %s without a bearer token (service.token_env): anyone who reaches it may use it",
                    host)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
