"""The operator's own metrics: trigger values, firing states, budget usage, decisions, and the scheduler's lag."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from retrain_operator.domain.budget import Limits
from retrain_operator.domain.policy_status import HistoryEntry, PolicyStatus, RetrainRecord
from retrain_operator.reconcile import telemetry
from tests.policies import policy
from tests.test_reconcile import Harness, ModelAccuracy, named


def sample(name: str, **labels: str) -> float | None:
    value = telemetry.REGISTRY.get_sample_value(name, labels)
    return None if value is None else float(value)


async def test_trigger_values_and_budget_usage_are_exported() -> None:
    h = Harness(ModelAccuracy({"telemetry-a": 0.80}))
    h.kube.add_budget("team-a", "metrics-budget", {"window": "24h", "limits": {"runs": 5}})
    h.add(named("telemetry-a", "uid-ta", model="telemetry-a", decision={"budget": "metrics-budget"}))
    await h.cycle()
    labels = {"namespace": "team-a", "policy": "telemetry-a", "trigger": "accuracy-drop"}
    assert sample("retrain_trigger_value", **labels) == 0.80
    assert sample("retrain_trigger_firing", **labels) == 1.0
    assert sample("retrain_budget_used", namespace="team-a", budget="metrics-budget", measure="runs") == 1.0
    h.scheduler.remove_policy("team-a", "telemetry-a")
    assert sample("retrain_trigger_value", **labels) is None


async def test_inconclusive_trigger_has_no_value() -> None:
    h = Harness(ModelAccuracy({}))
    body = policy()
    body["metadata"]["name"] = "telemetry-empty"
    h.add(body)
    await h.cycle()
    labels = {"namespace": "team-a", "policy": "telemetry-empty", "trigger": "accuracy-drop"}
    assert sample("retrain_trigger_value", **labels) is None
    assert sample("retrain_trigger_firing", **labels) == 0.0


async def test_evaluation_lag_is_observed_from_when_the_policy_was_due() -> None:
    h = Harness(ModelAccuracy({"telemetry-lag": 0.97}))
    h.add(named("telemetry-lag", "uid-tl", model="telemetry-lag"))
    key = ("team-a", "telemetry-lag")
    # Due 2.5 s ago, as if the previous cycle had overrun: the loop must report that much lag.
    h.scheduler._due[key] = time.monotonic() - 2.5
    count = sample("retrain_evaluation_lag_seconds_count") or 0.0
    total = sample("retrain_evaluation_lag_seconds_sum") or 0.0
    below = sample("retrain_evaluation_lag_seconds_bucket", le="2.0") or 0.0
    within = sample("retrain_evaluation_lag_seconds_bucket", le="5.0") or 0.0
    task = asyncio.create_task(h.scheduler.run())
    try:
        deadline = time.monotonic() + 5
        while h.scheduler.cycles < 1 and time.monotonic() < deadline:  # noqa: ASYNC110  (polls another task)
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert h.scheduler.cycles == 1
    assert sample("retrain_evaluation_lag_seconds_count") == count + 1
    lag = (sample("retrain_evaluation_lag_seconds_sum") or 0.0) - total
    assert lag == pytest.approx(h.scheduler.lag[-1]) and 2.5 <= lag < 4.0
    assert sample("retrain_evaluation_lag_seconds_bucket", le="2.0") == below
    assert sample("retrain_evaluation_lag_seconds_bucket", le="5.0") == within + 1


async def test_decisions_jobs_and_queries_are_counted_by_the_injected_telemetry() -> None:
    h = Harness(ModelAccuracy({"telemetry-c": 0.80}))
    h.add(named("telemetry-c", "uid-tc", model="telemetry-c"))
    before = {
        "evaluations": sample("retrain_evaluations_total", namespace="team-a") or 0.0,
        "decisions": sample("retrain_decisions_total", namespace="team-a", action="Retrain", reason="TriggerFiring")
        or 0.0,
        "jobs": sample("retrain_jobs_total", namespace="team-a", outcome="Started") or 0.0,
        "queries": sample("retrain_prometheus_queries_total", endpoint="default", result="Success") or 0.0,
    }
    await h.cycle()
    assert sample("retrain_evaluations_total", namespace="team-a") == before["evaluations"] + 1
    assert (
        sample("retrain_decisions_total", namespace="team-a", action="Retrain", reason="TriggerFiring")
        == before["decisions"] + 1
    )
    assert sample("retrain_jobs_total", namespace="team-a", outcome="Started") == before["jobs"] + 1
    assert sample("retrain_prometheus_queries_total", endpoint="default", result="Success") == before["queries"] + 3


def policy_samples(family: str, namespace: str, policy: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of ``family`` for one policy, keyed by its labels other than namespace and policy."""
    out = {}
    for metric in telemetry.REGISTRY.collect():
        for s in metric.samples:
            if s.name == family and s.labels.get("namespace") == namespace and s.labels.get("policy") == policy:
                rest = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("namespace", "policy")))
                out[rest] = s.value
    return out


async def test_policy_phase_conditions_interval_and_failures_follow_the_status() -> None:
    h = Harness(ModelAccuracy({"telemetry-s": 0.80}))
    h.add(named("telemetry-s", "uid-ts", model="telemetry-s", evaluation={"interval": "45s"}))
    before = time.time()
    await h.cycle()
    phases = policy_samples("retrain_policy_phase", "team-a", "telemetry-s")
    assert phases == {(("phase", "Training"),): 1.0}
    conditions = policy_samples("retrain_policy_condition", "team-a", "telemetry-s")
    assert conditions[(("condition", "Training"), ("reason", "JobRunning"))] == 1.0
    assert [v for k, v in conditions.items() if k[0] == ("condition", "MetricsAvailable")] == [1.0]
    assert sample("retrain_policy_interval_seconds", namespace="team-a", policy="telemetry-s") == 45.0
    assert sample("retrain_policy_training_failures_in_a_row", namespace="team-a", policy="telemetry-s") == 0.0
    evaluated = sample("retrain_policy_last_evaluation_timestamp_seconds", namespace="team-a", policy="telemetry-s")
    assert evaluated is not None and before <= evaluated <= time.time()

    count = sample("retrain_training_duration_seconds_count", namespace="team-a", outcome="Failed") or 0.0
    total = sample("retrain_training_duration_seconds_sum", namespace="team-a", outcome="Failed") or 0.0
    h.finish_job(h.kube.created_jobs[0], succeeded=False, result={"outcome": "Failed", "reason": "MissingColumn"})
    h.now += timedelta(minutes=2)
    await h.cycle()
    assert sample("retrain_training_duration_seconds_count", namespace="team-a", outcome="Failed") == count + 1
    # Created at NOW, completed at 12:01:00: the Job's real duration.
    assert sample("retrain_training_duration_seconds_sum", namespace="team-a", outcome="Failed") == total + 60.0
    assert sample("retrain_policy_training_failures_in_a_row", namespace="team-a", policy="telemetry-s") == 1.0
    phases = policy_samples("retrain_policy_phase", "team-a", "telemetry-s")
    assert list(phases) != [(("phase", "Training"),)], "the phase it left is no longer reported"
    conditions = policy_samples("retrain_policy_condition", "team-a", "telemetry-s")
    training = {k: v for k, v in conditions.items() if k[0] == ("condition", "Training")}
    assert training == {(("condition", "Training"), ("reason", "JobFailed")): 0.0}, "one series per condition"

    h.scheduler.remove_policy("team-a", "telemetry-s")
    for family in (
        "retrain_policy_phase",
        "retrain_policy_condition",
        "retrain_policy_interval_seconds",
        "retrain_policy_training_failures_in_a_row",
        "retrain_policy_last_evaluation_timestamp_seconds",
    ):
        assert policy_samples(family, "team-a", "telemetry-s") == {}, family


async def test_an_invalid_policy_reports_phase_invalid_and_no_interval() -> None:
    h = Harness(ModelAccuracy({}))
    bad = named("telemetry-bad", "uid-tb", model="telemetry-bad")
    bad["spec"]["triggers"][0]["for"] = "soon"
    h.add(bad)
    await h.cycle()
    assert policy_samples("retrain_policy_phase", "team-a", "telemetry-bad") == {(("phase", "Invalid"),): 1.0}
    conditions = policy_samples("retrain_policy_condition", "team-a", "telemetry-bad")
    assert conditions[(("condition", "Valid"), ("reason", "InvalidSpec"))] == 0.0
    assert conditions[(("condition", "MetricsAvailable"), ("reason", "NotEvaluated"))] == -1.0, "Unknown, not False"
    assert sample("retrain_policy_interval_seconds", namespace="team-a", policy="telemetry-bad") is None
    h.scheduler.remove_policy("team-a", "telemetry-bad")


async def test_budget_limits_pair_with_usage_by_measure() -> None:
    h = Harness(ModelAccuracy({"telemetry-l": 0.80}))
    h.kube.add_budget("team-a", "limit-budget", {"window": "24h", "limits": {"runs": 5, "cost": 12.5}})
    h.add(named("telemetry-l", "uid-tl2", model="telemetry-l", decision={"budget": "limit-budget"}))
    await h.cycle()
    labels = {"namespace": "team-a", "budget": "limit-budget"}
    assert sample("retrain_budget_limit", **labels, measure="runs") == 5.0
    assert sample("retrain_budget_limit", **labels, measure="cost") == 12.5
    assert sample("retrain_budget_limit", **labels, measure="cpuHours") is None, "no limit, no series"
    assert sample("retrain_budget_used", **labels, measure="runs") == 1.0
    h.telemetry.budget_limits("team-a", "limit-budget", Limits(runs=5))
    assert sample("retrain_budget_limit", **labels, measure="cost") is None, "a limit removed stops being reported"


@pytest.mark.parametrize(
    ("outcomes", "last", "expected"),
    [
        ([], None, 0),
        (["Succeeded"], "Succeeded", 0),
        (["Failed"], "Failed", 1),
        (["Failed", "Succeeded", "Failed", "Failed"], "Failed", 2),
        (["Failed", "Failed", "Failed"], "Failed", 3),
        (["Failed", "Failed"], "lost", 3),  # the last Job disappeared: recorded in lastRetrain only
        (["Succeeded"], "lost", 1),
    ],
)
def test_failures_in_a_row_count_back_to_the_last_success(outcomes: list[str], last: str | None, expected: int) -> None:
    history = tuple(HistoryEntry(job=f"job-{i}", duration_seconds=60.0, outcome=o) for i, o in enumerate(outcomes))
    record = None
    if last is not None:
        job = "job-lost" if last == "lost" else f"job-{len(outcomes) - 1}"
        record = RetrainRecord(
            job=job,
            trigger="t",
            started_at=None,
            finished_at="",
            outcome="Failed" if last == "lost" else last,
            message="",
        )
    assert PolicyStatus(history=history, last_retrain=record).failures_in_a_row == expected


async def test_job_outcome_series_start_at_zero_before_the_first_job() -> None:
    h = Harness(ModelAccuracy({"telemetry-p": 0.97}))  # above the threshold: no Job
    body = named("telemetry-p", "uid-tp", model="telemetry-p")
    body["metadata"]["namespace"] = "team-primed"
    h.add(body)
    await h.cycle()
    for outcome in ("Started", "Succeeded", "Failed"):
        assert sample("retrain_jobs_total", namespace="team-primed", outcome=outcome) == 0.0
    for outcome in ("Succeeded", "Failed"):
        assert sample("retrain_training_duration_seconds_count", namespace="team-primed", outcome=outcome) == 0.0
