"""Real HTTP servers on 127.0.0.1 for the deal agents' tests and benchmark (stdlib only).

The deal feeds and pages are ``pricer.agents.local_feed.DealFeedServer`` (the main job serves its
demo deals with it too). ``WebhookReceiver`` records every POST (path, headers, JSON or form body)
and can refuse the next N with a status (``fail_next``), refuse all (``fail_status``), hang
(``delay_s``), answer each request as a chaos plan decides (``decide``), and call back after a
2xx is on the wire but before the connection closes (``after_answer``: the sender has its
status, not yet the end of the answer, so a test can kill it there). ``FaultyFeedServer`` is the
deal feed server with faults: 500s, hangs, truncated and garbage bodies.

For runs in child processes: ``ListPriceAgent`` (a registry-free price agent that knows each
item's list price), ``cycle_main`` (one planner cycle from a config file, as a process) and
``deliver_in_child`` (one messenger delivery, optionally started on a barrier).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pricer.agents.local_feed import BROKEN_FEED, MISSING_FEED, DealFeedServer, DealPage, LocalServer

__all__ = [
    "BROKEN_FEED",
    "MISSING_FEED",
    "DealFeedServer",
    "DealPage",
    "FaultyFeedServer",
    "ListPriceAgent",
    "WebhookReceiver",
    "curated_demo",
    "cycle_main",
    "deliver_in_child",
    "estimate_of",
    "fit_text_regressor",
    "register_champion",
    "regressor_registry",
    "sku_tag",
]


class WebhookReceiver(LocalServer):
    """Records POSTs; ``delivered`` are those it acknowledged with 2xx."""

    def __init__(self, *, fail_status: int | None = None, fail_next: int = 0, delay_s: float = 0.0) -> None:
        super().__init__()
        self.fail_status = fail_status
        self.fail_next = fail_next
        self.fail_next_status = 503
        self.fail_headers: dict[str, str] = {}  # sent with each failed answer (e.g. a Retry-After)
        self.delay_s = delay_s
        # (record) -> (status, seconds to wait before answering): overrides the settings above.
        self.decide: Callable[[dict[str, Any]], tuple[int, float]] | None = None
        self.after_answer: Callable[[dict[str, Any]], None] | None = None
        self.received: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    def delivered_keys(self) -> list[str]:
        with self.lock:
            return [item["headers"].get("idempotency-key", "") for item in self.delivered]

    def unique_keys(self) -> set[str]:
        """What a receiver that honours ``Idempotency-Key`` acts on: each key once."""
        return set(self.delivered_keys())

    def duplicates(self) -> Counter[str]:
        """Keys acknowledged (2xx) more than once, with how many times."""
        return Counter({key: n for key, n in Counter(self.delivered_keys()).items() if n > 1})

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
                    status, delay_s = 200, server.delay_s
                    if server.decide is not None:
                        status, delay_s = server.decide(record)
                    elif server.fail_status is not None:
                        status = server.fail_status
                    elif server.fail_next > 0:
                        server.fail_next -= 1
                        status = server.fail_next_status
                if delay_s:
                    server.wait(delay_s)
                    if server.stopping.is_set():
                        return
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    for name, value in (server.fail_headers if status >= 300 else {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(b'{"ok": true}' if status < 300 else b'{"ok": false}')
                except (BrokenPipeError, ConnectionResetError):
                    return
                if status < 300:
                    with server.lock:
                        server.delivered.append(record)
                    if server.after_answer is not None:
                        server.after_answer(record)  # the connection stays open until this returns

        return Handler


class FaultyFeedServer(DealFeedServer):
    """``DealFeedServer`` whose ``fault(path)`` may answer a request with ``"500"``, ``"hang"`` (no answer
    for ``hang_s``), ``"truncated"`` (half the declared body, then a close) or ``"garbage"`` (200 and
    random bytes); None serves it as usual."""

    def __init__(self, pages: list[DealPage] | None = None, *, hang_s: float = 3.0) -> None:
        super().__init__(pages)
        self.fault: Callable[[str], str | None] | None = None
        self.hang_s = hang_s
        self.faults: Counter[str] = Counter()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        base = super()._handler()

        class Handler(base):  # type: ignore[valid-type, misc]
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                kind = server.fault(path) if server.fault is not None else None
                if kind is None:
                    return super().do_GET()
                with server.lock:
                    server.faults[kind] += 1
                try:
                    if kind == "500":
                        return self._send(500, "internal error", "text/plain")
                    if kind == "hang":
                        server.wait(server.hang_s)
                        return None
                    body = os.urandom(512) if kind == "garbage" else b"<?xml version='1.0'?><rss><channel>"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/rss+xml" if "feeds" in path else "text/html")
                    self.send_header("Content-Length", str(len(body) * (2 if kind == "truncated" else 1)))
                    self.end_headers()
                    self.wfile.write(body)
                    if kind == "truncated":
                        self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return None

        return Handler


# --------------------------------------------------------------------------- cycles in child processes

_SKU = re.compile(r"\[sku ([a-j]+)\]")


def sku_tag(n: int) -> str:
    """``[sku bac]`` for item 102: in letters, because the price models' text cleaning drops codes
    with digits (``sku-102``) from the text an agent reads."""
    return "[sku " + "".join(chr(ord("a") + int(digit)) for digit in str(n)) + "]"


class ListPriceAgent:
    """A price agent without a registry: it knows each item's list price, by the ``sku_tag(N)`` in its
    title (prices[str(N)]). What the outbox tests and the chaos bench measure is delivery, not pricing."""

    name = "list-price"

    def __init__(self, prices: dict[str, float]) -> None:
        self.prices = prices

    def ready(self) -> bool:
        return True

    def estimate(self, texts: Sequence[str]) -> Any:
        from pricer.agents.estimators import AgentResult

        started = time.perf_counter()
        values = []
        for text in texts:
            match = _SKU.search(text)
            sku = "".join(str(ord(letter) - ord("a")) for letter in match.group(1)) if match else ""
            values.append(float(self.prices.get(sku, math.nan)))
        return AgentResult(self.name, values, time.perf_counter() - started, model="list-price")


def cycle_main(argv: Sequence[str] | None = None) -> None:
    """``python -c "import deal_feeds; deal_feeds.cycle_main()" CONFIG [PRICES.json]``: one planner cycle.

    With a prices file the cycle prices with ``ListPriceAgent``, else with the registered models, as
    ``pricer.agents.planner.run_cycle`` does. Prints ``ready`` when the planner is built and the cycle
    starts (so a parent can time a kill from there), then the cycle's report as one JSON line.
    """
    import logging

    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("PRICER_TEST_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pricer.agents.config import load_agents_config
    from pricer.agents.planner import Planner

    config = load_agents_config(args[0])
    agents = [ListPriceAgent(json.loads(Path(args[1]).read_text()))] if len(args) > 1 else None
    planner = Planner(config, agents=agents)
    print("ready", flush=True)
    try:
        report = planner.run_cycle()
    finally:
        planner.close()
    print(json.dumps(report.as_dict(), default=str), flush=True)


def deliver_in_child(memory_path: str, messenger: dict[str, Any], barrier: Any = None, results: Any = None) -> None:
    """One ``Messenger.deliver`` in this process (a multiprocessing target): after ``barrier``, when given,
    so that two processes open the memory and deliver at the same moment; the report goes to ``results``."""
    from pydantic import TypeAdapter

    from pricer.agents.config import NotifierConfig
    from pricer.agents.memory import Memory
    from pricer.agents.messenger import Messenger

    config = TypeAdapter(NotifierConfig).validate_python(messenger)
    if barrier is not None:
        barrier.wait(timeout=120)
    memory = Memory(memory_path)
    sender = Messenger(config)
    try:
        report = sender.deliver(memory)
    finally:
        sender.close()
        memory.close()
    if results is not None:
        results.put({"pid": os.getpid(), **report.as_dict()})


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


def make_champion(model_uri: str, run_id: str, name: str, mae: float, test_digest: str = "x") -> str:
    """Register a logged model as ``name``'s champion, with stand-in scores (one item, ``mae`` off) stored on
    ``run_id``: for tests of what consumes champions, not of the gate."""
    from pricer.tracking.gate import promote_if_better
    from pricer.tracking.registry import register_candidate
    from pricer.tracking.scores import ItemScores

    ItemScores.of(test_digest, ["stand-in"], [100.0], [100.0 + mae]).log(run_id)
    version = register_candidate(model_uri, name, mae=mae, test_digest=test_digest, scores_run_id=run_id)
    decision = promote_if_better(name, version.version)
    assert decision.is_champion, decision.reason
    return str(version.version)


def register_champion(model: Any, name: str, mae: float, test_digest: str = "x") -> str:
    """Log ``model`` as a price pyfunc in a run of the configured store, register it and promote it."""
    import mlflow

    from pricer.serving.price_model import log_price_model
    from pricer.tracking.runs import configure

    with mlflow.start_run(experiment_id=configure(), run_name=f"test-{name}") as run:
        info = log_price_model(model)
    return make_champion(info.model_uri, run.info.run_id, name, mae, test_digest)


def curated_demo(root: Path, n_items: int = 600) -> Path:
    """Curate ``n_items`` demo products under ``root``; returns the folder of the split parquet files."""
    from pricer.data.config import CurateConfig, DemoSourceConfig
    from pricer.data.curate import curate

    curate(CurateConfig(source=DemoSourceConfig(n_items=n_items)), root=root)
    return root / "data" / "curated"


@contextmanager
def regressor_registry(root: Path, train: Any) -> Iterator[dict[str, Any]]:
    """A SQLite MLflow store under ``root`` with a real text regressor fitted on ``train`` as the
    pricer-regressor champion; yields its tracking ``uri`` and the ``model``, with
    ``MLFLOW_TRACKING_URI`` pointing at it until the context closes."""
    import pytest

    (root / "mlruns").mkdir()
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        model = fit_text_regressor(train)
        register_champion(model, "pricer-regressor", mae=50.0)
        yield {"uri": uri, "model": model}


def estimate_of(model: Any, title: str, description: str) -> float:
    """What ``model`` says a deal with this title and description is worth, read as the agents read a deal."""
    import pandas as pd

    from pricer.agents.deals import Deal, deal_text

    text = deal_text(Deal(url="http://shop.test/x", title=title, description=description, price=1, feed="f"))
    return float(model.predict(pd.DataFrame({"text": [text]}))[0])


# --------------------------------------------------------------------------- hostile inputs (tests/test_hostile.py)


class StaticSite(LocalServer):
    """Serves fixed bodies by path. In a body, ``@BASE@`` becomes this server's base URL (a committed feed
    links to the pages served beside it) and ``@OTHER@`` the same server named ``localhost``: to the
    scanner, another site than the feed's."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__()
        self.files = dict(files)

    @classmethod
    def from_directory(cls, root: Path) -> StaticSite:
        return cls({"/" + path.relative_to(root).as_posix(): path.read_bytes()
                    for path in sorted(root.rglob("*")) if path.is_file()})

    @property
    def other_url(self) -> str:
        return self.base_url.replace("127.0.0.1", "localhost")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        types = {".xml": "application/rss+xml", ".html": "text/html; charset=utf-8", ".json": "application/json"}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                with server.lock:
                    server.requests[path] += 1
                    body = server.files.get(path)
                status = 200 if body is not None else 404
                body = (body or b"not found").replace(b"@BASE@", server.base_url.encode()).replace(
                    b"@OTHER@", server.other_url.encode())
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", types.get(Path(path).suffix, "text/plain"))
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the scanner stops reading a body at its byte limit

        return Handler


def large_feed(size_bytes: int, *, item_bytes: int = 20_000, atom: bool = False) -> dict[str, bytes]:
    """A feed of about ``size_bytes`` at ``/feeds/big.xml`` (entries ``big-0``, ``big-1``, ... padded to about
    ``item_bytes`` each, multi-byte characters included) and each entry's page, priced in JSON-LD."""
    pad = ("Ünïcödé padding, € and 💡 so a cut can fall inside a character. " * (item_bytes // 60 + 1))[:item_bytes]
    n = max(1, size_bytes // item_bytes)
    files: dict[str, bytes] = {}
    entries = []
    for i in range(n):
        link = f"@BASE@/pages/big-{i}.html"
        if atom:
            entries.append(f"<entry><title>Big deal {i}</title><link href='{link}'/><summary>{pad}</summary></entry>")
        else:
            entries.append(f"<item><title>Big deal {i}</title><link>{link}</link><description>{pad}</description></item>")
        offer = json.dumps({"@type": "Offer", "price": f"{50 + i % 50}.00", "priceCurrency": "USD"})
        files[f"/pages/big-{i}.html"] = (f"<html><head><title>Big deal {i}</title><script type='application/ld+json'>"
                                         f"{offer}</script></head><body><p>Deal {i}</p></body></html>").encode()
    if atom:
        feed = f"<feed xmlns='http://www.w3.org/2005/Atom'><title>big</title>{''.join(entries)}</feed>"
    else:
        feed = (f"<?xml version='1.0' encoding='UTF-8'?><rss version='2.0'><channel><title>big</title>"
                f"<link>@BASE@/</link><description>big</description>{''.join(entries)}</channel></rss>")
    files["/feeds/big.xml"] = feed.encode("utf-8")
    return files


def open_memory_in_child(memory_path: str, barrier: Any, rounds: int, results: Any) -> None:
    """Open (and so create or migrate) the memory file at ``memory_path`` once per round, each round after
    ``barrier`` so that every process opens it at the same moment; puts the number of failures on ``results``."""
    from pricer.agents.memory import Memory

    failures = 0
    for round_number in range(rounds):
        barrier.wait(timeout=120)
        try:
            Memory(f"{memory_path}.{round_number}").close()
        except Exception:  # noqa: BLE001 - counted: the test says how many opens failed
            failures += 1
    results.put(failures)
