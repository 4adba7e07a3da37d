"""Deal feeds: RSS 2.0, RSS 1.0 (RDF) or Atom bytes -> entries, including feeds cut at the byte limit.

The scanner reads at most ``scanner.max_page_bytes`` of a feed. A feed larger than that is not
refused whole: its body is cut after the last entry that arrived complete, the elements still open
there are closed, and that document is parsed as strictly as any other (``salvage``). The entries
that did not fit are counted, never parsed: the one the cut went through, and those after it, whose
start tags the scanner counts while it reads on, up to ``scanner.max_feed_tail_bytes`` more
(``EntryCounter``). Nothing is dropped without a count: kept + cut = what the feed held.
"""

from __future__ import annotations

import re
import xml.sax
from dataclasses import dataclass
from xml.parsers import expat

import feedparser

from pricer.agents.pages import html_to_text

_ENTRY_TAGS = frozenset({"item", "entry"})
# An entry's start tag in raw bytes, prefixed or not ("<item>", "<atom:entry xml:base=...>"); not "<items>".
_ENTRY_START = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)[\s/>]")
_OVERLAP = 64  # longer than any start tag the pattern needs to see whole


class FetchError(Exception):
    """A feed or page that could not be read; ``reason`` is the counter it is reported under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FeedEntry:
    feed: str
    title: str
    link: str
    summary: str


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


def _is_entry(name: str) -> bool:
    return name.rsplit(":", 1)[-1] in _ENTRY_TAGS


@dataclass(frozen=True)
class Salvaged:
    """A cut feed, closed after its last complete entry; ``cut`` entries had begun after it."""

    body: bytes | None  # None: no entry arrived complete
    complete: int
    cut: int


def salvage(body: bytes) -> Salvaged:
    """The first ``max_page_bytes`` of a feed -> a well-formed document of its complete entries.

    Expat reads the bytes as far as they go (a cut token or character just waits for more), noting where
    each entry's end tag ends and which elements are open there; those are then closed in order. Raises
    ``FetchError('feed_malformed', ...)`` when what arrived is not well-formed XML.
    """
    parser = expat.ParserCreate()
    stack: list[str] = []
    ends: list[tuple[int, tuple[str, ...]]] = []

    def start(name: str, _attrs: object) -> None:
        stack.append(name)

    def end(name: str) -> None:
        stack.pop()
        if _is_entry(name):
            at = parser.CurrentByteIndex
            # An end tag is reported where it begins; an empty element ("<item/>") where it has ended.
            stop = body.index(b">", at) + 1 if body.startswith(b"</", at) else at
            ends.append((stop, tuple(stack)))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(body, False)
    except expat.ExpatError as error:
        raise FetchError("feed_malformed", f"not well-formed XML before the byte limit ({error})") from None
    if not ends:
        return Salvaged(None, 0, _starts(body, 0))
    stop, still_open = ends[-1]
    try:
        closing = "".join(f"</{name}>" for name in reversed(still_open)).encode("ascii")
    except UnicodeEncodeError:
        raise FetchError("feed_malformed", "element names the cut feed cannot be closed with") from None
    return Salvaged(body[:stop] + closing, len(ends), _starts(body, stop))


def _starts(body: bytes, after: int) -> int:
    # By their tags, as the tail is counted: an entry whose start tag the cut split is counted there.
    return sum(1 for _ in _ENTRY_START.finditer(body, after))


class EntryCounter:
    """Counts entry start tags in a byte stream fed in chunks, a tag split between chunks once."""

    def __init__(self, head: bytes = b"") -> None:
        self.count = 0
        self.bytes = 0
        self._overlap = head[-_OVERLAP:]  # the end of what was parsed: a tag the cut split is counted here

    def feed(self, chunk: bytes) -> None:
        window = self._overlap + chunk
        # A tag that ends inside the overlap was counted with the chunk before (or parsed with the head).
        self.count += sum(1 for match in _ENTRY_START.finditer(window) if match.end() > len(self._overlap))
        self.bytes += len(chunk)
        self._overlap = window[-_OVERLAP:]
