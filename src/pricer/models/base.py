"""What every traditional price model is: a typed spec (its hyperparameters) and the model it builds.

A model kind is a pair. Its spec is a pydantic model with a ``kind`` literal and typed, described
hyperparameters: params.yaml lists specs, so a misspelt or mistyped setting fails at load and names
the field, before anything is trained. Its model class takes the spec and nothing else, so each
hyperparameter is declared once.

Models fit on a frame with ``text`` and ``price`` and predict dollars (>= 0) for a frame with ``text``
(other columns help where present). Learned models fit log1p(price) and answer in dollars through
``LogPriceModel``: prices are skewed ($1 to $999, median ~$30), and the back-transformed log
prediction is a conditional median, which is what mean absolute error rewards.

XGBoost runs single-threaded on purpose: with a core busy elsewhere, its OpenMP threads waited on
each other and two threads fitted 30-80x slower than one on the project's 2-core machines.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from xgboost import XGBRegressor

from pricer.core.config import StrictModel
from pricer.core.embedding import EmbeddingConfig, MiniLMEmbedding
from pricer.core.schema import texts
from pricer.models.embeddings import EmbeddingFeatures
from pricer.models.features import EngineeredFeatures, log_prices, to_prices


class PriceModelSpec(StrictModel):
    """One model to train: ``kind`` picks it; ``name`` labels it (train one kind twice under two names)."""

    kind: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                             description="the model's label in runs and reports (default: its kind)")

    @property
    def label(self) -> str:
        return self.name or self.kind

    def build(self) -> PriceModel:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The hyperparameters alone (what two specs of one model share)."""
        return self.model_dump(mode="json", exclude={"name"})

    def same_model(self, other: PriceModelSpec) -> bool:
        """Whether a model fitted to ``other`` is one fitted to this spec (names aside): what a stack reuses."""
        return self.settings() == other.settings()


class EmbeddingSpec(PriceModelSpec):
    """A kind that reads sentence embeddings: ``embedding`` picks which (``kind: minilm`` or ``static``)."""

    embedding: EmbeddingConfig = Field(default_factory=MiniLMEmbedding, description=(
        "the sentence embedding read: kind minilm (the transformer) or static (distilled with model2vec)"))


class PriceModel(BaseEstimator):
    """fit on a frame with ``text`` and ``price``; predict dollars (>= 0) for a frame with ``text``."""

    def __init__(self, spec: PriceModelSpec) -> None:
        self.spec = spec

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        raise NotImplementedError

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return any(name.endswith("_") and not name.startswith("_") for name in vars(self))


class LogPriceModel(PriceModel):
    """The one log-target wrapper: subclasses learn and predict log1p(price)."""

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        self._fit_log(train, log_prices(train))
        return self

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        return to_prices(self.predict_log(items))

    def _fit_log(self, train: pd.DataFrame, y: np.ndarray) -> None:
        raise NotImplementedError

    def predict_log(self, items: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError


class PipelineModel(LogPriceModel):
    """A model that is one sklearn pipeline from the items frame to log price."""

    def pipeline(self) -> Pipeline:
        raise NotImplementedError

    def _fit_log(self, train: pd.DataFrame, y: np.ndarray) -> None:
        self.pipeline_ = self.pipeline().fit(train, y)

    def predict_log(self, items: pd.DataFrame) -> np.ndarray:
        return self.pipeline_.predict(items)


_Scalar = str | int | float | bool | None


def effective_params(model: BaseEstimator, prefix: str = "") -> dict[str, _Scalar]:
    """Every scalar hyperparameter a fitted model runs with, defaults included, by dotted name: those of each
    fitted estimator inside it (``pipeline_``'s every step, each of a stack's ``models_``, each booster),
    which the spec leaves to the library's defaults and a reviewer still wants to compare."""
    found: dict[str, _Scalar] = {}
    for attribute, value in vars(model).items():
        if not attribute.endswith("_") or attribute.startswith("_"):
            continue
        name = f"{prefix}{attribute.rstrip('_')}"
        members = value if isinstance(value, list | tuple) else [value]
        for index, member in enumerate(members):
            if not isinstance(member, BaseEstimator):
                continue
            label = name if len(members) == 1 else f"{name}.{index}"
            if isinstance(member, PriceModel):
                found.update(effective_params(member, f"{label}."))
                continue
            for key, param in member.get_params(deep=True).items():
                if param is None or isinstance(param, str | int | float | bool):
                    found[f"{label}.{key}"] = param
    return found


# --- building blocks ----------------------------------------------------------------------------


def sample_rows(n_rows: int, max_rows: int | None, seed: int) -> np.ndarray:
    """The sorted row numbers of a seeded uniform sample of at most ``max_rows`` of ``n_rows`` (all when
    fewer, or when ``max_rows`` is None): the one documented cap for a fit that grows faster than N log N."""
    if max_rows is None or n_rows <= max_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, max_rows, replace=False))


def embedding_features(embedding: EmbeddingConfig | None = None) -> EmbeddingFeatures:
    """The texts' vectors of the kind ``embedding`` names (None: MiniLM), through the shared cached embedder."""
    return EmbeddingFeatures(embedding=None if embedding is None else embedding.model_dump(mode="json"))


def embed(items: pd.DataFrame, embedding: EmbeddingConfig | None = None) -> np.ndarray:
    """Unit-length vectors of the texts, cached on disk by the shared embedder."""
    return embedding_features(embedding).transform(texts(items))


def texts_step() -> FunctionTransformer:
    return FunctionTransformer(texts)


def embedding_step(embedding: EmbeddingConfig | None = None) -> Pipeline:
    return make_pipeline(texts_step(), embedding_features(embedding))


def engineered_step() -> Pipeline:
    # Medians for unknown numbers plus a was-missing flag: "no weight given" says something itself.
    return make_pipeline(
        EngineeredFeatures(), SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
    )


def word_tfidf(max_features: int) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.9, sublinear_tf=True,
                           max_features=max_features, dtype=np.float32)


def char_tfidf(max_features: int) -> TfidfVectorizer:
    # char_wb pieces catch model numbers, units and brand fragments that split into rare words.
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True,
                           max_features=max_features, dtype=np.float32)


def xgb(n_estimators: int, learning_rate: float, max_depth: int, seed: int) -> XGBRegressor:
    return XGBRegressor(
        n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth, subsample=0.8,
        colsample_bytree=0.5, min_child_weight=3, reg_lambda=1.0, tree_method="hist", n_jobs=1,
        random_state=seed,
    )
