"""The LLM engineering course's week-6 baselines, kept faithful so our models have a fixed yardstick.

What the course did and these keep: raw-dollar targets, the course's four hand features with
mean imputation, a 1000-word bag of words, and Word2Vec(400) document means, with plain
LinearRegression / LinearSVR / RandomForest(100, seed 42). Predictions are floored at $0 as the
course's testers did. The course fed ``item.test_prompt()`` to the vectorisers; the question
around the text is the same for every item, so the text alone gives the same models.
"""

from __future__ import annotations

import zlib
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from gensim.models import Word2Vec
from gensim.utils import simple_preprocess
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVR

from pricer.baselines.features import column, details_of, prompt_texts
from pricer.baselines.models import PriceModel

__all__ = [
    "REFERENCE_KINDS",
    "TOP_ELECTRONICS_BRANDS",
    "CourseBowLR",
    "CourseFeaturesLR",
    "CourseW2vLR",
    "CourseW2vRF",
    "CourseW2vSVR",
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

    def _pipeline(self) -> Pipeline:
        raise NotImplementedError

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        self.pipeline_ = self._pipeline().fit(train, train["price"].to_numpy(dtype=float))
        return self

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        return np.clip(self.pipeline_.predict(items), 0.0, None)


class CourseFeaturesLR(_CourseModel):
    kind: ClassVar[str] = "course_features_lr"

    def _pipeline(self) -> Pipeline:
        return make_pipeline(
            CourseFeatures(), SimpleImputer(strategy="mean", keep_empty_features=True), LinearRegression()
        )


class CourseBowLR(_CourseModel):
    kind: ClassVar[str] = "course_bow_lr"

    def _pipeline(self) -> Pipeline:
        bag_of_words = CountVectorizer(max_features=1000, stop_words="english")
        return make_pipeline(_TEXTS, bag_of_words, LinearRegression())


class _CourseW2v(_CourseModel):
    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def _regressor(self) -> RegressorMixin:
        raise NotImplementedError

    def _pipeline(self) -> Pipeline:
        return make_pipeline(_TEXTS, Word2VecDocuments(workers=self.workers), self._regressor())


class CourseW2vLR(_CourseW2v):
    kind: ClassVar[str] = "course_w2v_lr"

    def _regressor(self) -> RegressorMixin:
        return LinearRegression()


class CourseW2vSVR(_CourseW2v):
    kind: ClassVar[str] = "course_w2v_svr"

    def _regressor(self) -> RegressorMixin:
        return LinearSVR(random_state=42)


class CourseW2vRF(_CourseW2v):
    kind: ClassVar[str] = "course_w2v_rf"

    def __init__(self, workers: int = 2, n_estimators: int = 100) -> None:
        super().__init__(workers)
        self.n_estimators = n_estimators

    def _regressor(self) -> RegressorMixin:
        return RandomForestRegressor(n_estimators=self.n_estimators, random_state=42, n_jobs=-1)


REFERENCE_KINDS: dict[str, type[PriceModel]] = {
    cls.kind: cls for cls in (CourseFeaturesLR, CourseBowLR, CourseW2vLR, CourseW2vSVR, CourseW2vRF)
}
