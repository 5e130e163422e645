"""Budget windows, the ledger, and the cost-benefit arithmetic, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from retrain_operator.domain.budget import (
    LEDGER_LIMIT,
    Charge,
    ChargeVerdict,
    CostBenefitSpec,
    Ledger,
    Limits,
    Prices,
    Resources,
    RunRecord,
    assess,
    cost_of,
    exceeded,
    judge_charge,
    quantity,
    recovery_share,
    usage,
    window_bounds,
)
from retrain_operator.domain.budget_status import SpendingStatus

NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("2", 2), ("1.5", 1.5), ("4Gi", 4 * 2**30), ("512Mi", 2**29), ("1k", 1000), ("2G", 2e9)],
)
def test_quantities(text: str, value: float) -> None:
    assert quantity(text) == value


def test_bad_quantity_says_the_form() -> None:
    with pytest.raises(ValueError, match="such as 500m"):
        quantity("lots")


@pytest.mark.parametrize(
    ("length", "start", "end"),
    [
        (86400, datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)),
        (3600, datetime(2026, 11, 27, 15, tzinfo=UTC), datetime(2026, 11, 27, 16, tzinfo=UTC)),
        (7 * 86400, datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC)),  # Thursday-aligned
    ],
)
def test_windows_are_aligned_to_the_epoch(length: int, start: datetime, end: datetime) -> None:
    assert window_bounds(length, NOW) == (start, end)
    assert window_bounds(length, start) == (start, end)
    assert window_bounds(length, end - timedelta(microseconds=1)) == (start, end)
    assert window_bounds(length, end)[0] == end


def charge(key: str, at: datetime, cost: float = 1.0, cpu: float = 0.5) -> Charge:
    return Charge(key=key, policy="ns/p", at=at, state="Reserved", cpu_hours=cpu, gpu_hours=0.0, cost=cost)


def test_usage_counts_only_the_current_window() -> None:
    start, end = window_bounds(86400, NOW)
    ledger = [charge("a", NOW - timedelta(days=1)), charge("b", NOW), charge("c", NOW + timedelta(hours=1), 2.5)]
    used = usage(ledger, start=start, end=end)
    assert (used.runs, used.cost, used.cpu_hours) == (2, 3.5, 1.0)


def test_reserve_is_once_per_key_and_settle_replaces_it() -> None:
    ledger = Ledger().reserve(charge("ns/job-1", NOW, cost=5.0))
    assert ledger.reserve(charge("ns/job-1", NOW, cost=99.0)) == ledger
    settled = ledger.settle("ns/job-1", cpu_hours=0.1, gpu_hours=0.0, cost=1.2, fallback=charge("x", NOW))
    assert [(c.state, c.cost) for c in settled.charges] == [("Settled", 1.2)]
    assert settled.settle("ns/job-1", cpu_hours=9, gpu_hours=9, cost=9, fallback=charge("x", NOW)) == settled
    assert settled.reserve(charge("ns/job-1", NOW)) == settled
    lost = Ledger().settle("ns/job-2", cpu_hours=0.1, gpu_hours=0, cost=2, fallback=charge("ns/job-2", NOW))
    assert [(c.key, c.state, c.cost) for c in lost.charges] == [("ns/job-2", "Settled", 2)]


def test_ledger_is_bounded_but_keeps_the_current_window() -> None:
    start, _ = window_bounds(3600, NOW)
    old = [charge(f"old-{i}", start - timedelta(minutes=i + 1)) for i in range(LEDGER_LIMIT)]
    new = [charge(f"new-{i}", start + timedelta(seconds=i)) for i in range(5)]
    bounded = Ledger(tuple(old + new)).bounded(window_start=start)
    assert len(bounded.charges) == LEDGER_LIMIT
    assert [c.key for c in bounded.charges[-5:]] == [f"new-{i}" for i in range(5)]


def test_exceeded_names_each_limit_with_numbers() -> None:
    used = usage([charge("a", NOW, cost=8.0)], start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1))
    broken = exceeded(Limits(runs=1, cost=10.0), used, charge("b", NOW, cost=3.0))
    assert broken == ["runs 1+1 > 1", "cost 8+3 > 10"]
    assert exceeded(Limits(runs=2, cost=11.0), used, charge("b", NOW, cost=3.0)) == []


@pytest.mark.parametrize(
    ("earlier", "verdict"),
    [
        (0, ChargeVerdict(True, "RetrainBudget team: fits (1 runs, cost 1 in this window)")),
        (1, ChargeVerdict(False, "RetrainBudget team: runs 1+1 > 1 in the window ending 2026-11-28T00:00:00Z")),
    ],
)
def test_a_charge_is_judged_against_the_limits_of_its_window(earlier: int, verdict: ChargeVerdict) -> None:
    ledger = Ledger(
        (
            *[charge(f"ns/old-{i}", NOW - timedelta(hours=1)) for i in range(earlier)],
            charge("ns/yesterday", NOW - timedelta(days=1)),
        )
    )
    assert (
        judge_charge(
            Limits(runs=1),
            window=86400,
            ledger=ledger,
            charge=charge("ns/new", NOW),
            at=NOW,
            owner="RetrainBudget team",
        )
        == verdict
    )


def test_spending_status_rolls_over_with_time() -> None:
    ledger = Ledger((charge("a", NOW),))
    limits = Limits(runs=2)
    today = SpendingStatus.of(window=86400, limits=limits, ledger=ledger, now=NOW).to_dict()
    tomorrow = SpendingStatus.of(window=86400, limits=limits, ledger=ledger, now=NOW + timedelta(days=1)).to_dict()
    assert today["used"]["runs"] == 1 and today["remaining"] == {"runs": 1}
    assert tomorrow["used"]["runs"] == 0 and tomorrow["remaining"] == {"runs": 2}
    assert tomorrow["windowStart"] == "2026-11-28T00:00:00Z"


def test_cost_of_resources() -> None:
    cpu, gpu, money = cost_of(
        Resources(cpu=2, memory_gib=4, gpu=1),
        seconds=1800,
        prices=Prices(cpu_hour=0.1, memory_gib_hour=0.01, gpu_hour=2.0, per_retrain=5),
    )
    assert (cpu, gpu) == (1.0, 0.5)
    assert money == pytest.approx(1.0 * 0.1 + 4 * 0.5 * 0.01 + 0.5 * 2.0 + 5)


SPEC = CostBenefitSpec(
    value_per_point_per_day=10.0,
    horizon_days=7,
    estimated_duration=3600,
    recovery_prior=0.5,
    prior_weight=2,
    human_cost=20,
)


def test_assessment_numbers() -> None:
    result = assess(SPEC, resources=Resources(cpu=4), prices=Prices(cpu_hour=1.0), runs=[], baseline=0.95, current=0.90)
    # 5 points x 0.5 recovered x 10/point/day x 7 days = 175; cost 4 CPU-hours + 20 human = 24
    assert result.expected_benefit == pytest.approx(175) and result.expected_cost == pytest.approx(24)
    assert result.worth_it and "net 151" in result.message
    small = assess(SPEC, resources=Resources(cpu=4), prices=Prices(cpu_hour=1.0), runs=[], baseline=0.95, current=0.945)
    assert not small.worth_it and small.expected_benefit == pytest.approx(17.5)
    unknown = assess(
        SPEC, resources=Resources(cpu=4), prices=Prices(cpu_hour=1.0), runs=[], baseline=None, current=None
    )
    assert not unknown.worth_it and "no accuracy drop" in unknown.message


def test_recovery_share_is_learned_from_history() -> None:
    assert recovery_share(SPEC, []) == (0.5, 0)
    runs = [
        RunRecord(600, accuracy_before=0.80, baseline_before=0.90, score_after=0.90),  # recovered all
        RunRecord(600, accuracy_before=0.80, baseline_before=0.90, score_after=0.85),
    ]  # recovered half
    share, n = recovery_share(SPEC, runs)
    assert n == 2 and share == pytest.approx((0.5 * 2 + 1.0 + 0.5) / 4)
    overshoot = RunRecord(600, accuracy_before=0.8, baseline_before=0.9, score_after=0.99)
    assert overshoot.recovery() == 1.0


def test_expected_duration_is_the_median_of_past_runs() -> None:
    runs = [RunRecord(d) for d in (100, 900, 300)]
    result = assess(
        SPEC, resources=Resources(cpu=1), prices=Prices(cpu_hour=3600.0), runs=runs, baseline=0.9, current=0.8
    )
    assert result.duration_seconds == 300 and result.expected_cost == pytest.approx(300 + 20)
    assert "median of 3 past runs" in result.message
