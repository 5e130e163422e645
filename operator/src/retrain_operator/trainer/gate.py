"""The quality gate: does a newly trained model become champion, and the one-line reason why (not).

A pure function of the holdout scores and the ``promotion`` policy, so every rule is tested without
storage or training. Rules, in order:

1. ``minScore``, when set: the score must reach it (at least it for higher-is-better metrics, at most
   it for ``log_loss``, ``rmse`` and ``mae``).
2. No champion yet: a model that passed 1 is promoted.
3. ``mustBeatChampion`` false: a model that passed 1 is promoted whatever the champion scores.
4. Otherwise the champion's score on the same holdout must be known, and the challenger must be
   strictly better by at least ``minImprovement``. A champion that cannot be scored (its model cannot
   be loaded safely, or needs columns this data lacks) blocks automatic promotion: the new model is
   kept as a candidate and a person decides with ``promote``.

A model that fails is kept as a complete candidate version; nothing is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrain_operator.settings.training import Metric, PromotionSpec
from retrain_operator.trainer.scoring import higher_is_better, improvement

__all__ = ["ChampionScore", "Verdict", "decide", "number"]


@dataclass(frozen=True)
class ChampionScore:
    """The champion's score on this run's holdout, or why it has none."""

    version: str
    score: float | None
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether a challenger passed the promotion gate, and the reason in words."""

    passed: bool
    reason: str


def number(value: float) -> str:
    """A score as shown in reasons: four significant digits, no exponent for ordinary scores."""
    return f"{value:.4g}"


def decide(*, metric: Metric, challenger: float, champion: ChampionScore | None, policy: PromotionSpec) -> Verdict:
    """Apply the gate to ``challenger`` (this run's holdout score) against ``champion`` on the same holdout."""
    kept = "kept as candidate"
    if policy.min_score is not None:
        if higher_is_better(metric) and challenger < policy.min_score:
            return Verdict(False, f"{metric} {number(challenger)} is below minScore {number(policy.min_score)}: {kept}")
        if not higher_is_better(metric) and challenger > policy.min_score:
            return Verdict(
                False,
                f"{metric} {number(challenger)} is above minScore {number(policy.min_score)} "
                f"(lower is better for {metric}): {kept}",
            )
    floor = "" if policy.min_score is None else f", passes minScore {number(policy.min_score)}"
    if champion is None:
        return Verdict(True, f"first model: no champion yet; {metric} {number(challenger)}{floor}")
    if not policy.must_beat_champion:
        against = "" if champion.score is None else f" (champion {champion.version}: {number(champion.score)})"
        return Verdict(True, f"mustBeatChampion is false; {metric} {number(challenger)}{floor}{against}")
    if champion.score is None:
        return Verdict(
            False,
            f"champion {champion.version} could not be scored on this holdout ({champion.error}): {kept}; "
            "compare them and promote by hand if it is better",
        )
    gain = improvement(metric, challenger, champion.score)
    versus = f"{metric} {number(challenger)} vs {number(champion.score)}"
    if gain > 0 and gain >= policy.min_improvement:
        least = number(policy.min_improvement)
        return Verdict(True, f"beats champion {champion.version}: {versus}, better by {number(gain)} >= {least}")
    needed = "more than 0" if policy.min_improvement == 0 else f"at least {number(policy.min_improvement)}"
    return Verdict(
        False,
        f"does not beat champion {champion.version}: {versus}, better by {number(gain)}, needs {needed}: {kept}",
    )
