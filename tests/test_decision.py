"""The decision's order of questions, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from retrain_operator.domain.api import parse_policy_spec
from retrain_operator.domain.decision import decide
from retrain_operator.domain.triggers import TriggerResult
from tests.policies import policy

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def result(state: str, name: str = "acc") -> TriggerResult:
    return TriggerResult(name, "accuracyDecay", state, 0.8 if state != "inconclusive" else None, 0.85,  # type: ignore[arg-type]
                         NOW if state in ("firing", "pending") else None, f"{name} is {state}",
                         "NoData" if state == "inconclusive" else None)


@pytest.mark.parametrize(("overrides", "results", "active", "last", "action", "reason"), [
    ({}, [result("firing")], None, None, "Retrain", "TriggerFiring"),
    ({"suspend": True}, [result("firing")], None, None, "None", "Suspended"),
    ({}, [result("firing")], "job-1", None, "Wait", "TrainingInProgress"),
    ({}, [result("clear")], None, None, "None", "NoTriggerFiring"),
    ({}, [result("pending")], None, None, "Wait", "TriggerPending"),
    ({}, [result("inconclusive")], None, None, "Wait", "MetricsUnavailable"),
    ({}, [result("inconclusive", "a"), result("firing", "b")], None, None, "Retrain", "TriggerFiring"),
    ({}, [result("firing")], None, NOW - timedelta(minutes=10), "Wait", "CoolingDown"),
    ({}, [result("firing")], None, NOW - timedelta(hours=2), "Retrain", "TriggerFiring"),
    ({"decision": {"dryRun": True}}, [result("firing")], None, None, "WouldRetrain", "DryRun"),
    ({"decision": {"dryRun": True, "cooldown": "1h"}}, [result("firing")], None, NOW - timedelta(minutes=5),
     "Wait", "CoolingDown"),
])
def test_decisions(overrides: dict[str, object], results: list[TriggerResult], active: str | None,
                   last: datetime | None, action: str, reason: str) -> None:
    spec = parse_policy_spec(policy(**overrides)["spec"])
    decision = decide(spec, results=results, active_job=active, last_retrain_start=last, now=NOW)
    assert (decision.action, decision.reason) == (action, reason)
    assert decision.message


def test_cooldown_message_says_when_it_ends() -> None:
    spec = parse_policy_spec(policy()["spec"])
    decision = decide(spec, results=[result("firing")], active_job=None,
                      last_retrain_start=NOW - timedelta(minutes=15), now=NOW)
    assert "ends in 45m" in decision.message and "acc is firing" in decision.message
