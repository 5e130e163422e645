"""What a backtest costs: a 30-day replay at a 60 s interval against a real Prometheus with backfilled history.

A Prometheus (Debian's) is started on 127.0.0.1 with the history of one model backfilled by promtool
(``--days`` plus the 8 days the drift reference reaches back; samples every 60 s): live accuracy with
two decays, a counter of labelled samples that restarts once, and histograms of three features, one
of which shifts. The policy (``POLICY`` below) has accuracyDecay with ``for``, drift against a
reference a week back, dataVolume, cooldown, the cost-benefit gate and a RetrainBudget (``BUDGET``).
``retrain-operator backtest`` runs as a user runs it (a subprocess, ``-o json --plot``); the figures
are the range queries Prometheus answered and their time by Prometheus' own counters
(``prometheus_http_requests_total``, ``prometheus_http_request_duration_seconds_sum`` and
``prometheus_engine_query_duration_seconds_sum``), and the wall time of the command.

Figures, not assertions: ``python bench/backtest.py [--days 30] [--plot backtest.png] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator" / "src")]

from sandbox.prometheus import PrometheusServer, Series  # noqa: E402
from tests.support.history import own_metric, prometheus_with_history  # noqa: E402

LABELS = {"namespace": "team-a", "model": "churn"}
EDGES = ["10", "20", "30", "40", "50", "60", "80", "+Inf"]
FEATURES = {"age": (38.0, 9.0), "income": (45.0, 12.0), "tenure": (30.0, 15.0)}

POLICY: dict[str, Any] = {
    "apiVersion": "retrain.dev/v1alpha1",
    "kind": "RetrainPolicy",
    "metadata": {"name": "churn", "namespace": "team-a"},
    "spec": {
        "model": {"name": "churn", "registry": {"store": "default", "bucket": "models", "prefix": "churn/"}},
        "metrics": {"endpoint": "default", "selector": {"model": "churn"}},
        "evaluation": {"interval": "1m"},
        "triggers": [
            {
                "name": "accuracy",
                "for": "10m",
                "accuracyDecay": {
                    "metric": "model_accuracy",
                    "window": "15m",
                    "fixedBaseline": 0.93,
                    "maxDrop": 0.05,
                    "clearDrop": 0.03,
                },
            },
            {
                "name": "input-drift",
                "for": "30m",
                "drift": {
                    "metric": "feature_value",
                    "statistic": "psi",
                    "window": "6h",
                    "reference": {"source": "Window", "offset": "7d", "window": "1d"},
                    "threshold": 0.2,
                },
            },
            {"name": "new-data", "dataVolume": {"metric": "labelled_samples_total", "minNewSamples": 60000}},
        ],
        "decision": {
            "cooldown": "6h",
            "budget": "team-a",
            "costBenefit": {
                "valuePerAccuracyPointPerDay": 20,
                "horizon": "7d",
                "estimatedDuration": "30m",
                "humanCostPerRetrain": 5,
                "minNetBenefit": 20,
            },
        },
        "training": {
            "builtin": {
                "data": {"key": "data/train.csv"},
                "target": "label",
                "estimator": "sklearn.linear_model.LogisticRegression",
            },
            "resources": {"requests": {"cpu": "4", "memory": "8Gi"}},
        },
    },
}
BUDGET: dict[str, Any] = {
    "apiVersion": "retrain.dev/v1alpha1",
    "kind": "RetrainBudget",
    "metadata": {"name": "team-a", "namespace": "team-a"},
    "spec": {
        "window": "168h",
        "limits": {"runs": 3, "cpuHours": 20},
        "prices": {"cpuHour": 0.04, "memoryGiBHour": 0.005, "perRetrain": 0.5},
    },
}


def normal_cdf(x: float, mean: float, sd: float) -> float:
    return 0.5 * (1 + math.erf((x - mean) / (sd * math.sqrt(2))))


def history(start: datetime, days: float, seed: int = 7) -> list[Series]:
    """One model's metrics, every 60 s (see the module docstring for what happens when)."""
    rng = random.Random(seed)
    steps = int(days * 1440)
    times = [start.timestamp() + 60 * i for i in range(steps + 1)]
    day = [i / 1440 for i in range(steps + 1)]

    def accuracy(d: float) -> float:
        base = 0.93 + rng.gauss(0, 0.004)
        if 15 <= d < 17:  # a slow decay over two days, then a (real) retrain restored it
            base -= 0.06 * min(1.0, (d - 15) / 1.0)
        if 26 <= d < 27.5:  # a sharp drop when the income distribution moved
            base -= 0.09
        return round(base, 5)

    counter, total = [], 0.0
    for i, d in enumerate(day):
        if abs(d - 20) < 1e-9:
            total = 0.0  # the exporter restarted
        total += rng.randint(1, 5) if i else 0
        counter.append((times[i], total))
    buckets: list[Series] = []
    for feature, (mean, sd) in FEATURES.items():
        cumulative = [0.0] * len(EDGES)
        points: list[list[tuple[float, float]]] = [[] for _ in EDGES]
        for i, d in enumerate(day):
            shifted = mean + (12.0 if feature == "income" and d >= 26 else 0.0)
            n = rng.randint(40, 60)
            for k, le in enumerate(EDGES):
                share = 1.0 if le == "+Inf" else normal_cdf(float(le), shifted, sd)
                cumulative[k] += round(n * share)
                points[k].append((times[i], cumulative[k]))
        buckets += [
            Series("feature_value_bucket", {**LABELS, "feature": feature, "le": le}, points[k])
            for k, le in enumerate(EDGES)
        ]
    return [
        Series("model_accuracy", LABELS, [(t, accuracy(d)) for t, d in zip(times, day, strict=True)]),
        Series("labelled_samples_total", LABELS, counter),
        *buckets,
    ]  # fmt: skip


def server_figures(server: PrometheusServer) -> dict[str, float]:
    return {
        "range": own_metric(server, "prometheus_http_requests_total", handler="/api/v1/query_range"),
        "instant": own_metric(server, "prometheus_http_requests_total", handler="/api/v1/query"),
        "http_seconds": own_metric(
            server, "prometheus_http_request_duration_seconds_sum", handler="/api/v1/query_range"
        ),
        "eval_seconds": own_metric(server, "prometheus_engine_query_duration_seconds_sum", slice="inner_eval"),
        "total_seconds": sum(
            own_metric(server, "prometheus_engine_query_duration_seconds_sum", slice=s)
            for s in ("queue_time", "prepare_time", "inner_eval", "result_sort")
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=30.0, help="length of the backtest")
    parser.add_argument("--plot", default="backtest.png", help="where the command draws its plot")
    parser.add_argument("--keep", default=None, help="keep Prometheus' data and the files in this folder")
    args = parser.parse_args()

    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(days=args.days)
    history_start = start - timedelta(days=8)
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="bench-backtest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    series = history(history_start, args.days + 8)
    samples = sum(len(s.samples) for s in series)
    with prometheus_with_history(workdir / "prometheus", series) as server:
        backfill_seconds = time.perf_counter() - began
        policy_path, budget_path = workdir / "policy.yaml", workdir / "budget.yaml"
        policy_path.write_text(yaml.safe_dump(POLICY))
        budget_path.write_text(yaml.safe_dump(BUDGET))
        before = server_figures(server)
        command = [
            sys.executable,
            "-m",
            "retrain_operator.cli",
            "backtest",
            "-f",
            str(policy_path),
            "--budget",
            str(budget_path),
            "--prometheus-url",
            server.url,
            "--from",
            start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--to",
            end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--plot",
            args.plot,
        ]
        started = time.perf_counter()
        text = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600).stdout
        wall = time.perf_counter() - started
        after = server_figures(server)
        out = json.loads(
            subprocess.run([*command[:-2], "-o", "json"], capture_output=True, text=True, check=True).stdout
        )
    delta = {k: after[k] - before[k] for k in after}
    totals = out["totals"]
    print(text)
    print()
    print(
        f"history: {len(series)} series, {samples} samples over {args.days + 8:g} days, "
        f"backfilled and served in {backfill_seconds:.1f} s"
    )
    print(f"{'figure':<58} value")
    rows = [
        ("period / interval", f"{args.days:g} days / 60 s ({totals['evaluations']} evaluations)"),
        ("range queries (Prometheus' /api/v1/query_range count)", f"{delta['range']:.0f}"),
        ("instant queries (Prometheus' /api/v1/query count)", f"{delta['instant']:.0f}"),
        ("instant queries the steps asked, answered from memory", f"{out['queries']['instantQueriesAnswered']}"),
        ("Prometheus time: engine (queue+prepare+eval+sort)", f"{delta['total_seconds']:.2f} s"),
        ("Prometheus time: HTTP handler (incl. JSON encoding)", f"{delta['http_seconds']:.2f} s"),
        ("reading them, as the command reports (json run)", f"{out['queries']['readSeconds']:.1f} s"),
        ("wall time of the command (text + plot run)", f"{wall:.1f} s"),
        ("retrains / cost", f"{totals['retrains']} / {totals['cost']:.4g}"),
        ("refusals", ", ".join(f"{k} {v['episodes']}x" for k, v in totals["refusals"].items()) or "none"),
    ]
    for name, value in rows:
        print(f"{name:<58} {value}")
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
