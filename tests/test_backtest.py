"""``backtest``: the operator's decisions replayed over history answered from range queries, with a fixed clock.

The metric history is a function of time served by an in-memory range source that Prometheus' grid
rules apply to (a point at ``start + i * step`` up to ``end``); the real Prometheus is in
``test_backtest_e2e.py``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retrain_operator.adapters.prometheus import (
    MAX_POINTS_PER_SERIES,
    PrometheusBadResponse,
    PrometheusQueryError,
    PrometheusUnreachable,
    RangeSeries,
    parse_range_response,
)
from retrain_operator.backtest_report import plot, table
from retrain_operator.domain import promql
from retrain_operator.reconcile.backtest import LIMITATIONS, MAX_STEPS, BacktestError, BacktestResult, backtest
from retrain_operator.reconcile.history import HistorySource
from tests.policies import BASE

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 20, tzinfo=UTC)
MODEL = {"model": "churn"}
Value = Callable[[float], float | None]


@dataclass
class FakeRanges:
    """Answers query_range for known texts from functions of time; records every call."""

    series: Mapping[str, Value]
    calls: list[tuple[str, float, float, float]] = field(default_factory=list)

    async def query_range(
        self, promql: str, *, start: datetime, end: datetime, step: float, headers: Mapping[str, str] | None = None
    ) -> list[RangeSeries]:
        self.calls.append((promql, start.timestamp(), end.timestamp(), step))
        assert (end - start).total_seconds() / step < MAX_POINTS_PER_SERIES
        value = self.series[promql]
        points = []
        t = start.timestamp()
        while t <= end.timestamp() + 1e-9:
            v = value(t)
            if v is not None:
                points.append((t, v))
            t += step
        return [RangeSeries(labels=dict(MODEL), points=points)] if points else []


def at(minutes: float) -> float:
    return (T0 + timedelta(minutes=minutes)).timestamp()


def accuracy_texts(*, for_seconds: float, step: float) -> str:
    return promql.accuracy_queries(
        metric="model_accuracy",
        values_by_label={"model": ["churn"]},
        group_by=["model"],
        window=300,
        for_seconds=for_seconds,
        step=step,
    ).current


def accuracy_policy(*, for_: str = "5m", decision: dict[str, Any] | None = None) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    body["spec"]["evaluation"] = {"interval": "1m"}
    body["spec"]["triggers"] = [
        {
            "name": "acc",
            "for": for_,
            "accuracyDecay": {
                "metric": "model_accuracy",
                "window": "5m",
                "fixedBaseline": 0.9,
                "maxDrop": 0.05,
                "clearDrop": 0.02,
            },
        }
    ]
    body["spec"]["decision"] = decision or {"cooldown": "1h"}
    return body


def run(
    body: dict[str, Any], series: Mapping[str, Value], hours: float, **kw: Any
) -> tuple[BacktestResult, FakeRanges]:
    source = FakeRanges(series)
    result = asyncio.run(backtest(body, source=source, start=T0, end=T0 + timedelta(hours=hours), now=NOW, **kw))
    return result, source


def changes(result: BacktestResult) -> list[tuple[float, str]]:
    """(minutes after T0, reason) of each decision change."""
    return [((c.at - T0).total_seconds() / 60, c.reason) for c in result.changes]


def test_for_hysteresis_cooldown_and_one_training_at_a_time() -> None:
    def accuracy(t: float) -> float:
        if t < at(60):
            return 0.95
        if t < at(90):
            return 0.80  # below the threshold 0.85
        if t < at(180):
            return 0.87  # above the threshold, below the clear level 0.88: still firing
        return 0.95

    current = accuracy_texts(for_seconds=300, step=30)
    result, source = run(accuracy_policy(), {current: accuracy}, hours=4)

    assert changes(result) == [
        (0, "NoTriggerFiring"),
        (60, "TriggerPending"),  # below since 60, for 5m
        (65, "TriggerFiring"),  # the 11 points of [60, 65] at 30 s are all below
        (66, "TrainingInProgress"),  # the simulated training lasts the default 10 minutes
        (75, "CoolingDown"),  # cooldown 1h from the start at 65
        (125, "TriggerFiring"),  # 0.87 is still below the clear level
        (126, "TrainingInProgress"),
        (135, "CoolingDown"),
        (180, "NoTriggerFiring"),  # 0.95: clear
    ]
    assert [(r.started, r.finished) for r in result.runs] == [
        (T0 + timedelta(minutes=65), T0 + timedelta(minutes=75)),
        (T0 + timedelta(minutes=125), T0 + timedelta(minutes=135)),
    ]
    # One read for the whole period: the 30 s grid of the subquery also answers the current value.
    assert [(text, step) for text, _, _, step in source.calls] == [(current, 30.0)]
    assert result.range_queries == 1
    assert result.evaluations == 4 * 60 + 1
    assert result.instant_queries_answered == 3 * result.evaluations
    totals = result.totals()
    assert totals["retrains"] == 2
    assert totals["refusals"]["CoolingDown"] == {"evaluations": 50 + 45, "episodes": 2}
    assert totals["refusals"]["TrainingInProgress"]["episodes"] == 2


@pytest.mark.parametrize(
    ("policy", "expected", "retrains"),
    [
        ("Inconclusive", [(0, "NoTriggerFiring"), (30, "MetricsUnavailable"), (45, "NoTriggerFiring")], []),
        ("Clear", [(0, "NoTriggerFiring")], []),
        (
            "Fire",
            [
                (0, "NoTriggerFiring"),
                (30, "TriggerFiring"),
                (31, "TrainingInProgress"),
                (40, "CoolingDown"),  # still firing on missing data until the metric is back at 45
                (45, "NoTriggerFiring"),
            ],
            [30],
        ),
    ],
)
def test_missing_data_follows_the_trigger_policy(
    policy: str, expected: list[tuple[float, str]], retrains: list[float]
) -> None:
    current = accuracy_texts(for_seconds=0, step=1)
    body = accuracy_policy(for_="0s")
    body["spec"]["triggers"][0]["onMissingData"] = policy
    result, _ = run(body, {current: lambda t: None if at(30) <= t < at(45) else 0.95}, hours=1)
    assert changes(result) == expected
    assert [(r.started - T0).total_seconds() / 60 for r in result.runs] == retrains


def test_budget_window_refuses_until_it_rolls_over() -> None:
    budget = {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "RetrainBudget",
        "metadata": {"name": "team", "namespace": "team-a"},
        "spec": {"window": "24h", "limits": {"runs": 1}, "prices": {"cpuHour": 1.0, "perRetrain": 2.0}},
    }
    body = accuracy_policy(for_="0s", decision={"cooldown": "1h", "budget": "team"})
    body["spec"]["training"]["resources"] = {"requests": {"cpu": "2", "memory": "1Gi"}}
    current = accuracy_texts(for_seconds=0, step=1)
    result, _ = run(body, {current: lambda t: 0.5}, hours=18, budget=budget)

    assert [r.started for r in result.runs] == [T0, datetime(2026, 11, 2, tzinfo=UTC)]
    assert (60, "OverBudget") in changes(result)  # after the cooldown, the window's one run is spent
    totals = result.totals()
    assert totals["refusals"]["OverBudget"]["episodes"] == 2  # after each cooldown, until the window rolls over
    # 10 minutes of 2 CPUs at 1/CPU-hour, plus 2 per retrain, twice.
    assert totals["cost"] == pytest.approx(2 * (2 * 10 / 60 + 2.0))
    assert totals["cpuHours"] == pytest.approx(2 * 2 * 10 / 60)


def test_policy_naming_a_budget_needs_the_budget_file() -> None:
    body = accuracy_policy(for_="0s", decision={"budget": "team"})
    with pytest.raises(BacktestError, match="--budget"):
        run(body, {}, hours=1)


def test_cost_benefit_gate_refuses_a_small_drop_and_dry_run_only_records() -> None:
    current = accuracy_texts(for_seconds=0, step=1)
    gate = {"valuePerAccuracyPointPerDay": 1, "horizon": "1d", "estimatedDuration": "20m", "humanCostPerRetrain": 50}
    small = lambda t: 0.84  # noqa: E731 - 6 points below 0.9: worth 6 x 0.8 = 4.8 < 50
    result, _ = run(accuracy_policy(for_="0s", decision={"costBenefit": gate}), {current: small}, hours=1)
    assert changes(result) == [(0, "NotWorthRetraining")]
    assert result.changes[0].cost_benefit is not None
    assert result.changes[0].cost_benefit["expectedCost"] == pytest.approx(50.0)

    dry, _ = run(accuracy_policy(for_="0s", decision={"dryRun": True}), {current: small}, hours=1)
    assert changes(dry) == [(0, "DryRun")]
    assert dry.runs == [] and dry.would_retrain == 61


def test_data_volume_counts_since_each_simulated_training_across_a_counter_reset() -> None:
    body = accuracy_policy()
    body["spec"]["triggers"] = [{"name": "data", "dataVolume": {"metric": "labelled_total", "minNewSamples": 500}}]
    body["spec"]["decision"] = {"cooldown": "30m"}

    def counter(t: float) -> float:
        minutes = (t - at(0)) / 60
        return 10 * minutes if minutes < 20 else 10 * (minutes - 19)  # restarted at 20 with 10 counted

    result, source = run(body, {'labelled_total{model="churn"}': counter}, hours=3)
    # 10 a minute from the start: 500 at minute 50; then 500 more from the end of each training (60, 120).
    assert [(r.started - T0).total_seconds() / 60 for r in result.runs] == [50, 110, 170]
    assert len(source.calls) == 1


def test_history_reads_a_long_period_in_pieces_of_at_most_11000_points() -> None:
    start, end = T0, T0 + timedelta(days=10)
    source = FakeRanges({"up": lambda t: 1.0})
    history = HistorySource(source=source, interval=60, start=start, end=end)
    history.record("up", shift=0)
    asyncio.run(history.fetch())
    assert len(source.calls) == math.ceil((10 * 1440 + 1) / MAX_POINTS_PER_SERIES) == 2
    (_, s1, e1, _), (_, s2, e2, _) = source.calls
    assert (s1, e2) == (start.timestamp(), end.timestamp()) and s2 == e1 + 60
    answer = asyncio.run(history.query("up", at=T0 + timedelta(days=9)))
    assert [s.value for s in answer] == [1.0]


def test_subquery_is_reduced_over_its_closed_range_on_its_own_grid() -> None:
    source = FakeRanges({"x": lambda t: (t - at(0)) / 60})  # the minutes since T0
    history = HistorySource(source=source, interval=60, start=T0, end=T0 + timedelta(hours=1))
    texts = [f"{f}_over_time((x)[5m:30s])" for f in ("max", "min", "count")]
    for text in texts:
        history.record(text, shift=0)
    asyncio.run(history.fetch())
    when = T0 + timedelta(minutes=30)
    answers = [asyncio.run(history.query(text, at=when))[0].value for text in texts]
    assert answers == [30.0, 25.0, 11.0]


@pytest.mark.parametrize(
    ("start", "end", "interval", "message"),
    [
        (T0, T0 - timedelta(hours=1), "1m", "not after --from"),
        (T0 - timedelta(days=91), T0, "1m", "at most 90d"),
        (T0 - timedelta(days=30), T0, "10s", f"at most {MAX_STEPS}"),
        (T0, NOW + timedelta(days=1), "1m", "in the future"),
    ],
)
def test_period_bounds_name_the_flag(start: datetime, end: datetime, interval: str, message: str) -> None:
    body = accuracy_policy()
    body["spec"]["evaluation"] = {"interval": interval}
    with pytest.raises(BacktestError, match=message):
        asyncio.run(backtest(body, source=FakeRanges({}), start=start, end=end, now=NOW))


def test_a_history_that_cannot_be_read_stops_the_backtest_with_the_reason() -> None:
    class Down(FakeRanges):
        async def query_range(self, promql: str, **_: Any) -> list[RangeSeries]:
            raise PrometheusUnreachable("Prometheus at http://127.0.0.1:1: cannot connect")

    body = accuracy_policy()
    with pytest.raises(BacktestError, match=r"reading the history failed \(Unreachable\).*--prometheus-url"):
        asyncio.run(backtest(body, source=Down({}), start=T0, end=T0 + timedelta(hours=1), now=NOW))


def test_table_json_and_plot(tmp_path: Path) -> None:
    current = accuracy_texts(for_seconds=300, step=30)
    result, _ = run(accuracy_policy(), {current: lambda t: 0.95 if t < at(60) else 0.8}, hours=3)
    text = table(result)
    assert "TriggerFiring" in text and LIMITATIONS[0] in text and "1 range queries" in text
    document = json.loads(json.dumps(result.to_dict()))
    assert document["totals"]["retrains"] == len(result.runs) == 2
    assert [c["reason"] for c in document["changes"]][:3] == ["NoTriggerFiring", "TriggerPending", "TriggerFiring"]
    assert document["changes"][2]["triggers"][0]["state"] == "firing"
    assert document["limitations"] == list(LIMITATIONS)
    path = tmp_path / "backtest.png"
    plot(result, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_range_response_is_parsed_and_errors_keep_their_reason() -> None:
    body = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"model": "churn"}, "values": [[60, "0.9"], [120, "NaN"]]}],
        },
    }
    [series] = parse_range_response(200, json.dumps(body).encode())
    assert series.labels == {"model": "churn"} and series.points[0] == (60.0, 0.9) and math.isnan(series.points[1][1])
    refused = {"status": "error", "errorType": "bad_data", "error": "exceeded maximum resolution of 11,000 points"}
    with pytest.raises(PrometheusQueryError) as caught:
        parse_range_response(400, json.dumps(refused).encode())
    assert caught.value.reason == "BadData"
    vector = {"status": "success", "data": {"resultType": "vector", "result": []}}
    with pytest.raises(PrometheusBadResponse):
        parse_range_response(200, json.dumps(vector).encode())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--from", "yesterday"], "--from 'yesterday' is not an RFC 3339 time"),
        (["--from", "2026-01-01T00:00:00Z", "--to", "2026-06-01T00:00:00Z"], "--from/--to span 151d; at most 90d"),
        (["--from", "2026-11-01T00:00:00Z", "--budget", "/nonexistent/budget.yaml"], "--budget /nonexistent"),
    ],
)
def test_command_line_errors_name_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    from retrain_operator.cli import main

    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps(accuracy_policy()))
    # Nothing listens on port 9: every error here comes before any query.
    argv = ["backtest", "-f", str(path), "--prometheus-url", "http://127.0.0.1:9", *flags]
    try:
        code = main(argv)
    except SystemExit as exc:
        code, text = 2, str(exc)
    else:
        text = capsys.readouterr().err
    assert code == 2 and message in text
