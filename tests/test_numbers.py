"""Numbers in words: the helper, and the messages of status, events and decisions that use it."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from retrain_operator.domain.api import parse_policy_spec
from retrain_operator.domain.budget import (
    Assessment,
    Charge,
    CostBenefitSpec,
    Limits,
    Prices,
    Resources,
    Usage,
    assess,
    exceeded,
)
from retrain_operator.domain.decision import decide
from retrain_operator.domain.jobs import JobOutcome
from retrain_operator.domain.numbers import number
from retrain_operator.domain.policy_status import ActiveJob, RetrainRecord
from retrain_operator.domain.triggers import Observation, PreviousState, TriggerSpec, evaluate_accuracy
from retrain_operator.domain.triggers.accuracy_decay import AccuracyDecay
from tests.policies import policy

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
# A float printed with every digit of its arithmetic: seven or more digits after the point.
UNROUNDED = re.compile(r"\d\.\d{7,}")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.9824561403508771, "0.9825"),
        (0.95 - 0.05, "0.9"),
        (0.019607843, "0.01961"),
        (0.05, "0.05"),
        (104.0, "104"),
        (12345.678, "12346"),
        (999.96, "1000"),
        (1.5, "1.5"),
        (-0.25, "-0.25"),
        (3e6, "3000000"),
        (0.0, "0"),
        (-0.0, "0"),
        (1.2e-7, "1.2e-07"),
        (float("nan"), "NaN"),
        (float("inf"), "inf"),
        (None, "none"),
    ],
)
def test_number(value: float | None, shown: str) -> None:
    assert number(value) == shown


def test_digits() -> None:
    assert number(0.98245, digits=2) == "0.98"
    assert number(2.0 / 3.0, digits=3) == "0.667"


def test_accuracy_message_rounds_threshold_and_baseline_but_keeps_the_raw_numbers() -> None:
    trigger = TriggerSpec("acc", AccuracyDecay(metric="model_accuracy", max_drop=0.05, fixed_baseline=0.95))
    result = evaluate_accuracy(
        trigger,
        observation=Observation(value=0.8123456789),
        model_score=0.9824561403508771,
        previous=PreviousState(),
        now=NOW,
    )
    assert result.state == "firing"
    assert "0.8123 < 0.9325" in result.message and "baseline 0.9825" in result.message
    assert not UNROUNDED.search(result.message), result.message
    assert result.threshold == 0.9824561403508771 - 0.05  # the status field keeps every digit
    assert result.value == 0.8123456789


def test_decision_message_carries_the_rounded_trigger_message() -> None:
    spec = parse_policy_spec(policy()["spec"])
    trigger = spec.triggers[0]
    result = evaluate_accuracy(
        trigger, observation=Observation(value=0.8), model_score=None, previous=PreviousState(), now=NOW
    )
    decision = decide(spec, results=[result], active_job=None, last_retrain_start=None, now=NOW)
    assert "0.85" in decision.message and not UNROUNDED.search(decision.message), decision.message


def test_retrain_record_says_the_score_rounded_and_keeps_it_whole() -> None:
    active = ActiveJob(name="churn-retrain-1", trigger="acc", started_at="2026-11-27T11:50:00Z")
    result = {"version": "v1", "score": 0.9824561403508771, "metric": "accuracy", "promoted": True}
    outcome = JobOutcome(True, True, NOW, result, "training Job completed")
    record = RetrainRecord.finished(active, outcome, now=NOW)
    assert record.message == "model v1 trained and promoted, accuracy 0.9825"
    assert record.score == 0.9824561403508771


def test_cost_benefit_and_budget_messages_round_without_exponents() -> None:
    spec = CostBenefitSpec(value_per_point_per_day=1.0 / 3.0, horizon_days=7.0, estimated_duration=612.345)
    assessment: Assessment = assess(
        spec,
        resources=Resources(cpu=2.0, gpu=0.0, memory_gib=1.0),
        prices=Prices(cpu_hour=1234.5678),
        runs=[],
        baseline=0.9824561403508771,
        current=0.8123456789,
    )
    assert not UNROUNDED.search(assessment.message), assessment.message
    assert "e+" not in assessment.message, assessment.message
    assert assessment.expected_cost == 2 * 612.345 / 3600 * 1234.5678  # the number itself keeps every digit
    broken = exceeded(
        Limits(cost=100000.0),
        Usage(runs=3, cpu_hours=1.0 / 3.0, gpu_hours=0.0, cost=99999.123456),
        Charge(key="k", policy="p", at=NOW, state="Reserved", cpu_hours=2.0 / 3.0, gpu_hours=0.0, cost=12.3456789),
    )
    assert broken == ["cost 99999+12.35 > 100000"]
