"""Model registry: register candidates, find and load champions.

Every model family has one registered model (``pricer-regressor``, ``pricer-specialist``,
``pricer-frontier``, ``pricer-ensemble``). A freshly evaluated model becomes a version tagged
with its test MAE and the digest of the rows it was scored on, and takes the ``@challenger``
alias; the promotion gate (``pricer.tracking.gate``) decides whether it becomes ``@champion``.

Registering is idempotent because Prefect retries tasks: re-registering the same logged model
reuses its version (and refreshes its tags if the scores changed), and every write is checked
against what is stored first, so a retry leaves no trace. Writes that read first (does this model
have a version? who is champion?) run under ``registry_lock``, so two processes registering or
promoting at once cannot both create a version or both move an alias.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import mlflow.pyfunc
from filelock import FileLock
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from pricer.core.errors import ModelNotFound
from pricer.tracking.lineage import TEST_DIGEST_TAG
from pricer.tracking.scores import ItemScores

MODEL_NAMES = ("pricer-regressor", "pricer-specialist", "pricer-frontier", "pricer-ensemble")
CHAMPION = "champion"
CHALLENGER = "challenger"

TAG_PREFIX = "pricer."
TAG_MAE = "pricer.mae"
TAG_TEST_DIGEST = TEST_DIGEST_TAG
TAG_SCORES_RUN = "pricer.scores_run"  # the run that holds the version's per-item scores
# Tag values must be strings; "none" marks a value the gate did not have (no champion yet).
NONE_TAG = "none"

@dataclass(frozen=True)
class _ResolvedSource:
    """Where a model URI points, in the terms the registry stores on a version."""

    source: str
    run_id: str | None
    model_id: str | None


# --------------------------------------------------------------------------- helpers


def client_or_default(client: MlflowClient | None) -> MlflowClient:
    return client if client is not None else MlflowClient()


def is_missing(exc: MlflowException) -> bool:
    return exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def format_float(value: float) -> str:
    # repr round-trips exactly, so a re-run compares equal to what it wrote before.
    return repr(float(value))


def checked_mae(value: float, what: str) -> float:
    mae = float(value)
    if not math.isfinite(mae) or mae < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of dollars, got {value!r}")
    return mae


def _local_store(uri: str) -> Path | None:
    """The file a SQLite or file registry lives in (the folder, for a file store); None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(unquote(parts.path))
    return None


@contextmanager
def registry_lock(client: MlflowClient, name: str, timeout_s: float = 600.0) -> Iterator[None]:
    """Serialise read-then-write steps on ``name`` across processes: MLflow's store offers no transaction.

    A file lock beside a local store (the processes share its disk). A tracking server is a single
    writer per request only, so there the pipeline's one promotion per model family at a time (its Prefect
    concurrency limit) is what keeps writes apart; the compare-and-set in the gate narrows the rest.
    """
    store = _local_store(client._registry_uri)
    if store is None:
        yield
        return
    lock_file = store.parent / f".{store.name}.{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_file, timeout=timeout_s):
        yield


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


# --------------------------------------------------------------------------- resolving URIs


def _logged_model_in_run(client: MlflowClient, run_id: str, artifact_path: str) -> str | None:
    """The id of the MLflow 3 logged model named ``artifact_path`` that ``run_id`` produced, if any."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    candidates: list[tuple[int, str]] = []
    for output in outputs:
        logged = client.get_logged_model(output.model_id)
        if logged.name == artifact_path:
            candidates.append((output.step, logged.model_id))
    # Same rule as mlflow.register_model: several models under one name -> the latest step.
    return max(candidates)[1] if candidates else None


def _resolve_runs_uri(client: MlflowClient, model_uri: str) -> _ResolvedSource:
    rest = model_uri.removeprefix("runs:/").strip("/")
    run_id, _, artifact_path = rest.partition("/")
    if not run_id or not artifact_path:
        raise ValueError(f"expected runs:/<run_id>/<artifact_path>, got {model_uri!r}")
    # MLflow 3 serves runs:/<id>/model from the logged model's own store; resolving to that
    # model makes runs:/ and models:/m-... URIs of one model land on the same version.
    if (model_id := _logged_model_in_run(client, run_id, artifact_path)) is not None:
        return _ResolvedSource(f"models:/{model_id}", run_id, model_id)
    # A model saved as plain run artifacts (MLflow 2 style) is registered from the run's store.
    listed = {info.path for info in client.list_artifacts(run_id, artifact_path)}
    if f"{artifact_path}/MLmodel" not in listed:
        raise ValueError(f"run {run_id} has no model at {artifact_path!r}")
    root = client.get_run(run_id).info.artifact_uri.rstrip("/")
    return _ResolvedSource(f"{root}/{artifact_path}", run_id, None)


def _resolve_models_uri(client: MlflowClient, model_uri: str) -> _ResolvedSource:
    ref = model_uri.removeprefix("models:/").strip("/")
    if "@" in ref or "/" in ref:
        # A registered version (models:/name/3 or models:/name@alias): register what it points
        # at, so that copying a version into another model keeps its lineage.
        if "@" in ref:
            reg_name, _, alias = ref.partition("@")
            version = client.get_model_version_by_alias(reg_name, alias)
        else:
            reg_name, _, number = ref.rpartition("/")
            version = client.get_model_version(reg_name, number)
        if version.model_id:
            return _ResolvedSource(f"models:/{version.model_id}", version.run_id, version.model_id)
        return _ResolvedSource(version.source, version.run_id, None)
    logged = client.get_logged_model(ref)
    return _ResolvedSource(f"models:/{logged.model_id}", logged.source_run_id, logged.model_id)


def _resolve(client: MlflowClient, model_uri: str) -> _ResolvedSource:
    if model_uri.startswith("runs:/"):
        return _resolve_runs_uri(client, model_uri)
    if model_uri.startswith("models:/"):
        return _resolve_models_uri(client, model_uri)
    # Any other URI (a path, s3://...) is stored as given; MLflow resolves it at load time.
    return _ResolvedSource(model_uri, None, None)


# --------------------------------------------------------------------------- registration


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def _existing_version(client: MlflowClient, name: str, resolved: _ResolvedSource) -> ModelVersion | None:
    """The version of ``name`` already made from this model, if a previous attempt made one."""
    matches = [
        version
        for version in client.search_model_versions(f"name = '{name}'")
        if (resolved.model_id and version.model_id == resolved.model_id) or version.source == resolved.source
    ]
    if not matches:
        return None
    # Should there be several (registered before this module existed), the oldest is canonical.
    return min(matches, key=lambda version: int(version.version))


def _candidate_tags(mae: float, test_digest: str, metrics: Mapping[str, float] | None) -> dict[str, str]:
    tags = {TAG_MAE: format_float(mae), TAG_TEST_DIGEST: test_digest}
    for key, value in (metrics or {}).items():
        tag = f"{TAG_PREFIX}{key}"
        if tag == TAG_TEST_DIGEST or tag.startswith(f"{TAG_PREFIX}gate."):
            raise ValueError(f"metric name {key!r} would overwrite the registry's own tag {tag!r}")
        formatted = format_float(value)
        if tag in tags and tags[tag] != formatted:
            raise ValueError(f"metrics[{key!r}] = {value!r} disagrees with mae = {mae!r}")
        tags[tag] = formatted
    return tags


def set_tags_if_changed(client: MlflowClient, name: str, version: str, wanted: Mapping[str, str]) -> None:
    current = client.get_model_version(name, version).tags
    for key, value in wanted.items():
        if current.get(key) != value:
            client.set_model_version_tag(name, version, key, value)


def alias_versions(client: MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def _set_alias_if_changed(client: MlflowClient, name: str, alias: str, version: str) -> None:
    if alias_versions(client, name).get(alias) != version:
        client.set_registered_model_alias(name, alias, version)


def register_candidate(
    model_uri: str,
    name: str,
    *,
    mae: float,
    test_digest: str,
    scores_run_id: str,
    metrics: dict[str, float] | None = None,
    client: MlflowClient | None = None,
) -> ModelVersion:
    """Register a logged model as a version of ``name`` and make it ``@challenger``.

    ``model_uri`` may be ``runs:/<run_id>/<path>``, ``models:/<model_id>`` (an MLflow 3 logged
    model), a registered ``models:/<name>/<version>`` or ``@alias``, or a plain artifact URI.
    ``scores_run_id`` is the run that stored the model's per-item scores on ``test_digest``'s rows
    (``ItemScores.log``), what the gate compares. The version is tagged ``pricer.mae``,
    ``pricer.test_digest``, ``pricer.scores_run`` and ``pricer.<metric>`` for each extra metric.
    Registering the same model again reuses its version (and refreshes its tags if the scores
    changed), so a retried task, or two processes at once, never mint a second version.
    """
    mlflow_client = client_or_default(client)
    mae = checked_mae(mae, "mae")
    if not test_digest:
        raise ValueError("test_digest must name the test split the MAE was measured on")
    if ItemScores.load(scores_run_id, test_digest, mlflow_client) is None:
        raise ValueError(f"run {scores_run_id!r} holds no per-item scores on test rows {test_digest}: "
                         "score the model with the harness (or ItemScores.log) first")
    tags = {**_candidate_tags(mae, test_digest, metrics), TAG_SCORES_RUN: scores_run_id}
    resolved = _resolve(mlflow_client, model_uri)
    _ensure_registered_model(mlflow_client, name)

    with registry_lock(mlflow_client, name):
        existing = _existing_version(mlflow_client, name, resolved)
        if existing is None:
            created = mlflow_client.create_model_version(
                name, resolved.source, run_id=resolved.run_id, tags=tags, model_id=resolved.model_id
            )
            version = str(created.version)
        else:
            version = str(existing.version)
            set_tags_if_changed(mlflow_client, name, version, tags)

        # The champion is not a candidate against itself; leave a re-registered champion alone.
        if alias_versions(mlflow_client, name).get(CHAMPION) != version:
            _set_alias_if_changed(mlflow_client, name, CHALLENGER, version)
    return mlflow_client.get_model_version(name, version)


# --------------------------------------------------------------------------- consumers


def champion_uri(name: str, *, client: MlflowClient | None = None) -> str | None:
    """``models:/<name>/<version>`` of the current champion, or None if there is none.

    The URI is pinned to a version rather than ``@champion`` so that a caller which logs or
    loads it gets the model that was champion when it asked, even if the alias moves after.
    """
    mlflow_client = client_or_default(client)
    try:
        aliases = alias_versions(mlflow_client, name)
    except MlflowException as exc:
        if is_missing(exc):
            return None
        raise
    champion_version = aliases.get(CHAMPION)
    return None if champion_version is None else version_uri(name, champion_version)


def champion_card(name: str, *, client: MlflowClient | None = None) -> dict[str, Any] | None:
    """What a consumer may want to know of ``name``'s champion without loading it: its pinned URI, the run
    that logged it, its test metrics (the ``pricer.<metric>`` tags, as numbers), the digest of the rows they
    were measured on and the gate's record (``pricer.gate.*``). None when it has no champion."""
    mlflow_client = client_or_default(client)
    uri = champion_uri(name, client=mlflow_client)
    if uri is None:
        return None
    version = mlflow_client.get_model_version(name, uri.rsplit("/", 1)[1])
    metrics: dict[str, float] = {}
    gate: dict[str, str] = {}
    for key, value in version.tags.items():
        if key.startswith(f"{TAG_PREFIX}gate."):
            gate[key.removeprefix(f"{TAG_PREFIX}gate.")] = value
        elif key.startswith(TAG_PREFIX) and key not in (TAG_TEST_DIGEST, TAG_SCORES_RUN):
            try:
                metrics[key.removeprefix(TAG_PREFIX)] = float(value)
            except ValueError:
                continue  # a non-numeric tag of another writer is not a metric
    return {"name": name, "version": str(version.version), "uri": uri, "run_id": version.run_id,
            "metrics": metrics, "test_digest": version.tags.get(TAG_TEST_DIGEST), "gate": gate}


def load_champion(name: str) -> Any:
    """The current champion of ``name`` as a pyfunc model (what the agents call ``predict`` on)."""
    uri = champion_uri(name)
    if uri is None:
        raise ModelNotFound(f"{name} has no @{CHAMPION}: train and register one first")
    return mlflow.pyfunc.load_model(uri)
