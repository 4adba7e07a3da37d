"""The fine-tuning stage: train a LoRA adapter, score the base and the fine-tuned model on the
same test split, log the adapter as a pyfunc, register it as ``pricer-specialist`` and gate it.

``run_finetune`` is what the CLI and DVC call. It is built from step functions that take and
return plain values (paths, run ids, model URIs, metric dicts), so the Prefect flow in
``flows/finetune.py`` composes the very same steps as tasks.

MLflow record: one stage run "finetune" (nested under the pipeline run when there is one) with
the config as params and the training curves; two child runs, "specialist-base" and
"specialist-finetuned", each with the harness's metrics and reports on the same test split;
the fine-tuned run also holds the logged adapter (the model that gets registered).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import mlflow

from pricer.core.files import atomic_write_json, file_digest, json_safe
from pricer.llm.config import FinetuneConfig, load_finetune_config
from pricer.llm.loading import base_model_id
from pricer.stages.harness import evaluate_model, publish_plot_data
from pricer.stages.protocol import Candidate, ScoredSplit, gate, load_split, score_candidate
from pricer.tracking.lineage import MODEL_TAG, TEST_DIGEST_TAG
from pricer.tracking.runs import configure, default_tracking_uri, stage_run

log = logging.getLogger(__name__)

BASE_RUN = "specialist-base"
FINETUNED_RUN = "specialist-finetuned"


# --- config and data --------------------------------------------------------------------------


def resolve_config(config_path: str | Path, data_dir: str | Path | None = None, root: str | Path | None = None
                   ) -> FinetuneConfig:
    """The config with every relative path (data, output, reports) made absolute under ``root``."""
    root = Path(root or Path.cwd()).resolve()
    config_path = Path(config_path)
    config = load_finetune_config(config_path if config_path.is_absolute() else root / config_path)

    def under_root(path: str | Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else root / path

    return config.model_copy(update={
        "data_dir": under_root(data_dir or config.data_dir),
        "reports_dir": under_root(config.reports_dir),
        "summary_path": under_root(config.summary_path),
        "training": config.training.model_copy(update={"output_dir": under_root(config.training.output_dir)}),
    })


def load_test(config: FinetuneConfig) -> ScoredSplit:
    """The test rows scored (the first ``max_test_items``) and the digest that names exactly them."""
    return load_split(config.data_dir, "test", config.max_test_items)


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()
            if isinstance(value, int | float) and math.isfinite(float(value))}


def _relative(path: str | Path | None) -> str | None:
    """A path under the working directory as a relative one (the summary file is versioned)."""
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --- steps ------------------------------------------------------------------------------------


def _tracking(root: str | Path | None) -> None:
    """Point MLflow at the project's store from any thread (Prefect runs tasks in worker threads)."""
    configure(default_tracking_uri(Path(root).resolve()) if root else None)


def train_step(config_path: str | Path, *, run_id: str | None, data_dir: str | Path | None = None,
               root: str | Path | None = None, resume: bool = True) -> dict[str, Any]:
    """Train (or resume) the adapter; the curves go to ``run_id``. Returns TrainResult.summary()."""
    from pricer.llm.train import train

    if run_id:  # without a run nothing is logged: ranks other than 0 never touch the store
        _tracking(root)
    config = resolve_config(config_path, data_dir, root)
    result = train(config, resume=resume, run_id=run_id)
    summary = result.summary()
    if run_id:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        for key in ("global_step", "train_loss_first", "train_loss_last", "eval_loss_last", "train_seconds",
                    "n_train", "n_truncated"):
            value = summary.get(key)
            if isinstance(value, int | float) and math.isfinite(float(value)):
                client.log_metric(run_id, f"train.{key}", float(value))
        client.set_tag(run_id, "pricer.resumed_from", str(summary["resumed_from"] or "none"))
    return summary


def _child_run(name: str, parent_run_id: str | None, tags: dict[str, str]):
    """A run under ``parent_run_id``, in the parent's experiment, whichever thread this is."""
    from mlflow.tracking import MlflowClient

    active = mlflow.active_run()
    if parent_run_id:
        experiment_id = MlflowClient().get_run(parent_run_id).info.experiment_id
    else:
        experiment_id = active.info.experiment_id if active else configure()
    return mlflow.start_run(
        run_name=name,
        nested=active is not None,
        parent_run_id=parent_run_id,
        experiment_id=experiment_id,
        tags=tags,
    )


def evaluate_step(config_path: str | Path, *, which: str, adapter_dir: str | Path | None = None,
                  parent_run_id: str | None = None, data_dir: str | Path | None = None,
                  root: str | Path | None = None) -> dict[str, Any]:
    """Score the base model (``which="base"``) or the logged adapter (``"finetuned"``) with the harness.

    One child run per model, holding the metrics and reports. The fine-tuned run logs the adapter as a
    pyfunc and scores that logged model through the stage protocol; its URI is returned for the gate.
    The base model is a reference, never registered: its own predictor prices the curated prompts.
    """
    if which not in ("base", "finetuned"):
        raise ValueError(f"which must be 'base' or 'finetuned', got {which!r}")
    _tracking(root)
    config = resolve_config(config_path, data_dir, root)
    split = load_test(config)
    name = BASE_RUN if which == "base" else FINETUNED_RUN
    tags = {MODEL_TAG: name, "pricer.family": config.registered_name,
            "pricer.base_model": base_model_id(config.model), TEST_DIGEST_TAG: split.digest}
    with _child_run(name, parent_run_id, tags) as run:
        mlflow.log_params({"base_model": base_model_id(config.model), "base_kind": config.model.kind,
                           "base_revision": getattr(config.model, "revision", None) or "",
                           **{f"inference.{key}": value for key, value in config.inference.model_dump().items()},
                           "n_test": len(split.frame), "weights": "base" if which == "base" else "lora-adapter",
                           "data.test_digest": split.digest})
        if which == "base":
            metrics, model_uri = _score_base(config, split, run.info.run_id), None
        else:
            from pricer.serving.specialist import log_specialist

            info = log_specialist(Path(adapter_dir or config.adapter_dir))
            candidate = score_candidate(name, info.model_uri, split, run_id=run.info.run_id,
                                        reports_dir=config.reports_dir)
            metrics, model_uri = candidate.metrics, info.model_uri
    return {"run_id": run.info.run_id, "metrics": dict(metrics), "model_uri": model_uri, "test_digest": split.digest}


def _score_base(config: FinetuneConfig, split: ScoredSplit, run_id: str) -> dict[str, Any]:
    from pricer.llm.inference import make_predictor
    from pricer.llm.loading import load_base_model, load_base_tokenizer

    tokenizer = load_base_tokenizer(config.model)
    model = load_base_model(config.model, config.quantization, tokenizer=tokenizer)
    predictor = make_predictor(model, tokenizer, method=config.inference.method,
                               batch_size=config.inference.batch_size,
                               max_new_tokens=config.inference.max_new_tokens)
    result = evaluate_model(BASE_RUN, lambda batch: predictor(batch["prompt"].astype(str).tolist()), split.frame,
                            reports_dir=config.reports_dir, run_id=run_id, test_digest=split.digest)
    return dict(result.metrics)


def register_step(config_path: str | Path, *, model_uri: str, metrics: dict[str, Any], run_id: str = "",
                  data_dir: str | Path | None = None, root: str | Path | None = None) -> dict[str, Any]:
    """Register the logged adapter as a ``pricer-specialist`` version and run the promotion gate."""
    _tracking(root)
    config = resolve_config(config_path, data_dir, root)
    candidate = Candidate(FINETUNED_RUN, model_uri, run_id, {k: float(v) for k, v in metrics.items()})
    return gate(candidate, config.registered_name, load_test(config), config.gate).summary()


def write_summary(config: FinetuneConfig, config_path: str | Path, train: dict[str, Any],
                  base: dict[str, Any], tuned: dict[str, Any], promotion: dict[str, Any]) -> dict[str, Any]:
    """reports/finetune.json (the stage's summary, identifiers included) and the dict the stage returns; the
    fine-tuned model's predictions go where dvc.yaml's plots read them."""
    base_mae, tuned_mae = base["metrics"].get("mae"), tuned["metrics"].get("mae")
    improvement = None
    if all(value is not None and math.isfinite(value) for value in (base_mae, tuned_mae)):
        improvement = float(base_mae) - float(tuned_mae)
    summary = json_safe({
        "config": str(config_path),
        "base_model": base_model_id(config.model),
        "train": {key: _relative(value) if key == "resumed_from" else value
                  for key, value in train.items() if key != "adapter_dir"},
        "adapter_dir": _relative(train.get("adapter_dir")),
        "base": base["metrics"],
        "finetuned": tuned["metrics"],
        "mae_improvement": improvement,
        "test_digest": tuned.get("test_digest"),
        "model_uri": tuned.get("model_uri"),
        "promotion": promotion,
    })
    atomic_write_json(config.summary_path, summary)
    if (Path(config.reports_dir) / "eval" / FINETUNED_RUN).is_dir():
        publish_plot_data(config.reports_dir, FINETUNED_RUN)
    return summary


def stage_params(config: FinetuneConfig, config_path: str | Path) -> dict[str, Any]:
    return {"config_file": str(config_path), "base_model": base_model_id(config.model),
            **config.model_dump(mode="json", exclude={"data_dir", "reports_dir", "summary_path"})}


# --- the stage --------------------------------------------------------------------------------


def finetune_run(config: FinetuneConfig, config_path: str | Path, root: str | Path | None,
                 runner: str = "cli") -> Any:
    """The stage's MLflow run: the config as params; the test rows' and training data's digests as tags."""
    tags = {"pricer.family": config.registered_name, TEST_DIGEST_TAG: load_test(config).digest,
            "pricer.runner": runner}
    if (train_path := config.data_dir / "train.parquet").exists():
        tags["pricer.train_digest"] = file_digest(train_path)
    return stage_run("finetune", stage_params(config, config_path), tags=tags, wandb=config.wandb,
                     tracking_uri=default_tracking_uri(Path(root).resolve()) if root else None)


def is_main_process() -> bool:
    """False on the other ranks of a multi-process launch (``accelerate launch`` and torchrun set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def run_finetune(config_path: Path, data_dir: Path | None = None, resume: bool = True,
                 *, root: Path | None = None) -> dict[str, Any]:
    """Train, score base and fine-tuned, log + register + gate; returns the summary it writes.

    Summary keys: ``train`` (global_step, train_loss_first/last, eval_loss_*, tokens_per_s, ...),
    ``base`` and ``finetuned`` (harness metrics on the same test rows), ``mae_improvement``,
    ``promotion`` (the gate's decision) and where things are (adapter_dir, model_uri).
    """
    if not is_main_process():
        # The other ranks of `accelerate launch` only train: rank 0 owns the run, the scores and the registry.
        train_step(config_path, run_id=None, data_dir=data_dir, root=root, resume=resume)
        return {}
    config = resolve_config(config_path, data_dir, root)
    with finetune_run(config, config_path, root) as run:
        run_id = run.info.run_id
        trained = train_step(config_path, run_id=run_id, data_dir=data_dir, root=root, resume=resume)
        base = evaluate_step(config_path, which="base", parent_run_id=run_id, data_dir=data_dir, root=root)
        tuned = evaluate_step(config_path, which="finetuned", adapter_dir=trained["adapter_dir"],
                              parent_run_id=run_id, data_dir=data_dir, root=root)
        if tuned["model_uri"] is None:
            raise RuntimeError("the fine-tuned model was not logged")
        promotion = register_step(config_path, model_uri=tuned["model_uri"], metrics=tuned["metrics"],
                                  run_id=tuned["run_id"], data_dir=data_dir, root=root)
        summary = write_summary(config, config_path, trained, base, tuned, promotion)
        log_stage_result(run_id, summary)
    return summary


def log_stage_result(run_id: str, summary: dict[str, Any]) -> None:
    """The headline numbers on the stage run, and the summary file as an artifact."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for prefix in ("base", "finetuned"):
        for key, value in _finite(summary.get(prefix) or {}).items():
            client.log_metric(run_id, f"{prefix}.{key}", value)
    if summary.get("mae_improvement") is not None:
        client.log_metric(run_id, "mae_improvement", float(summary["mae_improvement"]))
    promotion = summary.get("promotion") or {}
    client.set_tag(run_id, "pricer.gate.decision", str(promotion.get("decision")))
    client.log_dict(run_id, summary, "finetune_summary.json")
