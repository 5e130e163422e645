"""Scale benchmark on the real stack: N RetrainPolicies against kube-apiserver + etcd and a real Prometheus.

Why: ``bench/run.py`` measures the scheduler with fake ports, which says nothing about what the
operator costs a cluster (watch lists, status patches, events, API server and etcd memory) or how
late evaluations start once real HTTP round trips sit between the cycle and its writes. This runs
what a cluster runs: a fresh control plane per size (etcd, kube-apiserver with RBAC, controller
manager, scheduler), the CRDs, the chart's RBAC, the real ``retrain-operator run`` process
authenticated as the chart's ServiceAccount, and a real Prometheus holding one ``model_accuracy``
series per policy (kept fresh during the run, above the threshold, so every query returns data and
no Job is launched).

For each size it prints, side by side in one run:

- the time to apply N policies (server-side apply over HTTP, batches of 500), and the time from the
  start of the apply until every policy has ``status.observedGeneration`` (polled with a list);
- the operator's RSS, peak (VmHWM) and steady (VmRSS over the steady window), and the RSS of
  kube-apiserver and etcd;
- p50/p99 of ``retrain_evaluation_lag_seconds`` (the operator's histogram: due -> evaluation start)
  over a steady window of ``--intervals`` evaluation intervals after all statuses exist;
- API requests per idle interval by verb, from the API server's ``apiserver_request_total``: writes
  to what the operator may write (retrain.dev objects, Jobs, Events) must be 0, and the script exits 1
  when they are not; writes of the control plane's own (its identity Leases, ...) are printed apart;
- Prometheus queries per interval, from the operator's counter and from Prometheus' own;
- API Priority and Fairness rejections and queue waits, so that a figure limited by the API server's
  concurrency limits (``--max-requests-inflight``, raise with ``--apiserver-arg``) is visible as such;
- beside them, ``bench/run.py``'s fake-port figures for the same sizes (``--no-fake`` skips them).

Figures, not assertions, except the idle-writes exit code. One interval is 60 s, so a size costs
its fill time plus ``--intervals`` minutes. Every process it starts is stopped by PID on the way out.
``python bench/cluster.py --sizes 1000 10000 --intervals 2`` (``make bench-cluster``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, TextIO

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator" / "src")]

from retrain_operator.reconcile.telemetry import LAG_BUCKETS  # noqa: E402
from sandbox.cluster import OPERATOR_NAMESPACE, install_operator, install_tenant  # noqa: E402
from sandbox.controlplane import Component, ControlPlane, build  # noqa: E402
from sandbox.processes import (  # noqa: E402
    OperatorProcess,
    free_ports,
    kubectl,
)
from sandbox.prometheus import PrometheusServer, Series, start_prometheus  # noqa: E402

NAMESPACE = "bench"
ENDPOINT = "bench"
INTERVAL = 60.0
GROUP, VERSION = "retrain.dev", "v1alpha1"
ACCURACY = 0.97  # above the 0.90 threshold (fixedBaseline 0.95 - maxDrop 0.05): no Job, and a value each cycle
SAMPLE_STEP = 15.0
REFRESH_SECONDS = 30.0
APPLY_BATCH = 500
LIST_PAGE = 500
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")
# What the operator may write (the chart's RBAC): status of policies and budgets, Jobs, Events.
# Writes to anything else in the idle window come from the control plane itself (its identity Leases).
OPERATOR_WRITABLE = frozenset(
    {
        (GROUP, "retrainpolicies"),
        (GROUP, "retrainbudgets"),
        ("batch", "jobs"),
        ("", "events"),
        ("events.k8s.io", "events"),
    }
)
CHART_VALUES: dict[str, Any] = {"watchNamespaces": [NAMESPACE]}
LAG_TOP = LAG_BUCKETS[-1]  # the last finite bucket of retrain_evaluation_lag_seconds
Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# ---------------------------------------------------------------------------------------------
# Reading metrics


def parse_metrics(text: str) -> Metrics:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def total(metrics: Metrics, name: str, where: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
    return sum(v for (n, labels), v in metrics.items() if n == name and where(dict(labels)))


def delta(
    after: Metrics, before: Metrics, name: str, where: Callable[[dict[str, str]], bool] = lambda _: True
) -> float:
    return total(after, name, where) - total(before, name, where)


def quantile(q: float, after: Metrics, before: Metrics, name: str) -> float:
    """``histogram_quantile`` over the increase of a histogram between two scrapes (linear in a bucket)."""
    buckets: dict[float, float] = defaultdict(float)
    for (n, labels), value in after.items():
        if n == f"{name}_bucket":
            buckets[float(dict(labels)["le"])] += value
    for (n, labels), value in before.items():
        if n == f"{name}_bucket":
            buckets[float(dict(labels)["le"])] -= value
    edges = sorted(buckets)
    if not edges or buckets[edges[-1]] <= 0:
        return math.nan
    rank = q * buckets[edges[-1]]
    lower, below = 0.0, 0.0
    for edge in edges:
        count = buckets[edge]
        if count >= rank:
            if math.isinf(edge):
                return math.inf  # beyond the last finite bucket: only "more than its edge" is known
            return lower + (edge - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = edge, count
    return lower


def seconds(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else f"> {LAG_TOP:g}" if value > 0 else "-"


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB (empty once it has exited)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz  # idle and iowait are not busy


def busy_percent(after: tuple[float, float], before: tuple[float, float]) -> float:
    """Share of all cores' time that was busy between two ``machine_cpu()`` readings."""
    spent = after[1] - before[1]
    return 100 * (after[0] - before[0]) / spent if spent > 0 else math.nan


class RssSampler:
    """Samples VmRSS of some PIDs twice a second in a thread; ``window()`` opens a new steady window."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.peak: dict[str, int] = defaultdict(int)
        self.window_samples: dict[str, list[int]] = defaultdict(list)
        self._in_window = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, pid in self.pids.items():
                rss = rss_kib(pid).get("VmRSS")
                if rss is None:
                    continue
                self.peak[name] = max(self.peak[name], rss)
                if self._in_window:
                    self.window_samples[name].append(rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def window(self, on: bool) -> None:
        self._in_window = on


class Api:
    """The API server over HTTPS as the cluster admin (client certificate of the admin kubeconfig)."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        self.url: str = cluster["server"]
        self.ssl = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.ssl.load_cert_chain(user["client-certificate"], user["client-key"])

    def metrics(self) -> Metrics:
        with urllib.request.urlopen(f"{self.url}/metrics", context=self.ssl, timeout=60) as response:
            return parse_metrics(response.read().decode())

    def session(self, concurrency: int) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self.url,
            connector=aiohttp.TCPConnector(ssl=self.ssl, limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=120),
        )


def http_metrics(url: str) -> Metrics:
    with urllib.request.urlopen(url, timeout=30) as response:
        return parse_metrics(response.read().decode())


# ---------------------------------------------------------------------------------------------
# The objects


def policy(index: int | str, *, window: str = "5m") -> dict[str, Any]:
    """The example policy, evaluated every 60 s, reading its own model's series."""
    body: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "churn-policy.yaml").read_text())
    model = f"m-{index}"
    body["metadata"] = {"name": f"p-{index}", "namespace": NAMESPACE}
    spec = body["spec"]
    spec["model"].update(name=model)
    spec["model"]["registry"].update(prefix=f"{model}/")
    spec["metrics"] = {"endpoint": ENDPOINT, "selector": {"model": model}}
    spec["evaluation"] = {"interval": f"{INTERVAL:.0f}s"}
    spec["triggers"][0]["accuracyDecay"]["window"] = window
    return body


def policies(n: int, *, distinct: int) -> list[dict[str, Any]]:
    """N policies of one template; the first ``distinct`` each get a window of their own (a template each)."""
    return [policy(i, window=f"{6 + i}m" if i < distinct else "5m") for i in range(n)]


def series(models: Sequence[str], *, start: float, end: float) -> list[Series]:
    stamps = [end - SAMPLE_STEP * k for k in range(int((end - start) // SAMPLE_STEP) + 1)]
    return [
        Series("model_accuracy", {"namespace": NAMESPACE, "model": m}, [(t, ACCURACY) for t in stamps]) for m in models
    ]


def push(prometheus: PrometheusServer, models: Sequence[str], *, start: float, end: float) -> None:
    for i in range(0, len(models), 1000):
        prometheus.push(series(models[i : i + 1000], start=start, end=end))


class Refresher:
    """Pushes a fresh sample of every model's series every 30 s, so the 5-10 m windows never run dry."""

    def __init__(self, prometheus: PrometheusServer, models: Sequence[str]) -> None:
        self.prometheus = prometheus
        self.models = list(models)
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="refresher", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            now = time.time()
            try:
                push(self.prometheus, self.models, start=now, end=now)
            except Exception as error:  # a missed refresh only ages the data by 30 s; counted and reported
                self.errors += 1
                print(f"  (refresh push failed: {error})", file=sys.stderr)

    def __enter__(self) -> Refresher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


async def apply_all(api: Api, bodies: Sequence[dict[str, Any]], *, concurrency: int) -> None:
    """Server-side apply of every body, ``APPLY_BATCH`` at a time, ``concurrency`` requests in flight."""
    semaphore = asyncio.Semaphore(concurrency)
    async with api.session(concurrency) as session:

        async def one(body: dict[str, Any]) -> None:
            meta = body["metadata"]
            path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/retrainpolicies/{meta['name']}"
            payload = json.dumps({"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetrainPolicy", **body})
            async with semaphore:
                async with session.patch(
                    path,
                    data=payload,
                    params={"fieldManager": "bench", "force": "true", "fieldValidation": "Strict"},
                    headers={"Content-Type": "application/apply-patch+yaml"},
                ) as response:
                    if response.status >= 300:
                        raise RuntimeError(f"apply of {meta['name']}: HTTP {response.status} {await response.text()}")

        for i in range(0, len(bodies), APPLY_BATCH):
            await asyncio.gather(*(one(b) for b in bodies[i : i + APPLY_BATCH]))


async def count_statuses(api: Api) -> tuple[int, int]:
    """(policies, policies whose status has observed their generation), from a paginated list."""
    items, done, token = 0, 0, ""
    async with api.session(1) as session:
        while True:
            params = {"limit": str(LIST_PAGE), **({"continue": token} if token else {})}
            async with session.get(
                f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/retrainpolicies", params=params
            ) as response:
                response.raise_for_status()
                page = await response.json()
            for item in page["items"]:
                items += 1
                observed = (item.get("status") or {}).get("observedGeneration")
                done += observed is not None and observed == item["metadata"].get("generation")
            token = page["metadata"].get("continue") or ""
            if not token:
                return items, done


# ---------------------------------------------------------------------------------------------
# One size


class BenchControlPlane(ControlPlane):
    """The sandbox's control plane with extra kube-apiserver flags (e.g. a higher --max-requests-inflight)."""

    def __init__(self, *, apiserver_args: Sequence[str], workdir: Path, bin_dir: Path) -> None:
        super().__init__(workdir=workdir, bin_dir=bin_dir)
        self.apiserver_args = list(apiserver_args)

    def _start(self, component: Component) -> Component:
        if component.name == "kube-apiserver":
            component.argv.extend(self.apiserver_args)
        return super()._start(component)

    def pid(self, name: str) -> int:
        process = next(c.process for c in self.components if c.name == name)
        assert process is not None
        return process.pid


@dataclass
class Result:
    n: int
    figures: dict[str, str] = field(default_factory=dict)
    idle_writes: float = 0.0
    idle: bool = True
    notes: list[str] = field(default_factory=list)


def wait_until(what: str, probe: Callable[[], bool], *, timeout: float, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def setup(cp: BenchControlPlane, prometheus: PrometheusServer, workdir: Path) -> tuple[Path, str]:
    """CRDs, the namespace, the chart's RBAC, the MetricsEndpoint: (operator kubeconfig, training account)."""
    admin = cp.admin_kubeconfig
    for args in (
        ("apply", "-f", str(ROOT / "crds")),
        ("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds")),
        ("create", "namespace", NAMESPACE),
    ):
        result = kubectl(admin, *args)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
    assert cp.pki is not None
    operator_kubeconfig = install_operator(
        admin, values=CHART_VALUES, kubeconfig_path=workdir / "operator.kubeconfig", server=cp.url, ca=cp.pki.ca_cert
    )
    account = install_tenant(admin, values=CHART_VALUES, namespace=NAMESPACE)
    endpoint: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "metricsendpoint.yaml").read_text())
    endpoint["metadata"]["name"] = ENDPOINT
    endpoint["spec"].update(url=prometheus.url, allowedNamespaces=[NAMESPACE])
    result = kubectl(admin, "apply", "-f", "-", input=json.dumps(endpoint))
    if result.returncode != 0:
        raise RuntimeError(f"applying the MetricsEndpoint: {result.stderr}")
    # The ModelStore the example policy names: without it every policy is Valid=False and reads nothing.
    store: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "modelstore.yaml").read_text())
    store["spec"].update(allowedNamespaces=[NAMESPACE])
    store["spec"].pop("buckets", None)  # any bucket: each policy keeps its model under a prefix of its own
    result = kubectl(admin, "apply", "-f", "-", input=json.dumps(store))
    if result.returncode != 0:
        raise RuntimeError(f"applying the ModelStore: {result.stderr}")
    return operator_kubeconfig, account


def has_trigger_value(admin: Path, name: str) -> bool:
    """Whether a policy's status shows its first trigger's value: the loop works end to end."""
    got = kubectl(admin, "get", "retrainpolicy", name, "-n", NAMESPACE, "-o", "json")
    triggers = (json.loads(got.stdout).get("status") or {}).get("triggers") or [] if got.returncode == 0 else []
    return bool(triggers) and triggers[0].get("value") is not None


def measure(n: int, *, args: argparse.Namespace, bin_dir: Path, workdir: Path) -> Result:
    result = Result(n)
    fig = result.figures
    bodies = policies(n, distinct=min(args.distinct, n))
    models = ["m-canary", *(b["spec"]["model"]["name"] for b in bodies)]
    with contextlib.ExitStack() as stack:
        cp = BenchControlPlane(apiserver_args=args.apiserver_arg, workdir=workdir / "controlplane", bin_dir=bin_dir)
        stack.enter_context(cp)
        prometheus = stack.enter_context(start_prometheus(workdir / "prometheus"))
        operator_kubeconfig, account = setup(cp, prometheus, workdir)
        api = Api(cp.admin_kubeconfig)
        now = time.time()
        push(prometheus, models, start=now - 600, end=now)
        stack.enter_context(Refresher(prometheus, models))

        [metrics_port] = free_ports(1)
        operator = OperatorProcess(
            kubeconfig=operator_kubeconfig,
            log_path=workdir / "operator.log",
            args=[
                "--namespace",
                NAMESPACE,
                "--operator-namespace",
                OPERATOR_NAMESPACE,
                "--trainer-image",
                "retrain-operator:bench",
                "--training-service-account",
                account,
                "--metrics-port",
                str(metrics_port),
            ],
        )
        stack.callback(operator.stop)
        operator.start()
        assert operator.process is not None
        operator_metrics = f"http://127.0.0.1:{metrics_port}/metrics"

        def alive() -> None:
            if not operator.running:
                raise RuntimeError(f"the operator exited:\n{operator.log()[-4000:]}")

        sampler = stack.enter_context(
            RssSampler(
                {"operator": operator.process.pid, "kube-apiserver": cp.pid("kube-apiserver"), "etcd": cp.pid("etcd")}
            )
        )
        # A canary proves the loop works end to end (watch, query with data, status) before timing starts.
        canary = policy("canary")
        asyncio.run(apply_all(api, [canary], concurrency=1))

        wait_until(
            "the canary policy's status with a trigger value",
            lambda: has_trigger_value(cp.admin_kubeconfig, "p-canary"),
            timeout=180,
            alive=alive,
        )
        operator_before, api_before = http_metrics(operator_metrics), api.metrics()
        pids = {"operator": operator.process.pid, "apiserver": cp.pid("kube-apiserver"), "etcd": cp.pid("etcd")}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_before, bench_before = machine_cpu(), time.process_time()
        print(f"[{n}] the canary has a status; applying {n} policies", file=sys.stderr)

        started = time.monotonic()
        asyncio.run(apply_all(api, bodies, concurrency=args.apply_concurrency))
        applied = time.monotonic() - started
        fig["apply s"] = f"{applied:.1f}"
        fig["apply policies/s"] = f"{n / applied:.0f}"
        poll = args.poll or max(1.0, n / 1000)
        complete = None
        done = 0
        last_print = 0.0
        while time.monotonic() - started < args.status_timeout:
            alive()
            _, done = asyncio.run(count_statuses(api))
            done -= 1  # the canary
            elapsed = time.monotonic() - started
            if done >= n:
                complete = elapsed
                break
            if elapsed - last_print >= 30:
                print(
                    f"[{n}]   {elapsed:6.0f}s: {done}/{n} with status "
                    f"(operator RSS {rss_kib(operator.process.pid).get('VmRSS', 0) / 1024:.0f} MiB)",
                    file=sys.stderr,
                )
                last_print = elapsed
            time.sleep(poll)
        if complete is None:
            result.idle = False
            fig["all statuses s (from apply start)"] = f"not reached: {done}/{n} after {args.status_timeout:.0f}"
            result.notes.append(
                f"{n}: only {done}/{n} policies had a status after {args.status_timeout:.0f} s; "
                "the window below is not idle"
            )
        else:
            fig["all statuses s (from apply start)"] = f"{complete:.1f} (poll {poll:.0f}s)"
            fig["all statuses s (after apply end)"] = f"{complete - applied:.1f}"
        operator_filled, api_filled = http_metrics(operator_metrics), api.metrics()
        cpu_filled = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_filled, bench_filled = machine_cpu(), time.process_time()
        fig["fill: CPU s " + "/".join(pids)] = "/".join(f"{cpu_filled[k] - cpu_before[k]:.0f}" for k in pids)
        fig["fill: machine CPU busy % (bench's own CPU s)"] = (
            f"{busy_percent(machine_filled, machine_before):.0f} ({bench_filled - bench_before:.0f})"
        )
        fill_apf = apf(api_filled, api_before)
        fig["fill: APF rejected / queued s"] = f"{fill_apf[0]:.0f} / {fill_apf[1]:.1f}"
        fill = requests_by_verb(api_filled, api_before)
        fig["fill: API mean s status PATCH / event POST"] = " / ".join(
            f"{mean_latency(api_filled, api_before, verb=verb, resource=resource, subresource=sub):.3f}"
            for verb, resource, sub in (("PATCH", "retrainpolicies", "status"), ("POST", "events", ""))
        )
        fig["fill: writes on ours (APPLY: the bench's)"] = " ".join(
            f"{v}={c:.0f}" for (v, whose), c in sorted(fill.items()) if whose == "ours" and v in WRITE_VERBS and c
        )
        fig["fill: evaluations"] = f"{delta(operator_filled, operator_before, 'retrain_evaluations_total'):.0f}"

        # The steady window: nothing changes, every policy is evaluated about once per interval.
        print(f"[{n}] steady window of {args.intervals} x {INTERVAL:.0f}s", file=sys.stderr)
        prom_before = http_metrics(f"{prometheus.url}/metrics")
        operator_start, api_start = http_metrics(operator_metrics), api.metrics()
        cpu_start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_start = machine_cpu()
        sampler.window(True)
        window_end = time.monotonic() + args.intervals * INTERVAL
        while time.monotonic() < window_end:
            alive()
            time.sleep(min(1.0, max(0.0, window_end - time.monotonic())))
        sampler.window(False)
        operator_end, api_end = http_metrics(operator_metrics), api.metrics()
        cpu_end = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_end = machine_cpu()
        prom_after = http_metrics(f"{prometheus.url}/metrics")
        intervals = float(args.intervals)

        lag = "retrain_evaluation_lag_seconds"
        evaluations = delta(operator_end, operator_start, "retrain_evaluations_total")
        fig["steady: evaluations / interval"] = f"{evaluations / intervals:.0f}"
        fig["lag p50 s"] = seconds(quantile(0.50, operator_end, operator_start, lag))
        fig["lag p99 s"] = seconds(quantile(0.99, operator_end, operator_start, lag))
        fig["lag p99 s, fill phase"] = seconds(quantile(0.99, operator_filled, operator_before, lag))

        requests = requests_by_verb(api_end, api_start)
        ours = {v: c for (v, whose), c in requests.items() if whose == "ours"}
        writes = {v: c for v, c in ours.items() if v in WRITE_VERBS}
        others = {v: c for (v, whose), c in requests.items() if v in WRITE_VERBS and whose == "other"}
        result.idle_writes = sum(writes.values())

        def per_interval(counts: Mapping[str, float]) -> str:
            return " ".join(f"{v}={c / intervals:.1f}" for v, c in sorted(counts.items()) if c) or "0"

        fig["idle: requests on ours / interval"] = per_interval(ours)
        fig["idle: writes on ours / interval"] = per_interval(writes)
        fig["idle: control-plane writes / interval"] = per_interval(others)
        fig["idle: CPU % " + "/".join(pids)] = "/".join(
            f"{100 * (cpu_end[k] - cpu_start[k]) / (intervals * INTERVAL):.1f}" for k in pids
        )
        fig["idle: machine CPU busy %"] = f"{busy_percent(machine_end, machine_start):.0f}"
        idle_apf = apf(api_end, api_start)
        fig["idle: APF rejected / queued s"] = f"{idle_apf[0]:.0f} / {idle_apf[1]:.2f}"
        fig["prom queries / interval (operator)"] = (
            f"{delta(operator_end, operator_start, 'retrain_prometheus_queries_total') / intervals:.1f}"
        )
        served = delta(
            prom_after,
            prom_before,
            "prometheus_http_requests_total",
            lambda labels: labels.get("handler") in ("/api/v1/query", "/api/v1/query_range"),
        )
        fig["prom queries / interval (prometheus)"] = f"{served / intervals:.1f}"
        failed = delta(
            operator_end,
            operator_start,
            "retrain_prometheus_queries_total",
            lambda labels: labels.get("result") != "Success",
        )
        if failed:
            result.notes.append(f"{n}: {failed:.0f} Prometheus queries failed in the steady window")

        hwm = rss_kib(operator.process.pid).get("VmHWM", 0)
        steady = sampler.window_samples["operator"]
        fig["operator RSS peak MiB (VmHWM)"] = f"{hwm / 1024:.0f}"
        fig["operator RSS steady MiB (mean/max)"] = (
            f"{sum(steady) / len(steady) / 1024:.0f}/{max(steady) / 1024:.0f}" if steady else "-"
        )
        for name in ("kube-apiserver", "etcd"):
            samples = sampler.window_samples[name]
            peak = rss_kib(cp.pid(name)).get("VmHWM", 0)
            fig[f"{name} RSS steady/peak MiB"] = f"{(samples[-1] if samples else 0) / 1024:.0f}/{peak / 1024:.0f}"
        if not result.idle:
            fig["idle: writes on ours / interval"] += " (not idle)"
    return result


def requests_by_verb(after: Metrics, before: Metrics) -> dict[tuple[str, str], float]:
    """Increase of ``apiserver_request_total`` by (verb, whose): "ours" is our API group and what the
    operator may write (``OPERATOR_WRITABLE``), "other" the rest (the control plane's own traffic)."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for metrics, sign in ((after, 1.0), (before, -1.0)):
        for (name, pairs), value in metrics.items():
            labels = dict(pairs)
            if name != "apiserver_request_total" or not labels.get("resource"):
                continue  # non-resource requests: /metrics, /readyz, discovery
            group, resource = labels.get("group", ""), labels["resource"]
            ours = group == GROUP or (group, resource) in OPERATOR_WRITABLE
            out[(labels["verb"], "ours" if ours else "other")] += sign * value
    return out


def mean_latency(after: Metrics, before: Metrics, *, verb: str, resource: str, subresource: str) -> float:
    """Mean server-side latency of one kind of request between two scrapes (``apiserver_request_duration_seconds``)."""

    def match(labels: dict[str, str]) -> bool:
        wanted = (verb, resource, subresource)
        return (labels.get("verb"), labels.get("resource"), labels.get("subresource", "")) == wanted

    count = delta(after, before, "apiserver_request_duration_seconds_count", match)
    return delta(after, before, "apiserver_request_duration_seconds_sum", match) / count if count else math.nan


def apf(after: Metrics, before: Metrics) -> tuple[float, float]:
    """API Priority and Fairness between two scrapes: (requests rejected, seconds spent queued)."""
    rejected = delta(after, before, "apiserver_flowcontrol_rejected_requests_total")
    waited = delta(
        after,
        before,
        "apiserver_flowcontrol_request_wait_duration_seconds_sum",
        lambda labels: labels.get("priority_level") != "exempt",
    )
    return rejected, waited


# ---------------------------------------------------------------------------------------------
# The fake-port baseline and the table


def fake_figures(n: int) -> dict[str, str]:
    """``bench/run.py``'s merged variant for the same size: scheduler + fake Kubernetes + 5 ms queries."""
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    r: dict[str, float] = asyncio.run(module.bench(n, merged=True, latency=0.005))
    return {
        "first cycle s (fake)": f"{r['first_s']:.2f}",
        "steady cycle s (fake)": f"{r['steady_s']:.2f}",
        "prom queries / interval (operator)": f"{r['steady_queries']:.0f}",
        "idle: writes on ours / interval": f"PATCH={r['steady_writes']:.0f}",
        "python heap peak MiB (fake, tracemalloc)": f"{r['peak_mib']:.0f}",
    }


def print_table(results: Sequence[Result], fakes: Mapping[int, dict[str, str]], *, file: TextIO = sys.stdout) -> None:
    columns: list[tuple[str, dict[str, str]]] = []
    for r in results:
        columns.append((f"{r.n} real", r.figures))
        if r.n in fakes:
            columns.append((f"{r.n} fake", fakes[r.n]))
    rows: list[str] = []
    for _, figures in columns:
        rows += [k for k in figures if k not in rows]
    width = max(len(k) for k in rows) + 2
    widths = [max(len(title), *(len(f.get(k, "")) for k in rows)) + 2 for title, f in columns]
    print("".ljust(width) + "".join(title.rjust(w) for (title, _), w in zip(columns, widths, strict=True)), file=file)
    for key in rows:
        print(
            key.ljust(width) + "".join(f.get(key, "-").rjust(w) for (_, f), w in zip(columns, widths, strict=True)),
            file=file,
        )


def _terminate(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that every finally block stops what it started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--intervals", type=int, default=2, help="evaluation intervals (60 s) in the steady window")
    parser.add_argument("--distinct", type=int, default=5, help="policies with a query template of their own")
    parser.add_argument("--apply-concurrency", type=int, default=16, help="server-side applies in flight")
    parser.add_argument(
        "--status-timeout",
        type=float,
        default=1800.0,
        help="give up waiting for every status after this many seconds, and report how many",
    )
    parser.add_argument("--poll", type=float, default=0.0, help="seconds between status lists; 0: max(1, N/1000)")
    parser.add_argument(
        "--apiserver-arg",
        action="append",
        default=[],
        help="extra kube-apiserver flag, e.g. --apiserver-arg=--max-requests-inflight=800",
    )
    parser.add_argument("--no-fake", action="store_true", help="skip bench/run.py's fake-port figures")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and data here (default: a temp dir)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    bin_dir = build()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    results: list[Result] = []
    try:
        for n in args.sizes:
            workdir = base / f"n{n}"
            workdir.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            results.append(measure(n, args=args, bin_dir=bin_dir, workdir=workdir))
            print(f"[{n}] done in {time.monotonic() - started:.0f}s", file=sys.stderr)
            print_table(results[-1:], {}, file=sys.stderr)  # kept even if a later size fails
    except BaseException:
        print(f"(logs kept in {base})", file=sys.stderr)
        raise
    fakes = {} if args.no_fake else {n: fake_figures(n) for n in args.sizes}
    print(
        f"\nreal: kube-apiserver + etcd + Prometheus + `retrain-operator run` as the chart's ServiceAccount; "
        f"interval {INTERVAL:.0f}s, steady window {args.intervals} intervals"
        + (f"; kube-apiserver {' '.join(args.apiserver_arg)}" if args.apiserver_arg else "")
    )
    print("fake: bench/run.py merged variant (FakeKubeClient, 5 ms per query), the same N\n")
    print_table(results, fakes)
    for r in results:
        for note in r.notes:
            print(f"note: {note}")
    if args.workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    busy = [r for r in results if r.idle and r.idle_writes > 0]
    for r in busy:
        print(f"FAIL: {r.idle_writes:.0f} operator writes in the idle window at N={r.n}", file=sys.stderr)
    return 1 if busy else 0


if __name__ == "__main__":
    sys.exit(main())
