"""The ensemble: a weighted geometric mean of whatever member estimates are available.

Weights are fitted on the validation split by non-negative least squares in log space,
``log1p(price) ~ sum_i w_i * log1p(estimate_i)``, with a stiff extra row that makes them sum
to one. At inference the weights of the members that answered for an item are renormalised
to sum to one, so a member that is not registered, not configured or has no answer simply
drops out. The combiner is generic: members are names, estimates a dict of name -> values.

``fit_ensemble`` scores the fitted ensemble on the test split with the shared evaluation
harness and registers it as ``pricer-ensemble`` (a pyfunc, ``EnsemblePyfunc``, that loads
the members' champions) through the registry's candidate/promotion gate.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from pricer.baselines.features import texts

log = logging.getLogger(__name__)

WEIGHTS_ARTIFACT = "weights"
_STIFFNESS = 1e3  # weight of the sum-to-one row relative to the data rows


@dataclass(frozen=True)
class EnsembleWeights:
    """Member name -> non-negative weight (summing to 1 over the fitted members)."""

    weights: dict[str, float]
    source: str = "fitted"  # fitted | registered:<uri> | equal

    @classmethod
    def equal(cls, names: Sequence[str]) -> EnsembleWeights:
        names = list(dict.fromkeys(names))
        return cls({name: 1.0 / len(names) for name in names} if names else {}, "equal")

    def combine(self, estimates: Mapping[str, Sequence[float | None]]) -> np.ndarray:
        """Per item: the weighted geometric mean (in log1p space) over the members that answered.

        Members without a weight are used only when no weighted member answered (equally).
        An item no member answered gets NaN.
        """
        columns = {name: _as_array(values) for name, values in estimates.items()}
        if not columns:
            return np.array([], dtype=float)
        lengths = {len(values) for values in columns.values()}
        if len(lengths) != 1:
            raise ValueError(
                f"members gave different numbers of estimates: { {k: len(v) for k, v in columns.items()} }"
            )
        n = lengths.pop()
        names = list(columns)
        matrix = np.column_stack([columns[name] for name in names])  # (n, m)
        answered = np.isfinite(matrix) & (matrix > 0)
        logs = np.where(answered, np.log1p(np.where(answered, matrix, 0.0)), 0.0)
        weights = np.array([max(0.0, self.weights.get(name, 0.0)) for name in names])
        out = np.full(n, np.nan)
        for i in range(n):
            mask = answered[i]
            if not mask.any():
                continue
            w = np.where(mask, weights, 0.0)
            if w.sum() <= 0:  # no weighted member answered: the others, equally
                w = mask.astype(float)
            out[i] = math.expm1(float((w * logs[i]).sum() / w.sum()))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"weights": self.weights, "source": self.source}


def _as_array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if value is None else float(value) for value in values], dtype=float)


def fit_weights(estimates: Mapping[str, Sequence[float | None]], truth: Sequence[float]) -> EnsembleWeights:
    """NNLS in log1p space with sum-to-one, on the rows every member answered.

    A member that answered no row, or whose estimates never help, gets weight 0.
    """
    from scipy.optimize import nnls

    names = list(estimates)
    if not names:
        raise ValueError("no member estimates to fit")
    y = np.asarray(truth, dtype=float)
    matrix = np.column_stack([_as_array(estimates[name]) for name in names])
    if matrix.shape[0] != len(y):
        raise ValueError(f"{matrix.shape[0]} estimates per member for {len(y)} true prices")
    usable = [j for j in range(len(names)) if np.isfinite(matrix[:, j]).any()]
    if not usable:
        raise ValueError("no member answered any validation item")
    sub = matrix[:, usable]
    rows = np.isfinite(sub).all(axis=1) & (sub > 0).all(axis=1) & np.isfinite(y) & (y > 0)
    if rows.sum() < 2:
        log.warning(
            "only %d validation rows answered by every member; falling back to equal weights", rows.sum()
        )
        return EnsembleWeights.equal([names[j] for j in usable])
    a = np.log1p(sub[rows])
    b = np.log1p(y[rows])
    a_aug = np.vstack([a, np.full((1, a.shape[1]), _STIFFNESS)])
    b_aug = np.concatenate([b, [_STIFFNESS]])
    solution, _ = nnls(a_aug, b_aug)
    total = solution.sum()
    if total <= 0:
        return EnsembleWeights.equal([names[j] for j in usable])
    weights = {name: 0.0 for name in names}
    for j, value in zip(usable, solution, strict=True):
        weights[names[j]] = float(value / total)
    log.info(
        "ensemble weights fitted on %d validation items: %s",
        int(rows.sum()),
        ", ".join(f"{name} {value:.3f}" for name, value in weights.items()),
    )
    return EnsembleWeights(weights, "fitted")


# --------------------------------------------------------------------------- the registered model


def registered_weights(registered_name: str = "pricer-ensemble") -> EnsembleWeights | None:
    """The weights of the ``@champion`` of ``registered_name`` (from its MLmodel metadata), or None."""
    from mlflow.models import get_model_info

    from pricer.tracking.registry import champion_uri

    uri = champion_uri(registered_name)
    if uri is None:
        return None
    metadata = get_model_info(uri).metadata or {}
    weights = metadata.get("ensemble_weights")
    if not isinstance(weights, dict) or not weights:
        log.warning("%s has no ensemble_weights in its metadata; ignoring it", uri)
        return None
    return EnsembleWeights({str(k): float(v) for k, v in weights.items()}, f"registered:{uri}")


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """Loads each member's current ``@champion`` and combines their estimates with the fitted weights.

    A member whose registered model has no champion where the model is loaded is left out (its
    weight renormalised away), as the agents do at inference time.
    """

    def load_context(self, context: Any) -> None:
        from pricer.tracking.registry import champion_uri

        spec = json.loads(Path(context.artifacts[WEIGHTS_ARTIFACT]).read_text(encoding="utf-8"))
        self.weights = EnsembleWeights({k: float(v) for k, v in spec["weights"].items()}, "registered")
        self.members: dict[str, Any] = {}
        for member, registered in spec["members"].items():
            uri = champion_uri(registered)
            if uri is None:
                log.warning("ensemble member %s skipped: no @champion registered for %s", member, registered)
                continue
            self.members[member] = mlflow.pyfunc.load_model(uri)

    # A DataFrame hint: MLflow infers no schema from it (the signature is explicit).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        from pricer.serving.pyfunc import as_items

        # Every member gets the whole text, as the agents hand it to them and as the weights were fitted.
        items = pd.DataFrame({"text": texts(as_items(model_input))})
        estimates = {}
        for member, model in self.members.items():
            try:
                estimates[member] = list(np.asarray(model.predict(items), dtype=float))
            except Exception:
                log.exception("ensemble member %s failed; combining without it", member)
        if not estimates:
            return np.full(len(items), np.nan)
        return self.weights.combine(estimates)


def log_ensemble_model(
    weights: EnsembleWeights, members: Mapping[str, str], example: pd.DataFrame, name: str = "model"
) -> Any:
    """Log the ensemble pyfunc in the active run; the weights are also in the MLmodel metadata."""
    from pricer.serving.pyfunc import SIGNATURE

    spec = {"weights": weights.weights, "members": dict(members), "source": weights.source}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.json"
        path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=EnsemblePyfunc(),
            artifacts={WEIGHTS_ARTIFACT: str(path)},
            signature=SIGNATURE,
            input_example=example[["text"]].head(2).reset_index(drop=True),
            metadata={"ensemble_weights": weights.weights, "ensemble_members": dict(members)},
            pip_requirements=_pip_requirements(),
        )


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow", "pandas", "numpy", "scipy", "pyarrow"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


@dataclass
class EnsembleFit:
    weights: EnsembleWeights
    members: list[str]
    val_mae: dict[str, float]
    test_metrics: dict[str, float]
    run_id: str | None
    model_version: str | None
    decision: Any


def _mae(estimates: Sequence[float], truth: Sequence[float]) -> float:
    est = np.asarray(estimates, dtype=float)
    y = np.asarray(truth, dtype=float)
    ok = np.isfinite(est)
    return float(np.abs(est[ok] - y[ok]).mean()) if ok.any() else math.nan


def fit_ensemble(config: Any, agents: Sequence[Any] | None = None) -> EnsembleFit:
    """Fit the weights of the ready agents on val, score on test, log, register and gate.

    ``config`` is an ``AgentsConfig``; ``agents`` defaults to ``build_agents(config)``. Only
    agents that are ready (champion registered / endpoint configured) become members.
    """
    from pricer.agents.estimators import build_agents
    from pricer.evaluation.harness import evaluate_model
    from pricer.llm.frontier_eval import test_subset
    from pricer.tracking.registry import promote_if_better, register_candidate
    from pricer.tracking.runs import stage_run

    settings = config.ensemble
    agents = list(agents) if agents is not None else build_agents(config)
    members = [agent for agent in agents if agent.name in settings.members and agent.ready()]
    if not members:
        raise RuntimeError(
            "no ensemble member is ready: register a champion for "
            + ", ".join(settings.members.values())
            + " or configure the frontier endpoint"
        )
    data_dir = Path(settings.data_dir)
    val = pd.read_parquet(data_dir / "val.parquet")
    if settings.max_val_items is not None:
        val = val.head(settings.max_val_items)
    test, test_digest = test_subset(data_dir, settings.max_test_items)

    # The agents price a deal's whole text, so the weights are fitted on the items' whole text too
    # (``full_text``), not on the language models' token-budgeted ``text``.
    val_estimates = {agent.name: agent.estimate(texts(val)).estimates for agent in members}
    weights = fit_weights(val_estimates, val["price"].to_numpy(dtype=float))
    val_mae = {name: _mae(values, val["price"]) for name, values in val_estimates.items()}
    val_mae["ensemble"] = _mae(weights.combine(val_estimates), val["price"])

    test_estimates = {agent.name: agent.estimate(texts(test)).estimates for agent in members}
    # evaluate_model hands predict the ``text`` column: look the estimates up by it.
    combined = dict(zip(test["text"].astype(str), weights.combine(test_estimates), strict=False))

    def predict(batch: Sequence[str]) -> list[float]:
        return [combined.get(text, math.nan) for text in batch]

    member_models = {agent.name: settings.members[agent.name] for agent in members}
    with stage_run(
        "ensemble",
        {
            "members": member_models,
            "max_val_items": settings.max_val_items,
            "max_test_items": settings.max_test_items,
        },
        tags={"pricer.model": "ensemble", "pricer.test_digest": test_digest},
    ) as run:
        import mlflow

        run_id = run.info.run_id
        mlflow.log_params({f"weight.{name}": round(value, 6) for name, value in weights.weights.items()})
        mlflow.log_metrics(
            {f"val_mae.{name}": value for name, value in val_mae.items() if math.isfinite(value)}
        )
        result = evaluate_model(
            "ensemble",
            predict,
            test,
            reports_dir=Path(settings.reports_dir),
            run_id=run_id,
            test_digest=test_digest,
        )
        info = log_ensemble_model(weights, member_models, test)
        version, decision = None, None
        if settings.register_model:
            mae = float(result.metrics["mae"])
            registered = register_candidate(
                info.model_uri, settings.registered_name, mae=mae, test_digest=test_digest
            )
            version = str(registered.version)
            decision = promote_if_better(settings.registered_name, version)
            log.info("%s v%s: %s (%s)", settings.registered_name, version, decision.decision, decision.reason)
    return EnsembleFit(
        weights,
        [agent.name for agent in members],
        val_mae,
        {k: float(v) for k, v in result.metrics.items()},
        run_id,
        version,
        decision,
    )
