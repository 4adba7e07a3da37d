"""The curation stage end to end: CLI, DVC and the Prefect flow agree; MLflow records the run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from pricer.stages import dvc_runner
from pricer.apps.cli import app
from pricer.core.files import file_digest
from tests.conftest import run

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

    again = pipeline_flow(str(dvc_workspace))
    assert stages_under(again["pipeline_run_id"]) == set()  # DVC skipped the stages, Prefect cached the rest
    assert again["ensemble"] == result["ensemble"] and again["champions"] == result["champions"]
    assert again["finetune_ran"] is False


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
