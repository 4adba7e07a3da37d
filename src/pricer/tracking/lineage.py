"""How runs relate: the tags that name what a run evaluated and on which rows, and the runs nested under one."""

from __future__ import annotations

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

MODEL_TAG = "pricer.model"  # the model a run evaluated: what the leaderboard groups by
TEST_DIGEST_TAG = "pricer.test_digest"  # the identity of the rows it was scored on


def descendants(client: MlflowClient, run: Run) -> list[Run]:
    """Every run nested under ``run``, at any depth."""
    found, frontier = [], [run.info.run_id]
    while frontier:  # MLflow's filter has no IN for tags: one search per parent
        children = [child for parent in frontier for child in client.search_runs(
            [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=1000)]
        found += children
        frontier = [child.info.run_id for child in children]
    return found
