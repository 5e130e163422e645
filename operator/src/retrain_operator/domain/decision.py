"""The decision: given the triggers, the policy and its history, retrain now or say why not.

Every decision the operator records is made here, from facts reconciliation gathered: the trigger
results, the annotations people set, the budgets' verdicts on a charge, what happened when the Job
was created. ``decide`` is a pure function of its inputs; the order of the checks is the order in
which a person would ask the questions (is the policy usable, paused, busy, is there a reason, is
it too soon, is it a dry run), and the first answer that stops the retrain is the reason recorded.
The later steps (budgets, the Job's creation) can only turn a retrain into a wait, never the
reverse. Limits: a rollback is not weighed against budgets or cooldown (it trains nothing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from retrain_operator.domain.api import PolicySpec
from retrain_operator.domain.budget import Assessment, ChargeVerdict
from retrain_operator.domain.triggers import NO_BASELINE, TriggerResult, get_trigger_type
from retrain_operator.settings.durations import format_duration

Action = Literal["Retrain", "WouldRetrain", "Wait", "None"]
FORCE_ANNOTATION = "retrain.dev/force-retrain"
ROLLBACK_ANNOTATION = "retrain.dev/rollback-to"


@dataclass(frozen=True)
class Decision:
    """What the operator does about a policy in this evaluation, why (a CamelCase reason), and in words.

    ``triggers`` names the triggers behind it; ``assessment`` holds the cost-benefit numbers when
    the policy has a gate.
    """

    action: Action
    reason: str
    message: str
    triggers: tuple[str, ...] = ()
    assessment: Assessment | None = None

    @property
    def launches(self) -> bool:
        """A training Job is to be created."""
        return self.action == "Retrain"

    @property
    def retrains(self) -> bool:
        """A retrain is decided, launched or (dry run) only recorded: budgets apply to both."""
        return self.action in ("Retrain", "WouldRetrain")


@dataclass(frozen=True)
class Requests:
    """What people asked for through the policy's annotations, before anything decides to act on it."""

    force: str | None = None
    rollback: str | None = None

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> Requests:
        """Each value as status will remember it: a value longer than :data:`MAX_REQUEST` (annotations may
        hold 256 kB) by its digest, so the status stays small and the same value still acts only once."""
        return cls(
            force=_request(annotations.get(FORCE_ANNOTATION)), rollback=_request(annotations.get(ROLLBACK_ANNOTATION))
        )


MAX_REQUEST = 253


def _request(value: str | None) -> str | None:
    if not value:
        return None
    return value if len(value) <= MAX_REQUEST else "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def force_to_honour(requests: Requests, *, last_override: str | None) -> str | None:
    """The force-retrain value to act on: each value forces one retrain, so the last one honoured is ignored."""
    return None if requests.force == last_override else requests.force


def rollback_to_start(
    requests: Requests, *, last_request: str | None, active_job: str | None, suspended: bool
) -> str | None:
    """The version to roll back to now: a request not yet acted on, with nothing running and the policy not paused."""
    wanted = requests.rollback
    if wanted is None or wanted == last_request or active_job or suspended:
        return None
    return wanted


@dataclass(frozen=True)
class Launch:
    """What creating a Job gave: created, found already there and ours (adopted), taken by another, or failed."""

    job: str
    outcome: Literal["Created", "Adopted", "NameTaken", "Failed"]
    error: str = ""

    @property
    def running(self) -> bool:
        return self.outcome in ("Created", "Adopted")


def evaluation_error(message: str) -> Decision:
    """An evaluation that raised: nothing is started, and the status says why until an evaluation succeeds."""
    return Decision("Wait", "EvaluationError", f"the evaluation failed and is retried every interval: {message}")


def invalid(problems: Sequence[str]) -> Decision:
    """A spec the operator cannot act on: nothing happens until it is fixed."""
    return Decision("None", "InvalidSpec", "; ".join(problems))


def within_budget(decision: Decision, verdict: ChargeVerdict) -> Decision:
    """A retrain the limits refuse waits, OverBudget, in the limits' own words; the triggers stay on record."""
    if verdict.fits:
        return decision
    return Decision("Wait", "OverBudget", verdict.message, decision.triggers, decision.assessment)


def launched(decision: Decision, launch: Launch) -> Decision:
    """The retrain as it stands once its Job was (or could not be) created."""
    name = launch.job
    if launch.outcome == "NameTaken":
        return Decision(
            "Wait",
            "JobNameTaken",
            f"a Job named {name} exists and does not belong to this policy; delete or rename it",
            decision.triggers,
        )
    if launch.outcome == "Failed":
        return Decision("Wait", "JobCreateFailed", f"creating Job {name} failed: {launch.error}", decision.triggers)
    verb = "adopted existing" if launch.outcome == "Adopted" else "started"
    return Decision(
        "Retrain", decision.reason, f"{verb} Job {name}: {decision.message}", decision.triggers, decision.assessment
    )


def rolling_back(version: str, launch: Launch) -> Decision:
    """A rollback waits for its promote Job; one that could not be created says why."""
    if not launch.running:
        return Decision("Wait", "RollbackFailed", f"creating the rollback Job {launch.job} failed: {launch.error}")
    return Decision(
        "Wait",
        "RollbackInProgress",
        f"{ROLLBACK_ANNOTATION}={version!r}: started Job {launch.job} to make it the champion",
    )


def decide(
    spec: PolicySpec,
    *,
    results: Sequence[TriggerResult],
    active_job: str | None,
    last_retrain_start: datetime | None,
    now: datetime,
    gate: Assessment | None = None,
    forced: str | None = None,
) -> Decision:
    """The decision. ``gate`` is the cost-benefit assessment (when the policy has one); ``forced`` the value
    of a retrain.dev/force-retrain annotation to honour (``force_to_honour``). A retrain decided here
    then meets the limits and budgets (``within_budget``) and its Job's creation (``launched``)."""
    firing = tuple(r.name for r in results if r.firing)
    inconclusive = [r for r in results if r.state == "inconclusive"]
    if spec.suspend:
        return Decision("None", "Suspended", "spec.suspend is true; no retrain is started", firing)
    if active_job is not None:
        return Decision("Wait", "TrainingInProgress", f"Job {active_job} is still running", firing)
    if forced is not None:
        message = (
            f"retrain.dev/force-retrain={forced!r}: cooldown and the cost-benefit gate are bypassed; "
            "budgets still apply"
        )
        action: Action = "WouldRetrain" if spec.decision.dry_run else "Retrain"
        return Decision(action, "ForcedRetrain", message, (*firing, "force-retrain"), gate)
    if not firing:
        unmeasured = [r for r in inconclusive if r.problem != NO_BASELINE]
        if unmeasured:
            detail = "; ".join(f"{r.name}: {r.message}" for r in unmeasured)
            return Decision("Wait", "MetricsUnavailable", f"no trigger firing, some inconclusive ({detail})")
        if inconclusive:
            # The metrics are there; what is missing is the value they are compared with.
            detail = "; ".join(f"{r.name}: {r.message}" for r in inconclusive)
            return Decision(
                "Wait",
                NO_BASELINE,
                f"no trigger firing, some without a baseline ({detail}); set fixedBaseline, or force a first "
                "retrain with the retrain.dev/force-retrain annotation",
            )
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
            return Decision(
                "Wait",
                "CoolingDown",
                f"last retrain started {format_duration(elapsed)} ago; cooldown "
                f"{format_duration(spec.decision.cooldown)} ends in {remaining} ({because})",
                firing,
            )
    scheduled = any(r.firing and get_trigger_type(r.type).bypasses_gate for r in results)
    if gate is not None and not gate.worth_it and not scheduled:
        return Decision("Wait", "NotWorthRetraining", f"{gate.message} ({because})", firing, gate)
    if gate is not None:
        because = f"{because}; {'scheduled, gate bypassed: ' if scheduled else ''}{gate.message}"
    if spec.decision.dry_run:
        return Decision("WouldRetrain", "DryRun", f"would retrain: {because}", firing, gate)
    return Decision("Retrain", "TriggerFiring", because, firing, gate)
