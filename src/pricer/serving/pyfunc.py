"""Price models as MLflow pyfunc models: what the registry holds and every consumer loads.

The input is raw item text: a DataFrame with a ``text`` column (``full_text``, ``category`` and
``details`` optional), a list of strings, or one string. The output is one price in USD
per item.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

INPUT_SCHEMA = Schema(
    [
        ColSpec("string", "text"),
        ColSpec("string", "full_text", required=False),
        ColSpec("string", "category", required=False),
        ColSpec("string", "details", required=False),
    ]
)
SIGNATURE = ModelSignature(inputs=INPUT_SCHEMA, outputs=Schema([ColSpec("double", "price")]))


def as_items(model_input: Any) -> pd.DataFrame:
    """Whatever a caller hands in -> the DataFrame the models read."""
    if isinstance(model_input, str):
        model_input = [model_input]
    if isinstance(model_input, pd.Series):
        model_input = model_input.to_frame("text")
    if not isinstance(model_input, pd.DataFrame):
        model_input = pd.DataFrame({"text": list(model_input)})
    if "text" not in model_input.columns:
        raise ValueError(f"price models need a 'text' column, got {list(model_input.columns)}")
    return model_input


def model_inputs(items: pd.DataFrame) -> pd.DataFrame:
    """The columns of ``items`` that a price model reads (its signature's): a caller that picked
    ``text`` alone would hide the curated ``full_text`` and ``details`` from it."""
    return items[[column for column in INPUT_SCHEMA.input_names() if column in items.columns]]


class PriceModelPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the fitted estimator from its artifact, so the pickle here holds no weights."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = joblib.load(context.artifacts["estimator"])

    # No type hints here: MLflow would turn them into a second, conflicting input schema.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        return np.asarray(self.model.predict(as_items(model_input)), dtype=float)


def log_price_model(estimator: Any, example: pd.DataFrame, name: str = "model") -> ModelInfo:
    """Log a fitted price model with its signature and an input example, in the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "estimator.joblib"
        joblib.dump(estimator, path)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=PriceModelPyfunc(),
            artifacts={"estimator": str(path)},
            signature=SIGNATURE,
            input_example=model_inputs(example).head(2).reset_index(drop=True),
        )
