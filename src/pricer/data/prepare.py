"""One batch of raw records -> its outcomes in order: a quarantine line with its reason, or a
prepared row (cleaned, truncated, prompted) still waiting for the duplicate test.

Nothing here depends on any other batch, so batches can be prepared in worker processes
(``pricer.data.pool``) and their outcomes merged in order; the duplicate test, which depends on
every record before it, stays with the curator (``pricer.data.curate``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from pricer.core.prompt import build_prompt, completion
from pricer.data.config import CurateConfig
from pricer.data.records import Product, Reason, Rejection, decode_line, has_broken_encoding, parse_record
from pricer.data.sources import RawRecord
from pricer.data.split import assign_split, item_id, unit_hash
from pricer.data.text import FULL_TEXT_CHARS, raw_text, scrub, scrub_prefixes
from pricer.data.tokenizer import load_tokenizer, truncate_to_tokens

# No tokenizer here averages more than this many characters per token on product text, so
# cutting the raw text to max_tokens * this before cleaning and tokenizing loses nothing.
CHARS_PER_TOKEN_CEILING = 6


@dataclass(frozen=True, slots=True)
class Rejected:
    """A rejection as it will be written: its reason (for the report) and its quarantine line."""

    reason: str
    line: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """A record that passed every screen but the duplicate test; ``row`` is None when balancing drops it."""

    identity: str
    price: float
    title: str
    origin: str
    row: dict[str, Any] | None


Outcome = Rejected | Prepared


def quarantine_line(rejection: Rejection) -> str:
    record = rejection.record
    if isinstance(record, bytes):
        record = record[:2000].decode("utf-8", "replace")
    entry = {"origin": rejection.origin, "reason": rejection.reason.value, "detail": rejection.detail, "record": record}
    return json.dumps(entry, ensure_ascii=False, default=str)


def rejected(rejection: Rejection) -> Rejected:
    return Rejected(rejection.reason.value, quarantine_line(rejection))


def keep_fraction(config: CurateConfig, product: Product) -> float:
    return _keep_fraction(config, product.category, product.price)


def _keep_fraction(config: CurateConfig, category: str, price: float) -> float:
    fraction = config.balance.category_keep.get(category, 1.0)
    for upper, band_fraction in sorted(config.balance.band_keep.items()):
        if price < upper:
            return fraction * band_fraction
    return fraction


def balance_keeps(config: CurateConfig, identity: str, category: str, price: float) -> bool:
    """Whether the balance settings keep an item: a hash of the item alone, so any order or shard agrees."""
    return unit_hash(config.split.salt, "balance", identity, f"{price}") < _keep_fraction(config, category, price)


@dataclass(frozen=True, slots=True)
class _Candidate:
    product: Product
    identity: str
    raw: str  # the uncleaned text, cleaned again whole where the cut text runs short of the budget
    text: str  # cleaned, cut to max_tokens * CHARS_PER_TOKEN_CEILING raw characters; not yet to tokens
    full_text: str  # cleaned, cut to FULL_TEXT_CHARS raw characters


class Preparer:
    """Screens, cleans, truncates and builds the rows of one batch at a time."""

    def __init__(self, config: CurateConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.tokenizer)
        self._cut = config.max_tokens * CHARS_PER_TOKEN_CEILING

    def __call__(self, batch: list[RawRecord]) -> list[Outcome]:
        outcomes: list[Outcome | _Candidate] = [self._screen(origin, raw) for origin, raw in batch]
        candidates = [outcome for outcome in outcomes if isinstance(outcome, _Candidate)]
        rows = iter(self._rows(candidates))
        return [self._prepared(outcome, next(rows)) if isinstance(outcome, _Candidate) else outcome
                for outcome in outcomes]

    def _parse(self, origin: str, raw: Any) -> Product | Rejection:
        record = decode_line(raw, origin) if isinstance(raw, bytes | str) else raw
        if isinstance(record, Rejection):
            return record
        product = parse_record(record, origin, self.config.max_raw_chars)
        if isinstance(product, Rejection):
            return product
        if not self.config.min_price <= product.price <= self.config.max_price:
            band = f"${self.config.min_price:g} to ${self.config.max_price:g}"
            return Rejection(Reason.PRICE_OUT_OF_BAND, f"price {product.price:g} outside {band}", origin, record)
        return product

    def _screen(self, origin: str, raw: Any) -> Rejected | Prepared | _Candidate:
        product = self._parse(origin, raw)
        if isinstance(product, Rejection):
            return rejected(product)
        if has_broken_encoding(product.title + " ".join(product.description) + " ".join(product.features)):
            return rejected(Rejection(Reason.BROKEN_ENCODING, "mojibake or U+FFFD in the text", origin, raw))
        uncleaned = raw_text(product)
        identity = item_id(product.title, product.brand)
        keeps = balance_keeps(self.config, identity, product.category, product.price)
        # A row needs both texts; a record the balance drops needs only the one that can reject it.
        text, full_text = scrub_prefixes(uncleaned, self._cut, FULL_TEXT_CHARS) if keeps else (
            scrub(uncleaned[: self._cut]), "")
        if len(text) < self.config.min_chars:
            detail = f"{len(text)} characters after cleaning (minimum {self.config.min_chars})"
            return rejected(Rejection(Reason.TOO_LITTLE_TEXT, detail, origin, raw))
        if not keeps:
            # Dropped unless the curator finds it a duplicate first: no row, so no tokens spent on it.
            return Prepared(identity, product.price, product.title, origin, None)
        return _Candidate(product, identity, uncleaned, text, full_text)

    def _prepared(self, candidate: _Candidate, row: dict[str, Any]) -> Prepared:
        product = candidate.product
        return Prepared(candidate.identity, product.price, product.title, product.origin, row)

    def _truncate(self, candidates: list[_Candidate]) -> tuple[list[str], list[int]]:
        budget = self.config.max_tokens
        texts, counts = truncate_to_tokens(self.tokenizer, [candidate.text for candidate in candidates], budget)
        # A text cut to characters that then ran short of the budget is redone in full (rare).
        short = [i for i, candidate in enumerate(candidates)
                 if counts[i] < budget and len(candidate.text) >= self._cut - 1]
        if short:
            redone = truncate_to_tokens(self.tokenizer, [scrub(candidates[i].raw) for i in short], budget)
            for i, text, count in zip(short, *redone, strict=True):
                texts[i], counts[i] = text, count
        return texts, counts

    def _rows(self, candidates: list[_Candidate]) -> list[dict[str, Any]]:
        texts, counts = self._truncate(candidates)
        rows = []
        for candidate, text, count in zip(candidates, texts, counts, strict=True):
            product = candidate.product
            rows.append({
                "id": candidate.identity,
                "title": product.title,
                "category": product.category,
                "brand": product.brand,
                "price": product.price,
                "text": text,
                "full_text": candidate.full_text,
                "prompt": build_prompt(text),
                "completion": completion(product.price),
                "token_count": count,
                "details": json.dumps(product.details, ensure_ascii=False, sort_keys=True, default=str),
                "source": product.source,
                "origin": product.origin,
                "split": assign_split(candidate.identity, self.config.split),
            })
        return rows
