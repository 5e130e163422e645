"""Query cost of the worst policy a tenant could write, before the ceilings and after, side by side.

A real Prometheus (Debian's) is started with a month of backfilled history (accuracy gauges every 2 minutes,
histogram buckets every 30 minutes, a counter every 10), and the operator's own query builders
(:mod:`retrain_operator.domain.promql`) produce the queries of:

- before: ``for: 99999d`` with a 99999d window, planned the way the operator planned it before the
  bounds (subquery step = min(interval, for/10)), and ``for: 999999999999999999999d``;
- after: the worst each trigger type can still be, with the default ceilings (``--max-for 1d``,
  ``--max-window 1d``, ``--max-offset 30d``, ``--max-query-range 31d``, evaluation interval 1s).

Each query is timed by Prometheus itself (``stats=all``: ``evalTotalTime``, ``totalQueryableSamples``)
and by the wall clock, with Prometheus' ``--query.timeout`` as the cap. Figures, not assertions:
``python bench/query_cost.py [--days 31 --timeout 60]``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator" / "src")]

from retrain_operator.domain import promql  # noqa: E402
from retrain_operator.domain.limits import DEFAULT_LIMITS  # noqa: E402
from retrain_operator.settings.durations import format_duration  # noqa: E402
from sandbox.prometheus import Series, _openmetrics, find_binaries, start_prometheus  # noqa: E402

DAY = 86400.0
LABELS = {"namespace": "team-a", "model": "churn"}


def history(days: float, now: float) -> list[Series]:
    start = now - days * DAY
    accuracy = [(start + 120 * i, 0.9 + 0.01 * math.sin(i / 500)) for i in range(int(days * DAY / 120))]
    counter = [(start + 600 * i, float(i)) for i in range(int(days * DAY / 600))]
    edges = ["0.1", "0.5", "1", "5", "10", "+Inf"]
    buckets = [
        Series("feature_value_bucket", {**LABELS, "feature": feature, "le": le},
               [(start + 1800 * i, float(i * (k + 1))) for i in range(int(days * DAY / 1800))])
        for feature in ("age", "income", "tenure")
        for k, le in enumerate(edges)
    ]  # fmt: skip
    return [
        Series("model_accuracy", LABELS, accuracy),
        Series("labelled_samples_total", LABELS, counter),
        *buckets,
    ]


def backfill(series: list[Series], data_dir: Path) -> None:
    """promtool with one block per run (the sandbox's default of 2 h blocks is slow for a month)."""
    data_dir.mkdir(parents=True)
    source = data_dir.parent / "history.om"
    source.write_text(_openmetrics(series))
    command = [find_binaries()[1], "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=1000h"]
    subprocess.run([*command, str(source), str(data_dir)], check=True, capture_output=True, timeout=900)
    source.unlink()


def old_step(for_seconds: float, interval: float) -> float:
    """The subquery step before the bounds: as fine as the evaluation interval, whatever ``for``."""
    return max(1.0, min(interval, for_seconds / 10.0))


def accuracy(*, for_seconds: float, window: float, step: float) -> list[str]:
    queries = promql.accuracy_queries(
        metric="model_accuracy",
        values_by_label={k: [v] for k, v in LABELS.items()},
        group_by=sorted(LABELS),
        window=window,
        for_seconds=for_seconds,
        step=step,
    )
    return [q for q in (queries.current, queries.held_max, queries.held_count) if q]


def drift_queries(*, window: float, offset: float, reference: float, windows: int) -> list[tuple[str, float]]:
    def query(length: float) -> str:
        return promql.histogram_increase(
            metric="feature_value",
            values_by_label={k: [v] for k, v in LABELS.items()},
            group_by=sorted(LABELS),
            feature_label="feature",
            window=length,
        )

    step = reference / windows
    return [(query(window), 0.0), (query(reference), offset)] + [
        (query(step), offset + i * step) for i in range(windows)
    ]


def run(url: str, query: str, *, at: float, timeout: float) -> dict[str, Any]:
    params = urllib.parse.urlencode({"query": query, "time": repr(at), "stats": "all"}).encode()
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query", data=params, timeout=timeout + 10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:
        body = json.loads(e.read() or b"{}")
    except TimeoutError:
        body = {"status": "error", "error": f"no answer within {timeout + 10:g}s"}
    except (urllib.error.URLError, ConnectionError) as e:  # Prometheus fell over under the query
        body = {"status": "error", "error": f"connection lost: {e}"}
    wall = time.perf_counter() - started
    stats = (body.get("data") or {}).get("stats") or {}
    timings = stats.get("timings") or {}
    samples = (stats.get("samples") or {}).get("totalQueryableSamples")
    return {
        "wall": wall,
        "eval": timings.get("evalTotalTime"),
        "samples": samples,
        "error": body.get("error") if body.get("status") != "success" else None,
    }


def scenario(url: str, queries: list[tuple[str, float]], *, now: float, timeout: float) -> dict[str, Any]:
    """Run a policy's queries one after the other, as one evaluation would; sum what Prometheus reports."""
    total = {"wall": 0.0, "eval": 0.0, "samples": 0, "error": None}
    for query, back in queries:
        result = run(url, query, at=now - back, timeout=timeout)
        total["wall"] += result["wall"]
        total["eval"] += result["eval"] or 0.0
        total["samples"] += result["samples"] or 0
        total["error"] = total["error"] or result["error"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=31.0, help="days of backfilled history")
    parser.add_argument("--timeout", type=float, default=60.0, help="Prometheus --query.timeout, in seconds")
    args = parser.parse_args()
    now = float(int(time.time()))
    limits = DEFAULT_LIMITS
    interval = 1.0  # the shortest evaluation interval a policy may have: the finest subquery step
    huge = 99999 * DAY
    worst_for, worst_window = limits.max_for, min(limits.max_window, limits.max_range - limits.max_for)
    offset = limits.max_offset
    reference = min(limits.max_window, limits.max_range - offset)
    cases = [
        ("before", "accuracyDecay for 99999d, window 99999d",
         [(q, 0.0) for q in accuracy(for_seconds=huge, window=huge, step=old_step(huge, interval))]),
        ("before", "accuracyDecay for 999999999999999999999d",
         [(q.replace(format_duration(huge), "999999999999999999999d"), 0.0)
          for q in accuracy(for_seconds=huge, window=300, step=old_step(huge, interval))[1:]]),
        ("before", "dataVolume, model trained 99999d ago",
         [(promql.counter_increase(metric="labelled_samples_total", matchers=LABELS, window=huge), 0.0)]),
        ("after", f"accuracyDecay for {format_duration(worst_for)}, window {format_duration(worst_window)}",
         [(q, 0.0) for q in accuracy(for_seconds=worst_for, window=worst_window,
                                     step=promql.subquery_step(worst_for, interval))]),
        ("after", f"drift window 1d, reference offset {format_duration(offset)} + window "
                  f"{format_duration(reference)}, 48 learned sub-windows",
         drift_queries(window=limits.max_window, offset=offset, reference=reference, windows=48)),
        ("after", f"dataVolume, counted over {format_duration(limits.max_range)} at most",
         [(promql.counter_increase(metric="labelled_samples_total", matchers=LABELS, window=limits.max_range), 0.0)]),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        print(f"backfilling {args.days:g} days of history ...", flush=True)
        backfill(history(args.days, now), Path(tmp) / "data")
        extra = [f"--query.timeout={int(args.timeout)}s"]
        with start_prometheus(Path(tmp), extra_args=extra, ready_timeout=120) as server:
            run(server.url, "up", at=now, timeout=args.timeout)  # warm up
            print(f"Prometheus {server.url}, --query.timeout={int(args.timeout)}s, evaluation interval 1s\n")
            print(f"{'':7} {'policy':<86} {'wall s':>8} {'eval s':>8} {'samples':>12}  outcome")
            # The cheap ones first: a "before" query may take Prometheus down with it.
            results = {
                name: scenario(server.url, queries, now=now, timeout=args.timeout)
                for when, name, queries in sorted(cases, key=lambda case: case[0] == "before")
            }
            for when, name, _ in cases:
                result = results[name]
                outcome = result["error"] or "ok"
                eval_s = f"{result['eval']:.3f}" if result["eval"] else "-"
                samples = f"{result['samples']:,}" if result["samples"] else "-"
                print(f"{when:7} {name:<86} {result['wall']:8.3f} {eval_s:>8} {samples:>12}  {outcome[:70]}")


if __name__ == "__main__":
    main()
