"""The operator's own metrics after a reconciliation cycle: trigger values, firing states, budget usage."""

from __future__ import annotations

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
