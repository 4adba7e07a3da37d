"""params.yaml's sections, for a stage that reads only some of them (curation does not import the models).

``pricer.stages.params.Params`` types the whole file; a test holds its fields equal to ``SECTIONS``.
"""

from __future__ import annotations

from pathlib import Path

from pricer.core.config import load_sections
from pricer.data.config import CurateConfig
from pricer.tracking.runs import TrackingConfig

SECTIONS = ("curate", "baselines", "tracking")


def curate_sections(path: str | Path) -> tuple[CurateConfig, TrackingConfig]:
    """The ``curate`` and ``tracking`` sections, validated; any unknown top-level key is refused."""
    found = load_sections(path, SECTIONS, curate=CurateConfig, tracking=TrackingConfig)
    return found["curate"], found["tracking"]
