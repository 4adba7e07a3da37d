"""Prefect flow: the whole pipeline, one parent MLflow run with each stage's run nested under it."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from prefect import flow

from flows.curate import curate_flow
from pricer.config import load_params
from pricer.tracking.runs import PARENT_RUN_ENV, configure


@flow(name="pipeline", log_prints=True)
def pipeline_flow(root: str = ".", params_path: str = "params.yaml") -> dict[str, object]:
    root_path = Path(root).resolve()
    params = load_params(root_path / params_path)
    experiment_id = configure(params.tracking.tracking_uri, params.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name="pipeline", tags={"pricer.stage": "pipeline"}) as run:
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        try:
            curated = curate_flow(str(root_path), params_path)
        finally:
            os.environ.pop(PARENT_RUN_ENV, None)
    return {"pipeline_run_id": run.info.run_id, "curate": curated}


if __name__ == "__main__":
    pipeline_flow()
