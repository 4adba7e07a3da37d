"""What a deal page says about itself: its title, description and the price it states, if any.

The price comes from the page's structured data (schema.org ``Offer`` in JSON-LD, then
``product:price:amount`` meta tags, then ``itemprop="price"``), and only then from a dollar amount in
the deal's title; each is read by the project's one amount parser. Free text in a description is
never read as the price. A title's price is text, and is trusted only as far as ``price_trust`` says
(see ``pricer.agents.deals``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Protocol

from pricer.agents.deals import PriceSource
from pricer.core.parsing import find_price, parse_amount
from pricer.core.prompt import clean_text

log = logging.getLogger(__name__)

_PRICE_META = ("product:price:amount", "og:price:amount", "price")
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head"})
_MAX_BODY_CHARS = 8000
STRUCTURED_SOURCES = frozenset({"json-ld", "meta", "itemprop"})


class Listing(Protocol):
    """What a feed says of a deal: its title and summary win over the page's own."""

    title: str
    summary: str


class _PageParser(HTMLParser):
    """Collects what a deal page says about itself: title, meta tags, JSON-LD, itemprop price, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.meta: dict[str, str] = {}
        self.json_ld: list[str] = []
        self.itemprop_price: str | None = None
        self.text: list[str] = []
        self._text_chars = 0
        self._stack: list[str] = []
        self._in_title = False
        self._in_json_ld = False
        self._json_buffer: list[str] = []
        self._price_capture = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key.lower(): (value or "") for key, value in attrs}
        if tag == "meta":
            name = (values.get("property") or values.get("name") or values.get("itemprop") or "").lower()
            if name and "content" in values and name not in self.meta:
                self.meta[name] = values["content"]
            return
        if values.get("itemprop", "").lower() == "price" and self.itemprop_price is None:
            if values.get("content"):
                self.itemprop_price = values["content"]
            else:
                self._price_capture = True
        if tag in ("br", "img", "input", "hr", "link", "source", "wbr"):
            return
        self._stack.append(tag)
        if tag == "title":
            self._in_title = True
        elif tag == "script" and values.get("type", "").lower() == "application/ld+json":
            self._in_json_ld = True
            self._json_buffer = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag == "script" and self._in_json_ld:
            self._in_json_ld = False
            self.json_ld.append("".join(self._json_buffer))
        if tag in self._stack:
            while self._stack and self._stack.pop() != tag:
                pass
        if tag in ("p", "div", "li", "h1", "h2", "h3", "tr", "section", "article"):
            self._add_text("\n")

    def handle_data(self, data: str) -> None:
        if self._in_json_ld:
            self._json_buffer.append(data)
            return
        if self._in_title:
            self.title += data
            return
        if self._price_capture and data.strip():
            self.itemprop_price = data.strip()
            self._price_capture = False
        if not any(tag in _SKIPPED_TAGS for tag in self._stack):
            self._add_text(data)

    def _add_text(self, data: str) -> None:
        if self._text_chars < _MAX_BODY_CHARS:
            self.text.append(data)
            self._text_chars += len(data)


def html_to_text(html: str) -> str:
    if "<" not in html:
        return clean_text(html)
    parser = _PageParser()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001 - html.parser is lenient; what it still chokes on is not text
        return clean_text(re.sub(r"<[^>]+>", " ", html))
    return clean_text("".join(parser.text))


def _offers(node: Any) -> Iterator[Any]:
    """Every schema.org offer-ish mapping in a JSON-LD document, depth first."""
    if isinstance(node, list):
        for item in node:
            yield from _offers(item)
    elif isinstance(node, dict):
        kind = node.get("@type")
        kinds = {str(k).lower() for k in (kind if isinstance(kind, list) else [kind])}
        if kinds & {"offer", "aggregateoffer"} or "price" in node or "lowprice" in node:
            yield node
        for key in ("offers", "@graph", "mainEntity", "itemOffered"):
            if key in node:
                yield from _offers(node[key])


def _json_ld_price(documents: Sequence[str]) -> float | None:
    for raw in documents:
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        for offer in _offers(data):
            currency = str(offer.get("priceCurrency") or "USD").upper()
            if currency != "USD":
                continue
            for key in ("price", "lowPrice"):
                if (amount := parse_amount(offer.get(key))) is not None:
                    return amount
    return None


@dataclass(frozen=True)
class PageInfo:
    title: str
    description: str
    price: float | None
    price_source: str | None  # json-ld | meta | itemprop | title (the feed's) | page-title
    page_agrees: bool = False  # a feed title's price that the page's own title states too


def price_trust(info: PageInfo, *, independent: bool) -> PriceSource:
    """How far a page's price is trusted; ``independent``: the page is on another site than its feed."""
    if info.price_source in STRUCTURED_SOURCES:
        return "structured"
    # The same site's feed and page are one publisher saying it twice; two sites are two publishers.
    return "corroborated" if info.page_agrees and independent else "text"


def extract_page(html: str, entry: Listing | None = None) -> PageInfo:
    """A deal page (and its feed entry) -> title, description and the offered price, if stated."""
    parser = _PageParser()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # a page html.parser cannot finish still gave us what it read so far
        log.debug("html parser stopped early", exc_info=True)
    meta = parser.meta
    entry_title = entry.title if entry else ""
    # Markup in a title ("<script>", "<b>") is dropped: a title is shown in notifications as it is. Prices
    # are read from the raw titles below, before cleaning could join "$1\u200b99" into "$199".
    title = html_to_text(entry_title or meta.get("og:title") or parser.title)
    description = clean_text(
        meta.get("og:description")
        or meta.get("description")
        or (entry.summary if entry else "")
        or "".join(parser.text)
    )
    page_title_price = find_price(meta.get("og:title") or parser.title, currency_required=True)
    candidates: list[tuple[str, float | None]] = [
        ("json-ld", _json_ld_price(parser.json_ld)),
        ("meta", next((parse_amount(meta[name]) for name in _PRICE_META if name in meta), None)),
        ("itemprop", parse_amount(parser.itemprop_price)),
        ("title", find_price(entry_title, currency_required=True)),
        ("page-title", page_title_price),
    ]
    for source, price in candidates:
        if price is not None and price > 0:  # "0" or "free" is no offer price: the next source may state one
            agrees = source == "title" and page_title_price is not None and abs(page_title_price - price) < 0.005
            return PageInfo(title, description, price, source, agrees)
    return PageInfo(title, description, None, None)


# --------------------------------------------------------------------------- the agent
