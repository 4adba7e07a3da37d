"""Prefect flow: the curation stage through DVC, its outputs' hashes and a report artifact."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from pricer.stages import dvc_runner
from pricer.stages.curate import output_digests
from pricer.stages.params import load_params


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


if __name__ == "__main__":
    curate_flow()
