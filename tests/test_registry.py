"""The registry and its promotion gate, against a real SQLite MLflow store.

One store and three tiny logged models (constant-price DummyRegressors) are shared by the
module because logging models dominates the run time; each test registers them under its own
registered-model name, so tests do not see each other's versions or aliases.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.dummy import DummyRegressor

from pricer.tracking.gate import ALREADY_CHAMPION, PROMOTED, REJECTED, promote_if_better
from pricer.tracking.registry import CHALLENGER, CHAMPION, champion_uri, load_champion, register_candidate
from pricer.tracking.runs import configure

DIGEST = "d41d8cd98f00b204e9800998ecf8427e"
OTHER_DIGEST = "0cc175b9c0f1b6a831c399e269772661"
PRICES = (10.0, 20.0, 30.0)
FEATURES = pd.DataFrame({"x": [1.0, 2.0, 3.0]})


@dataclass(frozen=True)
class Store:
    uri: str
    models: dict[float, mlflow.models.model.ModelInfo]  # constant price -> logged model

    def model_uri(self, price: float) -> str:
        return self.models[price].model_uri

    def runs_uri(self, price: float) -> str:
        return f"runs:/{self.models[price].run_id}/model"


class RecordingClient(MlflowClient):
    """A real client that also remembers every registry write, to prove a re-run writes nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[tuple[str, tuple[Any, ...]]] = []

    def create_model_version(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        self.writes.append(("create_model_version", args))
        return super().create_model_version(*args, **kwargs)

    def set_model_version_tag(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.writes.append(("set_model_version_tag", args))
        super().set_model_version_tag(*args, **kwargs)

    def set_registered_model_alias(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.writes.append(("set_registered_model_alias", args))
        super().set_registered_model_alias(*args, **kwargs)

    def delete_registered_model_alias(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.writes.append(("delete_registered_model_alias", args))
        super().delete_registered_model_alias(*args, **kwargs)


def _log_constant_model(price: float) -> mlflow.models.model.ModelInfo:
    regressor = DummyRegressor(strategy="constant", constant=price).fit(FEATURES, [price] * len(FEATURES))
    with mlflow.start_run(run_name=f"constant-{price:g}"):
        # Explicit requirements skip MLflow's requirement inference, a slow subprocess per model.
        return mlflow.sklearn.log_model(
            regressor,
            name="model",
            signature=infer_signature(FEATURES, regressor.predict(FEATURES)),
            pip_requirements=["scikit-learn"],
        )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("mlruns")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as patch:
        # configure() prefers the environment, so point that at the temporary store too.
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        configure(uri, experiment="registry-tests")
        mlflow.set_experiment("registry-tests")
        models = {price: _log_constant_model(price) for price in PRICES}
        yield Store(uri, models)
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


@pytest.fixture
def client(store: Store) -> RecordingClient:
    return RecordingClient(store.uri, registry_uri=store.uri)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    return "pricer-test-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")


def _register(store: Store, client: MlflowClient, name: str, price: float, mae: float, digest: str = DIGEST):
    return register_candidate(store.model_uri(price), name, mae=mae, test_digest=digest, client=client)


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    # The SQLite store hands alias targets back as ints; compare them as version strings.
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def _snapshot(client: MlflowClient, name: str) -> dict[str, Any]:
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "aliases": _aliases(client, name),
        "versions": {
            str(v.version): (dict(v.tags), sorted(v.aliases), v.last_updated_timestamp) for v in versions
        },
    }


# --------------------------------------------------------------------------- registration


def test_register_candidate_tags_the_version_and_makes_it_challenger(store: Store, client, name: str) -> None:
    version = register_candidate(
        store.model_uri(10.0), name, mae=12.5, test_digest=DIGEST, metrics={"rmsle": 0.41}, client=client
    )
    assert str(version.version) == "1"
    # The SQLite registry keeps no model_id column: the logged model is known by its source URI.
    assert version.source == store.model_uri(10.0)
    assert version.run_id == store.models[10.0].run_id
    assert version.tags["pricer.mae"] == "12.5"
    assert version.tags["pricer.test_digest"] == DIGEST
    assert version.tags["pricer.rmsle"] == "0.41"
    assert _aliases(client, name) == {CHALLENGER: "1"}


def test_register_candidate_reuses_the_version_for_the_same_model(store: Store, client, name: str) -> None:
    first = register_candidate(store.runs_uri(20.0), name, mae=9.0, test_digest=DIGEST, client=client)
    before = _snapshot(client, name)
    client.writes.clear()
    # The same logged model, once by its run and once by its MLflow 3 model id.
    again = register_candidate(store.model_uri(20.0), name, mae=9.0, test_digest=DIGEST, client=client)
    assert str(again.version) == str(first.version)
    assert client.writes == []
    assert _snapshot(client, name) == before


def test_register_candidate_rejects_bad_scores(store: Store, client, name: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        register_candidate(store.model_uri(10.0), name, mae=float("nan"), test_digest=DIGEST, client=client)
    with pytest.raises(ValueError, match="test_digest"):
        register_candidate(store.model_uri(10.0), name, mae=1.0, test_digest="", client=client)
    with pytest.raises(ValueError, match="overwrite"):
        register_candidate(
            store.model_uri(10.0), name, mae=1.0, test_digest=DIGEST, metrics={"test_digest": 1.0},
            client=client,
        )


# --------------------------------------------------------------------------- the gate


def test_first_candidate_is_promoted(store: Store, client, name: str) -> None:
    _register(store, client, name, 10.0, mae=20.0)
    decision = promote_if_better(name, 1, client=client)
    assert decision.promoted and decision.decision == PROMOTED and decision.is_champion
    assert decision.champion_version is None and decision.champion_mae is None
    # Promotion takes @champion and frees @challenger.
    assert _aliases(client, name) == {CHAMPION: "1"}
    tags = client.get_model_version(name, "1").tags
    assert tags["pricer.gate.decision"] == PROMOTED
    assert tags["pricer.gate.reason"] == "no champion yet"
    assert tags["pricer.gate.candidate_mae"] == "20.0"
    assert tags["pricer.gate.champion_version"] == "none"


def test_better_candidate_is_promoted(store: Store, client, name: str) -> None:
    _register(store, client, name, 10.0, mae=20.0)
    promote_if_better(name, 1, client=client)
    _register(store, client, name, 20.0, mae=15.0)
    decision = promote_if_better(name, "2", client=client)
    assert decision.promoted and decision.decision == PROMOTED
    assert (decision.candidate_mae, decision.champion_mae, decision.champion_version) == (15.0, 20.0, "1")
    assert _aliases(client, name) == {CHAMPION: "2"}
    tags = client.get_model_version(name, "2").tags
    assert tags["pricer.gate.champion_mae"] == "20.0"
    assert tags["pricer.gate.champion_version"] == "1"
    assert tags["pricer.gate.reason"].startswith("better")


@pytest.mark.parametrize("candidate_mae, verdict", [(20.0, "tie"), (20.5, "worse")])
def test_equal_or_worse_candidate_is_not_promoted(
    store: Store, client, name: str, candidate_mae: float, verdict: str
) -> None:
    _register(store, client, name, 10.0, mae=20.0)
    promote_if_better(name, 1, client=client)
    _register(store, client, name, 20.0, mae=candidate_mae)
    decision = promote_if_better(name, 2, client=client)
    assert not decision.promoted and decision.decision == REJECTED and not decision.is_champion
    assert decision.reason.startswith(verdict)
    # The incumbent stays; the candidate stays under evaluation.
    assert _aliases(client, name) == {CHAMPION: "1", CHALLENGER: "2"}
    tags = client.get_model_version(name, "2").tags
    assert tags["pricer.gate.decision"] == REJECTED
    assert tags["pricer.gate.champion_mae"] == "20.0"


def test_rerunning_the_gate_and_registration_changes_nothing(store: Store, client, name: str) -> None:
    _register(store, client, name, 10.0, mae=20.0)
    promote_if_better(name, 1, client=client)
    _register(store, client, name, 20.0, mae=15.0)
    promote_if_better(name, 2, client=client)
    _register(store, client, name, 30.0, mae=18.0)
    promote_if_better(name, 3, client=client)
    before = _snapshot(client, name)
    client.writes.clear()

    again = promote_if_better(name, 2, client=client)
    assert again.decision == ALREADY_CHAMPION and not again.promoted and again.is_champion
    assert promote_if_better(name, 3, client=client).decision == REJECTED
    assert str(_register(store, client, name, 20.0, mae=15.0).version) == "2"
    assert str(_register(store, client, name, 30.0, mae=18.0).version) == "3"

    assert client.writes == []
    assert _snapshot(client, name) == before
    assert sorted(before["versions"]) == ["1", "2", "3"]


def test_different_test_split_without_rescorer_is_not_promoted(store: Store, client, name: str) -> None:
    _register(store, client, name, 10.0, mae=20.0, digest=DIGEST)
    promote_if_better(name, 1, client=client)
    _register(store, client, name, 20.0, mae=1.0, digest=OTHER_DIGEST)
    decision = promote_if_better(name, 2, client=client)
    assert decision.decision == REJECTED and not decision.promoted
    assert "rescorer" in decision.reason and OTHER_DIGEST in decision.reason
    assert decision.champion_mae is None and decision.champion_version == "1"
    assert _aliases(client, name)[CHAMPION] == "1"
    assert client.get_model_version(name, "2").tags["pricer.gate.champion_mae"] == "none"


def test_different_test_split_with_rescorer_compares_on_the_candidates_split(
    store: Store, client, name: str
) -> None:
    _register(store, client, name, 10.0, mae=20.0, digest=DIGEST)
    promote_if_better(name, 1, client=client)
    _register(store, client, name, 20.0, mae=15.0, digest=OTHER_DIGEST)
    _register(store, client, name, 30.0, mae=15.0, digest=OTHER_DIGEST)
    asked: list[str] = []

    def rescore(uri: str, mae: float) -> float:
        asked.append(uri)
        return mae

    # On the new split the champion scores 14: the candidate's 15 is worse, whatever the old tag says.
    worse = promote_if_better(name, 2, client=client, rescore_champion=lambda uri: rescore(uri, 14.0))
    assert worse.decision == REJECTED and worse.champion_mae == 14.0
    assert "rescored" in worse.reason

    better = promote_if_better(name, 3, client=client, rescore_champion=lambda uri: rescore(uri, 16.0))
    assert better.promoted and better.champion_mae == 16.0 and better.champion_version == "1"
    assert asked == [f"models:/{name}/1", f"models:/{name}/1"]
    # v3 took @challenger when it was registered, and gave it up when promoted.
    assert _aliases(client, name) == {CHAMPION: "3"}


def test_gate_refuses_a_version_without_scores(store: Store, client, name: str) -> None:
    client.create_registered_model(name)
    client.create_model_version(name, store.model_uri(10.0), model_id=store.models[10.0].model_id)
    with pytest.raises(ValueError, match="register_candidate"):
        promote_if_better(name, 1, client=client)


# --------------------------------------------------------------------------- consumers


def test_champion_uri_is_none_until_there_is_a_champion(store: Store, client, name: str) -> None:
    assert champion_uri("pricer-no-such-model", client=client) is None
    _register(store, client, name, 10.0, mae=20.0)
    assert champion_uri(name, client=client) is None
    promote_if_better(name, 1, client=client)
    assert champion_uri(name, client=client) == f"models:/{name}/1"


def test_champion_loads_by_alias_in_a_fresh_process(store: Store, client) -> None:
    name = "pricer-regressor"
    for version, (price, mae) in enumerate([(10.0, 20.0), (30.0, 15.0), (20.0, 25.0)], start=1):
        register_candidate(store.model_uri(price), name, mae=mae, test_digest=DIGEST, client=client)
        promote_if_better(name, version, client=client)
    assert _aliases(client, name) == {CHAMPION: "2", CHALLENGER: "3"}

    assert load_champion(name).predict(FEATURES).tolist() == [30.0, 30.0, 30.0]

    script = (
        "import json, mlflow.pyfunc, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/pricer-regressor@champion')\n"
        "print(json.dumps(model.predict(pd.DataFrame({'x': [1.0, 2.0]})).tolist()))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    env.pop("MLFLOW_REGISTRY_URI", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=Path(__file__).parent, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [30.0, 30.0]
