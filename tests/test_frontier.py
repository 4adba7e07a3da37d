"""Frontier models against a real HTTP server speaking the OpenAI wire format (tests/fake_openai.py).

Real parts throughout: the real ``openai`` SDK over real sockets, a real SQLite MLflow store,
real files for the cache, cost log and job state. Faults (429 with Retry-After, 500, slow
replies past the client's timeout, bodies that are not JSON) are injected by the server
with a seeded RNG.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fake_openai import FakeOpenAI, rule_answer
from pricer.core.config import validate
from pricer.core.errors import ConfigError
from pricer.core.parsing import find_price
from pricer.data.config import CurateConfig, DemoSourceConfig
from pricer.data.curate import curate
from pricer.frontier.client import FrontierClient
from pricer.frontier.config import FrontierAuthError, FrontierConfig, FrontierError, load_frontier_config
from pricer.frontier.finetune import (
    BudgetExceeded,
    JobFailed,
    check_budget,
    prepare_data,
    validate_chat_jsonl,
)
from pricer.frontier.jobs import JobState, job_key, submit_job
from pricer.frontier.messages import build_messages
from pricer.models.neighbours import NeighbourIndex
from pricer.serving.frontier import price_with_retrieval
from pricer.stages.frontier import run_frontier_eval
from pricer.stages.frontier_finetune import run_finetune

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "PRICER_TEST_FRONTIER_KEY"
SECRET = "sk-test-PLANTED-SECRET-123"


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("curated")
    curate(CurateConfig(source=DemoSourceConfig(n_items=2600)), root=root)
    return root / "data" / "curated"


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its schema migrated once (the migrations take seconds)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, migrated_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, real SQLite MLflow store for one test under tmp_path/mlruns (a copy of the migrated one)."""
    root = tmp_path / "mlruns"
    root.mkdir()
    shutil.copyfile(migrated_db, root / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return root


@pytest.fixture
def server():
    with FakeOpenAI(api_key=SECRET, seed=7) as fake:
        yield fake


def make_config(tmp_path: Path, server: FakeOpenAI, curated: Path, **overrides) -> FrontierConfig:
    data = {
        "name": "fake-4o",
        "model": "gpt-fake",
        "base_url": server.base_url,
        "api_key_env": KEY_ENV,
        "usd_per_1m_input": 0.15,
        "usd_per_1m_output": 0.60,
        "max_concurrency": 16,
        "timeout_s": 0.5,
        "max_retries": 10,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.2,
        "cache_dir": str(tmp_path / "cache"),
        "cost_log": str(tmp_path / "reports" / "cost_log.jsonl"),
        "evaluation": {"data_dir": str(curated), "reports_dir": str(tmp_path / "reports"), "limit": 200},
    }
    data.update(overrides)
    return validate(FrontierConfig, data, "test")


def expected_price(text: str, neighbours=(), model: str = "gpt-fake") -> float | None:
    """What the fake server's rules answer for an item, parsed: the ground truth of the plumbing."""
    return find_price(rule_answer(build_messages(text, neighbours), model))


def cost_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def scan_for(secret: str, root: Path) -> list[Path]:
    needle = secret.encode()
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


# --------------------------------------------------------------------------- units


def test_configs_load_and_a_key_in_place_of_its_name_is_refused():
    for path in sorted((REPO / "configs" / "frontier").glob("*.yaml")):
        config = load_frontier_config(path)
        assert config.api_key_env is None or config.api_key_env.isupper()
    with pytest.raises(ConfigError) as caught:
        validate(FrontierConfig, {"name": "x", "model": "m", "api_key_env": SECRET}, "bad.yaml")
    assert "api_key_env" in str(caught.value) and SECRET not in str(caught.value)


def test_bad_or_missing_key_stops_instead_of_scoring_nothing(tmp_path, server, curated, monkeypatch):
    config = make_config(tmp_path, server, curated, trace=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(FrontierError, match=KEY_ENV):
        FrontierClient(config)
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(FrontierAuthError, match="HTTP 401"):
        FrontierClient(config).price_texts(["a kettle", "a toaster"])
    assert cost_lines(Path(config.cost_log)) == []


def test_streaming_measures_time_to_first_token_and_rate_limit_spaces_requests(
    tmp_path, server, curated, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, SECRET)
    texts = [f"Steel kettle model {i}" for i in range(6)]
    streamed = FrontierClient(make_config(tmp_path, server, curated, stream=True, trace=False,
                                          cache_dir=None))
    assert streamed.price_texts(texts) == [expected_price(text) for text in texts]
    metrics = streamed.totals.metrics()
    assert metrics["frontier.billed_calls"] == 6 and metrics["frontier.ttft_mean_s"] > 0
    assert metrics["frontier.input_tokens"] > 0 and metrics["frontier.cost_usd"] > 0

    limited = FrontierClient(make_config(tmp_path, server, curated, requests_per_minute=600, trace=False,
                                         cache_dir=None, cost_log=None))
    limited.price_texts([f"Oak table {i}" for i in range(5)])
    assert limited.totals.wall_s >= 0.4  # five starts, 0.1 s apart


# --------------------------------------------------------------------------- zero-shot evaluation


def test_zero_shot_survives_faults_never_pays_twice_and_keeps_the_key_out(
    tmp_path, server, curated, store, monkeypatch, caplog, capfd
):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's debug logs included
    server.configure(failure_rate=0.3, slow_s=1.0,
                     fault_kinds={"429": 0.45, "500": 0.45, "malformed": 0.05, "slow": 0.05})
    config = make_config(tmp_path, server, curated)
    test = pd.read_parquet(curated / "test.parquet").head(200)

    first = run_frontier_eval(config)

    # Every item priced, or counted unparseable because the *answer* had no number: none lost to faults.
    assert sum(server.faults.values()) > 40 and server.faults["429"] and server.faults["500"]
    predictions = pd.read_csv(tmp_path / "reports" / "eval" / "frontier-fake-4o" / "predictions.csv")
    assert len(predictions) == 200
    wanted = [expected_price(text) for text in test["text"]]
    got = [None if math.isnan(value) else value for value in predictions["estimate"]]
    assert got == wanted
    assert first["metrics"]["unparseable"] == sum(price is None for price in wanted) > 0

    # No duplicate charges: one cost line per distinct request, matching what the server billed.
    lines = cost_lines(Path(config.cost_log))
    billed = server.stats()
    assert len(lines) == len({line["idempotency_key"] for line in lines}) == test["text"].nunique()
    assert billed["charged_calls"] == len(lines)
    assert sum(line["input_tokens"] for line in lines) == billed["charged_input_tokens"]
    assert sum(line["output_tokens"] for line in lines) == billed["charged_output_tokens"]

    # Usage and cost summed into the run's metrics; the calls traced under it.
    run = MlflowClient().get_run(first["run_id"])
    assert run.data.metrics["frontier.cost_usd"] == pytest.approx(sum(line["cost_usd"] for line in lines))
    assert run.data.metrics["frontier.retries"] > 0
    assert run.data.metrics["frontier.billed_calls"] == len(lines)
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces(run_id=first["run_id"], return_type="list",
                                  locations=[run.info.experiment_id])
    spans = [span for trace in traces for span in trace.data.spans if span.span_type == "CHAT_MODEL"]
    assert len(spans) == 200
    assert first["registered"]["decision"] == "promoted"

    # A second run is served entirely from the cache: not one request reaches the server.
    server.reset_counters()
    second = run_frontier_eval(config)
    assert server.total_requests == 0
    assert second["usage"]["frontier.cache_hits"] == 200 and second["usage"]["frontier.cost_usd"] == 0
    assert second["metrics"]["mae"] == first["metrics"]["mae"]
    assert len(cost_lines(Path(config.cost_log))) == len(lines)

    # The registered model reads the key from the environment when it predicts (cached: free).
    model = mlflow.pyfunc.load_model("models:/pricer-frontier@champion")
    estimates = model.predict(test[["text"]].head(5))
    assert [None if math.isnan(v) else v for v in estimates] == wanted[:5] and server.total_requests == 0
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(FrontierError, match=KEY_ENV):
        model.predict(test[["text"]].head(1))

    # The planted key is nowhere: not in the MLflow store (database bytes included), reports, cache, logs.
    assert scan_for(SECRET, tmp_path / "mlruns") == []
    assert scan_for(SECRET, tmp_path) == []
    captured = capfd.readouterr()
    assert SECRET not in caplog.text and SECRET not in captured.out and SECRET not in captured.err


# --------------------------------------------------------------------------- retrieval


class HashingEmbedder:
    """The embedding path's interface (``embed`` -> unit rows, float32) over hashed word counts."""

    def embed(self, texts):
        vectors = np.zeros((len(texts), 384), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in str(text).lower().split():
                vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 384] += 1.0
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def test_retrieval_puts_similar_priced_items_in_the_prompt(tmp_path, server, curated, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    embedder = HashingEmbedder()
    train = pd.read_parquet(curated / "train.parquet")
    index = NeighbourIndex.build(train, embedder)
    test = pd.read_parquet(curated / "test.parquet").head(20)
    neighbours = index.neighbours(test["text"].tolist(), 3, embedder)
    assert all(len(found) == 3 for found in neighbours)
    # The nearest item is the one the embedding path ranks first (cosine = dot product of unit rows).
    query = embedder.embed(test["text"].tolist()[:1])[0]
    assert neighbours[0][0][0] == train["text"].iloc[int(np.argmax(index.vectors @ query))]
    # An item in the index is never its own neighbour.
    own = train["text"].iloc[0]
    assert all(text != own for text, _ in index.neighbours([own], 3, embedder)[0])

    client = FrontierClient(make_config(tmp_path, server, curated, k_neighbours=3, trace=False,
                                        cost_log=None))
    prices = price_with_retrieval(client, test["text"].tolist(), index, embedder)
    # The fake answers the median of the example prices it is shown.
    assert prices == [float(f"{np.median([p for _, p in found]):.2f}") for found in neighbours]


# --------------------------------------------------------------------------- fine-tuning


def ft_config(tmp_path: Path, server: FakeOpenAI, curated: Path, **finetune) -> FrontierConfig:
    section = {
        "base_model": "gpt-fake-base", "n_train": 60, "n_val": 10, "n_epochs": 2, "budget_usd": 1.0,
        "out_dir": str(tmp_path / "ft"), "state_dir": str(tmp_path / "ft" / "jobs"),
        "poll_initial_s": 0.01, "poll_max_s": 0.02, **finetune,
    }
    evaluation = {"data_dir": str(curated), "reports_dir": str(tmp_path / "reports"), "limit": 40}
    return make_config(tmp_path, server, curated, finetune=section, evaluation=evaluation)


def test_finetune_job_runs_resumes_and_registers(tmp_path, server, curated, store, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, SECRET)
    monkeypatch.setenv("WANDB_SILENT", "true")
    server.configure(failure_rate=0.2, fault_kinds={"429": 1.0},
                     fault_paths=("/v1/files", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/{ftjob}"))
    config = ft_config(tmp_path, server, curated, wandb={"enabled": True, "project": "pricer-test", "mode": "offline",
                                                         "dir": str(tmp_path / "wandb")})

    prepared = prepare_data(config)
    lines = Path(prepared.train_path).read_text().splitlines()
    assert len(lines) == 60 and json.loads(lines[0])["messages"][-1]["content"].startswith("Price is $")
    estimate, _ = check_budget(config, prepared)
    assert "estimated training cost" in capsys.readouterr().out and estimate.usd > 0

    first = submit_job(config, prepared)
    assert first.job_id and not first.resumed and server.stats()["jobs"] == 1 and server.stats()["files"] == 2

    # A restarted flow finds the job it created: from the state file, or, that lost, by the job's metadata.
    again = submit_job(config, prepare_data(config))
    assert again.job_id == first.job_id and again.resumed
    JobState.path(config.finetune.state_dir, job_key(config, prepared)).unlink()
    found = submit_job(config, prepare_data(config))
    assert found.job_id == first.job_id and found.resumed
    assert server.stats()["jobs"] == 1 and server.stats()["files"] == 2

    summary = run_finetune(config, sleep=lambda seconds: None)
    assert summary["job_id"] == first.job_id and summary["resumed"] and summary["status"] == "succeeded"
    assert server.stats()["jobs"] == 1
    assert summary["fine_tuned_model"].startswith("ft:gpt-fake-base:")

    client = MlflowClient()
    losses = client.get_metric_history(summary["finetune_run_id"], "ft.train_loss")
    assert [m.step for m in losses] == [10, 20] and losses[0].value > losses[1].value
    run = client.get_run(summary["finetune_run_id"])
    assert run.data.tags["pricer.ft.status"] == "succeeded"
    assert run.data.tags["pricer.ft.model"] == summary["fine_tuned_model"]
    assert list((tmp_path / "wandb").rglob("*.wandb"))  # the offline W&B run

    evaluation = summary["evaluation"]
    assert evaluation["model"] == summary["fine_tuned_model"] and evaluation["metrics"]["unparseable"] == 0
    assert evaluation["registered"]["name"] == "pricer-frontier"
    assert scan_for(SECRET, tmp_path) == []


def test_budget_refusal_sends_nothing(tmp_path, server, curated, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, SECRET)
    config = ft_config(tmp_path, server, curated, budget_usd=0.0001)
    with pytest.raises(BudgetExceeded, match="over budget"):
        run_finetune(config)
    assert "estimated training cost" in capsys.readouterr().out
    assert server.total_requests == 0
    assert not list((tmp_path / "ft" / "jobs").glob("*.json"))


def test_invalid_training_examples_are_reported(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "How much?"},
                         {"role": "assistant", "content": "Price is $5.00"}]}
    path.write_text("\n".join([
        json.dumps(good),
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
        json.dumps({"messages": [{"role": "user", "content": "word " * 400},
                                 {"role": "assistant", "content": "Price is $1.00"}]}),
        "{not json",
    ]) + "\n")
    report = validate_chat_jsonl(path, max_example_len=200, min_examples=2)
    assert report.n_examples == 1
    text = "\n".join(report.errors)
    assert "role 'robot'" in text and "last message is not the assistant" in text
    assert "over the limit of 200" in text and "not JSON" in text and "at least 2 needed" in text


# --------------------------------------------------------------------------- the flow


def test_frontier_flow_runs_both_chains(
    tmp_path, server, curated, store, monkeypatch, prefect_server
):
    from flows.frontier import frontier_flow

    monkeypatch.setenv(KEY_ENV, SECRET)
    path = tmp_path / "frontier.yaml"
    path.write_text(yaml.safe_dump(ft_config(tmp_path, server, curated).safe_dict()))

    first = frontier_flow(config=str(path), finetune=True, limit=30)
    assert first["zero_shot"]["n"] == 30 and first["zero_shot"]["registered"]["decision"] == "promoted"
    assert first["finetune"]["status"] == "succeeded"
    assert first["fine_tuned"]["model"] == first["finetune"]["fine_tuned_model"]
    assert server.stats()["jobs"] == 1
    state = JobState.load(Path(tmp_path / "ft" / "jobs"), first["finetune"]["key"])
    assert state is not None and state.job_id == first["finetune"]["job_id"] and state.status == "succeeded"

    # The key is in no record the flow left: the MLflow store, the files, and the Prefect database
    # (flow and task parameters, results, logs) included.
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    APILogWorker.drain_all(timeout=30)
    prefect_db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    assert scan_for(str(path), prefect_db.parent)  # the right database: it holds the flow's parameters
    assert scan_for(SECRET, prefect_db.parent) == []
    assert scan_for(SECRET, tmp_path) == []


def test_retry_failed_starts_a_new_job_where_a_plain_rerun_reports_the_failed_one(
    tmp_path, server, curated, store, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.configure(job_outcome="failed")
    config = ft_config(tmp_path, server, curated)
    with pytest.raises(JobFailed, match="injected"):
        run_finetune(config, evaluate=False, sleep=lambda seconds: None)
    failed = JobState.load(config.finetune.state_dir, job_key(config, prepare_data(config)))
    assert failed.status == "failed" and server.stats()["jobs"] == 1

    # Without the flag a rerun reports the failure again; it does not quietly pay for a second job.
    with pytest.raises(JobFailed):
        run_finetune(config, evaluate=False, sleep=lambda seconds: None)
    assert server.stats()["jobs"] == 1

    server.configure(job_outcome="succeeded")
    summary = run_finetune(config, evaluate=False, retry_failed=True, sleep=lambda seconds: None)
    assert summary["status"] == "succeeded" and summary["job_id"] != failed.job_id
    assert server.stats()["jobs"] == 2

    # The state file lost: the provider's record of the dead job still makes the next one a new request.
    server.configure(job_outcome="failed")
    JobState.path(config.finetune.state_dir, failed.key).unlink()
    assert submit_job(config, prepare_data(config)).job_id == summary["job_id"]  # the live one, found
    assert server.stats()["jobs"] == 2


def test_a_retried_task_pays_nothing_for_calls_already_billed(tmp_path, server, curated, monkeypatch):
    """Calls the server billed but the client never saw (it timed out, or its process died) are not paid
    again by the next attempt, which is a new client: the idempotency key is the call's, not the session's."""
    from pricer.frontier.cache import CostLog, ResponseCache

    monkeypatch.setenv(KEY_ENV, SECRET)
    texts = pd.read_parquet(curated / "test.parquet")["text"].head(12).tolist()
    server.configure(failure_rate=1.0, fault_kinds={"slow": 1.0}, slow_s=1.0)
    doomed = make_config(tmp_path, server, curated, max_retries=0)
    first = FrontierClient(doomed, cost_log=CostLog(Path(doomed.cost_log)))
    assert first.price_texts(texts) == [None] * 12  # every answer lost in transit, every one billed
    assert server.stats()["charged_calls"] == 12 and cost_lines(Path(doomed.cost_log)) == []

    server.configure(failure_rate=0.0)
    config = make_config(tmp_path, server, curated)
    retried = FrontierClient(config, cache=ResponseCache(Path(config.cache_dir)),
                             cost_log=CostLog(Path(config.cost_log)))
    assert retried.price_texts(texts) == [expected_price(text) for text in texts]
    billed = server.stats()
    assert billed["charged_calls"] == 12 and billed["uncharged_replays"] == 12
    assert len(cost_lines(Path(config.cost_log))) == 12  # recorded once, by the attempt that saw them


def test_a_poller_killed_mid_poll_resumes_the_same_job_in_the_same_run(
    tmp_path, server, curated, store, monkeypatch
):
    import os
    import signal
    import subprocess
    import sys
    import time

    monkeypatch.setenv(KEY_ENV, SECRET)
    server.configure(job_running_polls=10_000)  # running until the test lets it end
    config = ft_config(tmp_path, server, curated)
    path = tmp_path / "frontier.yaml"
    path.write_text(yaml.safe_dump(config.safe_dict()))
    key = job_key(config, prepare_data(config))
    child = subprocess.Popen(
        [sys.executable, "-m", "pricer.apps.cli", "frontier-finetune", "--config", str(path), "--no-evaluate",
         "--params", str(REPO / "params.yaml")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = JobState.load(config.finetune.state_dir, key)
            if state is not None and state.status == "running" and len(state.seen_event_ids) >= 6:
                break
            assert child.poll() is None, "the poller ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the job never ran")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    killed = JobState.load(config.finetune.state_dir, key)
    tracking = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    assert killed.run_id and tracking.get_run(killed.run_id).info.status == "RUNNING"

    server.configure(job_running_polls=0)
    summary = run_finetune(config, evaluate=False, sleep=lambda seconds: None)
    assert summary["resumed"] and summary["job_id"] == killed.job_id and summary["status"] == "succeeded"
    assert server.stats()["jobs"] == 1 and server.stats()["files"] == 2
    assert summary["finetune_run_id"] == killed.run_id  # one run for one job, finished now
    run = tracking.get_run(killed.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["pricer.ft.status"] == "succeeded"
    steps = [metric.step for metric in tracking.get_metric_history(killed.run_id, "ft.train_loss")]
    emitted = [event for event in server.job_events[killed.job_id] if event["type"] == "metrics"]
    assert sorted(steps) == sorted(event["data"]["step"] for event in emitted)  # each once, across both
