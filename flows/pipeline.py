"""Prefect flow: the whole pipeline, one parent MLflow run with each stage's run nested under it.

curate -> baselines -> vector store -> frontier (when configured) -> finetune -> ensemble -> leaderboard
and champions. The file stages run through DVC one at a time and are skipped when their inputs did not
change; the frontier and ensemble steps read the registry, so Prefect caches them on a fingerprint of
what they read (``pricer.pipeline``). Every model is evaluated by the harness and promoted by the
registry's gate inside its own stage. ``python -m flows.pipeline`` is the main job: the pipeline, then
one deal-agent cycle, then where to look.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS

from flows.baselines import baselines_flow, publish_leaderboard
from flows.curate import curate_flow, repro_stage
from pricer.agents.config import load_agents_config
from pricer.stages import pipeline
from pricer.stages.params import load_params


# The fingerprint argument is what the cache key hashes; the task reads the same things itself.
def _frontier_config_path(agents_config: str) -> Path | None:
    section = load_agents_config(agents_config).agents.frontier
    return section.config if section is not None else None


@task(cache_policy=INPUTS, persist_result=True)
def frontier_eval(agents_config: str, fingerprint: str) -> dict:
    from pricer.stages.frontier import zero_shot_step

    path = _frontier_config_path(agents_config)
    if reason := pipeline.frontier_skip_reason(path):
        print(f"frontier skipped: {reason}")
        return {"skipped": reason}
    result = zero_shot_step(str(path))
    return {key: result[key] for key in ("name", "metrics", "registered")}


@task(cache_policy=INPUTS, persist_result=True)
def fit_ensemble(agents_config: str, fingerprint: str) -> dict:
    from pricer.stages.ensemble import fit_ensemble as fit

    result = fit(load_agents_config(agents_config).ensemble)
    return {"weights": dict(result.weights.weights), "test_mae": result.test_metrics["mae"],
            "decision": result.result.decision_name}


@task
def build_vectorstore(agents_config: str, root: str) -> dict:
    """The UI's map of the catalog and its citations, from the training split, whether or not a frontier key
    is set. After the baselines: they embedded these texts, so the store reads the embedding cache."""
    from dataclasses import asdict

    from pricer.agents.vectorstore import sync_store

    return asdict(sync_store(load_agents_config(agents_config), Path(root)))


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
    with pipeline.pipeline_run(params) as run:
        curated = curate_flow(str(root_path), params_path)
        baselines = baselines_flow(str(root_path), params_path)
        agents_path = str(root_path / agents_config)
        agents = load_agents_config(agents_path)
        vectorstore = build_vectorstore(agents_path, str(root_path))
        frontier = frontier_eval(agents_path, pipeline.frontier_fingerprint(
            _frontier_config_path(agents_path), Path(agents.ensemble.data_dir)))
        finetuned = repro_stage("finetune", str(root_path))
        ensemble = fit_ensemble(agents_path, pipeline.ensemble_fingerprint(agents.ensemble))
        leaderboard = publish_leaderboard(params.tracking.experiment)
        champions = publish_champions()
        pipeline.record_outcome(run.info.run_id, params.tracking)
    create_markdown_artifact(key="pipeline-leaderboard", markdown=leaderboard, description="After this pipeline run")
    return {"pipeline_run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "curate": curated, "baselines": baselines, "frontier": frontier,
            "finetune_ran": finetuned, "ensemble": ensemble, "leaderboard": leaderboard, "champions": champions,
            "vectorstore": vectorstore}


def main() -> None:
    """The main job: the pipeline on the embedded defaults, one agent cycle, then where to look."""
    from flows.deals import deals_flow
    from pricer.agents.local_feed import serving_demo_deals

    result = pipeline_flow()
    # The demo catalog's products on sale on 127.0.0.1: the configured web feeds need the internet.
    with serving_demo_deals("configs/agents.yaml", "data/curated/test.parquet") as demo_config:
        cycle = deals_flow(str(demo_config))
    uri = pipeline.tracking_uri_shown()
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
    experiment_id = str(result["experiment_id"])
    print(f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {uri} --port 5000   -> "
          f"{pipeline.experiment_link('http://127.0.0.1:5000', experiment_id)}")
    print("  Prefect UI:  .venv/bin/prefect server start   -> http://127.0.0.1:4200 (flow runs, artifacts)")
    print("  Leaderboard: reports/leaderboard.md (refresh: .venv/bin/pricer leaderboard; what changed since the last run: .venv/bin/pricer compare); per-stage metrics: .venv/bin/dvc metrics show")
    print("  Agents UI:   .venv/bin/pricer ui")


if __name__ == "__main__":
    main()
