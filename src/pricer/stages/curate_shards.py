"""Sharded curation as the Prefect flow runs it (``flows.curate.curate_sharded_flow``): plan, curate each
shard (on a dask worker), merge under one MLflow run. Inputs and outputs are plain strings and dicts, so
tasks pass paths between machines, not data; the work itself is ``pricer.data.shards``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pricer.core.config import validate
from pricer.data.config import CurateConfig, ShardsConfig
from pricer.data.shards import Shard, curate_shard, merge_shards, plan_shards
from pricer.data.sources import check_source
from pricer.stages.curate import log_curation
from pricer.stages.sections import curate_sections
from pricer.tracking.runs import stage_run

ADDRESS_ENV = "PRICER_DASK_ADDRESS"


def _config(params_path: str | Path) -> CurateConfig:
    return curate_sections(params_path)[0]


def shard_settings(params_path: str | Path) -> ShardsConfig:
    """``curate.shards``, with the scheduler's address from PRICER_DASK_ADDRESS when that is set (and
    validated the same way: a bad address fails here, naming the field)."""
    shards = _config(params_path).shards
    if address := os.environ.get(ADDRESS_ENV):
        return validate(ShardsConfig, {**shards.model_dump(mode="json"), "address": address},
                        ADDRESS_ENV, "curate.shards")
    return shards


def plan_curate_shards(params_path: str | Path, root: str | Path) -> list[dict[str, Any]]:
    config = _config(params_path)
    check_source(config.source)
    return [shard.to_dict() for shard in plan_shards(config, Path(root))]


def run_curate_shard(params_path: str | Path, root: str | Path, shard: dict[str, Any]) -> str:
    return str(curate_shard(_config(params_path), Path(root), Shard(**shard)))


def merge_curate_shards(params_path: str | Path, root: str | Path, folders: list[str]) -> dict[str, Any]:
    """The shards merged into the curate stage's outputs, recorded as the curate stage's run."""
    config, tracking = curate_sections(params_path)
    root = Path(root)
    with stage_run("curate", {"curate": config.model_dump(mode="json")}, tags={"pricer.shards": str(len(folders))},
                   experiment=tracking.experiment, tracking_uri=tracking.tracking_uri, wandb=tracking.wandb):
        summary = merge_shards(config, root, [Path(folder) for folder in folders])
        log_curation(config, root, summary)
    return summary
