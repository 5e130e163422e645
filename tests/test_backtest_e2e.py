"""``retrain-operator backtest`` against a real Prometheus backfilled with ten days of history.

The history is written at fixed past dates with promtool, so every decision change has a known time:
an accuracy drop (firing after ``for``, retrains held by cooldown, kept firing by the clear level,
cleared when it recovers) and a counter of labelled samples with a reset. The number of queries is
read from Prometheus' own request counters, and the replayed answers are compared with Prometheus'
own instant answers at sampled steps.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrain_operator.adapters.prometheus import MAX_POINTS_PER_SERIES, PrometheusClient
from retrain_operator.domain import promql
from sandbox.prometheus import PrometheusServer, Series
from tests.policies import BASE
from tests.support.history import http_requests, prometheus_with_history
from tests.support.prometheus import require_prometheus

pytestmark = pytest.mark.integration

D = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 10
DROP = D + timedelta(days=3, hours=10)  # accuracy 0.80 from here
PARTLY = DROP + timedelta(hours=1)  # 0.87: above the threshold 0.85, below the clear level 0.88
RECOVERED = DROP + timedelta(hours=4)  # 0.95
RESET = D + timedelta(days=2)  # the labelled-samples counter restarts
LABELS = {"model": "churn"}


def accuracy(t: datetime) -> float:
    if DROP <= t < PARTLY:
        return 0.80
    if PARTLY <= t < RECOVERED:
        return 0.87
    return 0.95


def counter(t: datetime) -> float:
    """Two new samples every 30 s; restarted at RESET (its first sample counts the two since)."""
    k = int((t - D).total_seconds() // 30)
    reset = int((RESET - D).total_seconds() // 30)
    return 2.0 * k if k < reset else 2.0 * (k - reset + 1)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    require_prometheus()
    times = [D + timedelta(seconds=30 * i) for i in range(DAYS * 2880 + 1)]
    series = [
        Series("model_accuracy", LABELS, [(t.timestamp(), accuracy(t)) for t in times]),
        Series("labelled_total", LABELS, [(t.timestamp(), counter(t)) for t in times]),
        *(
            Series(
                "feature_value_bucket",
                {**LABELS, "feature": feature, "le": le},
                [
                    (t.timestamp(), float(i * (k + 1) * (2 if t >= DROP and feature == "age" else 1)))
                    for i, t in enumerate(times)
                ],
            )
            for feature in ("age", "income")
            for k, le in enumerate(("1", "5", "+Inf"))
        ),
    ]
    with prometheus_with_history(tmp_path_factory.mktemp("backtest-prometheus"), series) as server:
        yield server


def policy(triggers: list[dict[str, Any]], *, cooldown: str = "1h") -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    body["spec"]["evaluation"] = {"interval": "1m"}
    body["spec"]["triggers"] = triggers
    body["spec"]["decision"] = {"cooldown": cooldown}
    return body


ACCURACY = {
    "name": "acc",
    "for": "5m",
    "accuracyDecay": {
        "metric": "model_accuracy",
        "window": "5m",
        "fixedBaseline": 0.9,
        "maxDrop": 0.05,
        "clearDrop": 0.02,
    },
}


def backtest(tmp_path: Path, server: PrometheusServer, body: dict[str, Any], *extra: str) -> dict[str, Any]:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(body))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrain_operator.cli",
            "backtest",
            "-f",
            str(path),
            "--prometheus-url",
            server.url,
            "--from",
            D.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--to",
            (D + timedelta(days=DAYS)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if "json" in extra else {"text": result.stdout}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_accuracy_drop_decisions_change_at_the_right_times_with_batched_queries(
    tmp_path: Path, history: PrometheusServer
) -> None:
    ranges_before = http_requests(history, "/api/v1/query_range")
    instant_before = http_requests(history, "/api/v1/query")
    plot = tmp_path / "backtest.png"
    out = backtest(tmp_path, history, policy([ACCURACY]), "-o", "json", "--plot", str(plot))
    ranges = http_requests(history, "/api/v1/query_range") - ranges_before
    instant = http_requests(history, "/api/v1/query") - instant_before

    changes = [(when(c["at"]), c["reason"]) for c in out["changes"]]
    assert changes[0] == (D, "NoTriggerFiring")
    (pending, r1), (firing, r2) = changes[1:3]
    assert (r1, r2) == ("TriggerPending", "TriggerFiring")
    # The 5-minute average crosses 0.85 within its window of the drop; it has held for 5m one for later.
    assert DROP < pending <= DROP + timedelta(minutes=5)
    assert firing == pending + timedelta(minutes=5)
    # Each hour the cooldown ends and 0.87 is still below the clear level 0.88; at RECOVERED it clears.
    starts = [when(r["started"]) for r in out["retrains"]]
    assert starts == [firing + timedelta(hours=k) for k in range(4)]
    assert [when(r["finished"]) - when(r["started"]) for r in out["retrains"]] == [timedelta(minutes=10)] * 4
    cleared = [t for t, reason in changes if reason == "NoTriggerFiring" and t > DROP]
    assert len(cleared) == 1 and RECOVERED < cleared[0] <= RECOVERED + timedelta(minutes=5)
    assert changes[-1][1] == "NoTriggerFiring"
    totals = out["totals"]
    assert totals["evaluations"] == DAYS * 1440 + 1 and totals["retrains"] == 4
    assert totals["refusals"]["CoolingDown"]["episodes"] == 4

    # One template, read on the subquery's 30 s grid in pieces of 11,000 points: not one query per step.
    points = (DAYS * 86400 + 300) // 30 + 1
    assert out["queries"]["rangeQueries"] == ranges == math.ceil(points / MAX_POINTS_PER_SERIES) == 3
    assert instant == 0  # no instant query: every step was answered from the range queries
    assert out["queries"]["instantQueriesAnswered"] == 3 * totals["evaluations"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_volume_counts_since_each_simulated_training_across_a_reset(
    tmp_path: Path, history: PrometheusServer
) -> None:
    trigger = {"name": "data", "dataVolume": {"metric": "labelled_total", "minNewSamples": 5760}}  # a day's worth
    out = backtest(tmp_path, history, policy([trigger], cooldown="1h"), "-o", "json")
    starts = [when(r["started"]) for r in out["retrains"]]
    # A day after the start; then a day after each training ended (10 minutes after it started). Across the
    # reset the count misses what arrived between the last step before it and the reset (two samples here),
    # so that retrain comes up to one interval later; the others are exact.
    assert starts[0] == D + timedelta(days=1)
    assert timedelta(0) <= starts[1] - (starts[0] + timedelta(days=1, minutes=10)) <= timedelta(minutes=1)
    gaps = [b - a for a, b in itertools.pairwise(starts[1:])]
    assert gaps == [timedelta(days=1, minutes=10)] * (len(starts) - 2)
    assert len(starts) == 9
    assert out["queries"]["rangeQueries"] == math.ceil((DAYS * 1440 + 1) / MAX_POINTS_PER_SERIES)


def test_text_output_states_the_limitation_and_the_query_cost(tmp_path: Path, history: PrometheusServer) -> None:
    out = backtest(tmp_path, history, policy([ACCURACY]))["text"]
    assert "range queries to Prometheus" in out and "wall time" in out
    assert "does not know how a retrain would have changed the metrics" in out
    assert "retrains: 4" in out


def test_replayed_answers_equal_prometheus_instant_answers(history: PrometheusServer) -> None:
    from retrain_operator.reconcile.history import HistorySource

    queries = promql.accuracy_queries(
        metric="model_accuracy",
        values_by_label={"model": ["churn"]},
        group_by=["model"],
        window=300,
        for_seconds=300,
        step=30,
    )
    raw = 'avg_over_time(model_accuracy{model="churn"}[3m])'
    raw_held = promql.raw_held_query(raw, operator="<", for_seconds=420, step=42)
    histogram = promql.histogram_increase(
        metric="feature_value",
        values_by_label={"model": ["churn"]},
        group_by=["model"],
        feature_label="feature",
        window=3600,
    )
    # (text, how long before the step it is evaluated): accuracyDecay's three, a raw query's three on a
    # 42 s subquery grid that the 60 s interval does not divide, drift's current window and its
    # reference a day and a half back.
    texts = [
        (str(queries.current), 0.0),
        (str(queries.held_max), 0.0),
        (str(queries.held_count), 0.0),
        (raw, 0.0),
        *((text, 0.0) for text in raw_held),
        (histogram, 0.0),
        (histogram, 1.5 * 86400),
    ]
    start, end = DROP - timedelta(hours=1), RECOVERED + timedelta(hours=1)

    def values(samples: list[Any]) -> list[tuple[str, float]]:
        return sorted((json.dumps(dict(s.labels), sort_keys=True), s.value) for s in samples)

    async def compare() -> list[tuple[str, datetime, list[Any], list[Any]]]:
        async with PrometheusClient(url=history.url, timeout=60) as client:
            replay = HistorySource(source=client, interval=60, start=start, end=end)
            for text, shift in texts:
                replay.record(text, shift=shift)
            await replay.fetch()
            assert replay.failures() == []
            out = []
            for minute in range(0, int((end - start).total_seconds() // 60) + 1, 7):
                step = start + timedelta(minutes=minute)
                for text, shift in texts:
                    at = step - timedelta(seconds=shift)
                    got = values(await replay.query(text, at=at))
                    want = values(await client.query(text, at=at))
                    out.append((text, at, got, want))
            return out

    compared = asyncio.run(compare())
    assert len(compared) > 300
    assert sum(1 for _, _, got, _ in compared if len(got) == 6) > 50  # the histograms: 2 features x 3 buckets
    for text, at, got, want in compared:
        assert [k for k, _ in got] == [k for k, _ in want], (text, at)
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-9), (text, at)
