"""The frontier stage: an OpenAI-compatible endpoint, zero-shot or with retrieval, scored and gated like the rest.

The endpoint is logged as a pyfunc (``pricer.serving.frontier``) that calls it at predict time; with
``k_neighbours > 0`` the pyfunc carries its own index of the training split, so each prompt lists the
k most similar training items with their prices (cosine of the project's sentence embeddings). The
*logged* model is then scored through the stage protocol, registered as ``pricer-frontier`` and gated.
What the run cost (tokens, dollars, retries, cache hits) is logged as ``frontier.*`` metrics.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from pricer.core.files import atomic_write_json
from pricer.core.wandb_settings import WandbSettings
from pricer.frontier.config import FrontierConfig, load_frontier_config, resolve_api_key
from pricer.models.neighbours import NeighbourIndex
from pricer.serving.frontier import CONFIG_ARTIFACT, default_embedder, log_frontier_model
from pricer.stages.protocol import gate, load_split, score_candidate
from pricer.tracking.lineage import TEST_DIGEST_TAG
from pricer.tracking.runs import stage_run

log = logging.getLogger(__name__)


def model_label(config: FrontierConfig) -> str:
    """The model's name in the harness, reports and runs, e.g. ``frontier-gpt-4o-mini-rag5``."""
    return f"frontier-{config.name}" + (f"-rag{config.k_neighbours}" if config.k_neighbours else "")


def run_frontier_eval(
    config: FrontierConfig,
    *,
    data_dir: Path | None = None,
    reports_dir: Path | None = None,
    limit: int | None | str = "config",
    register: bool | None = None,
    embedder: Any = None,
    experiment: str = "pricer",
    tracking_uri: str | None = None,
    tags: dict[str, str] | None = None,
    wandb: WandbSettings | None = None,
) -> dict[str, Any]:
    """Price the test split with ``config``'s endpoint, log everything, register and gate the model."""
    evaluation = config.evaluation
    data_dir = Path(data_dir or evaluation.data_dir)
    reports_dir = Path(reports_dir or evaluation.reports_dir)
    limit = evaluation.limit if limit == "config" else limit
    register = evaluation.register_model if register is None else register
    name = model_label(config)
    resolve_api_key(config)  # fail before any work if the key's variable is unset

    split = load_split(data_dir, "test", limit)  # type: ignore[arg-type]
    index = None
    if config.k_neighbours:
        train = pd.read_parquet(data_dir / "train.parquet", columns=["text", "price"])
        index = NeighbourIndex.build(train, embedder or default_embedder(config.embedding))

    run_tags = {"pricer.frontier.model": config.model, "pricer.frontier.endpoint": config.base_url or "openai",
                TEST_DIGEST_TAG: split.digest, **(tags or {})}
    with stage_run("frontier", {"frontier": config.safe_dict(), "data": {"test_digest": split.digest}},
                   tags=run_tags, run_name=name, wandb=wandb,
                   experiment=experiment, tracking_uri=tracking_uri) as run:
        run_id = run.info.run_id
        info = log_frontier_model(config, index)
        model = mlflow.pyfunc.load_model(info.model_uri)
        pricer = model.unwrap_python_model()
        pricer.run_id = run_id  # its calls are traced into, and costed against, this run
        started = time.perf_counter()
        candidate = score_candidate(name, info.model_uri, split, run_id=run_id, reports_dir=reports_dir,
                                    batch_size=evaluation.batch_size, model=model)
        seconds = time.perf_counter() - started
        if pricer.fatal is not None:  # the harness counted the failed batches unparseable; that is no score
            raise pricer.fatal
        usage = pricer.usage.metrics()
        client = MlflowClient()
        for key, value in {**usage, "frontier.eval_seconds": seconds}.items():
            client.log_metric(run_id, key, value)
        client.log_dict(run_id, config.safe_dict(), f"frontier/{CONFIG_ARTIFACT}")
        _log_cost_lines(client, run_id, config)
    summary: dict[str, Any] = {
        "name": name, "model": config.model, "run_id": run_id, "model_uri": info.model_uri,
        "test_digest": split.digest, "n": len(split.frame), "metrics": candidate.metrics, "usage": usage,
        "registered": None,
    }
    if register and math.isfinite(candidate.mae):
        summary["registered"] = gate(candidate, evaluation.register_as, split, evaluation.gate).summary()
    elif register:
        log.warning("%s gave no parseable answer; nothing registered", name)
    atomic_write_json(reports_dir / "frontier" / f"{name}.json", summary)
    return summary


def _log_cost_lines(client: MlflowClient, run_id: str, config: FrontierConfig) -> None:
    """This run's lines of the cost log, as a run artifact (token counts and costs; no secrets)."""
    if config.cost_log is None or not Path(config.cost_log).exists():
        return
    lines = [line for line in Path(config.cost_log).read_text(encoding="utf-8").splitlines()
             if f'"run_id":"{run_id}"' in line]
    if lines:
        client.log_text(run_id, "\n".join(lines) + "\n", "frontier/cost_log.jsonl")


def endpoint_config(config_path: str | Path, limit: int | None = None) -> FrontierConfig:
    """A frontier config file, with the test items to price overridden when ``limit`` is given."""
    config = load_frontier_config(config_path)
    if limit is not None:
        config = config.model_copy(update={"evaluation": config.evaluation.model_copy(update={"limit": limit})})
    return config


def zero_shot_step(config_path: str, data_dir: str | None = None, limit: int | None = None) -> dict[str, Any]:
    # A retry re-sends only what is not in the response cache: nothing is paid twice.
    return run_frontier_eval(endpoint_config(config_path, limit), data_dir=Path(data_dir) if data_dir else None)
