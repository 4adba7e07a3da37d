"""The floors and the classic families: a random guess, the mean, linear models, an SVR, a forest, XGBoost."""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.svm import SVR

from pricer.models.base import (
    EmbeddingSpec,
    PipelineModel,
    PriceModel,
    PriceModelSpec,
    embedding_step,
    engineered_step,
    sample_rows,
    texts_step,
    word_tfidf,
    xgb,
)

# --- floors ---------------------------------------------------------------------------------------


class RandomSpec(PriceModelSpec):
    """A uniform guess in the training price range: what no information scores."""

    kind: Literal["random"] = "random"
    seed: int = Field(42, description="the same items get the same guesses")

    def build(self) -> RandomPrice:
        return RandomPrice(self)


class RandomPrice(PriceModel):
    spec: RandomSpec

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        self.low_, self.high_ = float(train["price"].min()), float(train["price"].max())
        return self

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        # A fresh generator per call: the same items get the same guesses, before and after pickling.
        return np.random.default_rng(self.spec.seed).uniform(self.low_, self.high_, len(items))


class MeanSpec(PriceModelSpec):
    """The mean training price for every item."""

    kind: Literal["mean"] = "mean"

    def build(self) -> MeanPrice:
        return MeanPrice(self)


class MeanPrice(PriceModel):
    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        self.mean_ = float(train["price"].mean())
        return self

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        return np.full(len(items), self.mean_)


# --- classic families ---------------------------------------------------------------------------


class FeaturesLRSpec(PriceModelSpec):
    """Linear regression on the engineered features (weight, rank, brand, category, units)."""

    kind: Literal["features_lr"] = "features_lr"

    def build(self) -> FeaturesLR:
        return FeaturesLR(self)


class FeaturesLR(PipelineModel):
    def pipeline(self) -> Pipeline:
        return make_pipeline(engineered_step(), LinearRegression())


class TfidfLRSpec(PriceModelSpec):
    """Ridge regression on word 1-2-gram TF-IDF."""

    kind: Literal["tfidf_lr"] = "tfidf_lr"
    alpha: float = Field(1.0, gt=0, description="the ridge penalty")
    max_features: int = Field(200_000, gt=0, description="the vocabulary's size")

    def build(self) -> TfidfLR:
        return TfidfLR(self)


class TfidfLR(PipelineModel):
    spec: TfidfLRSpec

    def pipeline(self) -> Pipeline:
        return make_pipeline(texts_step(), word_tfidf(self.spec.max_features), Ridge(alpha=self.spec.alpha))


class EmbedLRSpec(EmbeddingSpec):
    """Ridge regression on sentence embeddings (MiniLM unless ``embedding`` says otherwise)."""

    kind: Literal["embed_lr"] = "embed_lr"
    alpha: float = Field(1.0, gt=0, description="the ridge penalty")

    def build(self) -> EmbedLR:
        return EmbedLR(self)


class EmbedLR(PipelineModel):
    spec: EmbedLRSpec

    def pipeline(self) -> Pipeline:
        return make_pipeline(embedding_step(self.spec.embedding), Ridge(alpha=self.spec.alpha))


class EmbedSVRSpec(EmbeddingSpec):
    """An RBF support vector regressor on sentence embeddings (MiniLM unless ``embedding`` says otherwise)."""

    kind: Literal["embed_svr"] = "embed_svr"
    C: float = Field(3.0, gt=0, description="the SVR's inverse regularisation")
    epsilon: float = Field(0.1, ge=0, description="the width of the SVR's no-penalty tube, in log price")
    max_train_items: int | None = Field(None, gt=0, description=(
        "fit on a seeded uniform sample of at most this many training items (null: all): a kernel SVR's fit "
        "grows as N^2 to N^3, so a catalog of 100k+ items needs one (bench/scale.py)"))
    seed: int = Field(42, description="the sample's random state")

    def build(self) -> EmbedSVR:
        return EmbedSVR(self)


class EmbedSVR(PipelineModel):
    spec: EmbedSVRSpec

    def pipeline(self) -> Pipeline:
        return make_pipeline(embedding_step(self.spec.embedding), SVR(C=self.spec.C, epsilon=self.spec.epsilon, cache_size=1000))

    def _fit_log(self, train: pd.DataFrame, y: np.ndarray) -> None:
        rows = sample_rows(len(train), self.spec.max_train_items, self.spec.seed)
        super()._fit_log(train.iloc[rows], y[rows])


class EmbedRFSpec(EmbeddingSpec):
    """A random forest on sentence embeddings (MiniLM unless ``embedding`` says otherwise)."""

    kind: Literal["embed_rf"] = "embed_rf"
    n_estimators: int = Field(100, gt=0, description="trees")
    max_features: float | Literal["sqrt", "log2"] = Field("sqrt", description="features tried per split")
    min_samples_leaf: int = Field(2, gt=0, description="the smallest leaf")
    seed: int = Field(42, description="the forest's random state")

    def build(self) -> EmbedRF:
        return EmbedRF(self)


class EmbedRF(PipelineModel):
    spec: EmbedRFSpec

    def pipeline(self) -> Pipeline:
        spec = self.spec
        forest = RandomForestRegressor(
            n_estimators=spec.n_estimators, max_features=spec.max_features,
            min_samples_leaf=spec.min_samples_leaf, random_state=spec.seed, n_jobs=-1,
        )
        return make_pipeline(embedding_step(spec.embedding), forest)


class XGBoostSpec(EmbeddingSpec):
    """XGBoost on TF-IDF SVD components, engineered features and embeddings."""

    kind: Literal["xgboost"] = "xgboost"
    n_components: int = Field(100, gt=0, description="SVD components of the word TF-IDF")
    n_estimators: int = Field(400, gt=0, description="boosting rounds")
    learning_rate: float = Field(0.05, gt=0, le=1, description="the boosting step")
    max_depth: int = Field(6, gt=0, description="the deepest tree")
    seed: int = Field(42, description="the random state of the SVD and the booster")

    def build(self) -> XGBoostModel:
        return XGBoostModel(self)


class XGBoostModel(PipelineModel):
    spec: XGBoostSpec

    def pipeline(self) -> Pipeline:
        spec = self.spec
        svd = make_pipeline(texts_step(), word_tfidf(50_000), TruncatedSVD(spec.n_components, random_state=spec.seed))
        features = FeatureUnion([("svd", svd), ("engineered", engineered_step()), ("embedding", embedding_step(spec.embedding))])
        return make_pipeline(features, xgb(spec.n_estimators, spec.learning_rate, spec.max_depth, spec.seed))
