"""Prometheus cost of scheduling in phase against rolling scheduling, on the real stack, side by side.

Why: the design promises Prometheus load that grows with query templates, not policies. That holds
only if policies of one template are evaluated together. Created at different times and re-evaluated
one interval after their own last evaluation (``--scheduling rolling``), policies are due at instants
spread over the interval and each scheduler tick merges only the few due together. In phase
(``--scheduling aligned``, the default) every policy of a template is due on the template's ticks.

For each size, number of templates and scheduling, a fresh real stack (kube-apiserver + etcd +
controller manager + scheduler, a real Prometheus holding one ``model_accuracy`` series per policy,
the ``retrain-operator run`` process as the chart's ServiceAccount, from ``bench/cluster.py``) gets
N policies created at spread times (in equal batches, one per second over ``--spread`` intervals), waits until
every policy has a status, lets one more interval pass (so every policy has joined its phase), then
measures a steady window of ``--intervals`` intervals:

- Prometheus queries per minute, as Prometheus counts them (``prometheus_http_requests_total`` of its
  query handlers), beside the expected floor templates x chunks x queries per template per interval;
- Prometheus' own CPU seconds per minute (``process_cpu_seconds_total`` of the Prometheus process);
- the operator's RSS (mean over the window) and p99 lag (``retrain_evaluation_lag_seconds``: due to
  evaluation start) and p99 cycle time (``retrain_cycle_seconds``), and cycles per minute.

Figures, not assertions. ``python bench/phase.py --sizes 1000 10000 --templates 1 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_cluster", ROOT / "bench" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_cluster"] = module
    spec.loader.exec_module(module)
    return module


cluster = _cluster()
from retrain_operator.reconcile.observe import CHUNK  # noqa: E402

QUERIES_PER_TEMPLATE = 3  # the example's accuracyDecay with `for`: current, highest and point count over `for`
QUERY_HANDLERS = ("/api/v1/query", "/api/v1/query_range")


def bodies(n: int, *, templates: int) -> list[dict[str, Any]]:
    """N policies split evenly over ``templates`` query templates (accuracy windows of 5, 6, ... minutes)."""
    return [cluster.policy(i, window=f"{5 + i % templates}m") for i in range(n)]


def expected_per_minute(n: int, *, templates: int) -> int:
    per_template = [n // templates + (1 if t < n % templates else 0) for t in range(templates)]
    chunks = sum(math.ceil(count / CHUNK) for count in per_template if count)
    return chunks * QUERIES_PER_TEMPLATE * round(60 / cluster.INTERVAL)


def measure(
    n: int, *, templates: int, scheduling: str, args: argparse.Namespace, bin_dir: Path, workdir: Path
) -> dict[str, str]:
    fig: dict[str, str] = {}
    policies = bodies(n, templates=templates)
    models = ["m-canary", *(b["spec"]["model"]["name"] for b in policies)]
    with contextlib.ExitStack() as stack:
        cp = cluster.BenchControlPlane(apiserver_args=[], workdir=workdir / "controlplane", bin_dir=bin_dir)
        stack.enter_context(cp)
        prometheus = stack.enter_context(cluster.start_prometheus(workdir / "prometheus"))
        operator_kubeconfig, account = cluster.setup(cp, prometheus, workdir)
        api = cluster.Api(cp.admin_kubeconfig)
        now = time.time()
        cluster.push(prometheus, models, start=now - 600, end=now)
        stack.enter_context(cluster.Refresher(prometheus, models))
        [metrics_port] = cluster.free_ports(1)
        operator = cluster.OperatorProcess(
            kubeconfig=operator_kubeconfig,
            log_path=workdir / "operator.log",
            args=[
                "--namespace",
                cluster.NAMESPACE,
                "--operator-namespace",
                cluster.OPERATOR_NAMESPACE,
                "--trainer-image",
                "retrain-operator:bench",
                "--training-service-account",
                account,
                "--metrics-port",
                str(metrics_port),
                "--scheduling",
                scheduling,
            ],
        )
        stack.callback(operator.stop)
        operator.start()
        assert operator.process is not None
        operator_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        prometheus_metrics = f"{prometheus.url}/metrics"

        def alive() -> None:
            if not operator.running:
                raise RuntimeError(f"the operator exited:\n{operator.log()[-4000:]}")

        sampler = stack.enter_context(cluster.RssSampler({"operator": operator.process.pid}))
        asyncio.run(cluster.apply_all(api, [cluster.policy("canary")], concurrency=1))

        def everyone_has_status(expected: int) -> bool:
            _, done = asyncio.run(cluster.count_statuses(api))
            return bool(done >= expected)

        cluster.wait_until(
            "the canary's status with a trigger value",
            lambda: cluster.has_trigger_value(cp.admin_kubeconfig, "p-canary"),
            timeout=180,
            alive=alive,
        )
        label = f"[{n} x {templates} templates, {scheduling}]"
        spread = args.spread * cluster.INTERVAL
        print(f"{label} creating {n} policies over {spread:.0f}s", file=sys.stderr)
        batches = max(1, round(spread))
        size = math.ceil(n / batches)
        started = time.monotonic()
        for i in range(batches):
            chunk = policies[i * size : (i + 1) * size]
            if chunk:
                asyncio.run(cluster.apply_all(api, chunk, concurrency=args.apply_concurrency))
            time.sleep(max(0.0, started + (i + 1) * spread / batches - time.monotonic()))
        fig["create s (spread)"] = f"{time.monotonic() - started:.0f}"
        cluster.wait_until(
            "every policy's status",
            lambda: everyone_has_status(n + 1),
            timeout=args.status_timeout,
            alive=alive,
        )
        fig["all statuses s"] = f"{time.monotonic() - started:.0f}"
        time.sleep(cluster.INTERVAL)  # one more interval: every policy has been evaluated since it joined
        print(f"{label} steady window of {args.intervals} x {cluster.INTERVAL:.0f}s", file=sys.stderr)
        prom_before, op_before = cluster.http_metrics(prometheus_metrics), cluster.http_metrics(operator_metrics)
        sampler.window(True)
        window_end = time.monotonic() + args.intervals * cluster.INTERVAL
        while time.monotonic() < window_end:
            alive()
            time.sleep(min(1.0, max(0.0, window_end - time.monotonic())))
        sampler.window(False)
        prom_after, op_after = cluster.http_metrics(prometheus_metrics), cluster.http_metrics(operator_metrics)
        minutes = args.intervals * cluster.INTERVAL / 60
        served = cluster.delta(
            prom_after,
            prom_before,
            "prometheus_http_requests_total",
            lambda labels: labels.get("handler") in QUERY_HANDLERS,
        )
        fig["prom queries / min"] = f"{served / minutes:.1f}"
        fig["expected floor / min"] = str(expected_per_minute(n, templates=templates))
        fig["prom CPU s / min"] = f"{cluster.delta(prom_after, prom_before, 'process_cpu_seconds_total') / minutes:.2f}"
        evaluations = cluster.delta(op_after, op_before, "retrain_evaluations_total")
        fig["evaluations / min"] = f"{evaluations / minutes:.0f}"
        fig["cycles / min"] = f"{cluster.delta(op_after, op_before, 'retrain_cycles_total') / minutes:.1f}"
        fig["lag p99 s"] = cluster.seconds(
            cluster.quantile(0.99, op_after, op_before, "retrain_evaluation_lag_seconds")
        )
        fig["cycle p99 s"] = cluster.seconds(cluster.quantile(0.99, op_after, op_before, "retrain_cycle_seconds"))
        failed = cluster.delta(
            op_after, op_before, "retrain_prometheus_queries_total", lambda labels: labels.get("result") != "Success"
        )
        fig["failed queries"] = f"{failed:.0f}"
        steady = sampler.window_samples["operator"]
        fig["operator RSS MiB (mean)"] = f"{sum(steady) / len(steady) / 1024:.0f}" if steady else "-"
    return fig


def _terminate(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)  # so that every finally block stops what it started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--templates", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--scheduling", nargs="+", default=["rolling", "aligned"], choices=["rolling", "aligned"])
    parser.add_argument("--intervals", type=int, default=2, help="evaluation intervals (60 s) in the steady window")
    parser.add_argument("--apply-concurrency", type=int, default=16)
    parser.add_argument(
        "--spread",
        type=int,
        default=1,
        help="intervals over which the policies are created (one batch a second); a longer spread keeps a busy "
        "rolling scheduler from evaluating them all in the same few cycles",
    )
    parser.add_argument("--status-timeout", type=float, default=1800.0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and data here (default: a temp dir)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    bin_dir = cluster.build()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-phase-"))
    columns: list[tuple[str, dict[str, str]]] = []
    try:
        for n in args.sizes:
            for templates in args.templates:
                for scheduling in args.scheduling:
                    workdir = base / f"n{n}-t{templates}-{scheduling}"
                    workdir.mkdir(parents=True, exist_ok=True)
                    fig = measure(
                        n, templates=templates, scheduling=scheduling, args=args, bin_dir=bin_dir, workdir=workdir
                    )
                    columns.append((f"{n}/{templates}t {scheduling}", fig))
                    print(f"{n} policies, {templates} templates, {scheduling}: {fig}", file=sys.stderr)
    except BaseException:
        print(f"(logs kept in {base})", file=sys.stderr)
        if not columns:
            raise
        print("(a run failed; the table holds the runs that finished)", file=sys.stderr)
    print(
        f"\nreal stack, interval {cluster.INTERVAL:.0f}s, policies created over {args.spread} interval(s), "
        f"steady window {args.intervals} intervals; {QUERIES_PER_TEMPLATE} queries per template and chunk of {CHUNK}\n"
    )
    rows: list[str] = []
    for _, fig in columns:
        rows += [k for k in fig if k not in rows]
    width = max(len(k) for k in rows) + 2
    widths = [max(len(title), *(len(f.get(k, "")) for k in rows)) + 2 for title, f in columns]
    print("".ljust(width) + "".join(title.rjust(w) for (title, _), w in zip(columns, widths, strict=True)))
    for key in rows:
        print(key.ljust(width) + "".join(f.get(key, "-").rjust(w) for (_, f), w in zip(columns, widths, strict=True)))
    if args.workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
