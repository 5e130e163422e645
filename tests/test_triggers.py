"""Trigger state machines with a fixed clock: thresholds, for, hysteresis, missing data, schedules."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from retrain_operator.domain.triggers import (
    AccuracyDecay,
    Observation,
    PreviousState,
    QueryTrigger,
    ScheduleTrigger,
    TriggerSpec,
    accuracy_levels,
    evaluate_accuracy,
    evaluate_query,
    evaluate_schedule,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=3)


def accuracy(*, for_seconds: float = 0, missing: str = "Inconclusive", **kw: object) -> TriggerSpec:
    spec = AccuracyDecay(metric="acc", max_drop=kw.pop("max_drop", 0.05), **kw)  # type: ignore[arg-type]
    return TriggerSpec(name="acc", kind=spec, for_seconds=for_seconds, on_missing_data=missing)


@pytest.mark.parametrize(("value", "state"), [(0.80, "firing"), (0.8499, "firing"), (0.85, "clear"), (0.9, "clear")])
def test_accuracy_fires_below_baseline_minus_max_drop(value: float, state: str) -> None:
    result = evaluate_accuracy(
        accuracy(fixed_baseline=0.9),
        observation=Observation(value=value),
        model_score=None,
        previous=PreviousState(),
        now=NOW,
    )
    assert result.state == state
    assert result.threshold == pytest.approx(0.85)


def test_model_score_is_the_baseline_when_there_is_a_model() -> None:
    result = evaluate_accuracy(
        accuracy(fixed_baseline=0.9),
        observation=Observation(value=0.93),
        model_score=0.99,
        previous=PreviousState(),
        now=NOW,
    )
    assert result.state == "firing" and result.threshold == pytest.approx(0.94)
    assert "current model's holdout score" in result.message


def test_relative_drop() -> None:
    assert accuracy_levels(AccuracyDecay(metric="a", max_drop=0.1, relative=True, clear_drop=0.05), 0.8) == (
        pytest.approx(0.72),
        pytest.approx(0.76),
    )


def test_no_baseline_is_inconclusive() -> None:
    result = evaluate_accuracy(
        accuracy(), observation=Observation(value=0.5), model_score=None, previous=PreviousState(), now=NOW
    )
    assert result.state == "inconclusive" and result.problem == "NoBaseline"


@pytest.mark.parametrize(
    ("held", "points", "expected", "state"),
    [
        (0.84, 10, 10, "firing"),  # below the threshold over the whole period
        (0.86, 10, 10, "pending"),  # rose above it at some point in the period
        (0.84, 3, 10, "pending"),  # the metric is younger than `for`
        (None, 0, 10, "pending"),
        (math.nan, 10, 10, "pending"),
    ],
)
def test_for_is_judged_from_history(held: float | None, points: int, expected: int, state: str) -> None:
    obs = Observation(value=0.80, held=held, held_points=points, expected_points=expected)
    result = evaluate_accuracy(
        accuracy(for_seconds=300, fixed_baseline=0.9),
        observation=obs,
        model_score=None,
        previous=PreviousState(),
        now=NOW,
    )
    assert result.state == state


def test_pending_keeps_its_since() -> None:
    obs = Observation(value=0.80, held=0.95, held_points=10, expected_points=10)
    result = evaluate_accuracy(
        accuracy(for_seconds=300, fixed_baseline=0.9),
        observation=obs,
        model_score=None,
        previous=PreviousState("pending", EARLIER),
        now=NOW,
    )
    assert result.state == "pending" and result.since == EARLIER


@pytest.mark.parametrize(("value", "state"), [(0.86, "firing"), (0.8799, "firing"), (0.88, "clear")])
def test_hysteresis_clears_only_past_the_clear_level(value: float, state: str) -> None:
    trigger = accuracy(fixed_baseline=0.9, clear_drop=0.02)  # fires below 0.85, clears at 0.88
    result = evaluate_accuracy(
        trigger,
        observation=Observation(value=value),
        model_score=None,
        previous=PreviousState("firing", EARLIER),
        now=NOW,
    )
    assert result.state == state
    if state == "firing":
        assert result.since == EARLIER


@pytest.mark.parametrize(
    ("policy", "state"), [("Inconclusive", "inconclusive"), ("Clear", "clear"), ("Fire", "firing")]
)
@pytest.mark.parametrize(
    "obs",
    [
        Observation.missing("NoData", "no samples"),
        Observation(value=math.nan),
        Observation.missing("Unreachable", "connection refused"),
    ],
)
def test_missing_data_follows_the_policy_never_zero(policy: str, state: str, obs: Observation) -> None:
    result = evaluate_accuracy(
        accuracy(fixed_baseline=0.9, missing=policy),
        observation=obs,
        model_score=None,
        previous=PreviousState(),
        now=NOW,
    )
    assert result.state == state
    assert result.value is None
    assert result.problem in {"NoData", "NotANumber", "Unreachable"}


@pytest.mark.parametrize(
    ("operator", "value", "state"),
    [
        (">", 11, "firing"),
        (">", 10, "clear"),
        (">=", 10, "firing"),
        ("<", 9, "firing"),
        ("<=", 10.5, "clear"),
    ],
)
def test_query_operators(operator: str, value: float, state: str) -> None:
    trigger = TriggerSpec(name="q", kind=QueryTrigger(promql="x", operator=operator, threshold=10))
    result = evaluate_query(trigger, observation=Observation(value=value), previous=PreviousState(), now=NOW)
    assert result.state == state


def test_query_hysteresis_above() -> None:
    trigger = TriggerSpec(name="q", kind=QueryTrigger(promql="x", operator=">", threshold=10, clear_threshold=5))
    firing = PreviousState("firing", EARLIER)
    assert evaluate_query(trigger, observation=Observation(value=7), previous=firing, now=NOW).state == "firing"
    assert evaluate_query(trigger, observation=Observation(value=5), previous=firing, now=NOW).state == "clear"


def test_schedule_fires_once_per_cron_time() -> None:
    trigger = TriggerSpec(name="nightly", kind=ScheduleTrigger(cron="0 3 * * *"))
    before = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    result = evaluate_schedule(trigger, reference=before, now=NOW)
    assert result.state == "firing" and result.since == datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    after = datetime(2026, 11, 27, 3, 5, tzinfo=UTC)
    result = evaluate_schedule(trigger, reference=after, now=NOW)
    assert result.state == "clear" and "2026-11-28T03:00:00" in result.message


def test_an_unregistered_trigger_type_is_an_error_naming_the_allowed_ones() -> None:
    from retrain_operator.domain.triggers import TRIGGERS, UnknownTriggerType, get_trigger_type

    with pytest.raises(UnknownTriggerType, match="allowed: accuracyDecay, query, schedule, drift, dataVolume"):
        get_trigger_type("cron")
    assert all(get_trigger_type(name).name == name for name in TRIGGERS)
