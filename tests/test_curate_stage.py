"""The curation stage end to end: CLI, DVC and the Prefect flow agree; MLflow records the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from tests.conftest import run
from typer.testing import CliRunner

from pricer.apps.cli import app
from pricer.core.files import file_digest
from pricer.stages import dvc_runner

OUTPUTS = ("data/curated/train.parquet", "data/curated/val.parquet", "data/curated/test.parquet",
           "data/quarantine.jsonl")


def small_params(root: Path, n_items: int = 1200) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["curate"]["source"]["n_items"] = n_items
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def hashes(root: Path) -> dict[str, str]:
    return {name: file_digest(root / name) for name in OUTPUTS}


def test_cli_dvc_and_prefect_flow_produce_identical_outputs(dvc_workspace: Path, prefect_server) -> None:
    from flows.curate import curate_flow

    root = dvc_workspace
    small_params(root)
    result = CliRunner().invoke(app, ["curate", "--source", "demo"])
    assert result.exit_code == 0, result.output
    by_cli = hashes(root)

    flow_hashes = curate_flow(str(root))
    assert hashes(root) == by_cli
    assert flow_hashes == {Path(name).name: digest for name, digest in by_cli.items()}
    assert dvc_runner.status(root, "curate") == {}
    assert dvc_runner.repro("curate", root) is False  # a second repro does nothing

    lock = yaml.safe_load((root / "dvc.lock").read_text())
    recorded = {out["path"]: out for out in lock["stages"]["curate"]["outs"]}
    assert recorded["data/quarantine.jsonl"]["md5"] == by_cli["data/quarantine.jsonl"]

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("pricer").experiment_id],
                              filter_string="tags.`pricer.stage` = 'curate'")
    assert len(runs) == 2  # the CLI's run and the one DVC launched for the flow
    latest = runs[0]
    assert latest.data.metrics["kept"] + latest.data.metrics["rejected"] == latest.data.metrics["read"]
    assert latest.data.tags["dvc.md5.quarantine.jsonl"] == by_cli["data/quarantine.jsonl"]
    assert {i.dataset.name for i in latest.inputs.dataset_inputs} == {"curated-train", "curated-val", "curated-test"}
    # Each logged split is named by its file's md5, the hash DVC keeps: a changed text changes it.
    assert {i.dataset.name: i.dataset.digest for i in latest.inputs.dataset_inputs} == {
        f"curated-{split}": latest.data.tags[f"dvc.md5.{split}.parquet"] for split in ("train", "val", "test")}
    artifacts = [a.path for a in client.list_artifacts(latest.info.run_id)]
    assert "curation.json" in artifacts


def test_changed_param_reruns_and_dvc_remote_round_trips(dvc_workspace: Path, tmp_path: Path) -> None:
    root = dvc_workspace
    small_params(root, 600)
    assert dvc_runner.repro("curate", root) is True
    first = hashes(root)
    small_params(root, 700)
    assert dvc_runner.status(root, "curate") != {}
    assert dvc_runner.repro("curate", root) is True
    assert hashes(root) != first

    remote = tmp_path / "remote"
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(remote)], root)
    run([sys.executable, "-m", "dvc", "push", "curate"], root)
    produced = hashes(root)
    for name in OUTPUTS:
        (root / name).unlink()
    run(["rm", "-rf", ".dvc/cache"], root)
    run([sys.executable, "-m", "dvc", "pull", "curate"], root)
    assert hashes(root) == produced


def test_pipeline_runs_every_stage_nested_registers_champions_and_a_rerun_skips_them_all(
        dvc_workspace: Path, prefect_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.pipeline import pipeline_flow

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the frontier step is not configured

    small_params(dvc_workspace, 600)
    params = yaml.safe_load((dvc_workspace / "params.yaml").read_text())
    params["baselines"] = {"models": [{"kind": "mean"}, {"kind": "tfidf_lr"}]}  # fast ones; no embeddings
    (dvc_workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    result = pipeline_flow(str(dvc_workspace))

    client = MlflowClient()
    experiment = client.get_experiment_by_name("pricer").experiment_id

    def stages_under(pipeline_run_id: str) -> set[str]:
        children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{pipeline_run_id}'")
        return {child.data.tags["pricer.stage"] for child in children}

    assert stages_under(result["pipeline_run_id"]) >= {"curate", "baselines", "finetune", "ensemble"}
    champions = {row["model"]: row["champion"] for row in result["champions"]}
    for name in ("pricer-regressor", "pricer-specialist", "pricer-ensemble"):
        assert f"v{client.get_model_version_by_alias(name, 'champion').version}" == champions[name]
    assert champions["pricer-frontier"] == "none registered"
    assert "OPENAI_API_KEY" in result["frontier"]["skipped"]
    assert "tfidf_lr" in result["leaderboard"]
    assert dvc_runner.status(dvc_workspace) == {}
    # The vector store (the UI's map and citations) is built from the training split, with no frontier key.
    train = pd.read_parquet(dvc_workspace / "data" / "curated" / "train.parquet")
    assert result["vectorstore"]["products"] == train["id"].nunique() and result["vectorstore"]["added"] > 0
    from pricer.agents.vectorstore import ProductStore

    assert len(ProductStore(dvc_workspace / "data" / "vectorstore").projection(50)) == 50

    # What a reviewer reads in DVC: one compact row per stage or model, and plots drawn from the test predictions.
    shown = run([sys.executable, "-m", "dvc", "metrics", "show"], dvc_workspace).stdout.strip().splitlines()
    assert len(shown) < 20 and shown[0].split() == ["Path", "hit_rate", "kept", "mae", "read", "rejected", "rmsle",
                                                    "source_errors", "test", "train", "val"]
    rows = {line.split()[0]: line for line in shown[1:]}
    assert {"reports/baselines/metrics/tfidf_lr.json", "reports/curation/metrics.json",
            "reports/finetune/metrics/specialist-finetuned.json"} <= set(rows)
    assert all(len(line) < 160 for line in shown)
    run([sys.executable, "-m", "dvc", "plots", "show", "-o", "dvc_plots"], dvc_workspace)
    html = (dvc_workspace / "dvc_plots" / "index.html").read_text()
    assert "Estimate vs true price" in html and "MAE by true-price band" in html

    # What a reviewer reads in MLflow: the pipeline run holds the settings, the commit and the outcome.
    parent = client.get_run(result["pipeline_run_id"])
    assert parent.data.params["curate.source.n_items"] == "600" and "git.commit" in parent.data.params
    assert parent.data.params["baselines.models.tfidf_lr.alpha"]
    assert parent.data.metrics["mae.tfidf_lr"] > 0 and 0 <= parent.data.metrics["hit_rate.tfidf_lr"] <= 1
    assert parent.data.metrics["champion_mae.pricer-regressor"] > 0
    assert "pipeline/mae_by_model.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "pipeline")}
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"

    again = pipeline_flow(str(dvc_workspace))
    assert stages_under(again["pipeline_run_id"]) == set()  # DVC skipped the stages, Prefect cached the rest
    assert again["ensemble"] == result["ensemble"] and again["champions"] == result["champions"]
    assert again["finetune_ran"] is False
    assert again["vectorstore"]["skipped_unchanged"] and again["vectorstore"]["added"] == 0

    # One parameter changed, the pipeline run again: `pricer compare` names it and shows what came of it.
    params["baselines"]["models"][1]["alpha"] = 30.0
    (dvc_workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = pipeline_flow(str(dvc_workspace))
    assert stages_under(changed["pipeline_run_id"]) >= {"baselines"}
    compared = CliRunner().invoke(app, ["compare", "--json"])
    assert compared.exit_code == 0, compared.output
    report = json.loads(compared.stdout.strip().splitlines()[-1])
    assert (report["before"], report["after"]) == (again["pipeline_run_id"], changed["pipeline_run_id"])
    assert [change["name"] for change in report["params"]] == ["baselines.models.tfidf_lr.alpha"]
    deltas = {metric["name"]: metric["delta"] for metric in report["metrics"]}
    assert deltas["mae.tfidf_lr"] != 0 and deltas["mae.mean"] == 0
    assert {decision["registered_name"] for decision in report["decisions"]} >= {"pricer-regressor"}
    table = CliRunner().invoke(app, ["compare", "--runs", again["pipeline_run_id"], "--runs",
                                     changed["pipeline_run_id"]])
    assert table.exit_code == 0 and "baselines.models.tfidf_lr.alpha" in table.stdout and "mae.tfidf_lr" in table.stdout


def test_an_experiment_with_one_param_set_runs_and_shows_from_a_fresh_workspace(dvc_workspace: Path) -> None:
    root = dvc_workspace
    small_params(root, 400)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "fresh clone"], root)
    run([sys.executable, "-m", "dvc", "exp", "run", "curate", "-S", "curate.source.n_items=500"], root)
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], root).stdout)
    experiments = [exp for entry in shown for exp in (entry.get("experiments") or [])]
    ran = [exp["revs"][0]["data"] for exp in experiments if exp.get("revs")]
    assert ran, shown
    data = ran[0]
    assert data["params"]["params.yaml"]["data"]["curate"]["source"]["n_items"] == 500
    assert data["metrics"]["reports/curation/metrics.json"]["data"]["read"] == 500


def test_registry_step_fingerprints_tell_stores_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh store at the same path (a new clone, a wiped mlruns/) must not reuse what Prefect cached for
    the old one, or its frontier and ensemble would never be registered. Each look is a new process, as
    each pipeline run is."""
    code = ("from pathlib import Path; from pricer.stages import pipeline; "
            "from pricer.stages.ensemble import EnsembleConfig; from pricer.tracking.runs import configure; "
            "configure(); print(pipeline.ensemble_fingerprint(EnsembleConfig()), "
            "pipeline.frontier_fingerprint(None, Path('data/curated')))")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")

    def fingerprints() -> list[str]:
        return run([sys.executable, "-c", code], tmp_path).stdout.split()

    (tmp_path / "mlruns").mkdir()
    first = fingerprints()
    assert fingerprints() == first
    run(["rm", "-rf", "mlruns"], tmp_path)
    (tmp_path / "mlruns").mkdir()
    again = fingerprints()
    assert again[0] != first[0] and again[1] != first[1]
