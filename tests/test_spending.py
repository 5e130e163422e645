"""Budgets and the cost-benefit gate in reconciliation, with fake ports and a fixed clock."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from retrain_operator.domain.jobs import LABEL_POLICY_UID, PolicyRef, job_name
from tests.policies import policy
from tests.test_reconcile import Harness, ModelAccuracy, named

BUDGET = {"window": "24h", "limits": {"runs": 1}, "prices": {"cpuHour": 0.5, "memoryGiBHour": 0.01}}


def ledger(h: Harness, name: str = "team") -> list[dict[str, Any]]:
    return list((h.kube.budgets[("team-a", name)].get("status") or {}).get("ledger") or [])


async def test_two_policies_race_for_the_last_run_exactly_one_wins_then_the_window_rolls() -> None:
    h = Harness(ModelAccuracy({"a": 0.80, "b": 0.80}))
    h.kube.add_budget("team-a", "team", BUDGET)
    for name in ("a", "b"):
        h.add(named(name, f"uid-{name}", model=name, decision={"budget": "team", "cooldown": "0s"}))
    await h.cycle()
    assert len(h.kube.created_jobs) == 1, "two policies raced for one run"
    assert h.kube.budget_conflicts >= 1, "the race must have happened for this test to mean anything"
    reasons = sorted(h.status(n)["lastDecision"]["reason"] for n in ("a", "b"))
    assert reasons == ["OverBudget", "TriggerFiring"]
    loser = next(n for n in ("a", "b") if h.status(n)["lastDecision"]["reason"] == "OverBudget")
    assert (
        "RetrainBudget team: runs 1+1 > 1 in the window ending 2026-11-28T00:00:00Z"
        in h.status(loser)["lastDecision"]["message"]
    )
    assert [e["reason"] for e in h.kube.events if e["involvedObject"]["name"] == loser] == ["OverBudget"]
    assert len(ledger(h)) == 1 and ledger(h)[0]["state"] == "Reserved"
    budget_status = h.kube.budgets[("team-a", "team")]["status"]
    assert budget_status["used"]["runs"] == 1 and budget_status["remaining"] == {"runs": 0}
    assert {c["type"]: c["status"] for c in budget_status["conditions"]} == {"Exhausted": "True"}

    h.now += timedelta(hours=1)
    await h.cycle()
    assert len(h.kube.created_jobs) == 1 and h.status(loser)["lastDecision"]["reason"] == "OverBudget"
    h.now = h.now.replace(hour=0, minute=0) + timedelta(days=1, seconds=5)  # the next window
    await h.cycle()
    assert len(h.kube.created_jobs) == 2
    assert h.status(loser)["activeJob"]["name"] == h.kube.created_jobs[1]


async def test_settlement_charges_the_real_duration_once() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.kube.add_budget("team-a", "team", {**BUDGET, "limits": {"runs": 5}})
    h.add(
        policy(
            decision={"budget": "team"},
            training={
                "builtin": {
                    "data": {"key": "d"},
                    "target": "y",
                    "estimator": "sklearn.linear_model.LogisticRegression",
                },
                "resources": {"requests": {"cpu": "2", "memory": "1Gi"}},
            },
        )
    )
    await h.cycle()
    name = h.kube.created_jobs[0]
    reserved = ledger(h)[0]
    assert reserved["state"] == "Reserved" and reserved["cpuHours"] == round(2 * 600 / 3600, 6)  # 10 min estimate
    h.finish_job(name, succeeded=True, result={"outcome": "Succeeded", "version": "v1", "score": 0.97})
    h.kube.jobs[("team-a", name)]["status"]["startTime"] = "2026-11-27T12:00:00Z"
    h.kube.jobs[("team-a", name)]["status"]["completionTime"] = "2026-11-27T12:30:00Z"
    await h.cycle()
    await h.cycle()
    [settled] = ledger(h)
    assert settled["state"] == "Settled" and settled["cpuHours"] == 1.0
    assert settled["cost"] == round(1.0 * 0.5 + 0.5 * 0.01, 6)
    history = h.status()["history"]
    assert history == [
        {
            "job": name,
            "durationSeconds": 1800.0,
            "outcome": "Succeeded",
            "accuracyBefore": 0.8,
            "baselineBefore": 0.9,
            "scoreAfter": 0.97,
        }
    ]


async def test_job_created_before_a_crash_is_charged_once() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.kube.add_budget("team-a", "team", {**BUDGET, "limits": {"runs": 5}})
    body = policy(decision={"budget": "team"})
    ref = PolicyRef("team-a", "churn", body["metadata"]["uid"])
    name = job_name(ref, 0)
    # The state a crash leaves: the Job exists, nothing recorded it, neither in status nor in the budget.
    h.kube.jobs[("team-a", name)] = {
        "metadata": {"name": name, "labels": {LABEL_POLICY_UID: ref.uid}, "creationTimestamp": "2026-11-27T11:59:00Z"},
        "status": {},
    }
    h.add(body)
    await h.cycle()
    assert h.kube.created_jobs == [] and [c["key"] for c in ledger(h)] == [f"team-a/{name}"]
    # A second restart before the status write landed: the charge is still there once.
    fresh = copy.deepcopy(body)
    h.scheduler.entries.clear()
    h.add(fresh)
    await h.cycle()
    assert [c["key"] for c in ledger(h)] == [f"team-a/{name}"]


async def test_not_worth_retraining_is_explained_with_numbers() -> None:
    h = Harness(ModelAccuracy({"churn": 0.849}))  # just below 0.85: a 5.1-point drop from 0.9
    h.add(
        policy(
            decision={
                "prices": {"cpuHour": 100.0, "perRetrain": 50},
                "costBenefit": {"valuePerAccuracyPointPerDay": 1.0, "horizon": "7d"},
            }
        )
    )
    await h.cycle()
    assert h.kube.created_jobs == []
    decision = h.status()["lastDecision"]
    assert decision["reason"] == "NotWorthRetraining" and decision["action"] == "Wait"
    numbers = decision["costBenefit"]
    # benefit 5.1 points x 0.8 x 1/day x 7 days = 28.56; cost 0.5 cores x 10 min x 100 + 50 = 58.33
    assert numbers["expectedBenefit"] == 28.56 and numbers["expectedCost"] == 58.3333
    assert numbers["net"] == round(28.56 - 58.3333, 4)
    assert "not worth it" in decision["message"]
    assert "NotWorthRetraining" in [e["reason"] for e in h.kube.events]


async def test_worth_it_retrains_and_records_the_numbers() -> None:
    h = Harness(ModelAccuracy({"churn": 0.70}))
    h.add(policy(decision={"prices": {"cpuHour": 1.0}, "costBenefit": {"valuePerAccuracyPointPerDay": 10.0}}))
    await h.cycle()
    assert len(h.kube.created_jobs) == 1
    assert h.status()["lastDecision"]["costBenefit"]["net"] > 0


async def test_schedule_bypasses_the_gate_but_never_the_budget() -> None:
    h = Harness(ModelAccuracy({"churn": 0.95}))
    h.kube.add_budget("team-a", "team", {**BUDGET, "limits": {"runs": 1}})
    triggers = [{"name": "nightly", "schedule": {"cron": "0 3 * * *"}}]
    gate = {"valuePerAccuracyPointPerDay": 0.0}
    h.add(named("a", "uid-a", model="a", triggers=triggers, decision={"budget": "team", "costBenefit": gate}))
    h.add(named("b", "uid-b", model="b", triggers=triggers, decision={"budget": "team", "costBenefit": gate}))
    await h.cycle()
    reasons = sorted(h.status(n)["lastDecision"]["reason"] for n in ("a", "b"))
    assert reasons == ["OverBudget", "TriggerFiring"] and len(h.kube.created_jobs) == 1


async def test_force_annotation_bypasses_gate_and_cooldown_once_but_not_the_budget() -> None:
    h = Harness(ModelAccuracy({"churn": 0.99}))
    h.kube.add_budget("team-a", "team", {**BUDGET, "limits": {"runs": 1}})
    body = policy(decision={"budget": "team", "costBenefit": {"valuePerAccuracyPointPerDay": 0.0}})
    body["metadata"]["annotations"] = {"retrain.dev/force-retrain": "ticket-42"}
    h.add(body)
    await h.cycle()
    assert len(h.kube.created_jobs) == 1 and h.status()["lastOverride"] == "ticket-42"
    assert h.status()["lastDecision"]["reason"] == "ForcedRetrain"
    h.finish_job(
        h.kube.created_jobs[0], succeeded=True, result={"outcome": "Succeeded", "version": "v1", "score": 0.99}
    )
    await h.cycle()
    await h.cycle()
    assert len(h.kube.created_jobs) == 1, "the same annotation value forces only once"
    again = copy.deepcopy(h.scheduler.entries[("team-a", "churn")].body)
    again["metadata"]["annotations"] = {"retrain.dev/force-retrain": "ticket-43"}
    h.scheduler.entries[("team-a", "churn")].body = again
    await h.cycle()
    assert len(h.kube.created_jobs) == 1 and h.status()["lastDecision"]["reason"] == "OverBudget"


async def test_policy_inline_limits() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.add(policy(decision={"cooldown": "0s", "limits": {"window": "1h", "runs": 1}}))
    await h.cycle()
    h.finish_job(
        h.kube.created_jobs[0], succeeded=True, result={"outcome": "Succeeded", "version": "v1", "score": 0.91}
    )
    h.now += timedelta(minutes=1)
    await h.cycle()
    status = h.status()
    assert len(h.kube.created_jobs) == 1 and status["lastDecision"]["reason"] == "OverBudget"
    assert "policy limits: runs 1+1 > 1" in status["lastDecision"]["message"]
    assert status["spending"]["used"]["runs"] == 1 and status["spending"]["remaining"] == {"runs": 0}
    h.now += timedelta(hours=1)
    await h.cycle()
    assert len(h.kube.created_jobs) == 2


async def test_missing_budget_refuses_with_the_reason() -> None:
    h = Harness(ModelAccuracy({"churn": 0.80}))
    h.add(policy(decision={"budget": "nope"}))
    await h.cycle()
    assert h.kube.created_jobs == []
    assert h.status()["lastDecision"]["message"] == "RetrainBudget team-a/nope does not exist"
