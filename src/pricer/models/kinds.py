"""Every model kind a stack may blend, as one union of specs discriminated on ``kind``.

``pricer.models.specs`` adds the stack itself: the union a config's model list is read with.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from pricer.models.base import PriceModelSpec
from pricer.models.boost import BoostSpec, TextRidgeSpec
from pricer.models.classic import (
    EmbedLRSpec,
    EmbedRFSpec,
    EmbedSVRSpec,
    FeaturesLRSpec,
    MeanSpec,
    RandomSpec,
    TfidfLRSpec,
    XGBoostSpec,
)
from pricer.models.neighbours import KnnSpec
from pricer.models.reference import REFERENCE_SPECS

MEMBER_SPECS: tuple[type[PriceModelSpec], ...] = (
    RandomSpec, MeanSpec, FeaturesLRSpec, TfidfLRSpec, EmbedLRSpec, EmbedSVRSpec, EmbedRFSpec, XGBoostSpec,
    TextRidgeSpec, KnnSpec, BoostSpec, *REFERENCE_SPECS,
)
MemberSpec = Annotated[Union[MEMBER_SPECS], Field(discriminator="kind")]  # noqa: UP007 - a tuple of types
