"""The LLM engineering course's week-6 baselines, kept faithful so our models have a fixed yardstick.

What the course did and these keep: raw-dollar targets, the course's four hand features with
mean imputation, a 1000-word bag of words, and Word2Vec(400) document means, with plain
LinearRegression / LinearSVR / RandomForest(100, seed 42). Predictions are floored at $0 as the
course's testers did. The course fed ``item.test_prompt()`` to the vectorisers; the question
around the text is the same for every item, so the text alone gives the same models.
"""

from __future__ import annotations

import zlib
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from gensim.models import Word2Vec
from gensim.utils import simple_preprocess
from pydantic import Field
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVR

from pricer.core.schema import column
from pricer.models.base import PriceModel, PriceModelSpec
from pricer.models.features import details_of, prompt_texts

__all__ = [
    "REFERENCE_SPECS",
    "TOP_ELECTRONICS_BRANDS",
    "course_weight_pounds",
]

TOP_ELECTRONICS_BRANDS = frozenset(
    {"hp", "dell", "lenovo", "samsung", "asus", "sony", "canon", "apple", "intel"}
)
_POUNDS_PER = {"pounds": 1.0, "ounces": 1 / 16, "grams": 1 / 453.592, "milligrams": 1 / 453592,
               "kilograms": 1 / 0.453592}


def course_weight_pounds(weight: Any) -> float | None:
    """The course's ``get_weight``: "<amount> <unit>" with its unit table, else unknown."""
    parts = str(weight).split() if weight else []
    try:
        amount = float(parts[0])
    except (IndexError, ValueError):
        return None
    unit = parts[1].lower() if len(parts) > 1 else ""
    if unit == "hundredths" and len(parts) > 2 and parts[2].lower() == "pounds":
        return amount / 100
    return amount * _POUNDS_PER[unit] if unit in _POUNDS_PER else None


def _course_rank(details: dict[str, Any]) -> float | None:
    ranks = details.get("Best Sellers Rank")
    if not isinstance(ranks, dict) or not ranks:
        return None
    values = [v for v in ranks.values() if isinstance(v, int | float)]
    return sum(values) / len(values) if values else None


class CourseFeatures(TransformerMixin, BaseEstimator):
    """weight, rank, text length, top-electronics-brand flag; weight and rank are NaN when unknown
    (the pipeline's mean imputer is the course's ``get_weight_with_default`` / ``get_rank_with_default``)."""

    def fit(self, items: pd.DataFrame, y: Any = None) -> Self:
        return self

    def transform(self, items: pd.DataFrame) -> np.ndarray:
        rows = []
        for text, details, brand in zip(prompt_texts(items), details_of(items), column(items, "brand"), strict=True):
            weight = course_weight_pounds(details.get("Item Weight"))
            rank = _course_rank(details)
            brand_name = str(details.get("Brand") or brand or "").lower()
            rows.append([
                np.nan if weight is None else weight,
                np.nan if rank is None else rank,
                len(text),
                float(brand_name in TOP_ELECTRONICS_BRANDS),
            ])
        return np.asarray(rows, dtype=float).reshape(len(rows), 4)


def _stable_hash(text: str) -> int:
    # gensim seeds each word's start vector with hash(word + seed); Python's own str hash changes
    # from process to process, so the same seed would not give the same model twice.
    return zlib.crc32(text.encode())


class Word2VecDocuments(TransformerMixin, BaseEstimator):
    """Word2Vec trained on the training texts; a document is the mean of its known word vectors.

    One worker thread by default: with more, word2vec's result depends on thread timing."""

    def __init__(self, vector_size: int = 400, window: int = 5, min_count: int = 1, workers: int = 1,
                 seed: int = 42) -> None:
        self.vector_size = vector_size
        self.window = window
        self.min_count = min_count
        self.workers = workers
        self.seed = seed

    def fit(self, documents: list[str], y: Any = None) -> Self:
        model = Word2Vec(
            sentences=[simple_preprocess(d) for d in documents], vector_size=self.vector_size,
            window=self.window, min_count=self.min_count, workers=self.workers, seed=self.seed,
            hashfxn=_stable_hash,
        )
        self.vectors_ = model.wv  # the KeyedVectors alone: the trainer's state is dead weight in a pickle
        return self

    def transform(self, documents: list[str]) -> np.ndarray:
        out = np.zeros((len(documents), self.vector_size), dtype=np.float32)
        for i, document in enumerate(documents):
            words = [w for w in simple_preprocess(document) if w in self.vectors_.key_to_index]
            if words:
                out[i] = self.vectors_[words].mean(axis=0)
        return out


_TEXTS = FunctionTransformer(prompt_texts)


class _CourseModel(PriceModel):
    """A course pipeline fitted on raw prices; only the pipeline differs between the recipes."""

    def pipeline(self) -> Pipeline:
        raise NotImplementedError

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        self.pipeline_ = self.pipeline().fit(train, train["price"].to_numpy(dtype=float))
        return self

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        return np.clip(self.pipeline_.predict(items), 0.0, None)


class CourseFeaturesLRSpec(PriceModelSpec):
    """The course's four hand features (mean-imputed) with LinearRegression on raw prices."""

    kind: Literal["course_features_lr"] = "course_features_lr"

    def build(self) -> CourseFeaturesLR:
        return CourseFeaturesLR(self)


class CourseFeaturesLR(_CourseModel):
    def pipeline(self) -> Pipeline:
        return make_pipeline(
            CourseFeatures(), SimpleImputer(strategy="mean", keep_empty_features=True), LinearRegression()
        )


class CourseBowLRSpec(PriceModelSpec):
    """The course's 1,000-word bag of words with LinearRegression on raw prices."""

    kind: Literal["course_bow_lr"] = "course_bow_lr"

    def build(self) -> CourseBowLR:
        return CourseBowLR(self)


class CourseBowLR(_CourseModel):
    def pipeline(self) -> Pipeline:
        bag_of_words = CountVectorizer(max_features=1000, stop_words="english")
        return make_pipeline(_TEXTS, bag_of_words, LinearRegression())


_WORKERS = Field(1, gt=0, description="word2vec threads (more than one makes it depend on thread timing)")


class CourseW2vLRSpec(PriceModelSpec):
    """Word2Vec(400) document means with LinearRegression on raw prices."""

    kind: Literal["course_w2v_lr"] = "course_w2v_lr"
    workers: int = _WORKERS

    def build(self) -> _CourseW2v:
        return _CourseW2v(self, LinearRegression())


class CourseW2vSVRSpec(PriceModelSpec):
    """Word2Vec(400) document means with LinearSVR (seed 42) on raw prices."""

    kind: Literal["course_w2v_svr"] = "course_w2v_svr"
    workers: int = _WORKERS

    def build(self) -> _CourseW2v:
        return _CourseW2v(self, LinearSVR(random_state=42))


class CourseW2vRFSpec(PriceModelSpec):
    """Word2Vec(400) document means with RandomForest(seed 42) on raw prices."""

    kind: Literal["course_w2v_rf"] = "course_w2v_rf"
    workers: int = Field(2, gt=0, description="word2vec threads")
    n_estimators: int = Field(100, gt=0, description="trees")

    def build(self) -> _CourseW2v:
        return _CourseW2v(self, RandomForestRegressor(n_estimators=self.n_estimators, random_state=42, n_jobs=-1))


class _CourseW2v(_CourseModel):
    def __init__(self, spec: PriceModelSpec, regressor: RegressorMixin) -> None:
        super().__init__(spec)
        self.regressor = regressor

    def pipeline(self) -> Pipeline:
        return make_pipeline(_TEXTS, Word2VecDocuments(workers=self.spec.workers), self.regressor)


REFERENCE_SPECS = (CourseFeaturesLRSpec, CourseBowLRSpec, CourseW2vLRSpec, CourseW2vSVRSpec, CourseW2vRFSpec)
