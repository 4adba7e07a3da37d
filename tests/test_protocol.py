"""The stage protocol: one identity for the rows scored, one set of model inputs for candidate and champion,
and a champion no consumer can load replaced rather than kept."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pricer.core.schema import MODEL_INPUTS
from pricer.data.config import CurateConfig, DemoSourceConfig
from pricer.data.curate import curate
from pricer.stages.protocol import evaluate_and_gate, load_split
from pricer.tracking.runs import configure


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("curated")
    curate(CurateConfig(source=DemoSourceConfig(n_items=800)), root=root)
    return root / "data" / "curated"


def test_the_digest_names_exactly_the_rows_scored(curated: Path, tmp_path: Path) -> None:
    whole, first = load_split(curated), load_split(curated, limit=30)
    assert len(first.frame) == 30 and first.digest != whole.digest
    # The same rows in another file (another compression, another row grouping) are the same rows.
    other = tmp_path / "copy"
    other.mkdir()
    pd.read_parquet(curated / "test.parquet").head(30).to_parquet(other / "test.parquet", compression="gzip",
                                                                  row_group_size=7)
    assert load_split(other).digest == first.digest
    assert load_split(curated, limit=30).digest == first.digest  # and it is stable


class ColumnRecorder(mlflow.pyfunc.PythonModel):
    """Prices every row at a fixed amount and records, in a file, the columns each call was handed."""

    def __init__(self, price: float, log: str) -> None:
        self.price, self.log = price, log

    def predict(self, context, model_input, params=None):
        with open(self.log, "a") as handle:
            handle.write(",".join(model_input.columns) + "\n")
        return np.full(len(model_input), self.price)


def _logged(price: float, log: Path) -> str:
    from pricer.serving.schema import log_pyfunc

    with mlflow.start_run(experiment_id=configure()) as run:
        info = log_pyfunc(ColumnRecorder(price, str(log)), {})
    return info.model_uri, run.info.run_id


def test_candidate_and_champion_are_handed_the_same_model_inputs(curated: Path, tmp_path: Path, mlflow_uri) -> None:
    split = load_split(curated, limit=40)
    log = tmp_path / "columns.txt"
    uri, run_id = _logged(30.0, log)
    first = evaluate_and_gate("first", uri, split, run_id=run_id, reports_dir=tmp_path, register_as="pricer-t")
    assert first.decision.decision == "promoted"
    # A candidate scored on other rows: the champion is rescored on the candidate's rows first.
    other = load_split(curated, limit=20)
    uri, run_id = _logged(31.0, log)
    second = evaluate_and_gate("second", uri, other, run_id=run_id, reports_dir=tmp_path, register_as="pricer-t")
    assert "rescored" in second.decision.reason
    seen = {line for line in log.read_text().splitlines()}
    assert seen == {",".join(name for name in MODEL_INPUTS if name in split.frame.columns)}


def test_a_champion_that_cannot_be_loaded_is_replaced(curated: Path, tmp_path: Path, mlflow_uri) -> None:
    import shutil

    split = load_split(curated, limit=40)
    uri, run_id = _logged(30.0, tmp_path / "a.txt")
    first = evaluate_and_gate("old", uri, split, run_id=run_id, reports_dir=tmp_path, register_as="pricer-u")
    assert first.decision.promoted
    # What an older release wrote and this code cannot read any more: its artifacts are gone.
    location = mlflow.get_logged_model(uri.removeprefix("models:/")).artifact_location
    shutil.rmtree(location.removeprefix("file://"))
    uri, run_id = _logged(99.0, tmp_path / "b.txt")
    other = load_split(curated, limit=20)
    second = evaluate_and_gate("new", uri, other, run_id=run_id, reports_dir=tmp_path, register_as="pricer-u")
    assert second.decision.promoted and "cannot be loaded" in second.decision.reason


class Oracle(mlflow.pyfunc.PythonModel):
    """Knows each row's price (by its text) and answers it ``off_by`` dollars high; silent on ``skip``."""

    def __init__(self, prices: dict[str, float], off_by: float, skip: set[str] = frozenset()) -> None:
        self.prices, self.off_by, self.skip = prices, off_by, set(skip)

    def predict(self, context, model_input, params=None):
        return np.array([np.nan if text in self.skip else self.prices[text] + self.off_by
                         for text in model_input["text"]])


def _logged_oracle(model: Oracle) -> tuple[str, str]:
    from pricer.serving.schema import log_pyfunc

    with mlflow.start_run(experiment_id=configure()) as run:
        info = log_pyfunc(model, {})
    return info.model_uri, run.info.run_id


def test_answering_only_the_easy_items_never_wins(curated: Path, tmp_path: Path, mlflow_uri) -> None:
    split = load_split(curated, limit=60)
    prices = dict(zip(split.frame["text"], split.frame["price"].astype(float), strict=False))
    uri, run_id = _logged_oracle(Oracle(prices, off_by=15.0))
    champion = evaluate_and_gate("steady", uri, split, run_id=run_id, reports_dir=tmp_path, register_as="pricer-e")
    assert champion.decision.promoted
    # Exact on the cheaper half, silent on the dearer half: an MAE of 0 on the items it answered.
    dear = set(split.frame.sort_values("price")["text"].tail(30))
    uri, run_id = _logged_oracle(Oracle(prices, off_by=0.0, skip=dear))
    selective = evaluate_and_gate("selective", uri, split, run_id=run_id, reports_dir=tmp_path,
                                  register_as="pricer-e")
    assert selective.candidate.mae == 0.0 and selective.candidate.metrics["unparseable"] == 30
    assert selective.decision.decision == "rejected" and not selective.decision.promoted
    assert mlflow.MlflowClient().get_registered_model("pricer-e").aliases["champion"] == int(
        champion.version)
