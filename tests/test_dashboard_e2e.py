"""Every panel of the Grafana dashboard returns data from a real Prometheus that scraped the operator.

The operator runs as in the other end-to-end tests (its real process as the chart's ServiceAccount,
the real control plane, the local kubelet, S3), with ``--metrics-port``; a Prometheus of its own
scrapes that port every second under the job name the alert rules expect. The run drives what the
panels show: a policy retrains once with the real trainer, is then refused by its RetrainBudget
(OverBudget), another policy's endpoint is unreachable (query errors, MetricsUnavailable), a third
is Invalid. Then each templating variable is resolved the way Grafana does (``label_values``), and
every query of every panel runs as a range query over the run; each must return at least one finite
value. The alert rules' expressions run against the same data: those whose situation the run
creates must return it, the others must not.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.processes import free_ports
from sandbox.prometheus import PrometheusServer, start_prometheus
from tests.support.stack import Stack, wait_for
from tests.test_dashboard import label_values_query, panels, substitute, targets, variables

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
JOB = "retrain-operator"


def query_range(prometheus: PrometheusServer, promql: str, *, start: float, end: float, step: float) -> Any:
    params = {"query": promql, "start": repr(start), "end": repr(end), "step": repr(step)}
    request = urllib.request.Request(
        f"{prometheus.url}/api/v1/query_range", data=urllib.parse.urlencode(params).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    assert body["status"] == "success", (promql, body)
    return body["data"]["result"]


def finite_points(result: list[dict[str, Any]]) -> int:
    return sum(1 for series in result for _, value in series["values"] if math.isfinite(float(value)))


def highest(result: list[dict[str, Any]]) -> float:
    """The largest finite value of a range query's result."""
    return max(float(v) for series in result for _, v in series["values"] if math.isfinite(float(v)))


def resolve_variables(prometheus: PrometheusServer, *, namespace: str) -> dict[str, str]:
    """Each query variable's values as Grafana's label_values() finds them; this run's are chosen."""
    chosen: dict[str, str] = {}
    wanted = {"job": JOB, "namespace": namespace}
    for name, variable in variables().items():
        if variable["type"] != "query":
            continue
        selector, label = label_values_query(variable)
        found = prometheus.query(f"group by ({label}) ({substitute(selector, chosen)})")["result"]
        values = {series["metric"].get(label) for series in found}
        assert wanted[name] in values, f"variable {name}: {wanted[name]!r} not among {sorted(v or '' for v in values)}"
        assert re.fullmatch(r"[a-z0-9-]+", wanted[name])  # the same as a regex, as Grafana would put it in
        chosen[name] = wanted[name]
    return chosen


def test_every_dashboard_panel_returns_data_after_a_real_run(stack: Stack, tmp_path: Path) -> None:
    [port] = free_ports(1)
    stack.operator.stop()
    stack.start_operator("--metrics-port", str(port), log="operator-metrics.log")
    ns = stack.namespace
    with start_prometheus(
        tmp_path / "scraper", scrape_targets=[f"127.0.0.1:{port}"], scrape_interval="1s", scrape_job=JOB
    ) as scraper:
        started = time.time()
        scraper.wait_for(f'up{{job="{JOB}"}} == 1', timeout=60)

        # A policy whose endpoint refuses connections, and one naming an endpoint that does not exist.
        dead = {
            "apiVersion": "retrain.dev/v1alpha1",
            "kind": "MetricsEndpoint",
            "metadata": {"name": f"{ns}-dead"},
            "spec": {"url": "http://127.0.0.1:9", "timeout": "2s"},
        }
        unreachable = stack.example_policy("unreachable", f"{stack.model}-dead")
        unreachable["spec"]["metrics"]["endpoint"] = f"{ns}-dead"
        unreachable["spec"]["evaluation"]["interval"] = "2s"
        invalid = stack.example_policy("invalid", f"{stack.model}-invalid")
        invalid["spec"]["metrics"]["endpoint"] = "missing"
        assert stack.apply(dead, unreachable, invalid).returncode == 0
        try:
            drive_and_check(stack, scraper, started=started)
        finally:
            stack.kubectl("delete", "metricsendpoint", f"{ns}-dead", "--wait=false")


def drive_and_check(stack: Stack, scraper: PrometheusServer, *, started: float) -> None:
    """Retrain, refuse by budget, wait for Prometheus to see it all; then every panel and alert expression."""
    ns = stack.namespace
    # The namespace's Job counters start at 0 in Prometheus before any Job, so increase() sees the first.
    scraper.wait_for(f'retrain_jobs_total{{namespace="{ns}", outcome="Succeeded"}} == 0', timeout=60)

    # A policy that retrains once, and then finds its budget spent.
    stack.push_accuracy(stack.model, [0.80] * 80)
    budget = {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "RetrainBudget",
        "metadata": {"name": "team", "namespace": ns},
        "spec": {"window": "24h", "limits": {"runs": 1}, "prices": {"cpuHour": 0.05}},
    }
    churn = stack.example_policy()
    churn["spec"]["evaluation"]["interval"] = "2s"
    churn["spec"]["decision"].update(cooldown="1s", budget="team")
    assert stack.apply(budget, churn).returncode == 0
    last = wait_for(
        "the retrain", lambda: stack.status("churn").get("lastRetrain"), timeout=180, log=stack.operator.log
    )
    assert last["outcome"] == "Succeeded", last
    wait_for(
        "OverBudget after the retrain",
        lambda: stack.status("churn").get("lastDecision", {}).get("reason") == "OverBudget",
        timeout=60,
        log=stack.operator.log,
    )
    assert stack.status("invalid")["phase"] == "Invalid"
    assert stack.condition("unreachable", "MetricsAvailable")["status"] == "False"
    # Prometheus has seen all of it, with enough samples since for rate() over the last 30 s.
    scraper.wait_for(f'retrain_training_duration_seconds_count{{namespace="{ns}", outcome="Succeeded"}} >= 1')
    scraper.wait_for(f'increase(retrain_decisions_total{{namespace="{ns}", reason="OverBudget"}}[30s]) > 0')
    end = time.time()

    # The grid of the range queries ends exactly at ``end``, when every condition above was already seen.
    step = 2.0
    start = end - step * math.ceil((end - started) / step)
    chosen = resolve_variables(scraper, namespace=ns)
    table = []
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for target in targets():
        promql = substitute(target.expr, chosen)
        result = query_range(scraper, promql, start=start, end=end, step=step)
        results[(target.panel, target.ref)] = result
        table.append((target, len(result), finite_points(result)))
    with_data = {t.panel for t, _, points in table if points}
    all_panels = [p["title"] for p in panels()]
    print(f"\ndashboard: {len(all_panels)} panels, {len(with_data)} returned data; {len(table)} queries:")
    for target, series, points in table:
        print(f"  {target.panel} [{target.ref}]: {series} series, {points} finite points")
    empty = [f"{t.panel} [{t.ref}]: {substitute(t.expr, chosen)}" for t, _, points in table if not points]
    assert empty == [], "queries without data:\n" + "\n".join(empty)
    assert with_data == set(all_panels)
    # And what they show is what happened: one retrain, its budget used up, a failing endpoint.
    # (increase() extrapolates past the samples it has, by much over a run this short: at least, not exactly.)
    assert highest(results[("Retrains started, last hour", "A")]) >= 1
    outcomes = {s["metric"]["outcome"]: highest([s]) for s in results[("Training Jobs by outcome, last hour", "A")]}
    assert outcomes.keys() == {"Started", "Succeeded", "Failed"}, outcomes
    assert outcomes["Started"] >= 1 and outcomes["Succeeded"] >= 1 and outcomes["Failed"] == 0, outcomes
    assert highest(results[("Budget used, share of limit", "A")]) == 1.0
    errors = {s["metric"]["endpoint"] for s in results[("Query errors", "A")]}
    assert errors == {f"{ns}-dead"}, errors
    phases = {s["metric"]["phase"] for s in results[("Policies by phase", "A")]}
    assert {"Invalid", "Degraded"} <= phases and phases & {"Training", "Watching"}, phases

    # The alert rules' expressions on the same real data.
    rules = yaml.safe_load((ROOT / "docs" / "monitoring" / "alerts.yaml").read_text())
    expressions = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    creates = {
        "RetrainBudgetExhausted",
        "RetrainBlockedByBudget",
        "RetrainPolicyMetricsUnavailable",
        "RetrainPolicyInvalid",
    }
    quiet = {"RetrainOperatorDown", "RetrainOperatorNotReconciling", "RetrainTrainingFailing"}
    outcome = {}
    for alert, expr in expressions.items():
        outcome[alert] = [s["metric"] for s in scraper.query(expr)["result"]]
    print("alert expressions:", {alert: len(found) for alert, found in outcome.items()})
    for alert in creates:
        assert outcome[alert], f"{alert}: the run created its situation but the expression found nothing"
    for alert in quiet:
        assert outcome[alert] == [], f"{alert}: {outcome[alert]}"
    assert {m["policy"] for m in outcome["RetrainPolicyInvalid"]} == {"invalid"}
    assert {m["policy"] for m in outcome["RetrainPolicyMetricsUnavailable"]} == {"unreachable"}
    assert {(m["budget"], m["measure"]) for m in outcome["RetrainBudgetExhausted"]} == {("team", "runs")}
