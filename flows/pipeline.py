"""Prefect flow: the whole pipeline, one parent MLflow run with each stage's run nested under it.

curate -> baselines -> frontier (when configured) -> finetune -> ensemble -> leaderboard and
champions. The file stages run through DVC one at a time and are skipped when their inputs did not
change; the frontier and ensemble steps read the registry, so Prefect caches them on a fingerprint of
what they read (``pricer.pipeline``). Every model is evaluated by the harness and promoted by the
registry's gate inside its own stage. ``python -m flows.pipeline`` is the main job: the pipeline, then
one deal-agent cycle, then where to look.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS

from flows.baselines import baselines_flow, publish_leaderboard
from flows.curate import curate_flow, repro_stage
from pricer import pipeline
from pricer.agents.config import load_agents_config
from pricer.config import load_params
from pricer.tracking.runs import PARENT_RUN_ENV, configure


# The fingerprint argument is what the cache key hashes; the task reads the same things itself.
@task(cache_policy=INPUTS, persist_result=True)
def frontier_eval(agents_config: str, fingerprint: str) -> dict:
    from pricer.llm.frontier import load_frontier_config
    from pricer.llm.frontier_eval import run_frontier_eval

    config = load_agents_config(agents_config)
    if reason := pipeline.frontier_skip_reason(config):
        print(f"frontier skipped: {reason}")
        return {"skipped": reason}
    result = run_frontier_eval(load_frontier_config(pipeline.frontier_config_path(config)))
    return {key: result[key] for key in ("name", "metrics", "registered")}


@task(cache_policy=INPUTS, persist_result=True)
def fit_ensemble(agents_config: str, fingerprint: str) -> dict:
    from pricer.agents.ensemble import fit_ensemble as fit

    result = fit(load_agents_config(agents_config))
    return {"weights": dict(result.weights.weights), "test_mae": result.test_metrics["mae"],
            "decision": result.decision.decision if result.decision else "not registered"}


@task
def publish_champions() -> list[dict]:
    rows = pipeline.champions()
    create_table_artifact(key="champions", table=rows, description="The @champion of each registered model")
    return rows


@flow(name="pipeline", log_prints=True)
def pipeline_flow(root: str = ".", params_path: str = "params.yaml",
                  agents_config: str = "configs/agents.yaml") -> dict[str, object]:
    root_path = Path(root).resolve()
    params = load_params(root_path / params_path)
    experiment_id = configure(params.tracking.tracking_uri, params.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name="pipeline", tags={"pricer.stage": "pipeline"}) as run:
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        try:
            curated = curate_flow(str(root_path), params_path)
            baselines = baselines_flow(str(root_path), params_path)
            agents_path = str(root_path / agents_config)
            agents = load_agents_config(agents_path)
            frontier = frontier_eval(agents_path, pipeline.frontier_fingerprint(agents))
            finetuned = repro_stage("finetune", str(root_path))
            ensemble = fit_ensemble(agents_path, pipeline.ensemble_fingerprint(agents))
            leaderboard = publish_leaderboard(params.tracking.experiment)
            champions = publish_champions()
        finally:
            os.environ.pop(PARENT_RUN_ENV, None)
        mlflow.log_text(leaderboard, "leaderboard.md")
    create_markdown_artifact(key="pipeline-leaderboard", markdown=leaderboard, description="After this pipeline run")
    return {"pipeline_run_id": run.info.run_id, "curate": curated, "baselines": baselines, "frontier": frontier,
            "finetune_ran": finetuned, "ensemble": ensemble, "leaderboard": leaderboard, "champions": champions}


def main() -> None:
    """The main job: the pipeline on the embedded defaults, one agent cycle, then where to look."""
    from flows.deals import deals_flow
    from pricer.agents.local_feed import serving_demo_deals

    result = pipeline_flow()
    # The demo catalog's products on sale on 127.0.0.1: the configured web feeds need the internet.
    with serving_demo_deals("configs/agents.yaml", "data/curated/test.parquet") as demo_config:
        cycle = deals_flow(str(demo_config))
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlruns/mlflow.db').resolve()}"
    Path("reports").mkdir(exist_ok=True)
    Path("reports/leaderboard.md").write_text(str(result["leaderboard"]))
    print("\n" + str(result["leaderboard"]))
    print(f"ensemble: {result['ensemble']}")
    print(f"\ndeal cycle: {cycle['deals']} demo deals scanned, {cycle['priced']} priced, "
          f"{len(cycle['opportunities'])} opportunities:")
    for opportunity in cycle["opportunities"]:
        print(f"  ${opportunity['price']:,.2f} vs estimate ${opportunity['estimate']:,.2f} "
              f"({opportunity['discount']:.0%} off)  {opportunity['title'][:70]}")
    print("\nWhere to look:")
    print(f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {uri} --port 5000   -> http://127.0.0.1:5000")
    print("  Prefect UI:  .venv/bin/prefect server start   -> http://127.0.0.1:4200 (flow runs, artifacts)")
    print("  Leaderboard: reports/leaderboard.md (refresh: .venv/bin/pricer compare); metrics: reports/metrics/*.json")
    print("  Agents UI:   .venv/bin/pricer ui")


if __name__ == "__main__":
    main()
