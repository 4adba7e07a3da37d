"""Beyond one machine: the stages against a separate MLflow tracking server process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from pricer.apps.cli import app


def test_stages_track_and_register_through_a_tracking_server(
        dvc_workspace: Path, mlflow_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, store = mlflow_server
    # A URI an earlier test set in this process wins over the variable; forgetting it also unsets the variable.
    mlflow.set_tracking_uri(None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    try:
        _track_and_register(dvc_workspace, url, store)
    finally:
        mlflow.set_tracking_uri(None)  # the server goes away with this test


def _track_and_register(dvc_workspace: Path, url: str, store: Path) -> None:
    params = yaml.safe_load((dvc_workspace / "params.yaml").read_text())
    params["curate"]["source"]["n_items"] = 600
    params["baselines"] = {"models": [{"kind": "mean"}, {"kind": "tfidf_lr"}]}
    (dvc_workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    for command in (["curate"], ["baselines"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("pricer")
    stages = {run.data.tags.get("pricer.stage") for run in client.search_runs([experiment.experiment_id])}
    assert {"curate", "baselines"} <= stages
    champion = client.get_model_version_by_alias("pricer-regressor", "champion")
    assert client.get_run(champion.run_id).data.tags["pricer.model"] == "tfidf_lr"
    # Everything went through the server: its database and artifact store, nothing local.
    assert not (dvc_workspace / "mlruns" / "mlflow.db").exists()
    assert any((store / "artifacts").rglob("MLmodel"))
    # A client elsewhere loads the champion through the server's artifact proxy.
    model = mlflow.pyfunc.load_model("models:/pricer-regressor@champion")
    prices = model.predict(pd.DataFrame({"text": ["Stainless steel 12-cup coffee maker with timer"]}))
    assert float(prices[0]) > 0


def test_a_worker_of_the_gpu_pool_runs_the_finetune_deployment(dvc_workspace: Path, prefect_server) -> None:
    """The GPU stages as deployments of a process work pool, run by a worker in another process."""
    import os

    from flows.deployments import deploy_gpu_stages
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    params = yaml.safe_load((dvc_workspace / "params.yaml").read_text())
    params["curate"]["source"]["n_items"] = 600
    (dvc_workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert CliRunner().invoke(app, ["curate"]).exit_code == 0
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="gpu", type="process"))
    deployment = deploy_gpu_stages("gpu", source=dvc_workspace)["finetune"]
    flow_run = run_deployment(deployment, timeout=0)

    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gpu", "--run-once"],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}, cwd=dvc_workspace,
        capture_output=True, text=True, timeout=600,
    )
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.is_completed(), f"{state}\n{(worker.stdout + worker.stderr)[-4000:]}"
    store = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # the one the worker's flow run wrote to
    assert store.get_model_version_by_alias("pricer-specialist", "champion").version


def test_a_two_process_launch_trains_on_both_ranks_and_logs_and_registers_once(dvc_workspace: Path) -> None:
    """What `accelerate launch --multi_gpu` starts on a GPU machine (torch's elastic launcher, one process per
    device), here as two CPU processes talking gloo: rank 0 alone owns the MLflow run and the registry."""
    import os

    params = yaml.safe_load((dvc_workspace / "params.yaml").read_text())
    params["curate"]["source"]["n_items"] = 600
    (dvc_workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert CliRunner().invoke(app, ["curate"]).exit_code == 0
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "-m", "pricer.apps.cli", "finetune", "--config", "configs/finetune/tiny.yaml"],
        cwd=dvc_workspace, env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )
    output = launched.stdout + launched.stderr
    assert launched.returncode == 0, output[-4000:]
    assert "Traceback" not in output and output.count(" steps, train loss ") == 1  # one rank reports
    store = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = store.get_experiment_by_name("pricer").experiment_id
    finetune_runs = store.search_runs([experiment], filter_string="tags.`pricer.stage` = 'finetune'")
    assert len(finetune_runs) == 1
    assert [str(v.version) for v in store.search_model_versions("name='pricer-specialist'")] == ["1"]
