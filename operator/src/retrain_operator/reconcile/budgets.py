"""Charging retrains to shared RetrainBudgets, with optimistic concurrency on the budget's status.

Several policies (and several operator replicas) may charge one budget at the same moment. Each
charge is a read-modify-write of the budget's status whose write tests the resourceVersion it read:
when someone else wrote in between, the write is refused and the charge is re-evaluated against the
fresh ledger. So two policies racing for the last run of a window cannot both get it. Charges are
keyed by Job, so repeating one after a crash or a lost response changes nothing. What fits is
judged in the domain (``judge_charge``); this module only reads, retries and writes. Limits: a
charge that loses the race ``ATTEMPTS`` times in a row is refused until the next interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from retrain_operator.adapters.kubernetes import Conflict, KubeClient
from retrain_operator.domain.api import API_VERSION, BudgetSpec, InvalidSpec, parse_budget_spec
from retrain_operator.domain.budget import Charge, ChargeVerdict, Ledger, judge_charge
from retrain_operator.domain.budget_status import BudgetStatus
from retrain_operator.domain.evaluation import sanitise
from retrain_operator.domain.status import status_changed
from retrain_operator.reconcile.telemetry import Telemetry

logger = logging.getLogger(__name__)
ATTEMPTS = 8


class BudgetUnavailable(Exception):
    """The named budget does not exist or is invalid: retrains that name it are refused."""


class Accountant:
    """Charges retrains to shared RetrainBudgets: reads a budget, judges a charge, writes the budget's status.

    Every write tests the resourceVersion it read (see the module docstring); the status written is
    always rebuilt from the ledger and the clock, so a refresh that finds nothing new writes nothing.
    """

    def __init__(self, *, kube: KubeClient, clock: Callable[[], datetime], telemetry: Telemetry) -> None:
        self._kube = kube
        self._clock = clock
        self._telemetry = telemetry

    async def _read(self, namespace: str, name: str) -> tuple[dict[str, Any], BudgetSpec]:
        body = await self._kube.get_budget(namespace, name)
        if body is None:
            raise BudgetUnavailable(f"RetrainBudget {namespace}/{name} does not exist")
        try:
            return body, parse_budget_spec(body.get("spec"))
        except InvalidSpec as exc:
            raise BudgetUnavailable(f"RetrainBudget {namespace}/{name} is invalid: {exc}") from None

    async def _write(
        self, body: dict[str, Any], spec: BudgetSpec, ledger: Ledger, *, now: datetime, only_if_changed: bool = False
    ) -> bool:
        """Write the status ``ledger`` gives at ``now``; raises Conflict when the budget changed since read."""
        meta = body["metadata"]
        stored = body.get("status") or {}
        status = BudgetStatus.of(
            window=spec.window,
            limits=spec.limits,
            ledger=ledger,
            previous=BudgetStatus.from_dict(stored),
            generation=int(meta.get("generation") or 0),
            now=now,
        )
        self._telemetry.budget(meta["namespace"], meta["name"], status.used)
        self._telemetry.budget_limits(meta["namespace"], meta["name"], spec.limits)
        built = status.to_dict()
        if only_if_changed and not status_changed(stored, built):
            return False
        await self._kube.replace_budget_status(
            meta["namespace"], meta["name"], built, resource_version=str(meta["resourceVersion"])
        )
        return True

    async def spec(self, namespace: str, name: str) -> BudgetSpec | None:
        try:
            return (await self._read(namespace, name))[1]
        except BudgetUnavailable:
            return None

    async def check(self, namespace: str, name: str, charge: Charge) -> ChargeVerdict:
        """Would this charge fit? Read-only (for dry runs)."""
        try:
            body, spec = await self._read(namespace, name)
        except BudgetUnavailable as exc:
            return ChargeVerdict(False, str(exc))
        return self._judge(name, spec, _ledger(body), charge)

    @staticmethod
    def _judge(name: str, spec: BudgetSpec, ledger: Ledger, charge: Charge) -> ChargeVerdict:
        return judge_charge(
            spec.limits, window=spec.window, ledger=ledger, charge=charge, at=charge.at, owner=f"RetrainBudget {name}"
        )

    async def reserve(self, namespace: str, name: str, charge: Charge) -> ChargeVerdict:
        """Reserve the charge if it fits; a charge already in the ledger counts as reserved."""
        for _ in range(ATTEMPTS):
            try:
                body, spec = await self._read(namespace, name)
            except BudgetUnavailable as exc:
                return ChargeVerdict(False, str(exc))
            ledger = _ledger(body)
            if ledger.find(charge.key) is not None:
                return ChargeVerdict(True, f"RetrainBudget {name}: already charged for {charge.key}")
            verdict = self._judge(name, spec, ledger, charge)
            if not verdict.fits:
                return verdict
            try:
                await self._write(body, spec, ledger.reserve(charge), now=self._clock())
                return verdict
            except Conflict:
                continue  # someone charged it in between: judge again against the fresh ledger
        return ChargeVerdict(False, f"RetrainBudget {name}: too many concurrent charges, retrying next interval")

    async def update(self, namespace: str, name: str, change: Callable[[Ledger], Ledger]) -> None:
        """Apply a ledger change (settle, release) with the same optimistic retry."""
        for _ in range(ATTEMPTS):
            try:
                body, spec = await self._read(namespace, name)
            except BudgetUnavailable as exc:
                logger.warning("%s; charge not updated", exc)
                return
            ledger = _ledger(body)
            changed = change(ledger)
            if changed == ledger:
                return
            try:
                await self._write(body, spec, changed, now=self._clock())
                return
            except Conflict:
                continue
        logger.warning("RetrainBudget %s/%s: charge not updated after %d attempts", namespace, name, ATTEMPTS)

    async def refresh(self, body: dict[str, Any]) -> bool:
        """Roll the window over in the budget's status when time has moved on; write only on change.

        A budget that is invalid, or whose status cannot be computed, is never left silent: its status
        gets Valid=False with the reason (InvalidSpec, or EvaluationError and the exception's message)
        and a Warning event says so once per new message; the error still goes to the caller's log.
        """
        try:
            spec = parse_budget_spec(body.get("spec"))
        except InvalidSpec as exc:
            return await self._write_problem(body, reason="InvalidSpec", message=str(exc))
        try:
            return await self._write(body, spec, _ledger(body), now=self._clock(), only_if_changed=True)
        except Conflict:
            return False  # a newer version exists; its own event brings it back here
        except Exception as exc:
            await self._write_problem(body, reason="EvaluationError", message=sanitise(exc))
            raise

    async def _write_problem(self, body: dict[str, Any], *, reason: str, message: str) -> bool:
        meta = body["metadata"]
        stored = body.get("status") or {}
        before = BudgetStatus.from_dict(stored)
        status = before.failed(
            reason=reason, message=message, generation=int(meta.get("generation") or 0), now=self._clock()
        )
        if before.problem() != status.problem():
            involved = {"apiVersion": API_VERSION, "kind": "RetrainBudget", "metadata": meta}
            try:
                await self._kube.create_event(involved=involved, type="Warning", reason=reason, message=message)
            except Exception as exc:  # an event lost must never stop the status write
                logger.warning("event %s for RetrainBudget %s/%s not posted: %s", reason, *_key(meta), exc)
        built = status.to_dict()
        if not status_changed(stored, built):
            return False
        try:
            await self._kube.replace_budget_status(
                meta["namespace"], meta["name"], built, resource_version=str(meta["resourceVersion"])
            )
        except Conflict:
            return False
        return True


def _key(meta: dict[str, Any]) -> tuple[str, str]:
    return str(meta.get("namespace")), str(meta.get("name"))


def _ledger(body: dict[str, Any]) -> Ledger:
    return BudgetStatus.from_dict(body.get("status")).ledger
