"""The union of every model kind (``ModelSpec``) that ``baselines.models`` in params.yaml lists."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from pricer.core.config import validate
from pricer.models.base import PriceModelSpec
from pricer.models.kinds import MEMBER_SPECS
from pricer.models.stack import StackSpec

SPECS: tuple[type[PriceModelSpec], ...] = (*MEMBER_SPECS, StackSpec)
ModelSpec = Annotated[Union[SPECS], Field(discriminator="kind")]  # noqa: UP007 - a tuple of types
SPEC_CLASSES: dict[str, type[PriceModelSpec]] = {spec.model_fields["kind"].default: spec for spec in SPECS}


_ADAPTER = TypeAdapter(ModelSpec)


def model_spec(data: Any, origin: str = "<model spec>") -> PriceModelSpec:
    """One spec from YAML-like data (``"boost"`` or ``{"kind": "boost", "k": 60}``); ConfigError names bad fields."""
    return validate(_ADAPTER, {"kind": data} if isinstance(data, str) else data, origin)
