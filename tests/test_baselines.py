"""The baselines stage on the demo catalog: every model trains, logs, and the best is gated into the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from pricer.apps.cli import app
from pricer.data.config import CurateConfig, DemoSourceConfig
from pricer.data.curate import curate
from pricer.stages.baselines import run_baselines

MODELS = ("random", "mean", "features_lr", "tfidf_lr", "embed_lr", "xgboost")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder with curated demo data, a params.yaml and its own MLflow store."""
    root = tmp_path_factory.mktemp("project")
    curate(CurateConfig(source=DemoSourceConfig(n_items=1200, seed=11)), root)
    # One model of each family keeps the test short; `pricer baselines` runs them all.
    models = [{"kind": kind} for kind in MODELS]
    (root / "params.yaml").write_text(yaml.safe_dump({"baselines": {"models": models}}))
    return root


@pytest.fixture(scope="module")
def trained(project: Path) -> dict:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    cwd = Path.cwd()
    os.chdir(project)
    try:
        yield run_baselines(project / "params.yaml")
    finally:
        os.chdir(cwd)
        os.environ.pop("MLFLOW_TRACKING_URI")


def test_every_model_is_trained_and_the_best_beats_the_floors(trained: dict) -> None:
    models = trained["models"]
    assert set(models) == set(MODELS)
    mae = {name: row["test"]["mae"] for name, row in models.items()}
    best = min(mae.values())
    assert mae["random"] > mae["mean"] > best
    assert best < 0.6 * mae["mean"]  # a wide margin, not a rounding error
    assert all(row["test"]["unparseable"] == 0 and row["fit_seconds"] > 0 for row in models.values())


def test_each_model_is_an_mlflow_run_with_metrics_charts_and_a_text_model(trained: dict, project: Path) -> None:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    row = trained["models"]["tfidf_lr"]
    run = client.get_run(row["run_id"])
    assert run.data.tags["pricer.model"] == "tfidf_lr"
    assert run.data.tags["mlflow.parentRunId"]  # nested under the stage's run
    assert {"mae", "rmsle", "hit_rate", "r2", "val_mae", "fit_seconds"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(row["run_id"], "eval/tfidf_lr")}
    assert {"eval/tfidf_lr/scatter.png", "eval/tfidf_lr/error_hist.png"} <= artifacts
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    loaded = mlflow.pyfunc.load_model(row["model_uri"])
    assert [column.name for column in loaded.metadata.get_input_schema().inputs] == [
        "text", "full_text", "category", "details", "prompt"]
    import pandas as pd

    assert loaded.predict(pd.DataFrame({"text": ["Wireless Headphones, noise cancelling, 40 hour battery"]}))[0] > 0


def test_best_model_by_validation_is_champion_and_loads_by_alias_in_a_fresh_process(trained: dict, project: Path):
    import mlflow
    import pandas as pd

    from pricer.core.metrics import compute_metrics
    from pricer.core.schema import model_inputs

    promotion = trained["promotion"]
    best = min(trained["models"].values(), key=lambda row: row["val_mae"])
    assert promotion["decision"] == "promoted" and promotion["candidate_mae"] == pytest.approx(best["test"]["mae"])
    # What the gate scored is what the registered version predicts when a consumer loads it.
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    test = pd.read_parquet(project / "data" / "curated" / "test.parquet")
    loaded = mlflow.pyfunc.load_model(f"models:/pricer-regressor/{promotion['version']}")
    scored = compute_metrics(test["price"].tolist(), list(loaded.predict(model_inputs(test))))["mae"]
    version = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_model_version("pricer-regressor",
                                                                                 promotion["version"])
    assert float(version.tags["pricer.mae"]) == pytest.approx(scored, rel=1e-12)
    code = (
        "import mlflow; m = mlflow.pyfunc.load_model('models:/pricer-regressor@champion');"
        "import pandas as pd; print(float(m.predict(pd.DataFrame({'text': ['Cordless Drill 20V, two batteries']}))[0]))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) > 0


def test_compare_prints_the_leaderboard_and_rerun_does_not_promote(trained: dict, project: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["leaderboard"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("|")][2:]
    assert len(lines) == len(trained["models"])
    assert lines[0].split("|")[1].strip() == min(trained["models"], key=lambda n: trained["models"][n]["test"]["mae"])
    assert (project / "reports" / "leaderboard.md").exists()

    again = run_baselines(project / "params.yaml", only=["mean", "tfidf_lr"])
    assert again["promotion"]["promoted"] is False
    client = MlflowClient()
    champion = client.get_model_version_by_alias("pricer-regressor", "champion")
    assert str(champion.version) == str(trained["promotion"]["version"])
    summary = json.loads((project / "reports" / "baselines.json").read_text())
    assert summary["promotion"]["decision"] in {"rejected", "already-champion"}


def test_evaluate_json_counts_every_row_and_matches_the_harness(trained: dict, project: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    import mlflow

    from pricer.core.metrics import compute_metrics
    from pricer.core.schema import model_inputs
    from pricer.data.config import CurateConfig
    from pricer.data.curate import clean_file

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.chdir(project)
    good = [{"title": f"Stainless Steel Electric Kettle {i} litre", "price": 20.0 + 7 * i, "main_category": "Home",
             "description": [f"Boils water fast, auto shut-off, cordless base, keeps warm for {i} hours. " * 20]}
            for i in range(12)]
    lines = [json.dumps(row).encode() for row in good] + [b"{broken", b'{"title": "No price here at all"}',
                                                         json.dumps({**good[0], "price": 5000}).encode()]
    path = tmp_path / "items.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"\n".join(lines) + b"\n")

    result = CliRunner().invoke(app, ["evaluate", "--model", "pricer-regressor@champion", "--data", str(path),
                                      "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    assert scored["n_scored"] == 12 and scored["n_rejected"] == 3
    assert scored["n_scored"] + scored["n_rejected"] == len(lines)

    items, _ = clean_file(path, CurateConfig())
    model = mlflow.pyfunc.load_model("models:/pricer-regressor@champion")
    estimates = model.predict(model_inputs(items))
    # The descriptions run past the token budget, so the champion's full_text must reach it.
    assert not np.allclose(estimates, model.predict(items[["text"]]))
    expected = compute_metrics(items["price"].tolist(), list(estimates))
    assert scored["mae"] == pytest.approx(expected["mae"]) and scored["hit_rate"] == pytest.approx(expected["hit_rate"])
    again = json.loads(CliRunner().invoke(app, ["evaluate", "--model", "pricer-regressor@champion", "--data",
                                                str(path), "--json"]).stdout.strip().splitlines()[-1])
    assert again == scored  # the same model and data give the same metrics
