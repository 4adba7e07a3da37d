"""The scanner agent: deal RSS/Atom feeds -> each deal's page -> validated ``Deal`` objects.

A bad feed or page never stops a scan: malformed XML, timeouts, HTTP errors, pages without a
price and entries that fail validation are logged, counted per reason in the ``ScanReport`` and
skipped (read = deals + skipped, per reason). Deals already in memory are skipped before their
page is fetched. Pages are fetched concurrently with one pooled ``httpx.Client``, each under a
timeout and a byte limit. A feed over the byte limit keeps the entries that arrived complete and
counts the rest (``pricer.agents.feeds``); entries past ``max_deals_per_feed`` are counted too.

Feeds are read by feedparser; prices by the project's one amount parser (``pricer.core.parsing``).
The offered price comes from the page's structured data (schema.org ``Offer`` in JSON-LD, then
``product:price:amount`` meta tags, then ``itemprop="price"``), and only then from a dollar
amount in the deal's title. Free text in a description is never read as the price, so a page
cannot talk its way into a different price; it can only change its own description. Each deal
says where its price came from (``Deal.price_source``): a title's price is low-trust text.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Container, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from pricer.agents.config import FeedConfig, ScannerConfig
from pricer.agents.deals import Deal, canonical_url, deal_key
from pricer.agents.feeds import EntryCounter, FeedEntry, FetchError, parse_feed, salvage
from pricer.agents.pages import extract_page, price_trust

__all__ = ["FeedEntry", "FetchError", "ScanReport", "Scanner", "extract_page", "parse_feed"]

log = logging.getLogger(__name__)


class _Offsite(Exception):
    """A request (or redirect) to a host the scanner may not visit."""


@dataclass(frozen=True)
class Fetched:
    """A response body, cut at ``max_page_bytes`` when ``truncated``."""

    body: bytes
    url: str  # after redirects
    charset: str
    truncated: bool = False
    entries_past: int = 0  # a cut feed: entry start tags counted after the cut
    counted_to_end: bool = True  # False: counting stopped at max_feed_tail_bytes or the deadline


@dataclass(frozen=True)
class FeedRead:
    """A feed's entries to scan, and how many more it held (past the byte limit, past ``max_deals_per_feed``)."""

    entries: list[FeedEntry]
    over_limit: int = 0
    truncated: dict[str, Any] | None = None  # kept, cut, counted_to_end: for the report


@dataclass
class ScanReport:
    """What one scan read and what became of it: ``entries == deals + sum(skipped)``.

    A feed over the byte limit is in ``feeds_truncated`` (entries kept, entries cut and whether the cut
    ones were counted to the end of the response); its cut entries are ``skipped["feed_truncated"]``.
    """

    feeds: int = 0
    feeds_failed: Counter[str] = field(default_factory=Counter)
    feeds_truncated: dict[str, dict[str, Any]] = field(default_factory=dict)
    entries: int = 0
    deals: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "feeds": self.feeds,
            "feeds_failed": dict(self.feeds_failed),
            "feeds_truncated": dict(self.feeds_truncated),
            "entries": self.entries,
            "deals": self.deals,
            "skipped": dict(self.skipped),
            "seconds": round(self.seconds, 3),
        }


def _site(url: str) -> str:
    """A feed's site: its host without a leading ``www.``, so ``www.x.com`` allows ``x.com`` and subdomains."""
    host = (urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.")


def _same_site(url: str, other: str) -> bool:
    one, two = _site(url), _site(other)
    return one == two or one.endswith("." + two) or two.endswith("." + one)


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
        self._feed_urls = {feed.name: feed.url for feed in self.feeds}

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

    def fetch(self, url: str, what: str, *, count_entries: bool = False) -> Fetched:
        """GET ``url`` under the timeout and the byte limit -> its body (cut at the limit), final URL, charset.

        ``count_entries``: when the body is cut, read on (at most ``max_feed_tail_bytes``, within the
        deadline) only to count the feed entries that start after the cut.
        """
        deadline = time.monotonic() + self.config.timeout_s * 3  # slow drip: per-read timeouts add up
        limit = self.config.max_page_bytes
        try:
            with self._http().stream("GET", url) as response:
                if response.status_code >= 400:
                    raise FetchError(f"{what}_http_error", f"HTTP {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                stream = response.iter_bytes()
                for chunk in stream:
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        log.info("%s %s is larger than %d bytes; reading only that much", what, url, limit)
                        break
                    if time.monotonic() > deadline:
                        raise FetchError(f"{what}_timeout", "the response took too long overall")
                body = b"".join(chunks)
                final, charset = str(response.url), response.charset_encoding or "utf-8"
                if size <= limit:
                    return Fetched(body, final, charset)
                if not count_entries:
                    return Fetched(body[:limit], final, charset, truncated=True)
                counter = EntryCounter(body[:limit])
                counter.feed(body[limit:])
                to_end = self._count_rest(stream, counter, deadline)
                return Fetched(body[:limit], final, charset, True, counter.count, to_end)
        except _Offsite as error:  # raised by the host check, e.g. on a redirect
            raise FetchError(f"{what}_offsite", str(error)) from None
        except httpx.TimeoutException:
            raise FetchError(f"{what}_timeout", f"no answer within {self.config.timeout_s:g} s") from None
        except httpx.HTTPError as error:
            raise FetchError(f"{what}_unreachable", type(error).__name__) from None

    def _count_rest(self, stream: Any, counter: EntryCounter, deadline: float) -> bool:
        """Feed the rest of a response to ``counter``; False when it stopped before the end."""
        try:
            for chunk in stream:
                if counter.bytes >= self.config.max_feed_tail_bytes or time.monotonic() > deadline:
                    return False
                counter.feed(chunk)
        except httpx.HTTPError:  # the count is a courtesy: what was read is still parsed
            return False
        return True

    def read_feed(self, feed: FeedConfig) -> FeedRead:
        fetched = self.fetch(feed.url, "feed", count_entries=True)  # XML declares its own encoding
        truncated = None
        if not fetched.truncated:
            entries = parse_feed(fetched.body, feed.name, fetched.url)
        else:
            salvaged = salvage(fetched.body)
            entries = parse_feed(salvaged.body, feed.name, fetched.url) if salvaged.body else []
            cut = salvaged.cut + fetched.entries_past
            truncated = {"kept": len(entries), "cut": cut, "counted_to_end": fetched.counted_to_end}
            log.warning(
                "feed %s is larger than scanner.max_page_bytes (%d): %d entries kept, %s%d cut",
                feed.name, self.config.max_page_bytes, len(entries), "" if fetched.counted_to_end else "at least ",
                cut,
            )
        keep = self.config.max_deals_per_feed
        return FeedRead(entries[:keep], max(0, len(entries) - keep), truncated)

    def _deal(self, entry: FeedEntry) -> Deal:
        if not self.allowed(entry.link):
            host = urlsplit(entry.link).hostname
            raise FetchError("page_offsite", f"{host} is neither a feed's site nor an allowed host")
        page = self.fetch(entry.link, "page")
        try:
            html = page.body.decode(page.charset, errors="replace")
        except LookupError:  # a charset Python does not know
            html = page.body.decode("utf-8", errors="replace")
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
                price_source=price_trust(
                    info, independent=not _same_site(page.url, self._feed_urls.get(entry.feed, page.url))
                ),
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
            log.info("feed %s: %d entries", feed.name, len(found.entries))
            entries.extend(found.entries)
            # Entries the feed held but the scan will not look at: read (counted), and skipped with why.
            if found.over_limit:
                report.entries += found.over_limit
                report.skipped["over_feed_limit"] += found.over_limit
            if found.truncated is not None:
                report.feeds_truncated[feed.name] = found.truncated
                if found.truncated["cut"]:
                    report.entries += found.truncated["cut"]
                    report.skipped["feed_truncated"] += found.truncated["cut"]

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
