"""The registry and its promotion gate, against a real SQLite MLflow store.

One store and three tiny logged models (constant-price DummyRegressors) are shared by the
module because logging models dominates the run time; each test registers them under its own
registered-model name, so tests do not see each other's versions or aliases. What the gate compares
are per-item scores, stored on a scoring run: here, answers off the true price by a set amount.
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
from pricer.tracking.scores import ItemScores

DIGEST = "d41d8cd98f00b204e9800998ecf8427e"
OTHER_DIGEST = "0cc175b9c0f1b6a831c399e269772661"
PRICES = (10.0, 20.0, 30.0)
FEATURES = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
TRUTH = [10.0 * (item + 1) for item in range(40)]  # the test rows' true prices
IDS = [f"item-{item}" for item in range(40)]


@dataclass(frozen=True)
class Store:
    uri: str
    models: dict[float, mlflow.models.model.ModelInfo]  # constant price -> logged model
    scoring_runs: dict[tuple, str]  # (digest, estimates) -> the run that stored them

    def scores_run(self, estimates: list[float | None], digest: str = DIGEST) -> str:
        """The run holding these answers on the test rows (one per distinct answers: a rerun reuses it)."""
        key = (digest, tuple(estimates))
        if key not in self.scoring_runs:
            with mlflow.start_run(run_name="scoring") as run:
                ItemScores.of(digest, IDS, TRUTH, estimates).log(run.info.run_id)
            self.scoring_runs[key] = run.info.run_id
        return self.scoring_runs[key]

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
        yield Store(uri, models, {})
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


@pytest.fixture
def client(store: Store) -> RecordingClient:
    return RecordingClient(store.uri, registry_uri=store.uri)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    return "pricer-test-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")


def off_by(usd: float) -> list[float]:
    """Answers each ``usd`` from the truth: an MAE of ``usd`` on every resample of the items."""
    return [price + usd for price in TRUTH]


def _register(store: Store, client: MlflowClient, name: str, price: float, mae: float, digest: str = DIGEST,
              estimates: list[float | None] | None = None):
    estimates = off_by(mae) if estimates is None else estimates
    return register_candidate(store.model_uri(price), name, mae=mae, test_digest=digest,
                              scores_run_id=store.scores_run(estimates, digest), client=client)


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
    scores_run = store.scores_run(off_by(12.5))
    version = register_candidate(
        store.model_uri(10.0), name, mae=12.5, test_digest=DIGEST, scores_run_id=scores_run,
        metrics={"rmsle": 0.41}, client=client,
    )
    assert str(version.version) == "1"
    # The SQLite registry keeps no model_id column: the logged model is known by its source URI.
    assert version.source == store.model_uri(10.0)
    assert version.run_id == store.models[10.0].run_id
    assert version.tags["pricer.mae"] == "12.5"
    assert version.tags["pricer.test_digest"] == DIGEST
    assert version.tags["pricer.rmsle"] == "0.41"
    assert version.tags["pricer.scores_run"] == scores_run
    assert _aliases(client, name) == {CHALLENGER: "1"}


def test_register_candidate_reuses_the_version_for_the_same_model(store: Store, client, name: str) -> None:
    scores_run = store.scores_run(off_by(9.0))
    first = register_candidate(store.runs_uri(20.0), name, mae=9.0, test_digest=DIGEST, scores_run_id=scores_run,
                               client=client)
    before = _snapshot(client, name)
    client.writes.clear()
    # The same logged model, once by its run and once by its MLflow 3 model id.
    again = register_candidate(store.model_uri(20.0), name, mae=9.0, test_digest=DIGEST, scores_run_id=scores_run,
                               client=client)
    assert str(again.version) == str(first.version)
    assert client.writes == []
    assert _snapshot(client, name) == before


def test_register_candidate_rejects_bad_scores(store: Store, client, name: str) -> None:
    run = store.scores_run(off_by(1.0))
    with pytest.raises(ValueError, match="finite"):
        register_candidate(store.model_uri(10.0), name, mae=float("nan"), test_digest=DIGEST, scores_run_id=run,
                           client=client)
    with pytest.raises(ValueError, match="test_digest"):
        register_candidate(store.model_uri(10.0), name, mae=1.0, test_digest="", scores_run_id=run, client=client)
    with pytest.raises(ValueError, match="overwrite"):
        register_candidate(
            store.model_uri(10.0), name, mae=1.0, test_digest=DIGEST, scores_run_id=run,
            metrics={"test_digest": 1.0}, client=client,
        )
    # Scores on other rows than the digest names are no scores for the gate.
    with pytest.raises(ValueError, match="per-item scores"):
        register_candidate(store.model_uri(10.0), name, mae=1.0, test_digest=OTHER_DIGEST, scores_run_id=run,
                           client=client)


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
    # The decision in words on the version itself, what the registry UI shows first.
    described = client.get_model_version(name, "2").description
    assert described.startswith("Promoted to @champion by the gate. Better: candidate MAE 15.0 vs champion v1")


@pytest.mark.parametrize("candidate_mae, verdict", [(20.0, "not better beyond the noise"), (20.5, "worse")])
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
    assert client.get_model_version(name, "2").description.startswith("Not promoted: v1 stays @champion")


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

    def rescore(uri: str, mae: float) -> list[float]:
        asked.append(uri)
        return off_by(mae)

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
        _register(store, client, name, price, mae=mae)
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


# --------------------------------------------------------------------------- the gate's evidence


def test_a_candidate_that_answers_fewer_items_does_not_win(store: Store, client, name: str) -> None:
    _register(store, client, name, 10.0, mae=20.0)
    promote_if_better(name, 1, client=client)
    # Near perfect on the 30 cheapest items, silent on the 10 dearest: an MAE of 1 on what it answered.
    selective = [price + 1.0 for price in TRUTH[:30]] + [None] * 10
    _register(store, client, name, 20.0, mae=1.0, estimates=selective)
    decision = promote_if_better(name, 2, client=client)
    assert decision.decision == REJECTED and _aliases(client, name)[CHAMPION] == "1"
    # Unanswered items are scored at the stated fallback ($0: the whole price is the error).
    assert decision.candidate_mae == pytest.approx((30 * 1.0 + sum(TRUTH[30:])) / 40)
    tags = client.get_model_version(name, "2").tags
    assert tags["pricer.gate.candidate_unparseable"] == "10" and tags["pricer.gate.champion_unparseable"] == "0"
    assert tags["pricer.gate.n_items"] == "40" and tags["pricer.gate.unparseable_estimate_usd"] == "0.0"


def _noisy(mean_error: float) -> list[float]:
    """Errors spread from 0 to twice ``mean_error`` across the items: the same mean, much noise."""
    spread = [mean_error * 2 * ((item * 7) % 40) / 39 for item in range(40)]
    return [price + error for price, error in zip(TRUTH, spread, strict=True)]


def test_a_gain_within_the_noise_keeps_the_champion(store: Store, client, name: str) -> None:
    _register(store, client, name, 10.0, mae=20.0)
    promote_if_better(name, 1, client=client)
    _register(store, client, name, 20.0, mae=19.0, estimates=_noisy(19.0))
    decision = promote_if_better(name, 2, client=client)
    assert decision.candidate_mae < decision.champion_mae == 20.0  # lower on these items ...
    assert decision.decision == REJECTED and decision.gain.low < 0 < decision.gain.mean  # ... but not surely
    assert decision.reason.startswith("not better beyond the noise")
    tags = client.get_model_version(name, "2").tags
    assert float(tags["pricer.gate.gain_low"]) == decision.gain.low < 0
    assert float(tags["pricer.gate.gain"]) == pytest.approx(1.0) and tags["pricer.gate.confidence"] == "0.9"
    # The interval is seeded by the rows: the same evidence, the same decision, on every retry.
    assert promote_if_better(name, 2, client=client).gain == decision.gain


def test_the_confidence_asked_for_sets_the_margin(store: Store, client, name: str) -> None:
    from pricer.core.comparison import GateSettings

    _register(store, client, name, 10.0, mae=20.0)
    promote_if_better(name, 1, client=client)
    _register(store, client, name, 20.0, mae=19.0, estimates=_noisy(19.0))
    assert promote_if_better(name, 2, client=client, settings=GateSettings(confidence=0.99)).decision == REJECTED
    relaxed = promote_if_better(name, 2, client=client, settings=GateSettings(confidence=0.51))
    assert relaxed.promoted and relaxed.gain.low > 0
    assert client.get_model_version(name, "2").tags["pricer.gate.confidence"] == "0.51"


def test_a_clear_gain_is_promoted_with_its_interval(store: Store, client, name: str) -> None:
    _register(store, client, name, 10.0, mae=20.0)
    promote_if_better(name, 1, client=client)
    _register(store, client, name, 20.0, mae=12.0, estimates=_noisy(12.0))
    decision = promote_if_better(name, 2, client=client)
    assert decision.promoted and 0 < decision.gain.low < decision.gain.mean == pytest.approx(8.0)
    assert decision.gain.mean < decision.gain.high and decision.gain.resamples == 2000


# --------------------------------------------------------------------------- several processes at once

# Each racer widens the gap between one read and the write that follows it (``slowed`` is
# "<function>:<seconds>") so that, without the registry lock and the gate's compare-and-set, the two
# would interleave on every run, not by chance.
RACER = r"""
import json, sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
import pricer.tracking.gate as gate
import pricer.tracking.registry as registry

uri, name, model_uri, mae, scores_run, digest, barrier, me, racers, slowed = sys.argv[1:11]
function, delay = slowed.split(":")
module = registry if function == "_existing_version" else gate  # is there a version? / is it better?
original = getattr(module, function)

def after(*args, **kwargs):
    result = original(*args, **kwargs)
    time.sleep(float(delay))
    return result

setattr(module, function, after)
client = MlflowClient(uri, registry_uri=uri)
Path(barrier, me).touch()
while len(list(Path(barrier).iterdir())) < int(racers):  # all start together
    time.sleep(0.001)
version = registry.register_candidate(model_uri, name, mae=float(mae), test_digest=digest,
                                      scores_run_id=scores_run, client=client)
decision = gate.promote_if_better(name, version.version, client=client)
print(json.dumps({"version": str(version.version), "decision": decision.decision}))
"""


def _race(store: Store, tmp_path: Path, name: str, entrants: list[tuple[float, float, str]]) -> list[dict]:
    barrier = tmp_path / f"barrier-{name}"
    barrier.mkdir()
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    racers = [subprocess.Popen(
        [sys.executable, str(script), store.uri, name, store.model_uri(price), str(mae),
         store.scores_run(off_by(mae)), DIGEST, str(barrier), str(index), str(len(entrants)), slowed],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for index, (price, mae, slowed) in enumerate(entrants)]
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=300)
        assert racer.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_processes_promoting_at_once_leave_the_better_one_champion(
    store: Store, client, name: str, tmp_path: Path
) -> None:
    _register(store, client, name, 10.0, mae=30.0)
    promote_if_better(name, 1, client=client)
    # Both beat the champion; the worse one decides later, and must not end as @champion.
    results = _race(store, tmp_path, name, [(20.0, 12.0, "_judge:0.3"), (30.0, 20.0, "_judge:1.5")])
    assert [result["decision"] for result in results] == [PROMOTED, REJECTED]
    assert _aliases(client, name)[CHAMPION] == results[0]["version"]
    assert sorted(result["version"] for result in results) == ["2", "3"]
    assert len(client.search_model_versions(f"name = '{name}'")) == 3


def test_two_processes_registering_one_model_at_once_make_one_version(
    store: Store, client, name: str, tmp_path: Path
) -> None:
    results = _race(store, tmp_path, name, [(20.0, 12.0, "_existing_version:0.5"), (20.0, 12.0, "_existing_version:0.5")])
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert {result["version"] for result in results} == {"1"}
    assert _aliases(client, name) == {CHAMPION: "1"}
