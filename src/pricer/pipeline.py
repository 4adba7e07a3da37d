"""What the pipeline flow needs beyond the DVC stages: the frontier step when one is configured,
the fingerprints that let Prefect cache the registry-driven steps, and the champions table.

DVC skips a file stage whose inputs did not change; the frontier evaluation and the ensemble
read the model registry instead of files, so they are cached by Prefect on a fingerprint of
everything they read: their config, the curated splits, and the exact model version (and the
run that logged it) behind each member's ``@champion``. Same fingerprint, same result.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from pricer.agents.config import AgentsConfig
from pricer.tracking.registry import CHAMPION, TAG_MAE
from pricer.tracking.runs import file_digest

REGISTERED_MODELS = ("pricer-regressor", "pricer-specialist", "pricer-frontier", "pricer-ensemble")


def champion_identity(name: str, client: MlflowClient | None = None) -> str | None:
    """``name/version/run_id`` of the current champion, or None. The run id tells two stores apart
    whose version numbers happen to match (a wiped and rebuilt ``mlruns/``)."""
    client = client or MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # noqa: BLE001 - no such model or alias: no champion
        return None
    return f"{name}/{version.version}/{version.run_id}"


def store_identity() -> str:
    """Which MLflow store this is: its URI and when it was created (its Default experiment's creation time).
    A fresh store at the same path (a new clone, a wiped ``mlruns/``) must not reuse what the old one cached."""
    import mlflow

    return f"{mlflow.get_tracking_uri()}#{MlflowClient().get_experiment('0').creation_time}"


def _fingerprint(parts: dict[str, Any]) -> str:
    parts = {**parts, "store": store_identity()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _split_digests(data_dir: Path) -> dict[str, str | None]:
    return {split: file_digest(path) if (path := data_dir / f"{split}.parquet").exists() else None
            for split in ("train", "val", "test")}


def frontier_config_path(config: AgentsConfig) -> Path | None:
    section = config.agents.frontier
    return section.config if section is not None else None


def frontier_skip_reason(config: AgentsConfig) -> str | None:
    """Why the pipeline's frontier step does not run (no config, or its key variable unset), or None."""
    from pricer.llm.frontier import FrontierError, load_frontier_config, resolve_api_key

    path = frontier_config_path(config)
    if path is None:
        return "no frontier config (agents.frontier.config is null)"
    try:
        resolve_api_key(load_frontier_config(path))
    except FrontierError as error:
        return str(error).splitlines()[0]
    return None


def _frontier_setup(config: AgentsConfig) -> dict[str, str | None]:
    """The frontier config file's digest and why it would be skipped: what decides whether it prices."""
    path = frontier_config_path(config)
    return {"config": file_digest(path) if path is not None and path.exists() else None,
            "skip": frontier_skip_reason(config)}


def frontier_fingerprint(config: AgentsConfig) -> str:
    return _fingerprint({**_frontier_setup(config), "splits": _split_digests(Path(config.ensemble.data_dir))})


def ensemble_fingerprint(config: AgentsConfig) -> str:
    settings = config.ensemble
    return _fingerprint({
        "ensemble": settings.model_dump(mode="json"),
        "frontier": _frontier_setup(config),  # a configured frontier agent prices without a registered model
        "members": {member: champion_identity(name) for member, name in settings.members.items()},
        "splits": _split_digests(Path(settings.data_dir)),
    })


def champions(names: tuple[str, ...] = REGISTERED_MODELS) -> list[dict[str, Any]]:
    """One row per registered model: its champion version, the run behind it and its test MAE."""
    client = MlflowClient()
    rows = []
    for name in names:
        identity = champion_identity(name, client)
        if identity is None:
            rows.append({"model": name, "champion": "none registered", "mae": None, "run_id": None})
            continue
        _, version, run_id = identity.split("/")
        mae = client.get_model_version(name, version).tags.get(TAG_MAE)
        rows.append({"model": name, "champion": f"v{version}", "mae": float(mae) if mae else None,
                     "run_id": run_id})
    return rows
