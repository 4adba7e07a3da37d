"""Sharded curation: shards curated apart (on dask worker processes, through Prefect) and merged equal
one process's curation of the same input: the same rows in each split, quarantine and counts."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from tests.test_curate import product
from tests.test_curate_faults import truncated_gzip

from pricer.core.errors import ConfigError
from pricer.core.schema import SPLITS
from pricer.data.config import CurateConfig, JsonlSourceConfig
from pricer.data.curate import curate
from pricer.data.shards import curate_sharded, plan_shards
from pricer.stages.curate_shards import shard_settings

BALANCE = {"band_keep": {50.0: 0.5}, "category_keep": {"Electronics": 0.7}}


def multi_file_source(folder: Path) -> Path:
    """Three files (one gzipped): duplicates within and across files, malformed and rejected rows."""
    folder.mkdir()
    for f in range(3):
        lines: list[str] = []
        for i in range(60):
            category = {"main_category": "Electronics"} if i % 3 == 0 else {}
            lines.append(json.dumps(product(f"Kettle Model {f}-{i}", 5 + i * 2.5, **category)))
            if i % 6 == 0 and f > 0:  # the same product and price as in an earlier file
                lines.append(json.dumps(product(f"Kettle Model 0-{i}", 5 + i * 2.5, **category)))
            if i % 10 == 0:
                lines.append(json.dumps(product(f"Kettle Model {f}-{i}", 5 + i * 2.5, **category)))  # same file
            if i % 13 == 0:
                lines += ['{"title": "half a record", "price": ', "", json.dumps(product("Cheap", 0.1))]
        text = "\n".join(lines) + "\n"
        if f == 1:
            with gzip.open(folder / f"part-{f}.jsonl.gz", "wt", encoding="utf-8") as handle:
                handle.write(text)
        else:
            (folder / f"part-{f}.jsonl").write_text(text)
    return folder


def config_in(out: Path, source: Path, **extra) -> CurateConfig:
    return CurateConfig(source=JsonlSourceConfig(paths=[source]), output_dir=out / "curated",
                        quarantine_path=out / "quarantine.jsonl", report_path=out / "curation.json",
                        accepted_dir=None, workers=1, balance=BALANCE, **extra)


def assert_same_curation(one: Path, many: Path, one_report: dict, many_report: dict) -> None:
    for split in SPLITS:
        single = pd.read_parquet(one / "curated" / f"{split}.parquet")
        assert len(single) > 0
        pd.testing.assert_frame_equal(pd.read_parquet(many / "curated" / f"{split}.parquet"), single)
    assert (many / "quarantine.jsonl").read_text() == (one / "quarantine.jsonl").read_text()
    strip = {"outputs"}
    assert {k: v for k, v in many_report.items() if k not in strip} == {
        k: v for k, v in one_report.items() if k not in strip}
    assert many_report["outputs"]["quarantine.jsonl"] == one_report["outputs"]["quarantine.jsonl"]
    assert many_report["kept"] + many_report["rejected"] == many_report["read"]
    assert json.loads((many / "curation.json").read_text()) == many_report


def test_shards_merged_in_process_equal_one_process_with_line_ranges_and_a_damaged_file(tmp_path: Path) -> None:
    source = multi_file_source(tmp_path / "source")
    truncated_gzip(source / "part-3.jsonl.gz", 300)
    one = curate(config_in(tmp_path / "one", source))
    config = config_in(tmp_path / "many", source, shards={"work_dir": tmp_path / "shards", "lines_per_shard": 25})
    shards = plan_shards(config, tmp_path)
    assert len(shards) > 4 and any(shard.stop for shard in shards)  # files cut into line ranges
    many = curate_sharded(config, tmp_path)
    assert one["rejected_by_reason"]["duplicate"] > 10 and one["rejected_by_reason"]["balanced_out"] > 10
    assert len(one["source_errors"]) == 1
    assert_same_curation(tmp_path / "one", tmp_path / "many", one, many)


def test_sharded_flow_on_dask_worker_processes_equals_one_process(
        tmp_path: Path, prefect_server, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client, LocalCluster
    from flows.curate import run_curate_sharded

    source = multi_file_source(tmp_path / "source")
    one = curate(config_in(tmp_path / "one", source))
    root = tmp_path / "repo"
    root.mkdir()
    curate_params = config_in(Path("out"), source).model_dump(mode="json")
    curate_params["shards"] = {"work_dir": "shards", "lines_per_shard": 40}
    (root / "params.yaml").write_text(yaml.safe_dump({"curate": curate_params, "tracking": {"experiment": "pricer"}}))

    with (LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
          Client(cluster) as client):
        monkeypatch.setenv("PRICER_DASK_ADDRESS", cluster.scheduler_address)
        outputs = run_curate_sharded(str(root))
        # Each shard ran as a task on the cluster's worker processes, not in this one.
        prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
        assert "curate_shard" in prefixes and len(client.scheduler_info()["workers"]) == 2
    report = json.loads((root / "out" / "curation.json").read_text())
    assert outputs == report["outputs"]
    assert len(list((root / "shards").iterdir())) == len(plan_shards(config_in(root / "out", source, shards={
        "lines_per_shard": 40}), root)) > 3
    assert_same_curation(tmp_path / "one", root / "out", one, report)

    client_ml = MlflowClient()
    [run] = client_ml.search_runs([client_ml.get_experiment_by_name("pricer").experiment_id],
                                  filter_string="tags.`pricer.stage` = 'curate'")
    assert run.data.metrics["kept"] == one["kept"] and int(run.data.tags["pricer.shards"]) > 3


def test_bad_shard_settings_fail_at_load_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"curate": {"shards": {"workers": 0}}}))
    with pytest.raises(ConfigError, match=r"curate\.shards\.workers"):
        shard_settings(params)
    params.write_text(yaml.safe_dump({"curate": {"shards": {"address": "tcp://10.0.0.5:8786"}}}))
    assert shard_settings(params).address == "tcp://10.0.0.5:8786"
    monkeypatch.setenv("PRICER_DASK_ADDRESS", "10.0.0.5:8786")  # no scheme
    with pytest.raises(ConfigError, match=r"curate\.shards\.address"):
        shard_settings(params)


def test_only_jsonl_sources_without_a_limit_are_sharded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jsonl"):
        plan_shards(CurateConfig(), tmp_path)
    source = multi_file_source(tmp_path / "source")
    with pytest.raises(ConfigError, match="limit"):
        plan_shards(CurateConfig(source=JsonlSourceConfig(paths=[source], limit=10)), tmp_path)


KILLED_CHILD = """
import sys
from pathlib import Path
from pricer.data.config import CurateConfig
from pricer.data.shards import curate_sharded
curate_sharded(CurateConfig.model_validate_json(sys.argv[1]), Path(sys.argv[2]))
"""


def test_a_sharded_run_killed_midway_resumes_without_curating_a_finished_shard_again(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    records = [json.dumps(product(f"Kettle Model {i - 3 if i % 10 == 9 else i}", 5 + (i % 400) * 2.5))
               for i in range(12_000)]  # every tenth repeats a product three lines before it
    (source / "catalog.jsonl").write_text("\n".join(records) + "\n")
    one = curate(config_in(tmp_path / "one", source))
    config = config_in(tmp_path / "many", source, shards={"work_dir": tmp_path / "shards", "lines_per_shard": 1500})
    total = len(plan_shards(config, tmp_path))
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, config.model_dump_json(), str(tmp_path)])
    first = tmp_path / "shards" / "00000" / "shard.json"
    deadline = time.monotonic() + 120
    while not first.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait()
    finished = {marker.parent.name: marker.parent.joinpath("report.json").stat().st_mtime_ns
                for marker in (tmp_path / "shards").glob("*/shard.json")}
    assert 1 <= len(finished) < total, "the kill came after the first shard and before the last"

    many = curate_sharded(config, tmp_path)
    for name, written in finished.items():  # a finished shard is read, not curated again
        assert (tmp_path / "shards" / name / "report.json").stat().st_mtime_ns == written
    assert len(list((tmp_path / "shards").glob("*/shard.json"))) == total
    assert_same_curation(tmp_path / "one", tmp_path / "many", one, many)

    changed = config.model_copy(update={"min_chars": config.min_chars + 1})
    curate_sharded(changed, tmp_path)  # other settings: every shard is curated again
    for name, written in finished.items():
        assert (tmp_path / "shards" / name / "report.json").stat().st_mtime_ns != written
