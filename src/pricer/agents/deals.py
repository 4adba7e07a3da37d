"""What the agents pass around: a scraped ``Deal``, a priced ``Opportunity``, and how deal text is used.

Everything in a ``Deal`` except its URL and price came from a web page someone else wrote, so
it is *data*: it is stored in the description field, priced as product text, and when it goes
into a language model's prompt it goes inside a delimited data block whose delimiters it
cannot forge (``pricer.core.prompt.untrusted_block``, which every frontier prompt uses). A deal
text that says "ignore your instructions" changes nothing but its own description.
"""

from __future__ import annotations

import hashlib
import math
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pricer.core.prompt import clean_text
from pricer.data.text import FULL_TEXT_CHARS, scrub


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
        return round(float(value), 2)

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


def deal_text(deal: Deal, max_chars: int = FULL_TEXT_CHARS) -> str:
    """The product text the price models read: title then description, cleaned like the training text."""
    return scrub(f"{deal.title}\n{deal.description}")[:max_chars]
