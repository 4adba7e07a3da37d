"""The promotion gate: ``@champion`` moves to a candidate only when it is strictly better on the same rows.

MAEs are compared only on the same test rows (``pricer.test_digest``): a champion scored on other
rows is rescored on the candidate's first, so a retraining run can never make production worse,
and ties keep the incumbent. The decision and both figures are recorded on the candidate as
``pricer.gate.*`` tags before the alias moves, so an interrupted promotion is simply redone by a
retry, and re-running the gate on the current champion writes nothing. Nothing here guards against
two processes promoting the same model at once: the pipeline runs one promotion per model family at
a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from pricer.core.errors import ModelNotFound
from pricer.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    NONE_TAG,
    TAG_GATE_CANDIDATE_MAE,
    TAG_GATE_CHAMPION_MAE,
    TAG_GATE_CHAMPION_VERSION,
    TAG_GATE_DECISION,
    TAG_GATE_REASON,
    TAG_MAE,
    TAG_TEST_DIGEST,
    alias_versions,
    checked_mae,
    client_or_default,
    format_float,
    parse_tag_float,
    set_tags_if_changed,
    version_uri,
)

PROMOTED = "promoted"
REJECTED = "rejected"
ALREADY_CHAMPION = "already-champion"

Rescorer = Callable[[str], float]


@dataclass(frozen=True)
class PromotionDecision:
    """What the gate decided for one candidate version, and on what evidence.

    ``promoted`` is true only when this call moved ``@champion``; a retry on the version that
    is already champion reports ``decision == "already-champion"`` with ``promoted`` false, so
    "announce a new champion" side effects fire once. ``is_champion`` answers "is it live?".
    """

    name: str
    version: str
    promoted: bool
    decision: str
    reason: str
    candidate_mae: float
    champion_mae: float | None
    champion_version: str | None

    @property
    def is_champion(self) -> bool:
        return self.decision in (PROMOTED, ALREADY_CHAMPION)


def _current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    champion_version = alias_versions(client, name).get(CHAMPION)
    if champion_version is None:
        return None
    return client.get_model_version(name, champion_version)


def _champion_mae_on_split(
    name: str, candidate_digest: str, champion: ModelVersion, rescore_champion: Rescorer | None
) -> tuple[float | None, str]:
    """The champion's MAE on the candidate's test split, or None and why it is unknown."""
    champion_digest = champion.tags.get(TAG_TEST_DIGEST)
    recorded = parse_tag_float(champion.tags, TAG_MAE)
    if champion_digest == candidate_digest and recorded is not None:
        return recorded, "on the same test split"
    if rescore_champion is None:
        why = (
            f"champion v{champion.version} was scored on test split {champion_digest or 'unknown'}, "
            f"the candidate on {candidate_digest}"
            if champion_digest != candidate_digest
            else f"champion v{champion.version} has no recorded MAE"
        )
        return None, f"{why}; no rescorer given, so the two MAEs are not comparable"
    rescored = checked_mae(rescore_champion(version_uri(name, champion.version)), "rescored champion MAE")
    return rescored, f"champion rescored on the candidate's test split {candidate_digest}"


class ChampionUnloadable(ModelNotFound):
    """A rescorer could not even load the champion: no consumer can load it either."""


def _judge(
    name: str,
    candidate: ModelVersion,
    candidate_mae: float,
    champion: ModelVersion | None,
    rescore_champion: Rescorer | None,
) -> PromotionDecision:
    version = str(candidate.version)
    if champion is None:
        return PromotionDecision(name, version, True, PROMOTED, "no champion yet", candidate_mae, None, None)
    champion_version = str(champion.version)
    digest = candidate.tags[TAG_TEST_DIGEST]
    try:
        champion_mae, basis = _champion_mae_on_split(name, digest, champion, rescore_champion)
    except ChampionUnloadable as error:
        # Keeping a champion that no consumer can load (written by older code, say) protects nothing.
        return PromotionDecision(name, version, True, PROMOTED, f"champion v{champion_version} is replaced: {error}",
                                 candidate_mae, None, champion_version)
    if champion_mae is None:
        return PromotionDecision(name, version, False, REJECTED, basis, candidate_mae, None, champion_version)
    # Full precision in the reason: a rounded "15.0000 vs 15.0000" next to "better" would mislead.
    comparison = (
        f"candidate MAE {candidate_mae!r} vs champion v{champion_version} MAE {champion_mae!r} {basis}"
    )
    if candidate_mae < champion_mae:
        verdict, promoted = "better", True
    elif candidate_mae == champion_mae:
        verdict, promoted = "tie keeps the champion", False
    else:
        verdict, promoted = "worse", False
    return PromotionDecision(
        name,
        version,
        promoted,
        PROMOTED if promoted else REJECTED,
        f"{verdict}: {comparison}",
        candidate_mae,
        champion_mae,
        champion_version,
    )


def _decision_tags(decision: PromotionDecision) -> dict[str, str]:
    champion_mae = NONE_TAG if decision.champion_mae is None else format_float(decision.champion_mae)
    return {
        TAG_GATE_DECISION: decision.decision,
        TAG_GATE_REASON: decision.reason,
        TAG_GATE_CANDIDATE_MAE: format_float(decision.candidate_mae),
        TAG_GATE_CHAMPION_MAE: champion_mae,
        TAG_GATE_CHAMPION_VERSION: decision.champion_version or NONE_TAG,
    }


def _clear_challenger_if(client: MlflowClient, name: str, version: str) -> None:
    if alias_versions(client, name).get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def promote_if_better(
    name: str,
    version: str | int,
    *,
    client: MlflowClient | None = None,
    rescore_champion: Rescorer | None = None,
) -> PromotionDecision:
    """Move ``@champion`` to ``version`` only if its MAE is strictly lower than the champion's.

    MAEs are only compared on the same test split (``pricer.test_digest``). When the splits
    differ, ``rescore_champion`` is called with the champion's ``models:/<name>/<version>`` URI
    and must return its MAE on the candidate's split; without it the candidate is rejected.
    The decision is recorded on the candidate as ``pricer.gate.*`` tags before the alias
    moves, so an interrupted promotion is simply redone by a retry.
    """
    mlflow_client = client_or_default(client)
    version = str(version)
    candidate = mlflow_client.get_model_version(name, version)
    raw_mae = parse_tag_float(candidate.tags, TAG_MAE)
    if raw_mae is None or TAG_TEST_DIGEST not in candidate.tags:
        raise ValueError(
            f"{name} v{version} has no {TAG_MAE}/{TAG_TEST_DIGEST} tags; register it with register_candidate"
        )
    candidate_mae = checked_mae(raw_mae, TAG_MAE)

    champion = _current_champion(mlflow_client, name)
    if champion is not None and str(champion.version) == version:
        # A retry after a crash between moving @champion and clearing @challenger finishes that.
        _clear_challenger_if(mlflow_client, name, version)
        return PromotionDecision(
            name,
            version,
            False,
            ALREADY_CHAMPION,
            f"v{version} is already the champion",
            candidate_mae,
            candidate_mae,
            version,
        )

    decision = _judge(name, candidate, candidate_mae, champion, rescore_champion)
    set_tags_if_changed(mlflow_client, name, version, _decision_tags(decision))
    if decision.promoted:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
        _clear_challenger_if(mlflow_client, name, version)
    return decision


