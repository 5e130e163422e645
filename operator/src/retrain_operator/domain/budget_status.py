"""Spending as status: a RetrainBudget's status, and a policy's own ``status.spending``, as typed values.

Both are derived, never edited: the ledger is the only thing remembered, and the window, the usage
and what remains are computed from it and ``now`` each time. So a status rebuilt from the same
ledger in the same window is equal to the stored one and is not written, and a window that rolls
over changes the status exactly once. ``from_dict`` reads what this operator writes; fields the
types do not know are dropped (the CRD's schema prunes them anyway). Limits: a ledger entry
without a key or a time cannot be charged again, so reading one is an error, not a silent skip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retrain_operator.domain.budget import Ledger, Limits, Usage, is_exhausted, usage, window_bounds
from retrain_operator.domain.status import Condition, ConditionRecord, compact, conditions_from, merge_conditions
from retrain_operator.domain.times import parse_rfc3339, rfc3339


@dataclass(frozen=True)
class Remaining:
    """What is left of each limited measure in the window; a measure without a limit is absent."""

    runs: int | None = None
    cpu_hours: float | None = None
    gpu_hours: float | None = None
    cost: float | None = None

    @classmethod
    def of(cls, limits: Limits, used: Usage) -> Remaining:
        def left(limit: float | None, spent: float) -> float | None:
            return None if limit is None else round(max(0.0, limit - spent), 6)

        return cls(
            runs=None if limits.runs is None else max(0, limits.runs - used.runs),
            cpu_hours=left(limits.cpu_hours, used.cpu_hours),
            gpu_hours=left(limits.gpu_hours, used.gpu_hours),
            cost=left(limits.cost, used.cost),
        )

    @classmethod
    def from_dict(cls, raw: Any) -> Remaining:
        raw = raw if isinstance(raw, Mapping) else {}

        def number(key: str) -> float | None:
            value = raw.get(key)
            return float(value) if isinstance(value, int | float) else None

        runs = raw.get("runs")
        return cls(
            runs=int(runs) if isinstance(runs, int | float) else None,
            cpu_hours=number("cpuHours"),
            gpu_hours=number("gpuHours"),
            cost=number("cost"),
        )

    def to_dict(self) -> dict[str, Any]:
        return compact({"runs": self.runs, "cpuHours": self.cpu_hours, "gpuHours": self.gpu_hours, "cost": self.cost})


@dataclass(frozen=True)
class SpendingStatus:
    """The current window of a set of limits: its bounds, what was used, what remains, and the bounded ledger."""

    window_start: str
    window_end: str
    used: Usage = field(default_factory=Usage)
    remaining: Remaining = field(default_factory=Remaining)
    ledger: Ledger = field(default_factory=Ledger)

    @classmethod
    def of(cls, *, window: float, limits: Limits, ledger: Ledger, now: datetime) -> SpendingStatus:
        """The spending status at ``now``: the ledger bounded, usage counted in the window that holds ``now``."""
        start, end = window_bounds(window, now)
        bounded = ledger.bounded(window_start=start)
        used = usage(bounded.charges, start=start, end=end)
        return cls(
            window_start=rfc3339(start),
            window_end=rfc3339(end),
            used=used,
            remaining=Remaining.of(limits, used),
            ledger=bounded,
        )

    @classmethod
    def from_dict(cls, raw: Any) -> SpendingStatus:
        raw = raw if isinstance(raw, Mapping) else {}
        ledger = raw.get("ledger")
        return cls(
            window_start=str(raw.get("windowStart") or ""),
            window_end=str(raw.get("windowEnd") or ""),
            used=Usage.from_dict(raw.get("used")),
            remaining=Remaining.from_dict(raw.get("remaining")),
            ledger=Ledger.from_list(ledger if isinstance(ledger, list) else None),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "windowStart": self.window_start,
            "windowEnd": self.window_end,
            "used": self.used.to_dict(),
            "remaining": self.remaining.to_dict(),
            "ledger": self.ledger.to_list(),
        }


@dataclass(frozen=True)
class BudgetStatus:
    """A RetrainBudget's status: its spending in the current window and whether it is exhausted."""

    spending: SpendingStatus | None = None
    conditions: tuple[ConditionRecord, ...] = ()
    observed_generation: int | None = None

    @property
    def ledger(self) -> Ledger:
        return self.spending.ledger if self.spending is not None else Ledger()

    @property
    def used(self) -> Usage:
        return self.spending.used if self.spending is not None else Usage()

    @property
    def window_end(self) -> datetime | None:
        """When the current window ends, and the status must be rebuilt even if nobody charges the budget."""
        return parse_rfc3339(self.spending.window_end) if self.spending is not None else None

    @classmethod
    def of(
        cls, *, window: float, limits: Limits, ledger: Ledger, previous: BudgetStatus, generation: int, now: datetime
    ) -> BudgetStatus:
        """The status for this ledger at ``now``; the Exhausted condition keeps its time while it holds."""
        spending = SpendingStatus.of(window=window, limits=limits, ledger=ledger, now=now)
        full = is_exhausted(limits, spending.used)
        condition = (
            Condition("Exhausted", "True", "LimitReached", "used up: " + ", ".join(full))
            if full
            else Condition("Exhausted", "False", "WithinLimits", "every limit has room in this window")
        )
        return cls(
            spending=spending,
            observed_generation=generation,
            conditions=merge_conditions(previous.conditions, [condition], generation=generation, now=now),
        )

    def failed(self, *, reason: str, message: str, generation: int, now: datetime) -> BudgetStatus:
        """A budget that cannot be used (``reason`` InvalidSpec) or whose status could not be computed
        (EvaluationError): a Valid=False condition says why; the spending and ledger are kept untouched, so
        nothing charged is lost. The next good status drops the condition."""
        problem = Condition("Valid", "False", reason, message)
        kept = [Condition(c.type, c.status, c.reason, c.message) for c in self.conditions if c.type != "Valid"]
        return BudgetStatus(
            spending=self.spending,
            observed_generation=generation,
            conditions=merge_conditions(self.conditions, [problem, *kept], generation=generation, now=now),
        )

    def problem(self) -> str | None:
        """The message of a Valid=False condition, if the budget has one."""
        return next((c.message for c in self.conditions if c.type == "Valid" and c.status == "False"), None)

    @classmethod
    def from_dict(cls, raw: Any) -> BudgetStatus:
        raw = raw if isinstance(raw, Mapping) else {}
        generation = raw.get("observedGeneration")
        return cls(
            spending=SpendingStatus.from_dict(raw) if raw.get("windowStart") or raw.get("ledger") else None,
            conditions=conditions_from(raw.get("conditions")),
            observed_generation=generation if isinstance(generation, int) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.spending.to_dict() if self.spending is not None else {}
        if self.conditions:
            out["conditions"] = [c.to_dict() for c in self.conditions]
        if self.observed_generation is not None:
            out["observedGeneration"] = self.observed_generation
        return out
