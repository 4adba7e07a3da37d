"""What every registered model takes and gives, and the one environment it needs.

Every Pricer pyfunc (regressor, specialist, frontier, ensemble) has the same signature: a DataFrame
with a ``text`` column and, optionally, ``full_text``, ``category``, ``details`` and ``prompt``
(``pricer.core.schema.MODEL_INPUTS``), a list of texts, or one text; out comes one price in USD per
row (NaN where a model had no answer). Each reads the columns it uses and ignores the others.
"""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from pricer.core.schema import MODEL_INPUTS

INPUT_SCHEMA = Schema([ColSpec("string", name, required=name == "text") for name in MODEL_INPUTS])
SIGNATURE = ModelSignature(inputs=INPUT_SCHEMA, outputs=Schema([ColSpec("double", "price")]))
# What the project's pyfuncs import at predict time (import names; pinned to their installed versions).
SERVING_IMPORTS = ("mlflow", "pandas", "numpy", "pyarrow", "scipy", "sklearn", "xgboost", "joblib", "torch",
                   "transformers", "peft", "tokenizers", "sentence_transformers", "openai", "aiolimiter", "tenacity",
                   "pydantic", "yaml")


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
    return model_input.reset_index(drop=True)


def pip_requirements() -> list[str]:
    """The serving environment, pinned to what logged the model; stated, never inferred (inference
    re-imports the model in a subprocess, ~6 s each on 2 cores)."""
    distributions = packages_distributions()
    pins = []
    for name in SERVING_IMPORTS:
        for dist in distributions.get(name, [name]):
            try:
                pins.append(f"{dist}=={version(dist).split('+')[0]}")  # no local label: "+cpu" is no release
            except PackageNotFoundError:
                continue
    return sorted(set(pins))


def log_pyfunc(python_model: mlflow.pyfunc.PythonModel, artifacts: dict[str, str], *,
               metadata: dict[str, Any] | None = None, name: str = "model") -> ModelInfo:
    """Log a Pricer pyfunc in the active run: the one signature, the one environment.

    No input example: MLflow would load the model and predict on it at log time (an API model would
    pay for it), and the stage protocol loads every logged model and scores it on the test split anyway.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*An input example was not provided")  # MLflow colours it
        return mlflow.pyfunc.log_model(name=name, python_model=python_model, artifacts=artifacts,
                                       signature=SIGNATURE, metadata=metadata, pip_requirements=pip_requirements())
