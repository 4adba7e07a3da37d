"""Prefect flow: the curation stage through DVC, its outputs' hashes and a report artifact."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, task, unmapped
from prefect.artifacts import create_table_artifact

from pricer.stages import curate_shards, dvc_runner
from pricer.stages.curate import output_digests
from pricer.stages.params import load_params

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner


@task(retries=2, retry_delay_seconds=5)
def repro_stage(stage: str, root: str, force: bool = False) -> bool:
    return dvc_runner.repro(stage, Path(root), force=force)


@task
def output_hashes(paths: list[str]) -> dict[str, str]:
    return output_digests([Path(path) for path in paths])


@task
def publish_curation_report(report_path: str) -> dict:
    report = json.loads(Path(report_path).read_text())
    rows = [{"what": key, "count": report[key]} for key in ("read", "kept", "rejected")]
    rows += [{"what": f"rejected: {reason}", "count": n} for reason, n in report["rejected_by_reason"].items()]
    rows += [{"what": f"split: {split}", "count": n} for split, n in report["splits"].items()]
    create_table_artifact(key="curation-report", table=rows, description="Rows read, kept and rejected per reason")
    return report


@flow(name="curate", log_prints=True)
def curate_flow(root: str = ".", params_path: str = "params.yaml") -> dict[str, str]:
    """Curate the configured source; returns the content hash of each output."""
    root_path = Path(root).resolve()
    config = load_params(root_path / params_path).curate
    repro_stage("curate", str(root_path))
    outputs = [root_path / config.output_dir / f"{split}.parquet" for split in ("train", "val", "test")]
    hashes = output_hashes([str(path) for path in [*outputs, root_path / config.quarantine_path]])
    publish_curation_report(str(root_path / config.report_path))
    return hashes


@task
def plan_shards(params_path: str, root: str) -> list[dict[str, Any]]:
    return curate_shards.plan_curate_shards(params_path, root)


@task(retries=1, retry_delay_seconds=5)
def curate_shard(params_path: str, root: str, shard: dict[str, Any]) -> str:
    return curate_shards.run_curate_shard(params_path, root, shard)


@task
def merge_shards(params_path: str, root: str, folders: list[str]) -> dict[str, Any]:
    return curate_shards.merge_curate_shards(params_path, root, folders)


@flow(name="curate-sharded", log_prints=True)
def curate_sharded_flow(root: str = ".", params_path: str = "params.yaml") -> dict[str, str]:
    """Curate a jsonl source shard by shard on the flow's task runner, then merge: the outputs of ``curate``."""
    root_path = Path(root).resolve()
    params = str(root_path / params_path)
    shards = plan_shards(params, str(root_path))
    folders = curate_shard.map(unmapped(params), unmapped(str(root_path)), shards)
    summary = merge_shards(params, str(root_path), folders)
    publish_curation_report(str(root_path / load_params(params).curate.report_path))
    return summary["outputs"]


def dask_runner(params_path: str) -> DaskTaskRunner:
    """The cluster at curate.shards.address (or PRICER_DASK_ADDRESS), else a local one of worker processes."""
    from prefect_dask import DaskTaskRunner  # dask loads only for a sharded run, not for every pipeline

    shards = curate_shards.shard_settings(params_path)
    if shards.address:
        return DaskTaskRunner(address=shards.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": shards.workers, "processes": True, "threads_per_worker": 1})


def run_curate_sharded(root: str = ".", params_path: str = "params.yaml") -> dict[str, str]:
    runner = dask_runner(str(Path(root).resolve() / params_path))
    return curate_sharded_flow.with_options(task_runner=runner)(root, params_path)


if __name__ == "__main__":
    if sys.argv[1:2] == ["sharded"]:
        run_curate_sharded()
    else:
        curate_flow()
