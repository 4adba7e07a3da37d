"""Real HTTP servers on 127.0.0.1 for the deal agents' tests and benchmark (stdlib only).

The deal feeds and pages are ``pricer.agents.local_feed.DealFeedServer`` (the main job serves its
demo deals with it too). ``WebhookReceiver`` records every POST (path, headers, JSON or form body)
and can refuse the next N with a status (``fail_next``), refuse all (``fail_status``), or hang
(``delay_s``).
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pricer.agents.local_feed import BROKEN_FEED, MISSING_FEED, DealFeedServer, DealPage, LocalServer

__all__ = ["BROKEN_FEED", "MISSING_FEED", "DealFeedServer", "DealPage", "WebhookReceiver", "fit_text_regressor",
           "register_champion"]


class WebhookReceiver(LocalServer):
    """Records POSTs; ``delivered`` are those it acknowledged with 2xx."""

    def __init__(self, *, fail_status: int | None = None, fail_next: int = 0, delay_s: float = 0.0) -> None:
        super().__init__()
        self.fail_status = fail_status
        self.fail_next = fail_next
        self.fail_next_status = 503
        self.fail_headers: dict[str, str] = {}  # sent with each failed answer (e.g. a Retry-After)
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
                    for name, value in (server.fail_headers if status >= 300 else {}).items():
                        self.send_header(name, value)
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


def register_champion(model: Any, name: str, mae: float, test_digest: str = "x") -> str:
    """Log ``model`` as a price pyfunc in a run of the configured store, register it and promote it."""
    import mlflow

    from pricer.serving.price_model import log_price_model
    from pricer.tracking.gate import promote_if_better
    from pricer.tracking.registry import register_candidate
    from pricer.tracking.runs import configure

    experiment_id = configure()
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"test-{name}"):
        info = log_price_model(model)
    version = register_candidate(info.model_uri, name, mae=mae, test_digest=test_digest)
    decision = promote_if_better(name, version.version)
    assert decision.is_champion, decision.reason
    return str(version.version)
