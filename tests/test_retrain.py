"""Closing the retraining loop: inbox files reach training through DVC's declared inputs, the live deals are
in the drift report, and the schedule has one place. A real DVC workspace, MLflow store and Prefect server."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from pricer.agents.config import load_agents_config
from pricer.agents.deals import Deal, Opportunity
from pricer.agents.memory import Memory
from pricer.core.errors import ConfigError
from pricer.core.files import file_digest
from pricer.data.demo import generate_catalog
from pricer.stages import dvc_runner
from pricer.stages.retrain import RetrainConfig, load_retrain_config

REPO = Path(__file__).resolve().parents[1]


def write_yaml(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def remember_live_deals(path: Path, n: int, surfaced: int) -> None:
    """A memory as the deal agents leave it: ``n`` deals priced, ``surfaced`` of them opportunities."""
    deals = [Deal(url=f"https://shop.test/{i}", title=f"Deal {i}", price=20.0 + i, feed="f") for i in range(n)]
    priced = [(deal, 40.0 + 2 * i) for i, deal in enumerate(deals[surfaced:])]
    opportunities = [Opportunity(deal=deal, estimate=100.0 + i) for i, deal in enumerate(deals[:surfaced])]
    memory = Memory(path)
    memory.record_cycle("c1", priced, opportunities, notifier="log")
    memory.close()


def curated(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(root / "data" / "curated" / f"{split}.parquet") for split in ("train", "val", "test")])


def test_a_retrain_takes_the_inbox_into_training_through_dvc_and_reports_the_live_deals(
        dvc_workspace: Path, prefect_server) -> None:
    from flows.retrain import retrain_flow

    root = dvc_workspace
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["curate"]["source"]["n_items"] = 600
    write_yaml(root / "params.yaml", params)
    write_yaml(root / "configs" / "retrain.yaml", {
        "thresholds": {"min_new_items": 20, "min_live_estimates": 10}, "embedding_sample": 0,
        "pipeline": "flows.curate:curate_flow"})  # re-curating is what brings the files into training
    assert dvc_runner.repro("curate", root) is True
    declared = (root / "params.yaml").read_bytes(), (root / "dvc.yaml").read_bytes()
    inbox = root / "data" / "inbox"
    inbox.mkdir(parents=True)
    drop = inbox / "new drop.jsonl"
    drop.write_text("".join(json.dumps(record) + "\n" for record in generate_catalog(60, 777, 0.0)))
    remember_live_deals(root / "data" / "memory.sqlite", 40, 3)
    assert not any(origin.startswith(drop.name) for origin in curated(root)["origin"])
    assert dvc_runner.repro("curate", root) is False  # waiting in the inbox, a file is no input of training

    decision = retrain_flow(str(root))

    assert decision["retrain"] and any("new items >=" in reason for reason in decision["reasons"])
    md5 = file_digest(drop)
    accepted = f"{md5[:12]}-new_drop.jsonl"
    assert [item["file"] for item in decision["accepted"]] == [accepted]
    assert (root / "data" / "accepted" / accepted).read_bytes() == drop.read_bytes()
    items = curated(root)
    assert (items["origin"].str.startswith(accepted + ":")).sum() == decision["new_items"] > 20
    assert json.loads((root / "reports" / "curation.json").read_text())["accepted_files"] == {accepted: md5}
    # DVC's view stays honest: the declared inputs are unchanged files, and the lock records the accepted data.
    assert ((root / "params.yaml").read_bytes(), (root / "dvc.yaml").read_bytes()) == declared
    assert dvc_runner.status(root, "curate") == {}
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    deps = {dep["path"]: dep for dep in lock["stages"]["curate"]["deps"]}
    assert deps["data/accepted"]["nfiles"] == 2  # .gitkeep and the accepted drop

    client = MlflowClient()
    experiment = client.get_experiment_by_name("pricer").experiment_id
    check = client.get_run(decision["run_id"])
    assert check.data.tags["pricer.retrain.accepted"] == accepted
    assert check.data.metrics["live.n_estimates"] == 40 and check.data.metrics["live.n_opportunities"] == 3
    assert "retrain/accepted.json" in [a.path for a in client.list_artifacts(check.info.run_id, "retrain")]
    latest_curate = client.search_runs([experiment], "tags.`pricer.stage` = 'curate'", max_results=1)[0]
    assert latest_curate.data.tags[f"pricer.accepted.{accepted}"] == md5
    assert latest_curate.data.metrics["accepted_files"] == 1

    # The live section: the agents' estimates (40..) and deal prices (20..59) against the training prices.
    live = decision["live"]
    assert live["n_estimates"] == 40 and live["estimate_psi"] is not None and live["deal_price_ks"] is not None
    assert live["median_train_price"] > 0 and isinstance(live["warnings"], list | tuple)

    again = retrain_flow(str(root))  # nothing new: judged, reported, nothing accepted or re-curated
    assert again["files"] == [] and not again["retrain"] and again["accepted"] == []
    assert again["live"]["n_estimates"] == 40 and dvc_runner.status(root, "curate") == {}


def test_the_retraining_schedule_has_one_place(tmp_path: Path) -> None:
    from flows.deployments import build_deployments

    assert "cron" not in RetrainConfig.model_fields
    assert "cron" not in yaml.safe_load((REPO / "configs" / "retrain.yaml").read_text())
    load_retrain_config(REPO / "configs" / "retrain.yaml")
    stale = tmp_path / "retrain.yaml"
    write_yaml(stale, {"cron": "0 3 * * *"})
    with pytest.raises(ConfigError, match="schedule.retrain_cron in configs/agents.yaml"):
        load_retrain_config(stale)
    agents = load_agents_config(REPO / "configs" / "agents.yaml")
    served = {deployment.name: deployment for deployment in build_deployments(agents)}
    retrain = served["retrain-scheduled"]
    assert [s.schedule.cron for s in retrain.schedules] == [agents.schedule.retrain_cron]
    # The accepted folder the retrain writes to is the one dvc.yaml declares as curation's input.
    curate = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["curate"]
    assert yaml.safe_load((REPO / "params.yaml").read_text())["curate"]["accepted_dir"] in curate["deps"]
    assert (REPO / "data" / "accepted").is_dir()
