"""The reviewer's view: two pipeline runs side by side in MLflow's own compare page, in a real browser."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pricer.stages import pipeline
from pricer.stages.harness import evaluate_model
from pricer.stages.params import load_params
from pricer.tracking.lineage import MODEL_TAG

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "reports" / "mlflow_compare.png"


def _items(n: int = 40) -> pd.DataFrame:
    prices = np.linspace(10.0, 400.0, n)
    return pd.DataFrame({"id": [f"i{k}" for k in range(n)], "title": [f"Kettle {k}" for k in range(n)],
                         "category": ["Appliances"] * n, "price": prices, "text": [f"Kettle {k}" for k in range(n)]})


def _pipeline_run(params, off_by: dict[str, float], tmp_path: Path) -> str:
    """A pipeline run whose models are off the truth by set amounts, scored by the real harness."""
    items = _items()
    with pipeline.pipeline_run(params) as run:
        for model, usd in off_by.items():
            with mlflow.start_run(run_name=model, nested=True, tags={MODEL_TAG: model},
                                  experiment_id=run.info.experiment_id) as child:
                evaluate_model(model, lambda batch, usd=usd: batch["price"].to_numpy() + usd, items,
                               reports_dir=tmp_path / run.info.run_id, run_id=child.info.run_id)
        pipeline.record_outcome(run.info.run_id, params.tracking)
    return run.info.run_id


def test_two_pipeline_runs_compare_in_mlflow_with_their_metric_columns_filled(
        mlflow_server, browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.by import By

    url, _ = mlflow_server
    mlflow.set_tracking_uri(None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    try:
        params = load_params(REPO / "params.yaml")
        first = _pipeline_run(params, {"tfidf_lr": 30.0, "xgboost": 20.0}, tmp_path)
        changed = params.model_copy(update={"curate": params.curate.model_copy(update={"max_tokens": 120})})
        second = _pipeline_run(changed, {"tfidf_lr": 25.0, "xgboost": 20.0}, tmp_path)
        experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
    finally:
        mlflow.set_tracking_uri(None)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    query = urllib.parse.urlencode({"runs": json.dumps([first, second]),
                                    "experiments": json.dumps([experiment.experiment_id])})
    browser.get(f"{url}/#/compare-runs?{query}&workflowType=machine_learning")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = browser.find_element(By.TAG_NAME, "body").text
        if "mae.tfidf_lr" in text and "curate.max_tokens" in text and "30" in text and "25" in text:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the compare page never showed both runs' metrics:\n{text[:3000]}")
    # The whole page, the params and metrics tables below the plot included.
    browser.set_window_size(1400, 3200)
    for close in browser.find_elements(By.CSS_SELECTOR, "[aria-label='Close']"):
        if close.is_displayed():
            close.click()  # the assistant's side panel
    time.sleep(2)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000

    # The experiment's own page, by the link the pipeline prints: the model-training view (its runs).
    browser.get(pipeline.experiment_link(url, experiment.experiment_id))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = browser.find_element(By.TAG_NAME, "body").text
        if text.count("pipeline") >= 2 and "Run Name" in text:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the experiment page does not list the pipeline runs:\n{text[:2000]}")
    assert "Model registry" in text and "Run Name" in text  # the runs table, not the GenAI overview


def test_a_stage_goes_to_wandb_with_its_params_metrics_and_charts(
        tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pricer.core.wandb_settings import WandbSettings
    from pricer.tracking.runs import stage_run

    monkeypatch.setenv("WANDB_SILENT", "true")
    settings = WandbSettings(enabled=True, mode="offline", dir=tmp_path / "wandb")
    with stage_run("review", {"curate": {"max_tokens": 160}}, wandb=settings) as run:
        with mlflow.start_run(run_name="tfidf_lr", nested=True, tags={MODEL_TAG: "tfidf_lr"},
                              experiment_id=run.info.experiment_id) as child:
            evaluate_model("tfidf_lr", lambda batch: batch["price"].to_numpy() + 12.5, _items(),
                           reports_dir=tmp_path / "reports", run_id=child.info.run_id)
    mirrored = {path.name.rsplit("-", 1)[-1]: path for path in (tmp_path / "wandb" / "wandb").glob("offline-run-*")}
    assert set(mirrored) == {run.info.run_id, child.info.run_id}  # one W&B run per MLflow run, same ids
    stage_record = next(mirrored[run.info.run_id].glob("*.wandb")).read_bytes()
    model_record = next(mirrored[child.info.run_id].glob("*.wandb")).read_bytes()
    assert b"curate.max_tokens" in stage_record and b"160" in stage_record
    assert b"mae" in model_record and b"12.5" in model_record and b"hit_rate" in model_record
    charts = {path.name.split("_")[0] for path in (mirrored[child.info.run_id] / "files" / "media").rglob("*.png")}
    assert {"scatter", "error"} <= charts
