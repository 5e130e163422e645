"""Policies whose status the operator's own domain code builds, for the ``kubectl retrain`` tests.

Each case runs the same steps reconciliation runs (the trigger's evaluation, ``decide``, the cost-benefit
``assess``, a budget's ``judge_charge`` and ``within_budget``, ``PolicyStatus.evaluated``) on a chosen
observation, so the status is exactly what the operator would write, without Prometheus: firing (a Job
launched), pending (``for`` not yet held), over budget (a RetrainBudget with no run left) and not worth
it (the cost-benefit gate says no).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from retrain_operator.domain.api import parse_budget_spec, parse_policy_spec
from retrain_operator.domain.budget import Charge, Ledger, Resources, assess, cost_of, judge_charge
from retrain_operator.domain.budget_status import BudgetStatus
from retrain_operator.domain.decision import Launch, decide, launched, within_budget
from retrain_operator.domain.jobs import PolicyRef, job_name
from retrain_operator.domain.policy_status import ActiveJob, HistoryEntry, PolicyStatus, RetrainRecord
from retrain_operator.domain.times import rfc3339
from retrain_operator.domain.triggers import Observation, PreviousState, baseline_for, evaluate_accuracy
from tests.policies import policy

CASES = ("firing", "pending", "over-budget", "not-worth-it")
BUDGET = "team"


@dataclass(frozen=True)
class Case:
    """A policy object with its status, and the RetrainBudget it names (or None)."""

    policy: dict[str, Any]
    budget: dict[str, Any] | None = None


def budget_body(namespace: str, *, now: datetime, ref: PolicyRef) -> dict[str, Any]:
    """A RetrainBudget of one run a day, already spent by this policy's last retrain two hours ago."""
    body: dict[str, Any] = {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "RetrainBudget",
        "metadata": {"name": BUDGET, "namespace": namespace},
        "spec": {"window": "24h", "limits": {"runs": 1, "cost": 10}, "prices": {"cpuHour": 0.5}},
    }
    spec = parse_budget_spec(body["spec"])
    spent = Charge(
        key=f"{namespace}/{job_name(ref, 1)}",
        policy=f"{namespace}/{ref.name}",
        at=now - timedelta(hours=2),
        state="Settled",
        cpu_hours=0.25,
        gpu_hours=0.0,
        cost=0.125,
    )
    status = BudgetStatus.of(
        window=spec.window,
        limits=spec.limits,
        ledger=Ledger((spent,)),
        previous=BudgetStatus(),
        generation=1,
        now=now,
    )
    body["status"] = status.to_dict()
    return body


def _body(name: str, namespace: str, **decision: Any) -> dict[str, Any]:
    body = policy(decision={"cooldown": "1h", **decision})
    body["metadata"] = {**body["metadata"], "name": name, "namespace": namespace}
    body["spec"]["training"]["resources"] = {"requests": {"cpu": "1", "memory": "1Gi"}}
    return body


def _previous_retrain(ref: PolicyRef, *, now: datetime) -> PolicyStatus:
    """A status that remembers one finished retrain (started two hours ago, 15 minutes long)."""
    job = job_name(ref, 1)
    started = now - timedelta(hours=2)
    active = ActiveJob(name=job, trigger="accuracy-drop", started_at=rfc3339(started), accuracy_before=0.82)
    record = RetrainRecord(
        job=job,
        trigger="accuracy-drop",
        started_at=rfc3339(started),
        finished_at=rfc3339(started + timedelta(minutes=15)),
        outcome="Succeeded",
        message="model v1 trained and promoted, accuracy 0.91",
        model_version="v1",
        score=0.91,
        promoted=True,
    )
    status = PolicyStatus().job_started(active)
    status = status.training_finished(
        record,
        result={
            "version": "v1",
            "metric": "accuracy",
            "score": 0.91,
            "trainedAt": record.finished_at,
            "promoted": True,
        },
    )
    return status.with_history(HistoryEntry.of(record, active, seconds=900.0))


def build(case: str, *, namespace: str, now: datetime, uid: str = "uid-1") -> Case:
    """The named case: the policy as it would stand after the operator evaluated it at ``now``."""
    name = case
    ref = PolicyRef(namespace, name, uid)
    budget = None
    if case == "over-budget":
        body = _body(name, namespace, budget=BUDGET)
        budget = budget_body(namespace, now=now, ref=ref)
    elif case == "not-worth-it":
        body = _body(
            name,
            namespace,
            prices={"cpuHour": 2.0, "perRetrain": 50},
            costBenefit={"valuePerAccuracyPointPerDay": 0.5, "horizon": "7d", "minNetBenefit": 0},
        )
    else:
        body = _body(name, namespace)
    body["metadata"]["uid"] = uid
    spec = parse_policy_spec(body["spec"])
    trigger = spec.triggers[0]
    status = PolicyStatus() if case == "pending" else _previous_retrain(ref, now=now)
    if case == "pending":
        # Below the threshold now, but Prometheus' history covers only part of ``for``.
        observation = Observation(value=0.8, held=0.8, held_points=4, expected_points=10)
        previous = PreviousState("pending", now - timedelta(minutes=2))
    else:
        observation = Observation(value=0.8, held=0.81, held_points=10, expected_points=10)
        previous = PreviousState("firing", now - timedelta(minutes=6))
    result = evaluate_accuracy(
        trigger, observation=observation, model_score=status.model_score, previous=previous, now=now
    )
    gate = None
    if spec.decision.cost_benefit is not None and spec.decision.prices is not None:
        gate = assess(
            spec.decision.cost_benefit,
            resources=Resources.from_requests(spec.training.requests, spec.training.limits),
            prices=spec.decision.prices,
            runs=status.runs(),
            baseline=baseline_for(trigger.kind, status.model_score)[0],
            current=result.value,
        )
    decision = decide(
        spec,
        results=[result],
        active_job=status.active_name,
        last_retrain_start=status.last_retrain_started,
        now=now,
        gate=gate,
    )
    if case == "over-budget" and budget is not None:
        budget_spec = parse_budget_spec(budget["spec"])
        cpu, gpu, cost = cost_of(
            Resources.from_requests(spec.training.requests), seconds=900.0, prices=budget_spec.prices
        )
        charge = Charge(
            key=f"{namespace}/{job_name(ref, 2)}",
            policy=f"{namespace}/{name}",
            at=now,
            state="Reserved",
            cpu_hours=cpu,
            gpu_hours=gpu,
            cost=cost,
        )
        ledger = BudgetStatus.from_dict(budget["status"]).ledger
        verdict = judge_charge(
            budget_spec.limits,
            window=budget_spec.window,
            ledger=ledger,
            charge=charge,
            at=now,
            owner=f"RetrainBudget {BUDGET}",
        )
        decision = within_budget(decision, verdict)
    if decision.launches:
        job = job_name(ref, status.retrains + 1)
        decision = launched(decision, Launch(job, "Created"))
        status = status.job_started(
            ActiveJob(
                name=job, trigger=",".join(decision.triggers), started_at=rfc3339(now), accuracy_before=result.value
            )
        )
    status = status.evaluated(results=[result], decision=decision, suspended=spec.suspend, generation=1, now=now)
    out = copy.deepcopy(body)
    out["status"] = status.to_dict()
    return Case(out, budget)
