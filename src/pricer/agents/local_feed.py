"""Deal feeds served from 127.0.0.1: the main job's demo deals, and the agents' tests and benchmark.

``DealFeedServer`` serves RSS feeds and deal pages: one feed per ``DealPage.feed``, plus a feed
of malformed XML (``/feeds/broken.xml``) and a missing one (404). A page states its price the way
real shops do (schema.org JSON-LD, a ``product:price:amount`` meta tag, an ``itemprop="price"``
element or only a "$N" in the title), states none at all, or answers after ``delay_s`` seconds.
``serving_demo_deals`` puts products of a curated split on sale there, some well below their
price, and yields an agents config whose feeds point at it: the scanner, the estimators and the
planner run as they would on the web, offline (stdlib HTTP only).
"""

from __future__ import annotations

import html
import json
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import yaml

BROKEN_FEED = "broken"
MISSING_FEED = "missing"


@dataclass
class DealPage:
    slug: str
    title: str
    description: str
    price: float | None  # None: the page states no price anywhere
    feed: str = "deals"
    delay_s: float = 0.0  # answer only after this long
    price_in: str = "json-ld"  # json-ld | meta | itemprop | title
    link: str | None = None  # the feed links here instead of to this server's page
    redirect_to: str | None = None  # the page answers 302 to this URL

    def feed_title(self) -> str:
        return (
            f"{self.title} for ${self.price:,.2f}" if self.price_in == "title" and self.price else self.title
        )


def _page_html(page: DealPage) -> str:
    title = html.escape(page.title)
    description = html.escape(page.description)
    head = [
        f"<title>{title} | Deal Shop</title>",
        f'<meta property="og:title" content="{title}">',
        f'<meta name="description" content="{description}">',
    ]
    body = [
        f"<h1>{title}</h1>",
        f"<div class='summary'><p>{description}</p></div>",
        "<nav><a href='/'>Home</a> <a href='/help'>Help</a></nav>",
    ]
    if page.price is not None:
        if page.price_in == "json-ld":
            offer = {
                "@context": "https://schema.org",
                "@type": "Product",
                "name": page.title,
                "offers": {"@type": "Offer", "price": f"{page.price:.2f}", "priceCurrency": "USD"},
            }
            head.append(f'<script type="application/ld+json">{json.dumps(offer)}</script>')
        elif page.price_in == "meta":
            head.append(f'<meta property="product:price:amount" content="{page.price:.2f}">')
            head.append('<meta property="product:price:currency" content="USD">')
        elif page.price_in == "itemprop":
            body.append(f'<span class="price">$<span itemprop="price">{page.price:.2f}</span></span>')
    return (
        "<!doctype html><html><head>"
        + "".join(head)
        + "<script>var tracking = 1;</script></head><body>"
        + "".join(body)
        + "</body></html>"
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default backlog of 5 drops concurrent connects (a 1 s SYN retry each)


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 (a free port), started and stopped with ``with``."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> Any:
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=type(self).__name__,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def wait(self, seconds: float) -> None:
        self.stopping.wait(seconds)


class DealFeedServer(LocalServer):
    """RSS feeds of ``DealPage``s and the pages themselves, as a deal site serves them."""

    def __init__(self, pages: list[DealPage] | None = None) -> None:
        super().__init__()
        self.pages: dict[str, DealPage] = {}
        self.add(pages or [])

    def add(self, pages: list[DealPage]) -> None:
        with self.lock:
            for page in pages:
                self.pages[page.slug] = page

    def feed_names(self) -> list[str]:
        with self.lock:
            return list(dict.fromkeys(page.feed for page in self.pages.values()))

    def feed_url(self, name: str) -> str:
        return f"{self.base_url}/feeds/{name}.xml"

    def page_url(self, slug: str) -> str:
        return f"{self.base_url}/deals/{slug}.html"

    def feeds_config(self, *, broken: bool = True, missing: bool = True) -> list[dict[str, str]]:
        names = self.feed_names() + ([BROKEN_FEED] if broken else []) + ([MISSING_FEED] if missing else [])
        return [{"name": name, "url": self.feed_url(name)} for name in names]

    def rss(self, name: str) -> str:
        with self.lock:
            pages = [page for page in self.pages.values() if page.feed == name]
        items = "".join(
            f"<item><title>{html.escape(page.feed_title())}</title>"
            f"<link>{html.escape(page.link or self.page_url(page.slug))}</link>"
            f"<description>{html.escape('<p>' + page.description[:200] + '</p>')}</description></item>"
            for page in pages
        )
        return (
            "<?xml version='1.0' encoding='UTF-8'?><rss version='2.0'><channel>"
            f"<title>{name} deals</title><link>{self.base_url}</link><description>test</description>"
            f"{items}</channel></rss>"
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: str, content_type: str) -> None:
                data = body.encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                with server.lock:
                    server.requests[path] += 1
                if path == f"/feeds/{BROKEN_FEED}.xml":
                    return self._send(
                        200,
                        "<?xml version='1.0'?><rss><channel><item><title>oops</chan",
                        "application/rss+xml",
                    )
                if path.startswith("/feeds/") and path.endswith(".xml"):
                    name = path.removeprefix("/feeds/").removesuffix(".xml")
                    if name not in server.feed_names():
                        return self._send(404, "no such feed", "text/plain")
                    return self._send(200, server.rss(name), "application/rss+xml; charset=utf-8")
                if path.startswith("/deals/") and path.endswith(".html"):
                    with server.lock:
                        page = server.pages.get(path.removeprefix("/deals/").removesuffix(".html"))
                    if page is None:
                        return self._send(404, "gone", "text/plain")
                    if page.delay_s:
                        server.wait(page.delay_s)
                    if page.redirect_to:
                        self.send_response(302)
                        self.send_header("Location", page.redirect_to)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    return self._send(200, _page_html(page), "text/html; charset=utf-8")
                return self._send(404, "not found", "text/plain")

        return Handler


# Most items on sale at a little off; a few at deep discounts that the agents should surface.
_DEMO_DISCOUNTS = (0.95, 0.9, 0.85, 1.0, 0.45, 0.9, 0.95, 0.5, 1.0, 0.9)


def demo_pages(items: pd.DataFrame, n: int = 20, seed: int = 0) -> list[DealPage]:
    """``n`` products of ``items`` on sale, each at its price times a fixed discount pattern."""
    chosen = items.sample(n=min(n, len(items)), random_state=seed).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    pages = []
    for i, item in chosen.iterrows():
        lines = str(item["text"]).split("\n", 1)
        price = round(float(item["price"]) * _DEMO_DISCOUNTS[i % len(_DEMO_DISCOUNTS)], 2)
        pages.append(DealPage(slug=f"deal-{i}", title=str(item.get("title") or lines[0])[:120],
                              description=lines[-1][:1500], price=price, feed="demo-deals",
                              price_in=str(rng.choice(["json-ld", "meta", "itemprop"]))))
    return pages


@contextmanager
def serving_demo_deals(agents_config: str | Path, items_path: str | Path, n: int = 20) -> Iterator[Path]:
    """Serve demo deals from ``items_path`` (a curated split) and yield a copy of ``agents_config``
    whose feeds are the local ones; everything else in the config is kept."""
    config = yaml.safe_load(Path(agents_config).read_text())
    with DealFeedServer(demo_pages(pd.read_parquet(items_path), n)) as server, \
            tempfile.TemporaryDirectory(prefix="pricer-demo-feed-") as tmp:
        config["feeds"] = server.feeds_config(broken=False, missing=False)
        path = Path(tmp) / "agents.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        yield path
