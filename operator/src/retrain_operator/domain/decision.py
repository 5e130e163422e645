"""The decision: given the triggers, the policy and its history, retrain now or say why not.

A pure function of its inputs; the order of the checks is the order in which a person would ask
the questions (is the policy usable, paused, busy, is there a reason, is it too soon, is it a dry
run), and the first answer that stops the retrain is the reason recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from retrain_operator.domain.api import PolicySpec
from retrain_operator.domain.budget import Assessment
from retrain_operator.domain.triggers import TriggerResult
from retrain_operator.settings.durations import format_duration

Action = Literal["Retrain", "WouldRetrain", "Wait", "None"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    message: str
    triggers: tuple[str, ...] = ()
    assessment: Assessment | None = None

    @property
    def launches(self) -> bool:
        return self.action == "Retrain"


def decide(spec: PolicySpec, *, results: Sequence[TriggerResult], active_job: str | None,
           last_retrain_start: datetime | None, now: datetime, gate: Assessment | None = None,
           forced: str | None = None) -> Decision:
    """The decision. ``gate`` is the cost-benefit assessment (when the policy has one); ``forced`` the value
    of a retrain.dev/force-retrain annotation not yet acted on. Budgets are checked after this, with I/O."""
    firing = tuple(r.name for r in results if r.firing)
    inconclusive = [r for r in results if r.state == "inconclusive"]
    if spec.suspend:
        return Decision("None", "Suspended", "spec.suspend is true; no retrain is started", firing)
    if active_job is not None:
        return Decision("Wait", "TrainingInProgress", f"Job {active_job} is still running", firing)
    if forced is not None:
        message = (f"retrain.dev/force-retrain={forced!r}: cooldown and the cost-benefit gate are bypassed; "
                   "budgets still apply")
        action: Action = "WouldRetrain" if spec.decision.dry_run else "Retrain"
        return Decision(action, "ForcedRetrain", message, (*firing, "force-retrain"), gate)
    if not firing:
        if inconclusive:
            detail = "; ".join(f"{r.name}: {r.message}" for r in inconclusive)
            return Decision("Wait", "MetricsUnavailable", f"no trigger firing, some inconclusive ({detail})")
        pending = [r for r in results if r.state == "pending"]
        if pending:
            detail = "; ".join(f"{r.name}: {r.message}" for r in pending)
            return Decision("Wait", "TriggerPending", detail)
        return Decision("None", "NoTriggerFiring", "no trigger is firing")
    because = "; ".join(f"{r.name}: {r.message}" for r in results if r.firing)
    if last_retrain_start is not None:
        elapsed = (now - last_retrain_start).total_seconds()
        if elapsed < spec.decision.cooldown:
            remaining = format_duration(spec.decision.cooldown - elapsed)
            return Decision("Wait", "CoolingDown",
                            f"last retrain started {format_duration(elapsed)} ago; cooldown "
                            f"{format_duration(spec.decision.cooldown)} ends in {remaining} ({because})", firing)
    scheduled = any(r.firing and r.type == "schedule" for r in results)
    if gate is not None and not gate.worth_it and not scheduled:
        return Decision("Wait", "NotWorthRetraining", f"{gate.message} ({because})", firing, gate)
    if gate is not None:
        because = f"{because}; {'scheduled, gate bypassed: ' if scheduled else ''}{gate.message}"
    if spec.decision.dry_run:
        return Decision("WouldRetrain", "DryRun", f"would retrain: {because}", firing, gate)
    return Decision("Retrain", "TriggerFiring", because, firing, gate)
