"""A traditional price model as an MLflow pyfunc: the fitted estimator as one joblib artifact."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
from mlflow.models.model import ModelInfo

from pricer.serving.schema import as_items, log_pyfunc


class PriceModelPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the fitted estimator from its artifact, so the pickle here holds no weights."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = joblib.load(context.artifacts["estimator"])

    # No type hints here: MLflow would turn them into a second, conflicting input schema.
    def predict(self, context, model_input, params=None):
        return np.asarray(self.model.predict(as_items(model_input)), dtype=float)


def log_price_model(estimator: Any, name: str = "model") -> ModelInfo:
    """Log a fitted price model in the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "estimator.joblib"
        joblib.dump(estimator, path)
        return log_pyfunc(PriceModelPyfunc(), {"estimator": str(path)}, name=name)
