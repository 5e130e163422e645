"""Budgets over time windows, and the cost-benefit gate: retrain only when it pays and there is room.

Kubernetes quotas are point-in-time; a retraining budget is spent over a window (a day, a week, a
month). A window of length L is aligned to whole multiples of L since the Unix epoch in UTC (a 24h
window runs from 00:00 UTC, a 168h window from Thursday 00:00 UTC, the epoch's weekday), so every
replica and every restart computes the same window without storing when it began.

Spending is a ledger of charges keyed by the training Job (``namespace/job``): a retrain *reserves*
its estimated cost when its Job is created and *settles* the real cost (real duration, requested
resources) when the Job ends. Adding the same key twice changes nothing, so a charge is counted once
across restarts, retries and replicas. Usage in a window is the sum of the charges made in it.

The gate compares the expected cost of a retrain (resources x expected duration x prices, plus a
fixed human cost) with its expected benefit (accuracy to recover x the share a retrain recovers x
value per accuracy point per day x horizon). The share is learned from the policy's own runs,
starting from a stated prior that counts as ``prior_weight`` runs.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from retrain_operator.domain.numbers import number
from retrain_operator.domain.times import parse_rfc3339, rfc3339

LEDGER_LIMIT = 200
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")
_FACTORS = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
}
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (``500m`` -> 0.5, ``2Gi`` -> 2147483648)."""
    if isinstance(text, int | float):
        return float(text)
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a resource quantity such as 500m, 2 or 4Gi")
    return float(match.group(1)) * _FACTORS[match.group(2)]


@dataclass(frozen=True)
class Resources:
    """What one training pod asks for: cores, GiB of memory, GPUs."""

    cpu: float = 0.0
    memory_gib: float = 0.0
    gpu: float = 0.0

    @classmethod
    def from_requests(cls, requests: Mapping[str, str], limits: Mapping[str, str] | None = None) -> Resources:
        merged = {**(limits or {}), **requests}
        gpu = sum(quantity(merged[k]) for k in GPU_RESOURCES if k in merged)
        return cls(
            cpu=quantity(merged.get("cpu", "0")), memory_gib=quantity(merged.get("memory", "0")) / 2**30, gpu=gpu
        )


@dataclass(frozen=True)
class Prices:
    """What an hour of each resource costs, and a fixed cost per retrain (people's time, a licence)."""

    cpu_hour: float = 0.0
    memory_gib_hour: float = 0.0
    gpu_hour: float = 0.0
    per_retrain: float = 0.0


@dataclass(frozen=True)
class Limits:
    """Most spending allowed in one window; None means no limit on that measure."""

    runs: int | None = None
    cpu_hours: float | None = None
    gpu_hours: float | None = None
    cost: float | None = None


@dataclass(frozen=True)
class Charge:
    """One retrain in the ledger, reserved at launch and settled at the end."""

    key: str
    policy: str
    at: datetime
    state: str  # Reserved or Settled
    cpu_hours: float
    gpu_hours: float
    cost: float
    runs: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "policy": self.policy,
            "at": rfc3339(self.at),
            "state": self.state,
            "runs": self.runs,
            "cpuHours": round(self.cpu_hours, 6),
            "gpuHours": round(self.gpu_hours, 6),
            "cost": round(self.cost, 6),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Charge:
        at = parse_rfc3339(raw.get("at"))
        if at is None:
            raise ValueError(f"charge {raw.get('key')!r} has no time: at={raw.get('at')!r}")
        return cls(
            key=str(raw["key"]),
            policy=str(raw.get("policy", "")),
            at=at,
            state=str(raw.get("state", "Reserved")),
            cpu_hours=float(raw.get("cpuHours", 0)),
            gpu_hours=float(raw.get("gpuHours", 0)),
            cost=float(raw.get("cost", 0)),
            runs=int(raw.get("runs", 1)),
        )


@dataclass(frozen=True)
class Usage:
    """What the charges of one window add up to."""

    runs: int = 0
    cpu_hours: float = 0.0
    gpu_hours: float = 0.0
    cost: float = 0.0

    def plus(self, charge: Charge) -> Usage:
        return Usage(
            self.runs + charge.runs,
            self.cpu_hours + charge.cpu_hours,
            self.gpu_hours + charge.gpu_hours,
            self.cost + charge.cost,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "cpuHours": round(self.cpu_hours, 6),
            "gpuHours": round(self.gpu_hours, 6),
            "cost": round(self.cost, 6),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> Usage:
        raw = raw if isinstance(raw, Mapping) else {}
        return cls(
            runs=int(raw.get("runs") or 0),
            cpu_hours=float(raw.get("cpuHours") or 0.0),
            gpu_hours=float(raw.get("gpuHours") or 0.0),
            cost=float(raw.get("cost") or 0.0),
        )


def window_bounds(length_seconds: float, now: datetime) -> tuple[datetime, datetime]:
    """The window containing ``now``: aligned to multiples of its length since the epoch, UTC."""
    length = max(1, int(length_seconds))
    elapsed = int((now - EPOCH).total_seconds())
    start = EPOCH + timedelta(seconds=elapsed - elapsed % length)
    return start, start + timedelta(seconds=length)


def usage(charges: Sequence[Charge], *, start: datetime, end: datetime) -> Usage:
    total = Usage()
    for charge in charges:
        if start <= charge.at < end:
            total = total.plus(charge)
    return total


def cost_of(resources: Resources, *, seconds: float, prices: Prices) -> tuple[float, float, float]:
    """CPU-hours, GPU-hours and money for one pod with these resources running this long."""
    hours = max(0.0, seconds) / 3600.0
    cpu_hours = resources.cpu * hours
    gpu_hours = resources.gpu * hours
    money = (
        cpu_hours * prices.cpu_hour
        + resources.memory_gib * hours * prices.memory_gib_hour
        + gpu_hours * prices.gpu_hour
        + prices.per_retrain
    )
    return cpu_hours, gpu_hours, money


def exceeded(limits: Limits, used: Usage, charge: Charge) -> list[str]:
    """The limits this charge would break, each with its numbers; empty when it fits."""
    after = used.plus(charge)
    out = []
    if limits.runs is not None and after.runs > limits.runs:
        out.append(f"runs {used.runs}+1 > {limits.runs}")
    if limits.cpu_hours is not None and after.cpu_hours > limits.cpu_hours + 1e-9:
        used_, adding = number(used.cpu_hours, digits=3), number(charge.cpu_hours, digits=3)
        out.append(f"CPU-hours {used_}+{adding} > {number(limits.cpu_hours)}")
    if limits.gpu_hours is not None and after.gpu_hours > limits.gpu_hours + 1e-9:
        used_, adding = number(used.gpu_hours, digits=3), number(charge.gpu_hours, digits=3)
        out.append(f"GPU-hours {used_}+{adding} > {number(limits.gpu_hours)}")
    if limits.cost is not None and after.cost > limits.cost + 1e-9:
        out.append(f"cost {number(used.cost)}+{number(charge.cost)} > {number(limits.cost)}")
    return out


@dataclass(frozen=True)
class ChargeVerdict:
    """Whether a charge fits the limits it is judged against, in words a person reads in the decision."""

    fits: bool
    message: str


def judge_charge(
    limits: Limits, *, window: float, ledger: Ledger, charge: Charge, at: datetime, owner: str
) -> ChargeVerdict:
    """Does ``charge`` fit ``limits`` in the window containing ``at``, given what ``ledger`` holds?

    ``owner`` names the limits in the message ("RetrainBudget team", "policy limits").
    """
    start, end = window_bounds(window, at)
    used = usage(ledger.charges, start=start, end=end)
    broken = exceeded(limits, used, charge)
    if broken:
        return ChargeVerdict(False, f"{owner}: {', '.join(broken)} in the window ending {rfc3339(end)}")
    return ChargeVerdict(
        True, f"{owner}: fits ({used.runs + 1} runs, cost {number(used.cost + charge.cost)} in this window)"
    )


@dataclass(frozen=True)
class Ledger:
    """A bounded list of charges; the newest LEDGER_LIMIT are kept, every charge of the current window first."""

    charges: tuple[Charge, ...] = ()

    @classmethod
    def from_list(cls, raw: Sequence[Mapping[str, Any]] | None) -> Ledger:
        return cls(tuple(Charge.from_dict(item) for item in raw or [] if isinstance(item, Mapping) and "key" in item))

    def find(self, key: str) -> Charge | None:
        return next((c for c in self.charges if c.key == key), None)

    def reserve(self, charge: Charge) -> Ledger:
        """Add a reservation; a key already present (reserved or settled) is left as it is."""
        if self.find(charge.key) is not None:
            return self
        return Ledger((*self.charges, charge))

    def settle(self, key: str, *, cpu_hours: float, gpu_hours: float, cost: float, fallback: Charge) -> Ledger:
        """Replace a reservation with the real cost; settling twice changes nothing; a lost reservation is added."""
        current = self.find(key)
        if current is not None and current.state == "Settled":
            return self
        base = current or fallback
        settled = replace(base, state="Settled", cpu_hours=cpu_hours, gpu_hours=gpu_hours, cost=cost)
        return Ledger(
            tuple(settled if c.key == key else c for c in self.charges) if current else (*self.charges, settled)
        )

    def release(self, key: str) -> Ledger:
        return Ledger(tuple(c for c in self.charges if c.key != key))

    def bounded(self, *, window_start: datetime) -> Ledger:
        current = [c for c in self.charges if c.at >= window_start]
        older = [c for c in self.charges if c.at < window_start]
        room = max(0, LEDGER_LIMIT - len(current))
        return Ledger(tuple(older[len(older) - room :] if room else []) + tuple(current))

    def to_list(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.charges]


# The cost-benefit gate.


@dataclass(frozen=True)
class CostBenefitSpec:
    """The gate's settings: what an accuracy point is worth per day, over what horizon, and the priors."""

    value_per_point_per_day: float
    horizon_days: float = 7.0
    min_net_benefit: float = 0.0
    estimated_duration: float = 600.0
    recovery_prior: float = 0.8
    prior_weight: float = 2.0
    human_cost: float = 0.0


@dataclass(frozen=True)
class RunRecord:
    """What one past retrain tells the gate: how long it took and how much of the drop it recovered."""

    duration_seconds: float
    accuracy_before: float | None = None
    baseline_before: float | None = None
    score_after: float | None = None

    def recovery(self) -> float | None:
        """Share of the drop the new model recovered: (after - before) / (baseline - before), within [0, 1]."""
        if None in (self.accuracy_before, self.baseline_before, self.score_after):
            return None
        drop = self.baseline_before - self.accuracy_before  # type: ignore[operator]
        if drop <= 0:
            return None
        return min(1.0, max(0.0, (self.score_after - self.accuracy_before) / drop))  # type: ignore[operator]


def recovery_share(spec: CostBenefitSpec, runs: Sequence[RunRecord]) -> tuple[float, int]:
    """Posterior mean of the recovered share: the prior counts as ``prior_weight`` observations."""
    observed = [r for r in (run.recovery() for run in runs) if r is not None]
    share = (spec.recovery_prior * spec.prior_weight + sum(observed)) / (spec.prior_weight + len(observed))
    return share, len(observed)


def expected_duration(spec: CostBenefitSpec, runs: Sequence[RunRecord]) -> tuple[float, str]:
    durations = [r.duration_seconds for r in runs if r.duration_seconds > 0]
    if not durations:
        return spec.estimated_duration, "stated estimate (no past runs)"
    return float(statistics.median(durations)), f"median of {len(durations)} past runs"


@dataclass(frozen=True)
class Assessment:
    """The numbers behind a cost-benefit verdict, recorded in the decision."""

    expected_cost: float
    expected_benefit: float
    duration_seconds: float
    duration_source: str
    recovery: float
    recovery_runs: int
    drop: float | None
    worth_it: bool
    message: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def net(self) -> float:
        return self.expected_benefit - self.expected_cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "expectedCost": round(self.expected_cost, 4),
            "expectedBenefit": round(self.expected_benefit, 4),
            "net": round(self.net, 4),
            "expectedDurationSeconds": round(self.duration_seconds, 1),
            "recoveryShare": round(self.recovery, 4),
            "accuracyDrop": None if self.drop is None else round(self.drop, 6),
        }


def assess(
    spec: CostBenefitSpec,
    *,
    resources: Resources,
    prices: Prices,
    runs: Sequence[RunRecord],
    baseline: float | None,
    current: float | None,
) -> Assessment:
    """Expected cost and benefit of retraining now."""
    duration, source = expected_duration(spec, runs)
    _, _, compute = cost_of(resources, seconds=duration, prices=replace(prices, per_retrain=0.0))
    human = spec.human_cost or prices.per_retrain
    cost = compute + human
    share, n = recovery_share(spec, runs)
    if baseline is None or current is None or math.isnan(current):
        return Assessment(
            cost,
            0.0,
            duration,
            source,
            share,
            n,
            None,
            False,
            f"no accuracy drop to value (no accuracyDecay value); expected cost {number(cost)}",
        )
    drop = max(0.0, baseline - current)
    benefit = drop * 100 * share * spec.value_per_point_per_day * spec.horizon_days
    worth = benefit - cost > spec.min_net_benefit
    verdict = "worth it" if worth else "not worth it"
    message = (
        f"{verdict}: benefit {number(benefit)} ({number(drop * 100, digits=2)} points x {share:.2f} recovered x "
        f"{number(spec.value_per_point_per_day)}/point/day x {number(spec.horizon_days)} days) vs cost {number(cost)} "
        f"({number(duration / 60, digits=3)} min by {source}, human {number(human)}); net {number(benefit - cost)}, "
        f"minimum {number(spec.min_net_benefit)}"
    )
    return Assessment(cost, benefit, duration, source, share, n, drop, worth, message)


def is_exhausted(limits: Limits, used: Usage) -> list[str]:
    out = []
    if limits.runs is not None and used.runs >= limits.runs:
        out.append(f"runs {used.runs}/{limits.runs}")
    if limits.cpu_hours is not None and used.cpu_hours >= limits.cpu_hours:
        out.append(f"CPU-hours {number(used.cpu_hours, digits=3)}/{number(limits.cpu_hours)}")
    if limits.gpu_hours is not None and used.gpu_hours >= limits.gpu_hours:
        out.append(f"GPU-hours {number(used.gpu_hours, digits=3)}/{number(limits.gpu_hours)}")
    if limits.cost is not None and used.cost >= limits.cost:
        out.append(f"cost {number(used.cost)}/{number(limits.cost)}")
    return out
