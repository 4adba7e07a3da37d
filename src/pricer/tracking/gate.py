"""The promotion gate: ``@champion`` moves to a candidate only when it is better, item by item, with
the confidence asked for.

Both models are scored on the same test rows (``pricer.test_digest``): the champion's own scores on
those rows when it has them, or it is rescored on the candidate's rows. An item a model gave no
usable answer for counts as an error, scored as if it had answered ``unparseable_estimate_usd``, so
answering fewer items never wins. A paired bootstrap over the items then decides: promote only when
the lower bound of the mean gain (champion error - candidate error) is above zero at ``confidence``.
Ties, and gains within the noise, keep the incumbent.

The decision, the interval and the counts are recorded on the candidate as ``pricer.gate.*`` tags
before the alias moves, so an interrupted promotion is redone by a retry. Several processes may
promote at once: the alias moves only under the registry lock, and only if the champion is still the
one the candidate was judged against (compare-and-set); if it moved, the candidate is judged again.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from pricer.core.comparison import GateSettings, PairedGain, paired_gain
from pricer.core.errors import ModelNotFound
from pricer.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    NONE_TAG,
    TAG_MAE,
    TAG_SCORES_RUN,
    TAG_TEST_DIGEST,
    alias_versions,
    client_or_default,
    format_float,
    registry_lock,
    set_tags_if_changed,
    version_uri,
)
from pricer.tracking.scores import ItemScores

PROMOTED = "promoted"
REJECTED = "rejected"
ALREADY_CHAMPION = "already-champion"
GATE_TAG = "pricer.gate."

Rescorer = Callable[[str], Sequence[object]]  # a champion's URI -> its estimates on the candidate's rows


@dataclass(frozen=True)
class PromotionDecision:
    """What the gate decided for one candidate version, and on what evidence.

    ``promoted`` is true only when this call moved ``@champion``; a retry on the version that is already
    champion reports ``decision == "already-champion"`` with ``promoted`` false, so "announce a new
    champion" side effects fire once. The MAEs are the gate's: every item, unanswered ones at the fallback.
    """

    name: str
    version: str
    promoted: bool
    decision: str
    reason: str
    candidate_mae: float
    champion_mae: float | None
    champion_version: str | None
    gain: PairedGain | None = None
    n_items: int = 0
    candidate_unparseable: int = 0
    champion_unparseable: int | None = None

    @property
    def is_champion(self) -> bool:
        return self.decision in (PROMOTED, ALREADY_CHAMPION)

    @property
    def description(self) -> str:
        verdict = ("Promoted to @champion" if self.promoted else
                   f"Not promoted: v{self.champion_version} stays @champion" if self.champion_version else "Not promoted")
        return f"{verdict} by the gate. {self.reason[0].upper()}{self.reason[1:]}."

    def tags(self, settings: GateSettings) -> dict[str, str]:
        def number(value: float | None) -> str:
            return NONE_TAG if value is None else (str(value) if isinstance(value, int) else format_float(value))

        gain = self.gain
        return {
            f"{GATE_TAG}decision": self.decision,
            f"{GATE_TAG}reason": self.reason,
            f"{GATE_TAG}candidate_mae": number(self.candidate_mae),
            f"{GATE_TAG}champion_mae": number(self.champion_mae),
            f"{GATE_TAG}champion_version": self.champion_version or NONE_TAG,
            f"{GATE_TAG}gain": number(gain and gain.mean),
            f"{GATE_TAG}gain_low": number(gain and gain.low),
            f"{GATE_TAG}gain_high": number(gain and gain.high),
            f"{GATE_TAG}confidence": format_float(settings.confidence),
            f"{GATE_TAG}resamples": str(settings.resamples),
            f"{GATE_TAG}unparseable_estimate_usd": format_float(settings.unparseable_estimate_usd),
            f"{GATE_TAG}n_items": str(self.n_items),
            f"{GATE_TAG}candidate_unparseable": str(self.candidate_unparseable),
            f"{GATE_TAG}champion_unparseable": number(self.champion_unparseable),
        }


class ChampionUnloadable(ModelNotFound):
    """A rescorer could not even load the champion: no consumer can load it either."""


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    version = alias_versions(client, name).get(CHAMPION)
    return None if version is None else client.get_model_version(name, version)


def _scores_of(client: MlflowClient, version: ModelVersion, digest: str) -> ItemScores | None:
    return ItemScores.load(version.tags.get(TAG_SCORES_RUN), digest, client)


def _champion_scores(client: MlflowClient, name: str, champion: ModelVersion, candidate: ItemScores,
                     rescore: Rescorer | None) -> tuple[ItemScores | None, str]:
    """The champion's answers on the candidate's rows, and where they came from (or why there are none)."""
    if (stored := _scores_of(client, champion, candidate.digest)) is not None and stored.ids == candidate.ids:
        return stored, "on the same test rows"
    if rescore is None:
        return None, (f"champion v{champion.version} has no scores on the candidate's test rows "
                      f"{candidate.digest} and no rescorer was given, so the two are not comparable")
    estimates = rescore(version_uri(name, str(champion.version)))
    return candidate.answered_by(estimates), f"champion rescored on the candidate's test rows {candidate.digest}"


def _judge(client: MlflowClient, name: str, version: str, scores: ItemScores, champion: ModelVersion | None,
           rescore: Rescorer | None, settings: GateSettings) -> PromotionDecision:
    fallback = settings.unparseable_estimate_usd
    candidate_mae = float(scores.errors(fallback).mean())
    counts = {"n_items": len(scores.ids), "candidate_unparseable": scores.unparseable}
    if champion is None:
        return PromotionDecision(name, version, True, PROMOTED, "no champion yet", candidate_mae, None, None,
                                 **counts)
    champion_version = str(champion.version)
    try:
        theirs, basis = _champion_scores(client, name, champion, scores, rescore)
    except ChampionUnloadable as error:
        # Keeping a champion that no consumer can load (written by older code, say) protects nothing.
        return PromotionDecision(name, version, True, PROMOTED, f"champion v{champion_version} is replaced: {error}",
                                 candidate_mae, None, champion_version, **counts)
    if theirs is None:
        return PromotionDecision(name, version, False, REJECTED, basis, candidate_mae, None, champion_version,
                                 **counts)
    champion_errors = theirs.errors(fallback)
    # Seeded by the rows: the same comparison gives the same interval on every retry.
    gain = paired_gain(champion_errors, scores.errors(fallback), confidence=settings.confidence,
                       resamples=settings.resamples, seed=zlib.crc32(scores.digest.encode()))
    champion_mae = float(champion_errors.mean())
    verdict = "better" if gain.better else ("worse" if gain.high < 0 else "not better beyond the noise")
    # Full precision: a rounded "15.0000 vs 15.0000" next to "better" would mislead.
    reason = (f"{verdict}: candidate MAE {candidate_mae!r} vs champion v{champion_version} MAE {champion_mae!r} "
              f"{basis}; gain {gain.mean!r}, {settings.confidence:.0%} lower bound {gain.low!r} over "
              f"{gain.n} items ({scores.unparseable} vs {theirs.unparseable} unanswered, scored at "
              f"${settings.unparseable_estimate_usd:g})")
    return PromotionDecision(name, version, gain.better, PROMOTED if gain.better else REJECTED, reason,
                             candidate_mae, champion_mae, champion_version, gain,
                             champion_unparseable=theirs.unparseable, **counts)


def _clear_challenger_if(client: MlflowClient, name: str, version: str) -> None:
    if alias_versions(client, name).get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def promote_if_better(
    name: str,
    version: str | int,
    *,
    client: MlflowClient | None = None,
    rescore_champion: Rescorer | None = None,
    settings: GateSettings | None = None,
) -> PromotionDecision:
    """Move ``@champion`` to ``version`` only if the paired bootstrap says it is better than the champion.

    The candidate's scores are read from the run its ``pricer.scores_run`` tag names (see
    ``register_candidate``). When the champion has no scores on the candidate's rows, ``rescore_champion``
    is called with the champion's ``models:/<name>/<version>`` URI and must return its estimates on those
    rows, in order; without it the candidate is rejected.
    """
    mlflow_client = client_or_default(client)
    settings = settings or GateSettings()
    version = str(version)
    candidate = mlflow_client.get_model_version(name, version)
    digest = candidate.tags.get(TAG_TEST_DIGEST)
    scores = _scores_of(mlflow_client, candidate, digest) if digest else None
    if scores is None:
        raise ValueError(f"{name} v{version} has no per-item scores ({TAG_TEST_DIGEST}, {TAG_SCORES_RUN}); "
                         "register it with register_candidate")
    while True:
        champion = _champion(mlflow_client, name)
        if champion is not None and str(champion.version) == version:
            # A retry after a crash between moving @champion and clearing @challenger finishes that.
            _clear_challenger_if(mlflow_client, name, version)
            mae = float(candidate.tags.get(f"{GATE_TAG}candidate_mae") or candidate.tags[TAG_MAE])
            return PromotionDecision(name, version, False, ALREADY_CHAMPION, f"v{version} is already the champion",
                                     mae, mae, version, n_items=len(scores.ids),
                                     candidate_unparseable=scores.unparseable)
        # Judged outside the lock (rescoring can take minutes), applied under it only if nothing moved.
        decision = _judge(mlflow_client, name, version, scores, champion, rescore_champion, settings)
        with registry_lock(mlflow_client, name):
            now = _champion(mlflow_client, name)
            if (now and str(now.version)) != (champion and str(champion.version)):
                continue  # another process promoted meanwhile: judge again, against its champion
            set_tags_if_changed(mlflow_client, name, version, decision.tags(settings))
            # The decision in words, where the registry UI shows a version first.
            if mlflow_client.get_model_version(name, version).description != decision.description:
                mlflow_client.update_model_version(name, version, description=decision.description)
            if decision.promoted:
                mlflow_client.set_registered_model_alias(name, CHAMPION, version)
                _clear_challenger_if(mlflow_client, name, version)
        return decision
