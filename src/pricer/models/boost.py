"""The strong families: ``text_ridge`` (word + char TF-IDF ridge) and ``boost`` (XGBoost over everything else)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field
from scipy import sparse
from scipy.sparse import csr_matrix
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold

from pricer.core.schema import texts
from pricer.models.base import (
    EmbeddingSpec,
    LogPriceModel,
    PriceModelSpec,
    char_tfidf,
    embed,
    word_tfidf,
    xgb,
)
from pricer.models.features import EngineeredFeatures, title_groups
from pricer.models.neighbours import NEIGHBOUR_POOL, NearestPrices


class TextRidgeSpec(PriceModelSpec):
    """Ridge on word 1-2-gram and char_wb 2-5-gram TF-IDF."""

    kind: Literal["text_ridge"] = "text_ridge"
    alpha: float = Field(1.0, gt=0, description="the ridge penalty")
    word_features: int = Field(200_000, gt=0, description="the word vocabulary's size")
    char_features: int = Field(300_000, ge=0, description="the char n-gram vocabulary's size (0: words only)")

    def build(self) -> TextRidge:
        return TextRidge(self)


class TextRidge(LogPriceModel):
    spec: TextRidgeSpec

    def _fit_log(self, train: pd.DataFrame, y: np.ndarray) -> None:
        self.ridge_ = Ridge(alpha=self.spec.alpha).fit(joined(*self.fit_vectorizers(train)), y)

    def fit_vectorizers(self, train: pd.DataFrame) -> tuple[csr_matrix, csr_matrix | None]:
        """Fit the word and char vocabularies on ``train``; returns both matrices of ``train`` (no char
        matrix when ``char_features`` is 0)."""
        documents = texts(train)
        self.word_ = word_tfidf(self.spec.word_features)
        self.char_ = char_tfidf(self.spec.char_features) if self.spec.char_features else None
        return self.word_.fit_transform(documents), self.char_.fit_transform(documents) if self.char_ else None

    def vectorize(self, items: pd.DataFrame) -> tuple[csr_matrix, csr_matrix | None]:
        documents = texts(items)
        return self.word_.transform(documents), self.char_.transform(documents) if self.char_ else None

    def predict_log(self, items: pd.DataFrame) -> np.ndarray:
        return self.ridge_.predict(joined(*self.vectorize(items)))


def joined(word: csr_matrix, char: csr_matrix | None) -> csr_matrix:
    return word if char is None else sparse.hstack([word, char], format="csr")


class BoostSpec(EmbeddingSpec):
    """XGBoost on engineered features, kNN-price features (MiniLM and word TF-IDF neighbours), the
    ``text_ridge`` prediction and which of the commonest words the text holds, averaged over seeds."""

    kind: Literal["boost"] = "boost"
    n_folds: int = Field(5, ge=2, description="title-grouped folds for the out-of-fold kNN and ridge inputs")
    k: int = Field(30, gt=0, description="neighbours per kNN feature set")
    neighbour_pool: int | None = Field(None, gt=0, description=NEIGHBOUR_POOL)
    ridge_alpha: float = Field(1.0, gt=0, description="the penalty of the TF-IDF ridge input")
    char_features: int = Field(300_000, ge=0, description=(
        "the char n-gram vocabulary of the TF-IDF ridge input (0: words only, the scale profile's choice: "
        "char n-grams hold ~1,330 entries per text against ~180 for words; see bench/scale.py)"))
    n_estimators: int = Field(400, gt=0, description="boosting rounds per booster")
    learning_rate: float = Field(0.05, gt=0, le=1, description="the boosting step")
    max_depth: int = Field(6, gt=0, description="the deepest tree")
    n_bags: int = Field(3, gt=0, description="boosters averaged, each with its own seed")
    seed: int = Field(42, description="the folds' and the first booster's seed")
    n_words: int = Field(20_000, ge=0, description="word-presence columns (0: none)")
    max_chars: int | None = Field(None, gt=0, description="read only the first N characters (null: all)")
    embeddings: bool = Field(True, description="embedding-neighbour features (false: none, and no embedding cost)")

    def build(self) -> Boost:
        return Boost(self)


class Boost(LogPriceModel):
    """See ``BoostSpec``. The kNN and ridge inputs of training rows come from title-grouped folds, each
    predicted by a fit on the other folds: in-sample they would be near-perfect and the booster would
    learn to copy them, then fail on new items where they are only approximately right. The raw
    embedding dimensions are left out: on the curated data they cost 25x the boosting time for no val
    gain, since the kNN features already carry what the booster could use of them.

    ``max_chars`` makes it read only the head of each text (title and the first details): a weaker
    model alone, but one whose errors differ enough from the whole-text one's that a stack of them
    beats either.
    """

    spec: BoostSpec

    def _fit_log(self, train: pd.DataFrame, y: np.ndarray) -> None:
        spec = self.spec
        train = self._view(train)
        self.vectorizers_ = TextRidgeSpec(char_features=spec.char_features).build()
        # Vocabularies and IDF never see a price, so one fit on all of train serves every fold.
        inputs = self._inputs(train, *self.vectorizers_.fit_vectorizers(train))
        n_neighbour_sets = 2 if spec.embeddings else 1
        out_of_fold = np.empty((len(train), n_neighbour_sets * NearestPrices.n_features + 1))
        folds = GroupKFold(n_splits=spec.n_folds, shuffle=True, random_state=spec.seed)
        for fit_rows, held_rows in folds.split(inputs.word, y, groups=title_groups(train)):
            learners = self._fit_learners(inputs.take(fit_rows), y[fit_rows])
            out_of_fold[held_rows] = self._learned(learners, inputs.take(held_rows))
        self.learners_ = self._fit_learners(inputs, y)
        self.engineered_ = EngineeredFeatures().fit(train)
        self.words_ = (CountVectorizer(binary=True, min_df=5, max_features=spec.n_words, dtype=np.float32)
                       .fit(texts(train)) if spec.n_words else None)
        matrix = self._matrix(train, out_of_fold)
        self.boosters_ = [
            xgb(spec.n_estimators, spec.learning_rate, spec.max_depth, spec.seed + bag).fit(matrix, y)
            for bag in range(spec.n_bags)
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
        if self.spec.max_chars is None:
            return items
        heads = [text[:self.spec.max_chars] for text in texts(items)]
        return items.drop(columns="full_text", errors="ignore").assign(text=heads)

    def _inputs(self, items: pd.DataFrame, word: csr_matrix, char: csr_matrix | None) -> _Inputs:
        return _Inputs(embed(items, self.spec.embedding) if self.spec.embeddings else None, word, joined(word, char))

    def _fit_learners(self, inputs: _Inputs, y: np.ndarray) -> _Learners:
        spec = self.spec
        return _Learners(
            NearestPrices(spec.k, max_reference=spec.neighbour_pool, seed=spec.seed).fit(inputs.vectors, y)
            if inputs.vectors is not None else None,
            NearestPrices(spec.k, max_reference=spec.neighbour_pool, seed=spec.seed).fit(inputs.word, y),
            Ridge(alpha=self.spec.ridge_alpha).fit(inputs.both, y),
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
        word = self.word[rows]
        both = word if self.both is self.word else self.both[rows]  # words alone: one matrix, one copy
        return _Inputs(self.vectors[rows] if self.vectors is not None else None, word, both)


@dataclass(frozen=True)
class _Learners:
    embedding_neighbours: NearestPrices | None
    word_neighbours: NearestPrices
    ridge: Ridge
