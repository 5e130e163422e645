"""A RetrainBudget's status as a typed value: what it reads, what it writes, when it changes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from retrain_operator.domain.budget import Ledger, Limits
from retrain_operator.domain.budget_status import BudgetStatus, SpendingStatus
from retrain_operator.domain.status import merge_diff

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LEDGER = [
    {
        "key": "team-a/churn-1",
        "policy": "team-a/churn",
        "at": "2026-11-27T11:30:00Z",
        "state": "Settled",
        "runs": 1,
        "cpuHours": 0.5,
        "gpuHours": 0.0,
        "cost": 1.25,
    }
]
SPENDING: dict[str, Any] = {
    "windowStart": "2026-11-27T00:00:00Z",
    "windowEnd": "2026-11-28T00:00:00Z",
    "used": {"runs": 1, "cpuHours": 0.5, "gpuHours": 0.0, "cost": 1.25},
    "remaining": {"runs": 1, "cost": 8.75},
    "ledger": LEDGER,
}
EXHAUSTED = {
    "type": "Exhausted",
    "status": "False",
    "reason": "WithinLimits",
    "message": "every limit has room in this window",
    "lastTransitionTime": "2026-11-27T11:00:00Z",
    "observedGeneration": 1,
}


def test_the_budget_status_reads_back_the_same() -> None:
    stored = {**SPENDING, "conditions": [EXHAUSTED], "observedGeneration": 1}
    assert BudgetStatus.from_dict(copy.deepcopy(stored)).to_dict() == stored
    assert BudgetStatus.from_dict({}).to_dict() == {}
    assert SpendingStatus.from_dict(copy.deepcopy(SPENDING)).to_dict() == SPENDING


def test_a_rebuilt_status_equals_the_stored_one_until_the_window_rolls() -> None:
    stored = {**SPENDING, "conditions": [EXHAUSTED], "observedGeneration": 1}
    previous = BudgetStatus.from_dict(stored)
    limits = Limits(runs=2, cost=10.0)
    again = BudgetStatus.of(
        window=86400,
        limits=limits,
        ledger=previous.ledger,
        previous=previous,
        generation=1,
        now=NOW + timedelta(hours=1),
    )
    assert again.to_dict() == stored
    tomorrow = BudgetStatus.of(
        window=86400,
        limits=limits,
        ledger=previous.ledger,
        previous=previous,
        generation=1,
        now=NOW + timedelta(days=1),
    )
    assert merge_diff(stored, tomorrow.to_dict())["used"] == {"runs": 0, "cpuHours": 0.0, "gpuHours": 0.0, "cost": 0.0}
    assert tomorrow.ledger == previous.ledger, "the ledger outlives its window"
    assert tomorrow.window_end == datetime(2026, 11, 29, tzinfo=UTC)


def test_exhausted_keeps_its_time_while_it_holds() -> None:
    ledger = Ledger.from_list(LEDGER)
    first = BudgetStatus.of(
        window=86400, limits=Limits(runs=1), ledger=ledger, previous=BudgetStatus(), generation=1, now=NOW
    )
    later = BudgetStatus.of(
        window=86400, limits=Limits(runs=1), ledger=ledger, previous=first, generation=1, now=NOW + timedelta(hours=1)
    )
    assert first.to_dict() == later.to_dict()
    assert [(c.type, c.status, c.reason) for c in first.conditions] == [("Exhausted", "True", "LimitReached")]


def test_unknown_fields_are_dropped() -> None:
    stored = {**SPENDING, "owner": "finance", "used": {**SPENDING["used"], "memoryGiBHours": 3.0}}
    assert BudgetStatus.from_dict(stored).to_dict() == SPENDING
