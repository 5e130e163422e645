"""The operator's own metrics: trigger values, firing states, budget usage, decisions, and the scheduler's lag."""

from __future__ import annotations

import asyncio
import time

import pytest

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
