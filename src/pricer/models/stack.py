"""The stack: a non-negative linear blend of member models in log space, its weights fitted on val only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self

import numpy as np
import pandas as pd
from pydantic import BeforeValidator, Field
from scipy.optimize import lsq_linear

from pricer.models.base import LogPriceModel, PriceModel, PriceModelSpec
from pricer.models.boost import BoostSpec
from pricer.models.classic import EmbedSVRSpec, XGBoostSpec
from pricer.models.features import log_prices, row_keys
from pricer.models.kinds import MemberSpec


def _kind_alone(value: Any) -> Any:
    """A member written as its kind alone (``- boost``) is that kind with its defaults."""
    return {"kind": value} if isinstance(value, str) else value


# The boost on three views of a product: its whole text, its head (about the language models'
# 160-token text) and about its title. Each errs where the others do not, and the blend weights that
# on val. The two short views leave out the word columns and the MiniLM neighbours: embedding every
# head cost more than the whole boost's fit, for no val gain.
DEFAULT_MEMBERS: tuple[PriceModelSpec, ...] = (
    BoostSpec(),
    BoostSpec(max_chars=350, n_words=0, embeddings=False),
    BoostSpec(max_chars=120, n_words=0, embeddings=False),
    XGBoostSpec(),
    EmbedSVRSpec(),
)


class StackSpec(PriceModelSpec):
    """A non-negative blend (plus intercept) of member models' log predictions, fitted on val only. A
    member the stage has already trained with the same settings is reused as it is, not trained again."""

    kind: Literal["stack"] = "stack"
    members: list[Annotated[MemberSpec, BeforeValidator(_kind_alone)]] = Field(
        default_factory=lambda: list(DEFAULT_MEMBERS), min_length=1,
        description="the blended models: specs, or kinds alone for their defaults")

    def build(self) -> Stack:
        return Stack(self)


class Stack(LogPriceModel):
    """See ``StackSpec``. ``blend_keys_`` records the fingerprints of the rows the weights saw, so a
    caller can check that those are val rows and nothing else."""

    spec: StackSpec

    def __init__(self, spec: StackSpec, reused: Sequence[PriceModel] = ()) -> None:
        super().__init__(spec)
        self.reused = list(reused)

    def reusing(self, fitted: Sequence[PriceModel]) -> Stack:
        """This stack, taking each member from ``fitted`` where a fitted model has the member's settings."""
        return Stack(self.spec, fitted)

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> Self:
        if val is None or len(val) == 0:
            raise ValueError("stack fits its blend weights on the val split: pass val")
        self.models_ = [self._member(spec, train) for spec in self.spec.members]
        self.reused = []  # the reused members live on in models_: the pickle holds each once
        solution = lsq_linear(
            np.column_stack([self._member_logs(val), np.ones(len(val))]), log_prices(val),
            bounds=([0.0] * len(self.models_) + [-np.inf], np.inf),
        )
        self.weights_, self.intercept_ = solution.x[:-1], float(solution.x[-1])
        self.blend_keys_ = row_keys(val)
        return self

    def predict_log(self, items: pd.DataFrame) -> np.ndarray:
        return self._member_logs(items) @ self.weights_ + self.intercept_

    def _member(self, spec: PriceModelSpec, train: pd.DataFrame) -> PriceModel:
        for model in self.reused:
            if model.spec.same_model(spec) and model.is_fitted:
                return model
        return spec.build().fit(train)

    def _member_logs(self, items: pd.DataFrame) -> np.ndarray:
        return np.column_stack([np.log1p(m.predict(items)) for m in self.models_])
