"""The traditional model zoo: every model prices a product from its text (other columns help when present).

All learned models fit log1p(price) and answer in dollars through ``LogPriceModel``: prices are skewed
($1 to $999, median ~$30), and the back-transformed log prediction is a conditional median, which is
what mean absolute error rewards. Beyond the classic families, the strong ones are:

- ``text_ridge``: Ridge on TF-IDF word 1-2-grams plus char_wb 2-5-grams.
- ``knn``: the similarity-weighted mean log price of the nearest training items in MiniLM space.
- ``boost``: XGBoost over engineered features, word presence, kNN-price features (MiniLM and word
  TF-IDF neighbours) and the ``text_ridge`` prediction, the last two computed out of fold on the
  training split.
- ``stack``: a non-negative linear blend of member models in log space, fitted on the val split only.

The models read the curated ``full_text`` (title, details, features and description up to 2,000
characters) where a frame has it, else ``text``: see ``features.texts``.

XGBoost runs single-threaded on purpose: with a core busy elsewhere, its OpenMP threads waited on
each other and two threads fitted 30-80x slower than one on the project's 2-core machines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import lsq_linear
from scipy.sparse import csr_matrix
from sklearn.base import BaseEstimator
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVR
from sklearn.utils.validation import check_is_fitted
from xgboost import XGBRegressor

from pricer.baselines.features import (
    EngineeredFeatures,
    log_prices,
    row_keys,
    texts,
    title_groups,
    to_prices,
)
from pricer.embeddings import EmbeddingFeatures

__all__ = [
    "MODEL_KINDS",
    "Boost",
    "EmbedLR",
    "EmbedRF",
    "EmbedSVR",
    "FeaturesLR",
    "KnnPrice",
    "LogPriceModel",
    "MeanPrice",
    "PriceModel",
    "RandomPrice",
    "Stack",
    "TextRidge",
    "TfidfLR",
    "XGBoostModel",
    "build_model",
    "known_kinds",
]


class PriceModel(BaseEstimator):
    """fit on a frame with ``text`` and ``price``; predict dollars (>= 0) for a frame with ``text``."""

    kind: ClassVar[str]

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        raise NotImplementedError

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError


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


# --- floors ---------------------------------------------------------------------------------------


class RandomPrice(PriceModel):
    """A uniform guess in the training price range: what no information scores."""

    kind: ClassVar[str] = "random"

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        self.low_, self.high_ = float(train["price"].min()), float(train["price"].max())
        return self

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        # A fresh generator per call: the same items get the same guesses, before and after pickling.
        return np.random.default_rng(self.seed).uniform(self.low_, self.high_, len(items))


class MeanPrice(PriceModel):
    kind: ClassVar[str] = "mean"

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        self.mean_ = float(train["price"].mean())
        return self

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        return np.full(len(items), self.mean_)


# --- building blocks ----------------------------------------------------------------------------


def embed(items: pd.DataFrame) -> np.ndarray:
    """MiniLM vectors of the texts (unit length), cached on disk by the shared embedder."""
    return EmbeddingFeatures().transform(texts(items))


def _texts_step() -> FunctionTransformer:
    return FunctionTransformer(texts)


def _embedding_step() -> Pipeline:
    return make_pipeline(_texts_step(), EmbeddingFeatures())


def _engineered_step() -> Pipeline:
    # Medians for unknown numbers plus a was-missing flag: "no weight given" says something itself.
    return make_pipeline(
        EngineeredFeatures(), SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
    )


def _word_tfidf(max_features: int) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.9, sublinear_tf=True,
                           max_features=max_features, dtype=np.float32)


def _char_tfidf(max_features: int) -> TfidfVectorizer:
    # char_wb pieces catch model numbers, units and brand fragments that split into rare words.
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True,
                           max_features=max_features, dtype=np.float32)


class _PipelineModel(LogPriceModel):
    """A model that is one sklearn pipeline from the items frame to log price."""

    def _pipeline(self) -> Pipeline:
        raise NotImplementedError

    def _fit_log(self, train: pd.DataFrame, y: np.ndarray) -> None:
        self.pipeline_ = self._pipeline().fit(train, y)

    def predict_log(self, items: pd.DataFrame) -> np.ndarray:
        return self.pipeline_.predict(items)


# --- classic families ---------------------------------------------------------------------------


class FeaturesLR(_PipelineModel):
    kind: ClassVar[str] = "features_lr"

    def _pipeline(self) -> Pipeline:
        return make_pipeline(_engineered_step(), LinearRegression())


class TfidfLR(_PipelineModel):
    kind: ClassVar[str] = "tfidf_lr"

    def __init__(self, alpha: float = 1.0, max_features: int = 200_000) -> None:
        self.alpha = alpha
        self.max_features = max_features

    def _pipeline(self) -> Pipeline:
        return make_pipeline(_texts_step(), _word_tfidf(self.max_features), Ridge(alpha=self.alpha))


class EmbedLR(_PipelineModel):
    kind: ClassVar[str] = "embed_lr"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def _pipeline(self) -> Pipeline:
        return make_pipeline(_embedding_step(), Ridge(alpha=self.alpha))


class EmbedSVR(_PipelineModel):
    kind: ClassVar[str] = "embed_svr"

    def __init__(self, C: float = 3.0, epsilon: float = 0.1) -> None:
        self.C = C
        self.epsilon = epsilon

    def _pipeline(self) -> Pipeline:
        return make_pipeline(_embedding_step(), SVR(C=self.C, epsilon=self.epsilon, cache_size=1000))


class EmbedRF(_PipelineModel):
    kind: ClassVar[str] = "embed_rf"

    def __init__(self, n_estimators: int = 100, max_features: float | str = "sqrt", min_samples_leaf: int = 2,
                 seed: int = 42) -> None:
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed

    def _pipeline(self) -> Pipeline:
        forest = RandomForestRegressor(
            n_estimators=self.n_estimators, max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf, random_state=self.seed, n_jobs=-1,
        )
        return make_pipeline(_embedding_step(), forest)


def _xgb(n_estimators: int, learning_rate: float, max_depth: int, seed: int) -> XGBRegressor:
    return XGBRegressor(
        n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth, subsample=0.8,
        colsample_bytree=0.5, min_child_weight=3, reg_lambda=1.0, tree_method="hist", n_jobs=1,
        random_state=seed,
    )


class XGBoostModel(_PipelineModel):
    """XGBoost on TF-IDF SVD components, engineered features and embeddings."""

    kind: ClassVar[str] = "xgboost"

    def __init__(self, n_components: int = 100, n_estimators: int = 400, learning_rate: float = 0.05,
                 max_depth: int = 6, seed: int = 42) -> None:
        self.n_components = n_components
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.seed = seed

    def _pipeline(self) -> Pipeline:
        svd = make_pipeline(_texts_step(), _word_tfidf(50_000),
                            TruncatedSVD(self.n_components, random_state=self.seed))
        features = FeatureUnion(
            [("svd", svd), ("engineered", _engineered_step()), ("embedding", _embedding_step())]
        )
        return make_pipeline(features, _xgb(self.n_estimators, self.learning_rate, self.max_depth, self.seed))


# --- strong models ------------------------------------------------------------------------------


class TextRidge(LogPriceModel):
    """Ridge on word 1-2-gram and char_wb 2-5-gram TF-IDF."""

    kind: ClassVar[str] = "text_ridge"

    def __init__(self, alpha: float = 1.0, word_features: int = 200_000,
                 char_features: int = 300_000) -> None:
        self.alpha = alpha
        self.word_features = word_features
        self.char_features = char_features

    def _fit_log(self, train: pd.DataFrame, y: np.ndarray) -> None:
        self.ridge_ = Ridge(alpha=self.alpha).fit(joined(*self.fit_vectorizers(train)), y)

    def fit_vectorizers(self, train: pd.DataFrame) -> tuple[csr_matrix, csr_matrix]:
        """Fit the word and char vocabularies on ``train``; returns both matrices of ``train``."""
        documents = texts(train)
        self.word_, self.char_ = _word_tfidf(self.word_features), _char_tfidf(self.char_features)
        return self.word_.fit_transform(documents), self.char_.fit_transform(documents)

    def vectorize(self, items: pd.DataFrame) -> tuple[csr_matrix, csr_matrix]:
        documents = texts(items)
        return self.word_.transform(documents), self.char_.transform(documents)

    def predict_log(self, items: pd.DataFrame) -> np.ndarray:
        return self.ridge_.predict(joined(*self.vectorize(items)))


def joined(word: csr_matrix, char: csr_matrix) -> csr_matrix:
    return sparse.hstack([word, char], format="csr")


class NearestPrices(BaseEstimator):
    """Cosine nearest neighbours over unit-length rows (dense embeddings or sparse TF-IDF), summarised
    as log-price features: the similarity-weighted mean and median of the k nearest log prices, their
    spread, the nearest one's log price and similarity, and the mean similarity (how familiar the item is).
    """

    n_features: ClassVar[int] = 6

    def __init__(self, k: int = 15, temperature: float = 0.05) -> None:
        self.k = k
        self.temperature = temperature

    def fit(self, vectors: np.ndarray | csr_matrix, y: np.ndarray) -> Self:
        is_sparse = sparse.issparse(vectors)
        self.vectors_ = sparse.csr_matrix(vectors) if is_sparse else np.asarray(vectors, np.float32)
        self.y_ = np.asarray(y, dtype=float)
        return self

    def transform(self, vectors: np.ndarray | csr_matrix, block: int = 2048) -> np.ndarray:
        k = min(self.k, len(self.y_))
        out = np.empty((vectors.shape[0], self.n_features))
        for start in range(0, vectors.shape[0], block):
            sims = vectors[start:start + block] @ self.vectors_.T
            sims = sims.toarray() if sparse.issparse(sims) else sims
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top_sims = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_sims, axis=1)
            top, top_sims = np.take_along_axis(top, order, 1), np.take_along_axis(top_sims, order, 1)
            prices = self.y_[top]
            # Softmax over similarity: a near-duplicate outweighs a loosely related item by far.
            weights = np.exp((top_sims - top_sims[:, :1]) / self.temperature)
            weights /= weights.sum(axis=1, keepdims=True)
            mean = (weights * prices).sum(axis=1)
            spread = np.sqrt((weights * (prices - mean[:, None]) ** 2).sum(axis=1))
            out[start:start + block] = np.column_stack([
                mean, _weighted_median(prices, weights), spread,
                prices[:, 0], top_sims[:, 0], top_sims.mean(axis=1),
            ])
        return out


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    order = np.argsort(values, axis=1)
    values, weights = np.take_along_axis(values, order, 1), np.take_along_axis(weights, order, 1)
    below_half = np.cumsum(weights, axis=1) < 0.5 * weights.sum(axis=1, keepdims=True)
    return values[np.arange(len(values)), below_half.sum(axis=1)]


class KnnPrice(LogPriceModel):
    """The similarity-weighted mean log price of the k nearest training items in embedding space."""

    kind: ClassVar[str] = "knn"

    def __init__(self, k: int = 15, temperature: float = 0.05) -> None:
        self.k = k
        self.temperature = temperature

    def _fit_log(self, train: pd.DataFrame, y: np.ndarray) -> None:
        self.neighbours_ = NearestPrices(self.k, self.temperature).fit(embed(train), y)

    def predict_log(self, items: pd.DataFrame) -> np.ndarray:
        return self.neighbours_.transform(embed(items))[:, 0]


class Boost(LogPriceModel):
    """XGBoost on engineered features, kNN-price features (MiniLM and word TF-IDF neighbours), the
    ``text_ridge`` prediction and which of the ``n_words`` commonest words the text holds, averaged
    over ``n_bags`` seeds.

    The kNN and ridge inputs of training rows come from ``n_folds`` title-grouped folds, each predicted
    by a fit on the other folds: in-sample they would be near-perfect and the booster would learn to
    copy them, then fail on new items where they are only approximately right. The raw embedding
    dimensions are left out: on the curated data they cost 25x the boosting time for no val gain,
    since the kNN features already carry what the booster could use of them.

    ``n_words=0`` leaves the word columns out, ``embeddings=False`` the MiniLM neighbours. ``max_chars``
    makes it read only the head of each text (title and the first details): a weaker model alone, but
    one whose errors differ enough from the whole-text one's that a stack of them beats either.
    """

    kind: ClassVar[str] = "boost"

    def __init__(self, n_folds: int = 5, k: int = 30, ridge_alpha: float = 1.0, n_estimators: int = 400,
                 learning_rate: float = 0.05, max_depth: int = 6, n_bags: int = 3, seed: int = 42,
                 n_words: int = 20_000, max_chars: int | None = None, embeddings: bool = True) -> None:
        self.n_folds = n_folds
        self.k = k
        self.ridge_alpha = ridge_alpha
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.n_bags = n_bags
        self.seed = seed
        self.n_words = n_words
        self.max_chars = max_chars
        self.embeddings = embeddings

    def _fit_log(self, train: pd.DataFrame, y: np.ndarray) -> None:
        train = self._view(train)
        self.vectorizers_ = TextRidge()
        # Vocabularies and IDF never see a price, so one fit on all of train serves every fold.
        inputs = self._inputs(train, *self.vectorizers_.fit_vectorizers(train))
        n_neighbour_sets = 2 if self.embeddings else 1
        out_of_fold = np.empty((len(train), n_neighbour_sets * NearestPrices.n_features + 1))
        folds = GroupKFold(n_splits=self.n_folds, shuffle=True, random_state=self.seed)
        for fit_rows, held_rows in folds.split(inputs.word, y, groups=title_groups(train)):
            learners = self._fit_learners(inputs.take(fit_rows), y[fit_rows])
            out_of_fold[held_rows] = self._learned(learners, inputs.take(held_rows))
        self.learners_ = self._fit_learners(inputs, y)
        self.engineered_ = EngineeredFeatures().fit(train)
        self.words_ = (CountVectorizer(binary=True, min_df=5, max_features=self.n_words, dtype=np.float32)
                       .fit(texts(train)) if self.n_words else None)
        matrix = self._matrix(train, out_of_fold)
        self.boosters_ = [
            _xgb(self.n_estimators, self.learning_rate, self.max_depth, self.seed + bag).fit(matrix, y)
            for bag in range(self.n_bags)
        ]

    def predict_log(self, items: pd.DataFrame) -> np.ndarray:
        items = self._view(items)
        inputs = self._inputs(items, *self.vectorizers_.vectorize(items))
        matrix = self._matrix(items, self._learned(self.learners_, inputs))
        return np.mean([booster.predict(matrix) for booster in self.boosters_], axis=0)

    def _matrix(self, items: pd.DataFrame, learned: np.ndarray) -> csr_matrix:
        dense = _every_entry_stored(np.hstack([self.engineered_.transform(items), learned]))
        return dense if self.words_ is None else sparse.hstack([dense, self.words_.transform(texts(items))],
                                                               format="csr")

    def _view(self, items: pd.DataFrame) -> pd.DataFrame:
        if self.max_chars is None:
            return items
        heads = [text[:self.max_chars] for text in texts(items)]
        return items.drop(columns="full_text", errors="ignore").assign(text=heads)

    def _inputs(self, items: pd.DataFrame, word: csr_matrix, char: csr_matrix) -> _Inputs:
        return _Inputs(embed(items) if self.embeddings else None, word, joined(word, char))

    def _fit_learners(self, inputs: _Inputs, y: np.ndarray) -> _Learners:
        return _Learners(
            NearestPrices(self.k).fit(inputs.vectors, y) if inputs.vectors is not None else None,
            NearestPrices(self.k).fit(inputs.word, y),
            Ridge(alpha=self.ridge_alpha).fit(inputs.both, y),
        )

    @staticmethod
    def _learned(learners: _Learners, inputs: _Inputs) -> np.ndarray:
        embedding_neighbours = ([learners.embedding_neighbours.transform(inputs.vectors)]
                                if learners.embedding_neighbours is not None else [])
        return np.column_stack([
            *embedding_neighbours,
            learners.word_neighbours.transform(inputs.word),
            learners.ridge.predict(inputs.both),
        ])


def _every_entry_stored(dense: np.ndarray) -> csr_matrix:
    """A CSR copy that stores zeros too: XGBoost reads an unstored entry as missing, and a dense
    feature's 0 must stay a 0 (NaN is what marks it missing)."""
    rows, cols = dense.shape
    return csr_matrix((dense.ravel(), np.tile(np.arange(cols), rows), np.arange(0, rows * cols + 1, cols)),
                      shape=dense.shape)


@dataclass(frozen=True)
class _Inputs:
    """One set of rows as the boost's learners read them: MiniLM vectors (None when the boost leaves them
    out), word TF-IDF, word+char TF-IDF."""

    vectors: np.ndarray | None
    word: csr_matrix
    both: csr_matrix

    def take(self, rows: np.ndarray) -> _Inputs:
        return _Inputs(self.vectors[rows] if self.vectors is not None else None, self.word[rows], self.both[rows])


@dataclass(frozen=True)
class _Learners:
    embedding_neighbours: NearestPrices | None
    word_neighbours: NearestPrices
    ridge: Ridge


MemberSpec = str | Mapping[str, Any] | PriceModel
# The boost on three views of a product: its whole text, its head (about the language models'
# 160-token text) and about its title. Each errs where the others do not, and the blend weights that
# on val. The two short views leave out the word columns and the MiniLM neighbours: embedding every
# head cost more than the whole boost's fit, for no val gain.
DEFAULT_STACK: tuple[MemberSpec, ...] = (
    "boost",
    {"kind": "boost", "max_chars": 350, "n_words": 0, "embeddings": False},
    {"kind": "boost", "max_chars": 120, "n_words": 0, "embeddings": False},
    "xgboost", "embed_svr",
)


class Stack(LogPriceModel):
    """A non-negative blend (plus intercept) of member models' log predictions, fitted on val only.

    A member is a kind, a ``{"kind": ..., **params}`` mapping, or a PriceModel; kinds, mappings and
    unfitted models are fitted on ``train``, while a model that is already fitted is kept as it is, so
    a stage can blend the zoo it trained on the same train split without training it twice. The
    weights fit on ``val``, which must be given; ``blend_keys_`` records the fingerprints of the rows
    they saw, so a caller can check that those are val rows and nothing else.
    """

    kind: ClassVar[str] = "stack"

    def __init__(self, members: Sequence[MemberSpec] = DEFAULT_STACK) -> None:
        self.members = members

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        if val is None or len(val) == 0:
            raise ValueError("stack fits its blend weights on the val split: pass val")
        self.models_ = [_fitted_member(spec, train) for spec in self.members]
        solution = lsq_linear(
            np.column_stack([self._member_logs(val), np.ones(len(val))]), log_prices(val),
            bounds=([0.0] * len(self.models_) + [-np.inf], np.inf),
        )
        self.weights_, self.intercept_ = solution.x[:-1], float(solution.x[-1])
        self.blend_keys_ = row_keys(val)
        return self

    def predict_log(self, items: pd.DataFrame) -> np.ndarray:
        return self._member_logs(items) @ self.weights_ + self.intercept_

    def reusing(self, fitted: Mapping[str, PriceModel]) -> Stack:
        """This stack with each member named by a key of ``fitted`` replaced by that fitted model."""
        return Stack(members=[fitted.get(spec, spec) if isinstance(spec, str) else spec for spec in self.members])

    def _member_logs(self, items: pd.DataFrame) -> np.ndarray:
        return np.column_stack([np.log1p(m.predict(items)) for m in self.models_])


def _fitted_member(spec: MemberSpec, train: pd.DataFrame) -> PriceModel:
    if isinstance(spec, PriceModel):
        try:
            check_is_fitted(spec)
        except NotFittedError:
            return spec.fit(train)
        return spec
    if isinstance(spec, str):
        return build_model(spec).fit(train)
    params = dict(spec)
    return build_model(params.pop("kind"), **params).fit(train)


MODEL_KINDS: dict[str, type[PriceModel]] = {
    cls.kind: cls
    for cls in (RandomPrice, MeanPrice, FeaturesLR, TfidfLR, EmbedLR, EmbedSVR, EmbedRF, XGBoostModel,
                TextRidge, KnnPrice, Boost, Stack)
}


def known_kinds() -> dict[str, type[PriceModel]]:
    """Every model ``kind`` a config may name: ours and the course references (``course_*``)."""
    from pricer.baselines.reference import REFERENCE_KINDS  # reference.py builds on PriceModel above

    return {**MODEL_KINDS, **REFERENCE_KINDS}


def build_model(kind: str, **params: Any) -> PriceModel:
    """A model by its config ``kind``."""
    kinds = known_kinds()
    if kind not in kinds:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(sorted(kinds))}")
    return kinds[kind](**params)
