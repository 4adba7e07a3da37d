"""The registered ensemble as an MLflow pyfunc: pinned member versions, combined with the fitted weights.

The logged model names each member by version (``models:/pricer-regressor/3``), never by alias, so
``pricer-ensemble@champion`` prices with the very members it was scored with even after a member gets
a new champion. Every member is handed ``member_inputs``: the whole product text alone, which is what
the deal agents have for a scraped deal, and what the weights were fitted on.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models.model import ModelInfo

from pricer.core.schema import texts
from pricer.models.ensemble import EnsembleWeights
from pricer.serving.schema import as_items, log_pyfunc

log = logging.getLogger(__name__)

SPEC_ARTIFACT = "ensemble"
METADATA_WEIGHTS = "ensemble_weights"
METADATA_MEMBERS = "ensemble_members"


def member_inputs(items: pd.DataFrame) -> pd.DataFrame:
    """What each member is asked to price: the longest text of each item, as ``text``."""
    return pd.DataFrame({"text": texts(items)})


def member_estimates(members: Mapping[str, Any], items: pd.DataFrame) -> dict[str, list[float]]:
    """Each loaded member's estimates for ``items`` (a member that fails is left out, and logged)."""
    inputs = member_inputs(items)
    estimates = {}
    for name, model in members.items():
        try:
            estimates[name] = list(np.asarray(model.predict(inputs), dtype=float))
        except Exception:  # one member failing leaves the others to price
            log.exception("ensemble member %s failed; combining without it", name)
    return estimates


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """Loads each pinned member and combines their estimates with the fitted weights."""

    def load_context(self, context: Any) -> None:
        spec = json.loads(Path(context.artifacts[SPEC_ARTIFACT]).read_text(encoding="utf-8"))
        self.weights = EnsembleWeights({k: float(v) for k, v in spec["weights"].items()}, "registered")
        self.member_uris: dict[str, str] = dict(spec["members"])
        self.members = {name: mlflow.pyfunc.load_model(uri) for name, uri in self.member_uris.items()}

    # A DataFrame hint: MLflow infers no schema from it (the signature is explicit).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        items = as_items(model_input)
        estimates = member_estimates(self.members, items)
        return self.weights.combine(estimates) if estimates else np.full(len(items), np.nan)


def log_ensemble_model(weights: EnsembleWeights, members: Mapping[str, str], name: str = "model") -> ModelInfo:
    """Log the ensemble in the active run; ``members`` maps each member to its pinned model URI. The
    weights and members are also in the MLmodel metadata, where a consumer reads them without loading."""
    spec = {"weights": weights.weights, "members": dict(members), "source": weights.source}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ensemble.json"
        path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
        return log_pyfunc(EnsemblePyfunc(), {SPEC_ARTIFACT: str(path)}, name=name,
                          metadata={METADATA_WEIGHTS: weights.weights, METADATA_MEMBERS: dict(members)})
