"""What a retrain costs and whether it may be spent: the gate's inputs, the budgets, the ledgers.

The pure rules are in ``domain.budget`` (what a retrain costs, whether a charge fits) and
``domain.decision`` (what a refusal means for the decision); this module finds their inputs (the
policy's resources, its price list, its past runs, the accuracy drop) and keeps the two ledgers:
the shared RetrainBudget's (through the Accountant, with optimistic concurrency) and the policy's
own, kept in its status because only this policy's reconciliation ever writes it. Every method
that touches the policy's own ledger takes its ``PolicyStatus`` and returns the new one. Limits:
a budget's price list is cached for ``PRICE_TTL`` seconds, so a price change applies a little late.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from retrain_operator.domain.api import PolicySpec
from retrain_operator.domain.budget import (
    Assessment,
    Charge,
    ChargeVerdict,
    Ledger,
    Prices,
    Resources,
    assess,
    cost_of,
    expected_duration,
    judge_charge,
)
from retrain_operator.domain.evaluation import accuracy_now
from retrain_operator.domain.jobs import PolicyRef, pod_requests
from retrain_operator.domain.policy_status import PolicyStatus
from retrain_operator.domain.times import parse_rfc3339
from retrain_operator.domain.triggers import TriggerResult
from retrain_operator.reconcile.budgets import Accountant

DEFAULT_DURATION = 600.0
PRICE_TTL = 10.0
WITHIN_LIMITS = ChargeVerdict(True, "within every limit")


def resources_of(spec: PolicySpec) -> Resources:
    return Resources.from_requests(pod_requests(spec.training), spec.training.limits)


class Spending:
    """The money side of a retrain: the gate's numbers, the reservation, and the charges in both ledgers."""

    def __init__(self, *, accountant: Accountant) -> None:
        self._accountant = accountant
        # A budget's price list is read for the gate, the estimate and the settlement of one decision; it
        # changes rarely, so it is kept briefly. Limits are never cached: every reservation reads them fresh.
        self._prices: dict[tuple[str, str], tuple[float, Prices | None]] = {}

    async def prices(self, namespace: str, spec: PolicySpec) -> Prices:
        """The budget's price list wins; then the policy's; else everything is free (only runs count)."""
        if spec.decision.budget:
            key = (namespace, spec.decision.budget)
            cached = self._prices.get(key)
            if cached is None or time.monotonic() - cached[0] > PRICE_TTL:
                budget = await self._accountant.spec(namespace, spec.decision.budget)
                cached = (time.monotonic(), budget.prices if budget is not None else None)
                self._prices[key] = cached
            if cached[1] is not None:
                return cached[1]
        return spec.decision.prices or Prices()

    async def gate(
        self, namespace: str, spec: PolicySpec, *, results: Sequence[TriggerResult], status: PolicyStatus
    ) -> Assessment | None:
        """The cost-benefit assessment, when the policy has a gate and something fires."""
        if spec.decision.cost_benefit is None or not any(r.firing for r in results):
            return None
        baseline, current = accuracy_now(spec, results, status.model_score)
        return assess(
            spec.decision.cost_benefit,
            resources=resources_of(spec),
            prices=await self.prices(namespace, spec),
            runs=status.runs(),
            baseline=baseline,
            current=current,
        )

    async def estimate(
        self, policy: PolicyRef, spec: PolicySpec, status: PolicyStatus, *, job: str, now: datetime
    ) -> Charge:
        """The reservation for a retrain: its expected duration at the policy's resources and prices."""
        runs = status.runs()
        if spec.decision.cost_benefit is not None:
            seconds, _ = expected_duration(spec.decision.cost_benefit, runs)
        else:
            durations = sorted(r.duration_seconds for r in runs if r.duration_seconds > 0)
            seconds = durations[len(durations) // 2] if durations else DEFAULT_DURATION
        cpu, gpu, money = cost_of(resources_of(spec), seconds=seconds, prices=await self.prices(policy.namespace, spec))
        return Charge(
            key=f"{policy.namespace}/{job}",
            policy=f"{policy.namespace}/{policy.name}",
            at=now,
            state="Reserved",
            cpu_hours=cpu,
            gpu_hours=gpu,
            cost=money,
        )

    async def admit(
        self, namespace: str, spec: PolicySpec, status: PolicyStatus, *, charge: Charge, reserve: bool, now: datetime
    ) -> tuple[PolicyStatus, ChargeVerdict]:
        """The verdict of the policy's limits, then of its budget, on ``charge``; with ``reserve`` the charge is
        reserved in both ledgers (a dry run only asks)."""
        inline = spec.decision.limits
        if inline is not None and status.ledger.find(charge.key) is None:
            verdict = judge_charge(
                inline.limits, window=inline.window, ledger=status.ledger, charge=charge, at=now, owner="policy limits"
            )
            if not verdict.fits:
                return status, verdict
        if spec.decision.budget:
            ask = self._accountant.reserve if reserve else self._accountant.check
            verdict = await ask(namespace, spec.decision.budget, charge)
            if not verdict.fits:
                return status, verdict
        if reserve:
            status = status.charged(inline, now=now, change=lambda ledger: ledger.reserve(charge))
        return status, WITHIN_LIMITS

    async def adopt(
        self, policy: PolicyRef, spec: PolicySpec, status: PolicyStatus, *, job: str, now: datetime
    ) -> PolicyStatus:
        """A Job found without its record (crash): make sure it is charged, once."""
        charge = await self.estimate(policy, spec, status, job=job, now=now)
        if spec.decision.budget:
            await self._accountant.update(policy.namespace, spec.decision.budget, lambda ledger: ledger.reserve(charge))
        return status.charged(spec.decision.limits, now=now, change=lambda ledger: ledger.reserve(charge))

    async def release(
        self, namespace: str, spec: PolicySpec, status: PolicyStatus, *, key: str, now: datetime
    ) -> PolicyStatus:
        """Undo a reservation whose Job could not be created."""
        if spec.decision.budget:
            await self._accountant.update(namespace, spec.decision.budget, lambda ledger: ledger.release(key))
        return status.charged(spec.decision.limits, now=now, change=lambda ledger: ledger.release(key))

    async def settle(
        self,
        policy: PolicyRef,
        spec: PolicySpec,
        status: PolicyStatus,
        *,
        job: str,
        job_body: Mapping[str, Any] | None,
        started: datetime | None,
        finished: datetime,
        now: datetime,
    ) -> tuple[PolicyStatus, float]:
        """Charge the real cost of a finished Job (its real duration); return the status and that duration."""
        job_status = (job_body or {}).get("status") or {}
        begin = parse_rfc3339(job_status.get("startTime")) or started or finished
        end = parse_rfc3339(job_status.get("completionTime")) or finished
        seconds = max(0.0, (end - begin).total_seconds())
        cpu, gpu, money = cost_of(resources_of(spec), seconds=seconds, prices=await self.prices(policy.namespace, spec))
        key = f"{policy.namespace}/{job}"
        fallback = Charge(
            key=key,
            policy=f"{policy.namespace}/{policy.name}",
            at=begin,
            state="Settled",
            cpu_hours=cpu,
            gpu_hours=gpu,
            cost=money,
        )

        def settle(ledger: Ledger) -> Ledger:
            return ledger.settle(key, cpu_hours=cpu, gpu_hours=gpu, cost=money, fallback=fallback)

        if spec.decision.budget:
            await self._accountant.update(policy.namespace, spec.decision.budget, settle)
        return status.charged(spec.decision.limits, now=now, change=settle), seconds
