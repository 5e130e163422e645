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

from retrain_operator.domain.times import rfc3339

MESSAGE_LIMIT = 1024


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
        return cls(
            type=str(raw.get("type", "")),
            status=str(raw.get("status", "")),
            reason=str(raw.get("reason", "")),
            message=str(raw.get("message", "")),
            last_transition_time=since if isinstance(since, str) else None,
            observed_generation=generation if isinstance(generation, int) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return compact(
            {
                "type": self.type,
                "status": self.status,
                "reason": self.reason,
                "message": self.message,
                "lastTransitionTime": self.last_transition_time,
                "observedGeneration": self.observed_generation,
            }
        )


def conditions_from(raw: Any) -> tuple[ConditionRecord, ...]:
    """The stored conditions that have a type; anything else in the list is not a condition."""
    return tuple(ConditionRecord.from_dict(item) for item in records(raw) if item.get("type"))


def merge_conditions(
    previous: Sequence[ConditionRecord], current: Sequence[Condition], *, generation: int, now: datetime
) -> tuple[ConditionRecord, ...]:
    """Conditions in a stable order; a condition's transition time moves only when its status changes."""
    before = {c.type: c for c in previous}
    out = []
    for cond in current:
        old = before.get(cond.type)
        unchanged = old is not None and old.status == cond.status and old.last_transition_time
        since = old.last_transition_time if unchanged and old is not None else rfc3339(now)
        out.append(
            ConditionRecord(
                type=cond.type,
                status=cond.status,
                reason=cond.reason,
                message=cond.message[:MESSAGE_LIMIT],
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return tuple(out)


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
