"""Zero-shot (and retrieval-augmented) evaluation of a frontier model, and its registry entry.

The test split is priced through the shared harness, so the metrics, reports and MLflow
layout are those of every other model. With ``k_neighbours > 0`` each prompt first lists
the k most similar training items with their prices; similarity is the cosine of the
project's sentence embeddings (``pricer.embeddings.get_embedder``; vectors are
L2-normalised, so cosine is a dot product).

The evaluated endpoint is then logged as an MLflow pyfunc (``FrontierPricer``) that calls
the endpoint at predict time: it stores the config (which holds the *name* of the key's
environment variable, never the key) and, for retrieval, the training items and their
vectors. It is registered as ``pricer-frontier`` and goes through the same promotion gate
as every other model family.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from pricer.config import validate
from pricer.llm.frontier import FrontierClient, FrontierConfig, resolve_api_key

log = logging.getLogger(__name__)

CONFIG_ARTIFACT = "frontier_config.json"


def model_label(config: FrontierConfig) -> str:
    """The model's name in the harness, reports and runs, e.g. ``frontier-gpt-4o-mini-rag5``."""
    return f"frontier-{config.name}" + (f"-rag{config.k_neighbours}" if config.k_neighbours else "")


def default_embedder() -> Any:
    from pricer.embeddings import get_embedder

    return get_embedder()


# --------------------------------------------------------------------------- retrieval


@dataclass
class NeighbourIndex:
    """Training items, their prices and their unit vectors: the k nearest by dot product."""

    texts: list[str]
    prices: np.ndarray
    vectors: np.ndarray  # (n, d) float32, rows L2-normalised

    @classmethod
    def build(cls, items: pd.DataFrame, embedder: Any) -> NeighbourIndex:
        texts = items["text"].astype(str).tolist()
        vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
        if vectors.shape[0] != len(texts):
            raise ValueError(f"the embedder returned {vectors.shape[0]} vectors for {len(texts)} texts")
        return cls(texts, items["price"].to_numpy(dtype=float), vectors)

    def neighbours(self, texts: Sequence[str], k: int, embedder: Any) -> list[list[tuple[str, float]]]:
        if k <= 0 or not len(self.texts):
            return [[] for _ in texts]
        queries = np.asarray(embedder.embed(list(texts)), dtype=np.float32)
        scores = queries @ self.vectors.T
        found: list[list[tuple[str, float]]] = []
        for text, row in zip(texts, scores, strict=True):
            take = min(len(self.texts), k + 1)
            top = np.argpartition(-row, take - 1)[:take]
            top = top[np.argsort(-row[top], kind="stable")]
            # Never show the model the very item it is asked about (it may be in the index).
            chosen = [int(i) for i in top if self.texts[int(i)] != text][:k]
            found.append([(self.texts[i], float(self.prices[i])) for i in chosen])
        return found

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        items = pd.DataFrame({"text": self.texts, "price": self.prices})
        items.to_parquet(folder / "items.parquet", index=False)
        np.save(folder / "vectors.npy", self.vectors)
        return folder

    @classmethod
    def load(cls, folder: Path) -> NeighbourIndex:
        items = pd.read_parquet(Path(folder) / "items.parquet")
        vectors = np.load(Path(folder) / "vectors.npy")
        return cls(items["text"].tolist(), items["price"].to_numpy(dtype=float), vectors)


def make_predictor(
    client: FrontierClient, index: NeighbourIndex | None = None, embedder: Any = None
) -> Callable[[Sequence[str]], list[float | None]]:
    """list[str] -> list[price | None], the harness's predictor, with retrieval when configured."""
    k = client.config.k_neighbours

    def predict(texts: Sequence[str]) -> list[float | None]:
        neighbours = index.neighbours(texts, k, embedder) if index is not None and k else None
        return client.price_texts(list(texts), neighbours)

    return predict


# --------------------------------------------------------------------------- the registered model


class FrontierPricer(mlflow.pyfunc.PythonModel):
    """An API model reference: config (no secret) + optional retrieval index; calls the endpoint."""

    def load_context(self, context: Any) -> None:
        raw = json.loads(Path(context.artifacts["config"]).read_text(encoding="utf-8"))
        self.config = validate(FrontierConfig, raw, CONFIG_ARTIFACT)
        folder = context.artifacts.get("neighbours")
        self.index = NeighbourIndex.load(Path(folder)) if folder else None
        self._embedder = None

    # A DataFrame hint: MLflow infers no schema from it (the signature is explicit) and does not warn.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        from pricer.serving.pyfunc import as_items

        texts = as_items(model_input)["text"].astype(str).tolist()
        # A fresh client per call reads the key from the environment now, so rotating it needs no redeploy.
        client = FrontierClient(self.config)
        if self.index is not None and self._embedder is None:
            self._embedder = default_embedder()
        prices = make_predictor(client, self.index, self._embedder)(texts)
        return np.array([np.nan if price is None else price for price in prices], dtype=float)


def log_frontier_model(
    config: FrontierConfig, index: NeighbourIndex | None, example: pd.DataFrame, name: str = "model"
) -> Any:
    """Log the endpoint as a pyfunc in the active run; its input example is served from the cache."""
    from pricer.serving.pyfunc import SIGNATURE

    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / CONFIG_ARTIFACT
        config_path.write_text(json.dumps(config.safe_dict(), indent=2), encoding="utf-8")
        artifacts = {"config": str(config_path)}
        if index is not None:
            artifacts["neighbours"] = str(index.save(Path(tmp) / "neighbours"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=FrontierPricer(),
            artifacts=artifacts,
            signature=SIGNATURE,
            input_example=example[["text"]].head(2).reset_index(drop=True),
            # Stated, not inferred: inference re-imports the model in a subprocess (~6 s on 2 cores).
            pip_requirements=pip_requirements(),
        )


def pip_requirements() -> list[str]:
    """What the pyfunc needs at predict time, pinned to the versions that logged it."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow", "openai", "pydantic", "pandas", "numpy", "pyarrow", "pyyaml"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


# --------------------------------------------------------------------------- the evaluation


def test_subset(data_dir: Path, limit: int | None) -> tuple[pd.DataFrame, str]:
    """The test items to price and the digest the registry compares (the subset, not just the file)."""
    from pricer.tracking.runs import file_digest

    path = Path(data_dir) / "test.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `pricer curate` first")
    test = pd.read_parquet(path)
    digest = file_digest(path)
    if limit is not None and limit < len(test):
        test = test.head(limit).reset_index(drop=True)
        digest = f"{digest}:head{limit}"
    return test, digest


def frontier_rescorer(test: pd.DataFrame) -> Callable[[str], float]:
    """Scores a champion evaluated on another subset on this one (cached answers cost nothing)."""
    from pricer.evaluation.metrics import compute_metrics

    def rescore(model_uri: str) -> float:
        model = mlflow.pyfunc.load_model(model_uri)
        estimates = model.predict(test[["text"]])
        return float(compute_metrics(test["price"].tolist(), list(np.asarray(estimates, dtype=float)))["mae"])

    return rescore


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
) -> dict[str, Any]:
    """Price the test split with ``config``'s endpoint, log everything, register and gate the model."""
    from pricer.evaluation.harness import evaluate_model
    from pricer.tracking.registry import promote_if_better, register_candidate
    from pricer.tracking.runs import stage_run

    evaluation = config.evaluation
    data_dir = Path(data_dir or evaluation.data_dir)
    reports_dir = Path(reports_dir or evaluation.reports_dir)
    limit = evaluation.limit if limit == "config" else limit
    register = evaluation.register_model if register is None else register
    name = model_label(config)
    resolve_api_key(config)  # fail before any work if the key's variable is unset

    test, digest = test_subset(data_dir, limit)  # type: ignore[arg-type]
    index = None
    if config.k_neighbours:
        embedder = embedder or default_embedder()
        train = pd.read_parquet(data_dir / "train.parquet", columns=["text", "price"])
        index = NeighbourIndex.build(train, embedder)

    run_tags = {"pricer.frontier.model": config.model,
                "pricer.frontier.endpoint": config.base_url or "openai",
                "pricer.test_digest": digest, **(tags or {})}
    with stage_run("frontier", {"frontier": config.safe_dict()}, tags=run_tags, run_name=name,
                   experiment=experiment, tracking_uri=tracking_uri) as run:
        run_id = run.info.run_id
        client = FrontierClient(config, run_id=run_id)
        predictor = make_predictor(client, index, embedder)
        started = time.perf_counter()
        result = evaluate_model(name, predictor, test, reports_dir=reports_dir, run_id=run_id,
                                test_digest=digest, batch_size=evaluation.batch_size)
        seconds = time.perf_counter() - started
        if client.fatal is not None:  # the harness counted the failed batch unparseable; that is no score
            raise client.fatal
        usage = client.totals.metrics()
        mlflow_client = MlflowClient()
        for key, value in usage.items():
            mlflow_client.log_metric(run_id, key, value)
        mlflow_client.log_metric(run_id, "frontier.eval_seconds", seconds)
        mlflow_client.log_dict(run_id, config.safe_dict(), f"frontier/{CONFIG_ARTIFACT}")
        _log_cost_lines(mlflow_client, run_id, config)
        info = log_frontier_model(config, index, test)
    summary: dict[str, Any] = {
        "name": name, "model": config.model, "run_id": run_id, "model_uri": info.model_uri,
        "test_digest": digest, "n": len(test), "metrics": result.metrics, "usage": usage, "registered": None,
    }
    mae = float(result.metrics["mae"])
    if register and math.isfinite(mae):
        metrics = {key: float(result.metrics[key]) for key in ("rmsle", "hit_rate", "r2")
                   if math.isfinite(float(result.metrics[key]))}
        version = register_candidate(info.model_uri, evaluation.register_as, mae=mae, test_digest=digest,
                                     metrics=metrics)
        decision = promote_if_better(evaluation.register_as, version.version,
                                     rescore_champion=frontier_rescorer(test))
        summary["registered"] = {"name": evaluation.register_as, "version": str(version.version),
                                 "decision": decision.decision, "reason": decision.reason}
        log.info("%s v%s: %s (%s)", evaluation.register_as, version.version, decision.decision,
                 decision.reason)
    elif register:
        log.warning("%s gave no parseable answer; nothing registered", name)
    out = reports_dir / "frontier" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_safe(summary), indent=2) + "\n", encoding="utf-8")
    return summary


def _log_cost_lines(client: MlflowClient, run_id: str, config: FrontierConfig) -> None:
    """This run's lines of the cost log, as a run artifact (token counts and costs; no secrets)."""
    if config.cost_log is None or not Path(config.cost_log).exists():
        return
    lines = [line for line in Path(config.cost_log).read_text(encoding="utf-8").splitlines()
             if f'"run_id":"{run_id}"' in line]
    if lines:
        client.log_text(run_id, "\n".join(lines) + "\n", "frontier/cost_log.jsonl")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value

