"""The typed statuses: what they read, what they write, and what the one diff does with a field that goes away."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrain_operator.domain.api import InlineLimits
from retrain_operator.domain.budget import Charge, Limits
from retrain_operator.domain.budget_status import SpendingStatus
from retrain_operator.domain.decision import Decision
from retrain_operator.domain.jobs import JobOutcome
from retrain_operator.domain.policy_status import (
    HISTORY_LIMIT,
    ActiveJob,
    DecisionRecord,
    HistoryEntry,
    PolicyStatus,
    RetrainRecord,
)
from retrain_operator.domain.status import merge_diff, status_changed
from retrain_operator.domain.triggers import TriggerResult

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CONDITION = {
    "type": "Ready",
    "status": "True",
    "reason": "TriggerFiring",
    "message": "acc: firing",
    "lastTransitionTime": "2026-11-27T11:00:00Z",
    "observedGeneration": 3,
}
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
SPENDING = {
    "windowStart": "2026-11-27T00:00:00Z",
    "windowEnd": "2026-11-28T00:00:00Z",
    "used": {"runs": 1, "cpuHours": 0.5, "gpuHours": 0.0, "cost": 1.25},
    "remaining": {"runs": 1},
    "ledger": LEDGER,
}

# Every field the operator writes, each in the shape it writes it.
FULL: dict[str, Any] = {
    "observedGeneration": 3,
    "phase": "Training",
    "conditions": [CONDITION],
    "triggers": [
        {
            "name": "acc",
            "type": "accuracyDecay",
            "state": "firing",
            "value": 0.8,
            "threshold": 0.85,
            "since": "2026-11-27T11:55:00Z",
            "message": "model_accuracy over 5m = 0.8 < 0.85",
        },
        {
            "name": "drift",
            "type": "drift",
            "state": "clear",
            "value": 0.01,
            "threshold": 0.2,
            "message": "no drift",
            "features": [{"name": "age", "value": 0.01}],
            "learnedThreshold": {"age": {"threshold": 0.2, "windows": 4}},
        },
        {"name": "nightly", "type": "schedule", "state": "clear", "message": "next scheduled at 03:00"},
    ],
    "lastDecision": {
        "time": "2026-11-27T12:00:00Z",
        "action": "Retrain",
        "reason": "TriggerFiring",
        "message": "started Job churn-2",
        "costBenefit": {
            "expectedCost": 1.5,
            "expectedBenefit": 20.0,
            "net": 18.5,
            "expectedDurationSeconds": 600.0,
            "recoveryShare": 0.8,
            "accuracyDrop": 0.1,
        },
    },
    "activeJob": {
        "name": "churn-2",
        "trigger": "acc",
        "startedAt": "2026-11-27T12:00:00Z",
        "accuracyBefore": 0.8,
        "baselineBefore": 0.9,
    },
    "lastRetrain": {
        "job": "churn-1",
        "trigger": "acc",
        "startedAt": "2026-11-27T11:30:00Z",
        "finishedAt": "2026-11-27T12:00:00Z",
        "outcome": "Succeeded",
        "message": "model v1 trained",
        "modelVersion": "v1",
        "score": 0.97,
        "promoted": True,
        "promotionReason": "beats v0",
    },
    "model": {
        "version": "v1",
        "uri": "s3://models/churn/v1",
        "metric": "accuracy",
        "score": 0.97,
        "trainedAt": "2026-11-27T12:00:00Z",
        "rows": 1000,
        "reference": {"age": {"10": 5.0, "+Inf": 9.0}},
    },
    "retrains": 2,
    "spending": SPENDING,
    "history": [
        {
            "job": "churn-1",
            "durationSeconds": 1800.0,
            "outcome": "Succeeded",
            "accuracyBefore": 0.8,
            "baselineBefore": 0.9,
            "scoreAfter": 0.97,
        }
    ],
    "lastRollback": {
        "version": "v0",
        "job": "churn-0",
        "outcome": "Succeeded",
        "message": "champion is now v0",
        "finishedAt": "2026-11-26T12:00:00Z",
    },
    "lastRollbackRequest": "v0",
    "lastOverride": "ticket-42",
}


def test_every_field_the_operator_writes_reads_back_the_same() -> None:
    assert PolicyStatus.from_dict(copy.deepcopy(FULL)).to_dict() == FULL


@pytest.mark.parametrize(
    "stored",
    [
        {},
        {"phase": "Watching"},
        {"triggers": []},
        {
            "activeJob": {
                "name": "j",
                "trigger": "rollback",
                "action": "Promote",
                "version": "v0",
                "startedAt": "2026-11-27T12:00:00Z",
            }
        },
    ],
)
def test_partial_statuses_read_back_the_same(stored: dict[str, Any]) -> None:
    assert PolicyStatus.from_dict(copy.deepcopy(stored)).to_dict() == stored


def _nulls(value: Any, path: str = "status") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in ([f"{path}.{k}"] if v is None else _nulls(v, f"{path}.{k}"))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{path}[{i}]")]
    return []


def test_to_dict_never_writes_a_null() -> None:
    # Optional fields left unset, a trigger without a value, a decision without numbers, a model without a reference.
    result = TriggerResult(
        "acc",
        "accuracyDecay",
        "inconclusive",
        None,
        None,
        None,
        "no data",
        "NoData",
        {"learnedThreshold": {"age": None}},
    )
    status = PolicyStatus(retrains=1, active_job=ActiveJob(name="j")).evaluated(
        results=[result],
        decision=Decision("Wait", "MetricsUnavailable", "no data"),
        suspended=False,
        generation=1,
        now=NOW,
    )
    model = {"version": "v1", "reference": {"age": {"10": None, "+Inf": 2.0}}}
    assert _nulls(status.to_dict()) == []
    assert _nulls(PolicyStatus.from_dict({"model": model}).to_dict()) == []


def test_unknown_fields_are_dropped_at_every_depth() -> None:
    stored = {**copy.deepcopy(FULL), "kopf": {"progress": {}}, "legacyField": 1}
    stored["activeJob"]["podName"] = "churn-2-abc"
    stored["model"]["owner"] = "someone"
    built = PolicyStatus.from_dict(stored).to_dict()
    assert built == FULL
    patch = merge_diff(stored, built)
    assert patch["kopf"] is None and patch["legacyField"] is None
    assert patch["activeJob"]["podName"] is None and patch["model"]["owner"] is None


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("activeJob", {"trigger": "acc"}),
        ("model", {"uri": "s3://x"}),
        ("lastRetrain", {"outcome": "Failed"}),
        ("lastRollback", {"job": "j"}),
    ],
)
def test_a_record_without_what_identifies_it_reads_as_absent(key: str, raw: dict[str, Any]) -> None:
    assert key not in PolicyStatus.from_dict({key: raw}).to_dict()


def test_a_field_the_type_removes_is_named_with_null_in_the_write() -> None:
    stored = copy.deepcopy(FULL)
    stored["activeJob"] = {
        "name": "churn-2",
        "trigger": "rollback",
        "action": "Promote",
        "version": "v0",
        "startedAt": "2026-11-27T12:00:00Z",
    }
    status = PolicyStatus.from_dict(stored)
    # The rollback ends and a training starts: its activeJob has no action or version.
    outcome = JobOutcome(True, True, NOW, {"version": "v0", "score": 0.9}, "promoted")
    status = status.rollback_finished(outcome, now=NOW).job_started(
        ActiveJob(name="churn-3", trigger="acc", started_at="2026-11-27T12:01:00Z")
    )
    # And the policy's inline limits are gone from the spec.
    status = status.charged(None, now=NOW)
    built = status.to_dict()
    assert "action" not in built["activeJob"] and "spending" not in built
    patch = merge_diff(stored, built)
    assert patch["activeJob"]["action"] is None and patch["activeJob"]["version"] is None
    assert patch["spending"] is None
    assert status_changed(stored, built)


def test_nothing_is_written_when_nothing_changed() -> None:
    status = PolicyStatus.from_dict(copy.deepcopy(FULL))
    assert not status_changed(FULL, status.to_dict())
    assert not status_changed(
        FULL,
        status.charged(
            InlineLimits(window=86400, limits=Limits(runs=2)), now=datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
        ).to_dict(),
    )


def test_the_window_rolls_once_and_the_ledger_keeps_its_charges() -> None:
    status = PolicyStatus.from_dict(copy.deepcopy(FULL))
    tomorrow = status.charged(InlineLimits(window=86400, limits=Limits(runs=2)), now=NOW + timedelta(days=1))
    assert tomorrow.spending is not None
    assert tomorrow.spending.to_dict()["used"]["runs"] == 0 and tomorrow.spending.to_dict()["remaining"] == {"runs": 2}
    assert tomorrow.ledger == status.ledger


def test_charging_reserves_once_and_releases() -> None:
    limits = InlineLimits(window=86400, limits=Limits(runs=2))
    charge = Charge(
        key="team-a/churn-2", policy="team-a/churn", at=NOW, state="Reserved", cpu_hours=0.1, gpu_hours=0.0, cost=0.2
    )
    status = PolicyStatus.from_dict(copy.deepcopy(FULL))
    reserved = status.charged(limits, now=NOW, change=lambda ledger: ledger.reserve(charge))
    assert [c.key for c in reserved.ledger.charges] == ["team-a/churn-1", "team-a/churn-2"]
    assert reserved.charged(limits, now=NOW, change=lambda ledger: ledger.reserve(charge)) == reserved
    released = reserved.charged(limits, now=NOW, change=lambda ledger: ledger.release(charge.key))
    assert released.to_dict() == FULL


def test_a_started_job_takes_the_next_name_and_history_is_bounded() -> None:
    status = PolicyStatus().job_started(ActiveJob(name="churn-0"))
    assert status.retrains == 1 and status.active_name == "churn-0"
    for i in range(HISTORY_LIMIT + 5):
        status = status.with_history(HistoryEntry(job=f"churn-{i}", duration_seconds=60.0, outcome="Succeeded"))
    assert len(status.history) == HISTORY_LIMIT and status.history[-1].job == f"churn-{HISTORY_LIMIT + 4}"
    assert len(status.runs()) == HISTORY_LIMIT


@pytest.mark.parametrize(
    ("result", "promoted", "model"),
    [
        ({"version": "v2", "score": 0.98, "metric": "accuracy", "promoted": True}, True, "v2"),
        ({"version": "v2", "score": 0.90, "metric": "accuracy", "promoted": False}, False, "v1"),
        ({"version": "v2"}, True, "v2"),  # a custom image without a gate promotes what it reports
        ({"outcome": "Failed", "message": "column 'label' is missing"}, None, "v1"),
    ],
)
def test_a_finished_training_updates_the_champion_only_when_promoted(
    result: dict[str, Any], promoted: bool | None, model: str
) -> None:
    status = PolicyStatus.from_dict(copy.deepcopy(FULL))
    assert status.active_job is not None
    succeeded = result.get("outcome", "Succeeded") == "Succeeded"
    outcome = JobOutcome(True, succeeded, NOW, result, "training Job completed" if succeeded else result["message"])
    record = RetrainRecord.finished(status.active_job, outcome, now=NOW)
    after = status.training_finished(record, result=result)
    assert after.active_job is None and after.last_retrain == record and record.promoted is promoted
    assert after.model is not None and after.model.version == model


def test_the_decision_keeps_its_time_while_it_stands_but_every_launch_is_new() -> None:
    earlier = DecisionRecord(time="2026-11-27T11:00:00Z", action="Wait", reason="CoolingDown", message="wait")
    same = DecisionRecord.taken(earlier, Decision("Wait", "CoolingDown", "still waiting"), now=NOW)
    assert same.time == earlier.time and same.message == "still waiting"
    assert DecisionRecord.taken(earlier, Decision("Wait", "OverBudget", "no"), now=NOW).time == "2026-11-27T12:00:00Z"
    launch = DecisionRecord(time="2026-11-27T11:00:00Z", action="Retrain", reason="TriggerFiring", message="go")
    assert DecisionRecord.taken(launch, Decision("Retrain", "TriggerFiring", "go"), now=NOW).time != launch.time


def _fields(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """The paths in ``value`` the schema does not declare (an object that keeps unknown fields declares all)."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema:
            return []
        declared = schema.get("properties") or {}
        return [
            p
            for k, v in value.items()
            for p in ([f"{path}.{k}"] if k not in declared else _fields(v, declared[k], f"{path}.{k}"))
        ]
    if isinstance(value, list):
        return [p for v in value for p in _fields(v, schema.get("items") or {}, f"{path}[]")]
    return []


@pytest.mark.parametrize(
    ("crd", "built"),
    [
        ("retrainpolicies.yaml", PolicyStatus.from_dict(FULL).to_dict()),
        (
            "retrainbudgets.yaml",
            SpendingStatus.from_dict(SPENDING).to_dict() | {"conditions": [CONDITION], "observedGeneration": 1},
        ),
    ],
)
def test_every_field_the_types_write_is_in_the_crd(crd: str, built: dict[str, Any]) -> None:
    # A field the CRD does not declare is pruned by the server: the built status would differ from the stored one
    # forever, and be written every cycle.
    schema = yaml.safe_load((ROOT / "crds" / crd).read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _fields(built, schema["properties"]["status"], "status") == []
