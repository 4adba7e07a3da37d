"""The REST service (``pricer serve``) against a real uvicorn on 127.0.0.1, a real SQLite MLflow store with
registered champions, a real Chroma vector store and a real memory file; and ``mlflow models serve`` of the
ensemble champion as a real process. Nothing of ours is mocked.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest

from deal_feeds import fit_text_regressor, register_champion
from pricer.agents.config import AgentsConfig
from pricer.agents.deals import Deal, Opportunity
from pricer.agents.memory import Memory
from pricer.agents.quote import Product, product_text
from pricer.apps.service import create_app
from pricer.core.errors import ConfigError
from serving import Uvicorn, build_release, curated_demo, free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return curated_demo(tmp_path_factory.mktemp("demo"), n_items=600)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, demo) -> dict:
    """A store whose pricer-ensemble champion pins a regressor and a specialist, and a vector store."""
    return build_release(tmp_path_factory.mktemp("release"), demo["train"])


def service_config(tmp_path: Path, **service) -> AgentsConfig:
    return AgentsConfig.model_validate({
        "agents": {"frontier": None},
        "memory": {"path": str(tmp_path / "memory.sqlite")},
        "vectorstore": {"path": str(tmp_path / "no-store")},
        "messenger": {"kind": "log"},
        "tracking": {"experiment": "pricer-serve-test", "trace": False},
        "service": {"reload_s": 0.3, **service},
    })


def product_of(row: pd.Series) -> dict:
    title, _, description = str(row["text"]).partition("\n")
    return {"title": title, "description": description, "category": row["category"]}


def test_prices_one_product_and_a_batch_with_versions_and_citations(
    tmp_path: Path, demo, release, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", release["uri"])
    app = create_app(service_config(tmp_path, neighbours=3), store=release["store"])
    ensemble = mlflow.pyfunc.load_model("models:/pricer-ensemble@champion")
    rows = [demo["test"].iloc[i] for i in range(4)]
    with Uvicorn(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/healthz").json() == {"ok": True}
        ready = wait_ready(client)
        assert ready["models"] == release["members"] and ready["ensemble"] == "models:/pricer-ensemble/1"

        one = client.post("/v1/price", json={"product": product_of(rows[0])})
        assert one.status_code == 200, one.text
        [quote] = one.json()["quotes"]
        # The same text and the same pinned members as the ensemble champion itself: the same price.
        text = product_text(Product(**product_of(rows[0])), 2000)
        expected = float(ensemble.predict(pd.DataFrame({"text": [text]}))[0])
        assert quote["estimate"] == pytest.approx(expected, abs=0.006)
        assert set(quote["agents"]) == {"regressor", "specialist"} and all(v > 0 for v in quote["agents"].values())
        assert quote["models"] == release["members"] and quote["ensemble"] == "models:/pricer-ensemble/1"
        assert quote["weights"] == pytest.approx({"regressor": 0.7, "specialist": 0.3})
        assert len(quote["neighbours"]) == 3 and quote["category"] == rows[0]["category"]
        stored = dict(zip(demo["train"]["text"], demo["train"]["price"], strict=True))
        assert all(stored[n["text"]] == n["price"] for n in quote["neighbours"] if n["text"] in stored)

        batch = client.post("/v1/price", json={"products": [product_of(r) for r in rows], "neighbours": 0})
        assert batch.status_code == 200, batch.text
        quotes = batch.json()["quotes"]
        assert [q["category"] for q in quotes] == [r["category"] for r in rows]
        assert quotes[0]["estimate"] == quote["estimate"] and all(q["neighbours"] == [] for q in quotes)

        metrics = client.get("/metrics").text
        assert 'pricer_http_requests_total{method="POST",route="/v1/price",status="200"} 2.0' in metrics
        assert 'pricer_agent_estimates_total{agent="regressor",outcome="answered"} 5.0' in metrics
        assert "pricer_products_priced_total 5.0" in metrics
        assert 'pricer_http_request_seconds_bucket{le="+Inf",method="POST",route="/v1/price"} 2.0' in metrics
        assert 'pricer_champion_loaded{agent="regressor",model="models:/pricer-regressor/1"} 1.0' in metrics
        docs = client.get("/openapi.json").json()
        assert {"/v1/price", "/v1/deals", "/readyz", "/metrics"} <= set(docs["paths"])


def test_bad_requests_get_clear_errors_and_the_token_is_required(
    tmp_path: Path, release, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", release["uri"])
    with pytest.raises(ConfigError, match="PRICER_TEST_API_TOKEN, which is not set"):
        create_app(service_config(tmp_path, token_env="PRICER_TEST_API_TOKEN"))
    secret = "s3cret-token-value"
    monkeypatch.setenv("PRICER_TEST_API_TOKEN", secret)
    app = create_app(service_config(tmp_path, token_env="PRICER_TEST_API_TOKEN", max_batch=3,
                                    max_body_bytes=4096), store=False)
    auth = {"Authorization": f"Bearer {secret}"}
    good = {"title": "Cordless drill 20V", "description": "Two batteries"}
    with caplog.at_level("DEBUG"), Uvicorn(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        wait_ready(client)  # the probes need no token
        assert client.post("/v1/price", json={"product": good}).status_code == 401
        wrong = client.post("/v1/price", json={"product": good}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert client.get("/metrics").status_code == 401
        assert client.post("/v1/price", json={"product": good}, headers=auth).status_code == 200

        def error(body: object) -> tuple[int, list]:
            answer = client.post("/v1/price", headers=auth, json=body)
            return answer.status_code, answer.json()["detail"]

        status, detail = error({"product": {"description": "no title"}})
        assert status == 422 and detail[0]["loc"] == ["body", "product", "title"] and "input" not in detail[0]
        status, detail = error({"product": {"title": "\x00\x01 "}})  # nothing left once cleaned
        assert status == 422 and detail[0]["loc"] == ["body", "product", "title"]
        status, detail = error({"product": good, "products": [good]})
        assert status == 422 and "either product" in detail[0]["msg"]
        assert error({"product": {**good, "price": 3}})[1][0]["loc"] == ["body", "product", "price"]
        assert error({"products": [good] * 4})[1][0]["msg"] == "at most 3 products per request, got 4"
        assert error({"product": good, "neighbours": 21})[1][0]["loc"] == ["body", "neighbours"]
        broken = client.post("/v1/price", content=b"{not json", headers={**auth, "Content-Type": "application/json"})
        assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
        big = client.post("/v1/price", headers=auth, json={"product": {**good, "description": "x" * 5000}})
        assert big.status_code == 413 and "4,096 bytes" in big.json()["detail"]

        def chunks():
            for _ in range(10):
                yield b" " * 1000

        streamed = client.post("/v1/price", headers={**auth, "Content-Type": "application/json"}, content=chunks())
        assert streamed.status_code == 413
        metrics = client.get("/metrics", headers=auth).text
        assert 'route="/v1/price",status="413"} 2.0' in metrics and 'status="422"' in metrics
    assert secret not in caplog.text


def test_ready_only_once_loaded_and_a_promoted_champion_is_served_without_a_restart(
    tmp_path: Path, demo, mlflow_uri: str
) -> None:
    app = create_app(service_config(tmp_path, reload_s=0.2), store=False)
    product = product_of(demo["test"].iloc[0])
    with Uvicorn(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        time.sleep(0.5)
        not_yet = client.get("/readyz")
        assert not_yet.status_code == 503 and "pricer-regressor" in not_yet.json()["reason"]
        assert client.post("/v1/price", json={"product": product}).status_code == 503

        # No ensemble yet: each member's champion, with equal weights.
        register_champion(fit_text_regressor(demo["train"]), "pricer-regressor", mae=50.0)
        assert wait_ready(client)["models"] == {"regressor": "models:/pricer-regressor/1"}
        first = client.post("/v1/price", json={"product": product}).json()["quotes"][0]
        assert first["models"] == {"regressor": "models:/pricer-regressor/1"} and first["ensemble"] is None

        register_champion(fit_text_regressor(demo["train"].head(100)), "pricer-regressor", mae=10.0)
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["models"] != {"regressor": "models:/pricer-regressor/2"}:
            assert time.monotonic() < deadline, "the new champion was not loaded"
            time.sleep(0.1)
        second = client.post("/v1/price", json={"product": product}).json()["quotes"][0]
        assert second["models"] == {"regressor": "models:/pricer-regressor/2"}
        assert second["estimate"] != first["estimate"]
        assert "pricer_champion_loads 2.0" in client.get("/metrics").text


def test_deals_lists_the_opportunities_in_memory(tmp_path: Path, release, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", release["uri"])
    config = service_config(tmp_path)
    memory = Memory(config.memory.path)
    deals = [Deal(url=f"https://shop.test/{n}", title=f"Kettle {n}", price=10.0 + n, feed="home") for n in range(3)]
    memory.record_cycle("c1", [], [Opportunity(deal=d, estimate=40.0, estimates={"regressor": 40.0, "specialist": None})
                                   for d in deals], notifier="log")
    memory.close()
    with Uvicorn(create_app(config, store=False)) as server, httpx.Client(base_url=server.url) as client:
        rows = client.get("/v1/deals", params={"limit": 2}).json()["deals"]
        assert len(rows) == 2 and {r["url"] for r in rows} <= {d.url for d in deals}
        assert rows[0]["estimates"] == {"regressor": 40.0, "specialist": None} and rows[0]["notification"] == "pending"
        assert client.get("/v1/deals", params={"limit": 0}).status_code == 422
        models = client.get("/v1/models").json()["registered"]
        assert models["pricer-ensemble"]["metrics"]["mae"] == 38.0 and models["pricer-frontier"] is None


def test_mlflow_models_serve_prices_like_the_service(tmp_path: Path, demo, release) -> None:
    """The other way to serve: MLflow's own scoring server for the ensemble champion, a real process."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": release["uri"], "PYTHONPATH": str(REPO / "src")}
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    process = subprocess.Popen(
        [str(mlflow_cli), "models", "serve", "-m", "models:/pricer-ensemble@champion", "-h", "127.0.0.1",
         "-p", str(port), "--env-manager", "local", "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if client.get("/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "mlflow models serve did not start"
                time.sleep(0.3)
            rows = [demo["test"].iloc[i] for i in range(3)]
            texts = [product_text(Product(**product_of(row)), 2000) for row in rows]
            answer = client.post("/invocations", json={"dataframe_records": [{"text": t} for t in texts]})
            assert answer.status_code == 200, answer.text
            predictions = answer.json()["predictions"]
            bad = client.post("/invocations", content=b'{"nope": 1}', headers={"Content-Type": "application/json"})
            assert bad.status_code == 400
    finally:
        process.terminate()
        process.wait(timeout=30)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", release["uri"])
        app = create_app(service_config(tmp_path), store=False)
        with Uvicorn(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
            wait_ready(client)
            quotes = client.post("/v1/price", json={"products": [product_of(r) for r in rows]}).json()["quotes"]
    assert all(math.isfinite(p) for p in predictions)
    assert [q["estimate"] for q in quotes] == pytest.approx(predictions, abs=0.006)
