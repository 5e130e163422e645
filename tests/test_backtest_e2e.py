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
    texts = [queries.current, queries.held_max, queries.held_count]
    assert None not in texts
    start, end = DROP - timedelta(hours=1), RECOVERED + timedelta(hours=1)

    async def compare() -> list[tuple[str, datetime, list[float], list[float]]]:
        async with PrometheusClient(url=history.url, timeout=60) as client:
            replay = HistorySource(source=client, interval=60, start=start, end=end)
            for text in texts:
                replay.record(str(text), shift=0)
            await replay.fetch()
            out = []
            for minute in range(0, int((end - start).total_seconds() // 60) + 1, 7):
                at = start + timedelta(minutes=minute)
                for text in texts:
                    got = [s.value for s in await replay.query(str(text), at=at)]
                    want = [s.value for s in await client.query(str(text), at=at)]
                    out.append((str(text), at, got, want))
            return out

    compared = asyncio.run(compare())
    assert len(compared) > 100
    for text, at, got, want in compared:
        assert got == pytest.approx(want, abs=1e-12), (text, at)
