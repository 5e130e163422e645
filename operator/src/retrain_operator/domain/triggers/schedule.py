"""schedule: fires when a cron time has passed since the last retrain (or the policy's creation).

It reads no metrics, and a firing schedule is not held back by the cost-benefit gate: the tenant
asked for a retrain at that time, whatever it is worth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from croniter import croniter

from retrain_operator.domain.triggers.base import Facts, TriggerKind, TriggerResult, TriggerSpec, TriggerType
from retrain_operator.settings.reader import Reader


@dataclass(frozen=True)
class ScheduleTrigger(TriggerKind):
    """``schedule``: a five-field cron time passed since the last retrain."""

    type_name: ClassVar[str] = "schedule"

    cron: str


def evaluate_schedule(trigger: TriggerSpec, *, reference: datetime, now: datetime) -> TriggerResult:
    """Fires when a cron time lies after ``reference`` (the last retrain, or the policy's creation)."""
    spec = trigger.kind
    assert isinstance(spec, ScheduleTrigger)
    last_due: datetime = croniter(spec.cron, now).get_prev(datetime)
    if last_due > reference:
        return TriggerResult(
            trigger.name,
            trigger.type,
            "firing",
            None,
            None,
            last_due,
            f"scheduled at {last_due.isoformat()} ({spec.cron}), no retrain since",
        )
    next_due: datetime = croniter(spec.cron, now).get_next(datetime)
    return TriggerResult(
        trigger.name, trigger.type, "clear", None, None, None, f"next scheduled at {next_due.isoformat()} ({spec.cron})"
    )


_BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _fires(cron: str) -> bool:
    """Whether the expression has a next and a previous time (croniter gives up on dates that never come)."""
    try:
        croniter(cron, _BASE).get_next(datetime)
        croniter(cron, _BASE).get_prev(datetime)
    except Exception:  # croniter's CroniterBadDateError and its relatives: no such date
        return False
    return True


class ScheduleType(TriggerType[ScheduleTrigger]):
    """The schedule trigger: reads no metrics and bypasses the cost-benefit gate (never a budget)."""

    spec_type = ScheduleTrigger
    reads_metrics = False
    bypasses_gate = True

    def parse(self, r: Reader, body: Mapping[str, Any], path: str) -> ScheduleTrigger | None:
        cron = r.str_(body, "cron", path, required=True)
        if cron is None:
            return None
        if len(cron) > 256 or len(cron.split()) != 5 or not croniter.is_valid(cron):
            r.fail(f"{path}.cron", f"{cron[:80]!r} is not a five-field cron expression, e.g. '0 3 * * *'")
            return None
        if not _fires(cron):
            r.fail(
                f"{path}.cron",
                f"{cron!r} never fires: no date matches it (e.g. 30 February); give a day that exists, "
                "e.g. '0 0 28 2 *'",
            )
            return None
        return ScheduleTrigger(cron=cron)

    def evaluate(self, spec: ScheduleTrigger, trigger: TriggerSpec, facts: Facts) -> TriggerResult:
        return evaluate_schedule(trigger, reference=facts.last_start, now=facts.now)


TRIGGER = ScheduleType()
