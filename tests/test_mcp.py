"""The MCP server (``pricer mcp``) through fastmcp's own Client: in process, and over streamable HTTP and stdio
against real ``pricer mcp`` processes on 127.0.0.1. The champions are real models in a real SQLite MLflow
store, the neighbours come from a real Chroma store, the deals from a real memory file and feed server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest
import yaml
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from fastmcp.exceptions import ToolError

from deal_feeds import DealFeedServer, DealPage
from pricer.agents.config import AgentsConfig
from pricer.agents.deals import Deal, Opportunity
from pricer.agents.memory import Memory
from pricer.apps.mcp_server import build_server
from pricer.tracking.lineage import MODEL_TAG
from pricer.tracking.runs import configure
from serving import build_release, curated_demo, free_port

REPO = Path(__file__).resolve().parents[1]
PRICER = Path(sys.executable).with_name("pricer")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return curated_demo(tmp_path_factory.mktemp("demo"), n_items=400)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, demo) -> dict:
    built = build_release(tmp_path_factory.mktemp("release"), demo["train"], store_items=80)
    with pytest.MonkeyPatch.context() as patch:  # two evaluated models on the leaderboard
        patch.setenv("MLFLOW_TRACKING_URI", built["uri"])
        experiment = configure()
        for model, mae in (("boost", 35.0), ("tfidf_lr", 52.0)):
            with mlflow.start_run(experiment_id=experiment, run_name=model):
                mlflow.set_tag(MODEL_TAG, model)
                mlflow.log_metrics({"mae": mae, "rmsle": 0.5, "hit_rate": 0.6, "r2": 0.4, "n": 100})
    return built


def raw_config(tmp_path: Path, release: dict, **mcp) -> dict:
    return {
        "agents": {"frontier": None},
        "memory": {"path": str(tmp_path / "memory.sqlite")},
        "vectorstore": {"path": str(release["root"] / "vectorstore")},
        "messenger": {"kind": "log"},
        "tracking": {"experiment": "pricer-mcp-test", "trace": False},
        "service": {"reload_s": 0.5},
        "mcp": mcp,
    }


def remember_deals(path: Path, n: int) -> list[Deal]:
    memory = Memory(path)
    deals = [Deal(url=f"https://shop.test/{i}", title=f"Blender {i}", price=20.0 + i, feed="home") for i in range(n)]
    memory.record_cycle("c1", [], [Opportunity(deal=d, estimate=60.0, estimates={"regressor": 60.0}) for d in deals])
    memory.close()
    return deals


def test_tools_and_resources_in_process(tmp_path: Path, demo, release, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", release["uri"])
    config = AgentsConfig.model_validate(raw_config(tmp_path, release))
    deals = remember_deals(config.memory.path, 3)
    server = build_server(config, store=release["store"])
    title, _, description = demo["test"].iloc[0]["text"].partition("\n")

    async def session() -> dict:
        async with Client(server) as client:
            tools = {tool.name for tool in await client.list_tools()}
            priced = await client.call_tool("price_product", {"title": title, "description": description,
                                                              "details": {"Brand": "Acme"}, "neighbours": 2})
            similar = await client.call_tool("similar_products", {"text": f"{title}\n{description}", "k": 3})
            latest = await client.call_tool("latest_deals", {"limit": 2})
            board = await client.call_tool("leaderboard", {})
            champions = json.loads((await client.read_resource("pricer://champions"))[0].text)
            one = json.loads((await client.read_resource("pricer://champions/pricer-ensemble"))[0].text)
            loaded = json.loads((await client.read_resource("pricer://loaded"))[0].text)
            with pytest.raises(ToolError, match="title"):
                await client.call_tool("price_product", {"title": ""})
            with pytest.raises(ToolError, match="k must be 1 to 50"):
                await client.call_tool("similar_products", {"text": "kettle", "k": 0})
            return {"tools": tools, "priced": priced.structured_content, "similar": similar.structured_content,
                    "latest": latest.structured_content, "board": board.structured_content, "champions": champions,
                    "one": one, "loaded": loaded}

    got = asyncio.run(session())
    assert got["tools"] == {"price_product", "similar_products", "latest_deals", "leaderboard"}  # no deal cycle
    quote = got["priced"]
    assert quote["estimate"] > 0 and set(quote["agents"]) == {"regressor", "specialist"}
    assert quote["models"] == release["members"] and quote["ensemble"] == "models:/pricer-ensemble/1"
    assert len(quote["neighbours"]) == 2 and quote["text"].startswith(f"{title}\nBrand: Acme")
    similar = got["similar"]["result"]
    assert len(similar) == 3 and all(item["price"] > 0 for item in similar)
    assert [row["url"] for row in got["latest"]["result"]] and len(got["latest"]["result"]) == 2
    assert {row["url"] for row in got["latest"]["result"]} <= {d.url for d in deals}
    assert [row["model"] for row in got["board"]["result"]] == ["boost", "tfidf_lr"]
    assert got["board"]["result"][0]["mae"] == 35.0
    assert got["champions"]["pricer-frontier"] is None
    assert got["champions"]["pricer-regressor"]["metrics"]["mae"] == 40.0
    assert got["one"]["uri"] == "models:/pricer-ensemble/1" and got["one"]["metrics"]["mae"] == 38.0
    assert got["loaded"]["loaded"]["models"] == release["members"]


def test_the_deal_cycle_tool_exists_only_when_enabled(tmp_path: Path, demo, release, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", release["uri"])
    pages = [DealPage(f"p{i}", f"Stand mixer {i}", "Five speeds, steel bowl", 30.0 + i) for i in range(3)]
    with DealFeedServer(pages) as feeds:
        raw = raw_config(tmp_path, release, allow_deal_cycle=True)
        raw["feeds"] = feeds.feeds_config(broken=False, missing=False)
        server = build_server(AgentsConfig.model_validate(raw), store=False)

        async def session() -> tuple[set[str], dict]:
            async with Client(server) as client:
                tools = {tool.name for tool in await client.list_tools()}
                report = await client.call_tool("run_deal_cycle", {})
                return tools, report.structured_content

        tools, report = asyncio.run(session())
    assert "run_deal_cycle" in tools
    assert report["deals"] == 3 and report["priced"] == 3 and set(report["agents"]) == {"regressor", "specialist"}


def test_over_streamable_http_with_a_token(tmp_path: Path, demo, release) -> None:
    port = free_port()
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path, release, token_env="PRICER_TEST_MCP_TOKEN")))
    remember_deals(tmp_path / "memory.sqlite", 2)
    env = {**os.environ, "MLFLOW_TRACKING_URI": release["uri"], "PRICER_TEST_MCP_TOKEN": "mcp-secret",
           "HF_HUB_OFFLINE": "1", "FASTMCP_SHOW_SERVER_BANNER": "false"}
    process = subprocess.Popen([str(PRICER), "mcp", "--config", str(path), "--transport", "http", "--port", str(port)],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/mcp"

    async def over_http() -> tuple[dict, str]:
        deadline = time.monotonic() + 60
        while True:
            try:
                async with Client(url, auth="mcp-secret") as client:
                    quote = await client.call_tool("price_product", {"title": "Stand mixer", "description": "5 speeds"})
                    deals = await client.call_tool("latest_deals", {})
                break
            except Exception:  # noqa: BLE001 - not listening yet
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "pricer mcp did not start"
                await asyncio.sleep(0.3)
        with pytest.raises(Exception):  # noqa: B017 - fastmcp's client wraps the 401 its own way
            async with Client(url, auth="wrong") as client:
                await client.list_tools()
        hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        headers = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient() as raw:
            refused = [(await raw.post(url, json=hello, headers={**headers, **extra})).status_code
                       for extra in ({}, {"Authorization": "Bearer wrong"})]
        return {"quote": quote.structured_content, "deals": deals.structured_content}, refused

    try:
        got, refused = asyncio.run(over_http())
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert got["quote"]["models"] == release["members"] and got["quote"]["estimate"] > 0
    assert len(got["deals"]["result"]) == 2
    assert refused == [401, 401]


def test_over_stdio(tmp_path: Path, release) -> None:
    """The client starts ``pricer mcp``; the protocol owns stdout, so nothing else may be printed there."""
    config = tmp_path / "agents.yaml"
    config.write_text(yaml.safe_dump(raw_config(tmp_path, release)))
    env = {**os.environ, "MLFLOW_TRACKING_URI": release["uri"], "HF_HUB_OFFLINE": "1"}
    transport = StdioTransport(str(PRICER), ["mcp", "--config", str(config)], env=env, cwd=str(tmp_path))

    async def over_stdio() -> dict:
        async with Client(transport, timeout=90) as client:
            return (await client.call_tool("price_product", {"title": "Stand mixer"})).structured_content

    assert asyncio.run(over_stdio())["models"] == release["members"]
