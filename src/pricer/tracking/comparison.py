"""What changed between two pipeline runs, and whether it helped: the reviewer's question in one call.

A pipeline run (``pricer.stage = pipeline``) carries every params.yaml value and the code's commit as
params, and each model's test MAE and hit rate and each registered name's champion MAE as metrics
(``pricer.stages.pipeline``). The stage and model runs nested under it carry the digests of the data
they were fed (``data.*_digest`` params) and the versions they registered, with the gate's decision.
``compare_runs`` lines two such runs up; ``pricer compare`` prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pricer.core.errors import ConfigError
from pricer.tracking.lineage import descendants
from pricer.tracking.runs import DEFAULT_EXPERIMENT

PIPELINE_STAGE = "pipeline"
_DIGEST_PREFIX = "data."


@dataclass(frozen=True)
class Change:
    name: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class MetricDelta:
    name: str  # "mae.stack", "champion_mae.pricer-regressor", ...
    before: float | None
    after: float | None

    @property
    def delta(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before


@dataclass(frozen=True)
class Decision:
    registered_name: str
    version: str
    decision: str
    reason: str


@dataclass
class RunComparison:
    before: str  # run ids, older first
    after: str
    params: list[Change] = field(default_factory=list)  # only those that differ
    data: list[Change] = field(default_factory=list)  # every split's digest; None: no stage read it in that run
    commit: Change | None = None
    metrics: list[MetricDelta] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)  # what the gate decided in the later run

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before, "after": self.after,
            "params": [vars(change) for change in self.params], "data": [vars(change) for change in self.data],
            "commit": vars(self.commit) if self.commit else None,
            "metrics": [{**vars(metric), "delta": metric.delta} for metric in self.metrics],
            "decisions": [vars(decision) for decision in self.decisions],
        }


def pipeline_runs(client: MlflowClient, experiment: str = DEFAULT_EXPERIMENT, last: int = 2) -> list[str]:
    """The ids of the ``last`` finished pipeline runs, older first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"no MLflow experiment {experiment!r} in {client.tracking_uri}")
    runs = client.search_runs([found.experiment_id], f"tags.`pricer.stage` = '{PIPELINE_STAGE}' "
                              "and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=last)
    if len(runs) < last:
        raise ConfigError(f"{len(runs)} finished pipeline run(s) in experiment {experiment!r}; "
                          f"comparing needs {last}: run the pipeline again")
    return [run.info.run_id for run in reversed(runs)]


def _digests(runs: list[Run]) -> dict[str, str]:
    digests: dict[str, str] = {}
    for run in runs:
        for name, value in run.data.params.items():
            if name.startswith(_DIGEST_PREFIX) and name.endswith("_digest"):
                digests.setdefault(name.removeprefix(_DIGEST_PREFIX).removesuffix("_digest"), value)
    return digests


def _decisions(client: MlflowClient, runs: list[Run]) -> list[Decision]:
    decisions = []
    for run in runs:
        for version in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            tags = version.tags
            if "pricer.gate.decision" in tags:
                decisions.append(Decision(version.name, str(version.version), tags["pricer.gate.decision"],
                                          tags.get("pricer.gate.reason", "")))
    return sorted(decisions, key=lambda decision: (decision.registered_name, int(decision.version)))


def _changes(before: dict[str, str], after: dict[str, str]) -> list[Change]:
    return [Change(name, before.get(name), after.get(name)) for name in sorted(set(before) | set(after))
            if before.get(name) != after.get(name)]


def _all(before: dict[str, str], after: dict[str, str]) -> list[Change]:
    return [Change(name, before.get(name), after.get(name)) for name in sorted(set(before) | set(after))]


def compare_runs(client: MlflowClient, before_id: str, after_id: str) -> RunComparison:
    """Line up two pipeline runs: params that differ, data digests, commit, metric deltas, the later gate."""
    before, after = client.get_run(before_id), client.get_run(after_id)
    for run in (before, after):
        if run.data.tags.get("pricer.stage") != PIPELINE_STAGE:
            raise ConfigError(f"run {run.info.run_id} is not a pipeline run (pricer.stage = "
                              f"{run.data.tags.get('pricer.stage')!r})")
    params_before = {k: v for k, v in before.data.params.items() if k != "git.commit"}
    params_after = {k: v for k, v in after.data.params.items() if k != "git.commit"}
    below_before, below_after = descendants(client, before), descendants(client, after)
    names = sorted(set(before.data.metrics) | set(after.data.metrics))
    metrics = [MetricDelta(name, _finite(before.data.metrics.get(name)), _finite(after.data.metrics.get(name)))
               for name in names]
    commit = Change("git.commit", before.data.params.get("git.commit"), after.data.params.get("git.commit"))
    return RunComparison(
        before_id, after_id, _changes(params_before, params_after),
        _all(_digests(below_before), _digests(below_after)),
        commit if commit.before != commit.after else None, metrics, _decisions(client, below_after))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
