"""Real HTTP servers on 127.0.0.1 for the deal agents' tests and benchmark (stdlib only).

``DealFeedServer`` serves RSS feeds and deal pages: one feed per ``DealPage.feed``, plus a
feed of malformed XML (``/feeds/broken.xml``) and a missing one (404). A page states its
price the way real shops do (schema.org JSON-LD, a ``product:price:amount`` meta tag, an
``itemprop="price"`` element or only a "$N" in the title), states none at all, or answers
after ``delay_s`` seconds, longer than the client's timeout.

``WebhookReceiver`` records every POST (path, headers, JSON or form body) and can refuse the
next N with a status (``fail_next``), refuse all (``fail_status``), or hang (``delay_s``).
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


class _Base:
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


class DealFeedServer(_Base):
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


class WebhookReceiver(_Base):
    """Records POSTs; ``delivered`` are those it acknowledged with 2xx."""

    def __init__(self, *, fail_status: int | None = None, fail_next: int = 0, delay_s: float = 0.0) -> None:
        super().__init__()
        self.fail_status = fail_status
        self.fail_next = fail_next
        self.fail_next_status = 503
        self.delay_s = delay_s
        self.received: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    def delivered_keys(self) -> list[str]:
        with self.lock:
            return [item["headers"].get("idempotency-key", "") for item in self.delivered]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8") if length else ""
                content_type = self.headers.get("Content-Type", "")
                if "json" in content_type:
                    body: Any = json.loads(raw or "null")
                elif "form" in content_type:
                    body = {k: v[0] for k, v in parse_qs(raw).items()}
                else:
                    body = raw
                record = {
                    "path": urlsplit(self.path).path,
                    "body": body,
                    "at": time.time(),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
                with server.lock:
                    server.received.append(record)
                    server.requests[record["path"]] += 1
                    status = 200
                    if server.fail_status is not None:
                        status = server.fail_status
                    elif server.fail_next > 0:
                        server.fail_next -= 1
                        status = server.fail_next_status
                if server.delay_s:
                    server.wait(server.delay_s)
                    if server.stopping.is_set():
                        return
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"ok": true}' if status < 300 else b'{"ok": false}')
                except (BrokenPipeError, ConnectionResetError):
                    return
                if status < 300:
                    with server.lock:
                        server.delivered.append(record)

        return Handler


# --------------------------------------------------------------------------- models for the agents' tests


def fit_text_regressor(train: Any, *, char_ngrams: bool = False, alpha: float = 1.0) -> Any:
    """A small real price model on item text (TF-IDF + ridge on log price): fits in about a second."""
    import numpy as np
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    vectorizer = (
        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2)
        if char_ngrams
        else TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    )
    pipeline = make_pipeline(ColumnTransformer([("tfidf", vectorizer, "text")]), Ridge(alpha=alpha))
    model = TransformedTargetRegressor(pipeline, func=np.log1p, inverse_func=np.expm1)
    return model.fit(train[["text"]], train["price"].to_numpy(dtype=float))


def register_champion(model: Any, example: Any, name: str, mae: float, test_digest: str = "x") -> str:
    """Log ``model`` as a price pyfunc in a run of the configured store, register it and promote it."""
    import mlflow

    from pricer.serving.pyfunc import log_price_model
    from pricer.tracking.registry import promote_if_better, register_candidate
    from pricer.tracking.runs import configure

    experiment_id = configure()
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"test-{name}"):
        info = log_price_model(model, example)
    version = register_candidate(info.model_uri, name, mae=mae, test_digest=test_digest)
    decision = promote_if_better(name, version.version)
    assert decision.is_champion, decision.reason
    return str(version.version)
