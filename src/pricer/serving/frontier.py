"""A frontier endpoint as an MLflow pyfunc: its config and, for retrieval, its own neighbour index.

The logged model stores the config (which holds the *name* of the key's environment variable, never
the key) and, when ``k_neighbours > 0``, the training items, their prices and their vectors. At
predict time it calls the endpoint through ``FrontierClient`` with the k most similar of those items
in each prompt, so the retrieval it was scored with travels with it. The key is read from the
environment at predict time, so rotating it needs no redeploy.

``usage`` sums what every predict call cost, and ``fatal`` holds a refused key; a stage reads both
after scoring the loaded model.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models.model import ModelInfo

from pricer.core.config import validate
from pricer.core.embedding import EmbeddingConfig
from pricer.frontier.client import FrontierClient
from pricer.frontier.config import FrontierConfig, FrontierError
from pricer.frontier.usage import UsageTotals
from pricer.models.neighbours import NeighbourIndex
from pricer.serving.schema import as_items, log_pyfunc

CONFIG_ARTIFACT = "frontier_config.json"


def default_embedder(embedding: EmbeddingConfig | None = None) -> Any:
    from pricer.models.embeddings import embedder_for

    return embedder_for(embedding)


def price_with_retrieval(client: FrontierClient, texts: Sequence[str], index: NeighbourIndex | None,
                         embedder: Any) -> list[float | None]:
    """Each text priced by the endpoint, with its k nearest indexed items (and their prices) when configured."""
    k = client.config.k_neighbours
    neighbours = index.neighbours(list(texts), k, embedder) if index is not None and k else None
    return client.price_texts(list(texts), neighbours)


class FrontierPricer(mlflow.pyfunc.PythonModel):
    """An API model reference: config (no secret) + optional retrieval index; calls the endpoint."""

    def load_context(self, context: Any) -> None:
        raw = json.loads(Path(context.artifacts["config"]).read_text(encoding="utf-8"))
        self.config = validate(FrontierConfig, raw, CONFIG_ARTIFACT)
        folder = context.artifacts.get("neighbours")
        self.index = NeighbourIndex.load(Path(folder)) if folder else None
        self._embedder = None
        self.usage = UsageTotals()
        self.run_id: str | None = None  # where the calls are traced, when a stage sets it
        self.fatal: FrontierError | None = None

    # A DataFrame hint: MLflow infers no schema from it (the signature is explicit) and does not warn.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        texts = as_items(model_input)["text"].astype(str).tolist()
        client = FrontierClient(self.config, run_id=self.run_id)
        if self.index is not None and self._embedder is None:
            self._embedder = default_embedder(self.config.embedding)
        try:
            prices = price_with_retrieval(client, texts, self.index, self._embedder)
        finally:
            self.usage.merge(client.totals)
            self.fatal = self.fatal or client.fatal
        return np.array([np.nan if price is None else price for price in prices], dtype=float)


def log_frontier_model(config: FrontierConfig, index: NeighbourIndex | None, name: str = "model") -> ModelInfo:
    """Log the endpoint as a pyfunc in the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / CONFIG_ARTIFACT
        config_path.write_text(json.dumps(config.safe_dict(), indent=2), encoding="utf-8")
        artifacts = {"config": str(config_path)}
        if index is not None:
            artifacts["neighbours"] = str(index.save(Path(tmp) / "neighbours"))
        return log_pyfunc(FrontierPricer(), artifacts, name=name)
