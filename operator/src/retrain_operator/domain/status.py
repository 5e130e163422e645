"""What every status we write shares: conditions, and the one diff that decides whether to write.

A status is built in memory as a typed value (``policy_status``, ``budget_status``), turned into
the wire form once, and compared with what the API server holds. The comparison follows the
server's rules, not Python's: the server prunes nulls from fields the CRD does not mark nullable,
and a merge patch keeps whatever it does not name, at every depth, so a field that went away must
be named with null. Conditions keep their ``lastTransitionTime`` while their status does not
change, so an evaluation that learns nothing new builds a status equal to the stored one and
nothing is written. Limits: lists are compared and replaced whole (a merge patch cannot edit a list).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from retrain_operator.domain.decision import Decision
from retrain_operator.domain.times import rfc3339
from retrain_operator.domain.triggers import TriggerResult

MESSAGE_LIMIT = 1024
VALUE_DIGITS = 6


@dataclass(frozen=True)
class Condition:
    """A condition as one evaluation computes it, before it is merged with the stored one."""

    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class ConditionRecord:
    """A condition as stored: with the time its status last changed and the generation it describes."""

    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str | None = None
    observed_generation: int | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ConditionRecord:
        generation = raw.get("observedGeneration")
        since = raw.get("lastTransitionTime")
        return cls(type=str(raw.get("type", "")), status=str(raw.get("status", "")), reason=str(raw.get("reason", "")),
                   message=str(raw.get("message", "")), last_transition_time=since if isinstance(since, str) else None,
                   observed_generation=generation if isinstance(generation, int) else None)

    def to_dict(self) -> dict[str, Any]:
        return compact({"type": self.type, "status": self.status, "reason": self.reason, "message": self.message,
                        "lastTransitionTime": self.last_transition_time,
                        "observedGeneration": self.observed_generation})


def conditions_from(raw: Any) -> tuple[ConditionRecord, ...]:
    """The stored conditions that have a type; anything else in the list is not a condition."""
    return tuple(ConditionRecord.from_dict(item) for item in records(raw) if item.get("type"))


def merge_conditions(previous: Sequence[ConditionRecord], current: Sequence[Condition], *,
                     generation: int, now: datetime) -> tuple[ConditionRecord, ...]:
    """Conditions in a stable order; a condition's transition time moves only when its status changes."""
    before = {c.type: c for c in previous}
    out = []
    for cond in current:
        old = before.get(cond.type)
        unchanged = old is not None and old.status == cond.status and old.last_transition_time
        since = old.last_transition_time if unchanged and old is not None else rfc3339(now)
        out.append(ConditionRecord(type=cond.type, status=cond.status, reason=cond.reason,
                                   message=cond.message[:MESSAGE_LIMIT], last_transition_time=since,
                                   observed_generation=generation))
    return tuple(out)


def trigger_status(results: Sequence[TriggerResult]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        item: dict[str, Any] = {
            "name": r.name, "type": r.type, "state": r.state,
            "value": None if r.value is None else round(r.value, VALUE_DIGITS),
            "threshold": None if r.threshold is None else round(r.threshold, VALUE_DIGITS),
            "message": r.message[:512],
        }
        if r.since is not None:
            item["since"] = rfc3339(r.since)
        if r.details.get("features"):
            item["features"] = list(r.details["features"])
        if r.details.get("learnedThreshold"):
            item["learnedThreshold"] = dict(r.details["learnedThreshold"])
        out.append(item)
    return out


def decision_status(previous: Mapping[str, Any] | None, decision: Decision, *, now: datetime) -> dict[str, Any]:
    """The decision record; its time is when this decision was first taken, kept while it stands.

    Every launch is a decision of its own, so a Retrain always carries the time it was taken.
    """
    same = previous is not None and decision.action != "Retrain" and all(
        previous.get(k) == v for k, v in (("action", decision.action), ("reason", decision.reason))
    )
    time = str(previous["time"]) if same and previous and previous.get("time") else rfc3339(now)
    record: dict[str, Any] = {"time": time, "action": decision.action, "reason": decision.reason,
                              "message": decision.message[:1024]}
    if decision.assessment is not None:
        record["costBenefit"] = decision.assessment.to_dict()
    return record


def conditions_for(*, valid_problems: Sequence[str], results: Sequence[TriggerResult], decision: Decision | None,
                   active_job: str | None, last_outcome: str | None) -> list[Condition]:
    """The five standard conditions; Ready summarises the others."""
    if valid_problems:
        text = "; ".join(valid_problems)
        valid = Condition("Valid", "False", "InvalidSpec", text)
    else:
        valid = Condition("Valid", "True", "SpecValid", "the spec is valid")
    metric_results = [r for r in results if r.type != "schedule"]
    missing = [r for r in metric_results if r.problem is not None]
    if valid_problems:
        metrics = Condition("MetricsAvailable", "Unknown", "NotEvaluated", "the spec is invalid")
    elif not metric_results:
        metrics = Condition("MetricsAvailable", "True", "NoMetricTriggers", "no trigger reads metrics")
    elif missing:
        first = missing[0]
        metrics = Condition("MetricsAvailable", "False", first.problem or "NoData",
                            "; ".join(f"{r.name}: {r.message}" for r in missing))
    else:
        metrics = Condition("MetricsAvailable", "True", "QueriesSucceeded", "every trigger has a value")
    firing = [r for r in results if r.firing]
    if firing:
        needed = Condition("RetrainNeeded", "True", "TriggerFiring",
                           "; ".join(f"{r.name}: {r.message}" for r in firing))
    elif valid_problems:
        needed = Condition("RetrainNeeded", "Unknown", "NotEvaluated", "the spec is invalid")
    else:
        needed = Condition("RetrainNeeded", "False", "NoTriggerFiring", "no trigger is firing")
    if active_job:
        training = Condition("Training", "True", "JobRunning", f"Job {active_job} is running")
    elif last_outcome == "Succeeded":
        training = Condition("Training", "False", "JobSucceeded", "the last training Job succeeded")
    elif last_outcome == "Failed":
        training = Condition("Training", "False", "JobFailed", "the last training Job failed")
    else:
        training = Condition("Training", "False", "NoJob", "no training Job has run")
    if valid_problems:
        ready = Condition("Ready", "False", "InvalidSpec", valid.message)
    elif metrics.status == "False":
        ready = Condition("Ready", "False", "MetricsUnavailable", metrics.message)
    else:
        reason = decision.reason if decision else "Evaluated"
        ready = Condition("Ready", "True", reason, decision.message if decision else "evaluated")
    return [ready, valid, metrics, needed, training]


def phase_for(*, valid: bool, suspended: bool, active_job: str | None, metrics_ok: bool) -> str:
    if not valid:
        return "Invalid"
    if active_job:
        return "Training"
    if suspended:
        return "Suspended"
    if not metrics_ok:
        return "Degraded"
    return "Watching"


def records(raw: Any) -> list[Mapping[str, Any]]:
    """The objects in a stored list; a stored value of the wrong shape reads as an empty list."""
    return [item for item in raw if isinstance(item, Mapping)] if isinstance(raw, list) else []


def compact(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` without its None values: the wire form of a record whose absent fields are None."""
    return {key: value for key, value in fields.items() if value is not None}


def without_nulls(value: Any) -> Any:
    """``value`` with every null dropped from its objects, at any depth (lists keep their length).

    The API server prunes nulls from fields the CRD does not mark nullable, so a built status with
    ``value: null`` would differ from the stored one forever and be written every cycle.
    """
    if isinstance(value, Mapping):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def status_changed(stored: Mapping[str, Any] | None, built: Mapping[str, Any]) -> bool:
    """Whether writing ``built`` would change anything the stored status says."""
    stored = stored or {}
    return set(stored) != set(built) or any(stored.get(key) != value for key, value in built.items())


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``old`` into ``new``.

    A merge patch keeps whatever it does not name, at every depth: a key that went away, even inside a
    nested object such as activeJob or model, must be named with null, or the stored object keeps it.
    """
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = merge_diff(before, value)
        else:
            patch[key] = value
    return patch
