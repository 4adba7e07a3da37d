"""The evaluation harness: metric values by hand, colour bands at their edges, evaluate_model end
to end against a real SQLite MLflow store, the leaderboard, and the Prefect artifact (slow)."""

import os

# evaluate reads these when it is first imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"

import json
import logging
import math
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pricer.core.metrics import METRIC_PATH, colour_band, compute_metrics
from pricer.stages.harness import PRICE_BAND_LABELS, evaluate_model, prefect_artifact_key
from pricer.tracking.leaderboard import COLUMNS, leaderboard, to_markdown
from pricer.tracking.lineage import MODEL_TAG, TEST_DIGEST_TAG
from pricer.tracking.runs import configure, stage_run

N_ITEMS = 30
CATEGORIES = ("Appliances", "Electronics", "Toys_and_Games")
EVAL_FILES = {"predictions.csv", "per_band.csv", "per_category.csv", "scatter.png", "error_hist.png"}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # One store for the module: creating an MLflow database costs seconds.
    uri = "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        configure(tracking_uri=uri)
        yield uri


def _test_split() -> pd.DataFrame:
    prices = np.geomspace(2.0, 900.0, N_ITEMS).round(2)
    return pd.DataFrame(
        {
            "id": [f"item-{i}" for i in range(N_ITEMS)],
            "title": [f"Product {i}" for i in range(N_ITEMS)],
            "category": [CATEGORIES[i % 3] for i in range(N_ITEMS)],
            "text": [f"product {i} description" for i in range(N_ITEMS)],
            "price": prices,
            "test_prompt": [f"How much does this cost?\n\nproduct {i}\n\nPrice is $" for i in range(N_ITEMS)],
        }
    )


def _lookup_predictor(answers: dict[str, object]):
    def predict(batch: pd.DataFrame) -> list[object]:
        return [answers[text] for text in batch["text"]]

    return predict


# --- metrics -----------------------------------------------------------------------------------


def test_the_evaluate_module_loads_by_path_without_network_and_computes_the_same_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import evaluate

    def refuse(*_: object) -> None:
        raise OSError("network access during metric loading")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    metric = evaluate.load(str(METRIC_PATH), keep_in_memory=True)
    truth, estimates = [100.0, 100.0, 40.0, 900.0], [110.0, None, 70.0, 450.0]
    result = metric.compute(predictions=estimates, references=truth)
    assert result["n"] == 4 and result["unparseable"] == 1 and result["mae"] == pytest.approx((10 + 30 + 450) / 3)
    assert result == pytest.approx(compute_metrics(truth, estimates), nan_ok=True)


def test_metrics_match_hand_computed_values() -> None:
    truth = [100.0, 50.0, 20.0, 300.0, 10.0, 200.0]
    # green, unparseable, green, negative (red, clipped to 0 for rmsle), NaN, orange
    estimates = [130.0, None, 19.0, -5.0, float("nan"), 270.0]
    metrics = compute_metrics(truth, estimates)
    # Parseable pairs: (100, 130), (20, 19), (300, -5), (200, 270).
    assert metrics["mae"] == pytest.approx((30 + 1 + 305 + 70) / 4)
    squared_logs = [
        math.log(131 / 101) ** 2,
        math.log(20 / 21) ** 2,
        math.log(301) ** 2,
        math.log(271 / 201) ** 2,
    ]
    assert metrics["rmsle"] == pytest.approx(math.sqrt(sum(squared_logs) / 4))
    # Truth mean 155: ss_tot = 55^2 + 135^2 + 145^2 + 45^2; ss_res = 30^2 + 1^2 + 305^2 + 70^2.
    assert metrics["r2"] == pytest.approx(1 - 98_826 / 44_300)
    assert metrics["hit_rate"] == pytest.approx(2 / 6)
    assert (metrics["unparseable"], metrics["n"]) == (2, 6)
    assert (metrics["green"], metrics["orange"], metrics["red"]) == (2, 1, 3)


def test_all_unparseable_leaves_error_metrics_nan() -> None:
    metrics = compute_metrics([10.0, 20.0], [None, float("nan")])
    assert all(math.isnan(metrics[name]) for name in ("mae", "rmsle", "r2"))
    assert (metrics["hit_rate"], metrics["unparseable"], metrics["red"]) == (0.0, 2, 2)


@pytest.mark.parametrize(
    ("truth", "estimate", "colour"),
    [
        (100.0, 139.99, "green"),  # just under $40
        (100.0, 140.0, "orange"),  # $40 and 40%: neither a hit nor red
        (100.0, 60.0, "orange"),  # the same below the truth
        (1000.0, 1199.0, "green"),  # 19.9%, far over $40
        (1000.0, 1200.0, "orange"),  # exactly 20%
        (1000.0, 1399.0, "orange"),
        (1000.0, 1400.0, "red"),  # exactly 40% and over $80
        (50.0, 129.99, "orange"),  # just under $80
        (50.0, 130.0, "red"),  # exactly $80
        (250.0, 299.0, "green"),
        (250.0, 300.0, "orange"),  # $50 and exactly 20%
        (0.0, 39.0, "green"),  # a free item still has an absolute error
        (10.0, None, "red"),
        (10.0, float("nan"), "red"),
        (10.0, float("inf"), "red"),
    ],
)
def test_colour_band_boundaries(truth: float, estimate: float | None, colour: str) -> None:
    assert colour_band(truth, estimate) == colour


# --- harness -----------------------------------------------------------------------------------


def test_evaluate_model_end_to_end(tracking_uri: str, tmp_path: Path) -> None:
    test = _test_split()
    answers: dict[str, object] = dict(zip(test["text"], test["price"] * 1.1, strict=True))
    answers[test["text"][3]] = "I cannot say"
    answers[test["text"][4]] = -3.0
    expected = [answers[text] for text in test["text"]]
    reports = tmp_path / "reports"

    with stage_run("evaluate", tracking_uri=tracking_uri) as run:
        run_id = run.info.run_id
        result = evaluate_model(
            "demo-lr",
            _lookup_predictor(answers),
            test,
            batch_size=8,
            reports_dir=reports,
            run_id=run_id,
            test_digest="0123abcd",
        )

    assert result.metrics == pytest.approx(compute_metrics(test["price"].tolist(), expected))
    assert (result.metrics["unparseable"], result.metrics["n"]) == (1, N_ITEMS)
    predictions = result.predictions
    assert list(predictions.columns) == ["id", "title", "category", "price", "estimate", "error", "band"]
    assert predictions["id"].tolist() == test["id"].tolist()
    assert math.isnan(predictions["estimate"][3]) and predictions["band"][3] == "red"
    assert predictions["error"][4] == pytest.approx(-3.0 - test["price"][4])
    assert result.per_band["price_band"].astype(str).tolist() == list(PRICE_BAND_LABELS)
    assert result.per_band["n"].sum() == N_ITEMS
    assert result.per_category["n"].tolist() == [10, 10, 10]
    assert set(result.per_category["category"]) == set(CATEGORIES)

    on_disk = json.loads((reports / "metrics" / "demo-lr.json").read_text())
    assert on_disk == pytest.approx({name: result.metrics[name] for name in ("mae", "hit_rate", "rmsle")})
    assert all(isinstance(value, int | float) for value in on_disk.values())  # numbers only: DVC's row
    eval_dir = reports / "eval" / "demo-lr"
    assert {path.name for path in eval_dir.iterdir()} == EVAL_FILES
    assert len(pd.read_csv(eval_dir / "predictions.csv")) == N_ITEMS
    for chart in ("scatter.png", "error_hist.png"):
        assert (eval_dir / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    client = MlflowClient(tracking_uri)
    logged = client.get_run(run_id)
    for name in ("mae", "rmsle", "hit_rate", "r2", "unparseable", "n"):
        assert logged.data.metrics[name] == pytest.approx(result.metrics[name])
    assert logged.data.tags[MODEL_TAG] == "demo-lr"
    assert logged.data.tags[TEST_DIGEST_TAG] == "0123abcd"
    artifacts = {Path(item.path).name for item in client.list_artifacts(run_id, "eval/demo-lr")}
    assert artifacts == EVAL_FILES | {"demo-lr.json", "predictions_table.json"}
    table_file = client.download_artifacts(run_id, "eval/demo-lr/predictions_table.json", str(tmp_path))
    table = json.loads(Path(table_file).read_text())
    assert table["columns"] == list(predictions.columns) and len(table["data"]) == N_ITEMS

    board = leaderboard(tracking_uri=tracking_uri)
    row = board.set_index("model").loc["demo-lr"]
    assert row["run_id"] == run_id and row["n"] == N_ITEMS


def test_failing_batches_count_as_unparseable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    test = _test_split()
    texts = test["text"].tolist()

    def flaky(batch: pd.DataFrame) -> list[float]:
        if texts[9] in batch["text"].tolist():
            raise RuntimeError("model server went away")
        if texts[20] in batch["text"].tolist():
            return [1.0]  # too few answers: the batch cannot be matched to its items
        return [50.0] * len(batch)

    with caplog.at_level(logging.ERROR, logger="pricer.stages.harness"):
        result = evaluate_model("flaky", flaky, test, batch_size=8, reports_dir=tmp_path)

    failed = list(range(8, 24))
    assert result.metrics["unparseable"] == len(failed)
    assert result.predictions["estimate"].isna().tolist() == [i in failed for i in range(N_ITEMS)]
    expected = [None if i in failed else 50.0 for i in range(N_ITEMS)]
    assert result.metrics == pytest.approx(compute_metrics(test["price"].tolist(), expected))
    assert "items 8-15" in caplog.text and "items 16-23" in caplog.text
    assert (tmp_path / "metrics" / "flaky.json").exists()


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("bad/name", {}, "model name"),
        ("ok", {"drop": "category"}, "lacks column"),
        ("ok", {"price": float("nan")}, "no valid price"),
        ("ok", {"price": -1.0}, "no valid price"),
    ],
)
def test_bad_input_is_refused_before_predicting(
    name: str, change: dict, message: str, tmp_path: Path
) -> None:
    test = _test_split()
    if "drop" in change:
        test = test.drop(columns=change["drop"])
    if "price" in change:
        test.loc[5, "price"] = change["price"]

    def never(_: pd.DataFrame) -> list[float]:
        raise AssertionError("predictor called on invalid input")

    with pytest.raises(ValueError, match=message):
        evaluate_model(name, never, test, reports_dir=tmp_path)


# --- leaderboard -------------------------------------------------------------------------------


def test_leaderboard_keeps_latest_run_per_model_sorted_by_mae(tracking_uri: str) -> None:
    experiment_id = configure(tracking_uri=tracking_uri, experiment="leaderboard-test")
    client = MlflowClient(tracking_uri)

    def logged_run(start: int, tags: dict[str, str], metrics: dict[str, float]) -> str:
        run = client.create_run(experiment_id, start_time=start, tags=tags)
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    scores = {"rmsle": 0.5, "hit_rate": 0.6, "r2": 0.7, "unparseable": 2.0, "n": 100.0}
    a = logged_run(1_000, {MODEL_TAG: "a"}, {"mae": 30.0, **scores})
    logged_run(1_000, {MODEL_TAG: "b"}, {"mae": 10.0, **scores})
    b_latest = logged_run(2_000, {MODEL_TAG: "b"}, {"mae": 50.0, **scores})
    c = logged_run(1_500, {MODEL_TAG: "c"}, {"mae": 20.0, **scores})
    logged_run(3_000, {}, {"mae": 1.0})  # not a model evaluation
    logged_run(3_000, {MODEL_TAG: "d"}, {"rmsle": 0.1})  # no mae

    board = leaderboard(experiment="leaderboard-test", tracking_uri=tracking_uri)
    assert list(board.columns) == list(COLUMNS)
    assert board["model"].tolist() == ["c", "a", "b"]
    assert board["run_id"].tolist() == [c, a, b_latest]
    assert board["mae"].tolist() == [20.0, 30.0, 50.0]
    assert board["n"].tolist() == [100, 100, 100]

    empty = leaderboard(experiment="no-such-experiment", tracking_uri=tracking_uri)
    assert empty.empty and list(empty.columns) == list(COLUMNS)


def test_to_markdown_writes_a_pipe_table() -> None:
    table = pd.DataFrame(
        {"model": ["a|b", "c"], "mae": [1.5, float("nan")], "n": pd.array([3, None], dtype="Int64")}
    )
    assert to_markdown(table) == (
        "| model | mae | n |\n| --- | ---: | ---: |\n| a\\|b | 1.5000 | 3 |\n| c |  |  |\n"
    )


# --- Prefect -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_prefect_table_artifact_inside_a_flow(tmp_path: Path) -> None:
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.testing.utilities import prefect_test_harness

    test = _test_split()

    @task
    def evaluate_task() -> dict[str, float | int]:
        return evaluate_model(
            "demo.lr", lambda texts: [20.0] * len(texts), test, reports_dir=tmp_path
        ).metrics

    @flow
    def evaluation_flow() -> dict[str, float | int]:
        return evaluate_task()

    key = prefect_artifact_key("demo.lr")
    assert key == "eval-demo-lr"
    with prefect_test_harness(server_startup_timeout=120):
        metrics = evaluation_flow()
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
    assert [artifact.type for artifact in artifacts] == ["table"]
    rows = json.loads(artifacts[0].data)
    assert {row["metric"]: row["value"] for row in rows}["n"] == metrics["n"] == N_ITEMS


@pytest.mark.slow
def test_metrics_inside_a_logging_flow_log_the_flows_prints_and_no_bytecode(prefect_server: None) -> None:
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    @task
    def score() -> dict[str, float | int]:
        print("scoring three items")
        return compute_metrics([10.0, 20.0, 30.0], [12.0, 18.0, 33.0])

    @flow(log_prints=True)
    def scoring_flow() -> dict[str, float | int]:
        return score()

    state = scoring_flow(return_state=True)
    assert state.result()["n"] == 3
    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    messages = [log.message for log in logs]
    assert "scoring three items" in messages
    # dill, under evaluate, prints a disassembly into a captured stdout to find a function's globals.
    assert not [message for message in messages if "LOAD_" in message or "RESUME" in message]
