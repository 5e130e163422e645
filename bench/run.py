"""Scheduler benchmark: policies per cycle, queries per cycle, writes in a steady cycle, time and memory.

Runs the real scheduler, observer and reconciler against the in-memory Kubernetes fake and a
metric source that answers merged queries after a fixed latency (like a Prometheus on the same
network), and prints, side by side in one run, the batched observer (queries merged per template)
against the same code with merging disabled (one query per policy and query), for several policy
counts. Figures, not assertions: run `make bench` (or `python bench/run.py --sizes 100 1000 10000`).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import re
import resource
import sys
import time
import tracemalloc
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "operator" / "src")]

from retrain_operator.adapters.kubernetes import FakeKubeClient  # noqa: E402
from retrain_operator.adapters.prometheus import Sample  # noqa: E402
from retrain_operator.reconcile import observe  # noqa: E402
from retrain_operator.reconcile.engine import Reconciler  # noqa: E402
from retrain_operator.reconcile.observe import Observer, QuerySource  # noqa: E402
from retrain_operator.reconcile.scheduler import Endpoints, Scheduler  # noqa: E402

BASE = {
    "apiVersion": "retrain.dev/v1alpha1",
    "kind": "RetrainPolicy",
    "metadata": {"namespace": "bench", "generation": 1, "creationTimestamp": "2026-11-01T00:00:00Z"},
    "spec": {
        "model": {"name": "m", "registry": {"store": "default", "bucket": "models"}},
        "metrics": {"endpoint": "default"},
        "evaluation": {"interval": "60s"},
        "triggers": [
            {
                "name": "acc",
                "for": "5m",
                "accuracyDecay": {"metric": "model_accuracy", "window": "5m", "fixedBaseline": 0.95, "maxDrop": 0.05},
            }
        ],
        "training": {
            "builtin": {"data": {"key": "d.csv"}, "target": "y", "estimator": "sklearn.linear_model.LogisticRegression"}
        },
    },
}


class LatencySource:
    """Answers like Prometheus would for every model named in the query, after ``latency`` seconds."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.queries = 0

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        self.queries += 1
        await asyncio.sleep(self.latency)
        match = re.search(r'model=~?"([^"]*)"', promql)
        models = match.group(1).split("|") if match else []
        value = 10.0 if promql.startswith("count_over_time") else 0.97
        return [Sample(labels={"model": m}, value=value, timestamp=at.timestamp()) for m in models]


async def bench(n: int, *, merged: bool, latency: float) -> dict[str, float]:
    observe.CHUNK = 200 if merged else 1
    kube = FakeKubeClient()
    source = LatencySource(latency)
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    clock = [now]

    async def source_for(_: str) -> QuerySource:
        return source

    scheduler = Scheduler(
        reconciler=Reconciler(kube=kube, trainer_image="img", service_account="sa"),
        endpoints=Endpoints(kube=kube, operator_namespace="x"),
        clock=lambda: clock[0],
        observer=Observer(source_for=source_for),
        max_parallel=64,
    )
    scheduler.upsert_endpoint("default", {"url": "http://prom:9090"})
    scheduler.upsert_store("default", {"endpoint": "http://s3:8333"})
    gc.collect()
    tracemalloc.start()
    for i in range(n):
        body = copy.deepcopy(BASE)
        body["metadata"].update(name=f"p{i}", uid=f"uid-{i}")
        body["spec"]["metrics"]["selector"] = {"model": f"model-{i}"}
        scheduler.upsert_policy(body)
    keys = list(scheduler.entries)
    started = time.perf_counter()
    await scheduler.run_cycle(keys)
    first = time.perf_counter() - started
    first_queries, first_writes = source.queries, len(kube.status_writes)
    clock[0] = now + timedelta(seconds=60)
    started = time.perf_counter()
    await scheduler.run_cycle(keys)
    steady = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "first_s": first,
        "steady_s": steady,
        "queries": first_queries,
        "steady_queries": source.queries - first_queries,
        "first_writes": first_writes,
        "steady_writes": len(kube.status_writes) - first_writes,
        "peak_mib": peak / 2**20,
    }


async def loop_lag(n: int, *, interval: int, seconds: float, latency: float) -> dict[str, float]:
    """Run the scheduler's own loop: how late, after being due, does each policy's evaluation start?"""
    observe.CHUNK = 200
    kube = FakeKubeClient()
    source = LatencySource(latency)

    async def source_for(_: str) -> QuerySource:
        return source

    scheduler = Scheduler(
        reconciler=Reconciler(kube=kube, trainer_image="img", service_account="sa"),
        endpoints=Endpoints(kube=kube, operator_namespace="x"),
        observer=Observer(source_for=source_for),
        max_parallel=64,
    )
    scheduler.upsert_endpoint("default", {"url": "http://prom:9090"})
    scheduler.upsert_store("default", {"endpoint": "http://s3:8333"})
    for i in range(n):
        body = copy.deepcopy(BASE)
        body["metadata"].update(name=f"p{i}", uid=f"uid-{i}")
        body["spec"]["evaluation"]["interval"] = f"{interval}s"
        body["spec"]["metrics"]["selector"] = {"model": f"model-{i}"}
        scheduler.upsert_policy(body)
    task = asyncio.create_task(scheduler.run())
    started = time.monotonic()
    while scheduler.cycles < 1 or len(scheduler.lag) < n:  # noqa: ASYNC110  (polls counters of another task)
        await asyncio.sleep(0.1)
    scheduler.lag.clear()  # the first cycle is the start-up burst, not steady lag
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    lag = sorted(scheduler.lag)
    if not lag:
        return {"p50": float("nan"), "p99": float("nan"), "cycles": scheduler.cycles, "evaluations": 0}
    return {
        "p50": lag[len(lag) // 2],
        "p99": lag[min(len(lag) - 1, int(len(lag) * 0.99))],
        "cycles": scheduler.cycles,
        "evaluations": len(lag),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--latency", type=float, default=0.005, help="seconds per Prometheus query")
    parser.add_argument(
        "--unmerged-limit",
        type=int,
        default=1000,
        help="skip the unmerged variant above this many policies (it takes minutes)",
    )
    parser.add_argument(
        "--loop-seconds",
        type=float,
        default=0.0,
        help="also run the scheduler loop this long per size and interval and report its lag",
    )
    parser.add_argument("--intervals", type=int, nargs="+", default=[10, 60])
    parser.add_argument("--only-loop", action="store_true", help="skip the cycle comparison (for a clean RSS figure)")
    args = parser.parse_args()
    print(
        f"{'policies':>9} {'variant':>9} {'queries':>8} {'cycle 1 s':>10} {'steady s':>9} "
        f"{'writes 1':>9} {'writes 2':>9} {'peak MiB':>9}"
    )
    for n in [] if args.only_loop else args.sizes:
        for merged in (True, False):
            if not merged and n > args.unmerged_limit:
                print(f"{n:>9} {'unmerged':>9} {'(skipped: > --unmerged-limit)':>40}")
                continue
            r = asyncio.run(bench(n, merged=merged, latency=args.latency))
            print(
                f"{n:>9} {'merged' if merged else 'unmerged':>9} {r['queries']:>8.0f} {r['first_s']:>10.3f} "
                f"{r['steady_s']:>9.3f} {r['first_writes']:>9.0f} {r['steady_writes']:>9.0f} {r['peak_mib']:>9.1f}"
            )
    if args.loop_seconds > 0:
        print(f"\nscheduler loop, {args.loop_seconds:.0f} s per run, lag = start of evaluation - time due")
        print(f"{'policies':>9} {'interval':>9} {'evaluations':>12} {'cycles':>7} {'p50 lag s':>10} {'p99 lag s':>10}")
        for n in args.sizes:
            for interval in args.intervals:
                r = asyncio.run(loop_lag(n, interval=interval, seconds=args.loop_seconds, latency=args.latency))
                print(
                    f"{n:>9} {interval:>8}s {r['evaluations']:>12.0f} {r['cycles']:>7.0f} {r['p50']:>10.3f} "
                    f"{r['p99']:>10.3f}"
                )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS {rss:.0f} MiB (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
