"""The decision's order of questions, and every later word on it (annotations, limits, the Job), with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from retrain_operator.domain.api import parse_policy_spec
from retrain_operator.domain.budget import ChargeVerdict
from retrain_operator.domain.decision import (
    FORCE_ANNOTATION,
    ROLLBACK_ANNOTATION,
    Decision,
    Launch,
    Requests,
    decide,
    force_to_honour,
    invalid,
    launched,
    rollback_to_start,
    rolling_back,
    within_budget,
)
from retrain_operator.domain.triggers import TriggerResult
from tests.policies import policy

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def result(state: str, name: str = "acc") -> TriggerResult:
    return TriggerResult(
        name,
        "accuracyDecay",
        state,
        0.8 if state != "inconclusive" else None,
        0.85,  # type: ignore[arg-type]
        NOW if state in ("firing", "pending") else None,
        f"{name} is {state}",
        "NoData" if state == "inconclusive" else None,
    )


@pytest.mark.parametrize(
    ("overrides", "results", "active", "last", "action", "reason"),
    [
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
        (
            {"decision": {"dryRun": True, "cooldown": "1h"}},
            [result("firing")],
            None,
            NOW - timedelta(minutes=5),
            "Wait",
            "CoolingDown",
        ),
    ],
)
def test_decisions(
    overrides: dict[str, object],
    results: list[TriggerResult],
    active: str | None,
    last: datetime | None,
    action: str,
    reason: str,
) -> None:
    spec = parse_policy_spec(policy(**overrides)["spec"])
    decision = decide(spec, results=results, active_job=active, last_retrain_start=last, now=NOW)
    assert (decision.action, decision.reason) == (action, reason)
    assert decision.message


def test_cooldown_message_says_when_it_ends() -> None:
    spec = parse_policy_spec(policy()["spec"])
    decision = decide(
        spec, results=[result("firing")], active_job=None, last_retrain_start=NOW - timedelta(minutes=15), now=NOW
    )
    assert "ends in 45m" in decision.message and "acc is firing" in decision.message


@pytest.mark.parametrize(
    ("annotation", "last", "honoured"),
    [
        (None, None, None),
        ("ticket-42", None, "ticket-42"),
        ("ticket-42", "ticket-42", None),
        ("ticket-43", "ticket-42", "ticket-43"),
    ],
)
def test_each_force_value_forces_once(annotation: str | None, last: str | None, honoured: str | None) -> None:
    requests = Requests.from_annotations({FORCE_ANNOTATION: annotation} if annotation else {})
    assert force_to_honour(requests, last_override=last) == honoured


@pytest.mark.parametrize(
    ("annotation", "last", "active", "suspended", "started"),
    [
        ("v1", None, None, False, "v1"),
        ("v1", "v1", None, False, None),  # already acted on
        ("v1", None, "job-1", False, None),  # something runs: the rollback waits
        ("v1", None, None, True, None),  # paused
        ("", None, None, False, None),
    ],
)
def test_a_rollback_starts_once_when_nothing_runs(
    annotation: str, last: str | None, active: str | None, suspended: bool, started: str | None
) -> None:
    requests = Requests.from_annotations({ROLLBACK_ANNOTATION: annotation})
    assert rollback_to_start(requests, last_request=last, active_job=active, suspended=suspended) == started


RETRAIN = Decision("Retrain", "TriggerFiring", "acc: firing", ("acc",))


def test_limits_that_refuse_make_the_retrain_wait_in_their_words() -> None:
    assert within_budget(RETRAIN, ChargeVerdict(True, "fits")) is RETRAIN
    refused = within_budget(RETRAIN, ChargeVerdict(False, "policy limits: runs 1+1 > 1"))
    assert (refused.action, refused.reason, refused.message, refused.triggers) == (
        "Wait",
        "OverBudget",
        "policy limits: runs 1+1 > 1",
        ("acc",),
    )


@pytest.mark.parametrize(
    ("launch", "action", "reason", "message"),
    [
        (Launch("churn-1", "Created"), "Retrain", "TriggerFiring", "started Job churn-1: acc: firing"),
        (Launch("churn-1", "Adopted"), "Retrain", "TriggerFiring", "adopted existing Job churn-1: acc: firing"),
        (
            Launch("churn-1", "NameTaken"),
            "Wait",
            "JobNameTaken",
            "a Job named churn-1 exists and does not belong to this policy; delete or rename it",
        ),
        (
            Launch("churn-1", "Failed", "403 Forbidden"),
            "Wait",
            "JobCreateFailed",
            "creating Job churn-1 failed: 403 Forbidden",
        ),
    ],
)
def test_a_retrain_as_its_job_creation_left_it(launch: Launch, action: str, reason: str, message: str) -> None:
    decision = launched(RETRAIN, launch)
    assert (decision.action, decision.reason, decision.message) == (action, reason, message)
    assert decision.triggers == ("acc",)


def test_a_rollback_waits_for_its_job_or_says_why_it_could_not_start() -> None:
    started = rolling_back("v1", Launch("churn-3", "Created"))
    assert (started.action, started.reason) == ("Wait", "RollbackInProgress")
    assert started.message == "retrain.dev/rollback-to='v1': started Job churn-3 to make it the champion"
    failed = rolling_back("v1", Launch("churn-3", "Failed", "quota"))
    assert (failed.reason, failed.message) == ("RollbackFailed", "creating the rollback Job churn-3 failed: quota")


def test_an_invalid_spec_decides_nothing_and_says_every_problem() -> None:
    decision = invalid(["spec.triggers[0].for: bad", "spec.model: missing"])
    assert (decision.action, decision.reason) == ("None", "InvalidSpec")
    assert decision.message == "spec.triggers[0].for: bad; spec.model: missing"
