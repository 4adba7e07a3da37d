"""What the agents pass around: a scraped ``Deal``, a priced ``Opportunity``, and how deal text is used.

Everything in a ``Deal`` except its URL and price came from a web page someone else wrote, so
it is *data*: it is stored in the description field, priced as product text, and when it goes
into a language model's prompt it goes inside a delimited data block whose delimiters it
cannot forge (``pricer.core.prompt.untrusted_block``, which every frontier prompt uses). A deal
text that says "ignore your instructions" changes nothing but its own description.

Nor can a page's words alone make a deal an opportunity (``verdict``). Each deal carries where its
price came from (``price_source``):

- ``structured``: the page's structured data (JSON-LD offer, price meta tag, ``itemprop="price"``), what
  the shop states to machines; trusted like the rest of the page's claims about itself.
- ``corroborated``: read from text (a "$N" in a title), but two publishers state the same amount: the
  feed entry's title and the title of the deal page, on another site than the feed.
- ``text``: read from one text only (a feed's title, or a page's title on the feed's own site). Such a
  price is low-trust: "$1" in a title is as easy to write as any other word. The deal is priced and
  remembered, but never surfaced (``price_from_text``).

And a deal far below its estimate (a discount above ``planner.max_discount``: under 20% of the
estimate by default) is rejected as implausible (``implausible_discount``): a typo, a price per unit,
a hostile "$1" in structured data, or an estimate gone wrong, none of which is worth a notification.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pricer.core.prompt import clean_text
from pricer.data.text import FULL_TEXT_CHARS, details_line, scrub

if TYPE_CHECKING:
    from pricer.agents.config import PlannerConfig

PriceSource = Literal["structured", "corroborated", "text"]
OPPORTUNITY = "opportunity"


def canonical_url(url: str) -> str:
    """The URL a deal is known by: scheme and host lower-cased, fragment dropped."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def deal_key(url: str) -> str:
    """The idempotency key of a deal: one per canonical URL, for memory and for notifications."""
    return hashlib.sha256(canonical_url(url).encode("utf-8")).hexdigest()[:32]


class Deal(BaseModel):
    """One offer found by the scanner: validated, so a deal without a positive price never exists."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=20_000)
    price: float = Field(gt=0)
    feed: str = Field(min_length=1)
    # The scanner states it for every scraped deal; code that builds a deal itself (a test, the memory
    # reading back an opportunity that already passed) vouches for its price.
    price_source: PriceSource = "structured"

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("a deal URL must be an absolute http(s) URL")
        return canonical_url(value)

    @field_validator("title", "description", mode="before")
    @classmethod
    def _clean(cls, value: object) -> str:
        return clean_text(str(value or ""))

    @field_validator("price")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("the price must be a finite number of dollars")
        rounded = round(float(value), 2)
        if rounded <= 0:  # "0.001" passed gt=0, and would be stored as a free item 100% below any estimate
            raise ValueError("the price must be at least a cent")
        return rounded

    @property
    def key(self) -> str:
        return deal_key(self.url)


class Opportunity(BaseModel):
    """A deal priced by the ensemble well below its estimate: what the planner surfaces."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deal: Deal
    estimate: float = Field(gt=0)
    estimates: dict[str, float | None] = Field(default_factory=dict)  # per agent (None: no answer)

    @property
    def key(self) -> str:
        return self.deal.key

    @property
    def discount(self) -> float:
        return discount(self.deal.price, self.estimate)


def discount(price: float, estimate: float) -> float:
    """(estimate - price) / estimate: 0.4 means the deal is 40% below what the item is worth."""
    if not math.isfinite(estimate) or estimate <= 0:
        return float("nan")
    return (estimate - price) / estimate


def verdict(deal: Deal, estimate: float, settings: PlannerConfig) -> str:
    """``OPPORTUNITY``, or why a priced deal is not one: the reason the cycle report counts it under."""
    if estimate < settings.min_estimate_usd:
        return "below_min_estimate"
    off = discount(deal.price, estimate)
    if not off > settings.discount_threshold:
        return "below_threshold"
    # Trust before plausibility: a text price is not judged on an amount nobody vouched for.
    if deal.price_source == "text":
        return "price_from_text"
    if off > settings.max_discount:
        return "implausible_discount"
    return OPPORTUNITY


def listing_text(
    title: str, description: str = "", details: Mapping[str, Any] | None = None, max_chars: int = FULL_TEXT_CHARS
) -> str:
    """The product text the price models read: title, the compact details, then description, cleaned like
    the training text (``pricer.data.text``). Every product priced outside training comes through here: a
    scraped deal, and a product that a caller of the service, the MCP tools or the UI describes."""
    parts = (clean_text(title), details_line(details or {}), clean_text(description))
    return scrub("\n".join(part for part in parts if part))[:max_chars]


def deal_text(deal: Deal, max_chars: int = FULL_TEXT_CHARS) -> str:
    """A deal's product text (``listing_text``): a scraped page states no details."""
    return listing_text(deal.title, deal.description, max_chars=max_chars)
