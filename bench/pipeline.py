"""Wall time of the whole pipeline: a full run, a no-change re-run and a one-parameter change.

    python bench/pipeline.py                 # the embedded defaults (6,000 demo items)
    python bench/pipeline.py --n-items 1500  # a quicker look

Runs ``flows.pipeline.pipeline_flow`` three times in a fresh git + DVC workspace (its own MLflow
store; Prefect's API is whatever ``PREFECT_API_URL`` names, else a temporary local server): from
nothing, again with nothing changed (target: under 10% of the full run), and after changing one
parameter of the fine-tuning config (only the finetune stage should run again, and the ensemble
after it only if the new specialist became champion: the ensemble reads champions). For each run it
prints the wall time and the stage runs MLflow recorded under that pipeline run, which is what
actually ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TUNED_CONFIG = "configs/finetune/tiny.yaml"


def stages_run(pipeline_run_id: str) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(pipeline_run_id)
    children = client.search_runs([run.info.experiment_id],
                                   filter_string=f"tags.`mlflow.parentRunId` = '{pipeline_run_id}'")
    return sorted(child.data.tags.get("pricer.stage", child.info.run_name) for child in children)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-items", type=int, help="demo items to curate (default: params.yaml's)")
    parser.add_argument("--workdir", type=Path, help="where to build the workspace (default: a temp folder)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pricer.stages.dvc_runner import new_workspace

    with tempfile.TemporaryDirectory() as tmp:
        root = new_workspace((args.workdir or Path(tmp)) / "pricer-bench-pipeline", REPO)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        os.chdir(root)
        if args.n_items:
            params = yaml.safe_load((root / "params.yaml").read_text())
            params["curate"]["source"]["n_items"] = args.n_items
            (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        from flows.pipeline import pipeline_flow

        def change_one_parameter() -> None:
            config = yaml.safe_load((root / TUNED_CONFIG).read_text())
            config["training"]["learning_rate"] *= 0.5
            (root / TUNED_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))

        rows = []
        for label, before in (("full run", None), ("no-change re-run", None),
                              ("one parameter changed (finetune learning_rate)", change_one_parameter)):
            if before:
                before()
            started = time.perf_counter()
            result = pipeline_flow(str(root))
            seconds = time.perf_counter() - started
            ran = stages_run(result["pipeline_run_id"])
            rows.append((label, seconds, ran))
            print(f"{label}: {seconds:,.1f} s; stage runs: {', '.join(ran) or 'none'}", file=sys.stderr, flush=True)

    full = rows[0][1]
    print(f"\n{'run':<48} {'wall s':>8} {'of full':>8}  stages that ran")
    for label, seconds, ran in rows:
        print(f"{label:<48} {seconds:>8,.1f} {seconds / full:>8.1%}  {', '.join(ran) or 'none (all skipped or cached)'}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # flows/ is a folder of the repository, not of the installed package
    main()
