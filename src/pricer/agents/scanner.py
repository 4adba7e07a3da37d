"""The scanner agent: deal RSS/Atom feeds -> each deal's page -> validated ``Deal`` objects.

A bad feed or page never stops a scan: malformed XML, timeouts, HTTP errors, pages without a
price and entries that fail validation are logged, counted per reason in the ``ScanReport`` and
skipped (read = deals + skipped, per reason). Deals already in memory are skipped before their
page is fetched. Pages are fetched concurrently with one pooled ``httpx.Client``, each under a
timeout and a byte limit.

Feeds are read by feedparser; prices by the project's one amount parser (``pricer.core.parsing``).
The offered price comes from the page's structured data (schema.org ``Offer`` in JSON-LD, then
``product:price:amount`` meta tags, then ``itemprop="price"``), and only then from a dollar
amount in the deal's title. Free text in a description is never read as the price, so a page
cannot talk its way into a different price; it can only change its own description.
"""

from __future__ import annotations

import logging
import time
import xml.sax
from collections import Counter
from collections.abc import Container, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import feedparser
import httpx
from pydantic import ValidationError

from pricer.agents.config import FeedConfig, ScannerConfig
from pricer.agents.deals import Deal, canonical_url, deal_key
from pricer.agents.pages import extract_page, html_to_text

log = logging.getLogger(__name__)


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


def parse_feed(body: bytes, feed: str, base_url: str = "") -> list[FeedEntry]:
    """RSS 2.0, RSS 1.0 (RDF) or Atom bytes -> entries. Raises ``FetchError('feed_malformed', ...)``.

    feedparser resolves relative links against ``base_url``, never fetches external entities and
    strips scripts from summaries; what is not well-formed XML, or not a feed, is refused whole.
    """
    parsed = feedparser.parse(body, response_headers={"content-type": "application/xml",
                                                     "content-location": base_url})
    if parsed.bozo and isinstance(parsed.get("bozo_exception"), xml.sax.SAXException):
        raise FetchError("feed_malformed", f"not well-formed XML ({parsed.bozo_exception})")
    if not parsed.version:
        raise FetchError("feed_malformed", "not an RSS or Atom feed")
    entries = []
    for entry in parsed.entries:
        content = entry.get("content") or [{}]
        summary = entry.get("summary") or content[0].get("value") or ""
        entries.append(FeedEntry(feed=feed, title=str(entry.get("title") or "").strip(),
                                 link=str(entry.get("link") or ""), summary=html_to_text(summary)))
    return entries


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
