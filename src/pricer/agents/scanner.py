"""The scanner agent: deal RSS/Atom feeds -> each deal's page -> validated ``Deal`` objects.

A bad feed or page never stops a scan: malformed XML, timeouts, HTTP errors, pages without a
price and entries that fail validation are logged, counted per reason in the ``ScanReport`` and
skipped (read = deals + skipped, per reason). Deals already in memory are skipped before their
page is fetched. Pages are fetched concurrently with one pooled ``httpx.Client``, each under a
timeout and a byte limit.

The offered price comes from the page's structured data (schema.org ``Offer`` in JSON-LD, then
``product:price:amount`` meta tags, then ``itemprop="price"``), and only then from a ``$``
amount in the deal's title. Free text in a description is never read as the price, so a page
cannot talk its way into a different price; it can only change its own description.
"""

from __future__ import annotations

import json
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Container, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import ValidationError

from pricer.agents.config import FeedConfig, ScannerConfig
from pricer.agents.deals import Deal, canonical_url, clean_text, deal_key

log = logging.getLogger(__name__)

_DOLLARS = re.compile(r"\$\s?(\d{1,3}(?:,\d{3})+|\d+)(\.\d{1,2})?(?!\d)")
_NUMBER = re.compile(r"^\s*\$?\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*$")
_PRICE_META = ("product:price:amount", "og:price:amount", "price")
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head"})
_MAX_BODY_CHARS = 8000


class FetchError(Exception):
    """A feed or page that could not be read; ``reason`` is the counter it is reported under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Offsite(Exception):
    """A request (or redirect) to a host the scanner may not visit."""


@dataclass(frozen=True)
class FeedEntry:
    feed: str
    title: str
    link: str
    summary: str


@dataclass
class ScanReport:
    """What one scan read and what became of it: ``entries == deals + sum(skipped)``."""

    feeds: int = 0
    feeds_failed: Counter[str] = field(default_factory=Counter)
    entries: int = 0
    deals: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "feeds": self.feeds,
            "feeds_failed": dict(self.feeds_failed),
            "entries": self.entries,
            "deals": self.deals,
            "skipped": dict(self.skipped),
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------- parsing


def _site(url: str) -> str:
    """A feed's site: its host without a leading ``www.``, so ``www.x.com`` allows ``x.com`` and subdomains."""
    host = (urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _child_text(element: ET.Element, *names: str) -> str:
    for child in element:
        if _local(child.tag) in names:
            return "".join(child.itertext()).strip()
    return ""


def _atom_link(element: ET.Element) -> str:
    fallback = ""
    for child in element:
        if _local(child.tag) == "link":
            href = child.get("href") or (child.text or "").strip()
            if child.get("rel", "alternate") == "alternate" and href:
                return href
            fallback = fallback or href
    return fallback


def parse_feed(xml: bytes, feed: str, base_url: str = "") -> list[FeedEntry]:
    """RSS 2.0, RSS 1.0 (RDF) or Atom bytes -> entries. Raises ``FetchError('feed_malformed', ...)``.

    ElementTree never fetches external entities, and the expat it ships with refuses entity
    expansion bombs, so a hostile feed costs at most its own size.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as error:
        raise FetchError("feed_malformed", f"not well-formed XML ({error})") from None
    if _local(root.tag) not in ("rss", "rdf", "feed"):
        raise FetchError("feed_malformed", f"root element <{_local(root.tag)}> is not rss, rdf or feed")
    entries = []
    for element in root.iter():
        kind = _local(element.tag)
        if kind not in ("item", "entry"):
            continue
        link = _child_text(element, "link") if kind == "item" else _atom_link(element)
        if kind == "item" and not link:
            guid = next((c for c in element if _local(c.tag) == "guid"), None)
            if guid is not None and guid.get("isPermaLink", "true") != "false":
                link = (guid.text or "").strip()
        entries.append(
            FeedEntry(
                feed=feed,
                title=_child_text(element, "title"),
                link=urljoin(base_url, link) if link else "",
                summary=html_to_text(_child_text(element, "description", "summary", "content", "encoded")),
            )
        )
    return entries


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


def parse_amount(value: Any) -> float | None:
    """A price as JSON-LD or a meta tag states it (``19.99``, ``"1,299.00"``, ``"$45"``) -> float."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    match = _NUMBER.match(str(value))
    if match is None:
        return None
    amount = float(match.group(1).replace(",", "") + (match.group(2) or ""))
    return amount if amount > 0 else None


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


def _dollars_in(text: str) -> float | None:
    match = _DOLLARS.search(text or "")
    if match is None:
        return None
    return parse_amount(match.group(1) + (match.group(2) or ""))


@dataclass(frozen=True)
class PageInfo:
    title: str
    description: str
    price: float | None
    price_source: str | None


def extract_page(html: str, entry: FeedEntry | None = None) -> PageInfo:
    """A deal page (and its feed entry) -> title, description and the offered price, if stated."""
    parser = _PageParser()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # a page html.parser cannot finish still gave us what it read so far
        log.debug("html parser stopped early", exc_info=True)
    meta = parser.meta
    entry_title = entry.title if entry else ""
    title = clean_text(entry_title or meta.get("og:title") or parser.title)
    description = clean_text(
        meta.get("og:description")
        or meta.get("description")
        or (entry.summary if entry else "")
        or "".join(parser.text)
    )
    candidates: list[tuple[str, float | None]] = [
        ("json-ld", _json_ld_price(parser.json_ld)),
        ("meta", next((parse_amount(meta[name]) for name in _PRICE_META if name in meta), None)),
        ("itemprop", parse_amount(parser.itemprop_price)),
        ("title", _dollars_in(entry_title)),
        ("page-title", _dollars_in(meta.get("og:title") or parser.title)),
    ]
    for source, price in candidates:
        if price is not None:
            return PageInfo(title, description, price, source)
    return PageInfo(title, description, None, None)


# --------------------------------------------------------------------------- the agent


class Scanner:
    """Reads the configured feeds and turns their entries into ``Deal`` objects."""

    name = "scanner"

    def __init__(
        self,
        config: ScannerConfig,
        feeds: Sequence[FeedConfig],
        *,
        client: httpx.Client | None = None,
    ) -> None:
        self.config = config
        self.feeds = list(feeds)
        self._client = client
        self._sites = {_site(feed.url) for feed in self.feeds} | {
            host.lower() for host in config.allowed_hosts
        }

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=httpx.Timeout(self.config.timeout_s),
                limits=httpx.Limits(max_connections=self.config.concurrency * 2),
                headers={"User-Agent": self.config.user_agent, "Accept": "*/*"},
                follow_redirects=True,
                max_redirects=5,
                event_hooks={"request": [self._check_host]},
            )
        return self._client

    def allowed(self, url: str) -> bool:
        """Whether ``url`` is on a feed's own site or an allowed host (subdomains included)."""
        if self.config.any_host:
            return True
        host = (urlsplit(url).hostname or "").lower()
        return any(host == site or host.endswith("." + site) for site in self._sites)

    def _check_host(self, request: httpx.Request) -> None:
        # Every request, redirects included: a feed's links must not steer the scanner elsewhere.
        if not self.allowed(str(request.url)):
            raise _Offsite(f"{request.url.host} is neither a feed's site nor an allowed host")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def fetch(self, url: str, what: str) -> tuple[bytes, str, str]:
        """GET ``url`` under the timeout and the byte limit -> (body, final URL, declared charset)."""
        deadline = time.monotonic() + self.config.timeout_s * 3  # slow drip: per-read timeouts add up
        try:
            with self._http().stream("GET", url) as response:
                if response.status_code >= 400:
                    raise FetchError(f"{what}_http_error", f"HTTP {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= self.config.max_page_bytes:
                        log.info(
                            "%s %s is larger than %d bytes; reading only that much",
                            what,
                            url,
                            self.config.max_page_bytes,
                        )
                        break
                    if time.monotonic() > deadline:
                        raise FetchError(f"{what}_timeout", "the response took too long overall")
                body = b"".join(chunks)[: self.config.max_page_bytes]
                return body, str(response.url), response.charset_encoding or "utf-8"
        except _Offsite as error:  # raised by the host check, e.g. on a redirect
            raise FetchError(f"{what}_offsite", str(error)) from None
        except httpx.TimeoutException:
            raise FetchError(f"{what}_timeout", f"no answer within {self.config.timeout_s:g} s") from None
        except httpx.HTTPError as error:
            raise FetchError(f"{what}_unreachable", type(error).__name__) from None

    def read_feed(self, feed: FeedConfig) -> list[FeedEntry]:
        body, final_url, _ = self.fetch(feed.url, "feed")  # XML declares its own encoding
        return parse_feed(body, feed.name, final_url)[: self.config.max_deals_per_feed]

    def _deal(self, entry: FeedEntry) -> Deal:
        if not self.allowed(entry.link):
            host = urlsplit(entry.link).hostname
            raise FetchError("page_offsite", f"{host} is neither a feed's site nor an allowed host")
        body, _, charset = self.fetch(entry.link, "page")
        try:
            html = body.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            html = body.decode("utf-8", errors="replace")
        info = extract_page(html, entry)
        if info.price is None:
            raise FetchError("no_price", "the page states no offered price")
        try:
            return Deal(
                url=entry.link,
                title=info.title or entry.link,
                description=info.description[: self.config.max_description_chars],
                price=info.price,
                feed=entry.feed,
            )
        except ValidationError as error:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise FetchError("invalid", reasons) from None

    def scan(
        self, known: Container[str] = frozenset(), limit: int | None = None
    ) -> tuple[list[Deal], ScanReport]:
        """New deals from every feed, in feed order; ``known`` holds the keys (``deal_key``) to skip."""
        started = time.perf_counter()
        report = ScanReport()
        entries: list[FeedEntry] = []
        for feed in self.feeds:
            report.feeds += 1
            try:
                found = self.read_feed(feed)
            except FetchError as error:
                report.feeds_failed[error.reason] += 1
                log.warning("feed %s skipped: %s", feed.name, error)
                continue
            log.info("feed %s: %d entries", feed.name, len(found))
            entries.extend(found)

        todo: list[FeedEntry] = []
        seen: set[str] = set()
        for entry in entries:
            report.entries += 1
            if not entry.link:
                report.skipped["no_link"] += 1
                log.warning("an entry of feed %s has no link; skipped", entry.feed)
                continue
            try:
                key = deal_key(entry.link)
            except ValueError:
                report.skipped["invalid"] += 1
                continue
            if key in known:
                report.skipped["known"] += 1
                continue
            if key in seen:
                report.skipped["duplicate"] += 1
                continue
            seen.add(key)
            if limit is not None and len(todo) >= limit:
                report.skipped["over_limit"] += 1
                continue
            todo.append(entry)

        deals: list[Deal] = []
        with ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="scan") as pool:
            for entry, outcome in zip(todo, pool.map(self._try_deal, todo), strict=True):
                if isinstance(outcome, Deal):
                    deals.append(outcome)
                else:
                    report.skipped[outcome.reason] += 1
                    log.warning("deal %s skipped: %s", canonical_url(entry.link), outcome)
        report.deals = len(deals)
        report.seconds = time.perf_counter() - started
        log.info(
            "scan: %d new deals from %d entries in %d feeds (%s skipped) in %.1f s",
            report.deals,
            report.entries,
            report.feeds,
            ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items())) or "none",
            report.seconds,
        )
        return deals, report

    def _try_deal(self, entry: FeedEntry) -> Deal | FetchError:
        try:
            return self._deal(entry)
        except FetchError as error:
            return error
        except Exception as error:  # a page that breaks the parser must not break the scan
            log.exception("deal %s: unexpected error", entry.link)
            return FetchError("error", type(error).__name__)
