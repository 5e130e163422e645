"""What a retrain costs and whether it may be spent: the gate's inputs, the budgets, the ledgers.

The pure rules are in ``domain.budget``; this module finds their inputs (the policy's resources,
its price list, its past runs, the accuracy drop) and keeps the two ledgers: the shared
RetrainBudget's (through the Accountant, with optimistic concurrency) and the policy's own, kept in
its status because only this policy's reconciliation ever writes it.
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
    RunRecord,
    assess,
    cost_of,
    expected_duration,
    judge_charge,
)
from retrain_operator.domain.budget_status import SpendingStatus
from retrain_operator.domain.evaluation import accuracy_now
from retrain_operator.domain.jobs import pod_requests
from retrain_operator.domain.times import parse_rfc3339
from retrain_operator.domain.triggers import TriggerResult
from retrain_operator.reconcile.budgets import Accountant

HISTORY_LIMIT = 20
DEFAULT_DURATION = 600.0


def resources_of(spec: PolicySpec) -> Resources:
    return Resources.from_requests(pod_requests(spec.training), spec.training.limits)


def runs_of(status: Mapping[str, Any]) -> list[RunRecord]:
    out = []
    for item in status.get("history") or []:
        if isinstance(item, Mapping) and item.get("outcome") == "Succeeded":
            out.append(RunRecord(duration_seconds=float(item.get("durationSeconds") or 0),
                                 accuracy_before=item.get("accuracyBefore"),
                                 baseline_before=item.get("baselineBefore"), score_after=item.get("scoreAfter")))
    return out


PRICE_TTL = 10.0
WITHIN_LIMITS = ChargeVerdict(True, "within every limit")


class Spending:
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

    async def gate(self, namespace: str, spec: PolicySpec, *, results: Sequence[TriggerResult],
                   status: Mapping[str, Any]) -> Assessment | None:
        if spec.decision.cost_benefit is None or not any(r.firing for r in results):
            return None
        model_score = (status.get("model") or {}).get("score")
        baseline, current = accuracy_now(spec, results, float(model_score) if model_score is not None else None)
        return assess(spec.decision.cost_benefit, resources=resources_of(spec),
                      prices=await self.prices(namespace, spec), runs=runs_of(status), baseline=baseline,
                      current=current)

    async def estimate(self, namespace: str, name: str, spec: PolicySpec, status: Mapping[str, Any], *, job: str,
                       now: datetime) -> Charge:
        """The reservation for a retrain: its expected duration at the policy's resources and prices."""
        runs = runs_of(status)
        if spec.decision.cost_benefit is not None:
            seconds, _ = expected_duration(spec.decision.cost_benefit, runs)
        else:
            durations = sorted(r.duration_seconds for r in runs if r.duration_seconds > 0)
            seconds = durations[len(durations) // 2] if durations else DEFAULT_DURATION
        cpu, gpu, money = cost_of(resources_of(spec), seconds=seconds, prices=await self.prices(namespace, spec))
        return Charge(key=f"{namespace}/{job}", policy=f"{namespace}/{name}", at=now, state="Reserved",
                      cpu_hours=cpu, gpu_hours=gpu, cost=money)

    async def admit(self, namespace: str, spec: PolicySpec, status: dict[str, Any], *, charge: Charge,
                    reserve: bool, now: datetime) -> ChargeVerdict:
        """The verdict of the policy's limits, then of its budget, on ``charge``; with ``reserve`` the charge is
        reserved in both ledgers (a dry run only asks)."""
        inline = spec.decision.limits
        if inline is not None:
            ledger = Ledger.from_list((status.get("spending") or {}).get("ledger"))
            if ledger.find(charge.key) is None:
                verdict = judge_charge(inline.limits, window=inline.window, ledger=ledger, charge=charge, at=now,
                                       owner="policy limits")
                if not verdict.fits:
                    return verdict
        if spec.decision.budget:
            ask = self._accountant.reserve if reserve else self._accountant.check
            verdict = await ask(namespace, spec.decision.budget, charge)
            if not verdict.fits:
                return verdict
        if reserve and inline is not None:
            ledger = Ledger.from_list((status.get("spending") or {}).get("ledger")).reserve(charge)
            status["spending"] = SpendingStatus.of(window=inline.window, limits=inline.limits, ledger=ledger,
                                                   now=now).to_dict()
        return WITHIN_LIMITS

    async def adopt(self, namespace: str, name: str, spec: PolicySpec, status: dict[str, Any], *, job: str,
                    now: datetime) -> None:
        """A Job found without its record (crash): make sure it is charged, once."""
        charge = await self.estimate(namespace, name, spec, status, job=job, now=now)
        if spec.decision.budget:
            await self._accountant.update(namespace, spec.decision.budget, lambda ledger: ledger.reserve(charge))
        if spec.decision.limits is not None:
            ledger = Ledger.from_list((status.get("spending") or {}).get("ledger")).reserve(charge)
            status["spending"] = SpendingStatus.of(window=spec.decision.limits.window,
                                                 limits=spec.decision.limits.limits, ledger=ledger, now=now).to_dict()

    async def release(self, namespace: str, spec: PolicySpec, status: dict[str, Any], *, key: str,
                      now: datetime) -> None:
        """Undo a reservation whose Job could not be created."""
        if spec.decision.budget:
            await self._accountant.update(namespace, spec.decision.budget, lambda ledger: ledger.release(key))
        if spec.decision.limits is not None:
            ledger = Ledger.from_list((status.get("spending") or {}).get("ledger")).release(key)
            status["spending"] = SpendingStatus.of(window=spec.decision.limits.window,
                                                 limits=spec.decision.limits.limits, ledger=ledger, now=now).to_dict()

    async def settle(self, namespace: str, name: str, spec: PolicySpec, status: dict[str, Any], *, job: str,
                     job_body: Mapping[str, Any] | None, started: datetime | None, finished: datetime,
                     now: datetime) -> float:
        """Charge the real cost of a finished Job (its real duration); return that duration."""
        job_status = (job_body or {}).get("status") or {}
        begin = parse_rfc3339(job_status.get("startTime")) or started or finished
        end = parse_rfc3339(job_status.get("completionTime")) or finished
        seconds = max(0.0, (end - begin).total_seconds())
        cpu, gpu, money = cost_of(resources_of(spec), seconds=seconds, prices=await self.prices(namespace, spec))
        key = f"{namespace}/{job}"
        fallback = Charge(key=key, policy=f"{namespace}/{name}", at=begin, state="Settled", cpu_hours=cpu,
                          gpu_hours=gpu, cost=money)

        def settle(ledger: Ledger) -> Ledger:
            return ledger.settle(key, cpu_hours=cpu, gpu_hours=gpu, cost=money, fallback=fallback)

        if spec.decision.budget:
            await self._accountant.update(namespace, spec.decision.budget, settle)
        if spec.decision.limits is not None:
            ledger = settle(Ledger.from_list((status.get("spending") or {}).get("ledger")))
            status["spending"] = SpendingStatus.of(window=spec.decision.limits.window,
                                                 limits=spec.decision.limits.limits, ledger=ledger, now=now).to_dict()
        return seconds

    def roll(self, spec: PolicySpec, status: dict[str, Any], *, now: datetime) -> None:
        """Keep the policy's own spending status on the current window (a write only when it rolls)."""
        if spec.decision.limits is None:
            status.pop("spending", None)
            return
        ledger = Ledger.from_list((status.get("spending") or {}).get("ledger"))
        status["spending"] = SpendingStatus.of(window=spec.decision.limits.window, limits=spec.decision.limits.limits,
                                             ledger=ledger, now=now).to_dict()


def record_history(status: dict[str, Any], entry: dict[str, Any]) -> None:
    history = [h for h in status.get("history") or [] if isinstance(h, Mapping)]
    status["history"] = [*history, entry][-HISTORY_LIMIT:]
