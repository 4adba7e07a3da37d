"""The leaderboard: the latest evaluation of every model in an MLflow experiment, best MAE first."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pricer.tracking.lineage import MODEL_TAG
from pricer.tracking.runs import DEFAULT_EXPERIMENT, default_tracking_uri

METRIC_COLUMNS = ("mae", "rmsle", "hit_rate", "r2", "unparseable", "n")
COLUMNS = ("model", *METRIC_COLUMNS, "run_id")
_COUNT_COLUMNS = ("unparseable", "n")
_PAGE_SIZE = 1000


def leaderboard(experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per model (tag ``pricer.model``) from its latest run with an ``mae`` metric, sorted by mae."""
    # Same precedence as pricer.tracking.runs.configure, so both read the same store.
    client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri or default_tracking_uri())
    found = client.get_experiment_by_name(experiment)
    latest: dict[str, Run] = {}
    if found is not None:
        for run in _runs_newest_first(client, found.experiment_id):
            model = run.data.tags.get(MODEL_TAG)
            if model and "mae" in run.data.metrics:
                latest.setdefault(model, run)
    table = _frame(_row(model, run) for model, run in latest.items())
    return table.sort_values(["mae", "model"], ignore_index=True)


def _runs_newest_first(client: MlflowClient, experiment_id: str) -> Iterator[Run]:
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id], order_by=["attributes.start_time DESC"], max_results=_PAGE_SIZE, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def _row(model: str, run: Run) -> dict[str, object]:
    metrics = run.data.metrics
    return {
        "model": model,
        **{name: metrics.get(name, math.nan) for name in METRIC_COLUMNS},
        "run_id": run.info.run_id,
    }


def _frame(rows: Iterable[dict[str, object]]) -> pd.DataFrame:
    table = pd.DataFrame(list(rows), columns=list(COLUMNS))
    # MLflow stores every metric as a float; counts read better as integers (nullable: a run may
    # lack one). Explicit dtypes also keep an empty leaderboard numeric.
    dtypes = {column: "Int64" if column in _COUNT_COLUMNS else "float64" for column in METRIC_COLUMNS}
    return table.astype(dtypes)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-style pipe table; numbers right-aligned, floats to 4 decimals, missing values blank."""
    align = ["---:" if pd.api.types.is_numeric_dtype(table[column]) else "---" for column in table.columns]
    lines = [_line(str(column) for column in table.columns), _line(align)]
    lines += [_line(_cell(value) for value in row) for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _line(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cell.replace("|", r"\|").replace("\n", " ") for cell in cells) + " |"


def _cell(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
