"""Pricing products on request: the one function the REST service, the MCP tools and the UI all call.

``quote(planner, products)`` prices a batch of products described by a caller (title, description,
details, category) with the planner's agents, exactly as a deal cycle prices scraped deals: the same
product text (``pricer.agents.deals.listing_text``), the same agents (the ``pricer-ensemble``
champion's pinned members) and the same weights. Each ``Quote`` says what priced it (the model URIs,
``models:/pricer-regressor/3``, and the ensemble champion) and, given a vector store, cites the k most
similar training products with their prices.

A long-running server passes ``pricing=`` (a ``pricer.agents.champions.Pricing``: loaded champions,
refreshed in the background) so that a request never waits on the registry; without it the registry is
read on each call, as a cycle does. The ``category`` is echoed, not priced: the registered models read
the text alone (``pricer.serving.ensemble.member_inputs``).

Descriptions are data from strangers: they are cleaned like scraped deals and reach a language-model
agent only inside its fenced data block (``pricer.core.prompt.untrusted_block``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pricer.agents.champions import Pricing, ensemble_of
from pricer.agents.deals import listing_text
from pricer.agents.tracing import rounded
from pricer.core.prompt import clean_text

if TYPE_CHECKING:
    from pricer.agents.planner import Planner
    from pricer.agents.vectorstore import ProductStore

__all__ = ["Citation", "Product", "Quote", "product_text", "quote"]

MAX_DETAILS = 50
_CITED_CHARS = 300  # enough of a neighbour's text to recognise it; the full text stays in the store


class Product(BaseModel):
    """A product to price, as a caller describes it. Limits keep one request's text near a deal's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, max_length=500, description="the product's title (required)")
    description: str = Field("", max_length=20_000, description="free text: description, features")
    details: dict[str, str | int | float | bool] = Field(
        default_factory=dict, max_length=MAX_DETAILS,
        description="short facts the models price well from, e.g. {\"Brand\": \"Acme\", \"Item Weight\": \"2 pounds\"}",
    )
    category: str | None = Field(None, max_length=100, description="echoed in the quote; the models price text alone")

    @field_validator("title", "description", mode="before")
    @classmethod
    def _clean(cls, value: object) -> object:
        # Cleaned before the length checks, so a title of control characters alone is an empty title.
        return clean_text(value) if isinstance(value, str) else value

    @field_validator("details")
    @classmethod
    def _short_details(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not key.strip() or len(key) > 100:
                raise ValueError("each detail's name must be 1 to 100 characters")
            if isinstance(item, str) and len(item) > 1000:
                raise ValueError(f"detail {key[:40]!r} is longer than 1000 characters")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"detail {key[:40]!r} must be a finite number")
        return value


class Citation(BaseModel):
    """A training product near the one priced, and the price it sold at: evidence a reader can check."""

    title: str
    price: float
    text: str = Field(description=f"the start of its product text (up to {_CITED_CHARS} characters)")


class Quote(BaseModel):
    """One product's prices: the ensemble's, each agent's, what priced it, and its nearest training products."""

    estimate: float | None = Field(description="the ensemble estimate in USD (null: no agent could price it)")
    agents: dict[str, float | None] = Field(description="each agent's estimate (null: it had no answer)")
    models: dict[str, str] = Field(description="each agent's model, pinned by version")
    ensemble: str | None = Field(description="the ensemble champion whose weights combined them, if one is registered")
    weights: dict[str, float]
    neighbours: list[Citation] = Field(description="the most similar training products, nearest first")
    skipped: list[str] = Field(description="agents that could not price, with why")
    category: str | None = None
    text: str = Field(description="the product text the models read")


def product_text(product: Product | str, max_chars: int) -> str:
    """The text the price models read for a product, or for a free text (the UI's box, a CLI argument)."""
    if isinstance(product, str):
        title, _, rest = clean_text(product).partition("\n")
        return listing_text(title, rest, max_chars=max_chars)
    return listing_text(product.title, product.description, product.details, max_chars=max_chars)


def quote(
    planner: Planner,
    products: Sequence[Product | str],
    *,
    pricing: Pricing | None = None,
    store: ProductStore | None = None,
    k: int = 5,
) -> list[Quote]:
    """Price ``products`` (in order, one ``Quote`` each) with ``pricing``'s agents, else the planner's.

    ``store``: the vector store of training products to cite ``k`` neighbours from (none without one).
    An agent that fails leaves the others to price; a product no agent prices gets ``estimate=None``.
    """
    if not products:
        return []
    max_chars = planner.config.scanner.max_description_chars
    texts = [product_text(product, max_chars) for product in products]
    estimate = planner.estimate(texts, pricing=pricing.pair if pricing is not None else None)
    skipped = [*(pricing.skipped if pricing is not None else ()), *estimate.skipped]
    models = {name: result.model or name for name, result in estimate.results.items()}
    neighbours = store.neighbours(texts, k) if store is not None and k > 0 else [[] for _ in texts]
    quotes = []
    for i, (product, text) in enumerate(zip(products, texts, strict=True)):
        quotes.append(Quote(
            estimate=_price(estimate.ensemble[i]),
            agents={name: _price(result.estimates[i]) for name, result in estimate.results.items()},
            models=models,
            ensemble=ensemble_of(estimate.weights),
            weights=dict(estimate.weights.weights),
            neighbours=[Citation(title=cited.split("\n", 1)[0][:200], price=price, text=cited[:_CITED_CHARS])
                        for cited, price in neighbours[i]],
            skipped=skipped,
            category=None if isinstance(product, str) else product.category,
            text=text,
        ))
    return quotes


def _price(value: Any) -> float | None:
    number = rounded(value)
    return number if number is not None and number > 0 else None
